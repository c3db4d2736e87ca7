"""The Raspberry Pi camera, through picamera2 (libcamera), which comes from the OS, not pip.

picamera2 is imported only in ``start()``, so importing this module on a laptop costs nothing. Each
frame is one request with two streams of the same exposure: ``lores`` at the model's input size (the
ISP scales the whole field of view) and ``main`` at ``camera.still_size``. The request is held until
``Frame.release()``, so the image kept is the one classified, and only kept frames copy ``main`` out.
"""

from __future__ import annotations

import logging
import threading
import time
from functools import partial
from typing import Iterator

import numpy as np
from PIL import Image

from appliance.cameras import Camera
from appliance.errors import CameraError
from appliance.pipeline.frames import ArrayImage, Frame

log = logging.getLogger(__name__)

# We hold at most two requests (one being classified, one being copied out), picamera2 keeps the
# newest completed one for capture_request(), and the camera needs the rest to keep streaming.
# Six is also picamera2's own default for video configurations.
BUFFER_COUNT = 6

NO_CAMERA = ("no camera found: check that `rpicam-hello --list-cameras` lists it, that the ribbon cable is seated "
             "(contacts the right way round) at both ends, and that /boot/firmware/config.txt has camera_auto_detect=1")

# picamera2/libcamera name packed RGB formats by their 32-bit word, so in memory "BGR888" is
# [R, G, B] and "RGB888" is [B, G, R] (Picamera2 manual, appendix A; request.py's make_image maps
# "BGR888" to PIL's "RGB"). These index each format's channels in R, G, B order.
_RGB_CHANNELS = {"BGR888": [0, 1, 2], "RGB888": [2, 1, 0], "XBGR8888": [0, 1, 2], "XRGB8888": [2, 1, 0]}
_KR_KB = {"Rec601": (0.299, 0.114), "Rec709": (0.2126, 0.0722), "Rec2020": (0.2627, 0.0593)}


