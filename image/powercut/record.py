"""Inside the camera VM: record every write, flush and FUA while the appliance keeps at full speed.

Run by image/test-powercut.sh through image/test-camera-vm.sh (``--disk`` twice, ``--run`` this file):
``/dev/vdc`` is the disk recorded, ``/dev/vdd`` receives the log. dm-log-writes sits on ``/dev/vdc``
and two dm-linear devices on it split it into the data partition (ext4, as on the card) and a USB
stick (FAT32, as most are), so that one log holds the writes of both in the order they completed:
a crash state replayed from it is the same instant on both.

What runs on them: ``appliance run`` (replay camera over the photos, a small real model, a keep rule
that keeps every frame, no duplicate suppression), and while it keeps, ``appliance offload`` onto the
stick, twice. Marks in the log (``dmsetup message … mark NAME``) say where each phase began, and the
figures go to /srv/results/record.json. Then, with the log's devices gone, the offload onto a stick
whose copies read back wrong (dm-flakey), and again once it is sound (``unreadable_copies``).

    record.py SECONDS_BEFORE_OFFLOAD SECONDS_TOTAL [DATA_FS]

DATA_FS is ``ext4`` (the card's: a journal, data=ordered) or ``ext4-nojournal`` (no journal: an fsync
makes durable its own file and, for a new file, the entries that lead to it, and nothing else; the
filesystem on which a missing directory fsync shows).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

LOG_DEV, DISK = "/dev/vdd", "/dev/vdc"
LOG, DATA, STICK = "powercut-log", "powercut-data", "powercut-stick"
MOUNT = Path("/mnt/data")
DATA_DIR = MOUNT / "appliance"
RESULTS = Path("/srv/results")
CONFIG = Path("/tmp/appliance.toml")


def sh(*args: str) -> str:
    run = subprocess.run(args, capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"powercut: {' '.join(args)}: exit {run.returncode}: {run.stderr.strip()}")
    return run.stdout


def create(name: str, table: str) -> None:
    """A device-mapper device; no udev runs in the VM, so its /dev/mapper node is made here."""
    sh("dmsetup", "create", "--noudevsync", name, "--table", table)
    sh("dmsetup", "mknodes", name)


def mark(name: str) -> None:
    sh("dmsetup", "message", LOG, "0", f"mark {name}")
    print(f"powercut: mark {name} ({time.monotonic() - START:.1f} s)", flush=True)


def count(data_dir: Path = DATA_DIR, where: str = "") -> int:
    """Rows in the appliance's database in ``data_dir`` (0 while there is none yet: never made here)."""
    if not (data_dir / "appliance.db").is_file():
        return 0
    try:
        db = sqlite3.connect(data_dir / "appliance.db", timeout=10)
    except sqlite3.Error:
        return 0
    try:
        return db.execute(f"select count(*) from captures {where}").fetchone()[0]
    except sqlite3.Error:
        return 0
    finally:
        db.close()  # or the data partition stays busy at the end


def kept() -> int:
    return count()


def offload(n: int) -> dict:
    mark(f"offload-{n}")
    started = time.monotonic()
    run = subprocess.run(["appliance", "offload", "--config", str(CONFIG), "--device", f"/dev/mapper/{STICK}"],
                         capture_output=True, text=True)
    print(run.stdout + run.stderr, flush=True)
    mark(f"offload-{n}-done")
    return {"exit": run.returncode, "seconds": round(time.monotonic() - started, 1), "kept_at_end": kept()}


MKFS_OPTIONS = {"ext4": [], "ext4-nojournal": ["-O", "^has_journal"]}


