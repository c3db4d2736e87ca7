"""Where a two-stage frame's time goes (part of ``appliance bench --detector``): ms per stage, p50 / p95.

One run of the real loop over the frames the pairs run on, apart from the pairs: the appliance is
built as for a loop run, and its detector stage built again around the same detector, classifier,
keep policy, tracker and resize, each behind a ``_Timed`` stand-in that adds the time of the calls
named to the frame's account. The bench hands each frame to ``Loop.process`` itself (no capture
thread) and times the whole. A stand-in costs two clock reads a call; the pairs' runs have none.

Per frame: ``detector`` (``Detector.detect``: one inference, or one a tile with each tile's resize),
``tracking_policy`` (the tracker's calls and the keep rule's: ``candidate``, ``throttle``, ``audit``),
``frame`` (``Loop.process``: the stage, the counts, a keep handed to the writer). Per crop:
``classifier`` (``Classifier.classify``), ``resize`` (``crop_to_input``: the box's square cut from the
main image and area-averaged to the classifier's input), ``crop_resize`` (the rest of the stage's
``look``, shared among the frame's crops, ``resize`` included).
"""

from __future__ import annotations

import tempfile
import time
from collections import defaultdict

from appliance.bench.common import percentiles
from appliance.cameras.replay import ReplayCamera
from appliance.pipeline.loop import Loop
from appliance.pipeline.two_stage import DetectorStage
from appliance.service.app import Appliance

STAGES = ("detector", "crop_resize", "resize", "classifier", "tracking_policy", "frame")
PER_CROP = ("crop_resize", "resize", "classifier")


class _Account:
    """The ms of each timed call of the frame being processed, by part."""

    def __init__(self):
        self.calls: defaultdict = defaultdict(list)

    def add(self, part: str, ms: float) -> None:
        self.calls[part].append(ms)

    def take(self) -> dict:
        """The frame's calls; the account starts empty for the next frame."""
        calls, self.calls = self.calls, defaultdict(list)
        return calls


class _Timed:
    """Stands in for ``target``: a call of a method named in ``parts`` (method → part) adds its ms to
    ``account``; everything else is the target's own."""

    def __init__(self, target, parts: dict, account: _Account):
        self._target, self._parts, self._account = target, parts, account

    def __getattr__(self, name):
        value = getattr(self._target, name)
        part = self._parts.get(name)
        return value if part is None else _timed_call(value, part, self._account)


def _timed_call(call, part: str, account: _Account):
    def timed(*args, **kwargs):
        started = time.perf_counter()
        try:
            return call(*args, **kwargs)
        finally:
            account.add(part, (time.perf_counter() - started) * 1000.0)

    return timed


def _timed_stage(stage: DetectorStage, account: _Account) -> _Timed:
    """``stage`` built again around timed stand-ins of its collaborators, itself timed (``look``)."""
    policy_calls = dict.fromkeys(("candidate", "throttle", "audit"), "tracking_policy")
    tracker_calls = dict.fromkeys(("update", "forget", "end_all"), "tracking_policy")
    rebuilt = DetectorStage(_Timed(stage.detector, {"detect": "detector"}, account),
                            _Timed(stage.classifier, {"classify": "classifier"}, account),
                            _Timed(stage.policy, policy_calls, account), _Timed(stage.tracker, tracker_calls, account),
                            _timed_call(stage.crop, "resize", account), stage.grid, stage.classify_crops,
                            stage.max_boxes)
    return _Timed(rebuilt, {"look": "look"}, account)


def stage_timings(config, replay_frames, warm_up) -> dict:
    """ms p50 / p95 of each stage (``STAGES``; see the module docstring) over one loop run of ``replay_frames``
    (``(lores, main, name)``) with ``config`` (storage and status go to a temp dir); ``warm_up(appliance)``
    runs before the timed frames."""
    account, measured = _Account(), defaultdict(list)
    with tempfile.TemporaryDirectory(prefix="appliance-bench-stages-") as tmp:
        config = config.replace(storage={"data_dir": f"{tmp}/data", "min_free_bytes": 0},
                                status={"runtime_dir": f"{tmp}/run"})
        camera = ReplayCamera.from_arrays(replay_frames, lores_size=replay_frames[0][0].shape[1::-1], loop=False)
        with Appliance(config, camera=camera) as appliance:
            loop = Loop(appliance.camera, appliance.classifier, appliance.loop.policy, appliance.writer,
                        appliance.store, appliance.stats, _timed_stage(appliance.stage, account))
            warm_up(appliance)
            appliance.writer.start()
            camera.start()
            try:
                for frame in camera.frames():
                    account.take()
                    started = time.perf_counter()
                    loop.process(frame)
                    measured["frame"].append((time.perf_counter() - started) * 1000.0)
                    _add_frame(measured, account.take())
            finally:
                appliance.writer.close()
                camera.close()
    return {stage: percentiles(measured[stage], "_ms") if measured[stage] else None for stage in STAGES} | {
        "crops_per_frame": round(len(measured["classifier"]) / len(measured["frame"]), 2)}


def _add_frame(measured: dict, calls: dict) -> None:
    """One frame's calls, added to the per-frame and per-crop figures."""
    detector_ms, tracking_policy_ms = sum(calls["detector"]), sum(calls["tracking_policy"])
    measured["detector"].append(detector_ms)
    measured["tracking_policy"].append(tracking_policy_ms)
    for part in ("resize", "classifier"):
        measured[part].extend(calls[part])
    crops = len(calls["resize"])  # every box is cut and resized, whether or not it is classified
    if crops:
        rest_ms = sum(calls["look"]) - detector_ms - sum(calls["classifier"]) - tracking_policy_ms
        measured["crop_resize"].extend([rest_ms / crops] * crops)
