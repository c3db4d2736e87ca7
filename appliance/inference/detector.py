"""The detector: where the objects in a frame are, from a TFLite SSD model with ``TFLite_Detection_PostProcess``.

Such a model has four outputs: boxes [1, N, 4] (ymin, xmin, ymax, xmax, 0-1), classes [1, N], scores
[1, N] and count [1], the first ``count`` of them valid and best first. Which output is which is told by
their shapes, and classes from scores by their names (the post-process op names its outputs ``NAME``,
``NAME:1`` for classes, ``NAME:2`` for scores, ``NAME:3`` for count); where the names do not say (models
exported through other tools), by their values on each frame: class outputs are whole numbers.

Class output ``c`` is label id ``c + 1``, as in COCO's ids (1 = person, 16 = bird), where id 0 is no class:
so a labels file numbered by id (``16 bird``, or TensorFlow's ``labelmap.txt`` whose first line is
``???``) gives label ``labels[c + 1]``. A labels file numbered from 0 by class output instead (Coral's
``0 person``: its label 0 is a real name) gives ``labels[c]``.

The model is loaded as the classifier's is (``runtime.open_model``: catalog check, TFLite check,
threads, Coral Edge TPU), and a frame is area-averaged to the model's input as the camera's ISP would;
or, given a ``TileGrid``, each tile of the full-resolution frame is, for subjects too small for the whole
frame, and what the tiles found is merged (``detections.suppress``).
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from appliance.cameras.convert import area_average
from appliance.errors import ModelError
from appliance.inference.labels import load_labels
from appliance.inference.runtime import input_lut, open_model
from appliance.pipeline.detections import (Box, Detection, DetectionResult, TileGrid, from_tile, is_cut, suppress,
                                           tile_regions)

log = logging.getLogger(__name__)

DEFAULT_MIN_SCORE = 0.5
# What a labels file says at index 0 when it numbers labels by id, from 1 (id 0 is no class).
NO_CLASS_LABELS = ("", "???", "background", "__background__")
_POST_PROCESS_NAME = re.compile(r"TFLite_Detection_PostProcess(?::([0-3]))?$")
_OP_ORDER = ("boxes", "classes", "scores", "count")  # the post-process op's outputs, :0 to :3


@dataclass(frozen=True)
class DetectionOutputs:
    """The output tensors' details by role; ``is_settled`` is false when the names could not tell
    classes from scores (``classes`` and ``scores`` are then only a guess, checked on each frame)."""

    boxes: dict
    classes: dict
    scores: dict
    count: dict
    is_settled: bool = True


def detection_outputs(details: list[dict]) -> DetectionOutputs | None:
    """Which of a model's outputs (``get_output_details()``) is which, or None unless they are the four
    outputs of ``TFLite_Detection_PostProcess``."""
    shapes = [tuple(int(n) for n in d["shape"]) for d in details]
    boxes = [d for d, s in zip(details, shapes) if len(s) == 3 and s[0] == 1 and s[2] == 4]
    count = [d for d, s in zip(details, shapes) if int(np.prod(s)) == 1]
    pair = [d for d, s in zip(details, shapes) if len(s) == 2 and s[0] == 1 and s[1] > 1]
    if len(details) != 4 or len(boxes) != 1 or len(count) != 1 or len(pair) != 2:
        return None
    if any(int(d["shape"][1]) != int(boxes[0]["shape"][1]) for d in pair):
        return None
    roles = [_role_by_name(d["name"]) for d in pair]
    if roles in (["classes", "scores"], ["scores", "classes"]):
        classes, scores = pair if roles[0] == "classes" else pair[::-1]
        return DetectionOutputs(boxes[0], classes, scores, count[0])
    return DetectionOutputs(boxes[0], pair[0], pair[1], count[0], is_settled=False)  # the op's order: a guess


def not_a_detector(path, details: list[dict], section: str = "detector") -> ModelError:
    """The error for a model given as a detector whose outputs are not the post-process op's four."""
    shapes = ", ".join(str(list(int(n) for n in d["shape"])) for d in details)
    if len(details) == 1 and len(details[0]["shape"]) == 2:
        return ModelError(f"{path}: is an image classifier (one output: {shapes} class scores), not an object "
                          f"detector: give it as the classifier (--model, model.path), and as the {section} an SSD "
                          "model with TFLite_Detection_PostProcess outputs, such as `appliance models fetch coco-ssd`")
    return ModelError(f"{path}: has the outputs {shapes}, not the four of TFLite_Detection_PostProcess (boxes "
                      "[1,N,4], classes [1,N], scores [1,N], count [1]) that the appliance's detector reads: export "
                      f"the model with that post-processing, or give another {section}, such as `appliance models "
                      "fetch coco-ssd`")


