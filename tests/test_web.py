"""Every route of the review page and the sync API, and every refusal, with Flask's test client over
a real store and the real control channel (a Unix socket)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import zipfile
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from PIL import Image
from werkzeug.security import generate_password_hash

from appliance.config import Config, load_config
from appliance.pipeline.writer import encode_jpeg
from appliance.service.control import ControlClient, ControlServer
from appliance.storage.store import Store, metadata_comment
from appliance.web import MAX_REQUEST_BYTES, create_app
from appliance.passwords import adopt_password
from appliance.web.security import LOGIN_ATTEMPTS, NO_PASSWORD

PASSWORD = "correct horse"
LABELS = ("Ara macao (Scarlet Macaw)", "Bubo bubo (Eurasian Eagle-Owl)", "Poecile atricapillus (Black-capped Chickadee)")
START = datetime(2026, 11, 20, 8, 0, tzinfo=timezone.utc)


def fill(store, count=60):
    """``count`` keeps, one every 37 minutes, cycling through LABELS; every fifth an audit."""
    for i in range(count):
        at = (START + timedelta(minutes=37 * i)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        label = LABELS[i % 3]
        record = {"captured_at": at, "clock_source": "ntp", "label": label, "score": round(0.5 + i / 200, 3),
                  "top_k": json.dumps([[label, 0.7], ["background", 0.2]]), "kind": "audit" if i % 5 == 4 else "match",
                  "reason": "match", "model_name": "inat-bird", "model_sha256": "ab" * 32, "backend": "cpu",
                  "inference_ms": 8.0, "source": f"frame{i}.jpg", "width": 64, "height": 48}
        image = Image.fromarray(np.full((48, 64, 3), (i * 4) % 256, np.uint8))
        store.add(record, encode_jpeg(image, 90, metadata_comment(record)), encode_jpeg(image, 80))


@pytest.fixture
def setup(tmp_path):
    config = Config().replace(storage={"data_dir": str(tmp_path / "data")},
                              status={"runtime_dir": str(tmp_path / "run")})
    (tmp_path / "run").mkdir()
    store = Store(config.storage.data_dir)
    fill(store)
    control = ControlClient(tmp_path / "run" / "control.sock", timeout_s=1.0)
    yield config, store, control
    store.close()


@pytest.fixture
def loop_socket(setup):
    """The loop's end of the control channel: a real server whose handlers record what was asked."""
    config, _, control = setup
    asked = []
    server = ControlServer(control.socket_path, {
        "pause": lambda args: asked.append("pause") or {"state": "paused"},
        "resume": lambda args: asked.append("resume") or {"state": "running"},
        "offload": lambda args: asked.append("offload") or {"started": True},
    })
    server.start()
    yield asked
    server.close()


def make_client(setup, password=PASSWORD):
    config, store, control = setup
    app = create_app(config, store, control, password_hash=generate_password_hash(password) if password else "",
                     labels=LABELS)
    return app.test_client()


def token(client, path="/login"):
    return re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).text).group(1)


@pytest.fixture
def client(setup):
    client = make_client(setup)
    response = client.post("/login", data={"password": PASSWORD, "csrf_token": token(client), "next": "/"})
    assert response.status_code == 302
    client.csrf = token(client, "/")
    return client


@pytest.fixture
def anonymous(setup):
    return make_client(setup, password="")


def basic(password):
    return {"Authorization": "Basic " + base64.b64encode(f"sync:{password}".encode()).decode()}


# -- logging in ------------------------------------------------------------------------------------

def test_every_page_and_api_asks_for_a_login_first(setup):
    client = make_client(setup)
    for path in ("/", "/gallery", "/captures/1", "/captures/1/thumb", "/activity.svg"):
        response = client.get(path)
        assert response.status_code == 302 and response.headers["Location"].startswith("/login?next=")
    api = client.get("/api/v1/captures")
    assert api.status_code == 401 and "log in first" in api.json["error"]
    assert client.get("/api/v1/status").status_code == 401


