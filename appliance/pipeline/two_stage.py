"""The detector stage: detect → crop → classify → agree over frames → keep, one frame at a time.

With a detector configured the classifier no longer sees the whole frame. For each frame:

1. The detector looks at the lores stream (sized for it), and, with tiles, at each tile of the
   full-resolution main image too (``Detector.detect``); the target boxes, best first, at most
   ``max_boxes``.
2. Each box is cut from the main image of the same frame with a margin, squared
   (``detections.crop_square``), area-averaged to the classifier's input, and classified. The keep
   rule's label test applies to the crop (``Policy.candidate``): its targets, ignores and min scores.
3. The boxes join tracks (``tracks.Tracker``): a track's species by score-weighted votes over its
   frames, kept once it has enough frames and agreement, at its best frames, with an ``event_id``.
   A track never spans two sources (a replayed file is a scene of its own).
4. A track's keep that adds to what is kept passes the rest of the keep rule (``Policy.throttle``:
   cooldown, rate cap, duplicate); one that replaces the track's worse keep adds nothing and does not.
5. A frame that keeps nothing counts toward the keep rule's audits (``Policy.audit``): an audit keep
   is the best box's crop label, or ``nothing-detected`` for a frame without a box, which is how the
   detector's misses get measured.

A frame's ``reason`` is the one the status counts for it: "match" or "audit" if it kept anything, else
the reason of its best box, else "no-target-detected". Nothing here writes anything: the loop hands the
keeps to the writer. The detector, the classifier and the crop's cut and resize
(``cameras.convert.crop_to_input``) are handed in (``service.app`` builds them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from appliance.pipeline.detections import Box, Detection, TileGrid
from appliance.pipeline.frames import Classification, Discard, Frame, Keep
from appliance.pipeline.policy import MATCH, Policy
from appliance.pipeline.tracks import Observation, Tracker

NO_TARGET = "no-target-detected"
NOTHING_DETECTED = "nothing-detected"  # the label of an audit keep of a frame in which no target was found
DEFAULT_MAX_BOXES = 4


@dataclass(frozen=True)
class BoxKeep:
    """One keep the stage made of a frame: the ``decision``, the crop's ``classification``, the box, the
    crop itself (the classifier's input, kept as a second small image) and its track. An audit keep of a
    frame without a box has no ``detection``, ``crop`` nor track."""

    decision: Keep
    classification: Classification
    detection: Detection | None = None
    crop: np.ndarray | None = None
    event_id: str | None = None
    event_frame: int | None = None
    replaces_frame: int | None = None  # the event's keep this one replaces, to delete once this one is stored


@dataclass(frozen=True)
class StageResult:
    """What the stage made of one frame; see the module docstring for ``reason``."""

    reason: str
    keeps: tuple[BoxKeep, ...]
    box_reasons: tuple[str, ...]        # each box's reason, best box first
    detector_ms: float
    detector_inferences: int
    classifier_ms: tuple[float, ...]    # one per box classified


class DetectorStage:
    """Decides frames through a detector, a classifier, a keep ``policy`` and a ``tracker``."""

    def __init__(self, detector, classifier, policy: Policy, tracker: Tracker,
                 crop: Callable[[np.ndarray, Box, tuple[int, int]], np.ndarray], grid: TileGrid | None = None,
                 classify_crops: bool = True, max_boxes: int = DEFAULT_MAX_BOXES):
        self.detector = detector
        # (main, box, (width, height)) -> the box's square (detections.crop_square) area-averaged to that size
        self.crop = crop
        self.classifier = classifier
        self.policy = policy
        self.tracker = tracker
        self.grid = grid
        self.classify_crops = classify_crops
        self.max_boxes = max_boxes
        self._source: str | None = None

    @property
    def lores_size(self) -> tuple[int, int]:
        """The lores stream the detector wants: its own input size."""
        return self.detector.input_size

    def look(self, frame: Frame, audit_bytes_used: int = 0) -> StageResult:
        """Detect, crop, classify, track and decide one frame (see the module docstring)."""
        if frame.source != self._source:
            self.tracker.end_all()
            self._source = frame.source
        main = frame.main.array() if self.grid is not None else None
        found = self.detector.detect(main, self.grid, whole_frame=frame.lores) if main is not None \
            else self.detector.detect(frame.lores)
        detections = found.detections[:self.max_boxes]
        if detections and main is None:
            main = frame.main.array()
        looked = [self._classify(main, detection) for detection in detections]
        observations = [Observation(d, candidate.label, candidate.score, candidate.discard_reason)
                        for d, _, _, candidate in looked]
        verdicts = self.tracker.update(observations, frame.timestamp_s).verdicts
        keeps, reasons = [], []
        for verdict, (detection, crop, classification, _) in zip(verdicts, looked):
            decision = verdict.decision
            if decision.is_keep and verdict.replaces is None:  # adds a keep: the rest of the keep rule applies
                decision = self.policy.throttle(decision.label, decision.score, crop, frame.timestamp_s)
                if not decision.is_keep:
                    self.tracker.forget(verdict.event_id, verdict.frame_no)
            reasons.append(decision.reason)
            if decision.is_keep:
                keeps.append(BoxKeep(decision, classification, detection, crop, verdict.event_id, verdict.frame_no,
                                     verdict.replaces))
        reason = MATCH if keeps else self._audit(looked, reasons, keeps, found.backend, audit_bytes_used)
        return StageResult(reason, tuple(keeps), tuple(reasons), found.inference_ms, found.inferences,
                           tuple(c.inference_ms for _, _, c, _ in looked if self.classify_crops))

    def _classify(self, main, detection):
        crop = self.crop(main, detection.box, self.classifier.input_size)
        if self.classify_crops:
            classification = self.classifier.classify(crop)
        else:  # the detector's word alone
            classification = Classification(((detection.label, detection.score),), 0.0, self.detector.backend)
        return detection, crop, classification, self.policy.candidate(classification)

    def _audit(self, looked, reasons, keeps, backend, audit_bytes_used) -> str:
        """The reason of a frame that kept nothing; an audit keep of it added to ``keeps`` when one is due."""
        discard = Discard(reasons[0] if reasons else NO_TARGET)
        if looked:
            detection, crop, classification, _ = looked[0]
            label, score = classification.label, classification.score
        else:
            detection = crop = None
            classification, label, score = Classification((), 0.0, backend), NOTHING_DETECTED, 0.0
        decision = self.policy.audit(discard, label, score, audit_bytes_used)
        if decision.is_keep:
            keeps.append(BoxKeep(decision, classification, detection, crop))
        return decision.reason

    def close(self) -> None:
        """End every open track (the loop is stopping)."""
        self.tracker.end_all()
