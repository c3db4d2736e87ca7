"""Logged-in browsers, recorded on the device, so that a session ends when it should.

Flask keeps a session in a signed cookie, and a copy of that cookie stays valid until it expires:
clearing it at logout only asks one browser to forget it. So a login also records a random session
id here, every request checks that its id is still recorded, and a logout removes it. The record
carries the password's fingerprint: when the page starts with a new password, every session made
with the old one is gone.

The record is a small JSON file in the data directory (0600, written atomically at each login and
logout), so sessions outlive a restart of the page. Only digests of the ids are written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import threading
import time
from pathlib import Path

from appliance.storage.files import atomic_write_bytes
from appliance.web.security import password_fingerprint

log = logging.getLogger(__name__)

SESSIONS_FILE = ".web-sessions"
MAX_SESSIONS = 64  # the oldest is forgotten past this: browsers that never logged out


class Sessions:
    """The session ids that are live, each with the time it started (seconds since the epoch)."""

    def __init__(self, data_dir: Path, secret_key: bytes, password_hash: str, lifetime_s: float):
        self.path = Path(data_dir) / SESSIONS_FILE
        self.lifetime_s = lifetime_s
        self._password = password_fingerprint(secret_key, password_hash)
        self._lock = threading.Lock()
        self._started: dict[str, float] = self._load()

    def start(self) -> str:
        """A new live session id, for the cookie of a browser that just logged in."""
        session_id = secrets.token_urlsafe(32)
        with self._lock:
            now = time.time()
            self._forget_expired(now)
            self._started[_digest(session_id)] = now
            while len(self._started) > MAX_SESSIONS:
                del self._started[min(self._started, key=self._started.get)]
            self._save()
        return session_id

    def is_live(self, session_id) -> bool:
        if not isinstance(session_id, str) or not session_id:
            return False
        with self._lock:
            started = self._started.get(_digest(session_id))
        return started is not None and time.time() - started < self.lifetime_s

    def end(self, session_id) -> None:
        """Log a session out, wherever copies of its cookie are."""
        if not isinstance(session_id, str):
            return
        with self._lock:
            if self._started.pop(_digest(session_id), None) is not None:
                self._save()

    def _forget_expired(self, now: float) -> None:
        for digest in [d for d, started in self._started.items() if now - started >= self.lifetime_s]:
            del self._started[digest]

    def _load(self) -> dict[str, float]:
        try:
            record = json.loads(self.path.read_text(encoding="utf-8"))
            if record["password"] != self._password:
                log.info("the web password changed: every earlier session is logged out")
                self._started = {}
                self._save()
                return {}
            return {str(d): float(t) for d, t in record["sessions"].items()}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            log.warning("%s is unreadable (%s): every browser logs in again", self.path, e)
            return {}

    def _save(self) -> None:
        text = json.dumps({"password": self._password, "sessions": self._started}, sort_keys=True)
        try:
            atomic_write_bytes(self.path, text.encode(), mode=0o600)
        except OSError as e:  # the sessions still hold until the page restarts
            log.warning("cannot record the page's sessions in %s (%s): a restart logs every browser out",
                        self.path, e)


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()
