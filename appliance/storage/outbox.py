"""The outbox: every message and upload the appliance sends, queued in its SQLite database first.

The camera is offline-first. A keep becomes an outbox entry for each configured link (``mqtt``,
``upload``, ``notify``) in the very transaction that inserts its row (``Store.insert_row``'s ``also``),
so a power cut can never leave a keep the links do not know about, nor an entry of no keep. The links
process (``links.service``) sends what is due and deletes an entry only once its link confirmed it (a
broker's PUBACK, an object store's checksum): delivery is at least once, and each entry's ``key``
(``keep:ID``, ``status``…) is unique per link, so a receiver can drop a repeat and enqueueing twice
queues once. An entry that replaces (the retained status) overwrites the one waiting.

A failed send waits before its next try: 2, 4, 8 … seconds, at most ``MAX_BACKOFF_S``. The outbox is
bounded (``outbox.max_entries``): past it, the oldest notifications give way first, then the oldest
MQTT messages; uploads never (their number is bounded by the kept images themselves). What gave way is
counted per link (``outbox_dropped``) and logged.

Its functions take the store's connection (inside its transactions) or, in the links process, one of
its own on the same WAL database: the links never hold a lock the writer waits on for long.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from dataclasses import dataclass
from typing import Iterable

log = logging.getLogger(__name__)

LINKS = ("mqtt", "upload", "notify")
GIVES_WAY = ("notify", "mqtt")  # in this order, when the outbox is full; uploads never
MAX_BACKOFF_S = 300.0
SCHEMA = (
    "create table if not exists outbox (id integer primary key autoincrement, link text not null, "
    "key text not null, capture_id integer, payload text not null, created_at real not null, "
    "attempts integer not null default 0, next_at real not null default 0, last_error text, unique (link, key))",
    "create index if not exists outbox_due on outbox (link, next_at, id)",
    "create table if not exists outbox_dropped (link text primary key, count integer not null)",
)


@dataclass(frozen=True)
class Entry:
    """One thing to send: its ``link``, its idempotent ``key``, the keep it is about (if any), its payload."""

    id: int
    link: str
    key: str
    capture_id: int | None
    payload: dict
    attempts: int


def create(conn: sqlite3.Connection) -> None:
    for statement in SCHEMA:
        conn.execute(statement)


def configured_links(config) -> tuple[str, ...]:
    """The links a ``Config`` turns on: each keep is queued for each of them."""
    turned_on = {"mqtt": bool(config.mqtt.url), "upload": bool(config.upload.endpoint), "notify": bool(config.notify.urls)}
    return tuple(link for link in LINKS if turned_on[link])


def keep_key(capture_id: int) -> str:
    return f"keep:{capture_id}"


def sidecar_key(capture_id: int) -> str:
    """The upload link's entry for a keep already uploaded whose record changed (a relabel): only its
    JSON sidecar goes again."""
    return f"sidecar:{capture_id}"


def enqueue_sidecar(conn: sqlite3.Connection, capture_id: int) -> None:
    """Queue a keep's sidecar to go to the object store again (its record changed after its upload)."""
    enqueue(conn, "upload", sidecar_key(capture_id), capture_id=capture_id, replace=True)


def enqueue(conn: sqlite3.Connection, link: str, key: str, payload: dict | None = None,
            capture_id: int | None = None, replace: bool = False, now: float | None = None) -> None:
    """Queue one entry; an entry of the same link and key already waiting stays as it is, unless ``replace``."""
    if link not in LINKS:
        raise ValueError(f"no link named {link!r}: one of {', '.join(LINKS)}")
    verb = "insert or replace" if replace else "insert or ignore"
    conn.execute(f"{verb} into outbox (link, key, capture_id, payload, created_at) values (?, ?, ?, ?, ?)",
                 [link, key, capture_id, json.dumps(payload or {}), time.time() if now is None else now])


def enqueue_keep(conn: sqlite3.Connection, capture_id: int, links: Iterable[str], now: float | None = None) -> None:
    """One entry a link for a new keep; the link reads the keep's row when it sends, so a relabel made
    meanwhile goes out, and a keep deleted meanwhile is not sent at all."""
    for link in links:
        enqueue(conn, link, keep_key(capture_id), capture_id=capture_id, now=now)


class Outbox:
    """The links process's view of the outbox, on a connection of its own to the appliance's database."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        with conn:
            create(conn)

    def due(self, link: str, limit: int = 50, now: float | None = None) -> list[Entry]:
        """Entries of ``link`` whose time has come, oldest first."""
        rows = self.conn.execute(
            "select id, link, key, capture_id, payload, attempts from outbox where link = ? and next_at <= ? "
            "order by id limit ?", [link, time.time() if now is None else now, limit]).fetchall()
        return [Entry(i, lk, k, c, json.loads(p), a) for i, lk, k, c, p, a in rows]

    def enqueue(self, link: str, key: str, payload: dict | None = None, capture_id: int | None = None,
                replace: bool = False) -> None:
        with self.conn:
            enqueue(self.conn, link, key, payload, capture_id, replace)

    def done(self, entries: Iterable[Entry]) -> None:
        """Its link confirmed these: they go."""
        with self.conn:
            self.conn.executemany("delete from outbox where id = ?", [(e.id,) for e in entries])

    def failed(self, entry: Entry, error: str, now: float | None = None) -> float:
        """Try ``entry`` again later (2, 4, 8 … s, at most ``MAX_BACKOFF_S``); returns that delay."""
        delay_s = min(2.0 ** (entry.attempts + 1), MAX_BACKOFF_S)
        with self.conn:
            self.conn.execute("update outbox set attempts = attempts + 1, next_at = ?, last_error = ? where id = ?",
                              [(time.time() if now is None else now) + delay_s, error[:500], entry.id])
        return delay_s

    def retry_now(self, link: str) -> None:
        """The link came back: what waits for its backoff is due at once."""
        with self.conn:
            self.conn.execute("update outbox set next_at = 0 where link = ?", [link])

    def depth(self) -> dict[str, int]:
        """Entries waiting, per link (every link named, 0 when none wait)."""
        counts = dict(self.conn.execute("select link, count(*) from outbox group by link").fetchall())
        return {link: counts.get(link, 0) for link in LINKS}

    def dropped(self) -> dict[str, int]:
        counts = dict(self.conn.execute("select link, count from outbox_dropped").fetchall())
        return {link: counts.get(link, 0) for link in LINKS}

    def trim(self, max_entries: int) -> dict[str, int]:
        """Bring the outbox down to ``max_entries``: the oldest of each link in ``GIVES_WAY`` go, in that
        order; returns how many of each went (counted in ``outbox_dropped``, and logged)."""
        gone: dict[str, int] = {}
        with self.conn:
            excess = self.conn.execute("select count(*) from outbox").fetchone()[0] - max_entries
            for link in GIVES_WAY:
                if excess <= 0:
                    break
                count = self.conn.execute(
                    "delete from outbox where id in (select id from outbox where link = ? order by id limit ?)",
                    [link, excess]).rowcount
                if count:
                    gone[link] = count
                    excess -= count
                    self.conn.execute("insert into outbox_dropped (link, count) values (?, ?) on conflict (link) "
                                      "do update set count = count + excluded.count", [link, count])
        for link, count in gone.items():
            log.warning("outbox full (%d entries at most): dropped the %d oldest %s entries", max_entries, count, link)
        return gone
