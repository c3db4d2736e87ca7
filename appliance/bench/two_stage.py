"""``appliance bench --detector``: how close the two-stage loop comes to its stages run bare, and what it costs.

Measured in one run, on one machine, with one detector, classifier and thread count, for the whole
frame alone and for each grid of tiles asked for:

* the frames: each photo of the folder scaled to a camera's 1920×1080 main image, its lores the main
  area-averaged to the detector's input (as a camera's ISP makes it), each shown for ``HOLD_FRAMES``
  frames in a row (a subject in view long enough for a track to be kept), photos where the detector
  finds a target taking turns with photos where it finds none; served from memory by the replay
  camera (``ReplayCamera.from_arrays``, no decoding) at fps 0;
* bare: per frame, the detector's ``bare_invoke`` on the lores (and, with tiles, on each tile of the
  main image, area-averaged to the detector's input beforehand), then the classifier's ``bare_invoke``
  on the crop of each target box the real stage finds on that frame (found once per photo, before the
  runs): the same inferences the loop makes, and nothing else;
* loop: frames/s of the whole loop with its real detector stage (``service.app.open_stage``: detector,
  crops cut from main and area-averaged, classifier, tracker, keep policy), status and writer (a temp
  store; what it keeps is written, and the run ends when the writer has drained);
* each case runs in ``pairs`` pairs (at least 5), bare and loop in alternation (``common.interleaved``);
  a pair's efficiency = its loop frames/s ÷ its bare frames/s, and ``efficiency`` is the median of
  those, with their min–max; frames/s figures are medians over the runs;
* per-stage ms p50 / p95 (``stage_timing``) from one more loop run per case, timed stage by stage;
* peak RSS of a real ``appliance run`` child process with both models over the photo folder.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from itertools import zip_longest
from pathlib import Path

import numpy as np
from PIL import Image

from appliance.bench import MIN_PAIRS
from appliance.bench.classify import MAIN_SIZE, _peak_rss_mb
from appliance.bench.common import interleaved, machine, median_of
from appliance.bench.stage_timing import STAGES, stage_timings
from appliance.cameras.convert import area_average
from appliance.cameras.replay import ReplayCamera, read_rgb
from appliance.config import Config
from appliance.errors import ConfigError
from appliance.inference.catalog import load_catalog
from appliance.inference.classifier import Classifier
from appliance.pipeline.detections import tile_regions
from appliance.pipeline.policy import KeepRule, Policy
from appliance.service.app import Appliance, open_stage

HOLD_FRAMES = 5  # frames each photo is shown for: more than a track needs (detector.track_min_frames = 3)
WHOLE_FRAME = "none"  # the case without tiles
_WARMUP = 5


@dataclass(frozen=True)
class Photo:
    name: str
    lores: np.ndarray  # at the detector's input size
    main: np.ndarray   # MAIN_SIZE


@dataclass(frozen=True)
class Plan:
    """What bare runs for one photo: the detector's inputs (lores, then each tile) and the crops to classify."""

    detector_inputs: tuple[np.ndarray, ...]
    crops: tuple[np.ndarray, ...]


