"""The replay camera: ISP-like scaling, pacing, looping, and folders with things that are not images."""

from __future__ import annotations

import time

import numpy as np
import pytest
from PIL import Image

from appliance.cameras import open_camera
from appliance.cameras.convert import area_average
from appliance.cameras.replay import ReplayCamera
from appliance.config import CameraConfig
from appliance.errors import CameraError
from conftest import IMAGES


def frames(camera, limit=100):
    camera.start()
    out = []
    for frame in camera.frames():
        out.append(frame)
        if len(out) == limit:
            camera.stop()
    return out


def test_lores_is_the_whole_photo_area_averaged_to_the_model_size_and_main_is_the_original():
    camera = ReplayCamera.from_folder(IMAGES, (224, 224), fps=0, loop=False)
    parrot = next(f for f in frames(camera) if f.source == "parrot.jpg")
    original = Image.open(IMAGES / "parrot.jpg").convert("RGB")
    assert parrot.lores.shape == (224, 224, 3) and parrot.lores.dtype == np.uint8
    assert np.array_equal(parrot.lores, np.asarray(original.resize((224, 224), Image.Resampling.BOX)))
    assert np.array_equal(parrot.lores, area_average(np.asarray(original), (224, 224)))  # shared with cameras
    nearest = np.asarray(original.resize((224, 224), Image.Resampling.NEAREST))
    assert not np.array_equal(parrot.lores, nearest)
    assert np.array_equal(parrot.main.array(), np.asarray(original))


def test_files_play_in_name_order_once_without_looping_and_skip_what_is_not_an_image(caplog):
    camera = ReplayCamera.from_folder(IMAGES, (128, 128), fps=0, loop=False)
    names = [f.source for f in frames(camera)]
    assert names == sorted(p.name for p in IMAGES.iterdir() if p.name != "COPYRIGHT")
    assert camera.skipped == ["COPYRIGHT"]
    assert "skipping" in caplog.text and "COPYRIGHT" in caplog.text


def test_looping_starts_again_after_the_last_image():
    camera = ReplayCamera((64, 64), files=[IMAGES / "bird.bmp", IMAGES / "parrot.jpg"], fps=0, loop=True)
    assert [f.source for f in frames(camera, limit=5)] == ["bird.bmp", "parrot.jpg"] * 2 + ["bird.bmp"]


def test_a_set_frame_rate_spaces_the_frames_at_least_that_far_apart():
    camera = ReplayCamera((64, 64), files=[IMAGES / "bird.bmp"], fps=50, loop=True)
    started = time.monotonic()
    stamps = [f.timestamp_s for f in frames(camera, limit=6)]
    assert time.monotonic() - started >= 5 / 50 * 0.99
    assert all(b > a for a, b in zip(stamps, stamps[1:]))


def test_a_missing_folder_names_the_key_to_fix(tmp_path):
    with pytest.raises(CameraError, match="camera.replay_dir"):
        open_camera(CameraConfig(backend="replay", replay_dir=str(tmp_path / "nope")), (224, 224))


def test_a_folder_of_only_non_images_is_a_clear_error(tmp_path):
    (tmp_path / "notes.txt").write_text("not a photo")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    camera = ReplayCamera.from_folder(tmp_path, (224, 224), fps=0, loop=True)
    with pytest.raises(CameraError, match="no readable images among 2 files"):
        frames(camera)


def test_an_empty_folder_is_refused_at_start(tmp_path):
    with pytest.raises(CameraError, match="nothing to play"):
        ReplayCamera.from_folder(tmp_path, (224, 224)).start()
