"""The replay camera: a folder of images played as camera frames.

It is the camera on laptops, in CI and in the image's boot test. Each image is scaled to the model's
input size the way a camera's ISP scales its ``lores`` stream — the whole field of view,
area-averaged (``convert.area_average``, the same function single-stream cameras make their lores
with), never nearest-neighbour, which changes what the model sees — and the original
full-resolution image is the frame's ``main``, area-averaged down to fit ``camera.still_size`` when
it is larger (as a camera's ``main`` stream is that size). A file that is not a readable image is
skipped with a warning naming it; a folder with no images at all is a ``CameraError``.

Photos are decoded within the memory of a 512 MB Pi Zero 2 W (``read_rgb``): a JPEG reduced by its
decoder (``draft``: DCT scaling by 1/2, 1/4 or 1/8) to no less than the size kept, so a 12000 x 9000
photo never exists at full size; other formats decode whole, so a file whose decode would pass
``max(MAX_DECODE_PIXELS, 4 x still_size)`` pixels (a decompression bomb: a 20000 x 20000 PNG is 50 KB
on disk and 400 MB decoded) is skipped, as Pillow's own check past 179 MP is. 16-bit images (PNG's
``I;16``) are scaled to 8 bits, not clipped.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from appliance.cameras import Camera
from appliance.cameras.convert import area_average
from appliance.config import CameraConfig
from appliance.errors import CameraError, ImageError
from appliance.pipeline.frames import ArrayImage, Frame

log = logging.getLogger(__name__)

# Scaled frames are cached so a looping replay does not decode every file again, up to this much
# memory (a Pi Zero 2 W has 512 MB); past it, files are decoded each time they are played.
LORES_CACHE_BYTES = 32 * 2**20
# The most pixels a photo may be decoded at (more when still_size needs it): 75 MB as RGB, held
# whole while it is scaled down, since only JPEG can be decoded reduced.
MAX_DECODE_PIXELS = 25_000_000
DEFAULT_MAIN_SIZE = CameraConfig().still_size
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I")
# EXIF orientation → the transpose that makes the image upright (as ImageOps.exif_transpose does).
_UPRIGHT = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
            5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_90}
_ORIENTATION = 0x0112


def read_rgb(path: str | Path, main_size: tuple[int, int] = DEFAULT_MAIN_SIZE) -> Image.Image:
    """An image file upright (EXIF orientation applied) in RGB, area-averaged down to fit ``main_size``
    (width, height, either way round) if it is larger; raises ``ImageError`` (an ``OSError``) naming
    the file if it is not a readable image or has too many pixels to decode (see the module's doc)."""
    limit = max(MAX_DECODE_PIXELS, 4 * main_size[0] * main_size[1])
    try:
        with Image.open(path) as image:
            size = fitted(image.size, main_size)
            if size != image.size:
                image.draft(None, size)  # JPEG: decode at 1/2, 1/4 or 1/8, still at least ``size``
            if image.width * image.height > limit:
                raise ImageError(f"{path}: too many pixels: {image.width}x{image.height} to decode, more than the "
                                 f"{limit} the camera decodes: scale the photo down or take it out of camera.replay_dir")
            orientation = image.getexif().get(_ORIENTATION, 1)
            image = _rgb(image)
    except ImageError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageError(f"{path}: too many pixels ({e}): scale the photo down or take it out of "
                         "camera.replay_dir") from None
    except Exception as e:  # a damaged or hostile file makes Pillow raise nearly anything (SyntaxError, EOFError, struct.error...)
        raise ImageError(f"{path}: not a readable image ({e})") from None
    if image.size != size:
        image = image.resize(size, Image.Resampling.BOX)
    if orientation in _UPRIGHT:
        image = image.transpose(_UPRIGHT[orientation])
    return image


def fitted(size: tuple[int, int], main_size: tuple[int, int]) -> tuple[int, int]:
    """``size`` scaled down (never up), aspect kept, to fit ``main_size`` turned to the same orientation."""
    long_px, short_px = max(main_size), min(main_size)
    width, height = size
    bound = (long_px, short_px) if width >= height else (short_px, long_px)
    scale = min(1.0, bound[0] / width, bound[1] / height)
    return (max(1, round(width * scale)), max(1, round(height * scale))) if scale < 1.0 else (width, height)


def _rgb(image: Image.Image) -> Image.Image:
    """A decoded copy of ``image`` in RGB; 16-bit grey scaled to 8 bits (Pillow's own convert clips it)."""
    if image.mode in _SIXTEEN_BIT:
        deep = np.asarray(image)
        if image.mode == "I":
            deep = np.clip(deep, 0, 65535)
        # round(v * 255 / 65535), in integers: 65535 is 255 x 257
        image = Image.fromarray(((deep.astype(np.uint32) + 128) // 257).astype(np.uint8))
    image.load()
    return image if image.mode == "RGB" else image.convert("RGB")


def scale_like_isp(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """The whole image area-averaged to ``size`` (width, height), as RGB ``uint8``."""
    return area_average(np.asarray(image), size)


@dataclass(eq=False)
class FileImage:
    """A replayed file's main image (the photo, at most ``main_size``), decoded only when a frame needs it
    (a keep, the detector's crops), then held by this handle: a file shown for several frames
    (``replay_repeat``) is decoded once for all of them."""

    path: Path
    main_size: tuple[int, int] = DEFAULT_MAIN_SIZE
    _decoded: np.ndarray | None = field(default=None, repr=False)

    def array(self) -> np.ndarray:
        if self._decoded is None:
            self._decoded = np.asarray(read_rgb(self.path, self.main_size))
        return self._decoded

    def detach(self) -> FileImage:
        return self


class ReplayCamera(Camera):
    """Plays image files (or in-memory frames) at ``fps`` frames per second; 0 means as fast as asked."""

    def __init__(self, lores_size, files=(), fps=5.0, loop=True, arrays=(), main_size=DEFAULT_MAIN_SIZE, repeat=1):
        super().__init__(lores_size)
        self.repeat = repeat  # frames each image is shown for
        self.files = [Path(f) for f in files]
        self.main_size = tuple(main_size)
        self.fps = fps
        self.loop = loop
        self.skipped: list[str] = []
        # (lores, main handle, source name); files are decoded lazily on the first pass and their
        # lores kept, so looping costs no decoding; main images stay on disk until a keep needs one.
        self._items = [(lores, ArrayImage(main), name) for lores, main, name in arrays]
        self._lores_cache: dict[Path, np.ndarray] = {}
        self._cached_bytes = 0

    @classmethod
    def from_config(cls, camera_config, lores_size, **options):
        return cls.from_folder(camera_config.replay_dir, lores_size, fps=camera_config.fps,
                               loop=camera_config.replay_loop, main_size=camera_config.still_size,
                               repeat=camera_config.replay_repeat, **options)

    @classmethod
    def from_folder(cls, folder, lores_size, fps=5.0, loop=True, main_size=DEFAULT_MAIN_SIZE, repeat=1):
        """A replay of every image file in ``folder``, in name order."""
        folder = Path(folder)
        if not folder.is_dir():
            raise CameraError(f"replay folder {folder} does not exist: set camera.replay_dir to a folder of images")
        files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
        return cls(lores_size, files=files, fps=fps, loop=loop, main_size=main_size, repeat=repeat)

    @classmethod
    def from_arrays(cls, frames, lores_size, fps=0.0, loop=True, repeat=1):
        """A replay of in-memory ``(lores, main, name)`` frames: no decoding at all (for benchmarks)."""
        return cls(lores_size, arrays=frames, fps=fps, loop=loop, repeat=repeat)

    def start(self) -> None:
        if not self.files and not self._items:
            raise CameraError("the replay camera has nothing to play: the folder holds no files")

    def describe(self) -> str:
        count = len(self.files) or len(self._items)
        held = f", each for {self.repeat} frames" if self.repeat > 1 else ""
        return f"replay: {count} images{held} at {self.fps or 'max'} fps{' (looping)' if self.loop else ''}"

    def frames(self) -> Iterator[Frame]:
        interval_s = 1.0 / self.fps if self.fps else 0.0
        next_s = time.monotonic()
        while not self._stopping.is_set():
            played = 0
            for lores, main, name in self._each_shown():
                if interval_s:
                    next_s += interval_s
                    delay_s = next_s - time.monotonic()
                    if delay_s > 0:
                        if self._stopping.wait(delay_s):
                            return
                    else:
                        next_s = time.monotonic()  # behind: do not burst to catch up
                if self._stopping.is_set():
                    return
                played += 1
                yield Frame(lores=lores, main=main, timestamp_s=time.monotonic(),
                            captured_at_s=time.time(), source=name)
            if not played:
                raise CameraError(f"the replay camera found no readable images among {len(self.skipped)} files "
                                  f"(skipped: {', '.join(self.skipped[:5])}): put photos in camera.replay_dir")
            if not self.loop:
                return

    def _each_shown(self):
        for item in self._each_item():
            for _ in range(self.repeat):
                yield item

    def _each_item(self):
        yield from self._items
        for path in list(self.files):
            lores = self._lores_cache.get(path)
            if lores is None:
                try:
                    lores = scale_like_isp(read_rgb(path, self.main_size), self.lores_size)
                except OSError as e:  # ImageError, or the file went away
                    log.warning("replay: skipping %s", e if isinstance(e, ImageError) else f"{path}: {e}")
                    self.skipped.append(path.name)
                    self.files.remove(path)
                    continue
                if self._cached_bytes + lores.nbytes <= LORES_CACHE_BYTES:
                    self._lores_cache[path] = lores
                    self._cached_bytes += lores.nbytes
            yield lores, FileImage(path, self.main_size), path.name

    def close(self) -> None:
        self.stop()
