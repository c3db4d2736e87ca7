"""What a detector's keep adds to the store (issue 15): its box, track and detector in its record and
row, read back from its file when the row is lost; its crop, written and deleted with its row; the
lookup of a track's keep. Real photos, real JPEGs, real SQLite in a temp dir."""

from __future__ import annotations

import io
import json
import sqlite3

import numpy as np
import pytest
from conftest import IMAGES
from PIL import Image
from sqlite_utils import Database

from appliance.pipeline.detections import Box, crop_square
from appliance.storage.images import (
    DETECTION_FIELDS, METADATA_PREFIX, RECORD_FIELDS, box_text, encode_jpeg, kept_jpeg, make_thumbnail,
    metadata_comment, read_kept, read_record,
)
from appliance.storage.store import COLUMNS, DB_NAME, Store

DAY = "2026/11/25"
EVENT = "3f2a9c0e5b7d4e1f8a6b2c9d0e1f2a3b"
DETECTOR_SHA256 = "5d" * 32


def record(captured_at="2026-11-25T10:15:30.123Z", **changes):
    """A keep of the macaw photo as the writer makes it, without a detector."""
    label = "Ara macao (Scarlet Macaw)"
    return dict({"captured_at": captured_at, "clock_source": "ntp", "label": label, "score": 0.79,
                 "top_k": json.dumps([[label, 0.79], ["background", 0.05]]), "kind": "match", "reason": "match",
                 "model_name": "inat-bird", "model_sha256": "ab" * 32, "backend": "cpu", "inference_ms": 9.5,
                 "source": "parrot.jpg", "width": 0, "height": 0}, **changes)


def detector_record(event_id=EVENT, event_frame=2, **changes):
    """A keep made through the detector stage: the macaw's box, its track and the detector."""
    return record(**dict({"event_id": event_id, "event_frame": event_frame, "box": box_text((0.21, 0.1, 0.74, 0.93)),
                          "detector_label": "bird", "detector_score": 0.78,
                          "detector_name": "ssd_mobilenet_v1_1.0_coco_quant", "detector_sha256": DETECTOR_SHA256},
                         **changes))


@pytest.fixture(scope="module")
def photo():
    with Image.open(IMAGES / "parrot.jpg") as image:
        return image.convert("RGB")


def crop_of(photo, box=(0.21, 0.1, 0.74, 0.93)) -> bytes:
    """The box's square cut from the photo and area-averaged to the classifier's 224x224, as a JPEG
    (~10 KB), as the detector stage makes it."""
    square = Image.fromarray(crop_square(np.asarray(photo), Box(*box)))
    out = io.BytesIO()
    square.resize((224, 224), Image.Resampling.BOX).save(out, "JPEG", quality=85)
    return out.getvalue()


def keep(store, photo, rec, crop=None) -> int:
    """Store ``rec`` as the writer does: the kept JPEG with its record, its thumbnail, its crop."""
    rec = dict(rec, width=photo.width, height=photo.height)
    return store.add(rec, kept_jpeg(photo, 85, rec), make_thumbnail(photo, 320), crop)


def crop_rows(store) -> list[tuple]:
    return store.select("select capture_id, length(jpeg) from crops order by capture_id")


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path / "data")
    yield store
    store.close()


# -- the record in the file ------------------------------------------------------------------------

def test_a_detector_keeps_record_round_trips_through_its_jpeg_with_every_field(photo):
    rec = detector_record()
    back, size = read_kept(kept_jpeg(photo, 85, rec))
    assert size == photo.size
    assert {k: back[k] for k in DETECTION_FIELDS} == {k: rec[k] for k in DETECTION_FIELDS}
    assert back["box"] == "[0.21,0.1,0.74,0.93]" and back["event_frame"] == 2
    assert {k: back[k] for k in RECORD_FIELDS} == {k: rec[k] for k in RECORD_FIELDS}


def test_a_record_without_a_detector_reads_back_as_before_with_none_of_the_fields(photo):
    rec = record(event_id=None, box=None)  # the writer may pass the keys with no value
    assert b"event_id" not in metadata_comment(rec) and b"box" not in metadata_comment(rec)
    back, _ = read_kept(kept_jpeg(photo, 85, rec))
    assert set(back) == set(RECORD_FIELDS)
    # A file written before the fields existed: its comment holds exactly the old fields.
    old = json.dumps({k: record()[k] for k in RECORD_FIELDS}).encode()
    assert set(read_record(old)) == set(RECORD_FIELDS)


