"""The picamera2 camera, against a fake of picamera2's own interface (tests/fake_picamera2.py).

The same contract runs for real, against libcamera's virtual camera and the real picamera2, in the
camera VM: tests/real_camera/test_picamera2_contract.py.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import IMAGES, REPO
from fake_picamera2 import PI_SENSOR_MODES, Allocator, LibcameraAllocator, StreamRole, fake_picamera2
from PIL import Image

from appliance.cameras import open_camera
from appliance.cameras import pacing
from appliance.cameras.picamera2 import (AF_MODE_CONTINUOUS, BUFFER_COUNT, FREE_RUNNING_FRAME_US, Picamera2Camera,
                                         full_field_mode, nearest_listed_size)
from appliance.cameras.picamera2_stack import Picamera2Stack
from appliance.cameras.replay import ReplayCamera
from appliance.config import CameraConfig
from appliance.errors import CameraError
from appliance.pipeline.loop import FRAMES_HELD

pytestmark = pytest.mark.pi

LORES = (224, 224)
STILL = (640, 480)
KINDS = ["pi4", "pi5", "usb", "virtual"]


def photo(name: str) -> np.ndarray:
    return np.asarray(Image.open(IMAGES / name).convert("RGB"))


def solid(rgb, size=(640, 480)) -> np.ndarray:
    return np.full((size[1], size[0], 3), rgb, dtype=np.uint8)


def fake(kind: str, **options):
    """A fake Picamera2 class: pi4 (VC4), pi5 (PiSP), usb (YUYV and MJPEG) or virtual (NV12)."""
    if kind in ("pi4", "pi5"):
        return fake_picamera2("pi", platform="vc4" if kind == "pi4" else "pisp", **options)
    return fake_picamera2(kind, **options)


def stack(picamera2_class, cma_free_bytes=None) -> Picamera2Stack:
    """The picamera2 parts the camera uses, with a DMA heap where the fake system has one."""
    heap = "/dev/null" if picamera2_class.has_dma_heap else "/nonexistent/dma_heap/linux,cma"
    return Picamera2Stack(picamera2_class, StreamRole.Raw, StreamRole.VideoRecording, Allocator, LibcameraAllocator,
                          (heap,), picamera2_class.platform == "vc4", cma_free_bytes)


def camera(picamera2_class, fps=5.0, still_size=STILL, lores_size=LORES, index=0, **options) -> Picamera2Camera:
    config = CameraConfig(backend="picamera2", fps=fps, still_size=still_size, index=index)
    return Picamera2Camera.from_config(config, lores_size, stack=stack(picamera2_class, **options))


def take(cam: Picamera2Camera, n: int, read_main=False) -> list:
    """The first n frames' (lores, main or None, timestamp_s), releasing each frame as the pipeline does."""
    taken = []
    for frame in cam.frames():
        taken.append((frame.lores, frame.main.array() if read_main else None, frame.timestamp_s))
        frame.release()
        if len(taken) == n:
            break
    return taken


def instance(picamera2_class):
    [picam2] = picamera2_class.instances[-1:]
    return picam2


# --- The contract, on every kind of camera ------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_lores_is_rgb_uint8_at_exactly_the_model_size_and_main_at_the_chosen_size(kind):
    picamera2_class = fake(kind)
    with camera(picamera2_class) as cam:
        [(lores, main, _)] = take(cam, 1, read_main=True)
    assert lores.dtype == np.uint8 and lores.shape == (224, 224, 3)
    # A one-stream camera gives the smallest size it lists that covers still_size (the virtual one: 1280x720).
    assert main.dtype == np.uint8 and main.shape == ((720, 1280, 3) if kind == "virtual" else (480, 640, 3))


@pytest.mark.parametrize("kind", KINDS)
def test_many_more_frames_than_buffers_flow_because_each_is_given_back(kind):
    with camera(fake(kind), fps=30.0) as cam:
        taken = take(cam, 4 * BUFFER_COUNT, read_main=True)
    timestamps = [t for _, _, t in taken]
    assert len(taken) == 4 * BUFFER_COUNT
    assert timestamps == sorted(timestamps) and len(set(timestamps)) == len(timestamps)