def test_a_wrong_password_is_refused_and_the_right_one_lets_you_in(setup):
    client = make_client(setup)
    csrf = token(client)
    wrong = client.post("/login", data={"password": "nope", "csrf_token": csrf})
    assert wrong.status_code == 401 and "wrong password" in wrong.text
    right = client.post("/login", data={"password": PASSWORD, "csrf_token": csrf, "next": "/gallery"})
    assert right.status_code == 302 and right.headers["Location"] == "/gallery"
    assert client.get("/gallery").status_code == 200


def test_login_without_its_form_token_is_refused(setup):
    client = make_client(setup)
    client.get("/login")
    assert client.post("/login", data={"password": PASSWORD}).status_code == 400


def test_login_never_redirects_off_the_device(setup):
    client = make_client(setup)
    response = client.post("/login", data={"password": PASSWORD, "csrf_token": token(client), "next": "//evil.example/"})
    assert response.headers["Location"] == "/"


def test_failed_logins_are_rate_limited(setup):
    client = make_client(setup)
    csrf = token(client)
    for _ in range(LOGIN_ATTEMPTS):
        assert client.post("/login", data={"password": "guess", "csrf_token": csrf}).status_code == 401
    limited = client.post("/login", data={"password": PASSWORD, "csrf_token": csrf})
    assert limited.status_code == 429 and "too many failed logins" in limited.text


def test_wrong_basic_auth_passwords_are_rate_limited_too(setup):
    client = make_client(setup)
    for _ in range(LOGIN_ATTEMPTS):
        assert client.get("/api/v1/captures", headers=basic("guess")).status_code == 401
    assert client.get("/api/v1/captures", headers=basic(PASSWORD)).status_code == 429


def test_the_session_cookie_is_httponly_and_samesite_strict(setup):
    client = make_client(setup)
    response = client.post("/login", data={"password": PASSWORD, "csrf_token": token(client)})
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie


def test_logout_ends_the_session(client):
    assert client.post("/logout", data={"csrf_token": client.csrf}).status_code == 302
    assert client.get("/gallery").status_code == 302


# -- with no password: read-only ---------------------------------------------------------------------

def test_without_a_password_the_pages_are_read_only_with_a_banner(anonymous):
    for path in ("/", "/gallery", "/captures/1"):
        response = anonymous.get(path)
        assert response.status_code == 200 and "no password, so its page is read-only" in response.text
        for control in ('id="star"', 'id="control-pause"', 'name="ids"', 'id="relabel"', 'id="delete"'):
            assert control not in response.text
    assert anonymous.get("/captures/1/thumb").status_code == 200


@pytest.mark.parametrize("method, path", [
    ("post", "/captures/1/star"), ("post", "/captures/1/relabel"), ("post", "/captures/1/delete"),
    ("post", "/control/pause"), ("post", "/export.zip"), ("get", "/api/v1/captures"),
    ("get", "/api/v1/captures/1/image"), ("post", "/api/v1/sync/ack"),
])
def test_without_a_password_every_change_or_sync_is_refused_with_how_to_set_one(anonymous, method, path):
    response = getattr(anonymous, method)(path, headers={"Accept": "application/json"})
    assert response.status_code == 403
    assert response.json["error"] == NO_PASSWORD


# -- status and controls ---------------------------------------------------------------------------

def test_the_status_page_says_when_the_loop_is_not_running(client):
    page = client.get("/")
    assert page.status_code == 200 and "The capture loop is not running" in page.text
    status = client.get("/api/v1/status").json
    assert status["is_loop_running"] is False and status["items"] == 60 and status["free_bytes"] > 0


