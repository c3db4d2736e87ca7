"""The camera VM's benchmark (``image/test-camera-vm.sh --bench``): the whole loop through the real
picamera2 on libcamera's virtual camera, against bare ``invoke()`` of the same model, in the same VM and run.

Measured (QEMU TCG on a shared 2-core machine: ratios mean something, absolute figures do not):

* ``bare``: frames/s of ``Classifier.bare_invoke`` on the photos, pre-scaled to the model's input;
* ``loop``: frames/s of the appliance (``Appliance`` with ``camera.backend = "picamera2"``: virtual camera →
  libcamera → picamera2 → our adapter's software lores → classify → policy → status) with a keep rule
  that never keeps (every label ignored), after a warm-up; each loop run opens the camera and the
  model afresh, as the service does; ``camera.fps`` as the service has it (``--fps``, default 5: the
  adapter gives back the frames a camera without a frame-rate control sends sooner);
* the two in ``--pairs`` pairs in alternation (``appliance.bench.common.interleaved``); efficiency is
  the median of the per-pair ratios loop ÷ bare, with their min–max;
* ``bare_while_camera_streams``: bare ``invoke()`` while the camera streams with nobody taking frames,
  in pairs with plain bare. libcamera's virtual camera has no frame pacing (it fills a buffer as soon
  as one is queued, and picamera2 queues each one back as soon as it is done with it), so it runs as
  fast as the CPU lets it, which a real sensor never does; this ratio says how much of the loop's
  shortfall is that;
* start-up to the first frame and the first classification of ``appliance run`` (the real command, in
  a child process, status written every 0.1 s), and its peak RSS (``VmHWM``) after it has classified
  ``--rss-frames`` frames, each over ``--runs`` runs.

JSON on stdout and in /srv/results/bench.json (read back into build/camera-vm-logs/ on the host).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from functools import partial
from pathlib import Path

from appliance.bench.common import interleaved, machine, ratio_summary
from appliance.cameras import open_camera
from appliance.cameras.replay import read_rgb, scale_like_isp
from appliance.config import CameraConfig, Config, to_toml
from appliance.inference.classifier import Classifier
from appliance.service.app import Appliance
from appliance.service.status import read_status

SHARED = Path("/srv/shared")
MODEL = SHARED / "models" / "coral" / "mobilenet_v2_1.0_224_inat_bird_quant.tflite"
RESULTS = Path("/srv/results")
WARMUP_FRAMES = 3
GOALS = {"efficiency": 0.90, "peak_rss_mb": 150.0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=15, help="frames timed per side of each pair (default 15)")
    parser.add_argument("--pairs", type=int, default=5, help="pairs in alternation (default 5, the least)")
    parser.add_argument("--runs", type=int, default=3, help="appliance run start-ups measured (default 3)")
    parser.add_argument("--rss-frames", type=int, default=10, help="classifications before VmHWM is read")
    parser.add_argument("--still-size", default="1920x1080", help="camera.still_size (default 1920x1080)")
    parser.add_argument("--fps", type=float, default=CameraConfig.fps,
                        help=f"camera.fps (default {CameraConfig.fps:g}, as the service runs; 0 lets it run free)")
    args = parser.parse_args()
    still_size = tuple(int(v) for v in args.still_size.split("x"))
    base = Config().replace(
        camera={"backend": "picamera2", "fps": args.fps, "still_size": still_size},
        model={"path": str(MODEL)},
        keep={"ignore": ["*"]},  # nothing matches: the loop never writes
        gpio={"enabled": "off"},
    )
    result = {"machine": machine(), "model": MODEL.name, "camera": {"still_size": list(still_size), "fps": args.fps}}
    classifier = Classifier.open(base.model)
    lores_frames = [scale_like_isp(read_rgb(p), classifier.input_size) for p in sorted((SHARED / "images").iterdir())
                    if p.suffix.lower() in (".jpg", ".bmp", ".png")]
    bare = partial(bare_fps, classifier, lores_frames, args.frames)
    log(f"bare invoke() and the loop through picamera2, {args.pairs} pairs of {args.frames} frames")
    loop_pairs = interleaved(bare, partial(loop_run, base, args.frames), args.pairs,
                             ratio=lambda bare_result, loop: loop["fps"] / bare_result, log_as="bench: bare, loop")
    loops = loop_pairs.b
    result |= {
        "num_threads": classifier.num_threads, "frames_per_side": args.frames,
        "bare_invoke_fps": round(statistics.median(loop_pairs.a), 3),
        "bare_invoke_fps_per_run": [round(f, 3) for f in loop_pairs.a],
        "loop_fps": round(statistics.median(r["fps"] for r in loops), 3),
        "loop_fps_per_run": [r["fps"] for r in loops],
        "loop_kept": sum(r["kept"] for r in loops),
        "loop_inference_ms": loops[0]["inference_ms"],
        "camera_description": loops[0]["camera"],
        "efficiency": loop_pairs.summary | {"per_pair": loop_pairs.ratios},
    }
    log("bare invoke() alone and while the camera streams untouched")
    streaming = interleaved(bare, partial(bare_while_streaming, base, classifier, bare), args.pairs,
                            log_as="bench: bare, bare while streaming")
    result["bare_while_camera_streams"] = {
        "fps": round(statistics.median(streaming.b), 3), "ratio_to_bare": streaming.summary,
        "loop_over_bare_while_streaming": ratio_summary(
            round(loop["fps"] / s, 3) for loop, s in zip(loops, streaming.b)),
    }
    log(f"appliance run: start-up and peak RSS, {args.runs} runs")
    runs = [start_up(base, args.rss_frames) for _ in range(args.runs)]
    result["appliance_run"] = {
        key: round(statistics.median(r[key] for r in runs), 2) for key in runs[0]
    } | {"runs": runs}
    result["machine"]["load_avg_1min_at_end"] = round(os.getloadavg()[0], 2)
    efficiency, peak_rss_mb = result["efficiency"]["median"], result["appliance_run"]["peak_rss_mb"]
    result["goals"] = {"efficiency_at_least": GOALS["efficiency"], "efficiency_met": efficiency >= GOALS["efficiency"],
                       "peak_rss_mb_at_most": GOALS["peak_rss_mb"], "peak_rss_met": peak_rss_mb <= GOALS["peak_rss_mb"]}
    text = json.dumps(result, indent=2)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "bench.json").write_text(text + "\n")
    print(text)
    return 0


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def bare_fps(classifier, lores_frames, frames) -> float:
    for i in range(WARMUP_FRAMES):
        classifier.bare_invoke(lores_frames[i % len(lores_frames)])
    started = time.perf_counter()
    for i in range(frames):
        classifier.bare_invoke(lores_frames[i % len(lores_frames)])
    return frames / (time.perf_counter() - started)


def wait_for(condition, timeout_s: float, what: str, failed=lambda: None) -> None:
    until = time.monotonic() + timeout_s
    while not condition():
        if failed():
            raise RuntimeError(f"{what}: {failed()}")
        if time.monotonic() > until:
            raise TimeoutError(f"no {what} within {timeout_s:.0f} s")
        time.sleep(0.01)


def loop_run(base, frames) -> dict:
    """The appliance's own loop through picamera2, timed over ``frames`` frames after a warm-up."""
    with tempfile.TemporaryDirectory(prefix="bench-camera-") as tmp:
        config = base.replace(storage={"data_dir": f"{tmp}/data", "min_free_bytes": 0},
                              status={"runtime_dir": f"{tmp}/run"})
        with Appliance(config) as appliance:
            error = []

            def run():
                try:
                    appliance.run()
                except Exception as e:  # reported by wait_for in the main thread
                    error.append(e)

            runner = threading.Thread(target=run, name="bench-loop")
            runner.start()
            stats = appliance.stats
            try:
                wait_for(lambda: stats.frames_seen >= WARMUP_FRAMES, 300, "warm-up frames from the loop",
                         lambda: error and repr(error[0]))
                seen, started = stats.frames_seen, time.perf_counter()
                wait_for(lambda: stats.frames_seen >= seen + frames, 900, f"{frames} frames from the loop",
                         lambda: error and repr(error[0]))
                seen, elapsed = stats.frames_seen - seen, time.perf_counter() - started
            finally:
                appliance.stop()
                runner.join()
            status = appliance.status()
    return {"fps": round(seen / elapsed, 3), "kept": status["frames"]["kept"],
            "inference_ms": status["inference_ms"], "camera": status["camera"]["description"]}


