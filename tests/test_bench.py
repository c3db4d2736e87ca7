"""``appliance bench`` at a small size, with the tiny real model over the real photos: its JSON carries
each loop case's efficiency as the median over at least five bare / loop pairs, with their min–max.
Speed is not asserted: the benchmark measures it, and a shared test machine's timings say little."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics

import pytest
from conftest import IMAGES, REPO, TINY_MODEL

from appliance.cli import bench

FRAMES, PAIRS = 60, 5


def parser():
    parser = argparse.ArgumentParser(prog="appliance")
    bench.register(parser.add_subparsers())
    return parser


@pytest.fixture(scope="module")
def report():
    """One small run through the command itself, its stdout parsed; the model given by a path relative
    to the working directory, as a user types it (the peak-RSS run reads it from a temp dir)."""
    args = parser().parse_args(["bench", "--model", os.path.relpath(TINY_MODEL, REPO), "--images", str(IMAGES),
                                "--frames", str(FRAMES), "--threads", "1", "--pairs", str(PAIRS)])
    out, cwd = io.StringIO(), os.getcwd()
    os.chdir(REPO)
    try:
        with contextlib.redirect_stdout(out):
            assert args.func(args) == 0
    finally:
        os.chdir(cwd)
    return json.loads(out.getvalue())


def test_the_command_is_documented_with_an_example_and_refuses_fewer_than_five_pairs():
    doc = bench.bench_command.__doc__
    assert doc.strip().splitlines()[0] and "Example:" in doc and "appliance bench --images" in doc
    assert "median" in doc and parser().parse_args(["bench"]).pairs == 5
    with pytest.raises(SystemExit), contextlib.redirect_stderr(io.StringIO()):
        parser().parse_args(["bench", "--pairs", "4"])


@pytest.mark.parametrize("case", ["loop_no_match", "loop_10pct_match"])
def test_each_loop_case_reports_the_median_efficiency_over_the_pairs_with_its_min_and_max(report, case):
    loop = report[case]
    per_pair = loop["efficiency_per_pair"]
    assert loop["pairs"] == len(per_pair) == PAIRS and all(ratio > 0 for ratio in per_pair)
    assert loop["efficiency"] == round(statistics.median(per_pair), 3)
    assert loop["efficiency_min"] == min(per_pair) <= loop["efficiency"] <= loop["efficiency_max"] == max(per_pair)
    assert len(loop["fps_per_run"]) == PAIRS and loop["fps"] == round(statistics.median(loop["fps_per_run"]), 1)


def test_every_pair_has_its_own_bare_run_and_the_loop_writes_only_what_it_keeps(report):
    assert len(report["bare_invoke_fps_per_run"]) == 2 * PAIRS and report["bare_invoke_fps"] > 0
    assert report["frames"] == FRAMES and report["num_threads"] == 1
    assert report["loop_no_match"]["data_dir_bytes_written"] == 0
    assert report["loop_no_match"]["kept_per_run"] == [0] * PAIRS
    ten_percent = report["loop_10pct_match"]
    assert all(kept > 0 for kept in ten_percent["kept_per_run"]) and ten_percent["data_dir_bytes_written"] > 0
    (backend, inference_ms), = report["inference_ms"].items()
    assert backend == "cpu" and inference_ms


def test_the_peak_rss_of_a_real_appliance_run_is_measured(report):
    assert 20 < report["appliance_run_peak_rss_mb"] < 1000


def test_the_run_says_where_and_under_what_load(report):
    machine = report["machine"]
    assert machine["cpus"] >= 1 and machine["load_avg_1min_at_start"] >= 0 and "load_avg_1min_at_end" in machine


def test_the_software_lores_of_a_one_stream_camera_is_weighed_against_one_inference(report):
    lores = report["software_lores"]
    assert lores["frame"] == "NV12 1920x1080 to 128x128 RGB" and lores["pairs"] == len(lores["ratio_per_pair"]) == PAIRS
    assert lores["ratio"] == round(statistics.median(lores["ratio_per_pair"]), 3)
    assert lores["ratio_min"] <= lores["ratio"] <= lores["ratio_max"] and lores["lores_ms"] > 0 < lores["inference_ms"]


def test_with_links_the_loop_runs_off_and_on_in_pairs_and_the_links_send_every_keep():
    """--links: real Mosquitto and SeaweedFS, `appliance links` as a process beside each on run."""
    args = parser().parse_args(["bench", "--model", str(TINY_MODEL), "--images", str(IMAGES), "--frames", str(FRAMES),
                                "--threads", "1", "--pairs", str(PAIRS), "--links"])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert args.func(args) == 0
    links = json.loads(out.getvalue())["links"]
    assert len(links["fps_off_per_run"]) == len(links["fps_on_per_run"]) == len(links["ratio_per_pair"]) == PAIRS
    assert links["ratio"]["median"] == statistics.median(links["ratio_per_pair"]) and links["ratio"]["pairs"] == PAIRS
    for kept, run in zip(links["kept_per_run"], links["links_per_run"]):
        assert kept > 0 and run["sent"]["upload"] == kept and run["failed"] == {"mqtt": 0, "upload": 0}
        assert run["sent"]["mqtt"] >= 2 * kept  # an event and a snapshot a keep, then status and discovery