def main(before_offload_s: float, total_s: float, data_fs: str = "ext4") -> None:
    sh("hostname", "powercut")  # the offload's folder on the stick is named after the device
    sh("modprobe", "dm-log-writes")
    sectors = int(Path("/sys/block/vdc/size").read_text())
    data_sectors = (sectors * 3 // 4) // 2048 * 2048
    create(LOG, f"0 {sectors} log-writes {DISK} {LOG_DEV}")
    create(DATA, f"0 {data_sectors} linear /dev/mapper/{LOG} 0")
    create(STICK, f"0 {sectors - data_sectors} linear /dev/mapper/{LOG} {data_sectors}")
    sh("mkfs.ext4", "-q", "-L", "data", "-E", "nodiscard,lazy_itable_init=0,lazy_journal_init=0",
       *MKFS_OPTIONS[data_fs], f"/dev/mapper/{DATA}")
    sh("mkfs.vfat", "-F", "32", "-n", "STICK", f"/dev/mapper/{STICK}")
    MOUNT.mkdir(parents=True, exist_ok=True)
    sh("mount", "-t", "ext4", "-o", "noatime", f"/dev/mapper/{DATA}", str(MOUNT))
    CONFIG.write_text(f"""
[camera]
backend = "replay"
replay_dir = "/srv/shared/images"
fps = 0.0
still_size = [640, 480]
[model]
path = "/srv/shared/models/coral/mobilenet_v1_0.25_128_quant.tflite"
labels = "/srv/shared/models/coral/imagenet_labels.txt"
[keep]
labels = ["*"]
min_score = 0.0
[storage]
data_dir = "{DATA_DIR}"
min_free_bytes = "4 MB"
[status]
runtime_dir = "/run/appliance"
[gpio]
enabled = "off"
[system]
hostname = "powercut"
""")
    mark("start")
    loop = subprocess.Popen(["appliance", "run", "--config", str(CONFIG)])
    offloads = []
    started = time.monotonic()  # the first offload once the loop has kept a few (its start is slow here)
    while (time.monotonic() < started + before_offload_s or kept() < 5) and loop.poll() is None:
        time.sleep(1)
    offloads.append(offload(1))
    while time.monotonic() < started + total_s * 0.7 and loop.poll() is None:
        time.sleep(1)
    offloads.append(offload(2))
    while time.monotonic() < started + total_s and loop.poll() is None:
        time.sleep(1)
    if loop.poll() is not None:
        sys.exit(f"powercut: appliance run ended early (exit {loop.returncode})")
    loop.send_signal(signal.SIGTERM)
    loop.wait(timeout=120)
    mark("stopped")
    figures = {"data_fs": data_fs, "kept": kept(), "offloads": offloads, "seconds": round(time.monotonic() - START, 1)}
    sh("umount", str(MOUNT))
    mark("end")
    for name in (STICK, DATA, LOG):
        sh("dmsetup", "remove", "--noudevsync", name)
    figures["unreadable_copies"] = unreadable_copies(sectors)
    (RESULTS / "record.json").write_text(json.dumps(figures, indent=1))
    print(f"powercut: recorded {figures}", flush=True)
    os.sync()


def unreadable_copies(sectors: int) -> dict:
    """A stick whose copies read back wrong: dm-flakey corrupts byte 4096 of every read bigger than
    that (a file's data as the offload reads it back; the filesystem's own 512-byte reads pass).
    The offload must mark nothing and say so; on the same stick made sound again, a second offload
    copies and marks everything."""
    data_dir = Path("/tmp/verify-data")
    config = Path("/tmp/verify.toml")
    config.write_text(CONFIG.read_text().replace(f'data_dir = "{DATA_DIR}"', f'data_dir = "{data_dir}"'))
    run = subprocess.run(["appliance", "run", "--once", "--config", str(config)], capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"powercut: appliance run --once: {run.stderr[-500:]}")
    flakey = "powercut-flakey"
    create(flakey, f"0 {sectors} flakey {DISK} 0 0 3600 5 corrupt_bio_byte 4096 r 1 0")
    sh("mkfs.vfat", "-F", "32", "-n", "STICK", f"/dev/mapper/{flakey}")
    out = {"kept": count(data_dir)}
    for attempt in ("corrupting", "sound"):
        if attempt == "sound":
            sh("dmsetup", "load", flakey, "--table", f"0 {sectors} linear {DISK} 0")
            sh("dmsetup", "resume", flakey)
        copy = subprocess.run(["appliance", "offload", "--config", str(config), "--device", f"/dev/mapper/{flakey}"],
                              capture_output=True, text=True)
        print(copy.stdout + copy.stderr, flush=True)
        out[attempt] = {"exit": copy.returncode, "marked": count(data_dir, "where offloaded_at is not null"),
                        "said": (copy.stdout.strip().splitlines() or [""])[-1][:300]}
    sh("dmsetup", "remove", "--noudevsync", flakey)
    return out


START = time.monotonic()
if __name__ == "__main__":
    main(float(sys.argv[1]), float(sys.argv[2]), *sys.argv[3:4])
