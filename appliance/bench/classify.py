"""``appliance bench``: how close the whole loop comes to bare ``invoke()``, and what it costs.

Measured in one run, on one machine, with one model and thread count:

* bare: frames/s of ``set_tensor`` + ``invoke()`` alone on pre-scaled frames;
* loop, nothing matches: frames/s of the whole loop (replay camera serving pre-scaled frames from
  memory → classify → policy → status) and the bytes written under the data dir (must be 0);
* loop, 10 % match: the same with one frame in ten kept as a full-resolution JPEG (1920×1080);
* each loop case runs in ``pairs`` pairs (at least 5) with the bare measurement, in alternation:
  bare, loop, bare, loop… (``common.interleaved``), so a busy moment on the machine slows one pair,
  not one whole side; each pair's efficiency = its loop frames/s ÷ its bare frames/s, and
  ``efficiency`` is the median of those, with their min–max (``efficiency_min``, ``efficiency_max``);
  frames/s figures are medians over the runs;
* peak RSS of a real ``appliance run`` child process over the photo folder;
* inference ms p50/p95 per backend (of the first loop run where nothing matches);
* what a single-stream camera's software lores costs (NV12 1920×1080 to the model's input) beside one
  inference, in pairs (``lores.software_lores_cost``).
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from appliance.bench import MIN_PAIRS
from appliance.bench.common import interleaved, machine, median_of
from appliance.bench.lores import software_lores_cost
from appliance.cameras.replay import ReplayCamera, read_rgb, scale_like_isp
from appliance.config import Config, to_toml
from appliance.errors import BenchmarkError, ConfigError
from appliance.inference.classifier import Classifier
from appliance.pipeline.policy import KeepRule, Policy
from appliance.service.app import Appliance

MAIN_SIZE = (1920, 1080)
_WARMUP = 20


def run_benchmark(model_path, images_dir, frames=1000, num_threads=0, measure_rss=True, pairs=MIN_PAIRS,
                  links=False) -> dict:
    # Absolute: the peak-RSS run reads its config from a temp dir, where a relative path means nothing.
    base = Config().replace(model={"path": str(Path(model_path).resolve()), "num_threads": num_threads},
                            camera={"backend": "replay", "fps": 0.0, "replay_loop": False})
    classifier = Classifier.open(base.model)
    matching, other = _split_photos(classifier, base, images_dir)
    if not matching or not other:
        raise ConfigError("appliance bench", "--images", f"{images_dir} has {len(matching)} photos the keep rule "
                          f"matches and {len(other)} it does not", "a folder with photos of both kinds")
    result = {"machine": machine()}
    bare = partial(_bare_fps, classifier, [f[0] for f in other + matching], frames)
    cases = {"loop_no_match": [other[i % len(other)] for i in range(frames)],
             "loop_10pct_match": [matching[(i // 10) % len(matching)] if i % 10 == 9 else other[i % len(other)]
                                  for i in range(frames)]}
    if links:  # the 10 %-match loop with the links off and on, instead (bench.links_loop)
        from appliance.bench.links_loop import links_cost

        with tempfile.TemporaryDirectory(prefix="appliance-bench-links-") as servers_dir:
            result |= {"model": str(model_path), "frames": frames, "pairs": pairs,
                       "links": links_cost(partial(_loop_run, base), cases["loop_10pct_match"], pairs,
                                           Path(servers_dir))}
        result["machine"]["load_avg_1min_at_end"] = round(os.getloadavg()[0], 2)
        return result
    # Each loop run builds its own classifier, as the real appliance does; the bare one waits meanwhile.
    measured = {name: interleaved(bare, partial(_loop_run, base, replay_frames), pairs,
                                  ratio=lambda bare_fps, loop: loop["summary"]["fps"] / bare_fps,
                                  log_as=f"bench: bare invoke(), {name}")
                for name, replay_frames in cases.items()}
    bare_runs = [fps for pairs_of_case in measured.values() for fps in pairs_of_case.a]
    first_loop = measured["loop_no_match"].b[0]
    result |= {
        "model": str(model_path), "num_threads": first_loop["num_threads"], "frames": frames, "pairs": pairs,
        "bare_invoke_fps": round(statistics.median(bare_runs), 1),
        "bare_invoke_fps_per_run": [round(fps, 1) for fps in bare_runs],
        **{name: _loop_figures(pairs_of_case) for name, pairs_of_case in measured.items()},
        "inference_ms": {first_loop["backend"]: first_loop["inference_ms"]},
    }
    result["software_lores"] = software_lores_cost(classifier, pairs)
    if measure_rss:
        result["appliance_run_peak_rss_mb"] = _peak_rss_mb(base, images_dir)
    result["machine"]["load_avg_1min_at_end"] = round(os.getloadavg()[0], 2)
    return result


def _loop_figures(pairs) -> dict:
    """One case's loop runs as one: the first run's counts, the median frames/s, the most bytes any run
    wrote, and efficiency: the median of the per-pair ratios (loop ÷ the bare run beside it), with their
    min–max."""
    runs = [run["summary"] for run in pairs.b]
    efficiency = pairs.summary
    return runs[0] | {
        "fps": median_of(runs, "fps", 1), "data_dir_bytes_written": max(r["data_dir_bytes_written"] for r in runs),
        "efficiency": efficiency["median"], "efficiency_min": efficiency["min"], "efficiency_max": efficiency["max"],
        "pairs": efficiency["pairs"], "efficiency_per_pair": pairs.ratios, "fps_per_run": [r["fps"] for r in runs],
        "kept_per_run": [r["kept"] for r in runs],
    }


def _split_photos(classifier, config, images_dir):
    """Pre-scaled ``(lores, main, name)`` frames from the folder, split by whether the rule keeps them."""
    from appliance.inference.catalog import load_catalog

    entry = load_catalog().find_by_sha256(classifier.model_sha256)
    rule = KeepRule.from_config(config.keep, entry.keep if entry else None)
    matching, other = [], []
    for path in sorted(Path(images_dir).iterdir()):
        try:
            image = read_rgb(path)
        except OSError:
            continue
        lores = scale_like_isp(image, classifier.input_size)
        main = np.asarray(image.resize(MAIN_SIZE, Image.Resampling.BILINEAR))
        decision = Policy(rule).decide(classifier.classify(lores), lores, 0.0)
        (matching if decision.is_keep else other).append((lores, main, path.name))
    return matching, other


def _bare_fps(classifier, lores_frames, frames):
    for i in range(_WARMUP):
        classifier.bare_invoke(lores_frames[i % len(lores_frames)])
    started = time.perf_counter()
    for i in range(frames):
        classifier.bare_invoke(lores_frames[i % len(lores_frames)])
    return frames / (time.perf_counter() - started)


def _loop_run(base, replay_frames, beside=None):
    """One loop run over ``replay_frames``; ``beside`` (``configure(config)``, ``process(config, folder)``): the
    config changed so, and the context of a process run beside the loop (``links_loop``), whose ``drain()``
    after the loop goes into the summary as ``links``."""
    with tempfile.TemporaryDirectory(prefix="appliance-bench-") as tmp:
        config = base.replace(storage={"data_dir": f"{tmp}/data", "min_free_bytes": 0},
                              status={"runtime_dir": f"{tmp}/run"})
        if beside:
            config = beside[0](config)
        with beside[1](config, Path(tmp)) if beside else contextlib.nullcontext() as drain:
            summary = _timed_loop(config, replay_frames)
            if drain:
                summary["summary"]["links"] = drain()
        return summary


def _timed_loop(config, replay_frames) -> dict:
    camera = ReplayCamera.from_arrays(replay_frames, lores_size=replay_frames[0][0].shape[1::-1], loop=False)
    with Appliance(config, camera=camera) as appliance:
        for lores, _, _ in replay_frames[:_WARMUP]:
            appliance.classifier.classify(lores)
        before = _tree_state(Path(config.storage.data_dir))
        started = time.perf_counter()
        appliance.run()
        appliance.writer.close()  # the loop's work includes writing what it kept
        elapsed = time.perf_counter() - started
        after = _tree_state(Path(config.storage.data_dir))
        status = appliance.status()
    return {
        "num_threads": appliance.classifier.num_threads,
        "backend": status["accelerator"]["backend"],
        "inference_ms": status["inference_ms"],
        "summary": {"fps": round(len(replay_frames) / elapsed, 1), "kept": status["frames"]["kept"],
                    "by_reason": status["frames"]["by_reason"],
                    "data_dir_bytes_written": _bytes_written(before, after)},
    }


def _tree_state(root: Path) -> dict:
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def _bytes_written(before: dict, after: dict) -> int:
    """Bytes of files that are new or changed (size or mtime) under the data dir."""
    return sum(size for path, (size, mtime) in after.items() if before.get(path) != (size, mtime))


def _peak_rss_mb(base, images_dir) -> float:
    with tempfile.TemporaryDirectory(prefix="appliance-bench-rss-") as tmp:
        config = base.replace(camera={"replay_dir": str(Path(images_dir).resolve())},
                              storage={"data_dir": f"{tmp}/data", "min_free_bytes": 0},
                              status={"runtime_dir": f"{tmp}/run"})
        config_path = Path(tmp, "bench.toml")
        config_path.write_text(to_toml(config))
        # Linux keeps a process's ru_maxrss across exec, so a child forked from this (large) process
        # would report our peak, not its own: fork it from a small launcher instead.
        command = [sys.executable, "-m", "appliance", "run", "--config", str(config_path), "--once"]
        result = subprocess.run([sys.executable, "-c", _RSS_LAUNCHER, *command], capture_output=True, text=True)
        if result.returncode != 0:
            raise BenchmarkError(f"appliance run failed: {result.stderr[-2000:]}")
        return round(int(result.stdout) / 1024, 1)


_RSS_LAUNCHER = """
import os, subprocess, sys
child = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
_, status, usage = os.wait4(child.pid, 0)
if os.waitstatus_to_exitcode(status):
    sys.exit(child.stderr.read().decode()[-2000:])
print(usage.ru_maxrss)
"""


def main_json(**kwargs) -> str:
    return json.dumps(run_benchmark(**kwargs), indent=2)
