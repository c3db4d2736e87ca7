"""Cameras through picamera2 on libcamera: Raspberry Pi cameras, USB webcams, libcamera's virtual camera.

picamera2 is imported only in ``start()`` (``picamera2_stack.load``), so importing this module on a
laptop costs nothing. Two kinds of camera, told apart before anything is configured by the test
picamera2 itself uses (``Picamera2._is_rpi_camera``: a ``ColorFilterArrangement`` property):

* A **Raspberry Pi camera** (a sensor behind the Pi's ISP) gives two streams in each request, from a
  sensor mode that reads the whole pixel array: ``lores`` at the model's input size, scaled by the ISP,
  and ``main`` at ``camera.still_size``. The request is held until ``Frame.release()``, so the image
  kept is the one classified, and only kept frames copy ``main`` out.
* **Any other camera** (USB webcams through uvcvideo, libcamera's virtual camera) gives one stream. It
  is asked for ``main`` only, at the size it lists nearest ``camera.still_size``, in a format this
  appliance converts (``convert.FORMATS``); ``lores`` is made from ``main`` in software, the whole frame
  area-averaged exactly as the replay camera does (``convert.lores_of``). ``main`` is copied at once
  (lores needs all of it) and its request goes straight back to the camera.

Either way the model sees the field of view that ``camera.still_size``'s aspect ratio cuts from the
centre of the sensor, the whole of it, squashed to the model's input: what it judged is what is kept.
"""

from __future__ import annotations

import logging
import threading
import time
from functools import partial
from typing import Iterator

import numpy as np

from appliance.cameras import Camera
from appliance.cameras import picamera2_stack
from appliance.cameras.convert import FORMATS, RGB_CHANNELS, area_average, lores_of, to_rgb, ycbcr_of
from appliance.cameras.pacing import ParkedPacing
from appliance.errors import CameraError
from appliance.pipeline.frames import ArrayImage, Frame
from appliance.pipeline.loop import FRAMES_HELD

log = logging.getLogger(__name__)

# Two-stream cameras lend their buffers until the frame is released: what the loop can hold, the one
# completed request picamera2 keeps for capture_request(), and two with libcamera, one filling while
# the next waits. Single-stream cameras get theirs back at once: one being copied, one kept, two.
BUFFER_COUNT = FRAMES_HELD + 1 + 2
SINGLE_STREAM_BUFFER_COUNT = 1 + 1 + 2
# fps = 0: up to 30 fps in good light, down to 2 in dim light so that exposure can reach half a second.
FREE_RUNNING_FRAME_US = (33_333, 500_000)
AF_MODE_CONTINUOUS = 2  # libcamera.controls.AfModeEnum.Continuous; libcamera's default is manual, at 1 m
# A single-stream camera's formats, cheapest to convert first; MJPEG (a JPEG decoded every frame) last.
SINGLE_STREAM_PREFERENCE = ("NV12", "NV21", "YUV420", "YVU420", "YUYV", "YVYU", "UYVY", "VYUY", "BGR888",
                            "RGB888", "XBGR8888", "XRGB8888", "MJPEG")

NO_CAMERA = ("no camera found: a Raspberry Pi camera needs its ribbon cable seated at both ends (contacts the right "
             "way round) and camera_auto_detect=1 in /boot/firmware/config.txt (a third-party sensor: "
             "camera_auto_detect=0 and its dtoverlay= line); a USB webcam needs plugging in, and the appliance's "
             "user must be in the video group; `rpicam-hello --list-cameras` or `cam --list` shows what libcamera sees")


def full_field_mode(sensor_modes: list[dict], still_size: tuple[int, int]) -> dict | None:
    """The sensor mode to read: of the modes whose crop is the whole pixel array (binned or full
    resolution, not cropped), the smallest at least ``still_size`` on both sides, else the largest;
    None when the modes say nothing about their crop."""
    modes = [m for m in sensor_modes if "size" in m and "crop_limits" in m]
    if not modes:
        return None
    widest = max(m["crop_limits"][2] * m["crop_limits"][3] for m in modes)
    whole = [m for m in modes if m["crop_limits"][2] * m["crop_limits"][3] == widest]
    big_enough = [m for m in whole if m["size"][0] >= still_size[0] and m["size"][1] >= still_size[1]]
    if big_enough:
        return min(big_enough, key=lambda m: (m["size"][0] * m["size"][1], -m.get("bit_depth", 0)))
    return max(whole, key=lambda m: (m["size"][0] * m["size"][1], m.get("bit_depth", 0)))


