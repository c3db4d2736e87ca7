"""The review page against a hostile client (issue 14): oversized and endless bodies, idle sockets,
replayed and fixed session cookies, disguised redirects, huge ids, bursts of guessed passwords, and
labels a spreadsheet would run. Request-level attacks use Flask's test client over a real store;
connection-level ones use real sockets against a real waitress server on 127.0.0.1."""

from __future__ import annotations

import csv
import io
import json
import socket
import threading
import time
import urllib.request
import zipfile

import numpy as np
import pytest
from PIL import Image
from werkzeug.security import generate_password_hash

from appliance.config import Config
from appliance.pipeline.writer import encode_jpeg
from appliance.storage.store import Store
from appliance.transfer.export import Manifest, manifest_csv
from appliance.web import MAX_REQUEST_BYTES, create_app
from appliance.web.security import LOGIN_ATTEMPTS
from test_web import LABELS, PASSWORD, basic, client, fill, make_client, setup, token  # noqa: F401 (fixtures)

HUGE_ID = 2**64  # SQLite's integers stop at 2**63 - 1
RECORD_KEYS = ("captured_at", "clock_source", "label", "score", "top_k", "kind", "reason", "model_name", "model_sha256",
               "backend", "inference_ms", "source", "width", "height")


def log_in(client, password=PASSWORD):
    return client.post("/login", data={"password": password, "csrf_token": token(client), "next": "/"})


def session_cookie(client):
    return client.get_cookie("session").value


# -- sessions end when they should -------------------------------------------------------------------

def test_a_session_cookie_replayed_after_logout_is_refused(setup):
    client = make_client(setup)
    assert log_in(client).status_code == 302
    stolen = session_cookie(client)
    csrf = token(client, "/")
    assert client.post("/logout", data={"csrf_token": csrf}).status_code == 302
    client.set_cookie("session", stolen)
    response = client.get("/gallery")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")


def test_sessions_end_when_the_password_changes(setup):
    client = make_client(setup)
    assert log_in(client).status_code == 302
    cookie = session_cookie(client)
    # The owner sets a new password and the page restarts: same data dir, so the same signing key.
    restarted = make_client(setup, password="a brand new password")
    restarted.set_cookie("session", cookie)
    assert restarted.get("/gallery").status_code == 302
    assert restarted.get("/api/v1/status").status_code == 401


def test_a_session_outlives_a_restart_with_the_same_password(setup):
    config, store, control = setup
    password_hash = generate_password_hash(PASSWORD)
    client = create_app(config, store, control, password_hash=password_hash).test_client()
    assert log_in(client).status_code == 302
    restarted = create_app(config, store, control, password_hash=password_hash).test_client()
    restarted.set_cookie("session", session_cookie(client))
    assert restarted.get("/gallery").status_code == 200


def test_logging_out_one_browser_leaves_the_others_logged_in(setup):
    phone, laptop = make_client(setup), make_client(setup)
    assert log_in(phone).status_code == 302 and log_in(laptop).status_code == 302
    assert phone.post("/logout", data={"csrf_token": token(phone, "/")}).status_code == 302
    assert phone.get("/gallery").status_code == 302 and laptop.get("/gallery").status_code == 200


def test_login_rotates_the_form_token(setup):
    client = make_client(setup)
    before = token(client)
    assert log_in(client).status_code == 302
    after = token(client, "/")
    assert after != before
    assert client.post("/control/pause", data={"csrf_token": before}).status_code == 400


# -- redirects stay on the device ---------------------------------------------------------------------

DISGUISED = ["/\t/evil.example/", "/\n/evil.example/", "/\r/evil.example/", "/ /evil.example/", "/\x00/evil.example/",
             "/\\evil.example/", "\\/evil.example/", "/\\/evil.example/", "//evil.example/", "///evil.example/",
             "https://evil.example/", "javascript:alert(1)", " /evil", "/\u3000/evil.example/", "/\x7f/evil.example/",
             "http:/evil.example/"]


