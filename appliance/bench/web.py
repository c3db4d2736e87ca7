"""``appliance bench-web``: the review page's speed and memory at realistic sizes, as JSON.

Measured in one run, on one machine, in a temp dir removed at the end:

* gallery: a store of ``items`` rows (inserted in one transaction, ~60 days, ~20 labels) served
  in-process by the Flask test client; "server time" is the time of ``client.get()``, which is the
  whole request handling (auth, query, template, body) without a socket. p50/p95/max per scenario:
  first page, 50 pages down the "next" cursor, pages near the oldest end, and each filter;
* thumbnails: whether they carry Cache-Control max-age and an ETag, and answer 304 to If-None-Match;
* zip export: a real waitress server (a child process) streams ``/export.zip`` of a small set and
  of all ``zip_items`` real JPEGs; its peak RSS growth over its own idle RSS for each
  (peak reset through ``/proc/<pid>/clear_refs``, read as VmHWM), and the zip's size and MB/s;
* sync: ``appliance.transfer.sync.sync`` (in a child process, its own VmHWM reported) pulling every image
  from a fresh server, beside plain urllib GETs of the same image URLs (bodies read, discarded).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import html
import io
import json
import logging
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
from PIL import Image
from werkzeug.security import generate_password_hash

from appliance.config import Config, to_toml
from appliance.pipeline.writer import encode_jpeg
from appliance.service.control import ControlClient
from appliance.storage.store import THUMBS, Filters, Store, slug
from appliance.web import create_app

log = logging.getLogger(__name__)

PASSWORD = "bench-web"
LABELS = tuple(f"{latin} ({common})" for latin, common in (
    ("Parus major", "Great Tit"), ("Cyanistes caeruleus", "Eurasian Blue Tit"), ("Passer domesticus", "House Sparrow"),
    ("Erithacus rubecula", "European Robin"), ("Turdus merula", "Eurasian Blackbird"),
    ("Fringilla coelebs", "Common Chaffinch"), ("Pica pica", "Eurasian Magpie"),
    ("Columba palumbus", "Common Wood-Pigeon"),
    ("Sturnus vulgaris", "European Starling"), ("Carduelis carduelis", "European Goldfinch"),
    ("Sitta europaea", "Eurasian Nuthatch"), ("Dendrocopos major", "Great Spotted Woodpecker"),
    ("Garrulus glandarius", "Eurasian Jay"), ("Prunella modularis", "Dunnock"),
    ("Chloris chloris", "European Greenfinch"),
    ("Aegithalos caudatus", "Long-tailed Tit"), ("Troglodytes troglodytes", "Eurasian Wren"),
    ("Corvus corone", "Carrion Crow"), ("Sciurus vulgaris", "Red Squirrel"), ("Bubo bubo", "Eurasian Eagle-Owl")))
RARE_LABEL = LABELS[-1]  # every 2,000th capture: a filter that matches 0.05 % of the store
START = datetime(2026, 9, 1, tzinfo=timezone.utc)
SPAN_DAYS = 60
PAGE_SIZE = 48
FLAT_MB = 5.0  # zip export: allowed peak difference between the small and the full export
AUTH = {"Authorization": "Basic " + base64.b64encode(f"bench:{PASSWORD}".encode()).decode()}
FILTERS = {
    "label_common": {"label": LABELS[0]}, "label_rare": {"label": RARE_LABEL},
    "date_range_3_days": {"from": "2026-10-01", "to": "2026-10-03"}, "min_score_0.9": {"min_score": "0.9"},
    "kind_audit": {"kind": "audit"}, "starred": {"starred": "yes"}, "synced": {"synced": "yes"},
    "not_synced": {"synced": "no"}, "offloaded": {"offloaded": "yes"},
    # No index serves this one: the query walks the date index until 49 rows match (0.05 % do).
    "starred_audit": {"starred": "yes", "kind": "audit"},
}
_NEXT = re.compile(r'<a href="([^"]+)" id="next-page">')


def run_benchmark(items=100_000, zip_items=10_000, is_zip_skipped=False) -> dict:
    """Every figure of the module doc, as a dict ready for JSON; progress is logged."""
    started = time.perf_counter()
    # Other work on the machine shows up as outliers in the gallery's p95: the load says how much.
    machine = {"cpus": os.cpu_count(), "python": sys.version.split()[0],
               "load_avg_1min_at_start": round(os.getloadavg()[0], 2)}
    result = {"machine": machine}
    with tempfile.TemporaryDirectory(prefix="appliance-bench-web-") as tmp:
        result["gallery"] = gallery_benchmark(Path(tmp, "gallery"), items)
        if not is_zip_skipped:
            result |= transfer_benchmark(Path(tmp, "transfer"), zip_items)
    machine["load_avg_1min_at_end"] = round(os.getloadavg()[0], 2)
    result["total_s"] = round(time.perf_counter() - started, 1)
    return result


# -- a store of realistic rows -------------------------------------------------------------------

def fake_rows(count: int, seed: int, files):
    """``count`` capture rows, oldest first, one per millisecond at most, for ``insert_all``.

    ``files(captured_at, label)`` gives ``(image_path, thumb_path, bytes, sha256, width, height)``."""
    rng = random.Random(seed)
    span_ms = SPAN_DAYS * 86_400_000
    weights = [1 / (rank + 1) for rank in range(len(LABELS) - 1)]  # a few species are most of the visits
    offsets, last = [], -1
    for offset in sorted(rng.randrange(span_ms) for _ in range(count)):
        last = max(offset, last + 1)  # distinct times, so file names are distinct as on the device
        offsets.append(last)
    for i, offset in enumerate(offsets):
        at = (START + timedelta(milliseconds=offset)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        label = RARE_LABEL if i % 2000 == 1000 else rng.choices(LABELS[:-1], weights)[0]
        is_audit, age = rng.random() < 0.05, i / count  # age 0: the oldest
        score = round(rng.uniform(0.05, 0.5) if is_audit else 0.5 + 0.49 * rng.random() ** 0.5, 3)
        image_path, thumb_path, size, sha256, width, height = files(at, label)
        yield {"captured_at": at, "clock_source": "ntp", "label": label, "score": score,
               "top_k": json.dumps([[label, score], ["background", round(1 - score, 3)]]),
               "kind": "audit" if is_audit else "match", "reason": "audit" if is_audit else "match",
               "model_name": "inat-bird", "model_sha256": "ab" * 32, "backend": "cpu", "inference_ms": 8.0,
               "source": "picamera2", "image_path": image_path, "thumb_path": thumb_path, "width": width,
               "height": height, "bytes": size, "sha256": sha256, "starred": int(rng.random() < 0.01),
               "synced_at": at if age < 0.6 and rng.random() < 0.9 else None,
               "offloaded_at": at if age < 0.2 and rng.random() < 0.5 else None, "missing": 0,
               "corrected_label": rng.choice(LABELS[:-1]) if rng.random() < 0.02 else None}


def insert_rows(store: Store, rows) -> float:
    """Insert rows in one transaction; returns the seconds it took."""
    started = time.perf_counter()
    with store.db.atomic():
        store.db["captures"].insert_all(rows, batch_size=1000)
    return time.perf_counter() - started


def jpeg_variants(count: int, size=(640, 480)) -> list[bytes]:
    """Photo-like JPEGs of 20-40 KB: smooth colour fields plus sensor-like noise, each different."""
    variants = []
    for seed in range(count):
        rng = np.random.default_rng(seed)
        colours = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
        field = Image.fromarray(colours).resize(size, Image.Resampling.BICUBIC)
        noise = rng.normal(0, 1.5 + 1.5 * seed / max(1, count - 1), (size[1], size[0], 3))
        pixels = np.clip(np.asarray(field, float) + noise, 0, 255).astype(np.uint8)
        variants.append(encode_jpeg(Image.fromarray(pixels), 85))
    return variants


def bench_config(work: Path) -> Config:
    (work / "run").mkdir(parents=True, exist_ok=True)
    return Config().replace(storage={"data_dir": str(work / "data"), "min_free_bytes": 0},
                            status={"runtime_dir": str(work / "run")},
                            web={"host": "127.0.0.1", "password_hash": generate_password_hash(PASSWORD)})


def write_config(work: Path, config: Config) -> Path:
    path = work / "appliance.toml"
    path.write_text(to_toml(config))
    return path


# -- the gallery ---------------------------------------------------------------------------------

def gallery_benchmark(work: Path, items: int) -> dict:
    """Gallery server times (ms) per scenario over a store of ``items`` rows built in ``work``."""
    config = bench_config(work)
    store = Store(config.storage.data_dir)
    try:
        samples = _write_samples(Path(config.storage.data_dir))
        rows = fake_rows(items, seed=1, files=lambda at, label: samples[int(at[20:23]) % len(samples)])
        log.info("gallery: inserting %d rows", items)
        insert_s = insert_rows(store, rows)
        app = create_app(config, store, ControlClient(Path(config.status.runtime_dir) / "control.sock"),
                         password_hash=config.web.password_hash, labels=LABELS)
        client = app.test_client()
        log.info("gallery: timing pages")
        deep = store.db.execute("select captured_at, id from captures order by captured_at desc, id desc "
                                "limit 1 offset ?", [max(0, items - PAGE_SIZE * 11)]).fetchone()
        near_oldest = "/gallery?" + urllib.parse.urlencode({"cursor": f"{deep[0]}~{deep[1]}"})
        scenarios = {
            "first_page": [_get_ms(client, "/gallery")[1] for _ in range(100)],
            "next_pages_50": _follow(client, "/gallery", pages=50),
            "oldest_pages": _follow(client, near_oldest, pages=10),
        }
        for name, args in FILTERS.items():  # the first page and the next four, eight times over
            url = "/gallery?" + urllib.parse.urlencode(args)
            scenarios[f"filter_{name}"] = [ms for _ in range(8) for ms in _follow(client, url, pages=4)]
        all_ms = [ms for values in scenarios.values() for ms in values]
        # Every page also lists the labels in use for its filter (a GROUP BY over the whole table).
        parts = {"labels_query_uncached_once_per_30_s": _time_ms(lambda: store.labels(max_age_s=0)),
                 "first_page_query": _time_ms(lambda: store.page(Filters()))}
        return {
            "items": items, "insert_rows_s": round(insert_s, 2), "page_size": PAGE_SIZE,
            "timing": "server time = client.get() with Flask's test client in-process: the whole request "
                      "handling (auth, query, template, body), no socket; one untimed warm-up per scenario",
            "scenarios": {name: _summary(values) for name, values in scenarios.items()},
            "overall": _summary(all_ms), "parts_of_every_page": parts,
            "thumbnails": _thumb_caching(client),
        }
    finally:
        store.close()


def _write_samples(data_dir: Path, count=8):
    """A few real small images and thumbnails that every row points at: the gallery only links them."""
    samples = []
    for i, data in enumerate(jpeg_variants(count, (320, 240))):
        image_path = Path("2026", "09", "01", f"sample-{i}.jpg")
        thumb = encode_jpeg(Image.open(io.BytesIO(data)).resize((160, 120)), 80)
        for relative, content in ((image_path, data), (Path(THUMBS) / image_path, thumb)):
            (data_dir / relative).parent.mkdir(parents=True, exist_ok=True)
            (data_dir / relative).write_bytes(content)
        samples.append((str(image_path), str(Path(THUMBS) / image_path), len(data),
                        hashlib.sha256(data).hexdigest(), 320, 240))
    return samples


def _get_ms(client, url, headers=AUTH):
    started = time.perf_counter()
    response = client.get(url, headers=headers)
    elapsed_ms = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        raise RuntimeError(f"GET {url} answered {response.status_code}: {response.text[:300]}")
    return response, elapsed_ms


def _follow(client, url, pages):
    """Times of ``url`` and up to ``pages`` pages after it by the "next" link; a warm-up first."""
    _get_ms(client, url)
    times = []
    for _ in range(pages + 1):
        response, ms = _get_ms(client, url)
        times.append(ms)
        match = _NEXT.search(response.text)
        if not match:
            break
        url = html.unescape(match.group(1))
    return times


def _time_ms(call, repeats=30) -> dict:
    call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return _summary(times)


def _summary(values_ms) -> dict:
    values = np.asarray(values_ms)
    return {"n": len(values), "p50_ms": round(float(np.percentile(values, 50)), 2),
            "p95_ms": round(float(np.percentile(values, 95)), 2), "max_ms": round(float(values.max()), 2)}


def _thumb_caching(client) -> dict:
    response, _ = _get_ms(client, "/captures/1/thumb")
    etag = response.headers.get("ETag")
    again = client.get("/captures/1/thumb", headers=AUTH | {"If-None-Match": etag or "-"})
    return {"has_cache_control_max_age": (response.cache_control.max_age or 0) > 0, "has_etag": bool(etag),
            "answers_304_to_if_none_match": again.status_code == 304,
            "cache_control": response.headers.get("Cache-Control")}


# -- zip export and sync over a real server --------------------------------------------------------

def transfer_benchmark(work: Path, zip_items: int) -> dict:
    """Zip export memory and speed, and sync beside plain downloads, over ``zip_items`` JPEGs in ``work``."""
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
    with _Server(config_path) as server:
        log.info("transfer: plain download, then appliance sync, of %d images", zip_items)
        plain = _plain_download(server.url, zip_items)
        synced = _sync_run(server.url, work / "dest")
        server_peak_mb = server.status_mb("VmHWM")
    with contextlib.closing(Store(data_dir)) as store:
        marked = store.db.execute("select count(*) from captures where synced_at is not null").fetchone()[0]
    extra_mb = zips[1]["server_peak_growth_mb"] - zips[0]["server_peak_growth_mb"]
    return {
        "zip_export": {"runs": zips, "is_memory_flat": extra_mb <= FLAT_MB,
                       "peak_growth_kb_per_extra_image": round(extra_mb * 1024 / max(1, zip_items - small), 2),
                       "memory": "server child process: VmHWM after the export minus VmRSS before it, the peak "
                                 "reset via /proc/<pid>/clear_refs after a warm-up request; flat: the growth "
                                 f"at {zip_items} images is within {FLAT_MB} MB of that at {small}"},
        "sync": {"plain_download": plain, "appliance_sync": synced | {"device_marked_synced": marked},
                 "sync_vs_plain_mb_per_s": round(synced["mb_per_s"] / plain["mb_per_s"], 3),
                 "server_peak_rss_mb": server_peak_mb, "page_cache": "warm: the zip exports read every file first"},
    }


class _Server:
    """A real ``WebServer`` (waitress) in a child process, so the memory measured is the server's own."""

    def __init__(self, config_path: Path):
        self.log_path = config_path.with_name("server.log")
        with open(self.log_path, "ab") as stderr:
            self.process = subprocess.Popen([sys.executable, "-c", _SERVER, str(config_path)], stdout=subprocess.PIPE,
                                            stderr=stderr, env=_child_env())
        self.url = self.process.stdout.readline().decode().strip()
        if not self.url:
            self.close()
            raise RuntimeError(f"the web server did not start: {self.log_path.read_text()[-2000:]}")
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
    with _Server(config_path) as server:
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
                            env=_child_env() | {"APPLIANCE_PASSWORD": PASSWORD})
    if result.returncode != 0:
        raise RuntimeError(f"sync failed: {result.stderr[-2000:]}")
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


def _child_env() -> dict:
    root = str(Path(__file__).resolve().parents[1])
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


def main_json(**kwargs) -> str:
    return json.dumps(run_benchmark(**kwargs), indent=2)
