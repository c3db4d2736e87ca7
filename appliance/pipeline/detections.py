"""Detections and their crops: the detector's boxes as plain values, and each box cut from the main image.

Boxes are relative to the frame (0 at the left and top edges, 1 at the right and bottom), so a box the
detector found on its small copy of a frame maps onto the full-resolution main image of the same frame,
whatever its size. ``crop_square`` cuts that box out of the main image with a margin and squared the way
a classifier expects its input (the short side grown, never the subject squashed), ready to be
area-averaged to the classifier's input size. Pure: no I/O, nothing but numpy.

Tiles are for subjects too small for the detector on the whole frame (a 300x300 SSD misses a bird a
seventh of a camera frame wide): ``tile_regions`` cuts the main image into a grid of overlapping tiles,
``from_tile`` maps a box found on a tile back onto the frame, ``is_cut`` tells a box that a tile's edge
cut off, and ``suppress`` makes what the tiles and the whole frame found of one subject one detection.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

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

# Each tile costs an inference a frame (4x4 and the whole frame: 17), and a 4x4 tile of a 1080p frame is about
# 390 px high with the default overlap (270 px without): smaller tiles would only be enlarged to the SSD's input.
MAX_TILES = 16
# A bird 15 % of the frame wide (the smallest the tiles are asked to find; the whole frame misses it) lies whole
# in a tile wherever it is. A larger one is seen whole by the whole frame or a tile; suppress drops the parts of
# it that tiles cut.
DEFAULT_OVERLAP = 0.15
DEFAULT_MERGE_IOU = 0.5  # boxes of one label overlapping this much (IoU) are one subject: torchvision's and SAHI's
CUT_EDGE = 0.02  # of a tile (6 px of a 300x300 input): a box this near an edge the tile shares with another is cut


@dataclass(frozen=True)
class TileGrid:
    """How a frame is cut for the detector: ``cols`` × ``rows`` tiles, and the whole frame too if
    ``includes_whole_frame`` (for the subjects too big for a tile).

    Neighbouring tiles share ``overlap`` of the frame's width (between columns) and height (between
    rows), so a subject up to that share of the frame wide and tall lies whole in at least one tile,
    wherever it is. A tile has the frame's aspect ratio, not a square's, and is squashed to the detector's
    input as the whole frame is (the SSD was trained on images squashed to 300x300): on the composites of
    tests/test_tiled_detection.py, at 1600x1200 and 1920x1080, square tiles found fewer small birds overall.
    """

    cols: int
    rows: int
    overlap: float = DEFAULT_OVERLAP
    includes_whole_frame: bool = True

    def __post_init__(self):
        if problem := grid_problem(self.cols, self.rows):
            raise ValueError(problem)
        if not 0.0 <= self.overlap <= 0.5:
            raise ValueError(f"a tile overlap of {self.overlap!r}: give a share of the frame from 0 to 0.5")

    @property
    def inferences(self) -> int:
        """How many times the detector runs on a frame."""
        return self.cols * self.rows + self.includes_whole_frame


def grid_problem(cols: int, rows: int) -> str | None:
    """What is wrong with a grid of ``cols`` × ``rows`` tiles, in words for a person, or None."""
    if cols < 1 or rows < 1:
        return f"{cols}x{rows} has no tiles: give 1 or more columns and rows, such as 3x2"
    if cols * rows == 1:
        return "1x1 is the whole frame, which the detector sees without tiles: give 2 tiles or more, such as 2x2"
    if cols * rows > MAX_TILES:
        return (f"{cols}x{rows} is {cols * rows} tiles, more than {MAX_TILES}: each costs an inference a frame, "
                "and smaller tiles than 4x4 add nothing for a 300x300 detector")
    return None


def parse_grid(text: str) -> tuple[int, int]:
    """``(cols, rows)`` from ``COLSxROWS``, such as ``3x2``; a ValueError that says what is wrong otherwise."""
    cols, x, rows = text.strip().lower().partition("x")
    if not (x and cols.strip().isdigit() and rows.strip().isdigit()):
        raise ValueError(f"{text!r} is not a grid of tiles: give COLSxROWS, such as 3x2")
    if problem := grid_problem(int(cols), int(rows)):
        raise ValueError(problem)
    return int(cols), int(rows)


def tile_regions(image_size: tuple[int, int], grid: TileGrid) -> list[tuple[int, int, int, int]]:
    """The tiles of an image of ``image_size`` (width, height), row by row, as ``(left, top, right, bottom)``
    pixels: the first and last of a row (column) touch the image's edges, neighbours overlap by
    ``grid.overlap`` of the image's width (height)."""
    width, height = image_size
    columns, rows = _spans(width, grid.cols, grid.overlap), _spans(height, grid.rows, grid.overlap)
    return [(left, top, right, bottom) for top, bottom in rows for left, right in columns]


