"""The detector stage in the real loop: the real SSD, the real bird model, the real photos, a real store.

What the loop does with it (two_stage.py): each replayed photo is shown for three frames, as a camera sees a
bird that stays; the SSD finds the bird, its crop is classified, the track is kept at its third frame, once,
with its box, the detector's label and score, an event id and a crop; a discarded frame writes nothing.
"""

from __future__ import annotations

import io
import json
import shutil
from collections import Counter
import subprocess
import sys

import numpy as np
import pytest
from conftest import BIRD_MODEL, IMAGES, REPO, SHARED
from PIL import Image

from appliance.cameras.replay import ReplayCamera
from appliance.config import config_from_dict
from appliance.errors import ConfigError, ModelError
from appliance.pipeline.detections import Box, Detection
from appliance.pipeline.frames import ArrayImage, Classification, Keep
from appliance.pipeline.two_stage import BoxKeep
from appliance.pipeline.writer import KeepJob, ModelInfo, Writer
from appliance.service.app import Appliance
from appliance.service.status import read_status
from appliance.storage.store import Store

SSD = SHARED / "models" / "tf" / "ssd_mobilenet_v1_1.0_coco_quant.tflite"
CHICKADEE = "Poecile atricapillus (Black-capped Chickadee)"
MACAW = "Ara macao (Scarlet Macaw)"
SCENES = ("cat_720p.jpg", "dragonfly.bmp", "grace_hopper.bmp", "hot_dog.jpg", "kite_and_cold.jpg")


@pytest.fixture
def photos(tmp_path):
    """A folder with some of the shared photos, by name."""
    def make(*names):
        folder = tmp_path / "photos"
        folder.mkdir(exist_ok=True)
        for name in names:
            shutil.copy(IMAGES / name, folder / name)
        return folder
    return make


def two_stage(make_config, folder, repeat=3, keep=None, **detector):
    return make_config(images=folder, camera={"replay_repeat": repeat}, detector={"path": str(SSD), **detector},
                       keep=keep or {})


def run(config):
    with Appliance(config) as appliance:
        appliance.run()
    return Store(config.storage.data_dir), read_status(config.status.runtime_dir)


def test_each_bird_held_three_frames_is_one_event_kept_once_with_its_box_detector_and_crop(make_config, photos):
    folder = photos("bird.bmp", "parrot.jpg", *SCENES)
    store, status = run(two_stage(make_config, folder))
    rows = store.rows(order="source")
    assert [(r["source"], r["label"]) for r in rows] == [("bird.bmp", CHICKADEE), ("parrot.jpg", MACAW)]
    for row in rows:
        left, top, right, bottom = json.loads(row["box"])
        assert 0 <= left < right <= 1 and 0 <= top < bottom <= 1 and (right - left) * (bottom - top) > 0.3
        assert row["detector_label"] == "bird" and row["detector_score"] >= 0.75
        assert row["detector_name"] == "coco-ssd" and len(row["detector_sha256"]) == 64
        assert len(row["event_id"]) == 32 and row["event_frame"] == 2  # the third frame: the track's first keep
        assert json.loads(row["top_k"])[0][0] == row["label"]  # the crop's classification
        assert Image.open(io.BytesIO(store.crop(row["id"]))).size == (224, 224)
    assert rows[0]["event_id"] != rows[1]["event_id"]
    assert rows[0]["score"] > 0.85  # the chickadee's crop; the whole frame scores it 0.70 (test_end_to_end)
    # 7 photos x 3 frames; each bird's first two frames wait for agreement; no bird on the other photos.
    assert status["frames"]["seen"] == 21
    assert status["frames"]["by_reason"] == {"match": 2, "track-unconfirmed": 4, "no-target-detected": 15}
    detector = status["detector"]
    assert detector["name"] == "coco-ssd" and detector["targets"] == ["bird"] and detector["input_size"] == [300, 300]
    assert detector["detector_inferences"] == 1 and detector["tiles"] is None
    assert detector["inferences_per_frame"] == {"mean": round(1 + 6 / 21, 2), "max": 2}
    assert detector["boxes_by_reason"] == {"match": 2, "track-unconfirmed": 4}
    # Only the two keeps wrote anything: their images and thumbnails.
    files = sorted(p.relative_to(store.data_dir).parts[0] for p in store.data_dir.rglob("*.jpg"))
    assert len(files) == 4 and files.count("thumbs") == 2
    store.close()


def test_a_photo_shown_for_fewer_frames_than_a_track_needs_is_never_kept(make_config, photos):
    store, status = run(two_stage(make_config, photos("bird.bmp", "parrot.jpg"), repeat=2))
    assert store.count() == 0
    assert status["frames"]["by_reason"] == {"track-unconfirmed": 4}
    store.close()


def test_with_tiles_the_status_says_what_each_frame_costs(make_config, photos):
    store, status = run(two_stage(make_config, photos("bird.bmp", "hot_dog.jpg"), tiles="2x2"))
    assert [r["label"] for r in store.rows()] == [CHICKADEE]
    detector = status["detector"]
    assert detector["tiles"] == "2x2" and detector["detector_inferences"] == 5
    assert detector["inferences_per_frame"]["max"] == 6  # 4 tiles, the whole frame, one crop
    store.close()


def test_without_classifying_crops_the_detector_label_is_kept(make_config, photos):
    store, _ = run(two_stage(make_config, photos("parrot.jpg", "hot_dog.jpg"), classify_crops=False))
    [row] = store.rows()
    assert row["label"] == "bird" and row["score"] == row["detector_score"] >= 0.75
    store.close()


