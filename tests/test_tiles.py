"""Tiles and merging what they found, on plain values: the grid, where its tiles lie, boxes mapped back to the
frame, IoU, and non-maximum suppression across tiles."""

from __future__ import annotations

import random

import pytest

from appliance.pipeline.detections import (MAX_TILES, Box, Detection, TileGrid, from_tile, iou, is_cut, parse_grid,
                                           suppress, tile_regions)


def bird(left, top, right, bottom, score=0.8, label="bird", label_id=16):
    return Detection(Box(left, top, right, bottom), label_id, label, score)


# --- the grid ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, grid", [("3x2", (3, 2)), ("2X2", (2, 2)), (" 4x4 ", (4, 4)), ("16x1", (16, 1)),
                                        ("1x2", (1, 2))])
def test_a_grid_reads_as_columns_by_rows(text, grid):
    assert parse_grid(text) == grid


@pytest.mark.parametrize("text, problem", [
    ("3", "'3' is not a grid of tiles: give COLSxROWS, such as 3x2"),
    ("3x", "'3x' is not a grid of tiles"),
    ("x2", "'x2' is not a grid of tiles"),
    ("3x2x1", "'3x2x1' is not a grid of tiles"),
    ("-1x2", "'-1x2' is not a grid of tiles"),
    ("2.5x2", "'2.5x2' is not a grid of tiles"),
    ("0x3", "0x3 has no tiles: give 1 or more columns and rows, such as 3x2"),
    ("1x1", "1x1 is the whole frame, which the detector sees without tiles: give 2 tiles or more"),
    ("5x4", "5x4 is 20 tiles, more than 16: each costs an inference a frame"),
])
def test_a_malformed_or_oversized_grid_says_what_is_wrong(text, problem):
    with pytest.raises(ValueError) as raised:
        parse_grid(text)
    assert str(raised.value).startswith(problem)


def test_a_grid_counts_its_inferences_and_refuses_what_parse_grid_refuses():
    assert TileGrid(3, 2).inferences == 7 and TileGrid(3, 2, includes_whole_frame=False).inferences == 6
    assert MAX_TILES == 16 and TileGrid(4, 4).inferences == 17
    for cols, rows in ((1, 1), (0, 2), (17, 1)):
        with pytest.raises(ValueError):
            TileGrid(cols, rows)
    with pytest.raises(ValueError, match=r"a tile overlap of 0.6: give a share of the frame from 0 to 0.5"):
        TileGrid(2, 2, overlap=0.6)


# --- where the tiles lie -------------------------------------------------------------------------------

def test_three_by_two_tiles_of_a_camera_frame_overlap_by_the_share_of_the_frame_asked():
    # 1600 wide: three tiles of 1600 * (1 + 2 * 0.15) / 3 = 694 px; 1200 high: two of 1200 * 1.15 / 2 = 690 px
    assert tile_regions((1600, 1200), TileGrid(3, 2, overlap=0.15)) == [
        (0, 0, 694, 690), (453, 0, 1147, 690), (906, 0, 1600, 690),
        (0, 510, 694, 1200), (453, 510, 1147, 1200), (906, 510, 1600, 1200)]


def test_without_overlap_the_tiles_are_the_plain_grid_and_one_row_is_the_full_height():
    assert tile_regions((1920, 1080), TileGrid(2, 1, overlap=0.0)) == [(0, 0, 960, 1080), (960, 0, 1920, 1080)]