@pytest.mark.parametrize("kind", KINDS)
def test_stop_from_another_thread_ends_frames(kind):
    with camera(fake(kind), fps=30.0) as cam:
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


@pytest.mark.parametrize("kind", KINDS)
def test_close_twice_is_safe_and_a_closed_camera_can_start_again(kind):
    cam = camera(fake(kind))
    cam.start()
    cam.close()
    cam.close()
    cam.start()
    assert len(take(cam, 1)) == 1
    cam.close()


@pytest.mark.parametrize("kind, expected", [("pi4", "640x480 + lores 224x224 YUV420 to RGB"),
                                            ("pi5", "640x480 + lores 224x224 RGB"),
                                            ("usb", "HD Pro Webcam C920 640x480 YUYV to RGB (Rec601, limited "
                                                    "range) (one stream"),
                                            ("virtual", "Virtual Video Device 1280x720 NV12 to RGB (Rec601, full "
                                                        "range) (one stream")])
def test_describe_names_the_camera_and_its_streams(kind, expected):
    with camera(fake(kind)) as cam:
        assert expected in cam.describe()


@pytest.mark.parametrize("kind", KINDS)
def test_frame_times_and_source_come_from_the_request(kind):
    picamera2_class = fake(kind)
    with camera(picamera2_class) as cam:
        before = time.time()
        frames = cam.frames()
        frame = next(frames)
        request = instance(picamera2_class).requests[0]
        assert frame.timestamp_s == request.metadata["SensorTimestamp"] / 1e9
        assert abs(frame.timestamp_s - time.monotonic()) < 5
        assert before <= frame.captured_at_s <= time.time()
        assert frame.source == f"picamera2:0:{instance(picamera2_class).camera_properties['Model']}"
        assert cam.model == instance(picamera2_class).camera_properties["Model"]  # the kept JPEGs' EXIF Model
        frame.release()
        assert next(frames).timestamp_s > frame.timestamp_s


# --- Pixels: channel order, YUV, same request ---------------------------------------------------------

@pytest.mark.parametrize("kind, formats", [("pi4", None), ("pi5", None), ("usb", {"YUYV": [(640, 480)]}),
                                           ("usb", {"MJPEG": [(640, 480)]}), ("virtual", None)],
                         ids=["pi4", "pi5", "usb-yuyv", "usb-mjpeg", "virtual-nv12"])
@pytest.mark.parametrize("colour", [(255, 0, 0), (0, 255, 0), (0, 0, 255), (40, 200, 120)],
                         ids=["red", "green", "blue", "teal"])
def test_a_pure_colour_comes_out_that_colour(kind, formats, colour):
    picamera2_class = fake(kind, scenes=[solid(colour)], formats=formats)
    with camera(picamera2_class) as cam:
        [(lores, main, _)] = take(cam, 1, read_main=True)
    for image in (lores, main):
        assert np.abs(image.astype(int) - colour).max() <= 3, f"{colour} came out as {image[0, 0]}"


@pytest.mark.parametrize("still_size, matrix", [((640, 480), "Rec601"), ((1280, 720), "Rec709")])
def test_yuv420_lores_of_a_photo_matches_the_photo(still_size, matrix):
    # picamera2's video colour space is SMPTE 170M (BT.601) below 1280x720 and Rec709 from there on,
    # both at studio levels; decoding with the other matrix or range is off by far more than this.
    picamera2_class = fake("pi4", scenes=[photo("kite_and_cold.jpg")])
    with camera(picamera2_class, still_size=still_size) as cam:
        [(lores, _, _)] = take(cam, 1)
        truth = instance(picamera2_class).requests[0].truth["lores"]
        assert f"({matrix}, limited range)" in cam.describe()
    error = np.abs(lores.astype(int) - truth)
    assert error.mean() < 2.0 and np.abs(lores.mean(axis=(0, 1)) - truth.mean(axis=(0, 1))).max() < 1.0


