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
  filesystem, after one untimed warm-up pair, ``runs`` pairs (at least 5), in alternation by
  ``common.interleaved`` (cp+sync first in odd pairs, offload first in even ones):

  - baseline: one ``cp --parents`` process with every image file into ``<stick>/cp-baseline/``,
    then ``sync``, timed together (and each apart);
  - the appliance: ``offload(store, stick, "bench")``, timed: copy in batches, one filesystem sync
    per batch, rename, drop the copies' cache, read them back, compare each sha256 with the
    database's, mark them once their renames are durable.

  After each step its folder is deleted and synced (and the store's marks cleared), so every step
  starts from the same empty filesystem. Before each step everything is synced and the page cache
  dropped: the source files are cold for both, and the stick holds nothing dirty;
* MB/s = image bytes ÷ seconds (MB = 10⁶ bytes); the MB/s figures are medians over the runs; each
  pair's ratio = its offload MB/s ÷ its cp+sync MB/s, and ``ratio`` is the median of those per-pair
  ratios, with their min–max (``ratio_min``, ``ratio_max``; likewise ``ratio_vs_durable``);
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
import shutil
import tempfile
import time
from datetime import datetime, timedelta, timezone
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from appliance.bench import offload_disks as disks
from appliance.bench.common import interleaved, machine, median_of, noisy_field, percentiles, ratio_summary
from appliance.pipeline.writer import encode_jpeg, make_thumbnail
from appliance.storage.store import Store, metadata_comment
from appliance.transfer.export import export_name, label_dirname
from appliance.errors import OffloadError
from appliance.transfer.offload import offload, read_back_sha256s
from appliance.transfer.stick import drop_device_cache, mounted

log = logging.getLogger(__name__)

HOSTNAME = "bench"
BASELINE_DIR = "cp-baseline"
FILESYSTEMS = ("ext4", "exfat", "vfat")
LOOP_IO = ("buffered", "direct")
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
    disks.check_can_run(filesystems, loop_io)
    started = time.perf_counter()
    result = {"machine": machine(), "method": _METHOD}
    with tempfile.TemporaryDirectory(prefix="appliance-bench-offload-") as tmp:
        work = Path(tmp)
        store = Store(work / "data")
        try:
            log.info("source: writing %d keeps of ~%d KB", items, kb)
            result["source"] = fill_store(store, items, kb)
            result["source"]["temp_dir"], result["source"]["temp_dir_fs"] = tmp, disks.fstype_of(work)
            result["loop_io"] = {}
            for mode in loop_io:
                measured = {}
                for fstype in filesystems:
                    if not disks.kernel_has(fstype) and fstype != "exfat":  # exFAT falls back to FUSE, as on the device
                        measured[fstype] = {"skipped": f"this kernel has no {fstype} driver "
                                                       "(not in /proc/filesystems)"}
                        continue
                    measured[fstype] = filesystem_benchmark(work, store, fstype, runs, mode)
                result["loop_io"][mode] = {"about": _LOOP_IO_ABOUT[mode], "filesystems": measured}
        finally:
            store.close()
    result["machine"]["load_avg_1min_at_end"] = round(os.getloadavg()[0], 2)
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
    "order": "one untimed warm-up pair, then pairs in alternation: odd runs cp+sync first, even runs offload "
             "first",
    "figures": "MB = 10^6 bytes of image files; MB/s figures are medians over the runs; ratio = the median "
               "over the pairs of each pair's offload_mb_s / cp_sync_mb_s, ratio_min and ratio_max their range "
               "(likewise ratio_vs_durable, against cp_sync_durable_mb_s)",
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
    bases = [noisy_field(rng, (size[0] + _MARGIN_PX, size[1] + _MARGIN_PX), sigma) for _ in range(_BASES)]
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


def _calibrate(kb: int):
    """The resolution (1920×1080 if the size allows) and noise that give a JPEG of about ``kb`` KB."""
    target, size = kb * 1000, STILL_SIZE

    def jpeg_bytes(size, sigma):
        return len(encode_jpeg(Image.fromarray(noisy_field(np.random.default_rng(0), size, sigma)), JPEG_QUALITY))

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
    image = disks.make_image(work / f"{fstype}.img", fstype, image_mb)
    image_dev = os.stat(image).st_dev
    try:
        with disks.loop_device(image, is_direct=loop_io == "direct") as device, mounted(device, work / "mnt") as stick:
            driver = disks.driver(stick)
            is_direct_io = disks.is_direct_io(device)
            log.info("%s, %s: %d MB image on %s, mounted by %s; a warm-up pair first", fstype, loop_io, image_mb,
                     device, driver)
            _cp_sync_step(store, stick, image, device, rows, total)
            _offload_step(store, stick, image, device, rows, total)
            steps = [partial(step, store, stick, image, device, rows, total) for step in (_cp_sync_step, _offload_step)]
            pairs = interleaved(*steps, runs, ratio=lambda cp, off: off["offload_mb_s"] / cp["cp_sync_mb_s"],
                                is_order_alternated=True, log_as=f"{fstype}, {loop_io}")
            log.info("%s, %s: read-back alone", fstype, loop_io)
            readback = _readback_alone(store, stick, device, total)
    finally:
        image.unlink(missing_ok=True)

    results = [{"run": run + 1, "order": "cp_sync, offload" if order == "a, b" else "offload, cp_sync"} | cp | off
               | {"ratio": ratio}
               for run, (order, cp, off, ratio) in enumerate(zip(pairs.orders, pairs.a, pairs.b, pairs.ratios))]
    ratio = pairs.summary
    vs_durable = ratio_summary(round(r["offload_mb_s"] / r["cp_sync_durable_mb_s"], 3) for r in results)

    def median(key):
        return median_of(results, key)

    return {
        "loop_io": loop_io, "loop_direct_io": is_direct_io,
        "driver": driver, "image_mb": image_mb, "files": len(rows), "bytes": total, "mb": round(total / 1e6, 1),
        "cp_sync_mb_s": median("cp_sync_mb_s"), "offload_mb_s": median("offload_mb_s"),
        "ratio": ratio["median"], "ratio_min": ratio["min"], "ratio_max": ratio["max"], "pairs": ratio["pairs"],
        "ratio_per_run": pairs.ratios, "cp_sync_durable_mb_s": median("cp_sync_durable_mb_s"),
        "ratio_vs_durable": vs_durable["median"], "ratio_vs_durable_min": vs_durable["min"],
        "ratio_vs_durable_max": vs_durable["max"],
        "offload_read_from_device_mb": median("offload_read_from_device_mb"),
        "disk": {"device": disks.disk_name(image_dev), **{key: median(key) for key in _DISK_KEYS}},
        "seconds": {key: round(median(key + "_s"), 3) for key in ("cp", "sync", "cp_sync", "cp_sync_durable",
                                                                  "offload")},
        "offload_batch_ms_all_runs": percentiles([ms for r in results for ms in r.pop("item_ms")]),
        "readback_alone": readback, "runs": results, "total_s": round(time.perf_counter() - started, 1),
    }


def _cp_sync_step(store, stick, image, device, rows, total) -> dict:
    dest = stick / BASELINE_DIR
    dest.mkdir()
    disks.settle()
    disk_before = disks.disk_bytes(image)
    started = time.perf_counter()
    # One process, every file: chunked only past what one command line can hold.
    for chunk in _chunks([r["image_path"] for r in rows]):
        disks.run(["cp", "--parents", "-t", str(dest), "--", *chunk], cwd=store.data_dir)
    copied = time.perf_counter()
    disks.run(["sync"])
    synced = time.perf_counter()
    dirty_kb = disks.dirty_kb()
    disks.fsync(image)
    durable = time.perf_counter()
    disk_read, disk_written = disks.disk_bytes(image) - disk_before
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
    disks.settle()
    item_s = []
    read_before, disk_before = disks.bytes_read(device), disks.disk_bytes(image)
    started = time.perf_counter()
    # Exactly what `appliance offload --device` does, including dropping the device's cache before
    # each read-back (without it a FUSE driver answers from memory).
    report = offload(store, stick, HOSTNAME, progress=lambda *_: item_s.append(time.perf_counter()),
                     before_verify=lambda: drop_device_cache(device))
    seconds = time.perf_counter() - started
    # What the read-back really fetched from the "stick": the bytes the loop device was asked for.
    read_mb = (disks.bytes_read(device) - read_before) / 1e6
    disk_read, disk_written = disks.disk_bytes(image) - disk_before
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
    for name, prepare in (("cold", disks.settle), ("as_in_offload", lambda: (os.sync(), drop_device_cache(device)))):
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

def _clear_marks(store: Store) -> None:
    """Every item is due again (the benchmark's own store, so plain SQL)."""
    with store.db.conn:
        store.db.execute("update captures set offloaded_at = null")


_DISK_KEYS = ("cp_sync_disk_read_mb", "cp_sync_disk_written_mb", "offload_disk_read_mb", "offload_disk_written_mb")


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


def main_json(**kwargs) -> str:
    return json.dumps(run_benchmark(**kwargs), indent=2)