def test_any_grid_covers_the_frame_and_a_subject_the_size_of_the_overlap_lies_whole_in_a_tile():
    rng = random.Random(15)
    for _ in range(300):
        width, height = rng.randint(300, 4000), rng.randint(300, 3000)
        cols, rows = rng.randint(1, 4), rng.randint(1, 4)
        if cols * rows == 1:
            continue
        grid = TileGrid(cols, rows, overlap=rng.choice((0.0, 0.1, 0.15, 0.25, 0.5)))
        tiles = tile_regions((width, height), grid)
        assert len(tiles) == cols * rows
        assert min(t[0] for t in tiles) == 0 and max(t[2] for t in tiles) == width
        assert min(t[1] for t in tiles) == 0 and max(t[3] for t in tiles) == height
        for _ in range(20):  # a subject as wide and as tall as the overlap allows, anywhere
            w, h = int(grid.overlap * width), int(grid.overlap * height)
            x, y = rng.randint(0, width - w), rng.randint(0, height - h)
            assert any(t[0] <= x and x + w <= t[2] and t[1] <= y and y + h <= t[3] for t in tiles), (grid, x, y)
        for spans in (sorted({(t[0], t[2]) for t in tiles}), sorted({(t[1], t[3]) for t in tiles})):
            assert all(after[0] <= before[1] for before, after in zip(spans, spans[1:]))  # no gap between tiles


def test_a_box_on_a_tile_maps_onto_the_whole_frame():
    assert from_tile(Box(0.0, 0.0, 0.5, 0.5), (800, 600, 1600, 1200), (1600, 1200)) == Box(0.5, 0.5, 0.75, 0.75)
    assert from_tile(Box(0.25, 0.5, 1.0, 1.0), (0, 510, 694, 1200), (1600, 1200)) == pytest.approx(
        Box(173.5 / 1600, 855 / 1200, 694 / 1600, 1.0))


def test_a_box_is_cut_where_it_ends_at_an_edge_a_tile_shares_with_the_rest_of_the_frame():
    size, left_tile, right_tile = (1600, 1200), (0, 0, 694, 690), (906, 510, 1600, 1200)
    assert is_cut(Box(0.5, 0.2, 0.995, 0.4), left_tile, size)  # at its right edge, inside the frame
    assert is_cut(Box(0.5, 0.5, 0.7, 1.0), left_tile, size)  # at its bottom edge, inside the frame
    assert not is_cut(Box(0.0, 0.0, 0.3, 0.3), left_tile, size)  # in the frame's top left corner: whole
    assert not is_cut(Box(0.5, 0.5, 1.0, 1.0), right_tile, size)  # in the frame's bottom right corner: whole
    assert is_cut(Box(0.01, 0.5, 0.3, 0.7), right_tile, size)
    assert not is_cut(Box(0.1, 0.1, 0.9, 0.9), right_tile, size)


# --- IoU and suppression -----------------------------------------------------------------------------------

@pytest.mark.parametrize("a, b, expected", [
    (Box(0.0, 0.0, 0.1, 0.1), Box(0.0, 0.0, 0.1, 0.1), 1.0),
    (Box(0.0, 0.0, 0.1, 0.1), Box(0.05, 0.0, 0.15, 0.1), 1 / 3),
    (Box(0.0, 0.0, 0.1, 0.1), Box(0.1, 0.0, 0.2, 0.1), 0.0),  # touching edges
    (Box(0.0, 0.0, 0.2, 0.2), Box(0.05, 0.05, 0.15, 0.15), 0.25),  # one inside the other
    (Box(0.3, 0.3, 0.3, 0.3), Box(0.3, 0.3, 0.3, 0.3), 0.0),  # no size
])
def test_iou(a, b, expected):
    assert iou(a, b) == pytest.approx(expected) and iou(b, a) == pytest.approx(expected)


def test_one_bird_seen_by_two_tiles_and_the_whole_frame_is_one_detection_the_best():
    seen = [bird(0.40, 0.40, 0.50, 0.50, 0.70), bird(0.41, 0.40, 0.50, 0.51, 0.80), bird(0.40, 0.39, 0.51, 0.50, 0.6)]
    assert suppress(seen) == (seen[1],)


