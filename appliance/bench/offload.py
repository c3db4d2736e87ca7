"""``appliance bench-offload``: USB offload throughput, verification included, beside ``cp`` + ``sync``.

Measured in one run, on one machine, in a temp dir removed at the end (loop devices detached,
mounts unmounted, even on failure). Needs root: it attaches loop devices, mounts them and drops the
page cache.

Each figure says the loop mode it was measured in (``loop_io``), by default both:

* ``buffered``: the loop device reads and writes its image file through the host's page cache, so
  the "stick" is RAM: writes land in memory (a later ``sync`` flushes them to the disk) and the
  read-back is served from memory;
* ``direct`` (``losetup --direct-io=on``): the loop device reads and writes the image file with
  O_DIRECT, so every write goes to the disk under the temp dir and the read-back comes from it, as
  with a real stick. Refused where the temp dir is in RAM (tmpfs): set TMPDIR to a directory on a disk.

* source: a store of ``items`` real keeps (photo-like JPEGs of ~``kb`` KB each, 1920×1080 at
  quality 90 unless the size asks for another resolution), written by ``Store.add``;
* per loop mode and filesystem (ext4 and exFAT; vfat only where ``/proc/filesystems`` lists it): one fresh
  filesystem image (every block written before mkfs, so the host allocates nothing mid-run),
  loop-attached and mounted once by ``stick.mounted`` as the appliance mounts a stick. On that same
  filesystem, after one untimed warm-up pair, ``runs`` times, in alternating order:

  - baseline: one ``cp --parents`` process with every image file into ``<stick>/cp-baseline/``,
    then ``sync``, timed together (and each apart);
  - the appliance: ``offload(store, stick, "bench")``, timed: copy in batches, one filesystem sync
    per batch, rename, drop the copies' cache, read them back, compare each sha256 with the
    database's, mark them once their renames are durable.

  After each step its folder is deleted and synced (and the store's marks cleared), so every step
  starts from the same empty filesystem. Before each step everything is synced and the page cache
  dropped: the source files are cold for both, and the stick holds nothing dirty;
* MB/s = image bytes ÷ seconds (MB = 10⁶ bytes); the figures are medians over the runs, and
  ratio = offload MB/s ÷ cp+sync MB/s;
* where the loop image's backing file still holds dirty pages in the host's cache after ``sync``
  (exFAT through FUSE: the FUSE daemon writes the loop device, whose writes land in the backing
  file's cache, which ``sync`` does not flush), ``cp_sync_durable`` adds an fsync of the backing
  file: what a real stick, with no host cache in between, costs. ``offload`` pays that on every
  fsync already;
* the read-back alone: sha256 of every offloaded copy with its cache dropped (``read_back_sha256s``,
  as offload verifies), cold, and ``as_in_offload`` (a buffered image still in the host's cache);
  and during each offload, the bytes the loop device was asked to read: about the image bytes if the
  read-back really reaches the stick (ext4), near 0 if it is served from a cache below the file
  (exFAT through FUSE: the daemon's block-device cache still holds what it wrote);
* the bytes the disk under the temp dir (source store and image alike) was asked to read and write
  during each step, whole disk, so other programs' I/O counts too: the source is read cold in both
  modes; in direct mode the offload also reads every copy back from it, and both sides' writes
  reach it.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
from PIL import Image

from appliance.pipeline.writer import encode_jpeg, make_thumbnail
from appliance.storage.store import Store, metadata_comment
from appliance.transfer.export import export_name, label_dirname
from appliance.transfer.offload import OffloadError, offload, read_back_sha256s
from appliance.transfer.stick import drop_device_cache, mounted

log = logging.getLogger(__name__)

HOSTNAME = "bench"
BASELINE_DIR = "cp-baseline"
FILESYSTEMS = ("ext4", "exfat", "vfat")
LOOP_IO = ("buffered", "direct")
RAM_FILESYSTEMS = {"tmpfs", "ramfs"}
# mkfs.ext4 would discard, i.e. punch holes in the image file: the host would allocate again.
MKFS = {"ext4": ["mkfs.ext4", "-q", "-F", "-E", "nodiscard"], "exfat": ["mkfs.exfat"],
        "vfat": ["mkfs.vfat", "-F", "32"]}
STILL_SIZE = (1920, 1080)  # the appliance's default kept image
JPEG_QUALITY = 90  # the appliance's default jpeg_quality
LABELS = ("Parus major (Great Tit)", "Erithacus rubecula (European Robin)", "Pica pica (Eurasian Magpie)",
          "Sciurus vulgaris (Red Squirrel)", "Bubo bubo (Eurasian Eagle-Owl)")
START = datetime(2026, 10, 1, 6, tzinfo=timezone.utc)
_MARGIN_PX = 64  # each keep is a different crop of one of a few noisy fields: distinct pixels, cheap
_BASES = 4


def run_benchmark(items=400, kb=600, runs=5, filesystems=None, loop_io=None) -> dict:
    """Every figure of the module doc, as a dict ready for JSON; progress is logged.

    ``filesystems``: names from ``FILESYSTEMS``; default all three, vfat only if the kernel has it.
    ``loop_io``: modes from ``LOOP_IO``; default both. The figures are in
    ``result["loop_io"][mode]["filesystems"][fstype]``, each also naming its ``loop_io``."""
    filesystems, loop_io = filesystems or FILESYSTEMS, loop_io or LOOP_IO
    _check_can_run(filesystems, loop_io)
    started = time.perf_counter()
    machine = _machine()
    result = {"machine": machine, "method": _METHOD}
    with tempfile.TemporaryDirectory(prefix="appliance-bench-offload-") as tmp:
        work = Path(tmp)
        store = Store(work / "data")
        try:
            log.info("source: writing %d keeps of ~%d KB", items, kb)
            result["source"] = fill_store(store, items, kb)
            result["source"]["temp_dir"], result["source"]["temp_dir_fs"] = tmp, _fstype_of(work)
            result["loop_io"] = {}
            for mode in loop_io:
                measured = {}
                for fstype in filesystems:
                    if not _kernel_has(fstype) and fstype != "exfat":  # exFAT falls back to FUSE, as on the device
                        measured[fstype] = {"skipped": f"this kernel has no {fstype} driver "
                                                       "(not in /proc/filesystems)"}
                        continue
                    measured[fstype] = filesystem_benchmark(work, store, fstype, runs, mode)
                result["loop_io"][mode] = {"about": _LOOP_IO_ABOUT[mode], "filesystems": measured}
        finally:
            store.close()
    machine["load_avg_1min_at_end"] = round(os.getloadavg()[0], 2)
    result["total_s"] = round(time.perf_counter() - started, 1)
    return result


_METHOD = {
    "baseline": f"one `cp --parents` process with all image files into <stick>/{BASELINE_DIR}/, then `sync`; "
                "timed together",
    "appliance": f"offload(store, stick, {HOSTNAME!r}): per batch: copy, one filesystem sync, rename, drop "
                 "cache, read back, compare sha256, mark once the next sync made the renames durable",
    "stick_state": "one fresh image per filesystem (every block written first, so the host allocates nothing "
                   "during the runs), mounted once; after each step its folder is deleted and synced (and the "
                   "marks cleared), so every step starts from the same empty filesystem",
    "cache": "cold for both: sync + echo 3 > /proc/sys/vm/drop_caches before every timed step",
    "order": "one untimed warm-up pair, then alternating: odd runs cp+sync first, even runs offload first",
    "figures": "MB = 10^6 bytes of image files; MB/s figures are medians over the runs; "
               "ratio = offload_mb_s / cp_sync_mb_s",
    "cp_sync_durable": "cp + sync + fsync of the loop image's backing file (only matters where sync leaves the "
                       "image dirty in the host's cache: FUSE)",
    "loop_io": "each mode measured on its own fresh image of the same size and type, with the same files",
}

_LOOP_IO_ABOUT = {
    "buffered": "losetup without --direct-io: the image file is read and written through the host's page "
                "cache, so the 'stick' is RAM: writes land in memory (sync flushes them to the disk later) and "
                "the read-back is served from memory",
    "direct": "losetup --direct-io=on: the image file is read and written with O_DIRECT, so every write goes "
              "to the disk under the temp dir and the read-back comes from it, as with a real stick",
}


# -- a store of realistic keeps -----------------------------------------------------------------

def fill_store(store: Store, items: int, kb: int) -> dict:
    """``items`` photo-like keeps of ~``kb`` KB, written as the appliance writes them."""
    started = time.perf_counter()
    size, sigma = _calibrate(kb)
    rng = np.random.default_rng(1)
    bases = [_noisy_field(rng, (size[0] + _MARGIN_PX, size[1] + _MARGIN_PX), sigma) for _ in range(_BASES)]
    thumbs = [make_thumbnail(Image.fromarray(base), 320) for base in bases]
    total = 0
    for i in range(items):
        at = (START + timedelta(seconds=97 * i)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        label = LABELS[i % len(LABELS)]
        record = {"captured_at": at, "clock_source": "ntp", "label": label, "score": 0.9,
                  "top_k": json.dumps([[label, 0.9]]), "kind": "match", "reason": "match",
                  "model_name": "inat-bird", "model_sha256": "ab" * 32, "backend": "cpu", "inference_ms": 8.0,
                  "source": "picamera2", "width": size[0], "height": size[1]}
        dx, dy = (i * 7) % _MARGIN_PX, (i * 13) % _MARGIN_PX
        pixels = bases[i % _BASES][dy:dy + size[1], dx:dx + size[0]]
        data = encode_jpeg(Image.fromarray(np.ascontiguousarray(pixels)), JPEG_QUALITY, metadata_comment(record))
        store.add(record, data, thumbs[i % _BASES])
        total += len(data)
    return {"files": items, "bytes": total, "mb": round(total / 1e6, 1), "kb_per_file": round(total / items / 1e3),
            "resolution": f"{size[0]}x{size[1]}", "jpeg_quality": JPEG_QUALITY, "noise_sigma": round(sigma, 2),
            "write_s": round(time.perf_counter() - started, 1)}


def _noisy_field(rng, size, sigma):
    """Smooth colour regions plus sensor-like noise: compresses like a photo, not like a test card."""
    colours = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    field = np.asarray(Image.fromarray(colours).resize(size, Image.Resampling.BICUBIC), np.float32)
    noise = rng.normal(0, sigma, (size[1], size[0], 3)).astype(np.float32) if sigma else 0
    return np.clip(field + noise, 0, 255).astype(np.uint8)


def _calibrate(kb: int):
    """The resolution (1920×1080 if the size allows) and noise that give a JPEG of about ``kb`` KB."""
    target, size = kb * 1000, STILL_SIZE

    def jpeg_bytes(size, sigma):
        return len(encode_jpeg(Image.fromarray(_noisy_field(np.random.default_rng(0), size, sigma)), JPEG_QUALITY))

    for _ in range(4):  # the noise spans ~3-5x in size; beyond that the resolution has to change
        low, high = jpeg_bytes(size, 0.0), jpeg_bytes(size, 32.0)
        if low <= target <= high:
            break
        scale = (target / (low if target < low else high)) ** 0.5 * (0.9 if target < low else 1.1)
        size = (max(16, round(size[0] * scale)), max(16, round(size[1] * scale)))
    lo, hi = 0.0, 32.0
    for _ in range(7):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if jpeg_bytes(size, mid) < target else (lo, mid)
    return size, (lo + hi) / 2


# -- one filesystem -------------------------------------------------------------------------------

def filesystem_benchmark(work: Path, store: Store, fstype: str, runs: int, loop_io: str = "buffered") -> dict:
    """cp+sync and offload, ``runs`` times each in alternating order, on one fresh ``fstype`` image
    attached in ``loop_io`` mode."""
    started = time.perf_counter()
    rows = store.rows(order="captured_at, id")
    total = sum(r["bytes"] for r in rows)
    image_mb = max(64, round(total * 1.4 / 2**20) + 64)  # one copy at a time, plus cluster slack and metadata
    image = _make_image(work / f"{fstype}.img", fstype, image_mb)
    image_dev = os.stat(image).st_dev
    results = []
    try:
        with _loop_device(image, is_direct=loop_io == "direct") as device, mounted(device, work / "mnt") as stick:
            driver = _driver(stick)
            is_direct_io = _is_direct_io(device)
            log.info("%s, %s: %d MB image on %s, mounted by %s; a warm-up pair first", fstype, loop_io, image_mb,
                     device, driver)
            _cp_sync_step(store, stick, image, device, rows, total)
            _offload_step(store, stick, image, device, rows, total)
            for run in range(runs):
                is_cp_first = run % 2 == 0
                steps = {"cp_sync": _cp_sync_step, "offload": _offload_step}
                order = list(steps) if is_cp_first else list(reversed(steps))
                figures = {"run": run + 1, "order": ", ".join(order)}
                for name in order:
                    log.info("%s, %s: run %d/%d: %s", fstype, loop_io, run + 1, runs, name)
                    figures |= steps[name](store, stick, image, device, rows, total)
                figures["ratio"] = round(figures["offload_mb_s"] / figures["cp_sync_mb_s"], 3)
                results.append(figures)
            log.info("%s, %s: read-back alone", fstype, loop_io)
            readback = _readback_alone(store, stick, device, total)
    finally:
        image.unlink(missing_ok=True)

    def median(key):
        return round(statistics.median(r[key] for r in results), 3)

    cp_sync_mb_s, offload_mb_s = median("cp_sync_mb_s"), median("offload_mb_s")
    durable_mb_s = median("cp_sync_durable_mb_s")
    ratios = [r["ratio"] for r in results]
    return {
        "loop_io": loop_io, "loop_direct_io": is_direct_io,
        "driver": driver, "image_mb": image_mb, "files": len(rows), "bytes": total, "mb": round(total / 1e6, 1),
        "cp_sync_mb_s": cp_sync_mb_s, "offload_mb_s": offload_mb_s, "ratio": round(offload_mb_s / cp_sync_mb_s, 3),
        "ratio_per_run": ratios, "ratio_min": min(ratios), "ratio_max": max(ratios),
        "cp_sync_durable_mb_s": durable_mb_s, "ratio_vs_durable": round(offload_mb_s / durable_mb_s, 3),
        "offload_read_from_device_mb": median("offload_read_from_device_mb"),
        "disk": {"device": _disk_name(image_dev), **{key: median(key) for key in _DISK_KEYS}},
        "seconds": {key: round(median(key + "_s"), 3) for key in ("cp", "sync", "cp_sync", "cp_sync_durable",
                                                                  "offload")},
        "offload_batch_ms_all_runs": _percentiles([ms for r in results for ms in r.pop("item_ms")]),
        "readback_alone": readback, "runs": results, "total_s": round(time.perf_counter() - started, 1),
    }


def _cp_sync_step(store, stick, image, device, rows, total) -> dict:
    dest = stick / BASELINE_DIR
    dest.mkdir()
    _settle()
    disk_before = _disk_bytes(image)
    started = time.perf_counter()
    # One process, every file: chunked only past what one command line can hold.
    for chunk in _chunks([r["image_path"] for r in rows]):
        _run(["cp", "--parents", "-t", str(dest), "--", *chunk], cwd=store.data_dir)
    copied = time.perf_counter()
    _run(["sync"])
    synced = time.perf_counter()
    dirty_kb = _dirty_kb()
    _fsync(image)
    durable = time.perf_counter()
    disk_read, disk_written = _disk_bytes(image) - disk_before
    files = sum(1 for p in dest.rglob("*.jpg") if p.is_file())
    shutil.rmtree(dest)
    os.sync()
    cp_s, sync_s, cp_sync_s, durable_s = copied - started, synced - copied, synced - started, durable - started
    return {"cp_s": round(cp_s, 3), "sync_s": round(sync_s, 3), "cp_sync_s": round(cp_sync_s, 3),
            "cp_sync_mb_s": round(total / 1e6 / cp_sync_s, 1), "host_dirty_kb_after_sync": dirty_kb,
            "cp_sync_durable_s": round(durable_s, 3), "cp_sync_durable_mb_s": round(total / 1e6 / durable_s, 1),
            "cp_files": files, "cp_sync_disk_read_mb": round(disk_read / 1e6, 1),
            "cp_sync_disk_written_mb": round(disk_written / 1e6, 1)}


def _offload_step(store, stick, image, device, rows, total) -> dict:
    _clear_marks(store)
    _settle()
    item_s = []
    read_before, disk_before = _bytes_read(device), _disk_bytes(image)
    started = time.perf_counter()
    # Exactly what `appliance offload --device` does, including dropping the device's cache before
    # each read-back (without it a FUSE driver answers from memory).
    report = offload(store, stick, HOSTNAME, progress=lambda *_: item_s.append(time.perf_counter()),
                     before_verify=lambda: drop_device_cache(device))
    seconds = time.perf_counter() - started
    # What the read-back really fetched from the "stick": the bytes the loop device was asked for.
    read_mb = (_bytes_read(device) - read_before) / 1e6
    disk_read, disk_written = _disk_bytes(image) - disk_before
    marked = len(store.rows("offloaded_at is not null"))
    if not report.is_complete:
        raise OffloadError(f"the benchmark's offload did not complete: {report.summary()}")
    shutil.rmtree(stick / label_dirname(HOSTNAME))
    os.sync()
    steps = np.diff([started, *item_s]) * 1000
    return {"offload_s": round(seconds, 3), "offload_mb_s": round(report.bytes_copied / 1e6 / seconds, 1),
            "offload_read_from_device_mb": round(read_mb, 1), "offload_disk_read_mb": round(disk_read / 1e6, 1),
            "offload_disk_written_mb": round(disk_written / 1e6, 1), "offload_copied": report.copied,
            "offload_verified": report.verified, "marked_offloaded": marked,
            "offload_tail_s": round(seconds - (item_s[-1] - started), 3) if item_s else round(seconds, 3),
            "item_ms": [round(float(ms), 2) for ms in steps]}


def _readback_alone(store, stick, device, total) -> dict:
    """Offload once more (untimed), then time only the verification, twice: every copy read back
    cold (nothing cached anywhere, as ``_settle`` leaves it), then as the offload reads it (synced,
    the device's cache dropped, the copies' pages dropped by the read-back itself; a buffered loop
    image stays in the host's cache, as it does during an offload)."""
    _clear_marks(store)
    offload(store, stick, HOSTNAME)  # untimed: only puts the copies there
    rows = store.rows()
    folder = stick / label_dirname(HOSTNAME)
    paths = [folder / export_name(r) for r in rows]
    figures = {}
    for name, prepare in (("cold", _settle), ("as_in_offload", lambda: (os.sync(), drop_device_cache(device)))):
        prepare()
        started = time.perf_counter()
        read_back = read_back_sha256s(paths)
        seconds = time.perf_counter() - started
        matching = sum(sha256 == r["sha256"] for (_, sha256), r in zip(read_back, rows))
        figures[name] = {"seconds": round(seconds, 3), "mb_s": round(total / 1e6 / seconds, 1), "matching": matching}
    shutil.rmtree(folder)
    os.sync()
    return figures["cold"] | {"as_in_offload": figures["as_in_offload"]}


# -- helpers --------------------------------------------------------------------------------------

def _make_image(path: Path, fstype: str, size_mb: int) -> Path:
    """A formatted image whose every block is written: a sparse one makes the host allocate blocks
    during the first timed step (exFAT's first cp ran at 150 MB/s, later ones at 400)."""
    zeros = bytes(2**20)
    with open(path, "wb") as f:
        for _ in range(size_mb):
            f.write(zeros)
        os.fsync(f.fileno())
    _run([*MKFS[fstype], str(path)])
    return path


def _clear_marks(store: Store) -> None:
    """Every item is due again (the benchmark's own store, so plain SQL)."""
    with store.db.conn:
        store.db.execute("update captures set offloaded_at = null")


def _run(command, **kwargs) -> str:
    """Run a tool; its failure is an ``OffloadError`` carrying what it said."""
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise OffloadError(f"{' '.join(command[:3])}: {(result.stderr or result.stdout).strip() or 'failed'}")
    return result.stdout.strip()


def _check_can_run(filesystems, loop_io=("buffered",)) -> None:
    if os.geteuid() != 0:
        raise OffloadError("bench-offload needs root: it attaches loop devices, mounts them and drops the page "
                           "cache (run it with sudo)")
    temp_dir = Path(tempfile.gettempdir())
    if "direct" in loop_io and _fstype_of(temp_dir) in RAM_FILESYSTEMS:
        raise OffloadError(f"bench-offload --loop-io direct: the temp dir {temp_dir} is in RAM "
                           f"({_fstype_of(temp_dir)}), so direct I/O would still measure memory: set TMPDIR to a "
                           "directory on a disk (e.g. TMPDIR=/var/tmp), or pass --loop-io buffered")
    needed = {"losetup", "mount", "umount", "cp", "sync"}
    needed |= {MKFS[fs][0] for fs in filesystems if fs == "exfat" or _kernel_has(fs)}
    if "exfat" in filesystems and not _kernel_has("exfat"):
        needed.add("mount.exfat-fuse")
    missing = sorted(tool for tool in needed if not shutil.which(tool))
    if missing:
        raise OffloadError(f"bench-offload needs {', '.join(missing)}: install them (e.g. e2fsprogs, "
                           "exfatprogs, exfat-fuse, dosfstools)")


def _kernel_has(fstype: str) -> bool:
    return any(line.split()[-1] == fstype for line in Path("/proc/filesystems").read_text().splitlines() if line)


@contextmanager
def _loop_device(image: Path, is_direct: bool = False):
    """``image`` attached to a free loop device; with ``is_direct``, by O_DIRECT (checked, since losetup
    falls back to buffered I/O with only a warning where the backing filesystem refuses it)."""
    device = _run(["losetup", "-f", "--show", *(["--direct-io=on"] if is_direct else []), str(image)])
    try:
        if is_direct and not _is_direct_io(device):
            raise OffloadError(f"{device}: the loop device could not use direct I/O on {image.parent} "
                               f"({_fstype_of(image.parent)}): set TMPDIR to a directory on a disk that allows "
                               "O_DIRECT, or pass --loop-io buffered")
        yield device
    finally:
        subprocess.run(["losetup", "-d", device], capture_output=True)


def _is_direct_io(device: str) -> bool:
    return Path(f"/sys/block/{Path(device).name}/loop/dio").read_text().strip() == "1"


def _settle() -> None:
    """Nothing dirty anywhere, nothing cached: both sides start cold."""
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3")


def _bytes_read(device: str) -> int:
    """Bytes read from a block device since boot (/sys/block/<dev>/stat counts 512-byte sectors)."""
    return int(Path(f"/sys/block/{Path(device).name}/stat").read_text().split()[2]) * 512


_DISK_KEYS = ("cp_sync_disk_read_mb", "cp_sync_disk_written_mb", "offload_disk_read_mb", "offload_disk_written_mb")


def _disk_bytes(path: Path) -> np.ndarray:
    """(read, written) bytes since boot of the block device ``path`` is on (0, 0 if it has none,
    e.g. an overlay), from /sys/dev/block/<major>:<minor>/stat, which counts 512-byte sectors."""
    dev = os.stat(path).st_dev
    stat = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}/stat")
    if not stat.exists():
        return np.zeros(2, dtype=np.int64)
    fields = stat.read_text().split()
    return np.array([int(fields[2]), int(fields[6])], dtype=np.int64) * 512