def test_the_live_status_reports_a_running_loop_from_its_status_file(client, setup):
    config, _, _ = setup
    now = datetime.now(timezone.utc).timestamp()
    (config.status.runtime_dir and open(f"{config.status.runtime_dir}/status.json", "w")).write(
        json.dumps({"state": "running", "updated_at": now, "fps": 4.5}))
    (config.status.runtime_dir and open(f"{config.status.runtime_dir}/offload.json", "w")).write(
        json.dumps({"state": "running", "items_done": 3, "items_total": 9}))
    status = client.get("/api/v1/status").json
    assert status["is_loop_running"] is True and status["loop"]["fps"] == 4.5
    assert status["offload"] == {"state": "running", "items_done": 3, "items_total": 9}


def test_controls_reach_the_loop_over_its_socket(client, loop_socket):
    for action in ("pause", "resume", "offload"):
        response = client.post(f"/control/{action}", data={"csrf_token": client.csrf},
                               headers={"Accept": "application/json"})
        assert response.status_code == 200 and response.json["ok"] is True
    assert loop_socket == ["pause", "resume", "offload"]


def test_a_control_with_the_loop_not_running_says_so(client):
    response = client.post("/control/pause", data={"csrf_token": client.csrf}, headers={"Accept": "application/json"})
    assert response.status_code == 409 and "The capture loop is not running" in response.json["message"]
    page = client.post("/control/pause", data={"csrf_token": client.csrf}, follow_redirects=True)
    assert "The capture loop is not running" in page.text


def test_controls_need_the_form_token_and_a_known_action(client, loop_socket):
    assert client.post("/control/pause").status_code == 400
    assert client.post("/control/launch", data={"csrf_token": client.csrf}).status_code == 404
    assert loop_socket == []


def test_the_activity_chart_is_an_svg_for_hours_and_days(client):
    for period in ("hour", "day"):
        response = client.get(f"/activity.svg?period={period}")
        assert response.status_code == 200 and response.mimetype == "image/svg+xml"
        assert response.text.lstrip().startswith("<svg")
    assert client.get("/activity.svg?period=week").status_code == 400


# -- gallery -----------------------------------------------------------------------------------------

def ids_on(page_text):
    return [int(i) for i in re.findall(r'href="/captures/(\d+)"', page_text)]


def test_the_gallery_pages_newest_first_without_repeats_or_gaps(client, setup):
    _, store, _ = setup
    seen, url = [], "/gallery"
    while url:
        page = client.get(url)
        seen += ids_on(page.text)
        match = re.search(r'href="([^"]+)" id="next-page"', page.text)
        url = match.group(1).replace("&amp;", "&") if match else None
    expected = [r["id"] for r in sorted(store.rows(), key=lambda r: r["captured_at"], reverse=True)]
    assert seen == expected and len(seen) == 60


@pytest.mark.parametrize("query, keep", [
    ("label=Bubo+bubo+%28Eurasian+Eagle-Owl%29", lambda r: r["label"] == LABELS[1]),
    ("kind=audit", lambda r: r["kind"] == "audit"),
    ("min_score=0.7", lambda r: r["score"] >= 0.7),
    ("from=2026-11-21&to=2026-11-21", lambda r: r["captured_at"].startswith("2026-11-21")),
    ("starred=yes", lambda r: r["starred"]),
    ("synced=no&offloaded=no", lambda r: True),
])
def test_gallery_filters_show_exactly_the_matching_items(client, setup, query, keep):
    _, store, _ = setup
    store.set_starred(7, True)
    expected = sorted((r for r in store.rows() if keep(r)), key=lambda r: r["captured_at"], reverse=True)[:48]
    assert ids_on(client.get(f"/gallery?{query}").text) == [r["id"] for r in expected]


def test_a_corrected_label_is_what_the_label_filter_matches(client, setup):
    _, store, _ = setup
    store.relabel(1, "Pica pica (Eurasian Magpie)")
    assert ids_on(client.get("/gallery?label=Pica+pica+%28Eurasian+Magpie%29").text) == [1]


