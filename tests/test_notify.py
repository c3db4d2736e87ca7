"""Notifications: the rules with plain values (labels, scores, audit, first of the day in the device's time
zone, cooldown, quiet hours across midnight); then real Apprise posting JSON to a real HTTP server on
127.0.0.1, through the real links service, outbox and store."""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
import time
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from zoneinfo import ZoneInfo

import pytest
from conftest import IMAGES
from PIL import Image

from appliance.config import Config
from appliance.links.notify import NotifyLink, check_urls
from appliance.links.rules import Decision, NotifyRule, QuietHours, Sent
from appliance.links.service import LinksService
from appliance.storage.store import Store

OSLO, NEW_YORK = ZoneInfo("Europe/Oslo"), ZoneInfo("America/New_York")
CHICKADEE = "Poecile atricapillus (Black-capped Chickadee)"
OWL = "Athene cunicularia (Burrowing Owl)"


def keep(label=CHICKADEE, score=0.9, at="2026-06-01T12:00:00.000Z", kind="match", corrected=None, id=1):
    return {"id": id, "label": label, "score": score, "captured_at": at, "kind": kind, "corrected_label": corrected}


def utc(text):
    return datetime.fromisoformat(text).timestamp()


# -- the rules -------------------------------------------------------------------------------------------------

def test_labels_are_case_insensitive_globs_on_the_label_a_person_corrected():
    rule = NotifyRule(labels=("*owl*", CHICKADEE.upper()))
    now = utc("2026-06-01T12:00:00+00:00")
    assert rule.decide(keep(OWL), now, OSLO, Sent()).action == "send"
    assert rule.decide(keep(CHICKADEE), now, OSLO, Sent()).action == "send"
    assert rule.decide(keep("Cyanocitta cristata (Blue Jay)"), now, OSLO, Sent()) == \
        Decision("skip", "label", label="cyanocitta cristata (blue jay)", day="2026-06-01")
    assert rule.decide(keep("Cyanocitta cristata (Blue Jay)", corrected=OWL), now, OSLO, Sent()).action == "send"
    assert rule.decide(keep(OWL, corrected="Cyanocitta cristata (Blue Jay)"), now, OSLO, Sent()).reason == "label"


def test_an_audit_keep_never_notifies():
    assert NotifyRule().decide(keep("audit", kind="audit"), 0.0, OSLO, Sent()).reason == "audit"


def test_the_first_matching_per_label_minimum_score_wins_else_min_score():
    rule = NotifyRule(min_score=0.8, min_score_by_label=(("*owl*", 0.3), ("*", 0.5)))
    decide = lambda label, score: rule.decide(keep(label, score), 0.0, OSLO, Sent()).action  # noqa: E731
    assert [decide(OWL, 0.35), decide(OWL, 0.25), decide(CHICKADEE, 0.55), decide(CHICKADEE, 0.45)] == \
        ["send", "skip", "send", "skip"]
    assert NotifyRule(min_score=0.8).decide(keep(score=0.79), 0.0, OSLO, Sent()).reason == "score"


def test_first_of_day_counts_days_in_the_devices_time_zone():
    """04:30 and 05:30 UTC are 23:30 and 00:30 in New York: two days there, one in UTC."""
    rule, now = NotifyRule(first_of_day=True), utc("2026-01-01T12:00:00+00:00")
    late, after_midnight, morning = (keep(at=f"2026-01-01T{t}Z") for t in ("04:30:00", "05:30:00", "11:00:00"))

    def outcomes(tz):
        sent, seen = Sent(), []
        for capture in (late, after_midnight, morning, keep(OWL, at=morning["captured_at"])):
            decision = rule.decide(capture, now, tz, sent)
            if decision.action == "send":
                sent.record(decision, now)
            seen.append(decision.reason or decision.action)
        return seen

    assert outcomes(NEW_YORK) == ["send", "send", "first_of_day", "send"]
    assert outcomes(ZoneInfo("UTC")) == ["send", "first_of_day", "first_of_day", "send"]


def test_the_cooldown_is_per_label_from_the_last_send_and_a_clock_set_back_blocks_nothing():
    rule, sent = NotifyRule(cooldown_s=300.0), Sent()
    sent.record(rule.decide(keep(), 1000.0, OSLO, sent), 1000.0)
    assert rule.decide(keep(), 1299.0, OSLO, sent).reason == "cooldown"
    assert rule.decide(keep(CHICKADEE.lower()), 1299.0, OSLO, sent).reason == "cooldown"
    assert rule.decide(keep(OWL), 1001.0, OSLO, sent).action == "send"
    assert rule.decide(keep(), 1300.0, OSLO, sent).action == "send"
    assert rule.decide(keep(), 999.0, OSLO, sent).action == "send"