BAD = [
    ("event_id", "3F2A9C0E5B7D4E1F8A6B2C9D0E1F2A3B"), ("event_id", EVENT[:31]), ("event_id", EVENT + "0"),
    ("event_id", "g" * 32), ("event_id", 7),
    ("event_frame", -1), ("event_frame", 1.5), ("event_frame", True), ("event_frame", "2"), ("event_frame", 2**63),
    ("box", "[0.74,0.1,0.21,0.93]"), ("box", "[0.2,0.5,0.7,0.5]"), ("box", "[0,0,1]"), ("box", "[0,0,1.2,1]"),
    ("box", "[-0.1,0,1,1]"), ("box", "[true,0,1,1]"), ("box", "[NaN,0,1,1]"), ("box", "[0,0,1e999,1]"),
    ("box", "left top right bottom"), ("box", [0.2, 0.1, 0.7, 0.9]), ("box", "[" * 30000 + "]" * 30000),
    ("detector_label", ""), ("detector_label", 16),
    ("detector_score", 1.5), ("detector_score", -0.01), ("detector_score", "0.78"), ("detector_score", True),
    ("detector_score", 10**400),
    ("detector_name", 3), ("detector_sha256", "5d" * 31), ("detector_sha256", "5D" * 32),
]


@pytest.mark.parametrize("field, value", BAD, ids=[f"{f}={v!r:.24}" for f, v in BAD])
def test_a_bad_detection_field_is_refused_naming_the_field(field, value):
    payload = json.dumps({**{k: record()[k] for k in RECORD_FIELDS}, **detector_record(**{field: value})})
    with pytest.raises(ValueError, match=f"its record's {field} "):
        read_record(payload.encode())


def test_the_store_refuses_a_bad_detection_field_before_writing_any_file(store, photo):
    with pytest.raises(ValueError, match="its record's box "):
        keep(store, photo, detector_record(box="[0.5,0.5,0.5,0.9]"))
    assert store.count() == 0
    assert not [p for p in store.data_dir.rglob("*.jpg")]


def test_box_text_clamps_to_the_frame_rounds_and_refuses_a_box_outside_it():
    assert box_text((-0.004, 0.25, 0.5000004, 1.013)) == "[0.0,0.25,0.5,1.0]"
    with pytest.raises(ValueError, match="box"):
        box_text((1.02, 0.1, 1.3, 0.4))  # wholly right of the frame: nothing left of it


def test_a_record_with_a_number_no_row_can_hold_is_quarantined_and_start_up_goes_on(store, photo):
    # JSON's whole numbers have no bound: one past a float's range raised OverflowError (not a
    # ValueError) through reconciliation, which stopped the start-up.
    for n, (field, value) in enumerate((("score", 10**400), ("score", -10**30), ("inference_ms", 2**63))):
        payload = json.dumps(dict({k: record()[k] for k in RECORD_FIELDS}, **{field: value})).encode()
        with pytest.raises(ValueError, match=f"its record's {field} "):
            read_record(payload)
        path = store.data_dir / DAY / f"10153{n}.123_ara-macao.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode_jpeg(photo, 85, METADATA_PREFIX + payload))
    report = store.reconcile()
    assert len(report.quarantined) == 3 and store.count() == 0


# -- the row, its crop, its track ------------------------------------------------------------------

def test_a_crop_is_stored_with_its_row_read_back_and_deleted_with_it(store, photo):
    crop = crop_of(photo)
    assert 3_000 < len(crop) < 30_000  # about the ~10 KB the writer makes
    capture_id = keep(store, photo, detector_record(), crop)
    row = store.get(capture_id)
    assert {k: row[k] for k in DETECTION_FIELDS} == {k: detector_record()[k] for k in DETECTION_FIELDS}
    assert store.crop(capture_id) == crop and store.has_crop(capture_id)
    assert crop_rows(store) == [(capture_id, len(crop))]
    assert store.used_bytes == row["bytes"]  # a crop, like a thumbnail, is not counted
    other = keep(store, photo, record(captured_at="2026-11-25T10:15:31.000Z"))
    assert store.crop(other) is None and not store.has_crop(other)

    store.delete([capture_id])
    assert store.crop(capture_id) is None and crop_rows(store) == []
    assert [r["id"] for r in store.rows()] == [other]


def test_a_row_and_its_crop_are_one_transaction(store, photo):
    # The crop's insert fails (as a full disk or a damaged page would): the row must not stay alone.
    store.db.conn.execute("create trigger refuse_crops before insert on crops begin select raise(abort, 'no room'); end")
    with pytest.raises(sqlite3.DatabaseError, match="no room"):
        keep(store, photo, detector_record(), crop_of(photo))
    assert store.count() == 0 and store.rows() == [] and crop_rows(store) == []
    # The files are durable before the row, as for every keep: start-up indexes them again.
    assert store.reconcile().reindexed == [f"{DAY}/101530.123_ara-macao-scarlet-macaw.jpg"]


