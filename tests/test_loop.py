"""The loop under load: a writer that falls behind costs counted drops, never a stalled camera."""

from __future__ import annotations

import threading

import numpy as np
from conftest import IMAGES

from appliance.cameras.replay import ReplayCamera, read_rgb, scale_like_isp
from appliance.pipeline.loop import FRAMES_HELD
from appliance.service.app import Appliance
from appliance.storage.store import Store


def test_when_the_writer_falls_behind_keeps_are_dropped_and_counted_and_every_frame_is_decided(make_config):
    bird = scale_like_isp(read_rgb(IMAGES / "bird.bmp"), (224, 224))
    # Every frame is a bird (kept) whose main image is a 12-megapixel photo of noise: slow to encode.
    noise = np.random.default_rng(1).integers(0, 255, (3000, 4000, 3), dtype=np.uint8)
    camera = ReplayCamera.from_arrays([(bird, noise, f"frame{i}") for i in range(40)], (224, 224), loop=False)
    config = make_config(storage={"writer_queue": 1})
    with Appliance(config, camera=camera) as appliance:
        appliance.run()
        appliance.close()
        status = appliance.status()
    counts = status["frames"]["by_reason"]
    assert status["frames"]["seen"] == 40 and counts["match"] == 40
    assert counts["writer-behind"] > 0
    assert status["frames"]["kept"] + counts["writer-behind"] == 40
    store = Store(config.storage.data_dir)
    assert store.count() == status["frames"]["kept"]
    store.close()


class CountingCamera(ReplayCamera):
    """The replay camera, counting the frames it has handed out that are not yet released."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.lock, self.outstanding, self.most = threading.Lock(), 0, 0

    def frames(self):
        for frame in super().frames():
            with self.lock:
                self.outstanding += 1
                self.most = max(self.most, self.outstanding)
            frame._release = self._released
            yield frame

    def _released(self):
        with self.lock:
            self.outstanding -= 1


def test_the_loop_never_holds_more_frames_than_frames_held_which_the_picamera2_camera_sizes_its_buffers_by(
        make_config):
    # A camera that lends its buffers needs FRAMES_HELD of them for the loop, and more to keep streaming.
    other = scale_like_isp(read_rgb(IMAGES / "hot_dog.jpg"), (224, 224))
    camera = CountingCamera.from_arrays([(other, other, f"frame{i}") for i in range(300)], (224, 224), loop=False)
    with Appliance(make_config(), camera=camera) as appliance:
        appliance.run()
    assert camera.outstanding == 0 and 1 <= camera.most <= FRAMES_HELD