def test_quiet_hours_across_midnight_hold_a_keep_until_they_end_and_judge_the_cooldown_then():
    rule, sent = NotifyRule(cooldown_s=600.0, min_score=0.5, quiet=QuietHours.parse("22:00-06:30")), Sent()
    sent.record(rule.decide(keep(), 0, OSLO, sent), utc("2026-06-01T21:58:00+02:00"))
    morning = utc("2026-06-02T06:30:00+02:00")
    for now in ("2026-06-01T22:01:00+02:00", "2026-06-01T23:59:00+02:00", "2026-06-02T05:00:00+02:00"):
        assert rule.decide(keep(), utc(now), OSLO, sent) == \
            Decision("wait", "quiet_hours", morning, label=CHICKADEE.casefold(), day="2026-06-01"), now
    assert rule.decide(keep(score=0.4), utc("2026-06-01T23:00:00+02:00"), OSLO, sent).reason == "score"
    assert rule.decide(keep(), morning, OSLO, sent).action == "send"
    assert rule.decide(keep(), utc("2026-06-01T21:59:00+02:00"), OSLO, sent).reason == "cooldown"
    assert QuietHours.parse("09:00-17:00").until(utc("2026-06-01T12:00:00+02:00"), OSLO) == \
        utc("2026-06-01T17:00:00+02:00")
    assert QuietHours.parse("09:00-17:00").until(utc("2026-06-01T17:00:00+02:00"), OSLO) is None
    assert QuietHours.parse("") is None and QuietHours.parse("07:00-07:00") is None


# -- the link, through real Apprise to a real server ------------------------------------------------------------

class Receiver:
    """A real HTTP server on 127.0.0.1 that keeps the JSON body of each POST."""

    def __init__(self, port=0):
        self.received = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.stop()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config_for(tmp_path, *urls, **notify):
    (tmp_path / "run").mkdir(exist_ok=True)
    return Config().replace(notify={"urls": urls, "cooldown_s": 0.0, **notify},
                            system={"hostname": "feeder", "timezone": "Europe/Oslo"},
                            storage={"data_dir": str(tmp_path / "data")}, status={"runtime_dir": str(tmp_path / "run")})


def add_keep(config, label=CHICKADEE, score=0.91, n=1):
    """A real keep: its thumbnail JPEG on disk, its row, its outbox entry for notify; returns (id, thumbnail)."""
    buffer = io.BytesIO()
    Image.open(IMAGES / "bird.bmp").convert("RGB").resize((320, 240)).save(buffer, "JPEG")
    store = Store(config.storage.data_dir)
    thumb = f"thumbs/2026/06/01/{n}.jpg"
    (store.data_dir / thumb).parent.mkdir(parents=True, exist_ok=True)
    (store.data_dir / thumb).write_bytes(buffer.getvalue())
    row = {"captured_at": "2026-06-01T12:00:00.000Z", "label": label, "score": score, "kind": "match", "bytes": 10,
           "image_path": f"2026/06/01/{n}.jpg", "thumb_path": thumb, "sha256": f"{n:064x}"}
    capture_id = store.insert_row(row, links=("notify",))
    store.close()
    return capture_id, buffer.getvalue()


def started(config):
    link = NotifyLink(config)
    link.start()
    return LinksService(config, links=[link]), link


def test_a_keep_goes_through_real_apprise_with_its_title_body_and_thumbnail(tmp_path, receiver):
    config = config_for(tmp_path, f"json://127.0.0.1:{receiver.port}/hook", cooldown_s=3600.0)
    capture_id, thumbnail = add_keep(config)
    service, link = started(config)
    service.step()
    [posted] = receiver.received
    assert posted["title"] == f"{CHICKADEE} 0.91 — feeder"
    assert posted["message"] == ("Kept at 2026-06-01 14:00:00+02:00 (Europe/Oslo) by feeder.\n"
                                 f"http://feeder.local/captures/{capture_id}")
    [attachment] = posted["attachments"]
    assert attachment["mimetype"] == "image/jpeg" and base64.b64decode(attachment["base64"]) == thumbnail
    add_keep(config, n=2)  # the same label within the cooldown: skipped, and done
    service.step()
    state = service.state()["links"]["notify"]
    assert (len(receiver.received), state["notified"], state["skipped"], state["queued"]) == (1, 1, {"cooldown": 1}, 0)
    service.close()
    service, link = started(config)  # a restart remembers the cooldown (notify_sent)
    add_keep(config, n=3)
    service.step()
    assert len(receiver.received) == 1 and link.describe()["skipped"] == {"cooldown": 1}
    add_keep(config, OWL, n=4)
    service.step()
    assert receiver.received[-1]["title"] == f"{OWL} 0.91 — feeder"
    service.close()


