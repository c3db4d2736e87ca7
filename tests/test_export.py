"""What leaves the device, by all three ways out (the zip, `appliance sync`, the USB offload), over a store filled
by a real run of the loop (the bird model on real photos) that kept both matches and audit keeps: the same
layout, audit keeps in `_audit/` and never in a class folder, and every time in a manifest with its offset."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import subprocess
import zipfile
from datetime import datetime

import pytest
from conftest import BIRD_MODEL, IMAGES

from appliance.cameras.replay import ReplayCamera
from appliance.config import Config
from appliance.service.app import Appliance
from appliance.storage.store import Store
from appliance.transfer.export import export_name, export_time, label_dirname, stream_zip
from appliance.transfer.offload import offload
from appliance.transfer.sync import sync
from appliance.web.server import WebServer

PASSWORD = "correct horse battery"
AUDIT_DIR = "_audit"  # the folder audit keeps go to, in every export
# Two birds (kept: matches) and three photos the rule discards; audit_one_in = 1 keeps every discard as an
# audit keep under the model's top-1 label (the dragonfly as a bird at 0.06, the hot dog as "background").
PHOTOS = ("bird.bmp", "parrot.jpg", "dragonfly.bmp", "kite_and_cold.jpg", "hot_dog.jpg")


def device_config(root, data_dir):
    return Config().replace(
        camera={"backend": "replay", "replay_dir": str(IMAGES), "fps": 0.0, "replay_loop": False},
        model={"path": str(BIRD_MODEL), "num_threads": 2},
        keep={"audit_one_in": 1},
        storage={"data_dir": str(data_dir), "min_free_bytes": 0},
        status={"runtime_dir": str(root / "run"), "interval_s": 0.1},
        web={"password": PASSWORD},
    )


@pytest.fixture(scope="module")
def kept_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("device")
    config = device_config(root, root / "data")
    photos = [IMAGES / name for name in PHOTOS]
    with Appliance(config, camera=ReplayCamera((224, 224), files=photos, fps=0, loop=False)) as appliance:
        appliance.run()
    return root / "data"


@contextlib.contextmanager
def serving(store, tmp_path):
    """The appliance's page on 127.0.0.1 over ``store``'s data: its URL."""
    server = WebServer(device_config(tmp_path, store.data_dir), config_path=None, host="127.0.0.1", port=0)
    server.start()
    try:
        yield server.url
    finally:
        server.close()


@pytest.fixture
def store(tmp_path, kept_data):
    shutil.copytree(kept_data, tmp_path / "device-data")
    store = Store(tmp_path / "device-data")
    yield store
    store.close()


def assert_audit_keeps_only_in_audit(rows, files):
    """``files``: capture id → its path in the export. Audit keeps are all in ``_audit/``, and nothing else is."""
    assert {r["kind"] for r in rows} == {"match", "audit"}
    for row in rows:
        folder = files[row["id"]].split("/")[0]
        if row["kind"] == "audit":
            assert folder == AUDIT_DIR, f"audit keep {row['id']} ({row['label']} {row['score']:.3f}) in {folder}/"
        else:
            assert folder == label_dirname(row["corrected_label"] or row["label"])


def test_audit_keeps_are_in_audit_never_in_a_class_folder_in_the_zip_sync_and_offload(tmp_path, store):
    rows = store.rows(order="id")
    audit = [r for r in rows if r["kind"] == "audit"]
    assert len(audit) == 3 and len(rows) == 5
    # A person's correction of an audit keep is in its manifest row; the image stays an audit sample.
    store.relabel(audit[0]["id"], "Anax junius")
    rows = store.rows(order="id")

    archive = zipfile.ZipFile(io.BytesIO(b"".join(stream_zip(lambda: rows, store.data_dir))))
    zipped = {json.loads(line)["id"]: json.loads(line)["file"]
              for line in archive.read("manifest.jsonl").decode().splitlines()}
    assert set(archive.namelist()) == {"manifest.csv", "manifest.jsonl", *zipped.values()}
    assert_audit_keeps_only_in_audit(rows, zipped)

    with serving(store, tmp_path) as url:
        sync(url, tmp_path / "pulled", PASSWORD)
    synced = {json.loads(line)["id"]: json.loads(line)["file"]
              for line in (tmp_path / "pulled" / "manifest.jsonl").read_text().splitlines()}
    assert {p.relative_to(tmp_path / "pulled").as_posix() for p in (tmp_path / "pulled").rglob("*.jpg")} == \
        set(synced.values())
    assert_audit_keeps_only_in_audit(rows, synced)

    assert offload(store, tmp_path / "stick", "trailcam").is_complete
    (jsonl,) = (tmp_path / "stick" / "trailcam").glob("manifest-*.jsonl")
    offloaded = {json.loads(line)["id"]: json.loads(line)["file"] for line in jsonl.read_text().splitlines()}
    assert all((tmp_path / "stick" / "trailcam" / name).is_file() for name in offloaded.values())
    assert_audit_keeps_only_in_audit(rows, offloaded)
    assert zipped == synced == offloaded == {r["id"]: export_name(r) for r in rows}


def test_a_folder_synced_by_an_older_version_is_put_right_by_the_next_sync(tmp_path, store):
    # Older versions put audit keeps in their label's folder and wrote times with a Z.
    rows, dest = store.rows(order="id"), tmp_path / "pulled"
    with serving(store, tmp_path) as url:
        sync(url, dest, PASSWORD)
        old_rows = []
        for row, listed in zip(rows, map(json.loads, (dest / "manifest.jsonl").read_text().splitlines()), strict=True):
            old_file = f"{label_dirname(row['label'])}/{listed['file'].split('/')[1]}"
            if old_file != listed["file"]:
                (dest / old_file).parent.mkdir(exist_ok=True)
                (dest / listed["file"]).rename(dest / old_file)
            old_rows.append(dict(listed, file=old_file, captured_at=row["captured_at"]))
        (dest / AUDIT_DIR).rmdir()
        (dest / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in old_rows))

        report = sync(url, dest, PASSWORD)

    assert (report.new, report.updated, report.bytes) == (0, len(rows), 0)
    assert {p.relative_to(dest).as_posix() for p in dest.rglob("*.jpg")} == {export_name(r) for r in rows}
    assert {p.name for p in dest.iterdir() if p.is_dir()} == {AUDIT_DIR, *(label_dirname(r["label"]) for r in rows
                                                                           if r["kind"] == "match")}
    listed = [json.loads(line) for line in (dest / "manifest.jsonl").read_text().splitlines()]
    assert [(r["file"], r["captured_at"]) for r in listed] == [(export_name(r), export_time(r["captured_at"]))
                                                              for r in rows]


def test_a_label_whose_folder_would_be_audit_gets_another_folder():
    # FAT and exFAT fold case: "_AUDIT" would be the same folder as "_audit".
    assert [label_dirname(label) for label in ("_audit", "_AUDIT", "_audit.", "_audits")] == \
        ["_audit_", "_AUDIT_", "_audit_", "_audits"]


def test_every_time_in_a_manifest_is_utc_with_milliseconds_and_its_offset(tmp_path, store):
    rows = store.rows(order="id")
    archive = zipfile.ZipFile(io.BytesIO(b"".join(stream_zip(lambda: rows, store.data_dir))))
    listed = [json.loads(line) for line in archive.read("manifest.jsonl").decode().splitlines()]
    in_csv = list(csv.DictReader(io.StringIO(archive.read("manifest.csv").decode(), newline="")))
    for row, exact, cell in zip(rows, listed, in_csv, strict=True):
        assert row["captured_at"].endswith("Z")  # stored as it always was
        assert exact["captured_at"] == cell["captured_at"] == export_time(row["captured_at"])
        assert len(exact["captured_at"]) == len("2026-11-25T10:15:00.123+00:00")
        assert datetime.fromisoformat(exact["captured_at"]) == datetime.fromisoformat(row["captured_at"])  # to the ms
    assert all(r["captured_at"].endswith("+00:00") for r in listed)
    assert export_time("2026-11-25T10:15:00Z") == "2026-11-25T10:15:00.000+00:00"
    assert export_time("2026-11-25T11:15:00.5+01:00") == "2026-11-25T10:15:00.500+00:00"


def test_unzip_gives_each_image_its_capture_time_whatever_the_laptops_time_zone(tmp_path, store):
    # A zip's own time fields have no zone; the extended-timestamp field (UTC seconds) is what unzip honours.
    rows = store.rows(order="id")
    (tmp_path / "export.zip").write_bytes(b"".join(stream_zip(lambda: rows, store.data_dir)))
    for zone in ("America/Los_Angeles", "Asia/Kolkata"):
        out = tmp_path / zone.replace("/", "-")
        subprocess.run(["unzip", "-q", str(tmp_path / "export.zip"), "-d", str(out)], check=True,
                       env=dict(os.environ, TZ=zone))
        for row in rows:
            captured_s = datetime.fromisoformat(row["captured_at"]).timestamp()
            assert (out / export_name(row)).stat().st_mtime == int(captured_s), (zone, row["captured_at"])
