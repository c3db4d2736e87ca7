"""``appliance sync`` against a live appliance: the real web server on 127.0.0.1, over a store filled by
real keeps of the loop (the bird model, replaying bird photos), pulled into a real folder."""

from __future__ import annotations

import csv
import hashlib
import http.server
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from functools import partial

import pytest
from conftest import BIRD_MODEL, IMAGES, REPO

from appliance.cameras.replay import ReplayCamera
from appliance.config import Config
from appliance.service.app import Appliance
from appliance.storage.store import Store
from appliance.transfer.export import export_name, label_dirname, manifest_csv, manifest_row
from appliance.transfer.sync import (STATE_FILE, DestinationError, NotAnAppliance, SyncRefused, Unreachable,
                                     WrongPassword, sync)
from appliance.web.security import NO_PASSWORD
from appliance.web.server import WebServer

PASSWORD = "correct horse battery"
KEEPS = 60  # enough for several pages, and for a pull to be killed part-way through


def device_config(root, password=PASSWORD, data_dir=None):
    return Config().replace(
        camera={"backend": "replay", "replay_dir": str(IMAGES), "fps": 0.0, "replay_loop": False},
        model={"path": str(BIRD_MODEL), "num_threads": 2},
        storage={"data_dir": str(data_dir or root / "data"), "min_free_bytes": 0, "writer_queue": 1000},
        status={"runtime_dir": str(root / "run"), "interval_s": 0.1},
        web={"password": password},
    )


@pytest.fixture(scope="module")
def kept_data(tmp_path_factory):
    """A data dir filled by one real run of the loop in which every frame is a bird, so is kept."""
    root = tmp_path_factory.mktemp("device")
    config = device_config(root)
    birds = [IMAGES / "bird.bmp", IMAGES / "parrot.jpg"] * (KEEPS // 2)
    with Appliance(config, camera=ReplayCamera((224, 224), files=birds, fps=0, loop=False)) as appliance:
        appliance.run()
    store = Store(config.storage.data_dir)
    assert store.count() == KEEPS  # the writer drains on close: every keep decided is written
    store.close()
    return root / "data"


@pytest.fixture
def serve(tmp_path, kept_data):
    """``serve(password=...)``: a live appliance page over a fresh copy of the kept data."""
    servers = []

    def start(password=PASSWORD):
        data_dir = tmp_path / "device-data"
        shutil.copytree(kept_data, data_dir)
        server = WebServer(device_config(tmp_path, password, data_dir), config_path=None, host="127.0.0.1", port=0)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def device_rows(server):
    return server.store.rows(order="id")


def images_under(dest):
    return {p.relative_to(dest).as_posix() for p in dest.rglob("*.jpg")}


def manifest_ids(dest):
    return [json.loads(line)["id"] for line in (dest / "manifest.jsonl").read_text().splitlines()]


def run_cli(url, dest, env, *extra):
    return subprocess.run([sys.executable, "-m", "appliance", "sync", url, str(dest), *extra],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=120)


@pytest.fixture
def sync_env(cli_env):
    return dict(cli_env, APPLIANCE_PASSWORD=PASSWORD)


def test_a_full_pull_brings_every_image_verified_with_its_manifest_and_marks_them_synced(serve, tmp_path):
    server, dest = serve(), tmp_path / "pulled"
    report = sync(server.url, dest, PASSWORD, limit=7)
    rows = device_rows(server)
    assert (report.new, report.skipped, report.failed, report.pages) == (KEEPS, 0, [], 9)  # 8 full pages of 7, then 4
    assert report.bytes == sum(r["bytes"] for r in rows) and report.cursor == rows[-1]["id"]
    assert images_under(dest) == {export_name(r) for r in rows}
    for row in rows:
        assert hashlib.sha256((dest / export_name(row)).read_bytes()).hexdigest() == row["sha256"]
    expected = [manifest_row(r, export_name(r)) for r in rows]
    assert [json.loads(line) for line in (dest / "manifest.jsonl").read_text().splitlines()] == expected
    assert (dest / "manifest.csv").read_text() == manifest_csv(expected)
    assert [r["id"] for r in csv.DictReader((dest / "manifest.csv").open())] == [str(r["id"]) for r in rows]
    assert all(r["synced_at"] for r in device_rows(server))
    assert json.loads((dest / STATE_FILE).read_text()) == {"url": server.url, "cursor": rows[-1]["id"]}


def test_an_interrupted_pull_is_resumed_and_ends_with_exactly_the_devices_files(serve, tmp_path, sync_env):
    server, dest = serve(), tmp_path / "pulled"
    # One item per page (list, fetch, ack, save the cursor) keeps the first run long enough to kill.
    child = subprocess.Popen([sys.executable, "-m", "appliance", "sync", server.url, str(dest), "--limit", "1"],
                             env=sync_env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while len(images_under(dest)) < 3 and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.001)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL, "the first run ended before it could be interrupted"
    assert 3 <= len(images_under(dest)) < KEEPS

    resumed = run_cli(server.url, dest, sync_env, "--limit", "5")

    assert resumed.returncode == 0, resumed.stderr
    rows = device_rows(server)
    assert images_under(dest) == {export_name(r) for r in rows}
    for row in rows:
        assert hashlib.sha256((dest / export_name(row)).read_bytes()).hexdigest() == row["sha256"]
    assert {p.name for p in dest.rglob(".*")} == {STATE_FILE}, "a temporary file was left behind"
    ids = Counter(manifest_ids(dest))
    assert set(ids) == {r["id"] for r in rows} and set(ids.values()) == {1}
    assert all(r["synced_at"] for r in rows)


def test_a_rerun_fetches_nothing_and_touches_no_file(serve, tmp_path):
    server, dest = serve(), tmp_path / "pulled"
    sync(server.url, dest, PASSWORD)
    before = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in dest.rglob("*") if p.is_file()}

    again = sync(server.url, dest, PASSWORD)

    assert (again.new, again.skipped, again.failed, again.bytes) == (0, 0, [], 0)
    assert {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in dest.rglob("*") if p.is_file()} == before


