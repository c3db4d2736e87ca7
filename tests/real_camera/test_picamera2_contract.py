"""The picamera2 camera's contract against the real picamera2 and libcamera, with whatever camera
libcamera lists first.

This runs in the camera VM (``image/test-camera-vm.sh``: Debian trixie, libcamera's virtual camera
serving ``../shared/images``, picamera2 0.3.38, none of the DMA heaps picamera2's allocator knows, so
libcamera's allocator) and on a Raspberry Pi with a camera, by its path: ``pytest tests/real_camera``.
The host's test run does not collect this folder (pyproject.toml, ``norecursedirs``). Nothing here
skips: where picamera2 or a camera is missing these tests fail, which is what they are for. The same
contract runs against a fake of picamera2 in tests/test_camera_picamera2.py.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from appliance.cameras.convert import area_average
from appliance.cameras.picamera2 import BUFFER_COUNT, Picamera2Camera
from appliance.cameras.picamera2_stack import has_dma_heap, load
from appliance.config import CameraConfig

pytestmark = pytest.mark.pi

LORES = (224, 224)
# Set by the camera VM: the folder whose frames/N.jpg the virtual camera serves, and sources.txt
# naming the photo each one is.
VIRTUAL_CAMERA = os.environ.get("APPLIANCE_VIRTUAL_CAMERA")


@pytest.fixture(scope="module")
def stack():
    return load()  # raises CameraError (a failure here) without picamera2, or with one too old


def camera(stack, fps=0.0, still_size=(1280, 720)) -> Picamera2Camera:
    config = CameraConfig(backend="picamera2", fps=fps, still_size=still_size)
    return Picamera2Camera.from_config(config, LORES, stack=stack)


def take(cam, n, read_main=False):
    taken = []
    for frame in cam.frames():
        taken.append((frame.lores, frame.main.array() if read_main else None, frame.timestamp_s))
        frame.release()
        if len(taken) == n:
            return taken
    raise AssertionError(f"frames() ended after {len(taken)} of {n} frames")


def test_picamera2_imports_and_libcamera_lists_a_camera(stack):
    cameras = stack.picamera2_class.global_camera_info()
    assert cameras, "libcamera lists no camera"
    print("cameras:", cameras, "| DMA heap:", has_dma_heap(stack.heap_names))


def test_lores_is_rgb_uint8_at_the_model_size_and_main_at_the_size_described(stack):
    with camera(stack) as cam:
        [(lores, main, _)] = take(cam, 1, read_main=True)
        description = cam.describe()
    print(description)
    assert lores.dtype == np.uint8 and lores.shape == (224, 224, 3)
    assert main.dtype == np.uint8 and main.ndim == 3 and main.shape[2] == 3
    assert f" {main.shape[1]}x{main.shape[0]}" in description


def test_many_more_frames_than_buffers_flow_and_their_sensor_times_advance(stack):
    with camera(stack) as cam:
        started = time.monotonic()
        taken = take(cam, 4 * BUFFER_COUNT)
        ended = time.monotonic()
    times = [t for _, _, t in taken]
    assert len(taken) == 4 * BUFFER_COUNT
    assert all(b > a for a, b in zip(times, times[1:])), "SensorTimestamp must advance frame by frame"
    # SensorTimestamp is CLOCK_MONOTONIC, the clock time.monotonic() reads.
    assert started - 5 < times[0] and times[-1] < ended + 1


def test_a_camera_paced_here_rests_between_frames(stack):
    # The virtual camera lists FrameDurationLimits but completes each request the moment it is queued
    # (most USB webcams have no FrameDurationLimits): fps is kept by holding its buffers until a frame
    # is due. Unpaced, it completes a frame as soon as it gets a buffer back: hundreds in the time
    # these take.
    fps, n = 10.0, 12
    with camera(stack, fps=fps) as cam:
        print("camera controls:", cam._picam2.camera_controls)
        started = time.monotonic()
        taken = take(cam, n)
        elapsed = time.monotonic() - started
        completed = cam._picam2.frames  # picamera2's count of the requests the camera completed
        buffers = cam._picam2.camera_config["buffer_count"]
    times = [t for _, _, t in taken]
    gaps = [round(b - a, 3) for a, b in zip(times, times[1:])]
    print(f"{n} frames at fps {fps:g} in {elapsed:.2f} s, gaps {gaps}; the camera completed {completed}")
    assert min(gaps) >= 0.9 / fps
    # Each frame taken, the parked buffers go back and are filled once: at most buffer_count frames.
    assert completed <= (n + 1) * buffers, f"the camera completed {completed} frames for {n} taken"


def test_stop_from_another_thread_ends_frames(stack):
    with camera(stack) as cam:
        first = threading.Event()

        def consume():
            for frame in cam.frames():
                frame.release()
                first.set()

        consumer = threading.Thread(target=consume, daemon=True)
        consumer.start()
        assert first.wait(30)
        cam.stop()
        consumer.join(30)
        assert not consumer.is_alive()


def test_close_twice_is_safe_and_a_closed_camera_starts_again(stack, caplog):
    cam = camera(stack)
    with caplog.at_level(logging.INFO):
        cam.start()
        cam.close()
        cam.close()
        cam.start()
        assert len(take(cam, 3)) == 3
        cam.close()
    assert "did not close cleanly" not in caplog.text
    if not has_dma_heap(stack.heap_names):  # the VM: libcamera's allocator, from configure to close
        assert "buffers come from libcamera's allocator" in caplog.text


def test_describe_names_the_camera_and_its_streams(stack):
    model = stack.picamera2_class.global_camera_info()[0]["Model"]
    with camera(stack) as cam:
        text = cam.describe()
    assert text.startswith(f"picamera2 {model} ") and ("lores" in text)


def test_a_detached_main_image_survives_its_frame(stack):
    with camera(stack) as cam:
        frame = next(iter(cam.frames()))
        detached = frame.main.detach()
        expected = detached.array().copy()
        frame.release()
        later = take(cam, BUFFER_COUNT)  # the buffers go round: a shared buffer would be overwritten
        assert len(later) == BUFFER_COUNT and np.array_equal(detached.array(), expected)


@pytest.mark.skipif(VIRTUAL_CAMERA is None, reason="only libcamera's virtual camera serves known photos")
def test_the_virtual_cameras_frames_are_its_photos_in_their_colours(stack):
    # The camera VM sets APPLIANCE_VIRTUAL_CAMERA (a skip is a failure there); elsewhere the camera's
    # frames are whatever it sees.
    folder = Path(VIRTUAL_CAMERA)
    photos = [np.asarray(Image.open(folder / "frames" / line.split()[0]).convert("RGB"))
              for line in (folder / "sources.txt").read_text().splitlines() if line.strip()]
    with camera(stack) as cam:
        [(_, main, _)] = take(cam, 1, read_main=True)
        taken = take(cam, 6 * BUFFER_COUNT)
    size = main.shape[1::-1]
    # libcamera scales each photo to the stream's size (bilinear), then the camera area-averages it.
    expected = [area_average(np.asarray(Image.fromarray(p).resize(size, Image.Resampling.BILINEAR)), LORES)
                for p in photos]
    distances = [[np.abs(lores.astype(int) - e).mean() for e in expected] for lores, _, _ in taken]
    print("each frame's mean abs difference to its nearest photo:", [round(min(d), 2) for d in distances])
    assert max(min(d) for d in distances) < 6.0
    # The camera repeats each photo for a few frames and picamera2 hands out the newest: not every
    # photo is seen, but the frames change.
    assert len({int(np.argmin(d)) for d in distances}) >= 2
