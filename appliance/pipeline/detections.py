"""Detections and their crops: the detector's boxes as plain values, and each box cut from the main image.

Boxes are relative to the frame (0 at the left and top edges, 1 at the right and bottom), so a box the
detector found on its small copy of a frame maps onto the full-resolution main image of the same frame,
whatever its size. ``crop_square`` cuts that box out of the main image with a margin and squared the way
a classifier expects its input (the short side grown, never the subject squashed), ready to be
area-averaged to the classifier's input size. Pure: no I/O, nothing but numpy.

Tiles are for subjects too small for the detector on the whole frame: ``tile_regions`` cuts a frame into
a grid of overlapping tiles, ``from_tile`` maps a box found on a tile back to the frame, and ``suppress``
merges what several tiles (and the whole frame) found of one subject into one detection.
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
    inference_ms: float  # of every inference the frame cost, summed
    backend: str
    inferences: int = 1  # the detector's invocations on this frame: one, or one a tile (and the whole frame)


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


# --- Tiles, and merging what they found ----------------------------------------------------------------

MAX_TILES = 16
DEFAULT_OVERLAP = 0.25
DEFAULT_MERGE_IOU = 0.5


@dataclass(frozen=True)
class TileGrid:
    """How a frame is cut for the detector: ``cols`` × ``rows`` tiles, each sharing ``overlap`` of its width
    (height) with its neighbour, and whether the whole frame is looked at too (a big subject spans tiles)."""

    cols: int
    rows: int
    overlap: float = DEFAULT_OVERLAP
    includes_whole_frame: bool = True
    is_square: bool = False  # TEMP: measured

    def __post_init__(self):
        problem = grid_problem(self.cols, self.rows)
        if problem:
            raise ValueError(problem)
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"overlap {self.overlap!r} is not from 0 to below 1")

    @property
    def inferences(self) -> int:
        """How many times the detector runs on a frame."""
        return self.cols * self.rows + self.includes_whole_frame


def grid_problem(cols: int, rows: int) -> str | None:
    """What is wrong with a grid of ``cols`` × ``rows`` tiles, or None."""
    if cols < 1 or rows < 1:
        return f"{cols}x{rows} has no tiles: give columns and rows of 1 or more, such as 3x2"
    if cols * rows < 2:
        return "1x1 is the whole frame, which the detector sees without tiles: give 2 tiles or more, such as 2x1"
    if cols * rows > MAX_TILES:
        return (f"{cols}x{rows} is {cols * rows} tiles, more than {MAX_TILES}: each costs an inference a frame, "
                "and smaller tiles of a camera's frame are below the detector's input size")
    return None


def parse_grid(text: str) -> tuple[int, int]:
    """``(cols, rows)`` from ``COLSxROWS`` such as ``3x2``; ValueError saying what is wrong otherwise."""
    cols, x, rows = text.strip().lower().partition("x")
    if not (x and cols.strip().isdigit() and rows.strip().isdigit()):
        raise ValueError(f"{text!r} is not a grid: give COLSxROWS, such as 3x2")
    if problem := grid_problem(int(cols), int(rows)):
        raise ValueError(problem)
    return int(cols), int(rows)


def tile_regions(image_size: tuple[int, int], grid: TileGrid) -> list[tuple[int, int, int, int]]:
    """The tiles of an image of ``image_size`` (width, height), row by row: ``(left, top, right, bottom)``
    in pixels. Neighbours share ``grid.overlap`` of a tile, so a subject up to that share of a tile wide
    lies whole in one of them; the first and last tiles of a row or column touch the image's edges."""
    width, height = image_size
    tile_w = width / (grid.cols - (grid.cols - 1) * grid.overlap)
    tile_h = height / (grid.rows - (grid.rows - 1) * grid.overlap)
    if grid.is_square:
        tile_w = tile_h = max(tile_w, tile_h)
    columns, rows = _spans(width, tile_w, grid.cols), _spans(height, tile_h, grid.rows)
    return [(left, top, right, bottom) for top, bottom in rows for left, right in columns]


def _spans(length: int, size: float, count: int) -> list[tuple[int, int]]:
    size_px = min(length, max(1, math.ceil(size)))
    if count == 1:
        return [((length - size_px) // 2, (length - size_px) // 2 + size_px)]
    starts = [math.floor(k * (length - size_px) / (count - 1) + 0.5) for k in range(count)]
    return [(start, start + size_px) for start in starts]


def from_tile(box: Box, region: tuple[int, int, int, int], image_size: tuple[int, int]) -> Box:
    """``box``, relative to the tile ``region`` (left, top, right, bottom px), relative to the whole image."""
    left, top, right, bottom = region
    width, height = image_size
    return Box((left + box.left * (right - left)) / width, (top + box.top * (bottom - top)) / height,
               (left + box.right * (right - left)) / width, (top + box.bottom * (bottom - top)) / height)


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes: 1 for the same box, 0 for boxes that do not overlap."""
    width = min(a.right, b.right) - max(a.left, b.left)
    height = min(a.bottom, b.bottom) - max(a.top, b.top)
    if width <= 0 or height <= 0:
        return 0.0
    overlap = width * height
    return overlap / (area(a) + area(b) - overlap)


def area(box: Box) -> float:
    return max(box.right - box.left, 0.0) * max(box.bottom - box.top, 0.0)


def suppress(detections, min_iou: float = DEFAULT_MERGE_IOU) -> tuple[Detection, ...]:
    """Non-maximum suppression per label: best first, each detection is kept unless it overlaps one already
    kept of the same label by ``min_iou`` or more (IoU). Boxes of different labels never merge."""
    kept: list[Detection] = []
    for detection in sorted(detections, key=lambda d: d.score, reverse=True):
        if all(k.label_id != detection.label_id or iou(k.box, detection.box) < min_iou for k in kept):
            kept.append(detection)
    return tuple(kept)
