"""The whole loop with the real runtime, the real inat bird model and the real photos."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys

from conftest import BIRD_MODEL, IMAGES, REPO

from appliance.cameras.replay import ReplayCamera
from appliance.service.app import Appliance
from appliance.service.status import read_status
from appliance.storage.store import Store


def test_the_bird_rule_keeps_exactly_the_two_bird_photos_with_correct_metadata(make_config):
    config = make_config()
    with Appliance(config) as appliance:
        appliance.run()
    store = Store(config.storage.data_dir)
    rows = store.rows(order="source")
    assert [r["source"] for r in rows] == ["bird.bmp", "parrot.jpg"]
    bird, parrot = rows
    assert bird["label"] == "Poecile atricapillus (Black-capped Chickadee)"
    assert parrot["label"] == "Ara macao (Scarlet Macaw)"
    assert 0.65 < bird["score"] < 0.75 and 0.70 < parrot["score"] < 0.78
    for row in rows:
        data = (store.data_dir / row["image_path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row["sha256"]
        assert len(data) == row["bytes"]
        assert (store.data_dir / row["thumb_path"]).is_file()
        assert row["kind"] == "match" and row["reason"] == "match"
        assert row["model_name"] == "inat-bird"
        assert row["model_sha256"] == hashlib.sha256(BIRD_MODEL.read_bytes()).hexdigest()
        assert row["backend"] == "cpu" and row["inference_ms"] > 0
        assert row["captured_at"].endswith("Z") and row["clock_source"] in ("ntp", "rtc", "unsynced")
        assert json.loads(row["top_k"])[0][0] == row["label"] and len(json.loads(row["top_k"])) == 5
        assert row["image_path"].startswith(row["captured_at"][:10].replace("-", "/") + "/")
    # The kept image is the full-resolution original, not the 224x224 model input.
    assert (bird["width"], bird["height"]) == (512, 343)
    assert (parrot["width"], parrot["height"]) == (512, 929)
    store.close()


def test_status_counts_every_frame_by_reason_and_names_the_model(make_config):
    config = make_config()
    with Appliance(config) as appliance:
        appliance.run()
    status = read_status(config.status.runtime_dir)
    assert status["state"] == "stopped"
    assert status["frames"]["seen"] == 8  # the ninth file, COPYRIGHT, is not an image
    assert status["frames"]["kept"] == 2
    assert sum(status["frames"]["by_reason"].values()) == 8
    assert status["frames"]["by_reason"]["match"] == 2
    assert status["model"]["name"] == "inat-bird" and status["accelerator"]["backend"] == "cpu"
    assert status["last_keep"]["source"] in ("bird.bmp", "parrot.jpg")
    assert status["storage"]["level"] == "ok"


def test_nothing_is_written_under_the_data_dir_when_nothing_matches(make_config):
    not_birds = [IMAGES / name for name in ("cat_720p.jpg", "face.jpg", "hot_dog.jpg", "grace_hopper.bmp")]
    camera = ReplayCamera((224, 224), files=not_birds * 50, fps=0, loop=False)
    config = make_config()
    with Appliance(config, camera=camera) as appliance:
        data = appliance.store.data_dir
        before = _files(data)
        appliance.run()
        after_run = _files(data)
        appliance.close()
        status = appliance.status()
    assert status["frames"]["seen"] == 200 and status["frames"]["kept"] == 0
    assert after_run == before
    # Shutdown writes nothing either: the database file is untouched; only SQLite's side files
    # (the empty WAL and its shared-memory index) go away.
    assert _files(data, sqlite_side_files=False) == _files_before_without_side_files(before)


def _files(root, sqlite_side_files=True):
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")
            if p.is_file() and (sqlite_side_files or not p.name.endswith(("-wal", "-shm")))}


def _files_before_without_side_files(before):
    return {p: v for p, v in before.items() if not p.name.endswith(("-wal", "-shm"))}


def test_demo_command_keeps_the_birds_and_captures_lists_them_as_json(tmp_path, cli_env):
    data = tmp_path / "data"
    # --port 0: the page listens on a free port (never a fixed one another process may hold), and says which.
    demo = subprocess.run([sys.executable, "-m", "appliance", "demo", "--images", str(IMAGES), "--model",
                           str(BIRD_MODEL), "--data", str(data), "--once", "--fps", "0", "--port", "0"],
                          env=cli_env, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert demo.returncode == 0, demo.stderr
    page = re.search(r"review page: http://127\.0\.0\.1:(\d+)/", demo.stderr)
    assert page and int(page.group(1)) > 0, demo.stderr  # the port it really bound, not the 0 it was given
    assert "skipping" in demo.stderr and "COPYRIGHT" in demo.stderr
    listing = subprocess.run([sys.executable, "-m", "appliance", "captures", "--data", str(data), "--json"],
                             env=cli_env, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert listing.returncode == 0, listing.stderr
    captures = [json.loads(line) for line in listing.stdout.splitlines()]
    assert sorted(c["source"] for c in captures) == ["bird.bmp", "parrot.jpg"]
    for c in captures:
        assert {"label", "score", "kind", "source", "path", "sha256"} <= set(c)
        assert hashlib.sha256(open(c["path"], "rb").read()).hexdigest() == c["sha256"]