@pytest.mark.parametrize("kind", ["pi4", "usb", "virtual"])
def test_main_is_the_full_image_of_the_same_request_and_outlives_it(kind):
    scenes = [photo("parrot.jpg"), photo("bird.bmp"), photo("hot_dog.jpg")]
    picamera2_class = fake(kind, scenes=scenes)
    with camera(picamera2_class) as cam:
        mains = [main for _, main, _ in take(cam, 3, read_main=True)]  # read, then released and zeroed
    truths = [request.truth["main"].astype(int) for request in instance(picamera2_class).requests]
    for i, main in enumerate(mains):
        # Which scene each main is: nearest to its own request's image (YUV rounds, so not equal).
        assert int(np.argmin([np.abs(main - truth).mean() for truth in truths])) == i


def test_a_lores_size_the_camera_cannot_give_is_resized_to_the_model_size():
    picamera2_class = fake("pi4")  # picamera2 rounds stream sizes down to even: 299 -> 298
    with camera(picamera2_class, lores_size=(299, 299)) as cam:
        [(lores, _, _)] = take(cam, 1)
        assert instance(picamera2_class).camera_config["lores"]["size"] == (298, 298)
    assert lores.shape == (299, 299, 3)


# --- One-stream cameras: the decision, the size, the format, lores in software ----------------------------

@pytest.mark.parametrize("kind, streams", [("pi4", {"main", "lores"}), ("pi5", {"main", "lores"}),
                                           ("usb", {"main"}), ("virtual", {"main"})])
def test_only_cameras_with_a_colour_filter_arrangement_are_asked_for_two_streams(kind, streams):
    # The fake asserts if a one-stream camera is configured with lores (real picamera2 would index past
    # libcamera's single stream configuration): the decision is made before configure().
    picamera2_class = fake(kind)
    with camera(picamera2_class):
        config = instance(picamera2_class).camera_config
    assert {name for name in ("main", "lores") if config[name] is not None} == streams
    assert ("ColorFilterArrangement" in instance(picamera2_class).camera_properties) == (len(streams) == 2)


@pytest.mark.parametrize("still_size, expected", [((1920, 1080), (1920, 1080)), ((1000, 1000), (1920, 1080)),
                                                  ((640, 480), (640, 480)), ((4000, 3000), (2592, 1944)),
                                                  ((700, 480), (1280, 720))])
def test_a_one_stream_camera_is_asked_for_the_smallest_listed_size_that_covers_still_size(still_size, expected):
    listed = [(640, 480), (1280, 720), (1920, 1080), (2592, 1944)]
    assert nearest_listed_size(listed, still_size) == expected
    picamera2_class = fake("usb", formats={"YUYV": listed})
    with camera(picamera2_class, still_size=still_size) as cam:
        assert instance(picamera2_class).camera_config["main"]["size"] == expected
        assert f"{expected[0]}x{expected[1]} YUYV to RGB" in cam.describe()


@pytest.mark.parametrize("formats, expected", [
    ({"MJPEG": [(1280, 720), (1920, 1080)], "YUYV": [(640, 480), (1920, 1080)]}, "YUYV"),  # cheaper to convert
    ({"MJPEG": [(1280, 720), (1920, 1080)], "YUYV": [(640, 480), (1280, 720)]}, "MJPEG"),  # the size decides
])
def test_the_format_is_the_cheapest_to_convert_among_those_listing_the_chosen_size(formats, expected):
    picamera2_class = fake("usb", formats=formats)
    with camera(picamera2_class, still_size=(1920, 1080)):
        assert instance(picamera2_class).camera_config["main"]["format"] == expected


@pytest.mark.parametrize("formats", [{"MJPEG": [(640, 480)]}, {"YUYV": [(640, 480)]}, {"NV12": [(640, 480)]}],
                         ids=["mjpeg", "yuyv", "nv12"])
