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
  from one server into an empty folder, beside plain urllib GETs of the same image URLs (bodies read,
  discarded): ``pairs`` of them in alternation (plain, sync, plain, sync…; every capture unsynced again
  before each sync); ``sync_vs_plain_mb_per_s`` is the median of the per-pair ratios, with their min–max.

The store's rows and JPEGs come from ``web_data``; the zip export and sync from ``web_transfer``.
"""

from __future__ import annotations

import html
import json
import logging
import os
import re
import tempfile
import time
import urllib.parse
from pathlib import Path

from appliance.bench import MIN_PAIRS
from appliance.bench.common import machine, percentiles
from appliance.bench.web_data import AUTH, LABELS, RARE_LABEL, bench_config, fake_rows, insert_rows, write_samples
from appliance.bench.web_transfer import transfer_benchmark
from appliance.errors import BenchmarkError
from appliance.service.control import ControlClient
from appliance.storage.filters import Filters
from appliance.storage.store import Store
from appliance.web import create_app

log = logging.getLogger(__name__)

PAGE_SIZE = 48
FILTERS = {
    "label_common": {"label": LABELS[0]}, "label_rare": {"label": RARE_LABEL},
    "date_range_3_days": {"from": "2026-10-01", "to": "2026-10-03"}, "min_score_0.9": {"min_score": "0.9"},
    "kind_audit": {"kind": "audit"}, "starred": {"starred": "yes"}, "synced": {"synced": "yes"},
    "not_synced": {"synced": "no"}, "offloaded": {"offloaded": "yes"},
    # No index serves this one: the query walks the date index until 49 rows match (0.05 % do).
    "starred_audit": {"starred": "yes", "kind": "audit"},
}
_NEXT = re.compile(r'<a href="([^"]+)" id="next-page">')


def run_benchmark(items=100_000, zip_items=10_000, is_zip_skipped=False, pairs=MIN_PAIRS) -> dict:
    """Every figure of the module doc, as a dict ready for JSON; progress is logged."""
    started = time.perf_counter()
    # Other work on the machine shows up as outliers in the gallery's p95: the load says how much.
    result = {"machine": machine()}
    with tempfile.TemporaryDirectory(prefix="appliance-bench-web-") as tmp:
        result["gallery"] = gallery_benchmark(Path(tmp, "gallery"), items)
        if not is_zip_skipped:
            result |= transfer_benchmark(Path(tmp, "transfer"), zip_items, pairs)
    result["machine"]["load_avg_1min_at_end"] = round(os.getloadavg()[0], 2)
    result["total_s"] = round(time.perf_counter() - started, 1)
    return result


# -- the gallery ---------------------------------------------------------------------------------

def gallery_benchmark(work: Path, items: int) -> dict:
    """Gallery server times (ms) per scenario over a store of ``items`` rows built in ``work``."""
    config = bench_config(work)
    store = Store(config.storage.data_dir)
    try:
        samples = write_samples(Path(config.storage.data_dir))
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
            "scenarios": {name: percentiles(values, "_ms") for name, values in scenarios.items()},
            "overall": percentiles(all_ms, "_ms"), "parts_of_every_page": parts,
            "thumbnails": _thumb_caching(client),
        }
    finally:
        store.close()


def _get_ms(client, url, headers=AUTH):
    started = time.perf_counter()
    response = client.get(url, headers=headers)
    elapsed_ms = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        raise BenchmarkError(f"GET {url} answered {response.status_code}: {response.text[:300]}")
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
    return percentiles(times, "_ms")


def _thumb_caching(client) -> dict:
    response, _ = _get_ms(client, "/captures/1/thumb")
    etag = response.headers.get("ETag")
    again = client.get("/captures/1/thumb", headers=AUTH | {"If-None-Match": etag or "-"})
    return {"has_cache_control_max_age": (response.cache_control.max_age or 0) > 0, "has_etag": bool(etag),
            "answers_304_to_if_none_match": again.status_code == 304,
            "cache_control": response.headers.get("Cache-Control")}


def main_json(**kwargs) -> str:
    return json.dumps(run_benchmark(**kwargs), indent=2)
