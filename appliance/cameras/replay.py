"""The replay camera: a folder of images played as camera frames.

It is the camera on laptops, in CI and in the image's boot test. Each image is scaled to the model's
input size the way a camera's ISP scales its ``lores`` stream — the whole field of view,
area-averaged (``convert.area_average``, the same function single-stream cameras make their lores
with), never nearest-neighbour, which changes what the model sees — and the original
full-resolution image is the frame's ``main``. A file that is not a readable image is
skipped with a warning naming it; a folder with no images at all is a ``CameraError``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from appliance.cameras import Camera
from appliance.cameras.convert import area_average
from appliance.errors import CameraError
from appliance.pipeline.frames import ArrayImage, Frame

log = logging.getLogger(__name__)

# Scaled frames are cached so a looping replay does not decode every file again, up to this much
# memory (a Pi Zero 2 W has 512 MB); past it, files are decoded each time they are played.
LORES_CACHE_BYTES = 32 * 2**20


def read_rgb(path: Path) -> Image.Image:
    """Open an image file upright (EXIF orientation applied) in RGB; raises ``OSError`` if unreadable."""
    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image)
        return image.convert("RGB")


def scale_like_isp(image: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """The whole image area-averaged to ``size`` (width, height), as RGB ``uint8``."""
    return area_average(np.asarray(image), size)


@dataclass(frozen=True)
class FileImage:
    """A replayed file's full-resolution image, decoded only when a frame is kept."""

    path: Path

    def array(self) -> np.ndarray:
        return np.asarray(read_rgb(self.path))

    def detach(self) -> FileImage:
        return self


class ReplayCamera(Camera):
    """Plays image files (or in-memory frames) at ``fps`` frames per second; 0 means as fast as asked."""

    def __init__(self, lores_size, files=(), fps=5.0, loop=True, arrays=()):
        super().__init__(lores_size)
        self.files = [Path(f) for f in files]
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
                               loop=camera_config.replay_loop, **options)

    @classmethod
    def from_folder(cls, folder, lores_size, fps=5.0, loop=True):
        """A replay of every image file in ``folder``, in name order."""
        folder = Path(folder)
        if not folder.is_dir():
            raise CameraError(f"replay folder {folder} does not exist: set camera.replay_dir to a folder of images")
        files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
        return cls(lores_size, files=files, fps=fps, loop=loop)

    @classmethod
    def from_arrays(cls, frames, lores_size, fps=0.0, loop=True):
        """A replay of in-memory ``(lores, main, name)`` frames: no decoding at all (for benchmarks)."""
        return cls(lores_size, arrays=frames, fps=fps, loop=loop)

    def start(self) -> None:
        if not self.files and not self._items:
            raise CameraError("the replay camera has nothing to play: the folder holds no files")

    def describe(self) -> str:
        count = len(self.files) or len(self._items)
        return f"replay: {count} images at {self.fps or 'max'} fps{' (looping)' if self.loop else ''}"

    def frames(self) -> Iterator[Frame]:
        interval_s = 1.0 / self.fps if self.fps else 0.0
        next_s = time.monotonic()
        while not self._stopping.is_set():
            played = 0
            for lores, main, name in self._each_item():
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

    def _each_item(self):
        yield from self._items
        for path in list(self.files):
            lores = self._lores_cache.get(path)
            if lores is None:
                try:
                    lores = scale_like_isp(read_rgb(path), self.lores_size)
                except (UnidentifiedImageError, OSError, ValueError) as e:
                    log.warning("replay: skipping %s: not a readable image (%s)", path, e)
                    self.skipped.append(path.name)
                    self.files.remove(path)
                    continue
                if self._cached_bytes + lores.nbytes <= LORES_CACHE_BYTES:
                    self._lores_cache[path] = lores
                    self._cached_bytes += lores.nbytes
            yield lores, FileImage(path), path.name

    def close(self) -> None:
        self.stop()
