"""Camera pixel formats to RGB, and the area average that scales a whole frame to the model's size.

``area_average`` is how every camera without an ISP-made ``lores`` stream makes one: the replay
camera from its photos, and single-stream cameras (USB webcams, libcamera's virtual camera) from
``main``. It is Pillow's BOX filter: each pixel of the frame counts once, in the output pixel whose
box holds its centre, and each output pixel is the mean of its pixels (enlarging, an output pixel
takes the pixel its centre falls in).

YUV frames are averaged plane by plane, with ``area_mean``: the exact means of the same boxes
(Pillow's own arithmetic, done the same way here, decides a centre that lies on an edge), unrounded,
converted to RGB at the model's size. Converting 2 million pixels first would cost far more. Chroma
is averaged over the luma's boxes, each sample counting once for each luma pixel it covers, so the
result is the average of the RGB frame but for rounding, and for the pixels whose YUV lies outside
RGB after chroma subsampling (at sharp saturated edges), which converting first clips one by one and
this clips only as means.

Formats and array shapes are picamera2's (``CompletedRequest.make_array``):

* ``BGR888``, ``RGB888``: (h, w, 3), [R, G, B] and [B, G, R] in memory (libcamera names packed RGB by
  its 32-bit word); ``XBGR8888``, ``XRGB8888``: (h, w, 4) likewise, with a fourth byte.
* ``YUV420``, ``YVU420``: (h * 3 / 2, stride): h rows of Y, then the U and V planes (V and U), each
  h / 2 rows of stride / 2 bytes, so two chroma rows share one array row.
* ``NV12``, ``NV21``: (h * 3 / 2, w): h rows of Y, then h / 2 rows of interleaved U, V (V, U).
* ``YUYV``, ``YVYU``, ``UYVY``, ``VYUY``: (h, stride / 2, 2): 4:2:2, the bytes of each pixel pair in
  the order the name gives.
* ``MJPEG``: (h, w, 3) RGB, or (h, w) grey: make_array has already decoded it with Pillow.
"""

from __future__ import annotations

import math

import sys
from functools import lru_cache

import numpy as np
from PIL import Image

from appliance.errors import CameraError

# Indexes of R, G, B in each packed RGB format.
RGB_CHANNELS = {"BGR888": [0, 1, 2], "RGB888": [2, 1, 0], "XBGR8888": [0, 1, 2], "XRGB8888": [2, 1, 0]}
# Where Y, U and V sit: planar 4:2:0, semi-planar 4:2:0 (chroma interleaved), packed 4:2:2 (byte order).
_PLANAR = {"YUV420": "UV", "YVU420": "VU"}
_SEMI_PLANAR = {"NV12": "UV", "NV21": "VU"}
_PACKED = {"YUYV": "YUYV", "YVYU": "YVYU", "UYVY": "UYVY", "VYUY": "VYUY"}
FORMATS = (*RGB_CHANNELS, *_PLANAR, *_SEMI_PLANAR, *_PACKED, "MJPEG")
KR_KB = {"Rec601": (0.299, 0.114), "Rec709": (0.2126, 0.0722), "Rec2020": (0.2627, 0.0593)}


def ycbcr_of(*colour_spaces) -> tuple[str, bool]:
    """The YCbCr matrix (Rec601, Rec709, Rec2020) and whether it is full range, from the first libcamera
    ColorSpace that names one; Rec601 at studio levels (16-235) when none does."""
    for colour_space in colour_spaces:
        encoding = str(getattr(colour_space, "ycbcrEncoding", ""))
        for name in KR_KB:
            if name in encoding:
                return name, "Full" in str(getattr(colour_space, "range", ""))
    return "Rec601", False


# --- The area average ------------------------------------------------------------------------------

