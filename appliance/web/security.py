"""Who may do what on the review page.

* A password in the config protects the page and the API. Given in clear text (``web.password``) it
  is hashed (salted scrypt) at first start and the file is rewritten to hold only the hash.
* With no password the page is read-only: images can be looked at, nothing can be changed, paused
  or synced, and every such request is refused with a message saying how to set one.
* Browsers log in to a session (cookie HttpOnly, SameSite=Strict) and send a CSRF token with every
  state-changing request. Scripts (``appliance sync``) use HTTP Basic auth with the password; the
  page never asks browsers for Basic credentials, so they never send them on their own.
* Failed logins are rate-limited per client address.
"""

from __future__ import annotations

import base64
import hmac
import logging
import secrets
import threading
import time
from collections import defaultdict, deque
from pathlib import Path

from appliance.passwords import check_password
from appliance.storage.files import atomic_write_bytes

log = logging.getLogger(__name__)

NO_PASSWORD = ("This appliance has no password, so its page is read-only. To review, sync or control it, "
               "set password = \"…\" under [web] in appliance.toml on the SD card's boot partition "
               "and restart it.")
LOGIN_ATTEMPTS = 5
LOGIN_WINDOW_S = 300.0
SECRET_FILE = ".web-secret"

CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                           "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


def load_secret_key(data_dir: Path) -> bytes:
    """The session-signing key: random, made once, kept (0600) in the data dir across restarts."""
    path = Path(data_dir) / SECRET_FILE
    try:
        return path.read_bytes()
    except FileNotFoundError:
        key = secrets.token_bytes(32)
        atomic_write_bytes(path, key, mode=0o600)
        return key


class Passwords:
    """Checks the password; scrypt is slow on purpose, so a verified Basic credential is remembered."""

    def __init__(self, password_hash: str):
        self.password_hash = password_hash
        self._verified_basic: str | None = None

    @property
    def is_set(self) -> bool:
        return bool(self.password_hash)

    def check(self, password: str) -> bool:
        return self.is_set and check_password(self.password_hash, password)

    def check_basic(self, header: str | None) -> bool:
        """An ``Authorization: Basic`` header whose password (any user name) is right."""
        if not header or not header.startswith("Basic ") or not self.is_set:
            return False
        try:
            _, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        if self._verified_basic is not None and hmac.compare_digest(self._verified_basic, header):
            return True
        if self.check(password):
            self._verified_basic = header
            return True
        return False


class LoginLimiter:
    """At most ``attempts`` failed logins per client address within ``window_s``; time is passed in."""

    def __init__(self, attempts=LOGIN_ATTEMPTS, window_s=LOGIN_WINDOW_S):
        self.attempts, self.window_s = attempts, window_s
        self._failures: dict[str, deque] = defaultdict(deque)
        self._lock = threading.Lock()

    def wait_s(self, address: str, now_s: float) -> float:
        """Seconds until ``address`` may try again; 0 if it may now."""
        with self._lock:
            failures = self._failures[address]
            while failures and now_s - failures[0] >= self.window_s:
                failures.popleft()
            return self.window_s - (now_s - failures[0]) if len(failures) >= self.attempts else 0.0

    def failed(self, address: str, now_s: float) -> None:
        with self._lock:
            self._failures[address].append(now_s)

    def succeeded(self, address: str) -> None:
        with self._lock:
            self._failures.pop(address, None)


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def tokens_match(expected: str | None, given: str | None) -> bool:
    return bool(expected and given) and hmac.compare_digest(expected, given)


def monotonic() -> float:
    return time.monotonic()