def test_audits_of_frames_without_a_bird_measure_what_the_detector_missed(make_config, photos):
    config = two_stage(make_config, photos("hot_dog.jpg", "cat_720p.jpg"), keep={"audit_one_in": 3})
    store, status = run(config)
    rows = store.rows()
    assert len(rows) == 2 and status["frames"]["by_reason"] == {"audit": 2, "no-target-detected": 4}
    for row in rows:
        assert row["kind"] == "audit" and row["label"] == "nothing-detected" and row["box"] is None
        assert store.crop(row["id"]) is None
    store.close()


def test_a_better_frame_of_an_event_replaces_its_worse_keep_once_durable_never_a_starred_one(tmp_path):
    store = Store(tmp_path / "data")
    writer = Writer(store, make_storage(), ModelInfo("inat-bird", "0" * 64), counts := Counter(),
                    detector=ModelInfo("coco-ssd", "1" * 64))
    main = ArrayImage(np.full((120, 160, 3), 90, np.uint8))
    crop = np.zeros((224, 224, 3), np.uint8)
    detection = Detection(Box(0.1, 0.2, 0.5, 0.6), 16, "bird", 0.8)

    def job(frame, score, replaces=None, event="e" * 32):
        classification = Classification(((CHICKADEE, score),), 5.0, "cpu")
        box_keep = BoxKeep(Keep("match", CHICKADEE, score), classification, detection, crop, event, frame, replaces)
        return KeepJob(box_keep.decision, classification, main, 1_700_000_000.0 + frame, "cam0", box_keep)

    first = writer.write(job(2, 0.6))
    second = writer.write(job(5, 0.8, replaces=2))
    assert [r["id"] for r in store.rows()] == [second] and counts["replaced-better"] == 1
    assert store.crop(first) is None and store.crop(second) is not None
    store.set_starred(second, True)
    third = writer.write(job(9, 0.95, replaces=5))
    assert sorted(r["id"] for r in store.rows()) == [second, third] and counts["replaced-better"] == 1
    other = writer.write(job(2, 0.9, replaces=0, event="f" * 32))  # its event never kept frame 0: nothing goes
    assert len(store.rows()) == 3 and other
    store.close()


def make_storage():
    return config_from_dict({"storage": {"data_dir": "/nonexistent", "min_free_bytes": 0}}).storage


def test_a_classifier_given_as_the_detector_and_the_reverse_are_one_clear_error_each(make_config):
    with pytest.raises(ModelError, match=r"is an image classifier \(one output: \[1, 965\] class scores\), not an "
                                         "object detector: give it as the classifier"):
        Appliance(make_config(detector={"path": str(BIRD_MODEL)}, gpio={"enabled": "off"}))
    with pytest.raises(ModelError, match=r"is an object detector \(TFLite_Detection_PostProcess outputs: "
                                         r"boxes, classes, scores, count\), not an image classifier: give it as the detector"):
        Appliance(make_config(model=SSD, detector={"path": str(SSD)}, gpio={"enabled": "off"}))
    with pytest.raises(ModelError, match="target 'birds' is not one of the detector's 80 labels"):
        Appliance(make_config(detector={"path": str(SSD), "targets": ("birds",)}, gpio={"enabled": "off"}))


@pytest.mark.parametrize("values, problem", [
    ({"tiles": "1x1"}, "1x1 is the whole frame"),
    ({"tiles": "5x4"}, "20 tiles, more than 16"),
    ({"tiles": "three"}, "not a grid of tiles"),
    ({"min_score": 1.5}, "out of range"),
    ({"targets": "bird"}, "not a list of strings"),
    ({"track_min_frames": 0}, "out of range"),
])
def test_a_wrong_detector_key_names_the_file_the_key_and_what_it_takes(values, problem):
    with pytest.raises(ConfigError) as caught:
        config_from_dict({"detector": values}, source="appliance.toml")
    message = str(caught.value)
    assert message.startswith(f"appliance.toml: detector.{next(iter(values))}: ") and problem in message


def test_appliance_demo_with_a_detector_keeps_each_bird_once(tmp_path, cli_env, photos):
    folder = photos("bird.bmp", "parrot.jpg", "hot_dog.jpg")
    command = [sys.executable, "-m", "appliance", "demo", "--images", str(folder), "--model", str(BIRD_MODEL),
               "--detector", str(SSD), "--data", str(tmp_path / "data"), "--fps", "0", "--once", "--no-web"]
    done = subprocess.run(command, cwd=REPO, env=cli_env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "each for 3 frames" in done.stderr and "match 2, no-target-detected 3, track-unconfirmed 4" in done.stderr
    refused = subprocess.run(command + ["--tiles", "1x1"], cwd=REPO, env=cli_env, capture_output=True, text=True,
                             timeout=300)
    assert refused.returncode != 0 and "--tiles: 1x1 is the whole frame" in refused.stderr


def test_frames_the_stage_discards_write_nothing_under_the_data_dir(make_config):
    """Birds shown for two frames (one short of agreement) and photos without a bird, 80 frames: no byte
    written, the database file untouched (only SQLite's side files may change)."""
    files = [IMAGES / name for name in ("bird.bmp", "parrot.jpg", "cat_720p.jpg", "hot_dog.jpg")] * 10
    camera = ReplayCamera((300, 300), files=files, fps=0, loop=False, repeat=2)
    with Appliance(make_config(detector={"path": str(SSD)}), camera=camera) as appliance:
        data = appliance.store.data_dir
        before = files_in(data)
        appliance.run()
        after = files_in(data)
        status = appliance.status()
    assert status["frames"]["seen"] == 80 and status["frames"]["kept"] == 0
    assert status["frames"]["by_reason"] == {"track-unconfirmed": 40, "no-target-detected": 40}
    assert after == before


def files_in(root):
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")
            if p.is_file() and not p.name.endswith(("-wal", "-shm"))}