def run_benchmark(detector_path, model_path, images_dir, frames, tiles, num_threads=0, measure_rss=True,
                  pairs=MIN_PAIRS) -> dict:
    """The figures of the module docstring; ``tiles``: the grids measured besides the whole frame (``"4x3"``)."""
    # Absolute: the peak-RSS run reads its config from a temp dir, where a relative path means nothing.
    base = Config().replace(model={"path": str(Path(model_path).resolve()), "num_threads": num_threads},
                            detector={"path": str(Path(detector_path).resolve())},
                            camera={"backend": "replay", "fps": 0.0, "replay_loop": False})
    result = {"machine": machine()}
    classifier = Classifier.open(base.model)
    whole = _open_stage(base, classifier)
    photos = _photos(images_dir, whole.lores_size)
    plans = {photo.name: _plan(whole, photo) for photo in photos}
    with_targets = [photo for photo in photos if plans[photo.name].crops]
    without = [photo for photo in photos if not plans[photo.name].crops]
    if not with_targets or not without:
        raise ConfigError("appliance bench", "--images", f"{images_dir} has {len(with_targets)} photos in which the "
                          f"detector finds a target ({', '.join(sorted(whole.detector.targets))}) and {len(without)} in "
                          "which it finds none", "a folder with photos of both kinds")
    turns = [photo for pair in zip_longest(with_targets, without) for photo in pair if photo is not None]
    sequence = [turns[(i // HOLD_FRAMES) % len(turns)] for i in range(frames)]
    result |= {"detector": str(detector_path), "model": str(model_path), "num_threads": classifier.num_threads,
               "main_size": f"{MAIN_SIZE[0]}x{MAIN_SIZE[1]}", "frames": frames, "hold_frames": HOLD_FRAMES,
               "pairs": pairs, "photos_with_targets": [p.name for p in with_targets],
               "photos_without": [p.name for p in without]}
    result["by_tiles"] = {tiles_of_case or WHOLE_FRAME: _case(base.replace(detector={"tiles": tiles_of_case}),
                                                              classifier, photos, sequence, pairs)
                          for tiles_of_case in ("", *tiles)}
    whole_frame = result["by_tiles"][WHOLE_FRAME]
    result |= {key: whole_frame[key] for key in ("efficiency", "efficiency_min", "efficiency_max")}
    if measure_rss:
        # Each photo held for a track's frames, so the run keeps (and encodes) what it would on a camera.
        result["appliance_run_peak_rss_mb"] = _peak_rss_mb(base.replace(camera={"replay_repeat": HOLD_FRAMES}),
                                                           images_dir)
    result["machine"]["load_avg_1min_at_end"] = round(os.getloadavg()[0], 2)
    return result


def _open_stage(config, classifier):
    """The detector stage the appliance builds from ``config`` (here for its detector, grid and box limit)."""
    entry = load_catalog().find_by_sha256(classifier.model_sha256)
    return open_stage(config, classifier, Policy(KeepRule.from_config(config.keep, entry.keep if entry else None)))


def _photos(images_dir, lores_size) -> list[Photo]:
    photos = []
    for path in sorted(Path(images_dir).iterdir()):
        try:
            image = read_rgb(path)
        except OSError:
            continue
        main = np.asarray(image.resize(MAIN_SIZE, Image.Resampling.BILINEAR))
        photos.append(Photo(path.name, area_average(main, lores_size), main))
    return photos


def _plan(stage, photo: Photo) -> Plan:
    """The inferences the stage makes of ``photo``: its detector's inputs, pre-scaled, and the crops of the
    boxes it finds (as ``DetectorStage.look`` finds and cuts them)."""
    detector, grid, classifier = stage.detector, stage.grid, stage.classifier
    if grid is None:
        found, inputs = detector.detect(photo.lores), [photo.lores]
    else:
        found = detector.detect(photo.main, grid, whole_frame=photo.lores)
        size = (photo.main.shape[1], photo.main.shape[0])
        inputs = [photo.lores] if grid.includes_whole_frame else []
        inputs += [area_average(photo.main[top:bottom, left:right], detector.input_size)
                   for left, top, right, bottom in tile_regions(size, grid)]
    crops = [stage.crop(photo.main, d.box, classifier.input_size)
             for d in found.detections[:stage.max_boxes]] if stage.classify_crops else []
    return Plan(tuple(inputs), tuple(crops))


def _case(config, classifier, photos, sequence, pairs) -> dict:
    """One grid (or none): bare and loop in pairs, then the per-stage timings."""
    stage = _open_stage(config, classifier)
    plans = {photo.name: _plan(stage, photo) for photo in photos}
    bare_plan = [plans[photo.name] for photo in sequence]
    replay_frames = [(photo.lores, photo.main, photo.name) for photo in sequence]
    warm_up = partial(_warm_up, lores=sequence[0].lores, crop=next(p.crops[0] for p in plans.values() if p.crops))
    name = config.detector.tiles or WHOLE_FRAME
    measured = interleaved(partial(_bare_run, stage.detector, classifier, bare_plan),
                           partial(_loop_run, config, replay_frames, warm_up), pairs,
                           ratio=lambda bare, loop: loop["fps"] / bare["fps"], log_as=f"bench: two-stage, tiles {name}")
    crops_per_frame = statistics.fmean(len(plan.crops) for plan in bare_plan)
    detector_inferences = len(bare_plan[0].detector_inputs)
    efficiency = measured.summary
    return {
        "tiles": name, "detector_inferences_per_frame": detector_inferences,
        "crops_per_frame": round(crops_per_frame, 3),
        "inferences_per_frame": round(detector_inferences + crops_per_frame, 3),
        "bare_fps": median_of(measured.a, "fps", 1), "loop_fps": median_of(measured.b, "fps", 1),
        "efficiency": efficiency["median"], "efficiency_min": efficiency["min"], "efficiency_max": efficiency["max"],
        "efficiency_per_pair": measured.ratios,
        "bare_fps_per_run": [run["fps"] for run in measured.a], "loop_fps_per_run": [run["fps"] for run in measured.b],
        "crops_classified": {"bare": measured.a[0]["crops_classified"],
                             "loop_per_run": [run["crops_classified"] for run in measured.b]},
        "kept_per_run": [run["kept"] for run in measured.b], "by_reason": measured.b[0]["by_reason"],
        "stages_ms": stage_timings(config, replay_frames, warm_up),
    }


def _warm_up(appliance, lores, crop):
    """The first inferences of a fresh interpreter are slow: not the loop's cost."""
    for _ in range(_WARMUP):
        appliance.stage.detector.detect(lores)
        appliance.classifier.classify(crop)


def _bare_run(detector, classifier, plan: list[Plan]) -> dict:
    for frame in plan[:_WARMUP]:
        _bare_frame(detector, classifier, frame)
    classified = 0
    started = time.perf_counter()
    for frame in plan:
        classified += _bare_frame(detector, classifier, frame)
    elapsed_s = time.perf_counter() - started
    return {"fps": round(len(plan) / elapsed_s, 2), "crops_classified": classified}


def _bare_frame(detector, classifier, frame: Plan) -> int:
    """The frame's inferences, bare; how many crops were classified."""
    for image in frame.detector_inputs:
        detector.bare_invoke(image)
    classified = 0
    for crop in frame.crops:
        classifier.bare_invoke(crop)
        classified += 1
    return classified


def _loop_run(config, replay_frames, warm_up) -> dict:
    with tempfile.TemporaryDirectory(prefix="appliance-bench-") as tmp:
        config = config.replace(storage={"data_dir": f"{tmp}/data", "min_free_bytes": 0},
                                status={"runtime_dir": f"{tmp}/run"})
        camera = ReplayCamera.from_arrays(replay_frames, lores_size=replay_frames[0][0].shape[1::-1], loop=False)
        with Appliance(config, camera=camera) as appliance:
            warm_up(appliance)
            started = time.perf_counter()
            appliance.run()
            appliance.writer.close()  # the loop's work includes writing what it kept
            elapsed_s = time.perf_counter() - started
            status = appliance.status()
    return {"fps": round(len(replay_frames) / elapsed_s, 2), "kept": status["frames"]["kept"],
            "crops_classified": status["frames"]["classified"], "by_reason": status["frames"]["by_reason"]}


def table(result: dict) -> str:
    """The figures of ``run_benchmark`` as a table for a person."""
    lines = [f"two-stage loop ÷ the same stages bare: {Path(result['detector']).name} → {Path(result['model']).name}, "
             f"{result['num_threads']} inference thread(s), {result['frames']} frames of {result['main_size']} "
             f"({result['hold_frames']} a photo), {result['pairs']} pairs",
             "", f"{'tiles':<6} {'inferences/frame':<18} {'bare fps':>9} {'loop fps':>9}  {'loop ÷ bare (min–max)':<22} "
             f"{'crops bare / loop':<18} kept"]
    for name, case in result["by_tiles"].items():
        inferences = f"{case['detector_inferences_per_frame']} + {case['crops_per_frame']:.2f}"
        ratio = f"{case['efficiency']:.2f} ({case['efficiency_min']:.2f}–{case['efficiency_max']:.2f})"
        crops = f"{case['crops_classified']['bare']} / {_span(case['crops_classified']['loop_per_run'])}"
        lines.append(f"{name:<6} {inferences:<18} {case['bare_fps']:>9.1f} {case['loop_fps']:>9.1f}  {ratio:<22} "
                     f"{crops:<18} {_span(case['kept_per_run'])}")
    lines += ["", "ms p50 / p95, one more timed run of the loop per case (crop+resize, resize and classifier per crop):",
              f"{'tiles':<6} " + " ".join(f"{stage.replace('_', '+'):>16}" for stage in STAGES)]
    for name, case in result["by_tiles"].items():
        cells = [f"{s['p50_ms']:.1f} / {s['p95_ms']:.1f}" if s else "–" for s in map(case["stages_ms"].get, STAGES)]
        lines.append(f"{name:<6} " + " ".join(f"{cell:>16}" for cell in cells))
    if "appliance_run_peak_rss_mb" in result:
        lines += ["", f"peak RSS of `appliance run` with both models: {result['appliance_run_peak_rss_mb']} MB"]
    m = result["machine"]
    lines += ["", f"machine: {m['model']}, {m['cpus']} cpus, {m['memory_mb']} MB, Python {m['python']}; "
              f"load average {m['load_avg_1min_at_start']} at the start, {m['load_avg_1min_at_end']} at the end"]
    return "\n".join(lines)


def _span(values) -> str:
    return f"{min(values)}" if min(values) == max(values) else f"{min(values)}–{max(values)}"


def main_text(is_json=False, **kwargs) -> str:
    result = run_benchmark(**kwargs)
    return json.dumps(result, indent=2) if is_json else table(result)
