"""Notifications through Apprise (ntfy, Telegram, e-mail, webhooks…): a keep the rules let through
(``rules``) becomes one message to each URL of ``notify.urls``, its thumbnail attached where the
service takes attachments.

* A URL Apprise cannot use is a problem of the link (``describe()["problem"]``, and ``check_urls`` at
  config-check time), named by its index in ``notify.urls``, never by itself: URLs hold tokens and
  passwords. The other URLs still work; with none usable the link is down and its entries wait.
* A skipped keep is done (its entry goes), counted by reason in ``describe()["skipped"]``.
* Quiet hours: ``is_up()`` is False while they hold, so the service leaves the queue alone (no tries,
  no backoff) and drains it when they end. An entry already being sent when they begin raises
  ``LinkError`` once and goes when they end.
* A URL that did not take a message (the service is down) raises ``LinkError``: the entry is tried
  again with the outbox's backoff, then only for the URLs that have not taken it yet, without asking
  the rules again (they let it through once: its cooldown must not now skip it).
* What was sent per label (``rules.Sent``) is kept in the table ``notify_sent`` of the appliance's
  database, through the outbox's connection, so a restart repeats no first-of-day or cooldown
  message. Which URLs already took a half-delivered message is kept in memory only: after a restart
  the rules judge that entry again (usually: skipped by the cooldown its first delivery started).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import apprise

from appliance.clock import utc_iso
from appliance.errors import LinkError
from appliance.links.rules import Decision, NotifyRule, Sent, effective_label
from appliance.storage.outbox import Entry, Outbox

log = logging.getLogger(__name__)

SENT_SCHEMA = "create table if not exists notify_sent (label text primary key, sent_at real not null, day text not null)"
ALLOWED_URL = "an Apprise URL (https://appriseit.com/services/) such as ntfy://TOPIC, tgram://TOKEN/CHAT or json://HOST:PORT/PATH"


def load_urls(urls) -> tuple[list[tuple[int, apprise.Apprise]], list[int]]:
    """Each URL Apprise can use as ``(index, Apprise)``, and the indexes of those it cannot."""
    usable, bad = [], []
    for index, url in enumerate(urls):
        service = apprise.Apprise.instantiate(url)
        if service is None:
            bad.append(index)
        else:
            one = apprise.Apprise()
            one.add(service)
            usable.append((index, one))
    return usable, bad


def url_problem(source, indexes: list[int]) -> str:
    """``FILE: notify.urls[I], …: problem, allowed: …``: the URLs named by index only."""
    keys = ", ".join(f"notify.urls[{index}]" for index in indexes)
    return (f"{source}: {keys}: Apprise cannot use {'this URL' if len(indexes) == 1 else 'these URLs'} (an unknown "
            f"service, or a part missing or malformed: Apprise's log line says which), allowed: {ALLOWED_URL}")


def check_urls(config) -> list[str]:
    """One line per URL of ``notify.urls`` Apprise cannot use, for a config check."""
    return [url_problem(config.source, [index]) for index in load_urls(config.notify.urls)[1]]


def message(capture: dict, hostname: str, port: int, tz) -> tuple[str, str]:
    """The title and body of a keep's notification: label, score, device; local time and a link."""
    label = effective_label(capture)
    local = datetime.fromisoformat(capture["captured_at"].replace("Z", "+00:00")).astimezone(tz)
    title = f"{label} {capture.get('score') or 0.0:.2f} — {hostname}"
    lines = [f"Kept at {local.isoformat(' ', 'seconds')} ({tz}) by {hostname}."]
    if capture.get("corrected_label") and capture["corrected_label"] != capture["label"]:
        lines.append(f"Corrected from {capture['label']}.")
    lines.append(f"http://{hostname}.local{'' if port == 80 else f':{port}'}/captures/{capture['id']}")
    return title, "\n".join(lines)