@lru_cache(maxsize=64)
def _bins(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Each output pixel's first input pixel and how many it averages, along one axis: the pixels
    Pillow's BOX filter weighs for it (libImaging/Resample.c, precompute_coeffs, its double arithmetic
    done the same way here, so that even a centre on an edge falls where Pillow puts it)."""
    scale = n_in / n_out
    filter_scale = max(scale, 1.0)
    support = 0.5 * filter_scale
    centre = (np.arange(n_out) + 0.5) * scale
    first = np.maximum((centre - support + 0.5).astype(np.intp), 0)  # C's (int): towards zero
    last = np.minimum((centre + support + 0.5).astype(np.intp), n_in)
    x = first[:, None] + np.arange(int(np.ceil(support)) * 2 + 1)
    position = ((x - centre[:, None]) + 0.5) * (1.0 / filter_scale)
    inside = (x < last[:, None]) & (position > -0.5) & (position <= 0.5)
    return x[np.arange(n_out), inside.argmax(axis=1)], inside.sum(axis=1)


@lru_cache(maxsize=64)
def _row_order(n_in: int, n_out: int) -> tuple[np.ndarray, list[int], np.ndarray]:
    """Output rows ordered by how many input rows they sum, most first (so the rows that have a k-th
    input row are a prefix); how many have each; and the order's inverse."""
    starts, counts = _bins(n_in, n_out)
    order = np.argsort(-counts, kind="stable")
    return starts[order], [int((counts > k).sum()) for k in range(int(counts.max()))], np.argsort(order)