def yuv420_to_rgb(array: np.ndarray, size: tuple[int, int], encoding: str = "Rec601",
                  full_range: bool = False, swap_uv: bool = False) -> np.ndarray:
    """RGB ``uint8`` (height, width, 3) from a YUV420 array shaped as picamera2's ``make_array`` returns it.

    That shape is (height * 3 // 2, stride): ``height`` rows of Y, then the U plane and the V plane,
    each (height / 2) rows of stride / 2 bytes, so two chroma rows share one array row. Bytes past
    ``width`` in a row are padding. ``encoding`` is the YCbCr matrix (Rec601, Rec709, Rec2020);
    ``full_range`` is false for video's 16-235 levels, true for sYCC/JPEG's 0-255.
    """
    width, height = size
    stride = array.shape[1]
    flat = array.reshape(-1)
    y_bytes, c_rows, c_stride = height * stride, height // 2, stride // 2
    c_bytes = c_rows * c_stride
    y = flat[:y_bytes].reshape(height, stride)[:, :width].astype(np.float32)
    u = flat[y_bytes:y_bytes + c_bytes].reshape(c_rows, c_stride)[:, :width // 2]
    v = flat[y_bytes + c_bytes:y_bytes + 2 * c_bytes].reshape(c_rows, c_stride)[:, :width // 2]
    u, v = (c.repeat(2, axis=0).repeat(2, axis=1).astype(np.float32) - 128.0 for c in ((v, u) if swap_uv else (u, v)))
    if not full_range:  # studio levels: Y 16-235, U and V 16-240
        y, u, v = (y - 16.0) * (255.0 / 219.0), u * (255.0 / 224.0), v * (255.0 / 224.0)
    kr, kb = _KR_KB[encoding]
    r = y + 2.0 * (1.0 - kr) * v
    b = y + 2.0 * (1.0 - kb) * u
    g = (y - kr * r - kb * b) / (1.0 - kr - kb)
    return np.clip(np.rint(np.stack([r, g, b], axis=-1)), 0, 255).astype(np.uint8)


def _ycbcr(*colour_spaces) -> tuple[str, bool]:
    """The YCbCr matrix and range of the first libcamera ColorSpace that has one."""
    for colour_space in colour_spaces:
        encoding = str(getattr(colour_space, "ycbcrEncoding", ""))
        for name in _KR_KB:
            if name in encoding:
                return name, "Full" in str(getattr(colour_space, "range", ""))
    return "Rec601", False


def _import_picamera2():
    try:
        from picamera2 import Picamera2
    except ImportError as e:
        raise CameraError(f"picamera2 is not installed ({e}): on Raspberry Pi OS `sudo apt install "
                          "python3-picamera2` (a virtualenv needs --system-site-packages to see it), "
                          'or set camera.backend = "replay"') from None
    except ValueError as e:  # e.g. "numpy.dtype size changed": a pip numpy the OS modules were not built for
        raise CameraError(f"picamera2 is installed but does not import ({e}): is a pip-installed numpy "
                          "shadowing the OS one?") from None
    return Picamera2


class _MainImage:
    """The main stream of one held request, copied out on first use."""

    def __init__(self, camera: Picamera2Camera, request):
        self._camera, self._request, self._rgb = camera, request, None

    def array(self) -> np.ndarray:
        if self._rgb is None:
            self._rgb = self._camera._copy_main(self._request)
        return self._rgb

    def detach(self) -> ArrayImage:
        """Copy the main image out now, while the request is still held (the loop releases it next)."""
        return ArrayImage(self.array())


class Picamera2Camera(Camera):
    """Frames from a Raspberry Pi camera: lores for the model, main from the same request for keeping.

    ``picamera2_class`` stands in for ``picamera2.Picamera2`` (tests pass a fake); by default the
    real one is imported in ``start()``. ``fps`` 0 leaves picamera2's default frame rate, and
    ``frames()`` always gets the newest frame, so the model takes frames as fast as it keeps up.
    """

    def __init__(self, lores_size: tuple[int, int], still_size: tuple[int, int] = (1920, 1080),
                 fps: float = 5.0, camera_num: int = 0, picamera2_class=None):
        super().__init__(lores_size)
        self.still_size, self.fps, self.camera_num = tuple(still_size), fps, camera_num
        self._picamera2_class = picamera2_class
        self._picam2 = None
        self._held: set = set()  # requests handed out in frames and not yet released
        self._lock = threading.Lock()
        self._model = "camera"
        self._streams: dict = {}
        self._ycbcr = ("Rec601", False)
        # Long enough for the first frames (exposure settling) and two periods at a slow fps.
        self._timeout_s = 5.0 + (2.0 / fps if fps > 0 else 0.0)

    @classmethod
    def from_config(cls, camera_config, lores_size, *, picamera2_class=None, camera_num: int = 0):
        return cls(lores_size, still_size=camera_config.still_size, fps=camera_config.fps,
                   camera_num=camera_num, picamera2_class=picamera2_class)

    @property
    def source(self) -> str:
        return f"picamera2:{self.camera_num}:{self._model}"

    def start(self) -> None:
        if self._picam2 is not None:
            return
        self._stopping.clear()
        picamera2_class = self._picamera2_class or _import_picamera2()
        self._picam2 = self._open(picamera2_class)
        try:
            self._configure(self._picam2)
            self._picam2.start()
        except Exception as e:
            self.close()
            if isinstance(e, CameraError):
                raise
            raise CameraError(f"{self.source} could not start: {e}") from e
        log.info("started %s", self.describe())

    def _open(self, picamera2_class):
        cameras = picamera2_class.global_camera_info()  # what Picamera2(camera_num) indexes
        if not 0 <= self.camera_num < len(cameras):
            raise CameraError(NO_CAMERA if not cameras else f"there is no camera {self.camera_num}: "
                              f"{len(cameras)} found; `rpicam-hello --list-cameras` lists them")
        try:
            picam2 = picamera2_class(self.camera_num)
        except IndexError:  # unplugged since the listing
            raise CameraError(NO_CAMERA) from None
        except RuntimeError as e:
            raise CameraError(f"camera {self.camera_num} was found but could not be opened ({e}): is another "
                              "program (rpicam-*, a second appliance) using it?") from e
        self._model = picam2.camera_properties.get("Model", "camera")
        return picam2

    def _configure(self, picam2) -> None:
        controls = {}
        frame_us = int(1_000_000 / self.fps) if self.fps > 0 else None
        if frame_us and "FrameDurationLimits" in picam2.camera_controls:
            # FrameDurationLimits rather than FrameRate: only newer picamera2 maps the latter onto it.
            controls["FrameDurationLimits"] = (frame_us, frame_us)

        def video_config(lores_format):
            return picam2.create_video_configuration(
                main={"size": self.still_size, "format": "BGR888"},
                lores={"size": self.lores_size, "format": lores_format},
                buffer_count=BUFFER_COUNT, controls=controls)

        # Pi 5's ISP can write RGB to lores; Pi 4 and earlier (VC4) cannot, and picamera2 refuses
        # with RuntimeError("lores stream must be YUV") before touching the camera (check_camera_config).
        try:
            requested = video_config("BGR888")
            picam2.configure(requested)
        except RuntimeError as e:
            log.info("lores cannot be RGB on this camera (%s); asking for YUV420 and converting", e)
            requested = video_config("YUV420")
            picam2.configure(requested)
        configured = picam2.camera_configuration()
        self._streams = {name: (configured[name]["format"], tuple(configured[name]["size"]))
                         for name in ("main", "lores")}
        # Convert what libcamera configured, which may differ from what was asked. picamera2 gives
        # lores the configuration's colour space (Smpte170m or Rec709 for video, both studio range).
        self._ycbcr = _ycbcr(configured.get("colour_space"), requested.get("colour_space"))
        if self._streams["lores"][1] != self.lores_size:
            log.warning("camera gives lores at %s, not %s; resizing each frame", self._streams["lores"][1],
                        self.lores_size)
        limits = picam2.camera_controls.get("FrameDurationLimits")
        if frame_us and limits and not limits[0] <= frame_us <= limits[1]:
            log.warning("%s cannot run at %g fps in this mode; libcamera will clamp it", self.source, self.fps)

    def _rgb(self, name: str, array: np.ndarray) -> np.ndarray:
        fmt, size = self._streams[name]
        if fmt in ("YUV420", "YVU420"):
            return yuv420_to_rgb(array, size, *self._ycbcr, swap_uv=fmt == "YVU420")
        if fmt not in _RGB_CHANNELS:
            raise CameraError(f"{self.source} delivered {name} as {fmt}, which this backend cannot convert")
        # np.array copies: picamera2's make_array copies today, but the frame must outlive the buffer.
        return np.array(array[..., _RGB_CHANNELS[fmt]], dtype=np.uint8, order="C")

    def frames(self) -> Iterator[Frame]:
        picam2 = self._picam2
        if picam2 is None:
            raise CameraError("start() the camera before asking it for frames")
        while not self._stopping.is_set():
            try:
                request = picam2.capture_request(wait=self._timeout_s)
            except TimeoutError:
                if self._stopping.is_set():
                    return
                # The timed-out job stays queued in picamera2 and would take (and leak) a later request.
                picam2.cancel_all_and_flush()
                raise CameraError(f"{self.source} sent no frame for {self._timeout_s:g} s: check the "
                                  "ribbon cable and `dmesg` for camera errors") from None
            with self._lock:
                self._held.add(request)
            try:
                frame = self._frame(request)
            except BaseException:
                self._release(request)
                raise
            yield frame

    def _frame(self, request) -> Frame:
        sensor_ns = request.get_metadata().get("SensorTimestamp")
        # SensorTimestamp shares time.monotonic_ns()'s clock: picamera2's capture_request(flush=...)
        # compares the two directly.
        timestamp_s = sensor_ns / 1e9 if sensor_ns else time.monotonic()
        lores = self._rgb("lores", request.make_array("lores"))
        if lores.shape[:2] != (self.lores_size[1], self.lores_size[0]):
            lores = np.asarray(Image.fromarray(lores).resize(self.lores_size, Image.BILINEAR))
        return Frame(lores=lores, main=_MainImage(self, request), timestamp_s=timestamp_s,
                     captured_at_s=time.time(), source=self.source, _release=partial(self._release, request))

    def _copy_main(self, request) -> np.ndarray:
        # Under the lock so that close() cannot hand the buffer back to the camera mid-copy.
        with self._lock:
            if request not in self._held:
                raise CameraError("the main image was read after its frame was released")
            return self._rgb("main", request.make_array("main"))

    def _release(self, request) -> None:
        with self._lock:
            if request not in self._held:
                return
            self._held.discard(request)
        request.release()

    def close(self) -> None:
        self._stopping.set()
        with self._lock:
            held, self._held = self._held, set()
        for request in held:  # before close(): picamera2 frees the buffers' allocator there
            request.release()
        picam2, self._picam2 = self._picam2, None
        if picam2 is None:
            return
        try:
            picam2.stop()
            picam2.close()
        except Exception:  # closing is teardown: report, and let the rest of the appliance close too
            log.warning("%s did not close cleanly", self.source, exc_info=True)

    def describe(self) -> str:
        if not self._streams:
            return f"picamera2 camera {self.camera_num} (not started)"
        (_, (mw, mh)), (lores_fmt, (lw, lh)) = self._streams["main"], self._streams["lores"]
        lores = "RGB" if lores_fmt in _RGB_CHANNELS else "{} to RGB ({}, {} range)".format(
            lores_fmt, self._ycbcr[0], "full" if self._ycbcr[1] else "limited")
        return f"picamera2 {self._model} {mw}x{mh} + lores {lw}x{lh} {lores}"
