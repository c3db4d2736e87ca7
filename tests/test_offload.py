"""USB offload onto real filesystem images, loop-mounted: ext4 by the kernel, exFAT through FUSE
(this kernel has neither vfat nor exfat; a Pi's kernel mounts all three itself). Needs root."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO
from PIL import Image

from appliance.config import Config, to_toml
from appliance.errors import OffloadError
from appliance.pipeline.writer import encode_jpeg
from appliance.storage.store import Store, metadata_comment
from appliance.transfer.export import export_name
from appliance.transfer.offload import OffloadLock, offload, read_back_sha256s, read_progress
from appliance.transfer.stick import drop_device_cache, mounted

MKFS = {"ext4": ["mkfs.ext4", "-q", "-F"], "exfat": ["mkfs.exfat"]}
HOST = "trailcam"

if os.geteuid() != 0 or not shutil.which("losetup"):
    pytest.skip("USB offload tests mount loop devices: they need root and losetup", allow_module_level=True)


def make_image(path: Path, fstype: str, size_mb: int) -> Path:
    with open(path, "wb") as f:
        f.truncate(size_mb * 2**20)
    if fstype:
        subprocess.run([*MKFS[fstype], str(path)], check=True, capture_output=True)
    return path


@contextlib.contextmanager
def loop_device(image: Path, read_only=False):
    device = subprocess.run(["losetup", "-f", "--show", *(["-r"] if read_only else []), str(image)],
                            check=True, capture_output=True, text=True).stdout.strip()
    try:
        yield device
    finally:
        subprocess.run(["losetup", "-d", device], capture_output=True)


@contextlib.contextmanager
def stick(tmp_path, fstype="ext4", size_mb=64, name="stick", read_only=False):
    """A freshly formatted stick, mounted the way the appliance mounts one."""
    image = make_image(tmp_path / f"{name}.img", fstype, size_mb)
    with loop_device(image, read_only) as device, mounted(device, tmp_path / "mnt") as point:
        yield point


def fill(store, count=40, kb=100, first=0):
    """``count`` real keeps of roughly ``kb`` KB each (noise does not compress), several labels."""
    labels = ("Ara macao (Scarlet Macaw)", "Bubo bubo (Eurasian Eagle-Owl)", "Poecile atricapillus")
    rng = np.random.default_rng(7 + first)
    side = int((kb * 1000 / 1.33) ** 0.5)  # noise at quality 95 takes ~1.33 bytes a pixel
    for i in range(first, first + count):
        label = labels[i % 3]
        record = {"captured_at": f"2026-11-{20 + i // 20:02d}T10:{i % 60:02d}:00.000Z", "clock_source": "ntp",
                  "label": label, "score": 0.8, "top_k": json.dumps([[label, 0.8]]), "kind": "match",
                  "reason": "match", "model_name": "inat-bird", "model_sha256": "ab" * 32, "backend": "cpu",
                  "inference_ms": 8.0, "source": f"frame{i}.jpg", "width": side, "height": side}
        image = Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8))
        store.add(record, encode_jpeg(image, 95, metadata_comment(record)), b"thumb")


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path / "data")
    fill(store)
    yield store
    store.close()


def on_stick(point, row):
    return point / HOST / export_name(row)


def assert_marked_means_verified(store, point):
    for row in store.rows("offloaded_at is not null"):
        assert hashlib.sha256(on_stick(point, row).read_bytes()).hexdigest() == row["sha256"]


@pytest.mark.parametrize("fstype", ["ext4", "exfat"])
def test_every_item_is_copied_verified_and_marked_with_a_manifest_matching_the_database(tmp_path, store, fstype):
    with stick(tmp_path, fstype) as point:
        report = offload(store, point, HOST)
        assert report.is_complete and report.copied == 40 and report.remaining == 0
        rows = store.rows()
        assert all(r["offloaded_at"] for r in rows)
        assert_marked_means_verified(store, point)
        (jsonl,) = (point / HOST).glob("manifest-*.jsonl")
        manifest = [json.loads(line) for line in jsonl.read_text().splitlines()]
        assert {m["id"]: (m["file"], m["sha256"], m["label"], m["kind"]) for m in manifest} == {
            r["id"]: (export_name(r), r["sha256"], r["label"], r["kind"]) for r in rows}
        csv_text = jsonl.with_suffix(".csv").read_text()
        assert csv_text.startswith("file,sha256,bytes,captured_at,label,model_label,corrected_label,score,model,kind")
        assert len(csv_text.splitlines()) == 41
        assert not list(point.rglob("*.tmp"))


def test_images_kept_while_an_offload_runs_are_left_for_the_next_one_and_do_not_make_it_fail(tmp_path, store):
    def keep_more(report, *_):
        if report.verified and store.count() == 40:
            fill(store, count=3, kb=20, first=40)  # the loop keeps on while the stick fills

    with stick(tmp_path, "ext4") as point:
        report = offload(store, point, HOST, progress=keep_more, batch_bytes=1_000_000)
        assert store.count() == 43
        assert (report.is_complete, report.verified, report.remaining, report.kept_since) == (True, 40, 0, 3)
        assert "3 kept since it started (offload again to take them)" in report.summary()
        again = offload(store, point, HOST)
        assert (again.is_complete, again.copied, again.kept_since) == (True, 3, 0)
        assert_marked_means_verified(store, point)


def test_a_second_run_copies_nothing_already_on_the_stick(tmp_path, store):
    with stick(tmp_path, "exfat") as point:
        offload(store, point, HOST)
        before = {p: p.stat().st_mtime_ns for p in (point / HOST).rglob("*.jpg")}
        store.db.execute("update captures set offloaded_at = null")  # as if the marks were lost
        store.db.conn.commit()
        again = offload(store, point, HOST)
        assert (again.copied, again.already_there, again.is_complete) == (0, 40, True)
        assert {p: p.stat().st_mtime_ns for p in (point / HOST).rglob("*.jpg")} == before


def test_labels_that_fat_and_exfat_forbid_become_safe_names_inside_the_appliances_folder(tmp_path, store):
    nasty = ['Who: "me"? <yes> | no*', "trailing dots...", "../../escape", "  spaces  ", "ü" * 300, "CON"]
    for capture_id, label in enumerate(nasty, start=1):
        store.relabel(capture_id, label)
    with stick(tmp_path, "exfat") as point:
        (point / "keep-me.txt").write_text("the owner's file")
        report = offload(store, point, HOST)
        assert report.is_complete
        assert_marked_means_verified(store, point)
        assert sorted(p.name for p in point.iterdir()) == sorted([HOST, "keep-me.txt"])
        folders = {p.name for p in (point / HOST).iterdir() if p.is_dir()}
        assert "CON_" in folders and "CON" not in folders  # Windows cannot open a folder named CON
        assert all(len(name) <= 100 and not name.endswith((".", " ")) for name in folders)
        assert (point / "keep-me.txt").read_text() == "the owner's file"


def test_links_planted_on_the_stick_never_lead_a_copy_outside_the_appliances_folder(tmp_path, store):
    rows = store.rows(order="captured_at, id")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.jpg").write_bytes(b"not yours")
    with stick(tmp_path, "ext4") as point:
        # a file name on the stick that is a link to a file elsewhere: replaced by the copy, the file untouched
        first = on_stick(point, rows[0])
        first.parent.mkdir(parents=True)
        first.symlink_to(outside / "precious.jpg")
        # our temporary name, planted as a link: removed at the start, never written through
        second = on_stick(point, rows[1])
        second.parent.mkdir(parents=True, exist_ok=True)
        second.with_name(f".{second.name}.tmp").symlink_to(outside / "precious.jpg")
        report = offload(store, point, HOST)
        assert report.is_complete and report.copied == 40
        assert not first.is_symlink() and first.read_bytes() == (store.data_dir / rows[0]["image_path"]).read_bytes()
        assert (outside / "precious.jpg").read_bytes() == b"not yours" and os.listdir(outside) == ["precious.jpg"]
        assert_marked_means_verified(store, point)

        # a label folder that is a link to somewhere else: the offload stops before writing anything there
        store.db.execute("update captures set offloaded_at = null")
        store.db.conn.commit()
        label_folder = first.parent
        shutil.rmtree(label_folder)
        label_folder.symlink_to(outside, target_is_directory=True)
        again = offload(store, point, HOST)
        assert again.stopped_because and "unsafe name" in again.stopped_because
        assert os.listdir(outside) == ["precious.jpg"] and (outside / "precious.jpg").read_bytes() == b"not yours"
        assert_marked_means_verified(store, point)


def test_a_full_stick_takes_what_fits_and_a_second_offload_completes_the_rest(tmp_path, store):
    with stick(tmp_path, "ext4", size_mb=2, name="small") as point:
        first = offload(store, point, HOST)
        assert first.stopped_because == "the stick is full"
        assert 0 < first.copied < 40 and first.remaining == 40 - first.copied
        assert first.remaining_bytes == sum(r["bytes"] for r in store.rows("offloaded_at is null"))
        assert_marked_means_verified(store, point)
        assert not list(point.rglob("*.tmp"))  # the copy cut short by the full stick left nothing
    on_small_stick = {r["id"] for r in store.rows("offloaded_at is not null")}
    with stick(tmp_path, "ext4", name="big") as point:
        second = offload(store, point, HOST)
        assert second.is_complete and second.copied == first.remaining
        for row in store.rows():
            if row["id"] not in on_small_stick:
                assert hashlib.sha256(on_stick(point, row).read_bytes()).hexdigest() == row["sha256"]


def fuse_driver_pid(device: str, point: Path) -> int:
    """The one mount.exfat-fuse process serving ``device`` on ``point``, found by whole arguments (a
    pattern for /dev/loop1 also matches /dev/loop10-19, which other tests and programs may be using)."""
    wanted = {os.fsencode(device), os.fsencode(str(point))}
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:  # it ended meanwhile
            continue
        if os.path.basename(argv[0]) == b"mount.exfat-fuse" and wanted <= set(argv):
            pids.append(int(proc.name))
    assert len(pids) == 1, f"not exactly one mount.exfat-fuse for {device} on {point}: {pids}"
    return pids[0]


def test_a_stick_pulled_mid_copy_leaves_nothing_unverified_marked_and_the_next_offload_resumes(tmp_path, store):
    image = make_image(tmp_path / "pulled.img", "exfat", 64)
    with loop_device(image) as device, mounted(device, tmp_path / "mnt") as point:
        pulled = []

        def pull_after_ten(report, *_):
            if 10 <= report.verified < 40 and not pulled:  # the FUSE driver dies with the stick: all access fails
                os.kill(fuse_driver_pid(device, point), signal.SIGKILL)
                pulled.append(report.verified)

        report = offload(store, point, HOST, progress=pull_after_ten, batch_bytes=500_000)
    assert pulled and report.stopped_because and "removed" in report.stopped_because
    marked = store.rows("offloaded_at is not null")
    assert 10 <= len(marked) == report.verified < 40
    with loop_device(image) as device, mounted(device, tmp_path / "mnt") as point:
        assert_marked_means_verified(store, point)
        again = offload(store, point, HOST)
        assert again.is_complete and again.verified == 40 - len(marked)
        assert_marked_means_verified(store, point)


def test_a_vanished_mount_stops_the_offload_instead_of_filling_the_sd_card(tmp_path, store):
    with stick(tmp_path, "ext4") as point:
        def unmount_after_five(report, *_):
            if 5 <= report.verified < 40 and os.path.ismount(point):
                subprocess.run(["umount", "-l", str(point)], check=True)

        report = offload(store, point, HOST, progress=unmount_after_five, batch_bytes=500_000)
        assert 5 <= report.verified < 40 and "removed" in report.stopped_because
        assert not (point / HOST).exists()  # nothing landed in the bare mount point


def test_after_offload_delete_removes_only_what_was_verified(tmp_path, store):
    with stick(tmp_path, "ext4", size_mb=2) as point:
        report = offload(store, point, HOST, after_offload="delete")
    assert report.deleted == report.verified > 0 and report.remaining > 0
    left = store.rows()
    assert len(left) == 40 - report.deleted and not any(r["offloaded_at"] for r in left)
    assert all((store.data_dir / r["image_path"]).is_file() for r in left)


def test_a_read_only_stick_is_refused_with_a_clear_message(tmp_path):
    image = make_image(tmp_path / "ro.img", "ext4", 16)
    with loop_device(image, read_only=True) as device:
        with pytest.raises(OffloadError, match="read-only"):
            with mounted(device, tmp_path / "mnt"):
                pass


def test_an_unformatted_or_unsupported_stick_is_refused_with_what_is_supported(tmp_path):
    image = make_image(tmp_path / "blank.img", "", 8)
    with loop_device(image) as device:
        with pytest.raises(OffloadError, match="no filesystem.*FAT32 \\(vfat\\), exFAT or ext4"):
            with mounted(device, tmp_path / "mnt"):
                pass


def test_a_stick_with_thousands_of_unrelated_files_is_fine_and_they_are_untouched(tmp_path, store):
    with stick(tmp_path, "ext4") as point:
        photos = point / "DCIM"
        photos.mkdir()
        for i in range(3000):
            (photos / f"IMG_{i:04d}.txt").write_text(str(i))
        before = {p: p.stat().st_mtime_ns for p in photos.iterdir()}
        assert offload(store, point, HOST).is_complete
        assert {p: p.stat().st_mtime_ns for p in photos.iterdir()} == before


def test_only_one_offload_runs_at_a_time(tmp_path):
    with OffloadLock(tmp_path):
        with pytest.raises(OffloadError, match="already running"):
            with OffloadLock(tmp_path):
                pass


def sectors_read(device):
    return int(Path(f"/sys/block/{Path(device).name}/stat").read_text().split()[2])


@pytest.mark.parametrize("fstype", ["ext4", "exfat"])
def test_verification_reads_every_copy_back_from_the_stick_not_from_memory(tmp_path, store, fstype):
    image = make_image(tmp_path / "readback.img", fstype, 64)
    with loop_device(image) as device, mounted(device, tmp_path / "mnt") as point:
        before = sectors_read(device)
        report = offload(store, point, HOST, before_verify=lambda: drop_device_cache(device))
        read_bytes = (sectors_read(device) - before) * 512
    assert report.is_complete
    assert read_bytes >= sum(r["bytes"] for r in store.rows())


def test_reading_back_reports_a_copy_that_cannot_be_read_and_still_checks_the_ones_after_it(tmp_path):
    with stick(tmp_path) as point:
        contents = [os.urandom(300_000 + i) for i in range(3)]
        paths = [point / f"{i}.jpg" for i in range(3)]
        for path, data in zip(paths, contents):
            path.write_bytes(data)
        os.sync()
        paths[1].unlink()
        results = read_back_sha256s(paths)
    assert [path for path, _ in results] == paths
    assert results[0][1] == hashlib.sha256(contents[0]).hexdigest()
    assert isinstance(results[1][1], FileNotFoundError)
    assert results[2][1] == hashlib.sha256(contents[2]).hexdigest()


def test_the_offload_command_mounts_the_device_copies_and_reports_progress(tmp_path, store):
    config = Config().replace(storage={"data_dir": str(store.data_dir)}, status={"runtime_dir": str(tmp_path / "run")})
    (tmp_path / "appliance.toml").write_text(to_toml(config))
    image = make_image(tmp_path / "cli.img", "ext4", 64)
    with loop_device(image) as device:
        result = subprocess.run([sys.executable, "-m", "appliance", "offload", "--config", str(tmp_path / "appliance.toml"),
                                 "--device", device], cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert "40 images verified on the stick" in result.stdout
        progress = read_progress(tmp_path / "run")
        assert progress["state"] == "done" and progress["items_done"] == 40 and progress["remaining"] == 0
        assert not list((tmp_path / "run" / "mnt").glob("*"))  # unmounted and tidied
    assert all(r["offloaded_at"] for r in store.rows())


def test_offload_to_a_folder_by_hand(tmp_path, store):
    config = Config().replace(storage={"data_dir": str(store.data_dir)}, status={"runtime_dir": str(tmp_path / "run")})
    (tmp_path / "appliance.toml").write_text(to_toml(config))
    result = subprocess.run([sys.executable, "-m", "appliance", "offload", "--config", str(tmp_path / "appliance.toml"),
                             "--to", str(tmp_path / "folder")], cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert len(list((tmp_path / "folder").rglob("*.jpg"))) == 40


def test_the_offload_button_offloads_a_running_appliances_keeps_to_the_stick_and_the_leds_follow(tmp_path, make_config):
    import threading
    import time

    from gpiozero.pins.mock import MockFactory

    from appliance.config import GpioConfig
    from appliance.service.app import Appliance

    image = make_image(tmp_path / "button.img", "ext4", 64)
    by_id = tmp_path / "by-id"
    by_id.mkdir()
    factory = MockFactory()
    config = make_config(camera={"replay_loop": True, "fps": 20.0}, gpio={"enabled": "on"})
    with loop_device(image) as device:
        (by_id / "usb-Test_Stick_0001-0:0-part1").symlink_to(device)  # what udev makes for a stick
        appliance = Appliance(config, pin_factory=factory, usb_by_id=by_id)
        thread = threading.Thread(target=appliance.run, daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + 30
            while appliance.writer.kept < 4:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            button = factory.pin(GpioConfig().offload_button)
            button.drive_low()
            time.sleep(0.1)
            button.drive_high()
            while (read_progress(config.status.runtime_dir) or {}).get("state") != "done":
                assert time.monotonic() < deadline + 60, read_progress(config.status.runtime_dir)
                time.sleep(0.02)
            time.sleep(0.2)
            assert appliance.panel_controller.describe()["status"] == "steady"  # offload done
            offloaded = appliance.store.rows("offloaded_at is not null")
            assert len(offloaded) >= 4
        finally:
            appliance.stop()
            thread.join(30)
            appliance.close()
        with mounted(device, tmp_path / "check") as point:
            for row in offloaded:
                hostname = Path(read_progress(config.status.runtime_dir)["dest"]).name
                assert hashlib.sha256((point / hostname / export_name(row)).read_bytes()).hexdigest() == row["sha256"]