@pytest.mark.parametrize("query", ["min_score=high", "min_score=2", "kind=video", "from=yesterday",
                                   "starred=maybe", "cursor=../../etc/passwd"])
def test_bad_gallery_arguments_are_a_clear_400(client, query):
    response = client.get(f"/gallery?{query}")
    assert response.status_code == 400
    assert re.search(r"must be|cursor is not", response.text)


# -- item, images, edits -------------------------------------------------------------------------------

def test_the_item_page_shows_the_image_scores_and_metadata(client, setup):
    _, store, _ = setup
    row = store.get(5)
    page = client.get("/captures/5")
    assert page.status_code == 200
    assert '<meter min="0" max="1" value="0.7">' in page.text and row["sha256"] in page.text
    assert 'src="/captures/5/image"' in page.text


def test_an_unknown_id_is_a_404(client):
    assert client.get("/captures/9999").status_code == 404
    assert client.get("/captures/9999/image").status_code == 404
    assert client.get("/api/v1/captures/9999/image", headers=basic(PASSWORD)).status_code == 404


def test_images_carry_their_sha256_as_etag_and_cache_privately(client, setup):
    _, store, _ = setup
    row = store.get(3)
    image = client.get("/captures/3/image")
    assert hashlib.sha256(image.data).hexdigest() == row["sha256"] == image.headers["ETag"].strip('"')
    assert "private" in image.headers["Cache-Control"] and "public" not in image.headers["Cache-Control"]
    assert "max-age=86400" in image.headers["Cache-Control"]
    assert client.get("/captures/3/image", headers={"If-None-Match": image.headers["ETag"]}).status_code == 304
    thumb = client.get("/captures/3/thumb")
    assert thumb.status_code == 200 and thumb.headers["ETag"].strip('"') == f"{row['sha256']}-thumb"


def test_paths_from_the_request_never_reach_the_filesystem(client, setup):
    _, store, _ = setup
    for path in ("/captures/..%2F..%2Fappliance.db/image", "/static/../../appliance.db", "/captures/-1/image"):
        assert client.get(path).status_code == 404
    # Even a tampered row cannot send a file outside the data dir.
    store.db.execute("update captures set image_path = '../../../etc/passwd' where id = 2")
    store.db.conn.commit()
    assert client.get("/captures/2/image").status_code == 404


def test_star_and_unstar(client, setup):
    _, store, _ = setup
    assert client.post("/captures/4/star", data={"starred": "1", "csrf_token": client.csrf}).status_code == 302
    assert store.get(4)["starred"] == 1 and "Unstar" in client.get("/captures/4").text
    client.post("/captures/4/star", data={"starred": "0", "csrf_token": client.csrf})
    assert store.get(4)["starred"] == 0


def test_relabel_keeps_the_models_label_and_records_the_correction(client, setup):
    _, store, _ = setup
    client.post("/captures/4/relabel", data={"label": "  Pica   pica ", "csrf_token": client.csrf})
    row = store.get(4)
    assert row["corrected_label"] == "Pica pica" and row["label"] == LABELS[0]
    assert "the model said" in client.get("/captures/4").text
    client.post("/captures/4/relabel", data={"label": LABELS[0], "csrf_token": client.csrf})
    assert store.get(4)["corrected_label"] is None  # back to the model's own label
    too_long = client.post("/captures/4/relabel", data={"label": "x" * 201, "csrf_token": client.csrf})
    assert too_long.status_code == 400


def test_delete_asks_first_then_removes_file_and_row(client, setup):
    _, store, _ = setup
    row = store.get(6)
    confirm = client.get("/captures/6/delete")
    assert confirm.status_code == 200 and "Delete this image?" in confirm.text and store.get(6)
    assert client.post("/captures/6/delete", data={"csrf_token": client.csrf}).status_code == 302
    assert store.get(6) is None and not (store.data_dir / row["image_path"]).exists()
    assert client.get("/captures/6").status_code == 404