class NotifyLink:
    """The ``notify`` link: Apprise to ``notify.urls``, by the rules of ``[notify]``."""

    name = "notify"

    def __init__(self, config):
        self.config = config
        self.rule = NotifyRule.from_config(config.notify)
        self.tz = ZoneInfo(config.system.timezone)
        self.sent = Sent()
        self._services: list[tuple[int, apprise.Apprise]] = []
        self._problem: str | None = None
        self._conn: sqlite3.Connection | None = None  # the outbox's: where notify_sent lives
        self._delivered: dict[str, set[int]] = {}  # entry key → indexes of the URLs that took it
        self._skipped: Counter[str] = Counter()
        self._notified = 0

    def start(self) -> None:
        self._services, bad = load_urls(self.config.notify.urls)
        if bad:
            self._problem = url_problem(self.config.source, bad)
            log.error("notify: %s", self._problem)
        if not self._services:
            log.error("notify: no usable URL in notify.urls: notifications wait in the outbox")

    def is_up(self) -> bool:
        return bool(self._services) and self.rule.quiet_until(time.time(), self.tz) is None

    def catch_up(self, outbox: Outbox, store) -> None:
        """Nothing to queue: each keep is queued as it is kept."""

    def tick(self, outbox: Outbox) -> None:
        """The first reads what was sent per label (``notify_sent``), before anything is sent."""
        if self._conn is None:
            self._conn = outbox.conn
            with self._conn:
                self._conn.execute(SENT_SCHEMA)
            rows = self._conn.execute("select label, sent_at, day from notify_sent").fetchall()
            self.sent.last.update({label: (sent_at, day) for label, sent_at, day in rows})

    def send(self, entry: Entry, capture: dict | None, store) -> None:
        if capture is None:
            return  # only keeps notify
        now_s = time.time()
        delivered = self._delivered.get(entry.key)
        decision = None
        if not delivered:  # the rules judge an entry until one URL took it, then never again
            decision = self.rule.decide(capture, now_s, self.tz, self.sent)
            if decision.action == "skip":
                self._skipped[decision.reason] += 1
                log.debug("notify: %s skipped (%s)", entry.key, decision.reason)
                return
            if decision.action == "wait":
                raise LinkError(f"notify: quiet hours ({self.config.notify.quiet_hours}) until "
                                f"{datetime.fromtimestamp(decision.until_s, self.tz):%H:%M}: sent then")
        if not self._services:
            raise LinkError(self._problem or "notify: no URL in notify.urls")
        self._deliver(entry, capture, store, decision, now_s)

    def _deliver(self, entry: Entry, capture: dict, store, decision: Decision | None, now_s: float) -> None:
        title, body = message(capture, self.config.system.hostname, self.config.web.port, self.tz)
        attach = self._thumbnail(capture, store)
        delivered = self._delivered.pop(entry.key, set())
        failed = []
        for index, service in self._services:
            if index in delivered:
                continue
            if service.notify(body=body, title=title, attach=attach):
                if not delivered:  # the first URL that took it (the rules were asked): the cooldown starts
                    self._record(decision, now_s)
                delivered.add(index)
            else:
                failed.append(index)
        if failed:
            if delivered:  # kept only while half-delivered: a keep deleted meanwhile leaves little behind
                self._delivered[entry.key] = delivered
            names = ", ".join(f"notify.urls[{index}]" for index in failed)
            raise LinkError(f"notify: {names} did not take the notification (Apprise's log line says why): tried again later")
        self._notified += 1

    def _thumbnail(self, capture: dict, store) -> str | None:
        """The keep's thumbnail file, if it is wanted and there (a keep being re-indexed may have none yet)."""
        if not (self.config.notify.attach_thumbnail and capture.get("thumb_path")):
            return None
        path = Path(store.data_dir) / capture["thumb_path"]
        return str(path) if path.is_file() else None

    def _record(self, decision: Decision, now_s: float) -> None:
        self.sent.record(decision, now_s)
        if self._conn is not None:
            with self._conn:
                self._conn.execute("insert or replace into notify_sent (label, sent_at, day) values (?, ?, ?)",
                                   [decision.label, now_s, decision.day])

    def describe(self) -> dict:
        until_s = self.rule.quiet_until(time.time(), self.tz)
        return {"connected": bool(self._services), "problem": self._problem,
                "quiet_until": utc_iso(until_s) if until_s is not None else None,
                "notified": self._notified, "skipped": dict(self._skipped)}

    def close(self) -> None:
        self._services = []
        self._conn = None
