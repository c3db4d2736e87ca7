"""The replay camera: ISP-like scaling, pacing, looping, and folders with things that are not images."""

from __future__ import annotations

import logging
import shutil
import struct
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from appliance.cameras import open_camera
from appliance.cameras.convert import area_average
from appliance.cameras.replay import ReplayCamera
from appliance.config import CameraConfig
from appliance.errors import CameraError
from conftest import IMAGES, REPO, TINY_MODEL


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


# --- Photos that would crash or starve the device (issue 14) ----------------------------------------

def png_bomb(path, width=20000, height=20000):
    """A 1-bit black PNG of ``width`` x ``height``: tens of KB on disk, a pixel per byte once decoded.

    Written chunk by chunk, so the test never holds the image it describes."""
    row = b"\x00" * (1 + (width + 7) // 8)  # a filter byte, then the row's bits
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def warnings_naming(caplog, name):
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and name in r.getMessage()]


@pytest.mark.parametrize("size", [(20000, 20000), (6000, 5000)], ids=["past-pillows-limit", "past-the-cameras-limit"])
def test_a_decompression_bomb_is_skipped_with_one_warning_and_the_other_photos_play_on(tmp_path, caplog, size):
    shutil.copy(IMAGES / "bird.bmp", tmp_path / "a.bmp")
    bomb = png_bomb(tmp_path / "b_bomb.png", *size)
    assert bomb.stat().st_size < 100_000
    shutil.copy(IMAGES / "hot_dog.jpg", tmp_path / "c.jpg")
    camera = ReplayCamera.from_folder(tmp_path, (64, 64), fps=0, loop=True)
    assert [f.source for f in frames(camera, limit=6)] == ["a.bmp", "c.jpg"] * 3
    assert camera.skipped == ["b_bomb.png"]
    [warning] = warnings_naming(caplog, "b_bomb.png")
    assert "too many pixels" in warning and (f"{size[0]}x{size[1]}" in warning or str(size[0] * size[1]) in warning)


def test_appliance_classify_reports_a_decompression_bomb_as_unreadable_and_goes_on(tmp_path, capsys):
    from appliance.cli import main

    bomb = png_bomb(tmp_path / "bomb.png")
    assert main(["classify", "--model", str(TINY_MODEL), str(bomb), str(IMAGES / "parrot.jpg")]) == 2
    out, err = capsys.readouterr()
    assert "bomb.png: not a readable image" in out and "too many pixels" in out
    assert "parrot.jpg" in out and "1 of 2 images could not be read" in err


def test_a_16_bit_png_is_scaled_to_8_bits_instead_of_clipped_to_white(tmp_path):
    deep = np.linspace(0, 65535, 96 * 128).round().astype(np.uint16).reshape(96, 128)
    Image.fromarray(deep).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    [frame] = frames(ReplayCamera.from_folder(tmp_path, (32, 24), fps=0, loop=False))
    eight = ((deep.astype(np.uint32) + 128) // 257).astype(np.uint8)  # round(v * 255 / 65535)
    assert np.array_equal(frame.main.array(), np.stack([eight] * 3, axis=-1))
    assert np.array_equal(frame.lores, area_average(np.stack([eight] * 3, axis=-1), (32, 24)))
    assert 120 < frame.lores.mean() < 135


MEASURE_RSS = r"""
import re, sys
from pathlib import Path
from appliance.cameras import open_camera
from appliance.config import CameraConfig

def peak_mb():  # VmHWM: this process's own peak RSS (getrusage's would carry the parent's over exec)
    return int(re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) / 1024

camera = open_camera(CameraConfig(backend="replay", replay_dir=sys.argv[1], still_size=(1920, 1080), fps=0.0,
                                  replay_loop=False), (224, 224))
camera.start()
before = peak_mb()
frame = next(camera.frames())
lores_mb = peak_mb()
main = frame.main.array()  # what the writer decodes when the frame is kept
print(f"{before:.0f} {lores_mb:.0f} {peak_mb():.0f} {main.shape[1]}x{main.shape[0]} {frame.lores.shape[1]}x{frame.lores.shape[0]}")
"""


@pytest.mark.slow
def test_a_huge_jpeg_is_decoded_reduced_to_the_main_size_so_memory_stays_bounded(tmp_path, cli_env):
    # 12000 x 9000 is 324 MB as RGB: a 512 MB Pi Zero 2 W cannot hold it (and its copies) at full size.
    photos = tmp_path / "photos"
    photos.mkdir()
    ramp = Image.linear_gradient("L").resize((12000, 9000), Image.Resampling.BILINEAR)
    Image.merge("RGB", (ramp, ramp.transpose(Image.Transpose.FLIP_LEFT_RIGHT), ramp)).save(photos / "huge.jpg", quality=80)
    del ramp
    result = subprocess.run([sys.executable, "-c", MEASURE_RSS, str(photos)], env=cli_env, cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    before, after_lores, after_main, main_size, lores_size = result.stdout.split()
    print(f"peak RSS: {before} MB started, {after_lores} MB after the lores, {after_main} MB after main {main_size}")
    assert (main_size, lores_size) == ("1440x1080", "224x224")  # fitted to still_size, aspect kept
    assert float(after_main) - float(before) < 100, result.stdout