def test_lores_from_a_one_stream_camera_is_the_replay_cameras_scaling_of_its_main(formats, tmp_path):
    picamera2_class = fake("usb", formats=formats, scenes=[photo("parrot.jpg")])
    with camera(picamera2_class) as cam:
        [(lores, main, _)] = take(cam, 1, read_main=True)
    Image.fromarray(main).save(tmp_path / "main.png")
    replay = ReplayCamera(LORES, files=[tmp_path / "main.png"], fps=0, loop=False)
    [replayed] = [frame.lores for frame in replay.frames()]
    if "MJPEG" in formats:  # an RGB main: the same function on the same image, to the last bit
        assert np.array_equal(lores, replayed)
    else:  # YUV is averaged, then converted: equal but where main's pixels were rounded or clipped one by one
        difference = np.abs(lores.astype(int) - replayed)
        assert difference.mean() < 0.4 and np.mean(difference > 2) < 0.005


def test_a_camera_that_offers_no_format_this_appliance_reads_is_refused_before_configure():
    picamera2_class = fake("usb", formats={"H264": [(1920, 1080)], "SRGGB10": [(1920, 1080)]})
    with pytest.raises(CameraError, match=r"offers H264, SRGGB10, none of which .* converts to RGB .*"
                                          r"use a camera that offers YUYV, NV12 or MJPEG"):
        camera(picamera2_class).start()
    assert instance(picamera2_class).camera_config is None and not instance(picamera2_class).is_open


def test_a_jpeg_frame_that_does_not_decode_is_skipped(caplog):
    picamera2_class = fake("usb", formats={"MJPEG": [(640, 480)]}, scenes=[photo("bird.bmp")])
    picamera2_class.truncated_jpegs = {1}  # a USB transfer cut short
    with camera(picamera2_class) as cam:
        [(_, _, first), (_, _, second)] = take(cam, 2)
    assert "did not decode" in caplog.text and second > first
    assert instance(picamera2_class).released == [0, 1, 2]


# --- Raspberry Pi cameras: field of view, focus, frame rate, memory -----------------------------------------

def test_the_sensor_mode_reads_the_whole_pixel_array_and_covers_still_size():
    assert full_field_mode(PI_SENSOR_MODES, (1920, 1080))["size"] == (2304, 1296)  # binned, not the cropped 1536x864
    assert full_field_mode(PI_SENSOR_MODES, (640, 480))["size"] == (2304, 1296)
    assert full_field_mode(PI_SENSOR_MODES, (4608, 2592))["size"] == (4608, 2592)
    assert full_field_mode(PI_SENSOR_MODES, (9000, 6000))["size"] == (4608, 2592)
    assert full_field_mode([{"format": "YUYV"}], (640, 480)) is None
    picamera2_class = fake("pi5")
    with camera(picamera2_class, still_size=(1280, 720)):
        config = instance(picamera2_class).camera_config
    assert config["sensor"] == {"output_size": (2304, 1296), "bit_depth": 10}
    assert config["raw"] is None  # no raw buffers asked for: libcamera keeps its own


@pytest.mark.parametrize("kind, expected", [("pi4", AF_MODE_CONTINUOUS), ("usb", None)])
def test_a_camera_that_can_focus_focuses_continuously(kind, expected):
    picamera2_class = fake(kind)
    with camera(picamera2_class):
        assert instance(picamera2_class).camera_config["controls"].get("AfMode") == expected


def test_fps_becomes_frame_duration_limits_and_zero_lets_exposure_run_long():
    for fps, expected in ((5.0, (200_000, 200_000)), (0.0, FREE_RUNNING_FRAME_US)):
        picamera2_class = fake("pi4")
        with camera(picamera2_class, fps=fps):
            assert instance(picamera2_class).camera_config["controls"]["FrameDurationLimits"] == expected
    assert FREE_RUNNING_FRAME_US[1] >= 500_000  # half a second of exposure at dusk


