"""EXIF and XMP in each kept JPEG, read back by ExifTool (Debian's libimage-exiftool-perl) as
camtrapR and Timelapse read them, and by the appliance's own reader."""

from __future__ import annotations

import json
import subprocess
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from appliance import __version__
from appliance.config import Config
from appliance.service.app import Appliance
from appliance.storage.image_tags import XMP_NAMESPACE, ImageTags, degrees_minutes_seconds, local_time
from appliance.storage.images import kept_jpeg, read_kept
from appliance.storage.reconcile import reconcile_data_dir
from appliance.storage.store import DB_NAME, Store

VALPARAISO = {"id": "valpo-feeder-01", "latitude": -33.045646, "longitude": -71.620361, "coordinate_uncertainty_m": 30}


def exiftool(*paths) -> dict[str, dict]:
    """ExifTool's tags of each file, by file name: -G1 groups (``XMP-appliance:Label``), -n numbers."""
    try:
        result = subprocess.run(["exiftool", "-j", "-G1", "-n", *map(str, paths)], capture_output=True, text=True,
                                check=True)
    except FileNotFoundError:
        pytest.fail("exiftool is not installed: apt-get install libimage-exiftool-perl (./dev test installs it)")
    return {Path(tags["SourceFile"]).name: tags for tags in json.loads(result.stdout)}


def taken_at(tags: dict) -> datetime:
    """The capture time ExifTool makes of DateTimeOriginal, SubSecTimeOriginal and OffsetTimeOriginal."""
    return datetime.strptime(tags["Composite:SubSecDateTimeOriginal"], "%Y:%m:%d %H:%M:%S.%f%z")


def record(**changes) -> dict:
    return {"captured_at": "2026-01-15T12:00:00.050Z", "clock_source": "ntp", "label": "Ara macao (Scarlet Macaw)",
            "score": 0.7421875, "top_k": '[["Ara macao (Scarlet Macaw)", 0.7421875]]', "kind": "match", "reason": "match",
            "model_name": "inat-bird", "model_sha256": "5" * 64, "backend": "cpu", "inference_ms": 20.5,
            "source": "parrot.jpg", **changes}


def kept_file(tmp_path, tags: ImageTags | None, rec: dict) -> Path:
    path = tmp_path / "kept.jpg"
    path.write_bytes(kept_jpeg(Image.fromarray(np.full((48, 64, 3), 90, np.uint8)), 90, rec, tags))
    return path


def test_the_jpegs_a_real_run_keeps_carry_local_time_gps_camera_and_xmp(make_config):
    config = make_config(keep={"audit_one_in": 1}, system={"timezone": "Europe/Oslo"}, deployment=VALPARAISO)
    with Appliance(config) as appliance:
        appliance.run()
    store = Store(config.storage.data_dir)
    rows = store.rows(order="source")
    store.close()
    assert sorted(row["kind"] for row in rows) == ["audit"] * 6 + ["match"] * 2
    tags_of = exiftool(*(Path(config.storage.data_dir) / row["image_path"] for row in rows))
    for row in rows:
        tags = tags_of[Path(row["image_path"]).name]
        # the row's UTC instant, in Oslo's time with Oslo's offset (CET or CEST), to the millisecond
        assert taken_at(tags) == datetime.fromisoformat(row["captured_at"].replace("Z", "+00:00"))
        assert tags["ExifIFD:OffsetTimeOriginal"] in ("+01:00", "+02:00")
        assert (tags["GPS:GPSLatitudeRef"], tags["GPS:GPSLongitudeRef"], tags["GPS:GPSMapDatum"]) == ("S", "W", "WGS-84")
        assert tags["Composite:GPSLatitude"] == pytest.approx(-33.045646, abs=1e-7)
        assert tags["Composite:GPSLongitude"] == pytest.approx(-71.620361, abs=1e-7)
        assert tags["GPS:GPSHPositioningError"] == 30
        assert (tags["IFD0:Make"], tags["IFD0:Model"]) == ("appliance", "replay camera")
        assert tags["IFD0:Software"] == f"appliance {__version__}"
        assert (tags["XMP-appliance:Label"], tags["XMP-appliance:Kind"]) == (row["label"], row["kind"])
        assert tags["XMP-appliance:Score"] == pytest.approx(row["score"], rel=1e-5)
        assert (tags["XMP-appliance:ModelName"], tags["XMP-appliance:ModelSha256"]) == ("inat-bird", row["model_sha256"])
        assert (tags["XMP-appliance:DeploymentID"], tags["XMP-appliance:ClockSource"]) == ("valpo-feeder-01", row["clock_source"])
        assert "XMP-appliance:EventID" not in tags  # no detector, no events
        # a photo manager's keywords name what was matched; an audit keep's label is what was not kept
        assert tags.get("XMP-dc:Subject") == (row["label"] if row["kind"] == "match" else None)


