"""The capture → classify → keep loop.

Three threads overlap: the capture thread pulls frames from the camera into a short queue; this
loop classifies each frame and asks the policy; kept frames go to the writer thread. LiteRT's
``invoke()`` releases the GIL, so capture and writing run while the model does.

Per frame: motion gate → classify → decide → (keep: hand the main image to the writer) → release
the frame's buffers. A discarded frame writes nothing anywhere.

While paused (from the review page, over the control channel), frames are still taken from the camera,
so its buffers keep flowing and the heartbeat stays fresh, but each is released at once, unclassified,
and counted under the reason "paused".

With a detector stage (``two_stage.DetectorStage``), the stage takes the place of classify → decide:
it may keep several subjects of one frame, each a keep of its own with its box, crop and track.
"""

from __future__ import annotations

import logging
import queue
import threading
import time

from appliance.pipeline.frames import Frame
from appliance.pipeline.writer import KeepJob

log = logging.getLogger(__name__)

_END = object()
_FRAME_QUEUE = 2  # enough to overlap capture with inference; more only adds latency
# The most frames the loop holds unreleased at once: the queue's, the one the capture thread waits to
# put in it, and the one being processed. A camera that lends its buffers needs more than that.
FRAMES_HELD = _FRAME_QUEUE + 2
_WAKE_S = 1.0  # the loop wakes at least this often, so its heartbeat stays fresh while idle


class Loop:
    """Runs until the camera runs out of frames or ``stop()`` is called; see the module docstring."""

    def __init__(self, camera, classifier, policy, writer, store, stats, stage=None):
        self.camera = camera
        self.stage = stage
        self.classifier = classifier
        self.policy = policy
        self.writer = writer
        self.store = store
        self.stats = stats
        self._phase = "starting"  # → "running" → "stopped"; ``state`` adds "paused"
        self._is_paused = False
        self.heartbeat_s = time.monotonic()
        self._frames: queue.Queue = queue.Queue(maxsize=_FRAME_QUEUE)
        self._stopping = threading.Event()
        self._capture_error: BaseException | None = None
        self._last_drop_log_s = 0.0

    def run(self) -> None:
        """Capture and process frames until the end; re-raises a camera failure."""
        capture = threading.Thread(target=self._capture, name="capture", daemon=True)
        capture.start()
        self._phase = "running"
        try:
            while True:
                try:
                    frame = self._frames.get(timeout=_WAKE_S)
                except queue.Empty:
                    self.heartbeat_s = time.monotonic()
                    continue
                if frame is _END:
                    break
                self.process(frame)
                self.heartbeat_s = time.monotonic()
        finally:
            self.stop()
            self._drain_frames(capture)
            self._phase = "stopped"
        if self._capture_error is not None:
            raise self._capture_error

    @property
    def state(self) -> str:
        """One of ``starting``, ``running``, ``paused``, ``stopped``."""
        # Derived rather than assigned, so a pause arriving as the loop stops cannot leave "paused".
        return "paused" if self._is_paused and self._phase == "running" else self._phase

    @property
    def is_paused(self) -> bool:
        return self._is_paused

    def pause(self) -> None:
        """Release frames unclassified until ``resume()``; safe from any thread."""
        if not self._is_paused:
            self._is_paused = True
            log.info("paused: frames are released unclassified until resumed")

    def resume(self) -> None:
        """Classify frames again; safe from any thread."""
        if self._is_paused:
            self._is_paused = False
            log.info("resumed: classifying frames again")

    def stop(self) -> None:
        """End ``run()`` soon; safe from any thread or a signal handler."""
        self._stopping.set()
        self.camera.stop()

    def process(self, frame: Frame) -> None:
        """Decide one frame and hand a keep to the writer; always releases the frame."""
        try:
            self.stats.frame(frame.timestamp_s)
            if self._is_paused:
                self.stats.counts["paused"] += 1
                return
            gated = self.policy.gate(frame.lores, frame.timestamp_s)
            if gated is not None:
                self.stats.counts[gated.reason] += 1
                return
            if self.stage is not None:
                self._look(frame)
                return
            classification = self.classifier.classify(frame.lores)
            self.stats.inference(classification.inference_ms)
            decision = self.policy.decide(classification, frame.lores, frame.timestamp_s, self.store.audit_bytes)
            self.stats.counts[decision.reason] += 1
            if decision.is_keep:
                self._keep(frame, decision, classification)
        finally:
            frame.release()

    def _look(self, frame):
        result = self.stage.look(frame, self.store.audit_bytes)
        self.stats.detection(result.detector_ms, result.detector_inferences, len(result.classifier_ms))
        for inference_ms in result.classifier_ms:
            self.stats.inference(inference_ms)
        self.stats.counts[result.reason] += 1
        self.stats.boxes.update(result.box_reasons)
        for keep in result.keeps:
            self._keep(frame, keep.decision, keep.classification, keep)

    def _keep(self, frame, decision, classification, box_keep=None):
        if not self.writer.accepts_keeps(time.monotonic()):
            # Known full: do not copy the image only to have the writer refuse it.
            self.stats.counts["storage-full"] += 1
            return
        job = KeepJob(decision, classification, frame.main.detach(), frame.captured_at_s, frame.source, box_keep)
        if not self.writer.submit(job):
            self.stats.counts["writer-behind"] += 1
            now_s = time.monotonic()
            if now_s - self._last_drop_log_s > 10:
                self._last_drop_log_s = now_s
                log.warning("the writer is behind (storage too slow): dropped a keep of %s; %d dropped so far",
                            decision.label, self.stats.counts["writer-behind"])

    def _capture(self) -> None:
        try:
            for frame in self.camera.frames():
                if self._stopping.is_set():
                    frame.release()
                    break
                self._frames.put(frame)
        except BaseException as e:  # handed to run(), which re-raises it in the main thread
            self._capture_error = e
        finally:
            self._frames.put(_END)

    def _drain_frames(self, capture):
        """Release frames still queued after a stop, so the camera gets its buffers back."""
        while capture.is_alive() or not self._frames.empty():
            try:
                frame = self._frames.get(timeout=0.1)
            except queue.Empty:
                continue
            if frame is not _END:
                frame.release()
