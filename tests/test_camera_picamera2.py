"""The picamera2 camera backend, against a fake of picamera2's own ``Picamera2`` and, on a Pi, the real one.

The fake copies the few ``Picamera2`` / ``CompletedRequest`` methods the backend calls (same names and
signatures) and plays an ISP: it scales real photos to the main and lores streams and packs them in
the pixel format asked for, byte order, YUV420 planes, stride padding and all. Where it can be it is
stricter than picamera2: a released buffer is scribbled over, and a double release raises.
"""

from __future__ import annotations

import enum
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from appliance.cameras import open_camera
from appliance.cameras.picamera2 import BUFFER_COUNT, Picamera2Camera, yuv420_to_rgb
from appliance.config import CameraConfig
from appliance.errors import CameraError

pytestmark = pytest.mark.pi

IMAGES = Path(__file__).resolve().parents[2] / "shared" / "images"
LORES = (224, 224)
STILL = (640, 480)


def photo(name: str) -> np.ndarray:
    return np.asarray(Image.open(IMAGES / name).convert("RGB"))


def solid(rgb, size=(640, 480)) -> np.ndarray:
    return np.full((size[1], size[0], 3), rgb, dtype=np.uint8)


# --- A fake ISP: RGB in, picamera2's stream layouts out ---------------------------------------------

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


