"""A fake of picamera2 0.3.38 and the libcamera objects it hands out, for the picamera2 camera's tests.

It copies the interface the camera uses (same names, signatures, shapes and metadata) and plays the
camera: it scales real photos to each stream and packs them in the pixel format asked for, byte order,
planes, stride padding and all, as ``CompletedRequest.make_array`` returns them (a copy). Three kinds
of camera, as libcamera presents them:

* ``pi``: a Raspberry Pi camera (imx708, Camera Module 3): ``ColorFilterArrangement``, raw sensor
  modes, two streams, ``AfMode``; ``platform`` "vc4" (lores must be YUV) or "pisp".
* ``usb``: a webcam through uvcvideo: no raw property, one stream whatever is asked (picamera2 would
  index past libcamera's one stream config if asked for lores, so the fake refuses), YUYV and MJPEG.
* ``virtual``: libcamera's virtual camera: one NV12 stream, and no raw stream at all
  (``generate_configuration([Raw])`` is None, so picamera2's own ``__init__`` fails to open it); its
  frames say Rec709 and hold the JPEG's own YCbCr (BT.601, full range), as libcamera's do.

A request goes back to the camera when its last reference (``acquire``) is released;
``pre_callback`` sees each request as it completes; ``capture_request(wait=False)`` returns a job
whose request is made when ``wait(job)`` asks for it. Where it can be it is stricter than picamera2:
a released buffer is scribbled over, a double release raises, configuring lores larger than main raises as picamera2's check does, and ``capture_request``
stalls (``TimeoutError`` after ``wait``) only when the application holds every request, since
picamera2 itself keeps one completed request.
"""

from __future__ import annotations

import enum
import io
import time

import numpy as np
from PIL import Image

# --- libcamera ------------------------------------------------------------------------------------


class StreamRole(enum.Enum):
    Raw, StillCapture, VideoRecording, Viewfinder = range(4)


class ColorSpace:
    """libcamera.ColorSpace, reduced to what decides how YUV is encoded (same attribute names)."""

    class YcbcrEncoding(enum.Enum):
        Null, Rec601, Rec709, Rec2020 = range(4)

    class Range(enum.Enum):
        Full, Limited = range(2)

    def __init__(self, ycbcr_encoding, range_):
        self.ycbcrEncoding, self.range = ycbcr_encoding, range_

    @classmethod
    def Sycc(cls):
        return cls(cls.YcbcrEncoding.Rec601, cls.Range.Full)

    @classmethod
    def Smpte170m(cls):
        return cls(cls.YcbcrEncoding.Rec601, cls.Range.Limited)

    @classmethod
    def Rec709(cls):
        return cls(cls.YcbcrEncoding.Rec709, cls.Range.Limited)


class Size:
    def __init__(self, width, height):
        self.width, self.height = width, height


class PixelFormat:
    def __init__(self, name):
        self.name = name

    def __str__(self):
        return self.name


class StreamFormats:
    """libcamera.StreamFormats: ``pixel_formats`` and ``sizes(pixel_format)``."""

    def __init__(self, formats: dict):
        self._formats = formats
        self.pixel_formats = [PixelFormat(name) for name in formats]

    def sizes(self, pixel_format):
        return [Size(*size) for size in sorted(self._formats[str(pixel_format)])]


class StreamConfiguration:
    def __init__(self, formats):
        self.formats = StreamFormats(formats)


class CameraConfiguration:
    def __init__(self, streams):
        self._streams = streams

    def at(self, index):
        return self._streams[index]  # libcamera's at() is unchecked; a list raises instead


class LibcameraCamera:
    """libcamera.Camera: what it answers to ``generate_configuration(roles)``."""

    def __init__(self, raw_formats: dict | None, formats: dict):
        self.raw_formats, self.formats = raw_formats, formats

    def generate_configuration(self, roles):
        if StreamRole.Raw in roles and self.raw_formats is None:
            return None  # the virtual camera: "Requested stream role not supported: Raw"
        return CameraConfiguration([StreamConfiguration(self.raw_formats if role is StreamRole.Raw else self.formats)
                                    for role in roles])


# --- picamera2.allocators ---------------------------------------------------------------------------

class Allocator:
    """picamera2.allocators.Allocator: allocates nothing; a camera configured with it has no buffers."""

    def allocate(self, libcamera_config, use_case):
        pass

    def buffers(self, stream):
        return None


class LibcameraAllocator(Allocator):
    def __init__(self, camera):
        self.camera = camera

    def buffers(self, stream):
        return ["libcamera buffer"] * 8