class Detector:
    """Finds objects in RGB ``uint8`` frames of any size; build it with ``Detector.open``.

    ``detect`` keeps the detections scoring at least ``min_score`` whose label is one of ``targets``
    (every label when ``targets`` is empty), best first.
    """

    def __init__(self, interpreter, labels, model_path, accelerator, targets=(), min_score=DEFAULT_MIN_SCORE,
                 section="detector"):
        self.interpreter = interpreter
        self.labels = labels
        self.model_path = Path(model_path)
        self.accelerator = accelerator  # a runtime.AcceleratorState
        self.min_score = min_score
        # Set by open(); None when built around an interpreter made elsewhere.
        self.num_threads = self.model_sha256 = self.catalog_entry = self.runtime = None
        self._input = interpreter.get_input_details()[0]
        details = interpreter.get_output_details()
        self._outputs = detection_outputs(details)
        if self._outputs is None:
            raise not_a_detector(model_path, details, section)
        if not self._outputs.is_settled:
            log.info("%s: the names of its outputs do not say which are the classes and which the scores: "
                     "telling them apart by their values", model_path)
        _, height, width, channels = self._input["shape"]
        if channels != 3:
            raise ModelError(f"{model_path}: expects {channels}-channel input; the appliance feeds RGB images")
        self.input_size = (int(width), int(height))
        self._lut = input_lut(self._input)
        # Class output c is id c + 1; a file numbered by id has no class at index 0, one numbered by output does.
        self._first_id = 1 if labels[0].strip() in NO_CLASS_LABELS else 0
        if unknown := [t for t in targets if t not in labels]:
            names = [n for n in labels if n.strip() not in NO_CLASS_LABELS]
            raise ModelError(f"{model_path}: target {unknown[0]!r} is not one of the detector's {len(names)} labels "
                             f"({', '.join(names[:5])}, …): name targets as its labels file does")
        self.targets = frozenset(targets)

    @classmethod
    def open(cls, model_config, targets=(), min_score=DEFAULT_MIN_SCORE, catalog=None,
             section="detector") -> Detector:
        """Load the model, its labels and its accelerator as ``Classifier.open`` does, from ``model_config``
        (a ``ModelConfig``: path, labels, num_threads, accelerator…); ``section`` is the config section
        that errors name.

        Labels come from ``model_config.labels``; else, for a catalog model that has a labels file of its
        own (``coco-ssd``), that file beside the model, where ``appliance models fetch`` puts it; else
        from inside the model.
        """
        model = open_model(model_config, catalog, section)
        details = model.interpreter.get_output_details()
        if detection_outputs(details) is None:  # before the labels: a classifier's are no detector's
            raise not_a_detector(model.path, details, section)
        labels_path = model_config.labels or None
        entry = model.catalog_entry
        if labels_path is None and entry is not None and entry.labels is not None:
            labels_path = model.path.parent / entry.labels.filename
            if not labels_path.is_file():
                raise ModelError(f"{model.path}: its labels file {labels_path} is missing: `appliance models fetch "
                                 f"{entry.name} --dir {model.path.parent}` installs it, or give one ({section}.labels)")
        detector = cls(model.interpreter, load_labels(model.path, labels_path), model.path, model.accelerator, targets,
                       min_score, section)
        detector.num_threads = model.num_threads
        detector.model_sha256, detector.catalog_entry, detector.runtime = model.sha256, entry, model.runtime
        return detector

    @property
    def backend(self) -> str:
        return self.accelerator.backend

    def detect(self, image: np.ndarray, grid: TileGrid | None = None,
               whole_frame: np.ndarray | None = None) -> DetectionResult:
        """The detections in one RGB ``uint8`` frame (rows, columns, 3), boxes relative to the frame, best first.

        Without ``grid``, the whole field of view is area-averaged to the model's input: one inference.
        With it, so is each tile of the frame at its full resolution (and the whole frame too, if the grid
        says so), and what they found of one subject is one detection (``suppress``): a subject fills
        about ``cols`` times more of the detector's input on a tile than on the whole frame, for one
        inference a tile. The result says how many inferences the frame cost, and how long they took.
        ``whole_frame``, if given, is the same field of view already small (the camera's lores stream),
        looked at in place of ``image`` for the whole frame: no full-resolution frame to shrink.
        """
        started = time.perf_counter()
        if grid is None:
            found = self._detections(image if whole_frame is None else whole_frame)
            return DetectionResult(tuple(found), (time.perf_counter() - started) * 1000.0, self.backend)
        size = (image.shape[1], image.shape[0])
        whole = image if whole_frame is None else whole_frame
        found = self._detections(whole) if grid.includes_whole_frame else []
        cut, seen_in = [False] * len(found), [None] * len(found)
        for region in tile_regions(size, grid):
            left, top, right, bottom = region
            for detection in self._detections(image[top:bottom, left:right]):
                found.append(replace(detection, box=from_tile(detection.box, region, size)))
                cut.append(is_cut(detection.box, region, size))
                seen_in.append(((right - left) / size[0], (bottom - top) / size[1]))
        return DetectionResult(suppress(found, cut, seen_in=seen_in), (time.perf_counter() - started) * 1000.0,
                               self.backend, grid.inferences)

    def _detections(self, image: np.ndarray) -> list[Detection]:
        """One inference on ``image``: its detections of a target label and enough score, best first."""
        self._invoke(image)
        out = self._outputs
        count = min(int(self._tensor(out.count)[0]), int(out.boxes["shape"][1]))
        boxes = self._tensor(out.boxes)[0, :count]
        classes, scores = self._tensor(out.classes)[0, :count], self._tensor(out.scores)[0, :count]
        if not out.is_settled:
            classes, scores = classes_and_scores(classes, scores)
        found = []
        for (ymin, xmin, ymax, xmax), c, score in zip(boxes.tolist(), classes.tolist(), scores.tolist()):
            label = self._label(int(c))
            if score >= self.min_score and (not self.targets or label in self.targets):
                box = Box(*(min(max(v, 0.0), 1.0) for v in (xmin, ymin, xmax, ymax)))
                found.append(Detection(box, int(c) + 1, label, round(score, 5)))
        found.sort(key=lambda d: d.score, reverse=True)
        return found

    def bare_invoke(self, image: np.ndarray) -> None:
        """Only set the input (already at ``input_size``) and invoke: the benchmark's yardstick."""
        self.interpreter.set_tensor(self._input["index"], image[np.newaxis])
        self.interpreter.invoke()

    def _invoke(self, image: np.ndarray) -> None:
        if (image.shape[1], image.shape[0]) != self.input_size:
            image = area_average(image, self.input_size)
        tensor = image if self._lut is None else self._lut[image]
        self.interpreter.set_tensor(self._input["index"], tensor[np.newaxis])
        self.interpreter.invoke()

    def _tensor(self, details) -> np.ndarray:
        raw = self.interpreter.get_tensor(details["index"])
        scale, zero_point = details["quantization"]
        return (raw.astype(np.float32) - zero_point) * scale if scale else raw.astype(np.float32)

    def _label(self, class_output: int) -> str:
        index = class_output + self._first_id
        return self.labels[index] if 0 <= index < len(self.labels) else str(class_output + 1)


def _role_by_name(name: str) -> str | None:
    if match := _POST_PROCESS_NAME.search(name):
        return _OP_ORDER[int(match[1] or 0)]
    lowered = name.lower()
    return "classes" if "class" in lowered else "scores" if "score" in lowered else None


def classes_and_scores(first: np.ndarray, second: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(classes, scores)`` from the valid values of two outputs whose names did not tell them apart
    (``first`` is taken for the classes unless the values say otherwise): class outputs are whole numbers."""
    def is_whole(values):
        return bool(np.all(values == np.round(values)))

    return (second, first) if is_whole(second) and not is_whole(first) else (first, second)
