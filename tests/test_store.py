"""The store: durable files before rows, and reconciliation at start-up. Real SQLite, real files."""

from __future__ import annotations

import hashlib
import json
import sqlite3

import numpy as np
import pytest
from PIL import Image

from appliance.errors import StorageError
from appliance.pipeline.writer import encode_jpeg, thumbnail_of_file
from appliance.storage.files import atomic_write_bytes
from appliance.storage.store import Store, metadata_comment, slug


def record(label="Ara macao (Scarlet Macaw)", captured_at="2026-11-25T10:15:30.123Z", kind="match"):
    return {"captured_at": captured_at, "clock_source": "ntp", "label": label, "score": 0.74,
            "top_k": json.dumps([[label, 0.74]]), "kind": kind, "reason": kind, "model_name": "inat-bird",
            "model_sha256": "ab" * 32, "backend": "cpu", "inference_ms": 9.5, "source": "parrot.jpg",
            "width": 64, "height": 48}


def jpeg(rec, shade=120):
    image = Image.fromarray(np.full((48, 64, 3), shade, np.uint8))
    return encode_jpeg(image, 90, metadata_comment(rec))


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path / "data")
    yield store
    store.close()


def test_a_keep_is_stored_under_its_utc_date_with_a_matching_sha256(store):
    rec = record()
    row_id = store.add(rec, jpeg(rec), b"thumb")
    row = store.rows_by_id([row_id])[0]
    assert row["image_path"] == "2026/11/25/101530.123_ara-macao-scarlet-macaw.jpg"
    data = (store.data_dir / row["image_path"]).read_bytes()
    assert row["sha256"] == hashlib.sha256(data).hexdigest() and row["bytes"] == len(data)
    assert (store.data_dir / row["thumb_path"]).read_bytes() == b"thumb"
    assert row["starred"] == 0 and row["offloaded_at"] is None and row["missing"] == 0
    assert store.used_bytes == len(data)


def test_two_keeps_in_the_same_millisecond_get_different_files(store):
    rec = record()
    first, second = store.add(rec, jpeg(rec), b"t"), store.add(rec, jpeg(rec, 10), b"t")
    paths = {r["image_path"] for r in store.rows_by_id([first, second])}
    assert len(paths) == 2


def test_the_database_is_in_wal_mode(store):
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_audit_bytes_are_counted_apart(store):
    rec = record(kind="audit")
    store.add(rec, jpeg(rec), b"t")
    assert store.audit_bytes == store.used_bytes > 0


def test_delete_removes_file_thumbnail_and_row_and_frees_the_bytes(store):
    rec = record()
    row_id = store.add(rec, jpeg(rec), b"t")
    row = store.rows_by_id([row_id])[0]
    assert store.delete([row_id]) == row["bytes"]
    assert not (store.data_dir / row["image_path"]).exists()
    assert not (store.data_dir / row["thumb_path"]).exists()
    assert store.count() == 0 and store.used_bytes == 0


def test_reconcile_marks_a_row_whose_file_is_gone_as_missing(store):
    rec = record()
    row_id = store.add(rec, jpeg(rec), b"t")
    (store.data_dir / store.rows_by_id([row_id])[0]["image_path"]).unlink()
    report = store.reconcile()
    assert report.missing == [row_id]
    assert store.rows_by_id([row_id])[0]["missing"] == 1
    assert store.used_bytes == 0


def test_reconcile_reindexes_a_complete_file_whose_row_was_never_written(store):
    # Exactly the state a crash between the file's rename and the row's insert leaves behind.
    rec = record(label="Bubo bubo (Eurasian Eagle-Owl)")
    path = store.data_dir / "2026/11/25/101530.123_bubo.jpg"
    path.parent.mkdir(parents=True)
    data = jpeg(rec)
    atomic_write_bytes(path, data)
    report = store.reconcile(thumbnail=thumbnail_of_file)
    assert report.reindexed == ["2026/11/25/101530.123_bubo.jpg"]
    row = store.rows()[0]
    assert row["label"] == "Bubo bubo (Eurasian Eagle-Owl)" and row["source"] == "parrot.jpg"
    assert row["sha256"] == hashlib.sha256(data).hexdigest() and (row["width"], row["height"]) == (64, 48)
    assert (store.data_dir / row["thumb_path"]).is_file()
    assert store.reconcile().reindexed == []  # once indexed, it stays indexed