@pytest.mark.parametrize("target", DISGUISED)
def test_login_never_redirects_off_the_device_however_next_is_disguised(setup, target):
    client = make_client(setup)
    response = client.post("/login", data={"password": PASSWORD, "csrf_token": token(client), "next": target})
    assert response.status_code == 302 and response.headers["Location"] == "/"


def test_a_tab_in_the_login_links_next_never_reaches_the_form(setup):
    client = make_client(setup)
    page = client.get("/login?next=/%09/evil.example/")
    assert 'name="next" value="/"' in page.text


@pytest.mark.parametrize("target", ["/gallery", "/gallery?label=Bubo%20bubo&starred=yes", "/captures/5"])
def test_login_still_returns_to_a_page_of_the_device(setup, target):
    client = make_client(setup)
    response = client.post("/login", data={"password": PASSWORD, "csrf_token": token(client), "next": target})
    assert response.headers["Location"] == target


# -- ids beyond what SQLite holds ---------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/captures/{}", "/captures/{}/thumb", "/captures/{}/image", "/captures/{}/delete"])
def test_an_id_beyond_sqlites_integers_is_a_404(client, path):
    assert client.get(path.format(HUGE_ID)).status_code == 404
    assert client.get(path.format(2**63)).status_code == 404


def test_changing_an_id_beyond_sqlites_integers_is_a_404(client):
    for action in ("star", "relabel", "delete"):
        assert client.post(f"/captures/{HUGE_ID}/{action}", data={"csrf_token": client.csrf}).status_code == 404


def test_the_api_answers_an_id_beyond_sqlites_integers_with_404_or_400(setup):
    client = make_client(setup)
    assert client.get(f"/api/v1/captures/{HUGE_ID}/image", headers=basic(PASSWORD)).status_code == 404
    response = client.post("/api/v1/sync/ack", json={"items": [{"id": HUGE_ID, "sha256": "0" * 64}]},
                           headers=basic(PASSWORD))
    assert response.status_code == 400


def test_a_zip_of_an_id_beyond_sqlites_integers_is_a_400(client):
    response = client.post("/export.zip", data={"ids": [str(HUGE_ID)], "csrf_token": client.csrf})
    assert response.status_code == 400


# -- guessing the password ----------------------------------------------------------------------------

def test_a_burst_of_concurrent_wrong_passwords_gets_only_the_limit_tried(setup):
    first = make_client(setup)
    clients = [first] + [first.application.test_client() for _ in range(39)]
    tokens = [token(c) for c in clients]
    start = threading.Barrier(len(clients))
    codes = [None] * len(clients)

    def guess(i):
        start.wait()
        codes[i] = clients[i].post("/login", data={"password": f"guess {i}", "csrf_token": tokens[i]}).status_code

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(len(clients))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert codes.count(401) == LOGIN_ATTEMPTS and codes.count(429) == len(clients) - LOGIN_ATTEMPTS


