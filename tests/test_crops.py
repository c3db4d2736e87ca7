"""Cutting a detector's box out of the main image: margin, squaring, edges and corners, on plain arrays."""

from __future__ import annotations

import random

import numpy as np
import pytest

from appliance.pipeline.detections import Box, crop_square, square_region

LANDSCAPE = (400, 300)  # width, height


def numbered(width, height):
    """An RGB image whose red and green channels are each pixel's row and column (mod 256)."""
    image = np.zeros((height, width, 3), np.uint8)
    image[..., 0] = (np.arange(height) % 256)[:, None]
    image[..., 1] = (np.arange(width) % 256)[None, :]
    image[..., 2] = 200
    return image


@pytest.mark.parametrize("box, margin, region", [
    # 80 x 60 px in the middle: the long side plus 10 % each side is 96; the short side grows to it
    (Box(0.4, 0.4, 0.6, 0.6), 0.1, (152, 102, 96)),
    # no margin: a wide box grows up and down alike
    (Box(0.25, 0.5, 0.5, 0.6), 0.0, (100, 115, 100)),
    # on the left edge: moved right to lie inside the image, not padded
    (Box(0.0, 0.4, 0.1, 0.6), 0.1, (0, 114, 72)),
    # in the bottom right corner: moved up and left
    (Box(0.9, 0.8, 1.0, 1.0), 0.1, (328, 228, 72)),
    # in the top left corner
    (Box(0.0, 0.0, 0.05, 0.1), 0.1, (0, 0, 36)),
    # as tall as the image: the square (360) is wider than the box but cannot be as tall inside the image:
    # it is centred on the rows, 30 rows of padding above and below
    (Box(0.3, 0.0, 0.7, 1.0), 0.1, (20, -30, 360)),
    # the whole image: never larger than its long side (400), padded top and bottom (letterboxed)
    (Box(0.0, 0.0, 1.0, 1.0), 0.1, (0, -50, 400)),
    # a box of no size still makes a crop of one pixel
    (Box(0.5, 0.5, 0.5, 0.5), 0.1, (200, 150, 1)),
])
def test_the_square_region_of_a_box_in_a_landscape_image(box, margin, region):
    assert square_region(box, LANDSCAPE, margin) == region


def test_a_portrait_image_is_padded_left_and_right_instead():
    assert square_region(Box(0.0, 0.0, 1.0, 1.0), (300, 400)) == (-50, 0, 400)
    assert square_region(Box(0.0, 0.3, 1.0, 0.7), (300, 400)) == (-30, 20, 360)


def test_a_crop_inside_the_image_is_the_square_at_full_resolution_and_a_view_of_it():
    image = numbered(*LANDSCAPE)
    crop = crop_square(image, Box(0.9, 0.8, 1.0, 1.0))
    assert crop.shape == (72, 72, 3)
    assert np.array_equal(crop, image[228:300, 328:400])
    assert np.shares_memory(crop, image)  # nothing copied for the classifier's resize to read


def test_a_crop_that_cannot_grow_inside_the_image_is_padded_with_black_evenly():
    image = numbered(*LANDSCAPE)
    crop = crop_square(image, Box(0.3, 0.0, 0.7, 1.0))
    assert crop.shape == (360, 360, 3)
    assert not crop[:30].any() and not crop[-30:].any()
    assert np.array_equal(crop[30:330], image[:, 20:380])


def test_an_odd_padding_puts_the_extra_row_first_and_fill_is_the_padding_value():
    image = numbered(200, 99)
    crop = crop_square(image, Box(0.0, 0.0, 1.0, 1.0), margin=0.0, fill=7)
    assert crop.shape == (200, 200, 3)
    assert (crop[:51] == 7).all() and (crop[150:] == 7).all()  # 101 rows of padding: 51 above, 50 below
    assert np.array_equal(crop[51:150], image)


def test_a_grey_image_is_cut_the_same_way():
    grey = numbered(*LANDSCAPE)[..., 1]
    assert np.array_equal(crop_square(grey, Box(0.0, 0.4, 0.1, 0.6)), grey[114:186, 0:72])
    assert crop_square(grey, Box(0.0, 0.0, 1.0, 1.0)).shape == (400, 400)


def test_any_box_gives_a_square_holding_the_box_and_inside_the_image_where_it_fits():
    rng = random.Random(15)
    for _ in range(500):
        width, height = rng.randint(1, 2000), rng.randint(1, 2000)
        x0, x1 = sorted(rng.random() for _ in range(2))
        y0, y1 = sorted(rng.random() for _ in range(2))
        left, top, side = square_region(Box(x0, y0, x1, y1), (width, height))
        assert 1 <= side <= max(width, height)
        for start, length, low, high in ((left, width, x0, x1), (top, height, y0, y1)):
            if side <= length:
                assert 0 <= start and start + side <= length  # inside: nothing padded along this axis
                if (high - low) * length * 1.2 <= side:  # the box with its margin fits: all of it is in
                    assert start <= low * length + 1 and high * length - 1 <= start + side
            else:
                assert start == (length - side) // 2  # centred, padded


# --- The crop at the classifier's input, without the padded square -----------------------------------------

def photo(name, size):
    from PIL import Image

    from conftest import IMAGES

    return np.asarray(Image.open(IMAGES / name).convert("RGB").resize(size))


@pytest.mark.parametrize("name, size, box", [
    ("bird.bmp", (1920, 1080), Box(0.014, 0.199, 0.979, 0.957)),    # the chickadee: a square far taller than the frame
    ("parrot.jpg", (1920, 1080), Box(0.145, 0.100, 0.922, 0.956)),  # the macaw
    ("parrot.jpg", (1600, 1200), Box(0.40, 0.40, 0.55, 0.60)),      # inside the frame: nothing padded
    ("hot_dog.jpg", (1600, 1200), Box(0.0, 0.0, 0.12, 0.2)),        # in a corner
    ("cat_720p.jpg", (640, 480), Box(0.9, 0.7, 1.0, 1.0)),          # on two edges
    ("bird.bmp", (333, 517), Box(0.05, 0.3, 0.95, 0.35)),           # portrait, odd sizes, a wide box
])
def test_crop_to_input_is_the_padded_square_area_averaged(name, size, box):
    """The same crop as averaging the whole padded square: identical where the square lies in the image or
    its scale works out the same; otherwise Pillow rounds a few windows' edges the other way (its window
    starts at (k + 0.5) x scale - support, rounded: scale from the part differs from scale from the square in
    the last bits), which moves a few pixels by some levels and leaves the crop as a whole the same."""
    from appliance.cameras.convert import area_average, crop_to_input

    image = photo(name, size)
    expected = area_average(crop_square(image, box), (224, 224)).astype(int)
    got = crop_to_input(image, box, (224, 224)).astype(int)
    assert got.shape == expected.shape == (224, 224, 3)
    differ = np.abs(got - expected)
    assert differ.mean() < 0.1 and (differ > 1).mean() < 0.01, (differ.mean(), (differ > 1).mean())
    left, top, side = square_region(box, size)
    if left >= 0 and top >= 0 and left + side <= size[0] and top + side <= size[1]:
        assert differ.max() == 0  # nothing padded: the very same pixels