class DmaAllocator(Allocator):
    """Opens a DMA heap when it is built, as picamera2's does: ``has_heap`` says whether the system has one."""

    def __init__(self, has_heap=True):
        if not has_heap:  # as DmaHeap() does, before anything else of the allocator is set
            raise RuntimeError("Could not open any dmaHeap device")
        self.mapped_buffers = {}

    def __del__(self):  # picamera2's close() → cleanup() reads mapped_buffers, which a failed __init__ never set
        self.mapped_buffers.clear()

    def buffers(self, stream):
        return ["dma buffer"] * 8


# --- The fake ISP: RGB in, picamera2's stream layouts out ---------------------------------------------

KR_KB = {"Rec601": (0.299, 0.114), "Rec709": (0.2126, 0.0722)}


def rgb_to_ycbcr(rgb: np.ndarray, colour_space: ColorSpace) -> np.ndarray:
    """Full-resolution Y, Cb, Cr planes as a camera would encode them."""
    if colour_space.range is ColorSpace.Range.Full and colour_space.ycbcrEncoding is ColorSpace.YcbcrEncoding.Rec601:
        return np.asarray(Image.fromarray(rgb).convert("YCbCr")).astype(np.float64)  # Pillow's JPEG conversion
    kr, kb = KR_KB[colour_space.ycbcrEncoding.name]
    r, g, b = (rgb[..., i] / 255.0 for i in range(3))
    y = kr * r + (1 - kr - kb) * g + kb * b  # textbook (ITU-R BT.601/BT.709), studio levels
    cb, cr = (b - y) / (2 * (1 - kb)), (r - y) / (2 * (1 - kr))
    return np.stack([16 + 219 * y, 128 + 224 * cb, 128 + 224 * cr], axis=-1)


def _bytes(plane) -> np.ndarray:
    return np.clip(np.rint(plane), 0, 255).astype(np.uint8)