def bare_while_streaming(base, classifier, bare) -> float:
    camera = open_camera(base.camera, classifier.input_size)
    camera.start()
    try:
        time.sleep(1.0)  # streaming
        return bare()
    finally:
        camera.close()


def start_up(base, rss_frames) -> dict:
    """``appliance run`` as the service runs it: seconds to its first frame and first classification,
    and its peak RSS once it has classified ``rss_frames`` frames."""
    with tempfile.TemporaryDirectory(prefix="bench-camera-run-") as tmp:
        runtime = Path(tmp, "run")
        config = base.replace(storage={"data_dir": f"{tmp}/data", "min_free_bytes": 0},
                              status={"runtime_dir": str(runtime), "interval_s": 0.1})
        config_path = Path(tmp, "appliance.toml")
        config_path.write_text(to_toml(config))
        started = time.monotonic()
        child = subprocess.Popen([sys.executable, "-m", "appliance", "run", "--config", str(config_path)],
                                 stdout=subprocess.DEVNULL, stderr=open(Path(tmp, "stderr"), "w"))

        def frames(key):
            return ((read_status(runtime) or {}).get("frames") or {}).get(key) or 0

        def exited():
            return child.poll() is not None and f"exited {child.returncode}: {Path(tmp, 'stderr').read_text()[-2000:]}"

        try:
            wait_for(lambda: frames("seen") >= 1, 300, "first frame", exited)
            first_frame_s = time.monotonic() - started
            wait_for(lambda: frames("classified") >= 1, 300, "first classification", exited)
            first_classification_s = time.monotonic() - started
            wait_for(lambda: frames("classified") >= rss_frames, 600, f"{rss_frames} classifications", exited)
            status = Path(f"/proc/{child.pid}/status").read_text()
            peak_kb = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))
        finally:
            child.send_signal(signal.SIGTERM)
            code = child.wait(timeout=120)
        if code != 0:
            raise RuntimeError(f"appliance run exited {code} after SIGTERM: {Path(tmp, 'stderr').read_text()[-2000:]}")
    return {"first_frame_s": round(first_frame_s, 2), "first_classification_s": round(first_classification_s, 2),
            "peak_rss_mb": round(peak_kb / 1024, 1)}


if __name__ == "__main__":
    sys.exit(main())