def nearest_listed_size(sizes, still_size: tuple[int, int]) -> tuple[int, int]:
    """Of the sizes a camera lists, the smallest that is at least ``still_size`` on both sides (nothing
    is enlarged), else the largest."""
    big_enough = [s for s in sizes if s[0] >= still_size[0] and s[1] >= still_size[1]]
    return min(big_enough, key=lambda s: s[0] * s[1]) if big_enough else max(sizes, key=lambda s: s[0] * s[1])


def listed_formats(camera, video_role) -> dict[str, list[tuple[int, int]]]:
    """The formats and sizes a libcamera camera lists for its video stream."""
    formats = camera.generate_configuration([video_role]).at(0).formats
    return {str(pix): [(size.width, size.height) for size in formats.sizes(pix)] for pix in formats.pixel_formats}


class _HeldMain:
    """The main stream of one held request (two-stream cameras), copied out on first use."""

    def __init__(self, camera: Picamera2Camera, request):
        self._camera, self._request, self._rgb = camera, request, None

    def array(self) -> np.ndarray:
        if self._rgb is None:
            self._rgb = self._camera._copy_main(self._request)
        return self._rgb

    def detach(self) -> ArrayImage:
        """Copy the main image out now, while the request is still held (the loop releases it next)."""
        return ArrayImage(self.array())


class _CopiedMain:
    """A single-stream camera's main, already copied out of the camera: converted to RGB when first read."""

    def __init__(self, array: np.ndarray, fmt: str, size: tuple[int, int], ycbcr):
        self._source, self._convert, self._rgb = array, partial(to_rgb, fmt=fmt, size=size, ycbcr=ycbcr), None

    def array(self) -> np.ndarray:
        if self._rgb is None:
            self._rgb, self._source = self._convert(self._source), None
        return self._rgb

    def detach(self) -> _CopiedMain:
        return self