def _disk_name(dev: int) -> str:
    link = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}")
    return f"/dev/{link.resolve().name}" if link.exists() else "none (no block device: read and write bytes are 0)"


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _dirty_kb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("Dirty:"):
            return int(line.split()[1])
    return 0


def _chunks(paths, limit=100_000):
    chunk, length = [], 0
    for path in paths:
        if chunk and length + len(path) + 1 > limit:
            yield chunk
            chunk, length = [], 0
        chunk.append(path)
        length += len(path) + 1
    if chunk:
        yield chunk


def _percentiles(values) -> dict:
    values = np.asarray(values)
    return {"n": len(values), "p50": round(float(np.percentile(values, 50)), 2),
            "p95": round(float(np.percentile(values, 95)), 2), "max": round(float(values.max()), 2)}


def _fstype_of(path: Path) -> str:
    """The type of the filesystem ``path`` is on (the longest mount point that holds it)."""
    best, fstype = "", "?"
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _, point, kind, *_ = line.split()
        point = point.replace("\\040", " ")
        if (str(path) == point or str(path).startswith(point.rstrip("/") + "/")) and len(point) > len(best):
            best, fstype = point, kind
    return fstype


def _driver(stick: Path) -> str:
    kind = _fstype_of(stick)
    return "FUSE (mount.exfat-fuse)" if kind == "fuseblk" else f"kernel ({kind})"


def _machine() -> dict:
    model = Path("/proc/device-tree/model")
    memory_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                     if line.startswith("MemTotal:"))
    return {"model": model.read_text().strip("\0\n") if model.exists() else platform.machine(),
            "cpus": os.cpu_count(), "memory_mb": memory_kb // 1024, "kernel": platform.release(),
            "python": sys.version.split()[0], "load_avg_1min_at_start": round(os.getloadavg()[0], 2)}


def main_json(**kwargs) -> str:
    return json.dumps(run_benchmark(**kwargs), indent=2)
