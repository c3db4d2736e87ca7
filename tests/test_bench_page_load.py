"""``appliance bench-web --page-load`` at a small size: the loop, the page and the browsers run as three
processes at the units' priorities, and every figure is in the JSON and sane. Speed is not asserted:
the benchmark measures it, and a shared test machine's timings say little."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics

import pytest
from conftest import BIRD_MODEL, IMAGES, REPO

from appliance.cli import bench_web

ITEMS, CLIENTS, REQUESTS, WINDOW_S, PAIRS = 300, 2, 10, 1.0, 5
SYSTEMD = REPO / "systemd"


def parser():
    parser = argparse.ArgumentParser(prog="appliance")
    bench_web.register(parser.add_subparsers())
    return parser


@pytest.fixture(scope="module")
def report():
    """One small run through the command itself, its stdout parsed."""
    args = parser().parse_args(["bench-web", "--page-load", "--model", str(BIRD_MODEL), "--images", str(IMAGES),
                                "--items", str(ITEMS), "--clients", str(CLIENTS), "--requests", str(REQUESTS),
                                "--window-s", str(WINDOW_S)])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert args.func(args) == 0
    return json.loads(out.getvalue())


def unit_nice(unit: str) -> int:
    lines = (SYSTEMD / unit).read_text().splitlines()
    return next((int(line.split("=", 1)[1]) for line in lines if line.startswith("Nice=")), 0)


def is_timing(summary, n):
    return summary["n"] == n and 0 < summary["p50_ms"] <= summary["p95_ms"] <= summary["max_ms"]


def test_the_mode_is_documented_with_an_example_and_its_options_parse():
    assert "appliance bench-web --page-load" in bench_web.bench_web_command.__doc__
    args = parser().parse_args(["bench-web", "--page-load"])
    assert (args.clients, args.requests, args.fps, args.window_s, args.pairs) == (8, 500, 5.0, 20.0, 5)
    assert not args.no_priorities
    for bad in (["--clients", "0"], ["--fps", "0"], ["--window-s", "-1"], ["--pairs", "4"]):
        with pytest.raises(SystemExit), contextlib.redirect_stderr(io.StringIO()):
            parser().parse_args(["bench-web", "--page-load", *bad])


def test_the_loop_the_page_and_the_browsers_are_three_processes_at_the_units_priorities(report):
    processes = report["setup"]["processes"]
    pids = [processes[name] for name in ("loop_at_fps", "loop_at_full_speed", "page", "clients")]
    assert len(set(pids)) == 4 and os.getpid() not in pids
    priorities = report["priorities"]
    shift = priorities["nice"]["shifted_by"]
    page_nice = unit_nice("appliance-web.service") + shift
    assert priorities["nice"] | {"shifted_by": 0} == {"loop": unit_nice("appliance.service") + shift,
                                                      "page": page_nice, "clients": page_nice, "shifted_by": 0}
    assert priorities["nice_read_back"] == {name: priorities["nice"][name] for name in ("loop", "page", "clients")}


def test_at_the_cameras_rate_every_frame_is_kept_or_counted_as_dropped(report):
    at_fps = report["at_fps"]
    assert at_fps["fps"] == 5.0 and at_fps["frames_in_the_whole_run"] > 0
    kept, dropped = at_fps["kept_in_the_whole_run"], at_fps["keeps_dropped_in_the_whole_run"]
    assert kept + dropped == at_fps["frames_in_the_whole_run"]  # every frame is a keep: written, or counted
    for window in (at_fps["without_browsers"], at_fps["with_browsers"]):
        assert window["seconds"] > 0 and window["fps"] > 0 and window["keeps_dropped"] >= 0
        assert window["keeps_per_s"] >= 0 and window["writer_backlog_at_end"] >= 0
        assert set(window["cpu_s"]) == {"loop", "page", "clients", "everything_else", "idle", "stolen"}
        assert all(seconds >= 0 for name, seconds in window["cpu_s"].items() if name != "everything_else")
    assert at_fps["without_browsers"]["seconds"] >= WINDOW_S


def test_every_browser_request_is_answered_and_timed(report):
    at_fps = report["at_fps"]
    assert at_fps["errors"] == 0, at_fps["error_examples"]
    assert at_fps["requests"] == CLIENTS * REQUESTS
    assert is_timing(at_fps["gallery_ms"], CLIENTS * REQUESTS // 2)
    assert is_timing(at_fps["status_api_ms"], CLIENTS * REQUESTS // 2)
    assert at_fps["requests_per_s"] > 0


def test_at_full_speed_the_windows_run_in_five_pairs_and_the_ratio_is_their_median(report):
    full = report["at_full_speed"]
    assert full["keeping"].startswith("nothing") and full["errors"] == 0
    per_pair = full["with_vs_without_per_pair"]
    assert full["pairs"] == len(per_pair) == PAIRS and full["orders"][:2] == ["a, b", "b, a"]
    assert full["with_vs_without"] == round(statistics.median(per_pair), 3)
    assert per_pair == [round(loaded / quiet, 3) for quiet, loaded in zip(full["fps_without_browsers"],
                                                                           full["fps_with_browsers"])]
    assert full["fps_drop"] == round(1 - full["with_vs_without"], 3)
    assert all(n > 0 for n in full["requests_per_window"])


def test_the_goals_are_judged_and_the_run_says_where(report):
    goals = report["goals"]
    assert goals["goals"] == {"keeps_dropped_at_5_fps": 0, "gallery_p95_ms": 100.0, "fps_drop_at_full_speed": 0.15}
    assert all(isinstance(goals[key], bool) for key in
               ("no_keep_dropped_while_browsing", "gallery_p95_within_goal", "fps_drop_within_goal"))
    assert report["machine"]["cpus"] >= 1 and report["total_s"] > 0