def test_a_bird_across_a_seam_is_the_whole_box_not_the_parts_the_tiles_cut():
    """A bird from 0.30 to 0.45 across the seam of tiles ending at 0.37 and starting at 0.28: the left tile
    cuts it at 0.37, the right one sees it whole; the cut part scores higher, and overlaps the whole by IoU 0.47."""
    whole, part = bird(0.30, 0.50, 0.45, 0.60, 0.72), bird(0.30, 0.50, 0.37, 0.60, 0.79)
    assert iou(whole.box, part.box) < 0.5
    assert suppress([part, whole], cut=[True, False]) == (whole,)
    assert suppress([part, whole]) == (part, whole)  # what plain NMS keeps: two birds
    halves = [bird(0.30, 0.50, 0.40, 0.60, 0.79), bird(0.34, 0.50, 0.45, 0.60, 0.61)]  # no tile saw it whole
    assert suppress(halves, cut=[True, True]) == (halves[0],)


def test_a_big_bird_on_every_tile_it_spans_is_the_whole_frames_box():
    whole = bird(0.05, 0.05, 0.40, 0.95, 0.71)
    top, bottom = bird(0.08, 0.08, 0.36, 0.56, 0.78), bird(0.06, 0.43, 0.36, 0.90, 0.77)  # each cut by its tile
    assert iou(whole.box, top.box) < 0.5 and iou(whole.box, bottom.box) < 0.5
    assert suppress([top, bottom, whole], cut=[True, True, False]) == (whole,)


def test_two_birds_side_by_side_stay_two_even_on_a_seam():
    left, right = bird(0.30, 0.50, 0.40, 0.60, 0.80), bird(0.39, 0.50, 0.49, 0.60, 0.75)  # touching, overlapping 0.1
    assert suppress([left, right], cut=[True, True]) == (left, right)
    apart = [bird(0.1, 0.1, 0.2, 0.2), bird(0.7, 0.7, 0.8, 0.8, 0.9)]
    assert suppress(apart) == (apart[1], apart[0])  # best first


def test_a_small_bird_in_front_of_a_big_one_stays_unless_a_tile_cut_it():
    big, small = bird(0.2, 0.2, 0.6, 0.6, 0.8), bird(0.3, 0.3, 0.4, 0.4, 0.7)
    assert suppress([big, small]) == (big, small)
    assert suppress([big, small], cut=[False, True]) == (big,)


def test_different_labels_never_merge():
    same_place = [bird(0.3, 0.3, 0.5, 0.5, 0.8), bird(0.3, 0.3, 0.5, 0.5, 0.7, "kite", 38),
                  bird(0.3, 0.3, 0.4, 0.5, 0.6, "person", 1)]
    assert suppress(same_place, cut=[False, True, True]) == tuple(same_place)


def test_the_threshold_is_the_callers():
    a, b = bird(0.0, 0.0, 0.1, 0.1, 0.9), bird(0.05, 0.0, 0.15, 0.1, 0.8)  # IoU 1/3
    assert suppress([a, b]) == (a, b)
    assert suppress([a, b], min_iou=0.3) == (a,)


def test_a_part_of_a_big_bird_that_a_tile_boxed_whole_goes_with_the_whole_frames_box():
    """The chickadee photo on 2x2 tiles: the top-left tile (0.575 of the frame wide) boxes the bird's head,
    scoring higher than the whole frame's box of all of it, and no tile edge cuts the head's box."""
    whole, head = bird(0.014, 0.199, 0.979, 0.957, 0.770), bird(0.058, 0.227, 0.555, 0.560, 0.777)
    tile = (0.575, 0.575)
    assert suppress([head, whole], seen_in=[tile, None]) == (whole,)
    assert suppress([head, whole]) == (head, whole)  # without knowing where each was seen: two birds
    small_tile = bird(0.30, 0.30, 0.40, 0.40, 0.7)  # a small bird a tile saw, in front of a big bird that fits it
    big = bird(0.2, 0.2, 0.5, 0.5, 0.8)
    assert suppress([big, small_tile], seen_in=[None, tile]) == (big, small_tile)