def test_corrections_made_after_a_sync_move_the_files_and_rewrite_the_manifests_on_the_next_run(
        serve, tmp_path, sync_env):
    server, dest = serve(), tmp_path / "pulled"
    rows = device_rows(server)
    relabelled, formula, cleared = rows[3], rows[10], rows[20]
    magpie = "Pica pica (Eurasian Magpie)"
    server.store.relabel(cleared["id"], magpie)  # corrected before the first sync, the correction undone after
    sync(server.url, dest, PASSWORD, limit=7)
    assert (dest / label_dirname(magpie) / export_name(cleared).split("/")[1]).is_file()

    server.store.relabel(relabelled["id"], "Cyanistes caeruleus (Eurasian Blue Tit)")
    server.store.relabel(formula["id"], '=HYPERLINK("http://evil.example/","click")')
    server.store.relabel(cleared["id"], None)
    result = run_cli(server.url, dest, sync_env, "--limit", "7")

    assert result.returncode == 0, result.stderr
    rows = device_rows(server)
    assert images_under(dest) == {export_name(r) for r in rows}  # moved: nothing left under the old names
    for row in rows:
        assert hashlib.sha256((dest / export_name(row)).read_bytes()).hexdigest() == row["sha256"]
    assert not (dest / label_dirname(magpie)).exists()  # a class folder left empty goes (loaders reject those)
    expected = [manifest_row(r, export_name(r)) for r in rows]
    assert [json.loads(line) for line in (dest / "manifest.jsonl").read_text().splitlines()] == expected
    assert (dest / "manifest.csv").read_text() == manifest_csv(expected)
    in_csv = {int(r["id"]): r for r in csv.DictReader((dest / "manifest.csv").open(newline=""))}
    assert in_csv[formula["id"]]["label"] == '\'=HYPERLINK("http://evil.example/","click")'
    assert in_csv[cleared["id"]]["corrected_label"] == "" and in_csv[cleared["id"]]["label"] == cleared["label"]
    assert "0 new, 0 skipped, 3 updated, 0 failed, 0.0 MB" in result.stdout  # moved on the laptop, not fetched
    before = {p: p.stat().st_mtime_ns for p in dest.rglob("*") if p.is_file()}

    again = sync(server.url, dest, PASSWORD, limit=7)

    assert (again.new, again.updated, again.failed) == (0, 0, [])
    assert {p: p.stat().st_mtime_ns for p in dest.rglob("*") if p.is_file()} == before


def test_a_correction_reaches_items_a_run_cut_short_installed_or_moved_without_saving_its_progress(serve, tmp_path):
    server, dest = serve(), tmp_path / "pulled"
    sync(server.url, dest, PASSWORD, limit=7)
    rows = device_rows(server)
    nuthatch = "Sitta europaea (Eurasian Nuthatch)"
    beyond, moved, copied = rows[50], rows[5], rows[6]
    for row in (beyond, moved, copied):
        server.store.relabel(row["id"], nuthatch)
    # Killed after installing (and listing) rows[40:] but before storing the cursor past rows[39] ...
    (dest / STATE_FILE).write_text(json.dumps({"url": server.url, "cursor": rows[39]["id"]}))
    # ... and, another time, after moving a corrected file but before rewriting the manifest; and a
    # corrected file fetched again under its new name by an older version, the old one left.
    (dest / label_dirname(nuthatch)).mkdir()
    (dest / export_name(moved)).rename(dest / export_name(server.store.get(moved["id"])))
    shutil.copyfile(dest / export_name(copied), dest / export_name(server.store.get(copied["id"])))

    report = sync(server.url, dest, PASSWORD, limit=7)

    rows = device_rows(server)
    assert images_under(dest) == {export_name(r) for r in rows}
    assert (report.new, report.skipped, report.updated, report.bytes, report.failed) == (0, 20, 3, 0, [])
    expected = [manifest_row(r, export_name(r)) for r in rows]
    assert [json.loads(line) for line in (dest / "manifest.jsonl").read_text().splitlines()] == expected