def test_reconcile_quarantines_what_it_cannot_read_and_deletes_nothing(store):
    day = store.data_dir / "2026/11/25"
    day.mkdir(parents=True)
    rec = record()
    (day / "truncated.jpg").write_bytes(jpeg(rec)[:200])
    (day / "foreign.jpg").write_bytes(encode_jpeg(Image.new("RGB", (8, 8)), 90))  # no appliance metadata
    (day / ".half-written.jpg.123.tmp").write_bytes(b"\xff\xd8partial")
    report = store.reconcile()
    assert sorted(report.quarantined) == ["quarantine/2026/11/25/.half-written.jpg.123.tmp",
                                          "quarantine/2026/11/25/foreign.jpg", "quarantine/2026/11/25/truncated.jpg"]
    assert store.count() == 0
    assert (store.data_dir / "quarantine/2026/11/25/truncated.jpg").read_bytes() == jpeg(rec)[:200]


def test_a_data_dir_that_cannot_be_used_is_a_storage_error(tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    with pytest.raises(StorageError, match="storage.data_dir"):
        Store(not_a_dir)


def test_a_corrupt_database_is_a_storage_error_naming_the_folder(tmp_path):
    (tmp_path / "appliance.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StorageError, match=str(tmp_path)):
        Store(tmp_path)


def test_labels_become_safe_file_names():
    assert slug("Ara macao (Scarlet Macaw)") == "ara-macao-scarlet-macaw"
    assert slug("../../etc/passwd") == "etc-passwd"
    assert slug("ñ") == "unlabelled"
    assert sqlite3.sqlite_version  # the stdlib sqlite3 is what sqlite-utils drives


def test_the_status_count_may_be_a_few_seconds_old_but_this_process_s_changes_refresh_it(tmp_path, store):
    rec = record()
    store.add(rec, jpeg(rec), b"thumb")
    assert store.count(max_age_s=60) == 1
    other = Store(tmp_path / "data")  # the loop, in its own process, keeps one more
    rec2 = record(captured_at="2026-11-25T10:15:31.123Z")
    other.add(rec2, jpeg(rec2, 90), b"thumb")
    other.close()
    assert store.count(max_age_s=60) == 1  # the page's count waits for its age
    assert store.count() == 2  # an exact count when asked for one
    rec3 = record(captured_at="2026-11-25T10:15:32.123Z")
    third = store.add(rec3, jpeg(rec3, 60), b"thumb")
    assert store.count(max_age_s=60) == 3  # this process's own keep refreshes it at once
    store.delete([third])
    assert store.count(max_age_s=60) == 2  # and its delete


def test_retention_s_delete_spares_an_item_starred_since_it_was_chosen(store):
    rec = record()
    row_id = store.add(rec, jpeg(rec), b"thumb")
    image = store.data_dir / store.get(row_id)["image_path"]
    store.set_starred(row_id, True)  # the page stars it after retention chose it
    assert store.delete([row_id], keep_starred=True) == 0
    assert store.get(row_id) is not None and image.is_file()
    assert store.delete([row_id]) > 0 and store.get(row_id) is None  # the owner's own delete takes it


def test_an_id_is_never_given_again_after_its_capture_is_deleted_even_after_a_restart(tmp_path):
    """SQLite gives the largest rowid again once its row is gone; the page caches images by id for a day,
    and the sync and the links name items by id, so a new keep must never take a deleted one's."""
    store = Store(tmp_path / "data")
    ids = [store.insert_row(dict(_ROW, image_path=f"2026/01/01/{n}.jpg", sha256=f"{n:064x}")) for n in range(3)]
    store.delete([ids[-1]])
    after = store.insert_row(dict(_ROW, image_path="2026/01/01/x.jpg", sha256="a" * 64))
    assert after == ids[-1] + 1
    store.delete([after])
    store.close()
    store = Store(tmp_path / "data")
    assert store.insert_row(dict(_ROW, image_path="2026/01/01/y.jpg", sha256="b" * 64)) == after + 1
    store.close()


_ROW = {"captured_at": "2026-01-01T00:00:00.000Z", "label": "Robin", "score": 0.9, "kind": "match", "bytes": 10,
        "thumb_path": ""}