class Picamera2Camera(Camera):
    """Frames from a camera through picamera2; see the module docstring.

    ``stack`` stands in for picamera2 (tests pass fakes of its parts); by default the real one is
    loaded in ``start()``. ``fps`` 0 lets the camera run free (``FREE_RUNNING_FRAME_US``), and
    ``frames()`` always gets the newest frame, so the model takes frames as fast as it keeps up. A
    camera without ``FrameDurationLimits`` (most USB webcams) cannot be asked for ``fps``, and the
    virtual camera lists the control but ignores it: these are paced here by holding their buffers
    between frames (``pacing.ParkedPacing``; the virtual camera at ``fps`` 0 too).
    """

    def __init__(self, lores_size: tuple[int, int], still_size: tuple[int, int] = (1920, 1080),
                 fps: float = 5.0, camera_num: int = 0, stack: picamera2_stack.Picamera2Stack | None = None):
        super().__init__(lores_size)
        self.still_size, self.fps, self.camera_num = tuple(still_size), fps, camera_num
        self._stack = stack
        self._picam2 = None
        self._uses_libcamera_allocator = self._is_single_stream = False
        self._held: set = set()  # requests handed out in frames and not yet released
        self._lock = threading.Lock()
        self._model = "camera"
        self._streams: dict = {}
        self._ycbcr = ("Rec601", False)
        self._pacing: ParkedPacing | None = None  # a camera paced here (see above)
        # Long enough for the first frames (exposure settling) and two periods at a slow fps.
        self._timeout_s = 5.0 + 2.0 / (fps if fps > 0 else 1e6 / FREE_RUNNING_FRAME_US[1])

    @classmethod
    def from_config(cls, camera_config, lores_size, *, stack=None):
        return cls(lores_size, still_size=camera_config.still_size, fps=camera_config.fps,
                   camera_num=camera_config.index, stack=stack)

    @property
    def model(self) -> str | None:
        return None if self._model == "camera" else self._model

    @property
    def source(self) -> str:
        return f"picamera2:{self.camera_num}:{self._model}"

    def start(self) -> None:
        if self._picam2 is not None:
            return
        self._stopping.clear()
        stack = self._stack or picamera2_stack.load()
        try:
            self._picam2 = self._open(stack)
            self._configure(self._picam2, stack)
            if self._pacing is not None:
                self._picam2.pre_callback = self._pacing.park
            self._picam2.start()
        except Exception as e:
            self.close()
            if isinstance(e, CameraError):
                raise
            raise CameraError(f"{self.source} could not start: {e}") from e
        log.info("started %s", self.describe())

    def _open(self, stack):
        try:
            cameras = stack.picamera2_class.global_camera_info()  # what Picamera2(camera_num) indexes
        except RuntimeError as e:  # libcamera's camera manager did not start
            raise CameraError(f"libcamera could not start ({e}): check `dmesg` for camera errors and that "
                              "libcamera's IPA modules (libcamera-ipa) match libcamera") from e
        if not 0 <= self.camera_num < len(cameras):
            raise CameraError(NO_CAMERA if not cameras else f"there is no camera {self.camera_num} (camera.index): "
                              f"{len(cameras)} found; `cam --list` lists them")
        try:
            picam2, self._uses_libcamera_allocator = picamera2_stack.open_picamera2(stack, self.camera_num)
        except IndexError:  # unplugged since the listing
            raise CameraError(NO_CAMERA) from None
        except RuntimeError as e:
            raise CameraError(f"camera {self.camera_num} was found but could not be opened ({e}): is another "
                              "program (rpicam-*, a second appliance) using it?") from e
        self._model = picam2.camera_properties.get("Model", "camera")
        return picam2

    def _configure(self, picam2, stack) -> None:
        controls = {}
        # libcamera's virtual camera, the one camera with no device behind it (libcamera registers it
        # without SystemDevices), lists FrameDurationLimits but completes each request the moment it is
        # queued (pipeline/virtual/virtual.cpp, queueRequestDevice): it is paced here, like a camera
        # without the control.
        is_virtual = "SystemDevices" not in picam2.camera_properties
        has_frame_rate = "FrameDurationLimits" in picam2.camera_controls and not is_virtual
        # The virtual camera is paced here at fps 0 too (a frame when the loop asks for one); a webcam at
        # fps 0 runs at its own rate, each frame ready when the loop asks.
        parks = is_virtual or (self.fps > 0 and not has_frame_rate)
        self._pacing = ParkedPacing(1.0 / self.fps if self.fps > 0 else 0.0) if parks else None
        if has_frame_rate:
            frame_us = int(1_000_000 / self.fps) if self.fps > 0 else 0
            controls["FrameDurationLimits"] = (frame_us, frame_us) if frame_us else FREE_RUNNING_FRAME_US
        if "AfMode" in picam2.camera_controls:  # Camera Module 3: focus continuously, not fixed at 1 m
            controls["AfMode"] = AF_MODE_CONTINUOUS
        self._is_single_stream = "ColorFilterArrangement" not in picam2.camera_properties
        if self._is_single_stream:
            requested = self._single_stream_configuration(picam2, stack, controls)
        else:
            requested = self._two_stream_configuration(picam2, stack, controls)
        picam2.configure(requested)
        configured = picam2.camera_configuration()
        self._streams = {name: (configured[name]["format"], tuple(configured[name]["size"]))
                         for name in (("main",) if self._is_single_stream else ("main", "lores"))}
        for name, (fmt, _) in self._streams.items():  # what was configured may differ from what was asked
            if fmt not in FORMATS:
                raise CameraError(f"{self.source} configured {name} as {fmt}, which this appliance cannot convert "
                                  f"to RGB (it reads {', '.join(FORMATS)})")
        # picamera2 gives YUV streams the configuration's colour space (video: Smpte170m or Rec709).
        self._ycbcr = ycbcr_of(configured.get("colour_space"), requested.get("colour_space"))
        if is_virtual:
            # The virtual camera labels its NV12 Rec709 but fills it with its JPEGs' own YCbCr
            # (image_frame_generator.cpp: libyuv::MJPGToNV12): BT.601 at full range.
            self._ycbcr = ("Rec601", True)
        if not self._is_single_stream and self._streams["lores"][1] != self.lores_size:
            log.warning("camera gives lores at %s, not %s; resizing each frame", self._streams["lores"][1],
                        self.lores_size)
        limits = picam2.camera_controls.get("FrameDurationLimits")
        if self._pacing is None and self.fps > 0 and limits and not limits[0] <= 1_000_000 / self.fps <= limits[1]:
            log.warning("%s cannot run at %g fps in this mode; libcamera will clamp it", self.source, self.fps)

    def _two_stream_configuration(self, picam2, stack, controls) -> dict:
        (lores_w, lores_h), (still_w, still_h) = self.lores_size, self.still_size
        if lores_w > still_w or lores_h > still_h:  # picamera2 would refuse with a bare RuntimeError
            raise CameraError(f"camera.still_size {still_w}x{still_h} is smaller than the model's input "
                              f"{lores_w}x{lores_h} (the lores stream, which may not exceed main): set "
                              f"camera.still_size to at least {lores_w}x{lores_h}")
        main_bytes = still_w * still_h * 3 * BUFFER_COUNT
        if stack.cma_free_bytes is not None and main_bytes > stack.cma_free_bytes:
            raise CameraError(f"camera.still_size {still_w}x{still_h} needs {main_bytes // 2**20} MiB of camera memory "
                              f"(CMA) for its {BUFFER_COUNT} buffers and {stack.cma_free_bytes // 2**20} MiB is free: "
                              "set a smaller camera.still_size, or give the camera more CMA "
                              "(e.g. dtoverlay=vc4-kms-v3d,cma-512 in /boot/firmware/config.txt)")
        mode = full_field_mode(picam2.sensor_modes, self.still_size)
        return picam2.create_video_configuration(
            main={"size": self.still_size, "format": "BGR888"},
            # Pi 5's ISP (PiSP) writes RGB to lores; Pi 4 and earlier (VC4) only YUV, converted here.
            lores={"size": self.lores_size, "format": "YUV420" if stack.is_vc4 else "BGR888"},
            raw=None,  # libcamera keeps raw buffers of its own; asking for a raw stream would add BUFFER_COUNT more
            sensor={"output_size": mode["size"], "bit_depth": mode["bit_depth"]} if mode else {},
            buffer_count=BUFFER_COUNT, controls=controls)

    def _single_stream_configuration(self, picam2, stack, controls) -> dict:
        listed = listed_formats(picam2.camera, stack.video_role)
        usable = {fmt: sizes for fmt, sizes in listed.items() if fmt in SINGLE_STREAM_PREFERENCE and sizes}
        if not usable:
            raise CameraError(f"{self.source} offers {', '.join(listed) or 'no image format'}, none of which this "
                              f"appliance converts to RGB ({', '.join(FORMATS)}): use a camera that offers "
                              "YUYV, NV12 or MJPEG (most USB webcams do)")
        size = nearest_listed_size({s for sizes in usable.values() for s in sizes}, self.still_size)
        fmt = next(f for f in SINGLE_STREAM_PREFERENCE if size in usable.get(f, ()))
        # Paced here, picamera2 keeps no completed request for later (queue): the frame taken is one
        # that completes after it was asked for.
        return picam2.create_video_configuration(main={"size": size, "format": fmt}, lores=None,
                                                 buffer_count=SINGLE_STREAM_BUFFER_COUNT, controls=controls,
                                                 queue=self._pacing is None)

    def frames(self) -> Iterator[Frame]:
        picam2 = self._picam2
        if picam2 is None:
            raise CameraError("start() the camera before asking it for frames")
        while not self._stopping.is_set():
            try:
                if self._pacing is None:
                    request = picam2.capture_request(wait=self._timeout_s)
                else:
                    request = self._pacing.next_request(picam2, self._timeout_s, self._stopping)
            except TimeoutError:
                if self._stopping.is_set():
                    return
                # The timed-out job stays queued in picamera2 and would take (and leak) a later request.
                picam2.cancel_all_and_flush()
                raise CameraError(f"{self.source} sent no frame for {self._timeout_s:g} s: check the "
                                  "camera's cable and `dmesg` for camera errors") from None
            if request is None:  # stopped while waiting for the next frame to be due
                return
            if self._is_single_stream:
                frame = self._single_stream_frame(request)
                if frame is not None:
                    yield frame
                continue
            with self._lock:
                self._held.add(request)
            try:
                frame = self._frame(request)
            except BaseException:
                self._release(request)
                raise
            yield frame

    def _timestamp_s(self, request) -> float:
        sensor_ns = request.get_metadata().get("SensorTimestamp")
        # SensorTimestamp shares time.monotonic_ns()'s clock: picamera2's capture_request(flush=...)
        # compares the two directly.
        return sensor_ns / 1e9 if sensor_ns else time.monotonic()

    def _frame(self, request) -> Frame:
        fmt, size = self._streams["lores"]
        lores = to_rgb(request.make_array("lores"), fmt, size, self._ycbcr)
        if lores.shape[:2] != (self.lores_size[1], self.lores_size[0]):
            lores = area_average(lores, self.lores_size)
        return Frame(lores=lores, main=_HeldMain(self, request), timestamp_s=self._timestamp_s(request),
                     captured_at_s=time.time(), source=self.source, _release=partial(self._release, request))

    def _single_stream_frame(self, request) -> Frame | None:
        fmt, size = self._streams["main"]
        try:
            timestamp_s = self._timestamp_s(request)
            main = request.make_array("main")  # a copy (MJPEG: decoded), so the request can go back now
        except (OSError, ValueError) as e:
            if fmt != "MJPEG":
                raise
            log.warning("%s: skipped a frame whose JPEG did not decode (%s)", self.source, e)
            return None
        finally:
            request.release()
        return Frame(lores=lores_of(main, fmt, size, self.lores_size, self._ycbcr),
                     main=_CopiedMain(main, fmt, size, self._ycbcr), timestamp_s=timestamp_s,
                     captured_at_s=time.time(), source=self.source)

    def _copy_main(self, request) -> np.ndarray:
        # Under the lock so that close() cannot hand the buffer back to the camera mid-copy.
        with self._lock:
            if request not in self._held:
                raise CameraError("the main image was read after its frame was released")
            fmt, size = self._streams["main"]
            return to_rgb(request.make_array("main"), fmt, size, self._ycbcr)

    def _release(self, request) -> None:
        with self._lock:
            if request not in self._held:
                return
            self._held.discard(request)
        request.release()

    def close(self) -> None:
        self._stopping.set()
        with self._lock:
            held, self._held = [*self._held], set()
        if self._pacing is not None:
            held += self._pacing.close()  # a request can be both held and parked: two references
        for request in held:  # before close(): picamera2 frees the buffers' allocator there
            request.release()
        picam2, self._picam2 = self._picam2, None
        if picam2 is None:
            return
        try:
            picamera2_stack.close_picamera2(picam2, self._uses_libcamera_allocator)
        except Exception:  # closing is teardown: report, and let the rest of the appliance close too
            log.warning("%s did not close cleanly", self.source, exc_info=True)

    def describe(self) -> str:
        if not self._streams:
            return f"picamera2 camera {self.camera_num} (not started)"
        main_fmt, (main_w, main_h) = self._streams["main"]
        if self._is_single_stream:
            return (f"picamera2 {self._model} {main_w}x{main_h} {self._as_rgb(main_fmt)} (one stream; lores "
                    f"{self.lores_size[0]}x{self.lores_size[1]} area-averaged from it)")
        lores_fmt, (lores_w, lores_h) = self._streams["lores"]
        return f"picamera2 {self._model} {main_w}x{main_h} + lores {lores_w}x{lores_h} {self._as_rgb(lores_fmt)}"

    def _as_rgb(self, fmt: str) -> str:
        if fmt in RGB_CHANNELS:
            return "RGB"
        if fmt == "MJPEG":
            return "MJPEG to RGB"
        return "{} to RGB ({}, {} range)".format(fmt, self._ycbcr[0], "full" if self._ycbcr[1] else "limited")