def pack_yuv420(rgb: np.ndarray, colour_space: ColorSpace, stride: int) -> np.ndarray:
    """YUV420 planes with padded rows, shaped (height * 3 // 2, stride) as picamera2's make_array returns it."""
    h, w, _ = rgb.shape
    ycc = rgb_to_ycbcr(rgb, colour_space)
    chroma = ycc[..., 1:].reshape(h // 2, 2, w // 2, 2, 2).mean(axis=(1, 3))  # 2x2 subsampling
    buffer = np.full(stride * h * 3 // 2, 0xA5, dtype=np.uint8)  # padding bytes that would show as a stripe
    planes = [(np.rint(ycc[..., 0]), stride, h)] + [(np.rint(chroma[..., i]), stride // 2, h // 2) for i in (0, 1)]
    offset = 0
    for plane, plane_stride, rows in planes:
        view = buffer[offset:offset + plane_stride * rows].reshape(rows, plane_stride)
        view[:, :plane.shape[1]] = np.clip(plane, 0, 255)
        offset += plane_stride * rows
    return buffer.reshape(h * 3 // 2, stride)


def pack(rgb: np.ndarray, stream: dict, colour_space: ColorSpace) -> np.ndarray:
    fmt = stream["format"]
    if fmt == "YUV420":
        return pack_yuv420(rgb, colour_space, stream["stride"])
    if fmt == "BGR888":  # picamera2/libcamera "BGR888" is [R, G, B] in memory
        return rgb.copy()
    if fmt == "RGB888":
        return rgb[..., ::-1].copy()
    raise AssertionError(f"the fake does not pack {fmt}")


def scale(rgb: np.ndarray, size) -> np.ndarray:
    """The whole field of view, area-averaged, as the ISP scales it."""
    return np.asarray(Image.fromarray(rgb).resize(tuple(size), Image.BOX))


class FakeCompletedRequest:
    """picamera2.request.CompletedRequest: make_array, get_metadata, release."""

    def __init__(self, picam2: FakePicamera2, scene: np.ndarray, sequence: int):
        self.picam2, self.sequence = picam2, sequence
        config = picam2.camera_config
        self.truth = {name: scale(scene, config[name]["size"]) for name in ("main", "lores")}
        self.buffers = {name: pack(self.truth[name], config[name], config["colour_space"]) for name in self.truth}
        self.metadata = {"SensorTimestamp": picam2.boot_ns + sequence * 200_000_000, "ExposureTime": 10_000}
        self.ref_count = 1

    def make_array(self, name: str) -> np.ndarray:
        assert self.ref_count > 0, "make_array on a released request"
        return self.buffers[name]  # a view: stricter than picamera2, which copies

    def get_metadata(self) -> dict:
        return dict(self.metadata)

    def release(self) -> None:
        self.ref_count -= 1
        if self.ref_count < 0:
            raise RuntimeError("CompletedRequest: lock now has negative ref_count")
        for buffer in self.buffers.values():
            buffer[...] = 0  # the camera reuses the buffer
        self.picam2.outstanding.discard(self)
        self.picam2.released.append(self.sequence)


class FakePicamera2:
    """picamera2.Picamera2, the part the backend uses; subclassed per test to set the scene."""

    cameras = [{"Model": "imx708", "Location": 2, "Rotation": 180, "Id": "/base/soc/i2c0mux/i2c@1/imx708@1a", "Num": 0}]
    lores_must_be_yuv = True  # Pi 4 and earlier (VC4); picamera2's check_camera_config enforces it
    scenes = [photo("parrot.jpg")]
    open_error: Exception | None = None
    instances: list

    @staticmethod
    def global_camera_info() -> list:
        raise NotImplementedError  # replaced per subclass

    def __init__(self, camera_num=0, verbose_console=None, tuning=None, allocator=None):
        info = self.global_camera_info()[camera_num]  # IndexError with no camera, as picamera2 0.3
        if self.open_error is not None:
            raise self.open_error
        self.camera_properties = {"Model": info["Model"], "ColorFilterArrangement": 0}
        self.camera_controls = {"FrameDurationLimits": (8_000, 1_000_000, 33_333), "ExposureTime": (1, 1_000_000, 20_000)}
        self.camera_config = None
        self.started, self.is_open = False, True
        self.outstanding: set = set()
        self.requests: list[FakeCompletedRequest] = []
        self.released: list[int] = []
        self.captured = self.cancelled = 0
        self.boot_ns = time.monotonic_ns()
        type(self).instances.append(self)

    def create_video_configuration(self, main={}, lores=None, raw={}, transform=None, colour_space=None,
                                   buffer_count=6, controls={}, display="main", encode="main", queue=True,
                                   sensor={}, use_case="video") -> dict:
        main = {"format": "XBGR8888", "size": (1280, 720)} | main
        main["size"] = (main["size"][0] - main["size"][0] % 2, main["size"][1] - main["size"][1] % 2)
        if lores is not None:
            lores = {"format": "YUV420", "size": main["size"]} | lores
            lores["size"] = (lores["size"][0] - lores["size"][0] % 2, lores["size"][1] - lores["size"][1] % 2)
        if colour_space is None:  # picamera2's choice for video
            small = main["size"][0] < 1280 or main["size"][1] < 720
            colour_space = ColorSpace.Smpte170m() if small else ColorSpace.Rec709()
        return {"use_case": use_case, "transform": transform, "colour_space": colour_space, "buffer_count": buffer_count,
                "queue": queue, "main": main, "lores": lores, "raw": raw, "sensor": sensor, "display": display,
                "encode": encode, "controls": {"FrameDurationLimits": (33333, 33333)} | controls}

    def configure(self, camera_config=None) -> None:
        config = {k: (dict(v) if isinstance(v, dict) else v) for k, v in camera_config.items()}
        if self.lores_must_be_yuv and config["lores"]["format"] not in ("YUV420", "YVU420"):
            raise RuntimeError("lores stream must be YUV")
        for name in config["controls"]:
            if name not in self.camera_controls:
                raise RuntimeError(f"Control {name} is not advertised by libcamera")
        for name in ("main", "lores"):
            stream = config[name]
            width = stream["size"][0]
            stream["stride"] = -(-width // 64) * 64 if stream["format"] == "YUV420" else width * 3
        self.camera_config = config

    def camera_configuration(self) -> dict:
        return self.camera_config

    def start(self, config=None, show_preview=False) -> None:
        assert self.camera_config is not None, "Camera has not been configured"
        self.started = True

    def capture_request(self, wait=None, signal_function=None, flush=None) -> FakeCompletedRequest:
        assert self.started, "capture_request on a stopped camera would never return"
        # picamera2 keeps one completed request queued; the camera needs at least one more to fill.
        if len(self.outstanding) >= self.camera_config["buffer_count"] - 2:
            if wait in (None, True):
                raise AssertionError("every buffer is held: capture_request would wait forever")
            raise TimeoutError()  # what Job.get_result(timeout) raises once the wait is over
        request = FakeCompletedRequest(self, self.scenes[self.captured % len(self.scenes)], self.captured)
        self.captured += 1
        self.outstanding.add(request)
        self.requests.append(request)
        return request

    def cancel_all_and_flush(self) -> None:
        self.cancelled += 1

    def stop(self) -> None:
        self.started = False

    def close(self) -> None:
        self.stop()
        self.is_open = False


def fake_picamera2(scenes=None, cameras=None, lores_must_be_yuv=True, open_error=None):
    attrs = {"lores_must_be_yuv": lores_must_be_yuv, "open_error": open_error, "instances": []}
    if scenes is not None:
        attrs["scenes"] = scenes
    listed = FakePicamera2.cameras if cameras is None else cameras
    attrs["global_camera_info"] = staticmethod(lambda: [dict(c) for c in listed])
    return type("Picamera2", (FakePicamera2,), attrs)


def real_picamera2():
    try:
        from picamera2 import Picamera2
    except Exception as e:
        pytest.skip(f"picamera2 is not importable here ({e}); runs on a Raspberry Pi with python3-picamera2")
    if not Picamera2.global_camera_info():
        pytest.skip("picamera2 is installed but no camera is connected")
    return Picamera2


@pytest.fixture(params=["fake-pi4", "fake-pi5", "real"])
def picamera2_class(request):
    """Each platform the backend must handle: VC4 (lores must be YUV420), PiSP (lores may be RGB), real."""
    if request.param == "real":
        return real_picamera2()
    return fake_picamera2(lores_must_be_yuv=request.param == "fake-pi4")


def camera(picamera2_class, fps=5.0, still_size=STILL, lores_size=LORES) -> Picamera2Camera:
    config = CameraConfig(backend="picamera2", fps=fps, still_size=still_size)
    return Picamera2Camera.from_config(config, lores_size, picamera2_class=picamera2_class)


def take(cam: Picamera2Camera, n: int, read_main=False) -> list:
    """The first n frames' (lores, main or None, timestamp_s), releasing each frame as the pipeline does."""
    taken = []
    for frame in cam.frames():
        taken.append((frame.lores, frame.main.array() if read_main else None, frame.timestamp_s))
        frame.release()
        if len(taken) == n:
            break
    return taken


# --- The contract, on every platform ---------------------------------------------------------------

def test_lores_is_rgb_uint8_at_exactly_the_model_size_and_main_at_the_still_size(picamera2_class):
    with camera(picamera2_class) as cam:
        [(lores, main, _)] = take(cam, 1, read_main=True)
    assert lores.dtype == np.uint8 and lores.shape == (224, 224, 3)
    assert main.dtype == np.uint8 and main.shape == (480, 640, 3)


def test_many_more_frames_than_buffers_flow_because_each_is_given_back(picamera2_class):
    with camera(picamera2_class, fps=30.0) as cam:
        taken = take(cam, 4 * BUFFER_COUNT, read_main=True)
    timestamps = [t for _, _, t in taken]
    assert len(taken) == 4 * BUFFER_COUNT
    assert timestamps == sorted(timestamps) and len(set(timestamps)) == len(timestamps)


def test_stop_from_another_thread_ends_frames(picamera2_class):
    with camera(picamera2_class, fps=30.0) as cam:
        seen, first = [], threading.Event()

        def consume():
            for frame in cam.frames():
                seen.append(frame.timestamp_s)
                frame.release()
                first.set()

        consumer = threading.Thread(target=consume, daemon=True)
        consumer.start()
        assert first.wait(10)
        cam.stop()
        consumer.join(10)
        assert not consumer.is_alive()


def test_close_twice_is_safe_and_a_closed_camera_can_start_again(picamera2_class):
    cam = camera(picamera2_class)
    cam.start()
    cam.close()
    cam.close()
    cam.start()
    assert len(take(cam, 1)) == 1
    cam.close()


def test_describe_names_the_sensor_and_both_streams(picamera2_class):
    with camera(picamera2_class) as cam:
        text = cam.describe()
    assert text.startswith("picamera2 ") and "640x480 + lores 224x224" in text


# --- Pixels: channel order, YUV420, same request ----------------------------------------------------

@pytest.mark.parametrize("pi", ["pi4", "pi5"])
@pytest.mark.parametrize("colour, name", [((255, 0, 0), "red"), ((0, 255, 0), "green"), ((0, 0, 255), "blue")])
def test_a_pure_colour_comes_out_that_colour(pi, colour, name):
    picamera2_class = fake_picamera2(scenes=[solid(colour)], lores_must_be_yuv=pi == "pi4")
    with camera(picamera2_class) as cam:
        [(lores, main, _)] = take(cam, 1, read_main=True)
    for image in (lores, main):
        assert np.abs(image.astype(int) - colour).max() <= 2, f"{name} came out as {image[0, 0]}"


def test_pi4_asks_for_yuv420_lores_and_pi5_for_rgb():
    pi4, pi5 = fake_picamera2(lores_must_be_yuv=True), fake_picamera2(lores_must_be_yuv=False)
    for picamera2_class, expected in ((pi4, "YUV420"), (pi5, "BGR888")):
        with camera(picamera2_class) as cam:
            assert picamera2_class.instances[0].camera_config["lores"]["format"] == expected
            assert ("YUV420 to RGB" in cam.describe()) == (expected == "YUV420")


@pytest.mark.parametrize("still_size, matrix", [((640, 480), "Rec601"), ((1280, 720), "Rec709")])
def test_yuv420_lores_of_a_photo_matches_the_photo(still_size, matrix):
    # picamera2's video colour space is SMPTE 170M (BT.601) below 1280x720 and Rec709 from there on,
    # both at studio levels; decoding with the other matrix or range is off by far more than this.
    picamera2_class = fake_picamera2(scenes=[photo("kite_and_cold.jpg")])
    with camera(picamera2_class, still_size=still_size) as cam:
        [(lores, _, _)] = take(cam, 1)
        truth = picamera2_class.instances[0].requests[0].truth["lores"]
        assert f"({matrix}, limited range)" in cam.describe()
    error = np.abs(lores.astype(int) - truth)
    assert error.mean() < 2.0 and np.abs(lores.mean(axis=(0, 1)) - truth.mean(axis=(0, 1))).max() < 1.0


def test_main_is_the_full_image_of_the_same_request_and_outlives_it():
    scenes = [photo("parrot.jpg"), photo("bird.bmp"), photo("hot_dog.jpg")]
    picamera2_class = fake_picamera2(scenes=scenes)
    with camera(picamera2_class) as cam:
        mains = [main for _, main, _ in take(cam, 3, read_main=True)]  # read, then released and zeroed
    truths = [request.truth["main"] for request in picamera2_class.instances[0].requests]
    for i, main in enumerate(mains):
        assert main.shape == (480, 640, 3)
        assert [np.array_equal(main, truth) for truth in truths] == [j == i for j in range(3)]


def test_a_lores_size_the_camera_cannot_give_is_resized_to_the_model_size():
    picamera2_class = fake_picamera2()  # picamera2 rounds stream sizes down to even: 299 -> 298
    with camera(picamera2_class, lores_size=(299, 299)) as cam:
        [(lores, _, _)] = take(cam, 1)
        assert picamera2_class.instances[0].camera_config["lores"]["size"] == (298, 298)
    assert lores.shape == (299, 299, 3)


def test_yuv420_to_rgb_matches_pillow_for_full_range_bt601_with_padded_rows():
    rgb = scale(photo("grace_hopper.bmp"), (120, 90))  # 90 rows: 45 chroma rows, an odd count
    yuv = pack_yuv420(rgb, ColorSpace.Sycc(), stride=128)
    y = yuv.reshape(-1)[:128 * 90].reshape(90, 128)[:, :120]
    chroma = yuv.reshape(-1)[128 * 90:].reshape(2, 45, 64)[:, :, :60].repeat(2, axis=1).repeat(2, axis=2)
    expected = np.asarray(Image.fromarray(np.dstack([y, chroma[0], chroma[1]]), "YCbCr").convert("RGB"))
    got = yuv420_to_rgb(yuv, (120, 90), "Rec601", full_range=True)
    assert got.shape == (90, 120, 3) and np.abs(got.astype(int) - expected).max() <= 2


@pytest.mark.parametrize("colour_space", [ColorSpace.Smpte170m(), ColorSpace.Rec709()], ids=["bt601", "bt709"])
def test_yuv420_to_rgb_inverts_studio_range_encoding(colour_space):
    blocks = np.random.default_rng(7).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    rgb = blocks.repeat(2, axis=0).repeat(2, axis=1)  # 2x2 blocks, so chroma subsampling loses nothing
    yuv = pack_yuv420(rgb, colour_space, stride=128)
    got = yuv420_to_rgb(yuv, (96, 64), colour_space.ycbcrEncoding.name, full_range=False)
    # Studio range has 219 luma levels for 256, so an 8-bit round trip is off by a few at most.
    assert np.abs(got.astype(int) - rgb).max() <= 4


# --- Buffers go back exactly once ------------------------------------------------------------------

def test_a_discarded_frame_is_released_without_copying_main_and_main_cannot_be_read_after():
    picamera2_class = fake_picamera2()
    with camera(picamera2_class) as cam:
        frames = cam.frames()
        frame = next(frames)
        frame.release()
        frame.release()
        fake = picamera2_class.instances[0]
        assert fake.released == [0] and not fake.outstanding
        with pytest.raises(CameraError, match="after its frame was released"):
            frame.main.array()


def test_every_request_is_released_once_when_the_consumer_stops_early_holding_frames():
    picamera2_class = fake_picamera2()
    cam = camera(picamera2_class)
    cam.start()
    frames = cam.frames()
    held = [next(frames), next(frames)]
    held[0].main.array()
    frames.close()  # the consumer walks away holding two frames
    cam.close()
    fake = picamera2_class.instances[0]
    assert sorted(fake.released) == [0, 1] and not fake.outstanding and not fake.is_open
    for frame in held:
        frame.release()  # late releases after close are harmless, not double releases
    assert sorted(fake.released) == [0, 1]


def test_a_camera_that_stops_delivering_is_an_error_not_a_hang():
    picamera2_class = fake_picamera2()
    with camera(picamera2_class) as cam:
        frames = cam.frames()
        hoard = [next(frames) for _ in range(BUFFER_COUNT - 2)]  # a consumer that never releases
        with pytest.raises(CameraError, match="sent no frame"):
            next(frames)
        assert picamera2_class.instances[0].cancelled == 1
    assert len(picamera2_class.instances[0].released) == len(hoard)


# --- Settings and metadata -------------------------------------------------------------------------

def test_fps_becomes_frame_duration_limits_and_zero_keeps_picamera2s_default():
    for fps, expected in ((5.0, (200_000, 200_000)), (0.0, (33333, 33333))):
        picamera2_class = fake_picamera2()
        with camera(picamera2_class, fps=fps):
            assert picamera2_class.instances[0].camera_config["controls"]["FrameDurationLimits"] == expected


def test_frame_times_and_source_come_from_the_request():
    picamera2_class = fake_picamera2()
    with camera(picamera2_class) as cam:
        before = time.time()
        frame = next(cam.frames())
        request = picamera2_class.instances[0].requests[0]
        assert frame.timestamp_s == request.metadata["SensorTimestamp"] / 1e9
        assert abs(frame.timestamp_s - time.monotonic()) < 5
        assert before <= frame.captured_at_s <= time.time()
        assert frame.source == "picamera2:0:imx708"
        frame.release()


# --- Errors a person can meet ----------------------------------------------------------------------

def test_without_picamera2_start_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)  # makes `import picamera2` fail, installed or not
    cam = open_camera(CameraConfig(backend="picamera2"), LORES)
    with pytest.raises(CameraError, match=r"sudo apt install python3-picamera2.*backend = \"replay\""):
        cam.start()


def test_importing_the_backend_does_not_import_picamera2():
    code = "import sys, appliance.cameras.picamera2; print('picamera2' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parents[1])
    assert result.stdout.strip() == "False"


def test_no_camera_connected_says_how_to_check():
    with pytest.raises(CameraError, match="no camera found.*rpicam-hello --list-cameras.*camera_auto_detect=1"):
        camera(fake_picamera2(cameras=[])).start()


def test_a_camera_in_use_elsewhere_is_a_camera_error():
    busy = fake_picamera2(open_error=RuntimeError("Camera __init__ sequence did not complete."))
    with pytest.raises(CameraError, match="could not be opened.*another program"):
        camera(busy).start()


def test_frames_before_start_is_a_camera_error():
    with pytest.raises(CameraError, match="start"):
        next(camera(fake_picamera2()).frames())


def test_a_detached_main_image_is_the_same_requests_image_and_survives_release(picamera2_class):
    cam = camera(picamera2_class)
    cam.start()
    try:
        frame = next(iter(cam.frames()))
        detached = frame.main.detach()
        expected = detached.array().copy()
        frame.release()
        assert np.array_equal(detached.array(), expected)
        assert detached.array().shape[:2] == (STILL[1], STILL[0])
    finally:
        cam.close()