class _Clock(threading.Event):
    """The camera's stopping event with a clock that waiting moves on: time.monotonic as the camera sees it."""

    def __init__(self):
        super().__init__()
        self.now_s, self.waits = 1000.0, []

    def monotonic(self) -> float:
        return self.now_s

    def wait(self, timeout=None) -> bool:
        self.waits.append(round(timeout, 6))
        self.now_s += max(timeout, 0.0)
        return self.is_set()


def test_a_camera_that_cannot_be_asked_for_a_frame_rate_rests_between_frames_paced_here(monkeypatch):
    picamera2_class = fake("usb")  # no FrameDurationLimits
    clock = _Clock()
    monkeypatch.setattr(pacing, "time", SimpleNamespace(monotonic=clock.monotonic))
    with camera(picamera2_class, fps=2.0) as cam:
        cam._stopping = clock
        frames = cam.frames()
        taken = []
        for _ in range(4):
            frame = next(frames)
            taken.append(clock.now_s)
            picam2 = instance(picamera2_class)
            # Between frames every request the camera completed is kept from it: it has nothing to fill.
            assert all(request.ref_count == 1 for request in picam2.outstanding) and len(picam2.outstanding) == 1
            frame.release()
            clock.now_s += 0.1  # the loop's work on the frame
        frames.close()
    # 1/fps apart, the loop's own time included; the camera made only the frames taken (it used to
    # make and throw away those that came sooner).
    assert [round(b - a, 6) for a, b in zip(taken, taken[1:])] == [0.5, 0.5, 0.5] and clock.waits == [0.4, 0.4, 0.4]
    assert picam2.captured == 4 and picam2.camera_config["queue"] is False
    assert "FrameDurationLimits" not in picam2.camera_config["controls"]
    assert not picam2.outstanding and sorted(picam2.released) == [0, 1, 2, 3]  # close() gave back the parked one


def test_the_virtual_camera_lists_a_frame_rate_it_ignores_so_it_is_paced_here_even_free_running():
    for fps in (5.0, 0.0):
        picamera2_class = fake("virtual")
        with camera(picamera2_class, fps=fps) as cam:
            take(cam, 3)
            picam2 = instance(picamera2_class)
            assert picam2.pre_callback == cam._pacing.park and picam2.camera_config["queue"] is False
            assert "FrameDurationLimits" not in picam2.camera_config["controls"]
        assert picam2.captured == 3 and not picam2.outstanding


def test_a_webcam_running_free_is_not_paced_here():
    picamera2_class = fake("usb")
    with camera(picamera2_class, fps=0.0) as cam:
        take(cam, 3)
        picam2 = instance(picamera2_class)
        assert picam2.pre_callback is None and picam2.camera_config["queue"] is True
    assert picam2.released == [0, 1, 2]


def test_a_camera_that_can_be_asked_for_a_frame_rate_is_not_paced_here():
    picamera2_class = fake("pi4")
    with camera(picamera2_class, fps=2.0) as cam:
        take(cam, 3)
        picam2 = instance(picamera2_class)
        assert picam2.pre_callback is None and picam2.camera_config["queue"] is True
    assert picam2.released == [0, 1, 2]


def test_the_loop_holding_all_it_can_still_leaves_the_camera_buffers_to_fill():
    picamera2_class = fake("pi4")
    with camera(picamera2_class) as cam:
        frames = cam.frames()
        held = [next(frames) for _ in range(FRAMES_HELD)]  # queue full, one waiting to enter, one processing
        picam2 = instance(picamera2_class)
        # With the one picamera2 keeps, at least two are left with libcamera to fill.
        assert picam2.camera_config["buffer_count"] - len(picam2.outstanding) - 1 >= 2
        held.append(next(frames))
        for frame in held:
            frame.release()