def test_a_url_apprise_cannot_parse_is_named_by_its_index_never_shown_and_the_service_keeps_running(tmp_path, receiver):
    secret_urls = ("tgram://bot-s3cret/", "nope://user:s3cret@example.com")
    config = config_for(tmp_path, f"json://127.0.0.1:{receiver.port}/", *secret_urls)
    problems = check_urls(config)
    assert [p.split(": ")[1] for p in problems] == ["notify.urls[1]", "notify.urls[2]"]
    assert "Apprise cannot use this URL" in problems[0] and "allowed: an Apprise URL" in problems[0]
    add_keep(config)
    service, link = started(config)
    service.step()  # the usable URL still notifies
    state = service.state()["links"]["notify"]
    assert len(receiver.received) == 1 and state["connected"]
    assert state["problem"].startswith("<defaults>: notify.urls[1], notify.urls[2]: Apprise cannot use these URLs")
    assert not any(part in json.dumps(state) + "".join(problems) for part in ("s3cret", "nope", "example.com"))
    service.close()

    config = config_for(tmp_path, *secret_urls)
    service, link = started(config)
    add_keep(config, n=2)
    for _ in range(3):
        service.step()
    state = service.state()["links"]["notify"]
    assert (link.is_up(), state["connected"], state["queued"], state["failed"]) == (False, False, 1, 0)
    assert "notify.urls[0]" in state["problem"] and "notify.urls[1]" in state["problem"]
    assert check_urls(Config()) == []
    service.close()


def test_while_the_service_is_down_the_entry_stays_queued_then_goes_when_it_is_up(tmp_path):
    port = free_port()
    config = config_for(tmp_path, f"json://127.0.0.1:{port}/")
    add_keep(config)
    service, link = started(config)
    service.step()
    state = service.state()["links"]["notify"]
    assert (state["queued"], state["failed"], state["notified"]) == (1, 1, 0)
    assert "notify.urls[0] did not take the notification" in state["last_error"]["error"]
    server = Receiver(port)
    try:
        deadline = time.monotonic() + 10.0
        while not server.received and time.monotonic() < deadline:  # the outbox's backoff: 2 s
            service.step()
            time.sleep(0.2)
        assert len(server.received) == 1 and service.outbox.depth()["notify"] == 0
    finally:
        server.stop()
        service.close()


def test_a_retry_goes_only_to_the_url_that_failed(tmp_path, receiver):
    port = free_port()
    config = config_for(tmp_path, f"json://127.0.0.1:{receiver.port}/", f"json://127.0.0.1:{port}/", cooldown_s=3600.0)
    add_keep(config)
    service, link = started(config)
    service.step()
    assert len(receiver.received) == 1 and service.outbox.depth()["notify"] == 1
    late = Receiver(port)
    try:
        deadline = time.monotonic() + 10.0
        while not late.received and time.monotonic() < deadline:
            service.step()
            time.sleep(0.2)
        assert (len(receiver.received), len(late.received), service.outbox.depth()["notify"]) == (1, 1, 0)
        assert link.describe()["notified"] == 1 and link.describe()["skipped"] == {}
    finally:
        late.stop()
        service.close()


def test_during_quiet_hours_the_link_is_down_and_entries_wait_untried(tmp_path, receiver):
    now = datetime.now(OSLO)
    quiet = f"{now - timedelta(hours=1):%H:%M}-{now + timedelta(hours=1):%H:%M}"
    config = config_for(tmp_path, f"json://127.0.0.1:{receiver.port}/", quiet_hours=quiet)
    add_keep(config)
    service, link = started(config)
    for _ in range(3):
        service.step()
    state = service.state()["links"]["notify"]
    assert (receiver.received, state["queued"], state["failed"]) == ([], 1, 0)
    [[attempts]] = service.store.select("select attempts from outbox")
    ends = datetime.fromisoformat(state["quiet_until"].replace("Z", "+00:00")).astimezone(OSLO)
    assert attempts == 0 and f"{ends:%H:%M}" == quiet.split("-")[1]
    service.close()


def test_appliance_config_check_names_a_notify_url_apprise_cannot_use_by_its_place_only(tmp_path, cli_env):
    import subprocess
    import sys

    from conftest import REPO

    path = tmp_path / "appliance.toml"
    path.write_text('[notify]\nurls = ["json://127.0.0.1:9/", "nope://user:s3cret@example.com"]\n')
    done = subprocess.run([sys.executable, "-m", "appliance", "config", "check", str(path)], cwd=REPO, env=cli_env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and f"{path}: notify.urls[1]: Apprise cannot use this URL" in done.stderr
    assert "s3cret" not in done.stderr + done.stdout and "notify.urls[0]" not in done.stderr