def test_a_file_already_at_the_destination_is_trusted_only_if_its_sha256_matches(serve, tmp_path):
    # A folder that already holds some of the files (copied by hand, or by an older run): the one with
    # the right bytes is skipped; the one with the right name and wrong bytes is fetched again.
    server, dest = serve(), tmp_path / "pulled"
    rows = device_rows(server)
    right, wrong = rows[0], rows[1]
    for row in (right, wrong):
        (dest / export_name(row)).parent.mkdir(parents=True, exist_ok=True)
    (dest / export_name(right)).write_bytes((server.store.data_dir / right["image_path"]).read_bytes())
    damaged = bytearray((server.store.data_dir / wrong["image_path"]).read_bytes())
    damaged[len(damaged) // 2] ^= 0x01
    (dest / export_name(wrong)).write_bytes(bytes(damaged))

    report = sync(server.url, dest, PASSWORD)

    assert (report.new, report.skipped, report.failed) == (KEEPS - 1, 1, [])
    for row in (right, wrong):
        assert hashlib.sha256((dest / export_name(row)).read_bytes()).hexdigest() == row["sha256"]


def test_a_corrupted_byte_on_the_device_is_caught_not_installed_not_acked_and_fetched_once_repaired(
        serve, tmp_path, sync_env):
    server, dest = serve(), tmp_path / "pulled"
    rows = device_rows(server)
    index = len(rows) // 2
    bad = rows[index]
    image = server.store.data_dir / bad["image_path"]
    original = image.read_bytes()
    corrupted = bytearray(original)
    corrupted[len(corrupted) // 2] ^= 0x01
    image.write_bytes(bytes(corrupted))

    result = run_cli(server.url, dest, sync_env, "--limit", "10")

    assert result.returncode == 1, result.stderr
    assert f"capture {bad['id']} failed: sha256 mismatch: device says {bad['sha256']}, received " \
           f"{hashlib.sha256(corrupted).hexdigest()}" in result.stderr
    assert "1 failed" in result.stdout
    assert images_under(dest) == {export_name(r) for r in rows if r["id"] != bad["id"]}
    assert not any(p.name.endswith(".tmp") for p in dest.rglob("*"))
    assert [r["id"] for r in device_rows(server) if not r["synced_at"]] == [bad["id"]]
    assert bad["id"] not in manifest_ids(dest)
    # The cursor stops before the failed item, so the next run tries it again.
    assert json.loads((dest / STATE_FILE).read_text())["cursor"] == rows[index - 1]["id"]

    image.write_bytes(original)
    report = sync(server.url, dest, PASSWORD, limit=10)

    assert (report.new, report.skipped, report.failed) == (1, len(rows) - index - 1, [])
    assert hashlib.sha256((dest / export_name(bad)).read_bytes()).hexdigest() == bad["sha256"]
    assert all(r["synced_at"] for r in device_rows(server))
    assert sorted(manifest_ids(dest)) == [r["id"] for r in rows]


def test_a_wrong_password_is_refused_with_a_clear_error(serve, tmp_path):
    server = serve()
    with pytest.raises(WrongPassword, match="wrong password") as error:
        sync(server.url, tmp_path / "pulled", "not the password")
    assert server.url in str(error.value) and "[web]" in str(error.value)
    assert not images_under(tmp_path / "pulled")


def test_a_device_without_a_password_refuses_and_its_message_says_how_to_set_one(serve, tmp_path):
    server = serve(password="")
    with pytest.raises(SyncRefused) as error:
        sync(server.url, tmp_path / "pulled", "anything")
    assert str(error.value) == f"{server.url} refused to sync: {NO_PASSWORD}"
    assert all(r["synced_at"] is None for r in device_rows(server))


def test_an_address_where_nothing_listens_is_reported_unreachable(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(Unreachable, match=rf"cannot reach http://127.0.0.1:{port}/ .*check the address"):
        sync(f"127.0.0.1:{port}", tmp_path / "pulled", PASSWORD)


def test_a_web_server_that_is_not_an_appliance_is_named_so(tmp_path):
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as other:
        threading.Thread(target=other.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{other.server_address[1]}/"
        try:
            with pytest.raises(NotAnAppliance, match=f"{url} is not an appliance: it has no sync API"):
                sync(url, tmp_path / "pulled", PASSWORD)
        finally:
            other.shutdown()


def test_a_folder_synced_from_one_appliance_refuses_another(serve, tmp_path):
    server, dest = serve(), tmp_path / "pulled"
    sync(server.url, dest, PASSWORD, limit=1000)
    with pytest.raises(DestinationError, match=f"holds images synced from {server.url}, not http://other.local/"):
        sync("http://other.local", dest, PASSWORD)


def test_the_command_without_a_password_or_terminal_says_how_to_give_one(tmp_path, cli_env):
    env = {k: v for k, v in cli_env.items() if k != "APPLIANCE_PASSWORD"}
    result = subprocess.run([sys.executable, "-m", "appliance", "sync", "http://127.0.0.1:9/", str(tmp_path)],
                            env=env, cwd=REPO, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 2
    assert "--password-file" in result.stderr and "$APPLIANCE_PASSWORD" in result.stderr
    assert not os.listdir(tmp_path)
