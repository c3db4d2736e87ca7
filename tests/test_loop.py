"""The loop under load: a writer that falls behind costs counted drops, never a stalled camera."""

from __future__ import annotations

import numpy as np
from conftest import IMAGES

from appliance.cameras.replay import ReplayCamera, read_rgb, scale_like_isp
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