def test_a_new_keep_never_shows_a_crop_left_behind_by_a_row_deleted_without_it(store, photo):
    first = keep(store, photo, detector_record(), crop_of(photo))
    # An older appliance's page deletes the newest row and knows nothing of crops. SQLite would give its id
    # to the next row; the store never gives an id twice, and a crop under a new row's id is never shown.
    store.db.conn.execute("delete from captures where id = ?", [first])
    store.db.conn.commit()
    again = keep(store, photo, record(captured_at="2026-11-25T11:00:00.000Z"))
    assert again == first + 1 and store.crop(again) is None
    store.db.conn.execute("insert into crops (capture_id, jpeg) values (?, ?)", [again + 1, b"stale"])
    store.db.conn.commit()
    crop = crop_of(photo, (0.3, 0.2, 0.6, 0.8))
    assert keep(store, photo, detector_record(), crop) == again + 1 and store.crop(again + 1) == crop
    assert keep(store, photo, record(captured_at="2026-11-25T12:00:00.000Z")) == again + 2


def test_the_keep_of_a_tracks_frame_is_found_by_its_event_and_frame(store, photo):
    frame0 = keep(store, photo, detector_record(event_frame=0))
    frame3 = keep(store, photo, detector_record(event_frame=3))
    elsewhere = keep(store, photo, detector_record(event_id="0" * 32, event_frame=0))
    keep(store, photo, record())
    assert store.event_keep_id(EVENT, 0) == frame0 and store.event_keep_id(EVENT, 3) == frame3
    assert store.event_keep_id("0" * 32, 0) == elsewhere
    assert store.event_keep_id(EVENT, 1) is None and store.event_keep_id("f" * 32, 0) is None
    plan = store.select("explain query plan select id from captures where event_id = ? and event_frame = ?", [EVENT, 0])
    assert "captures_event" in str(plan)  # an index, not a scan of every keep


def test_an_old_database_gains_the_columns_the_crops_table_and_the_index(tmp_path, photo):
    data = tmp_path / "data"
    data.mkdir()
    old = Database(data / DB_NAME)
    old["captures"].create({k: v for k, v in COLUMNS.items() if k not in DETECTION_FIELDS}, pk="id")
    old["captures"].insert(dict(record(), image_path="2026/11/25/a.jpg", thumb_path="thumbs/2026/11/25/a.jpg",
                                width=1, height=1, bytes=10, sha256="0" * 64, starred=0, missing=0))
    old.close()
    store = Store(data)
    try:
        assert set(DETECTION_FIELDS) <= set(store.db["captures"].columns_dict)
        assert store.get(1)["box"] is None and store.crop(1) is None
        capture_id = keep(store, photo, detector_record(), crop_of(photo))
        assert store.get(capture_id)["event_id"] == EVENT and store.crop(capture_id) == crop_of(photo)
        assert "captures_event" in {index.name for index in store.db["captures"].indexes}
    finally:
        store.close()


def test_reconcile_indexes_a_detector_keep_whose_row_was_lost_with_its_detection_fields(store, photo):
    rec = dict(detector_record(), width=photo.width, height=photo.height)
    path = store.data_dir / DAY / "101530.123_ara-macao-scarlet-macaw.jpg"
    path.parent.mkdir(parents=True)
    path.write_bytes(kept_jpeg(photo, 85, rec))  # a crash between its rename and its row
    report = store.reconcile()
    assert report.reindexed == [f"{DAY}/101530.123_ara-macao-scarlet-macaw.jpg"]
    (row,) = store.rows()
    assert {k: row[k] for k in DETECTION_FIELDS} == {k: rec[k] for k in DETECTION_FIELDS}
    assert store.event_keep_id(EVENT, 2) == row["id"]
    assert store.crop(row["id"]) is None  # the file does not carry the crop


def test_a_file_with_a_spoilt_detection_field_is_quarantined_at_start_up(store, photo):
    rec = dict(detector_record(), width=photo.width, height=photo.height)
    data = kept_jpeg(photo, 85, rec).replace(b'"box":"[0.21,0.1,0.74,0.93]"', b'"box":"[0.91,0.1,0.24,0.93]"')
    assert b"0.91,0.1,0.24" in data  # same length: the file stays whole, only its box is wrong
    path = store.data_dir / DAY / "101530.123_ara-macao-scarlet-macaw.jpg"
    path.parent.mkdir(parents=True)
    path.write_bytes(data)
    assert store.reconcile().quarantined == [f"quarantine/{DAY}/101530.123_ara-macao-scarlet-macaw.jpg"]
    assert store.count() == 0
