"""Pixel formats to RGB and the area average (appliance/cameras/convert.py), against values computed
another way: a plain loop over each output pixel's box, Pillow's BOX filter and JPEG decoder, and
frames built by hand from the published YCbCr values of known colours."""

from __future__ import annotations

import io

import numpy as np
import pytest
from conftest import IMAGES
from fake_picamera2 import ColorSpace, pack_nv12, pack_yuv420, pack_yuyv, scale
from PIL import Image

from appliance.cameras.convert import (FORMATS, area_average, area_mean, lores_of, to_rgb, ycbcr_of, yuv_planes,
                                       yuv_to_rgb)
from appliance.cameras.replay import read_rgb, scale_like_isp
from appliance.errors import CameraError


def photo(name: str, size=None) -> np.ndarray:
    image = Image.open(IMAGES / name).convert("RGB")
    return np.asarray(image.resize(size, Image.Resampling.BILINEAR) if size else image)


def members(n_in: int, n_out: int) -> list[list[int]]:
    """The input pixels each output pixel's box holds, as Pillow's BOX filter decides them: an identity
    image in floating point, resized along one axis, is non-zero where a pixel counts."""
    identity = Image.fromarray(np.eye(n_in, dtype=np.float32), "F")
    weights = np.asarray(identity.resize((n_out, n_in), Image.Resampling.BOX))
    return [list(np.nonzero(weights[:, j])[0]) for j in range(n_out)]


def means_by_loop(array: np.ndarray, size) -> np.ndarray:
    """Each output pixel: the mean of its box's pixels, summed exactly, one output pixel at a time."""
    width, height = size
    rows, columns = array.shape[:2]
    out = np.zeros((height, width) + array.shape[2:])
    for i, ys in enumerate(members(rows, height)):
        for j, xs in enumerate(members(columns, width)):
            out[i, j] = array[np.ix_(ys, xs)].astype(np.int64).sum(axis=(0, 1)) / (len(ys) * len(xs))
    return out


# --- The area average ------------------------------------------------------------------------------

@pytest.mark.parametrize("shape, size", [((48, 64, 3), (20, 15)), ((45, 61), (17, 13)), ((30, 40, 2), (7, 9)),
                                         ((20, 30, 3), (45, 25)), ((40, 10), (7, 25)), ((64, 64, 3), (64, 64)),
                                         ((343, 200, 3), (224, 50)), ((1080, 40), (10, 224)), ((150, 151, 3), (67, 71))],
                         ids=["shrink", "odd-sizes", "two-channels", "enlarge", "mixed", "same", "centres-on-edges",
                              "1080-rows", "sizes-without-a-common-factor"])
def test_area_mean_is_the_exact_mean_of_the_pixels_of_each_box_of_pillows_box_filter(shape, size):
    array = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    assert np.array_equal(area_mean(array, size), means_by_loop(array, size))


@pytest.mark.parametrize("shape, size", [((480, 640, 3), (224, 224)), ((720, 1280, 3), (299, 299)),
                                         ((1080, 1920, 3), (96, 96)), ((343, 512, 3), (224, 224))])
def test_area_means_rounded_are_pillows_box_filter_but_for_rounding_once_not_twice(shape, size):
    # 1080 -> 96 and 343 -> 224 put pixel centres exactly on box edges, where Pillow's arithmetic decides.
    array = np.random.default_rng(2).integers(0, 256, shape, dtype=np.uint8)
    rounded = np.floor(area_mean(array, size) + 0.5)
    assert np.abs(rounded - area_average(array, size)).max() <= 1
    assert np.array_equal(area_average(array, size), np.asarray(Image.fromarray(array).resize(size, Image.BOX)))


def test_halving_averages_each_two_by_two_block():
    array = np.random.default_rng(3).integers(0, 256, (448, 448, 3), dtype=np.uint8)
    blocks = array.reshape(224, 2, 224, 2, 3).astype(np.int64).sum(axis=(1, 3))
    assert np.array_equal(area_mean(array, (224, 224)), blocks / 4)


@pytest.mark.parametrize("luma, chroma, size", [((1080, 64), (540, 32), (16, 224)), ((90, 120), (45, 60), (17, 13)),
                                                ((64, 96), (64, 48), (13, 17)), ((1080, 1920), (540, 960), (224, 224))],
                         ids=["4:2:0", "odd-chroma-rows", "4:2:2", "1080p"])
