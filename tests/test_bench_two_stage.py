"""``appliance bench --detector`` at a small size, with the real SSD, the real bird model and the real photos:
for the whole frame and a grid of tiles, the loop's frames/s against the same inferences run bare, in
five pairs; the loop classifies as many crops as the bare side invokes the classifier for; ms of each
stage; the peak RSS of `appliance run` with both models. Speed is not asserted: the benchmark measures
it, and a shared test machine's timings say little."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics

import pytest
from conftest import BIRD_MODEL, IMAGES, SHARED

from appliance.bench.stage_timing import PER_CROP, STAGES
from appliance.bench.two_stage import HOLD_FRAMES, run_benchmark, table
from appliance.cli import bench
from appliance.errors import ConfigError

SSD = SHARED / "models" / "tf" / "ssd_mobilenet_v1_1.0_coco_quant.tflite"
FRAMES, PAIRS = 2 * HOLD_FRAMES, 5  # a bird photo's frames, then a photo without a bird


def parser():
    parser = argparse.ArgumentParser(prog="appliance")
    bench.register(parser.add_subparsers())
    return parser


def run_command(*argv) -> str:
    args = parser().parse_args(["bench", *argv])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert args.func(args) == 0
    return out.getvalue()


@pytest.fixture(scope="module")
def report():
    """One small run through the command itself, as JSON: the whole frame and 2x2 tiles, one thread."""
    return json.loads(run_command("--detector", str(SSD), "--model", str(BIRD_MODEL), "--images", str(IMAGES),
                                  "--frames", str(FRAMES), "--tiles", "2x2", "--threads", "1", "--pairs", str(PAIRS),
                                  "--json"))


def test_the_command_documents_the_two_stage_mode_and_takes_grids_of_tiles_only_with_a_detector():
    doc = bench.bench_command.__doc__
    assert "appliance bench --images ../shared/images --detector" in doc and "crop+resize" in doc
    args = parser().parse_args(["bench", "--tiles", "4X3", "none"])
    assert args.tiles == ["4x3", ""] and parser().parse_args(["bench"]).frames is None
    with pytest.raises(ConfigError, match="--tiles: goes with --detector"):
        args.images = IMAGES
        args.func(args)
    with pytest.raises(SystemExit), contextlib.redirect_stderr(io.StringIO()):
        parser().parse_args(["bench", "--detector", str(SSD), "--tiles", "1x1"])


@pytest.mark.parametrize("tiles, detector_inferences", [("none", 1), ("2x2", 5)])
def test_each_case_reports_the_median_ratio_over_the_pairs_and_the_inferences_a_frame(report, tiles,
                                                                                    detector_inferences):
    case = report["by_tiles"][tiles]
    per_pair = case["efficiency_per_pair"]
    assert len(per_pair) == len(case["bare_fps_per_run"]) == len(case["loop_fps_per_run"]) == PAIRS
    assert all(fps > 0 for fps in case["bare_fps_per_run"] + case["loop_fps_per_run"])
    assert case["efficiency"] == round(statistics.median(per_pair), 3)
    assert case["efficiency_min"] == min(per_pair) <= case["efficiency"] <= case["efficiency_max"] == max(per_pair)
    assert case["loop_fps"] == round(statistics.median(case["loop_fps_per_run"]), 1)
    # Half the frames show the chickadee, in which the SSD finds one bird; the other half nothing.
    assert case["detector_inferences_per_frame"] == detector_inferences and case["crops_per_frame"] == 0.5
    assert case["inferences_per_frame"] == detector_inferences + 0.5


@pytest.mark.parametrize("tiles", ["none", "2x2"])
def test_the_loop_classifies_as_many_crops_as_bare_invokes_the_classifier_for_and_keeps_the_bird(report, tiles):
    case = report["by_tiles"][tiles]
    crops = case["crops_classified"]
    assert crops["bare"] == FRAMES // 2 and crops["loop_per_run"] == [crops["bare"]] * PAIRS
    # The bird is in view for a track's frames: one event, one keep, in every run.
    assert case["kept_per_run"] == [1] * PAIRS and case["by_reason"]["match"] == 1


@pytest.mark.parametrize("tiles", ["none", "2x2"])
def test_every_stage_is_timed_per_frame_or_per_crop(report, tiles):
    stages = report["by_tiles"][tiles]["stages_ms"]
    for stage in STAGES:
        assert stages[stage]["n"] == (FRAMES // 2 if stage in PER_CROP else FRAMES), stage
        assert 0 <= stages[stage]["p50_ms"] <= stages[stage]["p95_ms"] <= stages[stage]["max_ms"], stage
    assert stages["crops_per_frame"] == 0.5
    assert stages["frame"]["max_ms"] >= stages["detector"]["max_ms"]


def test_the_headline_is_the_whole_frame_and_the_run_says_what_it_ran_on(report):
    assert report["efficiency"] == report["by_tiles"]["none"]["efficiency"] and report["pairs"] == PAIRS
    assert report["photos_with_targets"] == ["bird.bmp", "parrot.jpg"] and "cat_720p.jpg" in report["photos_without"]
    assert report["frames"] == FRAMES and report["num_threads"] == 1 and report["main_size"] == "1920x1080"
    assert "load_avg_1min_at_end" in report["machine"]


def test_the_peak_rss_of_a_real_appliance_run_with_both_models_is_measured(report):
    assert 20 < report["appliance_run_peak_rss_mb"] < 1000


def test_the_table_has_a_row_a_case_for_the_ratios_and_for_the_stages(report):
    lines = table(report).splitlines()
    rows = [line for line in lines if line.startswith(("none ", "2x2 "))]
    assert len(rows) == 4 and f"{report['efficiency']:.2f} (" in rows[0]
    assert any(line.startswith("peak RSS of `appliance run` with both models: ") for line in lines)


def test_a_folder_without_a_photo_of_each_kind_is_refused_with_what_it_holds(tmp_path):
    (tmp_path / "cat.jpg").symlink_to(IMAGES / "cat_720p.jpg")
    with pytest.raises(ConfigError, match=r"--images: .* has 0 photos in which the detector finds a target \(bird\) "
                                          "and 1 in which it finds none"):
        run_benchmark(SSD, BIRD_MODEL, tmp_path, frames=FRAMES, tiles=(), measure_rss=False)