def pack_yuv420(rgb: np.ndarray, colour_space: ColorSpace, stride: int) -> np.ndarray:
    """YUV420 planes with padded rows, shaped (height * 3 // 2, stride) as picamera2's make_array returns it."""
    h, w, _ = rgb.shape
    ycc = rgb_to_ycbcr(rgb, colour_space)
    chroma = ycc[..., 1:].reshape(h // 2, 2, w // 2, 2, 2).mean(axis=(1, 3))  # 2x2 subsampling
    buffer = np.full(stride * h * 3 // 2, 0xA5, dtype=np.uint8)  # padding bytes that would show as a stripe
    planes = [(ycc[..., 0], stride, h)] + [(chroma[..., i], stride // 2, h // 2) for i in (0, 1)]
    offset = 0
    for plane, plane_stride, rows in planes:
        view = buffer[offset:offset + plane_stride * rows].reshape(rows, plane_stride)
        view[:, :plane.shape[1]] = _bytes(plane)
        offset += plane_stride * rows
    return buffer.reshape(h * 3 // 2, stride)


def pack_nv12(rgb: np.ndarray, colour_space: ColorSpace) -> np.ndarray:
    """NV12 as make_array returns it: (height * 3 // 2, width), Y rows then interleaved U, V rows."""
    h, w, _ = rgb.shape
    ycc = rgb_to_ycbcr(rgb, colour_space)
    chroma = ycc[..., 1:].reshape(h // 2, 2, w // 2, 2, 2).mean(axis=(1, 3))
    return np.concatenate([_bytes(ycc[..., 0]), _bytes(chroma).reshape(h // 2, w)])


def pack_yuyv(rgb: np.ndarray, colour_space: ColorSpace, stride: int) -> np.ndarray:
    """YUYV as make_array returns it: (height, stride // 2, 2), bytes Y0 U Y1 V for each pixel pair."""
    h, w, _ = rgb.shape
    ycc = rgb_to_ycbcr(rgb, colour_space)
    chroma = ycc[..., 1:].reshape(h, w // 2, 2, 2).mean(axis=2)  # 2x1 subsampling
    row = np.full((h, stride), 0x5A, np.uint8)
    row[:, 0:2 * w:2] = _bytes(ycc[..., 0])
    row[:, 1:2 * w:4], row[:, 3:2 * w:4] = _bytes(chroma[..., 0]), _bytes(chroma[..., 1])
    return row.reshape(h, stride // 2, 2)


def encode_jpeg(rgb: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, "JPEG", quality=92)
    return out.getvalue()


def pack(rgb: np.ndarray, stream: dict, colour_space: ColorSpace):
    """What the camera writes into the buffer (MJPEG: the JPEG's bytes)."""
    fmt, stride = stream["format"], stream["stride"]
    if fmt == "YUV420":
        return pack_yuv420(rgb, colour_space, stride)
    if fmt == "NV12":
        return pack_nv12(rgb, colour_space)
    if fmt == "YUYV":
        return pack_yuyv(rgb, colour_space, stride)
    if fmt == "MJPEG":
        return encode_jpeg(rgb)
    if fmt in ("BGR888", "RGB888"):  # picamera2/libcamera "BGR888" is [R, G, B] in memory
        pixels = rgb if fmt == "BGR888" else rgb[..., ::-1]
        padded = np.full((rgb.shape[0], stride), 0xA5, np.uint8)
        padded[:, :rgb.shape[1] * 3] = pixels.reshape(rgb.shape[0], -1)
        return padded
    raise AssertionError(f"the fake does not pack {fmt}")


def unpack(buffer, stream: dict) -> np.ndarray:
    """make_array: a copy shaped as picamera2's Helpers._make_array_shared shapes it."""
    fmt, (w, h) = stream["format"], stream["size"]
    if fmt == "MJPEG":
        return np.array(Image.open(io.BytesIO(buffer)))
    if fmt in ("BGR888", "RGB888"):
        return buffer[:, :w * 3].reshape(h, w, 3).copy()
    return buffer.copy()


def scale(rgb: np.ndarray, size) -> np.ndarray:
    """The whole field of view, area-averaged, as the ISP scales it."""
    return np.asarray(Image.fromarray(rgb).resize(tuple(size), Image.BOX))


# --- picamera2 ----------------------------------------------------------------------------------------

class CompletedRequest:
    """picamera2.request.CompletedRequest: make_array (a copy), get_metadata, release."""

    def __init__(self, picam2: Picamera2, scene: np.ndarray, sequence: int):
        self.picam2, self.sequence = picam2, sequence
        config = picam2.camera_config
        names = [name for name in ("main", "lores") if config[name] is not None]
        self.truth = {name: scale(scene, config[name]["size"]) for name in names}
        # libcamera's virtual camera labels its frames Rec709 but fills them with its JPEGs' YCbCr (sYCC).
        encoding = ColorSpace.Sycc() if picam2.kind == "virtual" else config["colour_space"]
        self.buffers = {name: pack(self.truth[name], config[name], encoding) for name in names}
        if sequence in picam2.truncated_jpegs and config["main"]["format"] == "MJPEG":
            self.buffers["main"] = self.buffers["main"][:200]
        self.metadata = {"SensorTimestamp": picam2.boot_ns + sequence * 200_000_000, "ExposureTime": 10_000,
                         "AnalogueGain": 1.0, "FrameDuration": 33_333}
        self.ref_count = 1

    def make_array(self, name: str) -> np.ndarray:
        assert self.ref_count > 0, "make_array on a released request"
        if name not in self.buffers:
            raise RuntimeError(f"Stream {name!r} is not defined")
        return unpack(self.buffers[name], self.picam2.camera_config[name])

    def get_metadata(self) -> dict:
        return dict(self.metadata)

    def acquire(self) -> None:
        if self.ref_count == 0:
            raise RuntimeError("CompletedRequest: acquiring lock with ref_count 0")
        self.ref_count += 1

    def release(self) -> None:
        self.ref_count -= 1
        if self.ref_count < 0:
            raise RuntimeError("CompletedRequest: lock now has negative ref_count")
        if self.ref_count > 0:  # someone else still holds it (acquire)
            return
        for name, buffer in self.buffers.items():
            if isinstance(buffer, np.ndarray):
                buffer[...] = 0  # the camera reuses the buffer
        self.picam2.outstanding.discard(self)
        self.picam2.released.append(self.sequence)


class Job:
    """picamera2.job.Job, as capture_request(wait=False) returns it: the request is made when its
    result is asked for, from the buffers the camera has then."""

    def __init__(self, picam2: Picamera2):
        self.picam2 = picam2

    def get_result(self, timeout=None) -> CompletedRequest:
        return self.picam2._capture_request(timeout if timeout is not None else True)


PI_PROPERTIES = {"Model": "imx708", "ColorFilterArrangement": 0, "Location": 2, "Rotation": 180,
                 "PixelArraySize": (4608, 2592), "PixelArrayActiveAreas": [(16, 24, 4608, 2592)],
                 "UnitCellSize": (1400, 1400), "ScalerCropMaximum": (0, 0, 0, 0),
                 "SystemDevices": (20749, 20737, 20738, 20739)}
USB_PROPERTIES = {"Model": "HD Pro Webcam C920", "Location": 2, "PixelArraySize": (2304, 1536),
                  "PixelArrayActiveAreas": [(0, 0, 2304, 1536)], "SystemDevices": (20737,)}
# libcamera registers its virtual camera without SystemDevices: there is no device behind it.
VIRTUAL_PROPERTIES = {"Model": "Virtual Video Device", "Location": 2, "PixelArrayActiveAreas": [(0, 0, 1920, 1080)]}
# imx708's modes as picamera2's sensor_modes lists them: crop_limits is the part of the pixel array read.
PI_SENSOR_MODES = [
    {"format": "SRGGB10_CSI2P", "unpacked": "SRGGB10", "bit_depth": 10, "size": (1536, 864), "fps": 120.13,
     "crop_limits": (768, 432, 3072, 1728), "exposure_limits": (9, 77193582, None)},  # cropped and binned
    {"format": "SRGGB10_CSI2P", "unpacked": "SRGGB10", "bit_depth": 10, "size": (2304, 1296), "fps": 56.03,
     "crop_limits": (0, 0, 4608, 2592), "exposure_limits": (13, 112015443, None)},  # binned, whole array
    {"format": "SRGGB10_CSI2P", "unpacked": "SRGGB10", "bit_depth": 10, "size": (4608, 2592), "fps": 14.35,
     "crop_limits": (0, 0, 4608, 2592), "exposure_limits": (26, 220417486, None)},  # full resolution
]


class Picamera2:
    """picamera2.Picamera2, the part the camera uses; ``fake_picamera2()`` subclasses it per test."""

    kind = "pi"
    platform = "vc4"  # Pi 4 and earlier: picamera2's check_camera_config requires YUV lores
    cameras = [{"Model": "imx708", "Location": 2, "Rotation": 180, "Id": "/base/soc/i2c0mux/i2c@1/imx708@1a",
                "Num": 0}]
    formats = {"pi": {"BGR888": [(4608, 2592)], "YUV420": [(4608, 2592)]},
               "usb": {"YUYV": [(640, 480), (1280, 720), (1920, 1080)], "MJPEG": [(1280, 720), (1920, 1080)]},
               "virtual": {"NV12": [(1280, 720), (1920, 1080)]}}
    controls = {"pi": {"FrameDurationLimits": (8_000, 1_000_000, 33_333), "ExposureTime": (1, 1_000_000, 20_000),
                       "AfMode": (0, 2, 0), "LensPosition": (0.0, 15.0, 1.0), "NoiseReductionMode": (0, 4, 0),
                       "ScalerCrop": ((0, 0, 64, 64), (0, 0, 4608, 2592), (0, 0, 4608, 2592))},
                "usb": {"Brightness": (-64, 64, 0), "Contrast": (0, 95, 32), "ExposureTimeMode": (0, 1, 0),
                        "ExposureTime": (100, 500_000, 15_600), "AeEnable": (False, True, True)},
                # libcamera's virtual camera lists a frame rate, and does not keep it (see picamera2.py).
                "virtual": {"FrameDurationLimits": (33_333, 33_333, None), "FaceDetectMode": (0, 0, 0)}}
    scenes = [np.full((480, 640, 3), 128, np.uint8)]
    has_dma_heap = True
    truncated_jpegs: set = set()  # sequence numbers whose JPEG arrives cut short
    open_error: Exception | None = None
    list_error: Exception | None = None
    instances: list

    @classmethod
    def global_camera_info(cls) -> list:
        if cls.list_error is not None:
            raise cls.list_error  # e.g. libcamera.CameraManager.singleton() failing
        return [dict(c) for c in cls.cameras]

    def __init__(self, camera_num=0, verbose_console=None, tuning=None, allocator=None):
        if camera_num >= len(self.global_camera_info()):
            raise RuntimeError(f'No camera number {camera_num} found - use "rpicam-hello --list-cameras" to check '
                               'connected cameras')
        self.is_open = False
        try:
            if self.open_error is not None:
                raise self.open_error
            raw = {"SRGGB10_CSI2P": [m["size"] for m in PI_SENSOR_MODES]} if self.kind == "pi" else \
                self.formats[self.kind] if self.kind == "usb" else None
            self.camera = LibcameraCamera(raw, self.formats[self.kind])
            self.camera_properties = {"pi": PI_PROPERTIES, "usb": USB_PROPERTIES, "virtual": VIRTUAL_PROPERTIES}[
                self.kind] | {"Model": self.cameras[camera_num]["Model"]}
            self.camera_controls = dict(self.controls[self.kind])
            self._raw_modes = self._get_raw_modes()
            self.is_open = True
        except Exception as e:
            raise RuntimeError("Camera __init__ sequence did not complete.") from e
        self.camera_config = None
        self.pre_callback = None
        self.started = False
        self.outstanding: set = set()
        self.requests: list[CompletedRequest] = []
        self.released: list[int] = []
        self.captured = self.cancelled = 0
        self.boot_ns = time.monotonic_ns()
        self.allocator_at_configure = None
        self.allocator = DmaAllocator(self.has_dma_heap) if allocator is None else allocator
        type(self).instances.append(self)

    def _get_raw_modes(self):  # picamera2 0.3.38, word for word
        raw_config = self.camera.generate_configuration([StreamRole.Raw])
        raw_formats = raw_config.at(0).formats
        raw_modes = []
        for pix in raw_formats.pixel_formats:
            fmt = str(pix)
            raw_modes += [{'format': fmt, 'size': (size.width, size.height)} for size in raw_formats.sizes(pix)]
        return raw_modes

    def _is_rpi_camera(self):
        return "ColorFilterArrangement" in self.camera_properties

    @property
    def sensor_modes(self) -> list:
        if self.camera.raw_formats is None:
            self.camera.generate_configuration([StreamRole.Raw]).at(0)  # AttributeError, as picamera2's
        return [dict(m) for m in PI_SENSOR_MODES] if self._is_rpi_camera() else \
            [{"format": name} for name in self.camera.raw_formats]

    def create_video_configuration(self, main={}, lores=None, raw={}, transform=None, colour_space=None,
                                   buffer_count=6, controls={}, display="main", encode="main", queue=True,
                                   sensor={}, use_case="video") -> dict:
        if not self._is_rpi_camera():  # picamera2: "USB cams can't deliver a raw stream"
            raw, sensor = None, None
        main = {"format": "XBGR8888", "size": (1280, 720), "preserve_ar": True} | main
        main["size"] = (main["size"][0] - main["size"][0] % 2, main["size"][1] - main["size"][1] % 2)
        if lores is not None:
            lores = {"format": "YUV420", "size": main["size"], "preserve_ar": False} | lores
            lores["size"] = (lores["size"][0] - lores["size"][0] % 2, lores["size"][1] - lores["size"][1] % 2)
        if raw is not None:
            raw = {"format": "SRGGB10_CSI2P", "size": main["size"]} | raw
        if colour_space is None:  # picamera2's choice for video
            small = main["size"][0] < 1280 or main["size"][1] < 720
            colour_space = ColorSpace.Smpte170m() if small else ColorSpace.Rec709()
        if "NoiseReductionMode" in self.camera_controls and "FrameDurationLimits" in self.camera_controls:
            controls = {"NoiseReductionMode": 1, "FrameDurationLimits": (33333, 33333)} | controls
        return {"use_case": use_case, "transform": transform, "colour_space": colour_space,
                "buffer_count": buffer_count, "queue": queue, "main": main, "lores": lores, "raw": raw,
                "sensor": sensor, "display": display, "encode": encode, "controls": controls}

    def configure(self, camera_config=None) -> None:
        config = {k: (dict(v) if isinstance(v, dict) else v) for k, v in camera_config.items()}
        if not self._is_rpi_camera():
            config["raw"] = None
        for name in ("main", "lores"):  # picamera2's check_camera_config
            stream = config[name]
            if stream is None:
                continue
            if stream["format"] not in ("YUV420", "YVU420", "NV12", "NV21", "YUYV", "YVYU", "UYVY", "VYUY",
                                        "BGR888", "RGB888", "XBGR8888", "XRGB8888", "MJPEG"):
                raise RuntimeError(f"Bad format {stream['format']} in stream {name}")
        if config["lores"] is not None:
            (mw, mh), (lw, lh) = config["main"]["size"], config["lores"]["size"]
            if lw > mw or lh > mh:
                raise RuntimeError("lores stream dimensions may not exceed main stream")
            if self.platform == "vc4" and config["lores"]["format"] not in ("YUV420", "YVU420"):
                raise RuntimeError("lores stream must be YUV")
            assert self._is_rpi_camera(), "lores on a one-stream camera: picamera2 would index past libcamera's one"
        for name in config["controls"]:
            if name not in self.camera_controls:
                raise RuntimeError(f"Control {name} is not advertised by libcamera")
        self._validate(config["main"])
        if config["lores"] is not None:
            self._validate(config["lores"])
        if config.get("sensor"):
            assert config["sensor"]["output_size"] in [m["size"] for m in PI_SENSOR_MODES]
        self.allocator.allocate(None, config["use_case"])
        self.allocator_at_configure = self.allocator
        if self.kind == "virtual":
            config["colour_space"] = ColorSpace.Rec709()  # what libcamera's virtual pipeline sets
        self.camera_config = config

    def _validate(self, stream) -> None:
        """What libcamera's validate() adjusts, and the stride it gives."""
        listed = self.formats[self.kind]
        if self.kind != "pi":
            if stream["format"] not in listed:
                stream["format"] = next(iter(listed))
            sizes = sorted(listed[stream["format"]], key=lambda s: s[0] * s[1])
            if tuple(stream["size"]) not in sizes:
                smaller = [s for s in sizes if s[0] <= stream["size"][0] and s[1] <= stream["size"][1]]
                stream["size"] = (smaller or sizes)[-1]
        width = stream["size"][0]
        stream["stride"] = {"YUV420": -(-width // 64) * 64, "NV12": width, "YUYV": 2 * width + 64,
                            "MJPEG": 0}.get(stream["format"], -(-width // 32) * 32 * 3)  # VC4 RGB888: ALIGN(w, 32) * 3

    def camera_configuration(self) -> dict:
        return self.camera_config

    def start(self, config=None, show_preview=False) -> None:
        assert self.camera_config is not None, "Camera has not been configured"
        if self.allocator.buffers("main") is None:  # picamera2's _make_requests: len(None)
            raise TypeError("object of type 'NoneType' has no len()")
        self.started = True

    def capture_request(self, wait=None, signal_function=None, flush=None) -> CompletedRequest:
        assert self.started, "capture_request on a stopped camera would never return"
        if wait is False:
            return Job(self)
        return self._capture_request(wait)

    def wait(self, job, timeout=None):
        return job.get_result(timeout)

    def _capture_request(self, wait) -> CompletedRequest:
        # picamera2 keeps the newest completed request for the next call, so it runs dry only when the
        # application holds every request.
        if len(self.outstanding) >= self.camera_config["buffer_count"]:
            if wait in (None, True):
                raise AssertionError("every buffer is held: capture_request would wait forever")
            raise TimeoutError()  # what Job.get_result(timeout) raises once the wait is over
        request = CompletedRequest(self, self.scenes[self.captured % len(self.scenes)], self.captured)
        self.captured += 1
        self.outstanding.add(request)
        self.requests.append(request)
        if self.pre_callback is not None:  # picamera2 calls it for each completed request, before any job
            self.pre_callback(request)
        return request

    def cancel_all_and_flush(self) -> None:
        self.cancelled += 1

    def stop(self) -> None:
        self.started = False

    def close(self) -> None:
        if not self.is_open:
            return
        self.stop()
        self.is_open = False
        del self.allocator
        self.allocator = DmaAllocator(self.has_dma_heap)  # picamera2 0.3.38 does this last, whatever was in use


def fake_picamera2(kind="pi", platform="vc4", scenes=None, cameras=None, open_error=None, list_error=None,
                   formats=None, controls=None, has_dma_heap=True):
    """A Picamera2 class for one test's camera (its instances are recorded in ``instances``)."""
    attrs = {"kind": kind, "platform": platform, "open_error": open_error, "list_error": list_error, "instances": [],
             "has_dma_heap": has_dma_heap}
    if scenes is not None:
        attrs["scenes"] = scenes
    if cameras is not None:
        attrs["cameras"] = cameras
    elif kind != "pi":
        attrs["cameras"] = [{"Model": USB_PROPERTIES["Model"] if kind == "usb" else VIRTUAL_PROPERTIES["Model"],
                             "Location": 2, "Id": "/base/pci@0/usb@1-1.2:1.0-046d:082d" if kind == "usb"
                             else "Virtual0", "Num": 0}]
    if formats is not None:
        attrs["formats"] = Picamera2.formats | {kind: formats}
    if controls is not None:
        attrs["controls"] = Picamera2.controls | {kind: controls}
    return type("Picamera2", (Picamera2,), attrs)