def test_a_camera_that_stops_delivering_is_an_error_not_a_hang():
    picamera2_class = fake("pi4")
    with camera(picamera2_class) as cam:
        frames = cam.frames()
        hoard = [next(frames) for _ in range(BUFFER_COUNT)]  # a consumer that never releases
        with pytest.raises(CameraError, match="sent no frame"):
            next(frames)
        assert instance(picamera2_class).cancelled == 1
    assert len(instance(picamera2_class).released) == len(hoard)


def test_lores_larger_than_still_size_names_both():
    with pytest.raises(CameraError, match=r"camera.still_size 200x150 is smaller than the model's input 224x224.*"
                                          r"at least 224x224"):
        camera(fake("pi5"), still_size=(200, 150)).start()


def test_a_still_size_that_cannot_fit_in_the_free_cma_is_refused_with_what_to_do():
    with pytest.raises(CameraError, match=r"camera.still_size 4608x2592 needs 23\d MiB .*\(CMA\).* 128 MiB is free: "
                                          r"set a smaller camera.still_size.*cma-512"):
        camera(fake("pi4"), still_size=(4608, 2592), cma_free_bytes=128 * 2**20).start()
    with camera(fake("pi4"), still_size=(1920, 1080), cma_free_bytes=128 * 2**20):
        pass


# --- Buffers go back exactly once ------------------------------------------------------------------

def test_a_discarded_frame_is_released_without_copying_main_and_main_cannot_be_read_after():
    picamera2_class = fake("pi4")
    with camera(picamera2_class) as cam:
        frames = cam.frames()
        frame = next(frames)
        frame.release()
        frame.release()
        picam2 = instance(picamera2_class)
        assert picam2.released == [0] and not picam2.outstanding
        with pytest.raises(CameraError, match="after its frame was released"):
            frame.main.array()


def test_a_one_stream_camera_gives_each_request_back_at_once_and_its_main_stays_readable():
    picamera2_class = fake("virtual", scenes=[photo("parrot.jpg")])
    with camera(picamera2_class, fps=0.0) as cam:
        frame = next(cam.frames())
        # The frame holds no request; the camera's pacing keeps the one it completed (parked) until the
        # loop asks for the next frame.
        [request] = instance(picamera2_class).outstanding
        assert request.ref_count == 1 and cam._pacing.parked == [request]
        assert frame.main.detach().array().shape == (720, 1280, 3)
        frame.release()


def test_every_request_is_released_once_when_the_consumer_stops_early_holding_frames():
    picamera2_class = fake("pi4")
    cam = camera(picamera2_class)
    cam.start()
    frames = cam.frames()
    held = [next(frames), next(frames)]
    held[0].main.array()
    frames.close()  # the consumer walks away holding two frames
    cam.close()
    picam2 = instance(picamera2_class)
    assert sorted(picam2.released) == [0, 1] and not picam2.outstanding and not picam2.is_open
    for frame in held:
        frame.release()  # late releases after close are harmless, not double releases
    assert sorted(picam2.released) == [0, 1]


@pytest.mark.parametrize("kind", KINDS)
def test_a_detached_main_image_is_the_same_requests_image_and_survives_release(kind):
    cam = camera(fake(kind))
    cam.start()
    try:
        frame = next(iter(cam.frames()))
        detached = frame.main.detach()
        expected = detached.array().copy()
        frame.release()
        assert np.array_equal(detached.array(), expected)
    finally:
        cam.close()


# --- picamera2 outside Raspberry Pi OS: no DMA heap, no raw stream ---------------------------------------

def test_without_a_dma_heap_libcameras_allocator_is_used_from_before_configure_to_close(caplog, monkeypatch):
    unraisable = []  # what Python would print as "Exception ignored in: …"
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    picamera2_class = fake("virtual", has_dma_heap=False)
    with caplog.at_level(logging.DEBUG):
        with camera(picamera2_class) as cam:
            assert len(take(cam, 3)) == 3
            picam2 = instance(picamera2_class)
            assert isinstance(picam2.allocator_at_configure, LibcameraAllocator)
    # picamera2's close() built a DmaAllocator last and it raised, and the half-built allocator's
    # __del__ failed after it; the camera was closed by then, and neither is reported as a fault.
    assert not picam2.is_open and "did not close cleanly" not in caplog.text
    assert "could not build its next DmaAllocator" in caplog.text
    assert unraisable == [] and sys.unraisablehook == unraisable.append