@lru_cache(maxsize=64)
def _column_taps(columns: int, grid_columns: int, n_out: int, grid_rows: int, rows_out: int, dtype) -> list:
    """The column pass's reads: (flat indexes into the row sums, weight of each or None when all are
    1), one per column an output pixel may add, output rows in their own order (the row pass leaves
    them in ``_row_order``'s). On a grid twice as wide as the array (chroma on the luma's boxes), a
    column inside a box counts twice and a column half inside it once."""
    starts, counts = _bins(grid_columns, n_out)
    if columns == grid_columns:
        firsts, weights = starts, [(counts > k).astype(np.intp) for k in range(int(counts.max()))]
    else:
        ends = starts + counts
        firsts = starts // 2
        # Chroma column firsts + k covers luma columns 2(firsts + k) and 2(firsts + k) + 1.
        weights = [np.clip(np.minimum(ends, 2 * (firsts + k) + 2) - np.maximum(starts, 2 * (firsts + k)), 0, 2)
                   for k in range((int(counts.max()) + 3) // 2)]
    where_rows = _row_order(grid_rows, rows_out)[2]  # where each output row is in the row pass's order
    taps = []
    for k, weight in enumerate(weights):
        if weight.any():
            index = np.minimum(where_rows[:, None] * columns + (firsts + k)[None, :], rows_out * columns - 1)
            taps.append((index.reshape(-1), None if (weight == 1).all() else np.tile(weight, rows_out).astype(dtype)))
    return taps


@lru_cache(maxsize=64)
def _counts(rows: int, columns: int, size: tuple[int, int]) -> np.ndarray:
    """How many pixels each output pixel averages, (height, width) as float64."""
    return np.multiply.outer(_bins(rows, size[1])[1], _bins(columns, size[0])[1]).astype(np.float64)


def _area_sums(array: np.ndarray, size: tuple[int, int], grid: tuple[int, int]) -> list[np.ndarray]:
    """The exact sum of each output pixel's input pixels: one (height, width) array per channel, of
    uint16 or uint32.

    ``grid`` (rows, columns) is the pixel grid the boxes are drawn on: ``array``'s own, or, for chroma
    subsampled 2:1, the luma's, each chroma sample counting once for each luma pixel it covers."""
    width, height = size
    rows, columns = grid
    row_step = rows // array.shape[0]
    channels = array.shape[2] if array.ndim == 3 else 1
    row_counts, column_counts = _bins(rows, height)[1], _bins(columns, width)[1]
    dtype = np.uint16 if int(row_counts.max()) * int(column_counts.max()) * 255 < 2**16 else np.uint32
    # Rows: the rows every output row has are gathered into one block and summed there (each output row
    # in cache); the output rows are ordered so that those with one more input row are a prefix, which
    # gets it in one slice. The column pass reads them back in their own order.
    starts, having, _ = _row_order(rows, height)
    common = having.count(height)
    block = array[((starts[:, None] + np.arange(common)) // row_step).reshape(-1)]
    sums = np.add.reduce(block.reshape((height, common) + array.shape[1:]), axis=1, dtype=dtype)
    for k, count in enumerate(having[common:], common):
        np.add(sums[:count], array[(starts[:count] + k) // row_step], out=sums[:count], dtype=dtype)
    # A pair of 16-bit sums (chroma's U and V) packs into one 32-bit number, and adding those never
    # carries from one into the other: the column pass then treats the pair as one channel.
    is_packed = channels == 2 and dtype == np.uint16 and sys.byteorder == "little"
    if is_packed:
        sums, dtype, channels = sums.view(np.uint32), np.uint32, 1
    # Columns: each output pixel adds its columns of the row sums, read one column of each at a time
    # (a few reads of height x width values from row sums that stay in cache).
    flat = sums.reshape(-1)
    planes = []
    for channel in range(channels):
        total = None
        for index, weights in _column_taps(array.shape[1], columns, width, rows, height, dtype):
            tap = flat.take(index * channels + channel if channels > 1 else index)
            if weights is not None:
                tap *= weights
            total = tap if total is None else np.add(total, tap, out=total)
        planes.append(total.reshape(height, width))
    if is_packed:
        planes = [planes[0] & 0xFFFF, planes[0] >> 16]
    return planes


def area_mean(array: np.ndarray, size: tuple[int, int], grid: tuple[int, int] | None = None) -> np.ndarray:
    """``array`` (rows, columns[, channels]) of uint8 averaged to ``size`` (width, height): the exact,
    unrounded (float64) means of ``area_average``'s boxes. ``grid`` (rows, columns), twice ``array``'s
    along an axis, averages subsampled chroma over the luma's boxes, as if each sample were repeated to
    fill its luma pixels (see ``_area_sums``)."""
    grid = tuple(grid or array.shape[:2])
    counts = _counts(grid[0], grid[1], tuple(size))
    means = [plane / counts for plane in _area_sums(array, tuple(size), grid)]
    return np.stack(means, axis=-1) if array.ndim == 3 else means[0]


def area_average(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``array`` (rows, columns) or (rows, columns, 3) of uint8 averaged to ``size`` (width, height),
    uint8: Pillow's BOX filter, which the replay camera has always scaled photos with."""
    return np.asarray(Image.fromarray(np.ascontiguousarray(array)).resize(tuple(size), Image.Resampling.BOX))


_WORTH_CUTTING = 1.25  # a square this much longer than the image along an axis is averaged only where it is in it


def crop_to_input(image: np.ndarray, box, size: tuple[int, int], margin: float | None = None) -> np.ndarray:
    """``area_average(crop_square(image, box, margin), size)`` without making the padded square: a subject
    that fills the frame has a square far larger than the image (1920 px a side on a 1920x1080 frame), and
    averaging its black padding too cost more than classifying the crop. Only the part of the square in
    the image is averaged, each output pixel from the same area of it (Pillow's BOX filter with a
    fractional source box), onto black, in half the time: the same crop, a few pixels apart where Pillow
    rounds a window's edge the other way (tests/test_crops.py)."""
    from appliance.pipeline.detections import DEFAULT_MARGIN, square_region

    height, width = image.shape[:2]
    left, top, side = square_region(box, (width, height), DEFAULT_MARGIN if margin is None else margin)
    cols, rows = size
    per_x, per_y = side / cols, side / rows
    # The output pixels that cover some of the image, and the source area they cover; along an axis where
    # the square is not much longer than the image, all of them (padding a little costs little, and keeps
    # Pillow's windows exactly where they fall on the whole square).
    k0x, k1x = max(0, math.floor(-left / per_x)), min(cols, math.ceil((width - left) / per_x))
    k0y, k1y = max(0, math.floor(-top / per_y)), min(rows, math.ceil((height - top) / per_y))
    if side <= _WORTH_CUTTING * width:
        k0x, k1x = 0, cols
    if side <= _WORTH_CUTTING * height:
        k0y, k1y = 0, rows
    out = np.zeros((rows, cols) + image.shape[2:], np.uint8)
    if k1x <= k0x or k1y <= k0y:
        return out
    sx0, sx1, sy0, sy1 = left + k0x * per_x, left + k1x * per_x, top + k0y * per_y, top + k1y * per_y
    ix0, iy0 = math.floor(max(sx0, 0)), math.floor(max(sy0, 0))
    ix1, iy1 = math.ceil(min(sx1, width)), math.ceil(min(sy1, height))
    part = image[iy0:iy1, ix0:ix1]
    # An output pixel straddling the image's edge averages some padding too: just that much of it.
    pad_l, pad_t = max(0, math.ceil(-sx0)), max(0, math.ceil(-sy0))
    pad_r, pad_b = max(0, math.ceil(sx1 - width)), max(0, math.ceil(sy1 - height))
    if pad_l or pad_t or pad_r or pad_b:
        part = np.pad(part, ((pad_t, pad_b), (pad_l, pad_r)) + ((0, 0),) * (image.ndim - 2))
    ox, oy = ix0 - pad_l, iy0 - pad_t
    scaled = Image.fromarray(np.ascontiguousarray(part)).resize(
        (k1x - k0x, k1y - k0y), Image.Resampling.BOX, box=(sx0 - ox, sy0 - oy, sx1 - ox, sy1 - oy))
    out[k0y:k1y, k0x:k1x] = np.asarray(scaled)
    return out


# --- Formats to RGB --------------------------------------------------------------------------------

def yuv_to_rgb(y, u, v, encoding: str = "Rec601", full_range: bool = False) -> np.ndarray:
    """RGB uint8 (h, w, 3) from Y, U (Cb) and V (Cr) planes; chroma at half Y's width (and height) is
    repeated to fill it. ``encoding`` is the YCbCr matrix, ``full_range`` false for video's 16-235
    levels and true for JPEG's 0-255."""
    kr, kb = KR_KB[encoding]
    kg = 1.0 - kr - kb
    luma, chroma, black = (1.0, 1.0, 0.0) if full_range else (255.0 / 219.0, 255.0 / 224.0, 16.0)
    y = np.asarray(y, np.float32) * np.float32(luma)
    y -= black * luma
    u, v = (_fill(np.asarray(c, np.float32), y.shape) - np.float32(128.0) for c in (u, v))
    # R = Y' + 2(1 - kr) V', B = Y' + 2(1 - kb) U', G = Y' - (2 kb (1 - kb) U' + 2 kr (1 - kr) V') / kg,
    # planes first (contiguous), interleaved once at the end.
    rgb = np.empty((3,) + y.shape, np.float32)
    np.multiply(v, 2.0 * (1.0 - kr) * chroma, out=rgb[0])
    np.multiply(u, 2.0 * (1.0 - kb) * chroma, out=rgb[2])
    np.multiply(u, -2.0 * kb * (1.0 - kb) * chroma / kg, out=rgb[1])
    rgb[1] -= v * np.float32(2.0 * kr * (1.0 - kr) * chroma / kg)
    rgb += y
    np.clip(rgb, 0.0, 255.0, out=rgb)
    return np.ascontiguousarray(np.rint(rgb, out=rgb).astype(np.uint8).transpose(1, 2, 0))


def _fill(chroma: np.ndarray, shape) -> np.ndarray:
    """Subsampled chroma repeated to the luma's shape."""
    if chroma.shape[0] != shape[0]:
        chroma = chroma.repeat(2, axis=0)[:shape[0]]
    if chroma.shape[1] != shape[1]:
        chroma = chroma.repeat(2, axis=1)[:, :shape[1]]
    return chroma


def yuv_planes(array: np.ndarray, fmt: str, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The Y plane (h, w) and the chroma (h or h / 2, w / 2, 2) in U, V order of a YUV ``array`` shaped as
    picamera2 returns it (see above): views, but for planar formats' chroma."""
    width, height = size
    if fmt in _PLANAR:
        stride = array.shape[1]
        flat = array.reshape(-1)
        c_rows, c_stride = height // 2, stride // 2
        y = flat[:height * stride].reshape(height, stride)[:, :width]
        chroma = np.stack([flat[height * stride + i * c_rows * c_stride:][:c_rows * c_stride]
                           .reshape(c_rows, c_stride)[:, :width // 2] for i in (0, 1)], axis=-1)
        return y, chroma if _PLANAR[fmt] == "UV" else chroma[..., ::-1]
    if fmt in _SEMI_PLANAR:
        chroma = array[height:height + height // 2, :width].reshape(height // 2, width // 2, 2)
        return array[:height, :width], chroma if _SEMI_PLANAR[fmt] == "UV" else chroma[..., ::-1]
    if fmt in _PACKED:
        order = _PACKED[fmt]  # the bytes of each pair of pixels, e.g. YUYV: Y0 U Y1 V
        pairs = array[:, :width].reshape(height, width // 2, 4)
        u, v = order.index("U"), order.index("V")
        chroma = pairs[..., min(u, v)::2]
        return pairs.reshape(height, width, 2)[..., order.index("Y") % 2], chroma if u < v else chroma[..., ::-1]
    raise CameraError(f"the camera delivers {fmt}, which this appliance cannot convert to RGB (it reads "
                      f"{', '.join(FORMATS)})")


def to_rgb(array: np.ndarray, fmt: str, size: tuple[int, int], ycbcr=("Rec601", False)) -> np.ndarray:
    """The whole frame as RGB uint8 (h, w, 3); ``ycbcr`` is ``ycbcr_of``'s answer for YUV formats. It shares
    no memory with ``array`` unless ``array`` already is RGB (BGR888: make_array's copy is used as it is)."""
    if fmt in RGB_CHANNELS:
        channels = RGB_CHANNELS[fmt]
        if channels == [0, 1, 2] and array.shape[2] == 3:
            return np.ascontiguousarray(array, dtype=np.uint8)
        return np.ascontiguousarray(array[..., channels], dtype=np.uint8)
    if fmt == "MJPEG":  # decoded by Pillow: RGB, or grey from a grey JPEG
        return np.array(np.stack([array] * 3, axis=-1) if array.ndim == 2 else array, np.uint8)
    y, chroma = yuv_planes(array, fmt, size)
    return yuv_to_rgb(y, chroma[..., 0], chroma[..., 1], *ycbcr)


def lores_of(array: np.ndarray, fmt: str, size: tuple[int, int], lores_size: tuple[int, int],
             ycbcr=("Rec601", False)) -> np.ndarray:
    """The whole frame area-averaged to ``lores_size`` as RGB uint8: RGB formats are averaged as they
    are (exactly as the replay camera averages a photo); YUV ones plane by plane, then converted."""
    if fmt in RGB_CHANNELS:  # averaging commutes with the order of the channels: reorder the small image
        return area_average(array[..., :3], lores_size)[..., RGB_CHANNELS[fmt]]
    if fmt == "MJPEG":
        return area_average(array if array.ndim == 3 else to_rgb(array, fmt, size), lores_size)
    y, chroma = yuv_planes(array, fmt, size)
    counts = _counts(y.shape[0], y.shape[1], tuple(lores_size))
    [y_sum], (u_sum, v_sum) = _area_sums(y, tuple(lores_size), y.shape), _area_sums(chroma, tuple(lores_size), y.shape)
    return yuv_to_rgb(y_sum / counts, u_sum / counts, v_sum / counts, *ycbcr)