def test_the_appliance_still_reads_its_record_and_rebuilds_every_row_from_the_files_alone(make_config):
    config = make_config(system={"timezone": "Europe/Oslo"}, deployment=VALPARAISO)
    with Appliance(config) as appliance:
        appliance.run()
    data_dir = Path(config.storage.data_dir)
    store = Store(data_dir)
    rows = {row["image_path"]: row for row in store.rows()}
    store.close()
    for path, row in rows.items():  # read_kept checks the bytes, EXIF and XMP included, against jpeg_sha256
        back, size = read_kept((data_dir / path).read_bytes())
        assert (back["label"], back["captured_at"], size) == (row["label"], row["captured_at"], (row["width"], row["height"]))
    for name in (DB_NAME, DB_NAME + "-wal", DB_NAME + "-shm"):
        (data_dir / name).unlink(missing_ok=True)
    report = reconcile_data_dir(data_dir)
    assert sorted(report.reindexed) == sorted(rows) and not report.quarantined


def test_an_event_north_and_east_on_a_raspberry_pi_camera_in_a_zone_behind_utc_by_half_hours(tmp_path):
    config = Config().replace(camera={"backend": "picamera2"}, system={"timezone": "America/St_Johns"},
                              deployment={"id": "", "latitude": 69.6492, "longitude": 18.9553})
    tags = exiftool(kept_file(tmp_path, ImageTags.from_config(config, "imx708"),
                              record(event_id="0123456789abcdef0123456789abcdef")))["kept.jpg"]
    assert tags["Composite:SubSecDateTimeOriginal"] == "2026:01:15 08:30:00.050-03:30"
    assert (tags["IFD0:Make"], tags["IFD0:Model"]) == ("Raspberry Pi", "imx708")
    assert (tags["GPS:GPSLatitudeRef"], tags["GPS:GPSLongitudeRef"]) == ("N", "E")
    assert tags["Composite:GPSPosition"] == "69.6492 18.9553"
    assert "GPS:GPSHPositioningError" not in tags and "XMP-appliance:DeploymentID" not in tags
    assert tags["XMP-appliance:EventID"] == "0123456789abcdef0123456789abcdef"


def test_without_a_deployment_or_tags_there_is_no_gps_and_utc_is_said_as_such(tmp_path):
    tags = exiftool(kept_file(tmp_path, ImageTags(), record(captured_at="2026-07-01T23:59:59.999Z")))["kept.jpg"]
    assert tags["Composite:SubSecDateTimeOriginal"] == "2026:07:01 23:59:59.999+00:00"
    assert not any(key.startswith("GPS:") for key in tags) and "IFD0:Make" not in tags
    plain = exiftool(kept_file(tmp_path, None, record()))["kept.jpg"]  # kept_jpeg's callers without tags
    assert not any(key.split(":")[0] in ("ExifIFD", "IFD0", "GPS") or key.startswith("XMP") for key in plain)


def test_a_label_with_markup_characters_reaches_the_xmp_intact_and_its_namespace_is_ours(tmp_path):
    label = 'Ara <macao> & "friends" é🐦\x07'
    path = kept_file(tmp_path, ImageTags(deployment_id="a&b"), record(label=label, kind="audit"))
    tags = exiftool(path)["kept.jpg"]
    assert tags["XMP-appliance:Label"] == label.rstrip("\x07") and tags["XMP-appliance:DeploymentID"] == "a&b"
    assert "XMP-dc:Subject" not in tags
    assert f'xmlns:appliance="{XMP_NAMESPACE}"'.encode() in path.read_bytes()


def test_a_changed_byte_in_the_xmp_is_damage_the_appliance_sees(tmp_path):
    data = bytearray(kept_file(tmp_path, ImageTags(deployment_id="valpo"), record()).read_bytes())
    at = data.index(b"valpo")
    data[at] = ord("V")
    with pytest.raises(ValueError, match="damaged"):
        read_kept(bytes(data))


@pytest.mark.parametrize("captured_at, zone, expected", [
    ("2026-01-15T12:00:00.050Z", "Asia/Kathmandu", ("2026-01-15 17:45:00.050000", "050", "+05:45")),
    ("2026-03-29T00:59:59Z", "Europe/Oslo", ("2026-03-29 01:59:59", "", "+01:00")),  # a second before CEST
    ("2026-03-29T01:00:00Z", "Europe/Oslo", ("2026-03-29 03:00:00", "", "+02:00")),
    ("2026-07-01T10:00:00.5Z", "Mars/Olympus_Mons", ("2026-07-01 10:00:00.500000", "5", "+00:00")),  # no such zone: UTC
])
def test_local_time_gives_the_zones_wall_clock_its_fraction_and_its_offset(captured_at, zone, expected):
    moment, fraction, offset = local_time(captured_at, zone)
    assert (str(moment.replace(tzinfo=None)), fraction, offset) == expected


@pytest.mark.parametrize("value, expected", [
    (-33.045646, (33, 2, 44.3256)),
    (59.99999999999, (60, 0, 0.0)),  # rounding never writes 60 seconds
    (0.0, (0, 0, 0.0)),
])
def test_degrees_become_whole_degrees_whole_minutes_and_seconds_to_a_ten_thousandth(value, expected):
    assert tuple(float(part) for part in degrees_minutes_seconds(value)) == pytest.approx(expected, abs=1e-9)
