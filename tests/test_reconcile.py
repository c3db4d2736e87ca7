"""Start-up reconciliation of the data dir against SQLite, on the states crashes and strangers leave.

Real files, real SQLite, the real Flask app; the data dirs are built by hand exactly as a kill or a
tampered card leaves them (issue 14)."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO
from PIL import Image

from appliance.config import Config
from appliance.pipeline.writer import encode_jpeg
from appliance.storage.store import METADATA_PREFIX, Store, metadata_comment

DAY = "2026/11/25"


def record(label="Bubo bubo (Eurasian Eagle-Owl)", captured_at="2026-11-25T10:15:30.123Z", **changes):
    return dict({"captured_at": captured_at, "clock_source": "ntp", "label": label, "score": 0.74,
                 "top_k": json.dumps([[label, 0.74], ["background", 0.1]]), "kind": "match", "reason": "match",
                 "model_name": "inat-bird", "model_sha256": "ab" * 32, "backend": "cpu", "inference_ms": 9.5,
                 "source": "parrot.jpg", "width": 64, "height": 48}, **changes)


def picture(shade=120):
    return Image.fromarray(np.full((48, 64, 3), shade, np.uint8))


def with_comment(payload: bytes, shade=120) -> bytes:
    """A JPEG whose appliance comment holds ``payload`` as it is (valid JSON or not)."""
    return encode_jpeg(picture(shade), 90, METADATA_PREFIX + payload)


def put(data_dir, relative, data: bytes):
    path = data_dir / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path / "data")
    yield store
    store.close()


# -- 4. the record in a kept JPEG's comment is validated, never trusted ------------------------------

@pytest.mark.parametrize("payload", [b"[1,2]", b'"text"', b"null", b"42", b"{", b"\xff\xfe", b"[" * 30000 + b"]" * 30000],
                         ids=["list", "string", "null", "number", "broken-json", "not-utf8", "nested-too-deep"])
def test_a_record_that_is_not_a_json_object_is_quarantined_and_start_up_goes_on(store, payload):
    put(store.data_dir, f"{DAY}/101530.123_bubo.jpg", with_comment(payload))
    report = store.reconcile()
    assert report.quarantined == [f"quarantine/{DAY}/101530.123_bubo.jpg"]
    assert store.count() == 0


BAD_FIELDS = {
    "score-object": {"score": {"a": 1}}, "score-text": {"score": "0.9"}, "score-bool": {"score": True},
    "score-nan": {"score": float("nan")}, "label-number": {"label": 5}, "label-empty": {"label": ""},
    "top_k-list": {"top_k": [["x", 0.5]]}, "top_k-not-json": {"top_k": "x"}, "top_k-pairs": {"top_k": '[["x", "high"]]'},
    "captured_at-words": {"captured_at": "yesterday"}, "captured_at-no-zone": {"captured_at": "2026-11-25T10:15:30"},
    "kind-unknown": {"kind": "maybe"}, "inference_ms-null": {"inference_ms": None}, "source-list": {"source": ["a"]},
}


@pytest.mark.parametrize("change", BAD_FIELDS.values(), ids=BAD_FIELDS.keys())
def test_a_record_with_a_field_of_the_wrong_type_or_form_is_quarantined(store, change, caplog):
    rec = record(**change)
    put(store.data_dir, f"{DAY}/101530.123_bubo.jpg", with_comment(json.dumps(rec).encode()))
    report = store.reconcile()
    assert report.quarantined == [f"quarantine/{DAY}/101530.123_bubo.jpg"] and store.count() == 0
    assert next(iter(change)) in caplog.text  # the warning names the field


def test_a_record_without_a_field_is_quarantined(store):
    rec = record()
    del rec["score"]
    put(store.data_dir, f"{DAY}/101530.123_bubo.jpg", with_comment(json.dumps(rec).encode()))
    assert store.reconcile().quarantined == [f"quarantine/{DAY}/101530.123_bubo.jpg"]


def test_after_reconciling_bad_records_every_page_of_the_gallery_answers(tmp_path):
    from appliance.web import create_app

    data = tmp_path / "data"
    good = record(label="Ara macao (Scarlet Macaw)")
    put(data, f"{DAY}/101530.123_ara.jpg", encode_jpeg(picture(), 90, metadata_comment(good)))
    put(data, f"{DAY}/101531.000_bubo.jpg", with_comment(json.dumps(record(score={"a": 1})).encode()))
    put(data, f"{DAY}/101532.000_bubo.jpg", with_comment(json.dumps(record(top_k="oops")).encode()))
    store = Store(data)
    try:
        report = store.reconcile()
        assert report.reindexed == [f"{DAY}/101530.123_ara.jpg"] and len(report.quarantined) == 2
        config = Config().replace(storage={"data_dir": str(data)}, status={"runtime_dir": str(tmp_path / "run")})
        client = create_app(config, store, None, password_hash="", labels=()).test_client()
        assert client.get("/").status_code == 200
        [row] = store.rows()
        assert client.get(f"/captures/{row['id']}").status_code == 200
    finally:
        store.close()


# -- 5. what is not a regular file is never opened, and no symbolic link is followed -----------------

RECONCILE_IN_A_CHILD = """
import sys
from appliance.storage.store import Store
store = Store(sys.argv[1])
report = store.reconcile()
print(report)
print(store.count())
"""


def test_a_fifo_or_socket_in_the_data_dir_is_left_alone_and_start_up_does_not_hang(tmp_path):
    data = tmp_path / "data"
    put(data, f"{DAY}/101530.123_ara.jpg", encode_jpeg(picture(), 90, metadata_comment(record())))
    for fifo in (data / DAY / "101531.000_fifo.jpg", data / "thumbs" / DAY / "101531.000_fifo.jpg",
                 data / DAY / ".101532.000_fifo.jpg.77.tmp"):
        fifo.parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(fifo)
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(data / DAY / "101533.000_socket.jpg"))
    try:
        result = subprocess.run([sys.executable, "-c", RECONCILE_IN_A_CHILD, str(data)], cwd=REPO,
                                capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("start-up reconciliation hung on a FIFO in the data dir")
    finally:
        listener.close()
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[1] == "1"  # the one real photo is indexed
    assert "FIFO" in result.stderr and "socket" in result.stderr
    for name in ("101531.000_fifo.jpg", ".101532.000_fifo.jpg.77.tmp", "101533.000_socket.jpg"):
        assert os.path.lexists(data / DAY / name)  # left where it was: not moved, not deleted
    assert not (data / "quarantine").exists()


def test_symbolic_links_are_never_followed_out_of_the_data_dir(store, tmp_path):
    outside = tmp_path / "outside"
    photo = put(outside, "101530.123_owl.jpg", encode_jpeg(picture(), 90, metadata_comment(record())))
    (store.data_dir / "2027").symlink_to(outside, target_is_directory=True)
    (store.data_dir / DAY).mkdir(parents=True)
    (store.data_dir / DAY / "101531.000_link.jpg").symlink_to(photo)
    (store.data_dir / "thumbs").mkdir()
    (store.data_dir / "thumbs" / "2026").symlink_to(outside, target_is_directory=True)
    report = store.reconcile()
    assert store.count() == 0 and report.reindexed == [] and report.quarantined == []
    assert sorted(report.skipped) == [f"{DAY}/101531.000_link.jpg", "2027", "thumbs/2026"]
    assert photo.is_file() and os.listdir(outside) == ["101530.123_owl.jpg"]  # nothing outside was touched
    assert (store.data_dir / DAY / "101531.000_link.jpg").is_symlink()


def test_a_row_whose_file_was_replaced_by_a_fifo_is_missing(store):
    rec = record()
    row_id = store.add(rec, encode_jpeg(picture(), 90, metadata_comment(rec)), encode_jpeg(picture(), 80))
    path = store.data_dir / store.get(row_id)["image_path"]
    path.unlink()
    os.mkfifo(path)
    assert store.reconcile().missing == [row_id]


# -- 6. thumbnails: written after their image, and reconciled too --------------------------------------

WATCH_RENAMES = """
import json, sqlite3, sys
import numpy as np
from PIL import Image
from appliance.pipeline.writer import encode_jpeg
from appliance.storage.store import Store, metadata_comment