def test_with_a_dma_heap_picamera2s_own_allocator_is_kept():
    picamera2_class = fake("virtual")
    with camera(picamera2_class):
        assert type(instance(picamera2_class).allocator_at_configure).__name__ == "DmaAllocator"


def test_a_camera_without_a_raw_stream_opens_through_the_video_streams_formats():
    picamera2_class = fake("virtual")
    with pytest.raises(RuntimeError, match="Camera __init__ sequence did not complete"):
        picamera2_class(0)  # picamera2 as it is: the virtual camera refuses StreamRole.Raw
    with camera(picamera2_class):
        assert instance(picamera2_class)._raw_modes == [{"format": "NV12", "size": (1280, 720)},
                                                        {"format": "NV12", "size": (1920, 1080)}]


def test_a_camera_with_a_raw_stream_keeps_picamera2s_own_raw_modes():
    picamera2_class = fake("pi4")
    with camera(picamera2_class):
        assert {m["format"] for m in instance(picamera2_class)._raw_modes} == {"SRGGB10_CSI2P"}


# --- Errors a person can meet ----------------------------------------------------------------------

def test_without_picamera2_start_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)  # makes `import picamera2` fail, installed or not
    cam = open_camera(CameraConfig(backend="picamera2"), LORES)
    with pytest.raises(CameraError, match=r"not installed.*sudo apt install python3-picamera2.*backend = \"replay\""):
        cam.start()


def test_importing_the_backend_does_not_import_picamera2():
    code = "import sys, appliance.cameras.picamera2; print('picamera2' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert result.stdout.strip() == "False"


def test_no_camera_connected_says_how_to_check():
    with pytest.raises(CameraError, match=r"no camera found.*ribbon cable.*camera_auto_detect=1.*dtoverlay=.*USB "
                                          r"webcam.*video group.*rpicam-hello --list-cameras"):
        camera(fake("pi4", cameras=[])).start()


def test_a_camera_number_beyond_those_found_names_the_key():
    with pytest.raises(CameraError, match=r"there is no camera 1 \(camera.index\): 1 found"):
        camera(fake("usb"), index=1).start()


def test_a_second_camera_is_opened_by_its_index():
    cameras = [{"Model": "imx708", "Location": 2, "Id": "/base/soc/i2c0mux/i2c@1/imx708@1a", "Num": 0},
               {"Model": "imx477", "Location": 2, "Id": "/base/soc/i2c0mux/i2c@0/imx477@1a", "Num": 1}]
    with camera(fake("pi5", cameras=cameras), index=1) as cam:
        assert cam.source == "picamera2:1:imx477"


def test_a_camera_in_use_elsewhere_is_a_camera_error():
    busy = fake("pi4", open_error=RuntimeError("Failed to acquire camera: Device or resource busy"))
    with pytest.raises(CameraError, match="could not be opened.*another program"):
        camera(busy).start()


def test_libcamera_failing_to_start_is_a_camera_error_so_the_camera_fault_shows():
    broken = fake("pi4", list_error=RuntimeError("Failed to start camera manager: No such file or directory"))
    with pytest.raises(CameraError, match="libcamera could not start.*camera manager"):
        camera(broken).start()


def test_frames_before_start_is_a_camera_error():
    with pytest.raises(CameraError, match="start"):
        next(camera(fake("pi4")).frames())


def test_the_fake_follows_picamera2_in_refusing_lores_larger_than_main():
    picam2 = fake("pi5")(0)
    config = picam2.create_video_configuration(main={"size": (320, 240)}, lores={"size": (640, 480)})
    with pytest.raises(RuntimeError, match="lores stream dimensions may not exceed main stream"):
        picam2.configure(config)