@pytest.mark.parametrize("path, data", [("/captures/4/star", {"starred": "1"}), ("/captures/4/relabel", {"label": "x"}),
                                        ("/captures/4/delete", {}), ("/export.zip", {"ids": "1"})])
def test_every_change_needs_the_form_token(client, setup, path, data):
    _, store, _ = setup
    before = store.get(4)
    assert client.post(path, data=data).status_code == 400
    assert client.post(path, data=dict(data, csrf_token="forged")).status_code == 400
    assert store.get(4) == before


def test_an_oversized_request_is_refused(client):
    response = client.post("/captures/4/relabel", data={"label": "x" * (MAX_REQUEST_BYTES + 1), "csrf_token": client.csrf})
    assert response.status_code == 413


# -- zip export ----------------------------------------------------------------------------------------

def read_zip(response):
    archive = zipfile.ZipFile(io.BytesIO(response.data))
    manifest = [json.loads(line) for line in archive.read("manifest.jsonl").decode().splitlines()]
    return archive, manifest


def test_the_zip_of_selected_items_holds_them_in_label_folders_with_the_manifest(client, setup):
    _, store, _ = setup
    store.relabel(2, "Pica pica")
    response = client.post("/export.zip", data={"ids": ["1", "2", "3"], "csrf_token": client.csrf})
    assert response.status_code == 200 and response.mimetype == "application/zip"
    archive, manifest = read_zip(response)
    assert sorted(m["id"] for m in manifest) == [1, 2, 3]
    for entry in manifest:
        row = store.get(entry["id"])
        assert hashlib.sha256(archive.read(entry["file"])).hexdigest() == row["sha256"] == entry["sha256"]
    assert next(m for m in manifest if m["id"] == 2)["file"].startswith("Pica pica/")
    assert "manifest.csv" in archive.namelist()


def test_the_zip_of_everything_not_yet_synced_leaves_out_what_was_synced(client, setup):
    _, store, _ = setup
    store.mark_synced({1: store.get(1)["sha256"]}, "2026-11-25T00:00:00Z")
    _, manifest = read_zip(client.post("/export.zip", data={"unsynced": "1", "csrf_token": client.csrf}))
    assert sorted(m["id"] for m in manifest) == list(range(2, 61))


@pytest.mark.parametrize("data", [{}, {"ids": "one"}])
def test_an_empty_or_malformed_selection_is_a_400(client, data):
    assert client.post("/export.zip", data=dict(data, csrf_token=client.csrf)).status_code == 400


# -- the sync API ----------------------------------------------------------------------------------------

def test_the_capture_list_pages_by_a_stable_cursor_with_basic_auth(setup):
    client = make_client(setup)
    first = client.get("/api/v1/captures?limit=25", headers=basic(PASSWORD)).json
    assert [i["id"] for i in first["items"]] == list(range(1, 26)) and first["next"] == "25"
    rest = client.get("/api/v1/captures?after=25&limit=100", headers=basic(PASSWORD)).json
    assert [i["id"] for i in rest["items"]] == list(range(26, 61)) and rest["next"] is None
    item = rest["items"][0]
    assert item["file"].startswith(item["label"] + "/") and item["image_url"] == "/api/v1/captures/26/image"


def test_the_api_refuses_a_wrong_password_and_bad_arguments(setup):
    client = make_client(setup)
    assert client.get("/api/v1/captures", headers=basic("wrong")).status_code == 401
    for query in ("after=-1", "limit=0", "limit=5000", "after=abc"):
        response = client.get(f"/api/v1/captures?{query}", headers=basic(PASSWORD))
        assert response.status_code == 400 and "must be a whole number" in response.json["error"]


def test_ack_marks_only_items_whose_sha256_the_client_verified(setup):
    client = make_client(setup)
    _, store, _ = setup
    body = {"items": [{"id": 1, "sha256": store.get(1)["sha256"]}, {"id": 2, "sha256": "0" * 64},
                      {"id": 999, "sha256": "0" * 64}]}
    response = client.post("/api/v1/sync/ack", json=body, headers=basic(PASSWORD))
    assert response.json == {"synced": [1], "refused": [2, 999]}
    assert store.get(1)["synced_at"] and store.get(2)["synced_at"] is None


