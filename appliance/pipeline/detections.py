"""Detections and their crops: the detector's boxes as plain values, and each box cut from the main image.

Boxes are relative to the frame (0 at the left and top edges, 1 at the right and bottom), so a box the
detector found on its small copy of a frame maps onto the full-resolution main image of the same frame,
whatever its size. ``crop_square`` cuts that box out of the main image with a margin and squared the way
a classifier expects its input (the short side grown, never the subject squashed), ready to be
area-averaged to the classifier's input size. Pure: no I/O, nothing but numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DEFAULT_MARGIN = 0.1  # of the box's long side, added on each side: a bird's tail or beak cut off costs the classifier


@dataclass(frozen=True)
class Box:
    """A rectangle relative to the frame: ``left``, ``top``, ``right``, ``bottom``, each from 0 to 1."""

    left: float
    top: float
    right: float
    bottom: float


@dataclass(frozen=True)
class Detection:
    """One object the detector found: where, what (its label and the detector's id for it), how sure."""

    box: Box
    label_id: int
    label: str
    score: float


@dataclass(frozen=True)
class DetectionResult:
    """What the detector said about one frame: its detections, best first, and what the inference cost."""

    detections: tuple[Detection, ...]
    inference_ms: float
    backend: str


def square_region(box: Box, image_size: tuple[int, int], margin: float = DEFAULT_MARGIN) -> tuple[int, int, int]:
    """``(left, top, side)``: the square of pixels around ``box`` in an image of ``image_size`` (width, height).

    The box's long side grows by ``margin`` of itself on each side, and the short side grows to match it.
    A square that crosses an edge of the image is moved back inside it; one larger than the image along
    an axis (never larger than the image's long side) is centred on that axis, and ``left`` or ``top``
    is then negative: what lies outside the image is padding. (Padding, not the image's whole width
    squashed, nor the box unsquared: on the chickadee photo, whose boxes are most of the frame, the
    padded square scored 0.87-0.95 where the whole frame, squashed, scored 0.70.)
    """
    width, height = image_size
    x0, x1, y0, y1 = box.left * width, box.right * width, box.top * height, box.bottom * height
    side = max(x1 - x0, y1 - y0) * (1 + 2 * margin)
    side = min(max(1, math.floor(side + 0.5)), max(width, height))
    return _place((x0 + x1) / 2, side, width), _place((y0 + y1) / 2, side, height), side


def crop_square(image: np.ndarray, box: Box, margin: float = DEFAULT_MARGIN, fill: int = 0) -> np.ndarray:
    """The square ``square_region`` gives, cut from ``image`` (rows, columns[, channels]) at its full
    resolution; where the square is larger than the image, padded with ``fill`` (black). A view of
    ``image`` when nothing is padded."""
    height, width = image.shape[:2]
    left, top, side = square_region(box, (width, height), margin)
    crop = image[max(top, 0):top + side, max(left, 0):left + side]
    if crop.shape[:2] == (side, side):
        return crop
    pad_top, pad_left = max(-top, 0), max(-left, 0)
    padding = [(pad_top, side - crop.shape[0] - pad_top), (pad_left, side - crop.shape[1] - pad_left)]
    return np.pad(crop, padding + [(0, 0)] * (image.ndim - 2), constant_values=fill)


def _place(centre: float, side: int, length: int) -> int:
    """Where a run of ``side`` pixels centred on ``centre`` starts, moved to lie within ``length`` if it fits."""
    if side >= length:
        return (length - side) // 2  # cannot be grown inside the image: centred, the rest padded
    return min(max(math.floor(centre - side / 2 + 0.5), 0), length - side)