store = Store(sys.argv[1])
rows = sqlite3.connect(f"file:{sys.argv[1]}/appliance.db?mode=ro", uri=True)
events = []

def watch(event, args):
    if event == "os.rename":
        events.append((str(args[1]), rows.execute("select count(*) from captures").fetchone()[0]))

sys.addaudithook(watch)
record = json.loads(sys.argv[2])
image = Image.fromarray(np.full((48, 64, 3), 120, np.uint8))
store.add(record, encode_jpeg(image, 90, metadata_comment(record)), encode_jpeg(image, 80))
print(json.dumps(events))
"""


def test_the_image_is_renamed_into_place_before_its_thumbnail_and_both_before_the_row(tmp_path):
    data = tmp_path / "data"
    Store(data).close()
    result = subprocess.run([sys.executable, "-c", WATCH_RENAMES, str(data), json.dumps(record())], cwd=REPO,
                            capture_output=True, text=True, timeout=60, check=True)
    renames = json.loads(result.stdout)
    assert [(os.path.relpath(target, data), rows) for target, rows in renames] == [
        (f"{DAY}/101530.123_bubo-bubo-eurasian-eagle-owl.jpg", 0),
        (f"thumbs/{DAY}/101530.123_bubo-bubo-eurasian-eagle-owl.jpg", 0)]


def test_a_thumbnail_with_neither_image_nor_row_is_quarantined(store):
    # What a kill between the thumbnail's rename and the image's used to leave (18 after 320 kills).
    put(store.data_dir, f"thumbs/{DAY}/101530.123_bubo.jpg", encode_jpeg(picture(), 80))
    report = store.reconcile()
    assert report.quarantined == [f"quarantine/thumbs/{DAY}/101530.123_bubo.jpg"]
    assert not (store.data_dir / "thumbs" / DAY / "101530.123_bubo.jpg").exists()


def test_a_kept_image_whose_thumbnail_is_gone_gets_it_again(store):
    rec = record()
    row_id = store.add(rec, encode_jpeg(picture(), 90, metadata_comment(rec)), encode_jpeg(picture(), 80))
    thumb = store.data_dir / store.get(row_id)["thumb_path"]
    thumb.unlink()
    report = store.reconcile()
    assert report.thumbnails == [store.get(row_id)["thumb_path"]]
    assert Image.open(thumb).size == (64, 48)


def test_the_thumbnail_of_a_row_whose_image_is_missing_is_kept(store):
    rec = record()
    row_id = store.add(rec, encode_jpeg(picture(), 90, metadata_comment(rec)), encode_jpeg(picture(), 80))
    (store.data_dir / store.get(row_id)["image_path"]).unlink()
    report = store.reconcile()
    assert report.missing == [row_id] and report.quarantined == []
    assert (store.data_dir / store.get(row_id)["thumb_path"]).is_file()


# -- 7. a complete temp image is finished, an incomplete one set aside ---------------------------------

def test_a_complete_temp_image_is_renamed_into_place_and_indexed(store):
    rec = record()
    data = encode_jpeg(picture(), 90, metadata_comment(rec))
    put(store.data_dir, f"{DAY}/.101530.123_bubo.jpg.4242.tmp", data)
    report = store.reconcile()
    assert report.recovered == {f"{DAY}/.101530.123_bubo.jpg.4242.tmp": f"{DAY}/101530.123_bubo.jpg"}
    assert report.quarantined == []
    [row] = store.rows()
    assert row["image_path"] == f"{DAY}/101530.123_bubo.jpg" and row["label"] == rec["label"]
    assert (store.data_dir / row["image_path"]).read_bytes() == data
    assert row["sha256"] == hashlib.sha256(data).hexdigest() and row["bytes"] == len(data)
    assert (store.data_dir / row["thumb_path"]).is_file()
    assert not (store.data_dir / DAY / ".101530.123_bubo.jpg.4242.tmp").exists()


def test_a_temp_image_cut_short_is_quarantined(store):
    data = encode_jpeg(picture(), 90, metadata_comment(record()))
    put(store.data_dir, f"{DAY}/.101530.123_bubo.jpg.4242.tmp", data[:len(data) * 2 // 3])
    report = store.reconcile()
    assert report.quarantined == [f"quarantine/{DAY}/.101530.123_bubo.jpg.4242.tmp"] and store.count() == 0


def test_a_temp_image_whose_bytes_differ_from_what_its_record_hashed_is_quarantined(store):
    from appliance.storage.images import kept_jpeg

    data = bytearray(kept_jpeg(Image.fromarray(np.random.default_rng(1).integers(0, 255, (48, 64, 3), np.uint8)),
                               90, record()))
    data[-40] ^= 0x01  # one bit of the scan data: the end marker is intact and it may still decode
    put(store.data_dir, f"{DAY}/.101530.123_bubo.jpg.4242.tmp", bytes(data))
    report = store.reconcile()
    assert report.quarantined == [f"quarantine/{DAY}/.101530.123_bubo.jpg.4242.tmp"] and store.count() == 0


def test_a_temp_image_whose_name_is_taken_is_kept_under_a_free_name(store):
    rec = record()
    taken = put(store.data_dir, f"{DAY}/101530.123_bubo.jpg", encode_jpeg(picture(10), 90, metadata_comment(rec)))
    put(store.data_dir, f"{DAY}/.101530.123_bubo.jpg.4242.tmp", encode_jpeg(picture(200), 90, metadata_comment(rec)))
    report = store.reconcile()
    assert report.recovered == {f"{DAY}/.101530.123_bubo.jpg.4242.tmp": f"{DAY}/101530.123_bubo_1.jpg"}
    assert store.count() == 2
    assert taken.is_file()


# -- the entry point a power-cut harness calls ---------------------------------------------------------

def test_reconcile_data_dir_needs_nothing_but_the_data_dir(tmp_path):
    from appliance.storage.reconcile import reconcile_data_dir

    data = tmp_path / "data"
    put(data, f"{DAY}/.101530.123_bubo.jpg.4242.tmp", encode_jpeg(picture(), 90, metadata_comment(record())))
    put(data, f"thumbs/{DAY}/101531.000_gone.jpg", encode_jpeg(picture(), 80))
    report = reconcile_data_dir(data)
    assert report.recovered == {f"{DAY}/.101530.123_bubo.jpg.4242.tmp": f"{DAY}/101530.123_bubo.jpg"}
    assert report.quarantined == [f"quarantine/thumbs/{DAY}/101531.000_gone.jpg"]
    with sqlite3.connect(data / "appliance.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert db.execute("select image_path, thumb_path from captures").fetchall() == [
            (f"{DAY}/101530.123_bubo.jpg", f"thumbs/{DAY}/101530.123_bubo.jpg")]
    assert (data / "thumbs" / DAY / "101530.123_bubo.jpg").is_file()
    assert reconcile_data_dir(data).quarantined == []  # settled: a second run changes nothing


# -- a delete cut short by the power is finished at start-up, never undone nor left half-done ---------

@pytest.mark.parametrize("cut_at", [1, 2], ids=["before-the-image", "before-the-thumbnail"])
def test_a_delete_cut_short_is_finished_at_start_up(tmp_path, monkeypatch, cut_at):
    store = Store(tmp_path / "data")
    rec, other = record(), record(captured_at="2026-11-25T10:15:31.123Z")
    gone = store.add(rec, encode_jpeg(picture(), 90, metadata_comment(rec)), encode_jpeg(picture(), 80))
    kept = store.add(other, encode_jpeg(picture(90), 90, metadata_comment(other)), encode_jpeg(picture(90), 80))
    files = [store.data_dir / store.get(gone)[k] for k in ("image_path", "thumb_path")]
    unlink, calls = Path.unlink, []

    def power_cut(path, missing_ok=False):
        calls.append(path)
        if len(calls) == cut_at:
            raise KeyboardInterrupt("the power went")  # nothing after this point runs
        unlink(path, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", power_cut)
    with pytest.raises(KeyboardInterrupt):
        store.delete([gone])
    monkeypatch.undo()
    store.db.conn.close()  # the process is gone

    store = Store(tmp_path / "data")  # the next start
    report = store.reconcile()
    assert [r["id"] for r in store.rows()] == [kept]  # not re-indexed, not a row marked missing
    assert not any(f.exists() for f in files) and report.deleted and report.quarantined == []
    assert store.finish_deletes() == []  # nothing left to finish
    store.close()
