"""``appliance links``: the process that drains the outbox through each configured link.

Every ``STEP_S`` (0.1 s: a keep's MQTT event reaches a subscriber within a fraction of a second) it lets
each link do its periodic work (``tick``: the MQTT status), and sends what is due through each link that
is up, oldest first, for at most ``DRAIN_S`` a link so that a long queue never starves the others or the
state file; every ``HOUSEKEEPING_S`` it bounds the outbox (``outbox.max_entries``) and writes its state. An entry of a
keep deleted meanwhile is dropped unsent; a failure leaves the entry queued with its backoff, and that
link waits for the next step. A link coming back up makes its whole queue due at once.

What it is doing goes to ``links.json`` in the runtime directory (a tmpfs), replaced atomically, for
the loop's status and the page: per link, connected, its problem, last success, last error, queue
depth and what gave way. It runs apart from the camera loop (``appliance-links.service``, at a low
priority): the camera never waits for the network.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path

from appliance.clock import utc_iso
from appliance.errors import LinkError
from appliance.storage.outbox import Outbox, configured_links
from appliance.storage.store import DB_NAME, Store

log = logging.getLogger(__name__)

STATE_FILE = "links.json"
STEP_S = 0.1
HOUSEKEEPING_S = 1.0
DRAIN_S = 2.0
BATCH = 100


def open_links(config) -> list:
    """The links ``config`` turns on, built (not yet started)."""
    links = []
    for name in configured_links(config):
        if name == "mqtt":
            from appliance.links.mqtt import MqttLink

            links.append(MqttLink(config))
        elif name == "upload":
            from appliance.links.upload import UploadLink

            links.append(UploadLink(config))
        elif name == "notify":
            from appliance.links.notify import NotifyLink

            links.append(NotifyLink(config))
    return links


def read_links(runtime_dir: str | Path) -> dict | None:
    """What the links service last wrote, or None if it is not running or never wrote."""
    try:
        return json.loads((Path(runtime_dir) / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None


class LinksService:
    """Drains the outbox through ``links`` (default: the ones ``config`` turns on) until ``stop()``."""

    def __init__(self, config, links=None):
        self.config = config
        self.store = Store(config.storage.data_dir)
        self.outbox = Outbox(sqlite3.connect(self.store.data_dir / DB_NAME, timeout=30, check_same_thread=False))
        # What this process commits (a mark uploaded_at, an entry done, a status queued) is safe to lose:
        # a power cut then costs a message or an upload sent again, never a keep. So its commits wait for
        # no fsync of the WAL (synchronous=NORMAL, on its own connections only): 1-7 ms each on a busy card.
        for conn in (self.store.db.conn, self.outbox.conn):
            conn.execute("pragma synchronous = normal")
        self.links = open_links(config) if links is None else list(links)
        self.runtime_dir = Path(config.status.runtime_dir)
        self._stopping = threading.Event()
        self._housekeeping_s = 0.0
        self._was_up = {link.name: False for link in self.links}
        self._seen = {link.name: {"last_success": None, "last_error": None, "sent": 0, "failed": 0, "is_failing": False}
                      for link in self.links}

    def run(self) -> None:
        """Start every link, queue what they have to catch up on, then step until ``stop()``."""
        self.runtime_dir.mkdir(parents=True, exist_ok=True)
        for link in self.links:
            link.start()
            link.catch_up(self.outbox, self.store)
        log.info("links: %s", ", ".join(link.name for link in self.links) or "none configured")
        try:
            while not self._stopping.is_set():
                started = time.monotonic()
                self.step()
                self._stopping.wait(max(0.0, STEP_S - (time.monotonic() - started)))
        finally:
            self.close()

    def stop(self) -> None:
        self._stopping.set()

    def step(self) -> None:
        now_s = time.monotonic()
        is_housekeeping = now_s >= self._housekeeping_s
        if is_housekeeping:
            self._housekeeping_s = now_s + HOUSEKEEPING_S
            self.outbox.trim(self.config.outbox.max_entries)
        for link in self.links:
            link.tick(self.outbox)
            is_up = link.is_up()
            if is_up and not self._was_up[link.name]:
                self.outbox.retry_now(link.name)  # back up: what waits for its backoff goes now
            self._was_up[link.name] = is_up
            if is_up:
                self._drain(link)
        if is_housekeeping:
            self.write_state()

    def _drain(self, link) -> None:
        until = time.monotonic() + DRAIN_S
        seen = self._seen[link.name]
        while time.monotonic() < until and not self._stopping.is_set():
            entries = self.outbox.due(link.name, BATCH)
            if not entries:
                return
            for entry in entries:
                capture = self.store.get(entry.capture_id) if entry.capture_id is not None else None
                if entry.capture_id is not None and capture is None:
                    self.outbox.done([entry])  # its keep was deleted meanwhile: nothing to send
                    continue
                try:
                    link.send(entry, capture, self.store)
                except LinkError as e:
                    delay_s = self.outbox.failed(entry, str(e))
                    seen["failed"] += 1
                    seen["last_error"] = {"at": utc_iso(time.time()), "error": str(e)}
                    seen["is_failing"] = True
                    log.warning("%s: could not send %s (try %d, again in %.0f s): %s", link.name, entry.key,
                                entry.attempts + 1, delay_s, e)
                    return
                self.outbox.done([entry])
                seen["sent"] += 1
                seen["last_success"], seen["is_failing"] = utc_iso(time.time()), False
                if time.monotonic() >= until or self._stopping.is_set():
                    return

    def state(self) -> dict:
        depth, dropped = self.outbox.depth(), self.outbox.dropped()
        links = {}
        for link in self.links:
            state = {**link.describe(), **self._seen[link.name], "queued": depth[link.name],
                     "dropped": dropped[link.name]}
            if not state.get("problem") and state.pop("is_failing"):  # its own word first, else its last failure
                state["problem"] = state["last_error"]["error"]
            state.pop("is_failing", None)
            links[link.name] = state
        return {"updated_at": time.time(), "links": links, "queued": sum(depth.values())}

    def write_state(self) -> None:
        path = self.runtime_dir / STATE_FILE
        tmp = path.with_name(f".{STATE_FILE}.tmp")
        try:
            tmp.write_text(json.dumps(self.state(), indent=1, default=str))
            os.replace(tmp, path)
        except OSError as e:
            log.error("could not write %s: %s", path, e)

    def close(self) -> None:
        for link in self.links:
            try:
                link.close()
            except Exception:  # one link's trouble closing must not keep the others open
                log.exception("%s: could not close", link.name)
        self.outbox.conn.close()
        self.store.close()