@pytest.mark.parametrize("body", [{"items": "all"}, {"items": [{"id": "1", "sha256": "x"}]}, [1, 2], {}])
def test_a_malformed_ack_is_a_400(setup, body):
    client = make_client(setup)
    assert client.post("/api/v1/sync/ack", json=body, headers=basic(PASSWORD)).status_code == 400


def test_an_ack_from_a_browser_session_needs_the_csrf_header(client, setup):
    _, store, _ = setup
    body = {"items": [{"id": 1, "sha256": store.get(1)["sha256"]}]}
    assert client.post("/api/v1/sync/ack", json=body).status_code == 400
    assert client.post("/api/v1/sync/ack", json=body, headers={"X-CSRF-Token": client.csrf}).status_code == 200


# -- headers and the password ------------------------------------------------------------------------

def test_every_response_has_a_strict_content_security_policy_and_pages_no_inline_script(client):
    for path in ("/", "/gallery", "/captures/1", "/login", "/captures/9999"):
        response = client.get(path)
        policy = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert not re.search(r"<script(?![^>]*\bsrc=)", response.text)
        assert not re.search(r"\sstyle=", response.text)
        assert not re.search(r"(src|href)=\"(https?:)?//", response.text)  # nothing from elsewhere


def test_a_clear_text_password_is_hashed_and_removed_from_the_config_file(tmp_path):
    path = tmp_path / "appliance.toml"
    path.write_text('# my camera\n[web]\n# the page password\npassword = "s3cret"\nport = 8080\n')
    password_hash = adopt_password(load_config(path).web, path)
    text = path.read_text()
    assert "s3cret" not in text and f'password_hash = "{password_hash}"' in text
    assert "# the page password" in text and "port = 8080" in text
    config = load_config(path)
    assert config.web.password == "" and adopt_password(config.web, path) == password_hash
    from werkzeug.security import check_password_hash
    assert check_password_hash(password_hash, "s3cret")


def test_serve_takes_its_listening_socket_from_systemd_so_it_needs_no_privilege(tmp_path):
    import os
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    from conftest import REPO

    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))  # on the device: port 80, bound by systemd as root
    listening.listen()
    os.set_inheritable(listening.fileno(), True)
    config = tmp_path / "appliance.toml"
    # web.port is the port systemd already listens on: a server that bound its own socket instead of
    # taking fd 3 would fail (port in use), and no fixed port is ever bound (as root, even port 1 would be).
    port = listening.getsockname()[1]
    config.write_text(f'[storage]\ndata_dir = "{tmp_path / "data"}"\n[status]\nruntime_dir = "{tmp_path / "run"}"\n'
                      f'[web]\nhost = "127.0.0.1"\nport = {port}\n')
    # What systemd does: the socket on fd 3, LISTEN_PID the server's own pid (exec keeps it), exec.
    launcher = ("import os, sys; os.dup2(int(sys.argv[1]), 3); "
                "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1'); "
                "os.execv(sys.executable, [sys.executable, '-m', 'appliance', 'serve', '--config', sys.argv[2]])")
    child = subprocess.Popen([sys.executable, "-c", launcher, str(listening.fileno()), str(config)],
                             pass_fds=[listening.fileno()], cwd=REPO,
                             env=dict(os.environ, PYTHONPATH=str(REPO)), stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}/login"
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    assert response.status == 200 and b"Log in" in response.read()
                    break
            except OSError:
                assert child.poll() is None, child.stderr.read()
                assert time.monotonic() < deadline, "the page never answered on the passed socket"
                time.sleep(0.1)
    finally:
        child.terminate()
        child.wait(10)
        listening.close()