def test_a_burst_of_concurrent_wrong_basic_auth_gets_only_the_limit_tried(setup):
    client = make_client(setup)
    start = threading.Barrier(30)
    codes = []

    def guess(i):
        start.wait()
        codes.append(client.get("/api/v1/captures", headers=basic(f"guess {i}")).status_code)

    threads = [threading.Thread(target=guess, args=(i,)) for i in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert codes.count(401) == LOGIN_ATTEMPTS and codes.count(429) == 30 - LOGIN_ATTEMPTS


def test_a_strangers_failures_do_not_lock_out_a_browser_that_logged_in_before(setup):
    owner = make_client(setup)
    assert log_in(owner).status_code == 302
    assert owner.post("/logout", data={"csrf_token": token(owner, "/")}).status_code == 302
    stranger = owner.application.test_client()  # from the same address (one NAT, one hotspot)
    for _ in range(LOGIN_ATTEMPTS):
        assert log_in(stranger, "guess").status_code == 401
    assert log_in(stranger, PASSWORD).status_code == 429  # the address is locked out...
    assert log_in(owner).status_code == 302  # ...but not the browser that has logged in before
    assert owner.get("/gallery").status_code == 200


def test_a_known_browser_still_needs_the_password_and_has_its_own_limit(setup):
    owner = make_client(setup)
    assert log_in(owner).status_code == 302
    owner.post("/logout", data={"csrf_token": token(owner, "/")})
    for _ in range(LOGIN_ATTEMPTS):
        assert log_in(owner, "guess").status_code == 401
    assert log_in(owner, PASSWORD).status_code == 429
    newcomer = owner.application.test_client()
    assert log_in(newcomer).status_code == 302  # the device's failures are its own, not the address's


def test_a_forged_known_device_cookie_does_not_exempt_a_browser(setup):
    client = make_client(setup)
    for _ in range(LOGIN_ATTEMPTS):
        assert log_in(client, "guess").status_code == 401
    client.set_cookie("appliance_device", "eyJkIjoiZm9yZ2VkIn0.forged")
    assert log_in(client).status_code == 429


def test_the_known_device_cookie_is_httponly_samesite_strict_and_signed(setup):
    client = make_client(setup)
    response = log_in(client)
    cookies = response.headers.getlist("Set-Cookie")
    device = next(c for c in cookies if c.startswith("appliance_device="))
    assert "HttpOnly" in device and "SameSite=Strict" in device and "Max-Age=" in device


# -- labels a spreadsheet would run -------------------------------------------------------------------

FORMULAS = ["=HYPERLINK(\"http://evil.example/\",\"click\")", "+1+1", "-2+3", "@SUM(A1:A2)", "\tTAB", "\rCR"]


def test_labels_a_spreadsheet_would_run_are_quoted_in_the_csv_manifest_only(client, setup):
    _, store, _ = setup
    for capture_id, label in enumerate(FORMULAS, start=1):
        store.relabel(capture_id, label)
    response = client.post("/export.zip", data={"ids": [str(i) for i in range(1, 8)], "csrf_token": client.csrf})
    archive = zipfile.ZipFile(io.BytesIO(response.data))
    rows = {int(r["id"]): r for r in csv.DictReader(io.StringIO(archive.read("manifest.csv").decode(), newline=""))}
    exact = {r["id"]: r for r in map(json.loads, archive.read("manifest.jsonl").decode().splitlines())}
    for capture_id, label in enumerate(FORMULAS, start=1):
        assert rows[capture_id]["label"] == "'" + label and rows[capture_id]["corrected_label"] == "'" + label
        assert exact[capture_id]["label"] == label  # JSONL stays exact: programs read it
    assert rows[7]["label"] == LABELS[0] and rows[7]["score"] == str(exact[7]["score"])


def test_every_csv_manifest_writer_quotes_formulas(tmp_path):
    row = {"file": "=x/2026-11-20_a.jpg", "sha256": "ab" * 32, "bytes": 10, "captured_at": "2026-11-20T08:00:00Z",
           "label": "-1", "model_label": "@x", "corrected_label": "", "score": -0.5, "model": "+m", "kind": "match",
           "source": "=cmd|' /C calc'!A0", "id": 1}
    line_break = dict(row, id=2, source="frame\rone.jpg", label="a\rb")  # a lone CR must not split the row
    text = manifest_csv([row, line_break])
    parsed, second = csv.DictReader(io.StringIO(text, newline=""))
    assert second["source"] == "frame\rone.jpg" and second["label"] == "a\rb" and second["id"] == "2"
    assert text.count("\n") == 3 and "\r\n" not in text  # a header and two rows, each ending in "\n"
    assert parsed["file"] == "'=x/2026-11-20_a.jpg" and parsed["label"] == "'-1" and parsed["model_label"] == "'@x"
    assert parsed["model"] == "'+m" and parsed["source"] == "'=cmd|' /C calc'!A0"
    assert parsed["score"] == "-0.5" and parsed["corrected_label"] == ""  # numbers are numbers, not formulas
    manifest = Manifest(tmp_path / "manifest", resume=False, fsync_each_add=False)
    manifest.add([row, line_break])
    manifest.close()
    assert (tmp_path / "manifest.csv").read_bytes() == text.encode()
    assert json.loads((tmp_path / "manifest.jsonl").read_text().splitlines()[0])["source"] == row["source"]


# -- connections: a real server on 127.0.0.1 ------------------------------------------------------------

def serve(tmp_path, limits=None, fill_count=3, image_side=0):
    """A real ``WebServer`` on 127.0.0.1 (port chosen by the kernel), in a thread of this process."""
    from appliance.web.server import ConnectionLimits, WebServer

    config = Config().replace(storage={"data_dir": str(tmp_path / "data")},
                              status={"runtime_dir": str(tmp_path / "run")},
                              web={"password_hash": generate_password_hash(PASSWORD)})
    (tmp_path / "run").mkdir(exist_ok=True)
    store = Store(config.storage.data_dir)
    fill(store, fill_count)
    for i in range(image_side and fill_count):  # big incompressible images: a response that fills buffers
        noise = np.random.default_rng(i).integers(0, 256, (image_side, image_side, 3), dtype=np.uint8)
        record = dict(store.get(i + 1), source=f"noise{i}.jpg")
        store.add({k: record[k] for k in RECORD_KEYS}, encode_jpeg(Image.fromarray(noise), 95), b"thumb")
    store.close()
    web = WebServer(config, host="127.0.0.1", port=0, limits=limits or ConnectionLimits())
    web.start()
    return web


@pytest.fixture
def server(tmp_path):
    web = serve(tmp_path)
    yield web
    web.close()


def address(web):
    return "127.0.0.1", int(web.server.effective_port)


def answers(web, timeout_s=5.0) -> bool:
    """Whether the login page answers a fresh connection within ``timeout_s``."""
    try:
        with urllib.request.urlopen(web.url + "login", timeout=timeout_s) as response:
            return response.status == 200
    except OSError:
        return False


def read_reply(sock, timeout_s=5.0) -> bytes:
    sock.settimeout(timeout_s)
    reply = b""
    try:
        while b"\r\n\r\n" not in reply:
            data = sock.recv(4096)
            if not data:
                break
            reply += data
    except (TimeoutError, ConnectionError):
        pass
    return reply


def test_a_body_over_the_limit_is_refused_from_its_content_length_before_it_is_sent(server):
    with socket.create_connection(address(server), timeout=5) as sock:
        sock.sendall(b"POST /login HTTP/1.1\r\nHost: camera\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                     b"Content-Length: 209715200\r\n\r\n")
        assert read_reply(sock).startswith(b"HTTP/1.1 413")
    assert answers(server)


def test_a_chunked_body_is_cut_off_at_the_limit(server):
    """No Content-Length: the server stops reading at the limit, says 413 and hangs up."""
    chunk = b"%x\r\n%s\r\n" % (16384, b"a" * 16384)
    sent = 0
    with socket.create_connection(address(server), timeout=5) as sock:
        sock.sendall(b"POST /login HTTP/1.1\r\nHost: camera\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        try:
            while sent < 64 * 1024 * 1024:
                sock.sendall(chunk)
                sent += len(chunk)
        except (ConnectionError, TimeoutError):  # the server hung up (or stopped reading)
            pass
        reply = read_reply(sock)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert sent < 16 * 1024 * 1024  # it stopped reading long before the client stopped sending
    assert answers(server)


def test_a_body_within_the_limit_still_reaches_the_page(server):
    form = b"password=wrong&csrf_token=x&pad=" + b"a" * (MAX_REQUEST_BYTES - 64)
    with socket.create_connection(address(server), timeout=5) as sock:
        sock.sendall(b"POST /login HTTP/1.1\r\nHost: camera\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(form), form))
        assert read_reply(sock).startswith(b"HTTP/1.1 400")  # the page's own answer: no form token


@pytest.mark.parametrize("opening", [b"", b"GET / HTTP/1.1\r\nHost: camera\r\n"], ids=["silent", "half-a-request"])
def test_idle_connections_do_not_starve_the_page(server, opening):
    idle = []
    try:
        for _ in range(99):
            sock = socket.create_connection(address(server), timeout=5)
            sock.sendall(opening)
            idle.append(sock)
        started = time.monotonic()
        assert answers(server, timeout_s=10)
        assert time.monotonic() - started < 5
    finally:
        for sock in idle:
            sock.close()


def test_many_more_idle_connections_than_the_limit_do_not_starve_the_page(server):
    idle = []
    try:
        for _ in range(300):
            idle.append(socket.create_connection(address(server), timeout=5))
        for _ in range(3):
            assert answers(server, timeout_s=10)
    finally:
        for sock in idle:
            sock.close()


def hung_up(sockets, at_least, within_s) -> int:
    """How many of ``sockets`` the server has closed, waiting up to ``within_s`` for ``at_least``."""
    import select

    open_ = set(sockets)
    deadline = time.monotonic() + within_s
    while len(sockets) - len(open_) < at_least and time.monotonic() < deadline:
        readable, _, _ = select.select(list(open_), [], [], 0.2)
        for sock in readable:
            try:
                if sock.recv(1) == b"":
                    open_.discard(sock)
            except ConnectionError:
                open_.discard(sock)
    return len(sockets) - len(open_)


def test_a_crowd_from_one_address_cannot_close_another_clients_connection(server):
    import http.client

    owner = http.client.HTTPConnection("127.0.0.1", server.server.effective_port, timeout=5)
    owner.request("GET", "/login")
    assert owner.getresponse().read() and owner.sock is not None
    crowd = []
    try:
        for _ in range(200):  # another machine on the LAN (127.0.0.2 is this one, by another address)
            crowd.append(socket.create_connection(address(server), timeout=5, source_address=("127.0.0.2", 0)))
        assert answers(server)
        owner.request("GET", "/login")  # on the connection it already had: still open
        assert owner.getresponse().status == 200
        assert hung_up(crowd, at_least=200 - 16, within_s=15) >= 200 - 16  # the crowd keeps only its share
    finally:
        owner.close()
        for sock in crowd:
            sock.close()


def test_a_silent_connection_is_closed_after_the_idle_timeout(tmp_path):
    from appliance.web.server import ConnectionLimits

    web = serve(tmp_path, ConnectionLimits(idle_timeout_s=1))
    try:
        with socket.create_connection(address(web), timeout=10) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: camera\r\n")  # and never the rest
            started = time.monotonic()
            assert sock.recv(1) == b""
            assert time.monotonic() - started < 5
    finally:
        web.close()


def test_a_client_that_stops_reading_lets_go_of_its_thread(tmp_path):
    """A zip bigger than every buffer on the way, to a client that reads none of it: the one worker
    thread writing it is freed after the idle timeout, and the page answers again."""
    from appliance.web.server import ConnectionLimits

    limits = ConnectionLimits(threads=1, idle_timeout_s=1, send_buffer_bytes=64 * 1024)
    web = serve(tmp_path, limits, fill_count=12, image_side=900)
    try:
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(address(web))
        body = b"unsynced=1"
        stalled.sendall(b"POST /export.zip HTTP/1.1\r\nHost: camera\r\nAuthorization: " + basic(PASSWORD)["Authorization"].encode()
                        + b"\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n%s"
                        % (len(body), body))
        time.sleep(0.5)
        assert answers(web, timeout_s=15)
        stalled.close()
    finally:
        web.close()


def test_the_page_runs_on_a_fixed_number_of_worker_threads(server):
    from appliance.web.server import THREADS

    results = []

    def load():
        results.append(answers(server, timeout_s=20))

    clients = [threading.Thread(target=load) for _ in range(40)]
    for t in clients:
        t.start()
    peak = 0
    while any(t.is_alive() for t in clients):
        peak = max(peak, sum(t.name.startswith("waitress-") for t in threading.enumerate()))
        time.sleep(0.01)
    assert all(results) and len(results) == 40
    assert 0 < peak <= THREADS