def _spans(length: int, count: int, overlap: float) -> list[tuple[int, int]]:
    """``count`` runs of equal length spread over ``length`` pixels, each sharing ``overlap`` of it with the next."""
    if count == 1:
        return [(0, length)]
    size = min(length, math.ceil(length * (1 + (count - 1) * overlap) / count))
    starts = [math.floor(k * (length - size) / (count - 1) + 0.5) for k in range(count)]
    return [(start, start + size) for start in starts]


def from_tile(box: Box, region: tuple[int, int, int, int], image_size: tuple[int, int]) -> Box:
    """``box``, relative to the tile ``region`` (left, top, right, bottom pixels), relative to the whole image."""
    left, top, right, bottom = region
    width, height = image_size
    return Box((left + box.left * (right - left)) / width, (top + box.top * (bottom - top)) / height,
               (left + box.right * (right - left)) / width, (top + box.bottom * (bottom - top)) / height)


def is_cut(box: Box, region: tuple[int, int, int, int], image_size: tuple[int, int]) -> bool:
    """Whether ``box`` (relative to the tile ``region``) ends at an edge of the tile that is not the image's:
    its subject may go on beyond the tile, and the box show only a part of it."""
    left, top, right, bottom = region
    width, height = image_size
    return ((left > 0 and box.left < CUT_EDGE) or (top > 0 and box.top < CUT_EDGE)
            or (right < width and box.right > 1 - CUT_EDGE) or (bottom < height and box.bottom > 1 - CUT_EDGE))


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes: 1 for the same box, 0 for boxes that do not overlap."""
    overlap = _intersection(a, b)
    return overlap / (_area(a) + _area(b) - overlap) if overlap > 0 else 0.0


def suppress(detections: Sequence[Detection], cut: Sequence[bool] = (), min_iou: float = DEFAULT_MERGE_IOU,
             seen_in: Sequence[tuple[float, float] | None] = ()) -> tuple[Detection, ...]:
    """What several looks at a frame found (its tiles, the whole frame), one detection a subject.

    Non-maximum suppression per label: best first, a detection is dropped if it overlaps one already kept
    of the same label by ``min_iou`` (IoU) or more; labels never suppress each other. ``cut`` says, for
    each detection in order, whether a tile's edge cut its box (``is_cut``; none is, if not given). Such a
    box shows part of a subject that another tile or the whole frame may see whole (a bird across a seam,
    a big bird on every tile it spans), and its IoU with the whole one can be low: whole boxes are taken
    first, and a cut box is dropped if half of it (or of the kept box, if that is the smaller) lies in a
    kept box of its label. Two birds side by side overlap too little to merge.

    ``seen_in`` says, for each detection, the size (width, height, relative to the frame) of the tile it was
    found on, or None for the whole frame (all None, if not given). A tile can see no more than a part of a
    subject bigger than itself, and the SSD may box that part (a big bird's head) without the tile's edge
    cutting the box: after the cut ones, the whole frame's boxes are taken before the tiles', and a tile's
    box is dropped if half of it lies in a kept box of its label too wide or too tall for that tile.
    """
    is_cut_at, tile_at = dict(enumerate(cut)), dict(enumerate(seen_in))
    order = sorted(range(len(detections)),
                   key=lambda n: (is_cut_at.get(n, False), tile_at.get(n) is not None, -detections[n].score))
    kept: list[Detection] = []
    for n in order:
        detection = detections[n]
        same = [k.box for k in kept if k.label_id == detection.label_id]
        if any(iou(box, detection.box) >= min_iou for box in same):
            continue
        if is_cut_at.get(n, False) and any(_share_of_smaller(box, detection.box) >= 0.5 for box in same):
            continue
        tile = tile_at.get(n)
        if tile is not None and any(_share_of_smaller(box, detection.box) >= 0.5 and _is_bigger_than(box, tile)
                                    for box in same):
            continue
        kept.append(detection)
    return tuple(sorted(kept, key=lambda d: d.score, reverse=True))


def _is_bigger_than(box: Box, size: tuple[float, float]) -> bool:
    return box.right - box.left > size[0] or box.bottom - box.top > size[1]


def _share_of_smaller(a: Box, b: Box) -> float:
    """How much of the smaller of two boxes lies in the other: 1 when one holds the other."""
    smaller = min(_area(a), _area(b))
    return _intersection(a, b) / smaller if smaller > 0 else 0.0


def _intersection(a: Box, b: Box) -> float:
    return max(min(a.right, b.right) - max(a.left, b.left), 0.0) * max(min(a.bottom, b.bottom) - max(a.top, b.top), 0.0)


def _area(box: Box) -> float:
    return max(box.right - box.left, 0.0) * max(box.bottom - box.top, 0.0)