def test_chroma_averaged_over_the_luma_grid_is_the_mean_of_the_chroma_repeated_to_fill_it(luma, chroma, size):
    samples = np.random.default_rng(4).integers(0, 256, chroma + (2,), dtype=np.uint8)
    repeated = samples.repeat(luma[0] // chroma[0], axis=0).repeat(luma[1] // chroma[1], axis=1)
    expected = means_by_loop(repeated, size) if luma[1] < 200 else area_mean(repeated, size)
    assert np.array_equal(area_mean(samples, size, grid=luma), expected)


def test_the_replay_camera_scales_with_the_same_function():
    image = read_rgb(IMAGES / "parrot.jpg")
    assert np.array_equal(scale_like_isp(image, (224, 224)), area_average(np.asarray(image), (224, 224)))


# --- Formats to RGB ----------------------------------------------------------------------------------

# ITU-R BT.709 at studio levels: the published Y'CbCr of 100 % colour bars (SMPTE RP 219), and BT.601's.
BT709 = {(255, 0, 0): (63, 102, 240), (0, 255, 0): (173, 42, 26), (0, 0, 255): (32, 240, 118),
         (255, 255, 255): (235, 128, 128), (0, 0, 0): (16, 128, 128)}
BT601 = {(255, 0, 0): (81, 90, 240), (0, 255, 0): (145, 54, 34), (0, 0, 255): (41, 240, 110),
         (255, 255, 255): (235, 128, 128), (0, 0, 0): (16, 128, 128)}


def colour_frame(table):
    """Four 4x4 quadrants of known colours: the RGB truth and its Y, U, V planes, full resolution."""
    colours = list(table)[:4]
    rgb = np.zeros((8, 8, 3), np.uint8)
    yuv = np.zeros((8, 8, 3), np.uint8)
    for n, colour in enumerate(colours):
        rows, cols = slice(4 * (n // 2), 4 * (n // 2) + 4), slice(4 * (n % 2), 4 * (n % 2) + 4)
        rgb[rows, cols], yuv[rows, cols] = colour, table[colour]
    return rgb, yuv


@pytest.mark.parametrize("table, encoding", [(BT709, "Rec709"), (BT601, "Rec601")])
def test_nv12_built_by_hand_from_published_values_comes_out_as_those_colours(table, encoding):
    rgb, yuv = colour_frame(table)
    chroma = yuv[0::2, 0::2, 1:]  # each colour fills whole 2x2 blocks
    nv12 = np.concatenate([yuv[..., 0], chroma.reshape(4, 8)])
    nv21 = np.concatenate([yuv[..., 0], chroma[..., ::-1].reshape(4, 8)])
    for fmt, frame in (("NV12", nv12), ("NV21", nv21)):
        assert np.abs(to_rgb(frame, fmt, (8, 8), (encoding, False)).astype(int) - rgb).max() <= 2, fmt


@pytest.mark.parametrize("fmt, order", [("YUYV", "YUYV"), ("YVYU", "YVYU"), ("UYVY", "UYVY"), ("VYUY", "VYUY")])
def test_packed_422_built_by_hand_comes_out_as_its_colours_padding_ignored(fmt, order):
    rgb, yuv = colour_frame(BT709)
    pairs = {"Y": None, "U": yuv[:, 0::2, 1], "V": yuv[:, 0::2, 2]}
    row = np.full((8, 20), 0x5A, np.uint8)  # stride 20 bytes for 8 pixels: 4 bytes of padding
    for position, name in enumerate(order):
        values = (yuv[:, 0::2, 0] if position == order.index("Y") else yuv[:, 1::2, 0]) if name == "Y" else pairs[name]
        row[:, position:16:4] = values
    frame = row.reshape(8, 10, 2)  # as make_array shapes it: (h, stride // 2, 2)
    assert np.abs(to_rgb(frame, fmt, (8, 8), ("Rec709", False)).astype(int) - rgb).max() <= 2


def test_yuv420_to_rgb_matches_pillow_for_full_range_bt601_with_padded_rows():
    rgb = scale(photo("grace_hopper.bmp"), (120, 90))  # 90 rows: 45 chroma rows, an odd count
    yuv = pack_yuv420(rgb, ColorSpace.Sycc(), stride=128)
    y = yuv.reshape(-1)[:128 * 90].reshape(90, 128)[:, :120]
    chroma = yuv.reshape(-1)[128 * 90:].reshape(2, 45, 64)[:, :, :60].repeat(2, axis=1).repeat(2, axis=2)
    expected = np.asarray(Image.fromarray(np.dstack([y, chroma[0], chroma[1]]), "YCbCr").convert("RGB"))
    got = to_rgb(yuv, "YUV420", (120, 90), ("Rec601", True))
    assert got.shape == (90, 120, 3) and np.abs(got.astype(int) - expected).max() <= 2
    swapped = to_rgb(yuv, "YVU420", (120, 90), ("Rec601", True))  # the same bytes read as V before U
    assert np.abs(swapped.astype(int) - expected).max() > 50


@pytest.mark.parametrize("colour_space", [ColorSpace.Smpte170m(), ColorSpace.Rec709()], ids=["bt601", "bt709"])
def test_studio_range_yuv_converts_back_to_the_rgb_it_was_made_from(colour_space):
    blocks = np.random.default_rng(7).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    rgb = blocks.repeat(2, axis=0).repeat(2, axis=1)  # 2x2 blocks, so chroma subsampling loses nothing
    encoding = colour_space.ycbcrEncoding.name
    # Studio range has 219 luma levels for 256, so an 8-bit round trip is off by a few at most.
    for fmt, frame in (("YUV420", pack_yuv420(rgb, colour_space, stride=128)), ("NV12", pack_nv12(rgb, colour_space)),
                       ("YUYV", pack_yuyv(rgb, colour_space, stride=256))):
        assert np.abs(to_rgb(frame, fmt, (96, 64), (encoding, False)).astype(int) - rgb).max() <= 4, fmt


def test_packed_rgb_formats_are_read_in_libcameras_byte_order():
    pixel = np.array([[[10, 20, 30, 99]]], np.uint8)  # bytes in memory
    assert to_rgb(pixel[..., :3], "BGR888", (1, 1)).tolist() == [[[10, 20, 30]]]  # libcamera BGR888 = R, G, B
    assert to_rgb(pixel[..., :3], "RGB888", (1, 1)).tolist() == [[[30, 20, 10]]]
    assert to_rgb(pixel, "XBGR8888", (1, 1)).tolist() == [[[10, 20, 30]]]
    assert to_rgb(pixel, "XRGB8888", (1, 1)).tolist() == [[[30, 20, 10]]]


def test_mjpeg_is_pillows_decoding_of_the_jpeg_and_its_lores_the_area_average_of_that():
    out = io.BytesIO()
    Image.fromarray(photo("bird.bmp")).save(out, "JPEG", quality=90)
    decoded = np.array(Image.open(io.BytesIO(out.getvalue())))  # what picamera2's make_array returns for MJPEG
    assert np.array_equal(to_rgb(decoded, "MJPEG", decoded.shape[1::-1]), decoded)
    assert np.array_equal(lores_of(decoded, "MJPEG", decoded.shape[1::-1], (224, 224)),
                          area_average(decoded, (224, 224)))
    grey = np.array(Image.open(io.BytesIO(out.getvalue())).convert("L"))
    assert np.array_equal(to_rgb(grey, "MJPEG", grey.shape[::-1]), np.dstack([grey] * 3))


@pytest.mark.parametrize("fmt", ["BGR888", "RGB888", "XBGR8888"])
def test_lores_of_an_rgb_frame_is_exactly_the_area_average_of_its_rgb(fmt):
    rgb = photo("kite_and_cold.jpg", (640, 480))
    frame = {"BGR888": rgb, "RGB888": rgb[..., ::-1], "XBGR8888": np.dstack([rgb, np.zeros_like(rgb[..., :1])])}[fmt]
    assert np.array_equal(lores_of(np.ascontiguousarray(frame), fmt, (640, 480), (224, 224)),
                          area_average(rgb, (224, 224)))


@pytest.mark.parametrize("name", ["parrot.jpg", "bird.bmp", "kite_and_cold.jpg"])
@pytest.mark.parametrize("fmt", ["NV12", "YUYV", "YUV420"])
def test_yuv_lores_is_averaged_then_converted_and_matches_converting_first_but_for_rounding(fmt, name):
    rgb = photo(name, (640, 480))
    colour_space = ColorSpace.Rec709()
    frame = {"NV12": lambda: pack_nv12(rgb, colour_space), "YUYV": lambda: pack_yuyv(rgb, colour_space, 1344),
             "YUV420": lambda: pack_yuv420(rgb, colour_space, 640)}[fmt]()
    got = lores_of(frame, fmt, (640, 480), (224, 224), ("Rec709", False))
    y, chroma = yuv_planes(frame, fmt, (640, 480))
    means = area_mean(chroma, (224, 224), grid=y.shape)
    assert np.array_equal(got, yuv_to_rgb(area_mean(y, (224, 224)), means[..., 0], means[..., 1], "Rec709"))
    converted_first = area_average(to_rgb(frame, fmt, (640, 480), ("Rec709", False)), (224, 224))
    difference = np.abs(got.astype(int) - converted_first)
    # Differences come only from rounding (main's pixels, and Pillow's two passes), and from main's
    # pixels being clipped where saturated colours leave RGB's range after chroma subsampling;
    # averaged first, nothing is clipped but the mean.
    assert difference.mean() < 0.4 and np.mean(difference > 2) < 0.005
    truth = area_mean(rgb, (224, 224))  # the exact means of the RGB the frame was made from
    assert np.abs(got - truth).mean() <= np.abs(converted_first - truth).mean() + 0.05


def test_a_format_this_appliance_cannot_read_is_a_camera_error_naming_it():
    with pytest.raises(CameraError, match=r"delivers SRGGB10_CSI2P, which this appliance cannot convert to RGB "
                                          r"\(it reads .*NV12.*YUYV.*MJPEG"):
        to_rgb(np.zeros((4, 4), np.uint8), "SRGGB10_CSI2P", (4, 4))
    assert "H264" not in FORMATS


def test_the_colour_space_comes_from_libcameras_and_defaults_to_bt601_studio_range():
    assert ycbcr_of(None, ColorSpace.Rec709()) == ("Rec709", False)
    assert ycbcr_of(ColorSpace.Sycc()) == ("Rec601", True)
    assert ycbcr_of(None) == ("Rec601", False)
