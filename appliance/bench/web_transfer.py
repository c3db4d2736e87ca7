"""``appliance bench-web``'s zip export and sync, against a real server in a child process."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from functools import partial
from pathlib import Path

from appliance.bench import MIN_PAIRS
from appliance.bench.common import interleaved, median_of
from appliance.bench.web_data import AUTH, PASSWORD, bench_config, fake_rows, insert_rows, jpeg_variants, write_config
from appliance.errors import BenchmarkError
from appliance.storage.store import Store, slug

log = logging.getLogger(__name__)

FLAT_MB = 5.0  # zip export: allowed peak difference between the small and the full export


def transfer_benchmark(work: Path, zip_items: int, pairs: int = MIN_PAIRS) -> dict:
    """Zip export memory and speed over ``zip_items`` JPEGs in ``work``, and sync beside plain
    downloads of the same images: ``pairs`` of each, in alternation."""
    config = bench_config(work)
    data_dir = Path(config.storage.data_dir)
    variants = [(data, hashlib.sha256(data).hexdigest()) for data in jpeg_variants(16)]

    def write(at, label):  # the device's own layout: YYYY/MM/DD/HHMMSS.mmm_label.jpg
        data, sha256 = variants[int(at[20:23]) % len(variants)]
        relative = Path(at[:4], at[5:7], at[8:10], f"{at[11:23].replace(':', '')}_{slug(label)}.jpg")
        (data_dir / relative).parent.mkdir(parents=True, exist_ok=True)
        (data_dir / relative).write_bytes(data)
        return str(relative), None, len(data), sha256, 640, 480

    store = Store(data_dir)
    log.info("transfer: writing %d JPEGs and their rows", zip_items)
    insert_rows(store, (row | {"synced_at": None, "offloaded_at": None} for row in fake_rows(zip_items, 2, write)))
    store.close()
    config_path = write_config(work, config)
    small = min(1000, max(1, zip_items // 10))  # 1,000 ids fit the 64 KB form limit
    log.info("transfer: zip export of %d, then of %d images", small, zip_items)
    zips = [_zip_run(config_path, {"ids": list(range(1, small + 1))}, small) | {"selection": "ids 1..N"},
            _zip_run(config_path, {"unsynced": "1"}, zip_items) | {"selection": "unsynced=1 (all)"}]
    with Server(config_path) as server:
        log.info("transfer: plain download and appliance sync of %d images, %d pairs", zip_items, pairs)
        measured = interleaved(partial(_plain_download, server.url, zip_items),
                               partial(_synced_again, server.url, data_dir, work / "dest"), pairs,
                               ratio=lambda plain, synced: synced["mb_per_s"] / plain["mb_per_s"],
                               log_as="transfer: plain download, appliance sync")
        server_peak_mb = server.status_mb("VmHWM")
    extra_mb = zips[1]["server_peak_growth_mb"] - zips[0]["server_peak_growth_mb"]
    ratio = measured.summary
    syncs = measured.b
    return {
        "zip_export": {"runs": zips, "is_memory_flat": extra_mb <= FLAT_MB,
                       "peak_growth_kb_per_extra_image": round(extra_mb * 1024 / max(1, zip_items - small), 2),
                       "memory": "server child process: VmHWM after the export minus VmRSS before it, the peak "
                                 "reset via /proc/<pid>/clear_refs after a warm-up request; flat: the growth "
                                 f"at {zip_items} images is within {FLAT_MB} MB of that at {small}"},
        "sync": {"plain_download": _as_one(measured.a),
                 "appliance_sync": _as_one(syncs) | {
                     key: min(r[key] for r in syncs) for key in ("new", "files", "device_marked_synced")} | {
                     "failed": sum(r["failed"] for r in syncs),
                     "client_peak_rss_mb": max(r["client_peak_rss_mb"] for r in syncs)},
                 "sync_vs_plain_mb_per_s": ratio["median"], "sync_vs_plain_mb_per_s_min": ratio["min"],
                 "sync_vs_plain_mb_per_s_max": ratio["max"], "pairs": ratio["pairs"],
                 "sync_vs_plain_mb_per_s_per_pair": measured.ratios,
                 "figures": "plain download and sync in alternation, one pair after another; sync_vs_plain_mb_per_s "
                            "is the median of each pair's sync MB/s / plain MB/s, _min and _max their range; "
                            "seconds, MB/s and files/s of each side are medians over its runs; sync's counts are "
                            "the least over its runs (failed: the sum), its client peak RSS the highest",
                 "server_peak_rss_mb": server_peak_mb, "page_cache": "warm: the zip exports read every file first"},
    }


_SPEEDS = ("seconds", "mb_per_s", "files_per_s")


def _as_one(runs: list[dict]) -> dict:
    """One side's runs as one: the first run's figures, with its speeds the medians over all runs."""
    return runs[0] | {key: median_of(runs, key, 2) for key in _SPEEDS} | {
        "mb_per_s_per_run": [r["mb_per_s"] for r in runs]}


def _synced_again(url: str, data_dir: Path, dest: Path) -> dict:
    """One timed sync into an empty ``dest`` with every capture unsynced again, as the first sync found
    them (the benchmark's own store, so plain SQL); then how many the device marked synced."""
    with contextlib.closing(Store(data_dir)) as store, store.db.conn:
        store.db.execute("update captures set synced_at = null")
    synced = _sync_run(url, dest)
    with contextlib.closing(Store(data_dir)) as store:
        marked = store.db.execute("select count(*) from captures where synced_at is not null").fetchone()[0]
    shutil.rmtree(dest)
    return synced | {"device_marked_synced": marked}


class Server:
    """A real ``WebServer`` (waitress) in a child process, so the memory measured is the server's own;
    with ``nice``, at that priority (set before it starts, as systemd's ``Nice=`` is)."""

    def __init__(self, config_path: Path, nice: int | None = None):
        self.log_path = config_path.with_name("server.log")
        with open(self.log_path, "ab") as stderr:
            self.process = subprocess.Popen([sys.executable, "-c", _SERVER, str(config_path)], stdout=subprocess.PIPE,
                                            stderr=stderr, env=child_env(), preexec_fn=niced(nice))
        self.url = self.process.stdout.readline().decode().strip()
        if not self.url:
            self.close()
            raise BenchmarkError(f"the web server did not start: {self.log_path.read_text()[-2000:]}")
        # Warm up (imports, templates, the deliberately costly scrypt check of the password), then
        # restart the peak so that only what follows counts.
        with _open(self.url + "api/v1/captures?limit=1") as response:
            response.read()
        try:
            Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")
            self.is_peak_reset = True
        except OSError:  # a kernel without it: the peak then includes the warm-up's
            self.is_peak_reset = False

    def status_mb(self, key="VmRSS") -> float:
        return _status_mb(Path(f"/proc/{self.process.pid}/status"), key)

    def close(self):
        self.process.terminate()
        self.process.wait(timeout=10)
        self.process.stdout.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _zip_run(config_path: Path, form: dict, count: int) -> dict:
    with Server(config_path) as server:
        idle_mb = server.status_mb()
        started, size, tail = time.perf_counter(), 0, b""
        with _open(server.url + "export.zip", urllib.parse.urlencode(form, doseq=True).encode()) as response:
            while chunk := response.read(1 << 20):
                size, tail = size + len(chunk), (tail + chunk)[-(1 << 16):]
        seconds = time.perf_counter() - started
        peak_mb = server.status_mb("VmHWM")
    return {"images": count, "zip_entries": _zip_entries(tail), "zip_mb": round(size / 1e6, 1),
            "seconds": round(seconds, 2), "mb_per_s": round(size / 1e6 / seconds, 1),
            "server_idle_rss_mb": idle_mb, "server_peak_rss_mb": peak_mb,
            "server_peak_growth_mb": round(peak_mb - idle_mb, 1), "is_peak_reset": server.is_peak_reset}


def _zip_entries(tail: bytes) -> int:
    """The entry count in a zip's end-of-central-directory record (zip64's if there is one)."""
    end = tail.rfind(b"PK\x05\x06")
    if end < 0:
        return 0
    entries = int.from_bytes(tail[end + 10:end + 12], "little")
    zip64 = tail.rfind(b"PK\x06\x06")
    return int.from_bytes(tail[zip64 + 32:zip64 + 40], "little") if entries == 0xFFFF and zip64 >= 0 else entries


def _plain_download(url: str, count: int) -> dict:
    """The floor for sync: one urllib GET per image (a connection each, as sync makes), bodies discarded."""
    started, size = time.perf_counter(), 0
    for capture_id in range(1, count + 1):  # a fresh table: ids 1..count
        with _open(f"{url}api/v1/captures/{capture_id}/image") as response:
            while chunk := response.read(256 * 1024):
                size += len(chunk)
    seconds = time.perf_counter() - started
    return {"files": count, "mb": round(size / 1e6, 1), "seconds": round(seconds, 2),
            "mb_per_s": round(size / 1e6 / seconds, 1), "files_per_s": round(count / seconds, 1),
            "what": "urllib GET of each image URL with Basic auth, bodies read and discarded (nothing written)"}


def _sync_run(url: str, dest: Path) -> dict:
    """``appliance.transfer.sync.sync`` with its default page size, in its own process, so its VmHWM is its own."""
    result = subprocess.run([sys.executable, "-c", _SYNC, url, str(dest)], capture_output=True, text=True,
                            env=child_env() | {"APPLIANCE_PASSWORD": PASSWORD})
    if result.returncode != 0:
        raise BenchmarkError(f"sync failed: {result.stderr[-2000:]}")
    report = json.loads(result.stdout)
    files = list(dest.glob("*/*.jpg"))
    size = sum(f.stat().st_size for f in files)
    return report | {"files": len(files), "mb": round(size / 1e6, 1),
                     "mb_per_s": round(size / 1e6 / report["seconds"], 1),
                     "files_per_s": round(len(files) / report["seconds"], 1),
                     "what": "each file streamed to DEST, sha256-verified, fsynced, renamed; manifest "
                             "appended; acknowledged per page"}


def _open(url: str, data: bytes | None = None):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    return opener.open(urllib.request.Request(url, data, AUTH), timeout=60)


def _status_mb(path: Path, key: str) -> float:
    for line in path.read_text().splitlines():
        if line.startswith(key + ":"):
            return round(int(line.split()[1]) / 1024, 1)
    raise KeyError(key)


def niced(nice: int | None):
    """A ``preexec_fn`` that sets the child's nice value between fork and exec (None: the parent's)."""
    if nice is None:
        return None
    return lambda: os.setpriority(os.PRIO_PROCESS, 0, nice)


def child_env() -> dict:
    root = str(Path(__file__).resolve().parents[2])  # the directory that holds the package
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))


_SERVER = """
import sys
from appliance.config import load_config
from appliance.web.server import WebServer
server = WebServer(load_config(sys.argv[1]), port=0)
print(server.url, flush=True)
server.run()
"""

_SYNC = """
import json, os, sys, time
from pathlib import Path
from appliance.transfer.sync import sync
def mb(key):
    line = next(l for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(key + ":"))
    return round(int(line.split()[1]) / 1024, 1)
idle, started = mb("VmRSS"), time.perf_counter()
report = sync(sys.argv[1], sys.argv[2], os.environ["APPLIANCE_PASSWORD"])
print(json.dumps({"seconds": round(time.perf_counter() - started, 2), "new": report.new,
                  "failed": len(report.failed), "client_idle_rss_mb": idle, "client_peak_rss_mb": mb("VmHWM")}))
"""
