"""``appliance bench-web`` at a small size: every figure is in its JSON and sane. Speed is not asserted:
the benchmark measures it, and a shared test machine's timings say little."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics

import pytest

from appliance.cli import bench_web

ITEMS, ZIP_ITEMS, PAIRS = 2000, 200, 5


@pytest.fixture(scope="module")
def report():
    """One small run through the command itself, its stdout parsed."""
    parser = argparse.ArgumentParser(prog="appliance")
    bench_web.register(parser.add_subparsers())
    args = parser.parse_args(["bench-web", "--items", str(ITEMS), "--zip-items", str(ZIP_ITEMS)])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert args.func(args) == 0
    return json.loads(out.getvalue())


def is_timing(summary, least_n=1):
    return (summary["n"] >= least_n and 0 < summary["p50_ms"] <= summary["p95_ms"] <= summary["max_ms"])


def test_the_command_is_documented_with_an_example():
    parser = argparse.ArgumentParser(prog="appliance")
    bench_web.register(parser.add_subparsers())
    doc = bench_web.bench_web_command.__doc__
    assert doc.strip().splitlines()[0] and "Example:" in doc and "appliance bench-web" in doc
    assert parser.parse_args(["bench-web", "--skip-zip"]).skip_zip
    assert parser.parse_args(["bench-web"]).pairs == PAIRS
    for bad in (["--items", "0"], ["--pairs", "4"]):
        with pytest.raises(SystemExit), contextlib.redirect_stderr(io.StringIO()):
            parser.parse_args(["bench-web", *bad])


def test_every_gallery_scenario_has_sane_times(report):
    gallery = report["gallery"]
    assert gallery["items"] == ITEMS and gallery["insert_rows_s"] > 0 and "test client" in gallery["timing"]
    scenarios = gallery["scenarios"]
    assert {"first_page", "next_pages_50", "oldest_pages"} <= scenarios.keys()
    filters = ("label_common", "label_rare", "date_range_3_days", "min_score_0.9", "kind_audit", "starred",
               "synced", "not_synced", "offloaded")
    assert {f"filter_{name}" for name in filters} <= scenarios.keys()
    assert all(is_timing(summary) for summary in scenarios.values())
    assert scenarios["first_page"]["n"] == 100 and scenarios["next_pages_50"]["n"] > 20
    assert is_timing(gallery["overall"], least_n=sum(s["n"] for s in scenarios.values()))
    assert all(is_timing(part) for part in gallery["parts_of_every_page"].values())


def test_thumbnails_are_cacheable(report):
    thumbnails = report["gallery"]["thumbnails"]
    assert thumbnails["has_cache_control_max_age"] and thumbnails["has_etag"]
    assert thumbnails["answers_304_to_if_none_match"]


def test_both_zip_exports_are_complete_and_their_memory_is_measured(report):
    small, full = report["zip_export"]["runs"]
    assert small["images"] == ZIP_ITEMS // 10 and full["images"] == ZIP_ITEMS
    for run in (small, full):
        assert run["zip_entries"] == run["images"] + 2  # the images plus manifest.csv and manifest.jsonl
        assert run["zip_mb"] > run["images"] * 0.015 and run["mb_per_s"] > 0 and run["is_peak_reset"]
        assert 0 < run["server_idle_rss_mb"] <= run["server_peak_rss_mb"]
        assert run["server_peak_growth_mb"] >= 0
    assert isinstance(report["zip_export"]["is_memory_flat"], bool)


def test_sync_pulls_every_image_verified_beside_a_plain_download(report):
    sync = report["sync"]
    plain, pulled = sync["plain_download"], sync["appliance_sync"]
    assert plain["files"] == ZIP_ITEMS and plain["mb_per_s"] > 0 and plain["files_per_s"] > 0
    assert pulled["new"] == pulled["files"] == pulled["device_marked_synced"] == ZIP_ITEMS
    assert pulled["failed"] == 0 and pulled["mb"] == plain["mb"]
    assert pulled["mb_per_s"] > 0 and pulled["files_per_s"] > 0 and sync["sync_vs_plain_mb_per_s"] > 0
    assert 0 < pulled["client_idle_rss_mb"] <= pulled["client_peak_rss_mb"] and sync["server_peak_rss_mb"] > 0


def test_sync_and_plain_download_run_in_five_pairs_and_their_ratio_is_the_median_of_the_pairs(report):
    sync = report["sync"]
    per_pair = sync["sync_vs_plain_mb_per_s_per_pair"]
    assert sync["pairs"] == len(per_pair) == PAIRS
    assert sync["sync_vs_plain_mb_per_s"] == round(statistics.median(per_pair), 3)
    assert sync["sync_vs_plain_mb_per_s_min"] == min(per_pair) and sync["sync_vs_plain_mb_per_s_max"] == max(per_pair)
    for side in ("plain_download", "appliance_sync"):
        runs = sync[side]["mb_per_s_per_run"]
        assert len(runs) == PAIRS and sync[side]["mb_per_s"] == round(statistics.median(runs), 2)
    # Each pair's ratio is of its own two runs.
    assert per_pair == [round(s / p, 3) for p, s in zip(sync["plain_download"]["mb_per_s_per_run"],
                                                         sync["appliance_sync"]["mb_per_s_per_run"])]


def test_the_run_says_where_and_how_long(report):
    assert report["machine"]["cpus"] >= 1 and report["total_s"] > 0
