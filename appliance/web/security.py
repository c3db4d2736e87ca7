"""Who may do what on the review page.

* A password in the config protects the page and the API. Given in clear text (``web.password``) it
  is hashed (salted scrypt) at first start and the file is rewritten to hold only the hash.
* With no password the page is read-only: images can be looked at, nothing can be changed, paused
  or synced, and every such request is refused with a message saying how to set one.
* Browsers log in to a session (cookie HttpOnly, SameSite=Strict) that the device also records
  (``sessions.Sessions``), so a logout or a new password ends it. Each login gets a new CSRF token,
  sent with every state-changing request. Scripts (``appliance sync``) use HTTP Basic auth with the
  password; the page never asks browsers for Basic credentials, so they never send them on their own.
* Failed logins are rate-limited per client address (an IPv6 client by its /64), counted before the
  password is checked so that a burst of guesses cannot slip past the limit. A browser that has
  logged in before carries a signed "known device" cookie: it is limited on its own, so a
  stranger's guesses from the same address do not lock its owner out.
* After login the browser is sent back only to a path on this device (``local_path``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import logging
import secrets
import threading
import time
import unicodedata
from collections import deque
from pathlib import Path
from urllib.parse import urlsplit

from itsdangerous import BadSignature, URLSafeTimedSerializer

from appliance.passwords import check_password
from appliance.storage.files import atomic_write_bytes

log = logging.getLogger(__name__)

NO_PASSWORD = ("This appliance has no password, so its page is read-only. To review, sync or control it, "
               "set password = \"…\" under [web] in appliance.toml on the SD card's boot partition "
               "and restart it.")
LOGIN_ATTEMPTS = 5
LOGIN_WINDOW_S = 300.0
SECRET_FILE = ".web-secret"
DEVICE_COOKIE = "appliance_device"
DEVICE_COOKIE_MAX_AGE_S = 400 * 86400  # the longest a browser keeps a cookie

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
    """At most ``attempts`` failed logins per key (a client, or a known device) within ``window_s``;
    time is passed in.

    An attempt is counted when it starts (``attempt``), before the slow password check, and taken
    back only if the password was right (``succeeded``): checking and counting in one step under
    one lock is what keeps a burst of concurrent guesses to ``attempts``."""

    MAX_KEYS = 4096  # past this, keys whose failures have all expired are forgotten

    def __init__(self, attempts=LOGIN_ATTEMPTS, window_s=LOGIN_WINDOW_S):
        self.attempts, self.window_s = attempts, window_s
        self._failures: dict[str, deque] = {}
        self._lock = threading.Lock()

    def attempt(self, key: str, now_s: float) -> float:
        """Count an attempt by ``key``: 0 if it may go ahead, else the seconds until it may (not counted)."""
        with self._lock:
            if len(self._failures) > self.MAX_KEYS:
                self._forget_expired(now_s)
            failures = self._failures.setdefault(key, deque())
            while failures and now_s - failures[0] >= self.window_s:
                failures.popleft()
            if len(failures) >= self.attempts:
                return self.window_s - (now_s - failures[0])
            failures.append(now_s)
            return 0.0

    def succeeded(self, key: str) -> None:
        """The password was right: ``key``'s failures (and this attempt) no longer count."""
        with self._lock:
            self._failures.pop(key, None)

    def _forget_expired(self, now_s: float) -> None:
        for key in [k for k, f in self._failures.items() if not f or now_s - f[-1] >= self.window_s]:
            del self._failures[key]


def password_fingerprint(secret_key: bytes, password_hash: str) -> str:
    """A keyed digest of the password hash: changes when the password does, tells nothing about it."""
    return hmac.new(secret_key, password_hash.encode(), hashlib.sha256).hexdigest()


class KnownDevices:
    """The "known device" cookie: a random device id and the password's fingerprint, signed with the
    page's secret key. A browser gets one at a successful login; a new password forgets every device."""

    def __init__(self, secret_key: bytes, password_hash: str):
        self._signer = URLSafeTimedSerializer(secret_key, salt="appliance known device")
        self._password = password_fingerprint(secret_key, password_hash)

    def cookie(self, device_id: str | None = None) -> str:
        """The cookie's value for ``device_id`` (a new id if None)."""
        return self._signer.dumps({"device": device_id or secrets.token_urlsafe(16), "password": self._password})

    def device_id(self, cookie: str | None) -> str | None:
        """The device id in a cookie this page signed, for the current password; None for anything else."""
        if not cookie:
            return None
        try:
            value = self._signer.loads(cookie, max_age=DEVICE_COOKIE_MAX_AGE_S)
        except BadSignature:  # also a cookie too old, or not ours at all
            return None
        if not isinstance(value, dict) or value.get("password") != self._password:
            return None
        device = value.get("device")
        return device if isinstance(device, str) and device else None


def client_key(address: str) -> str:
    """Who a client is, for counting its logins and connections: its IPv4 address, or its IPv6 /64
    (one machine on a LAN can take any address of its /64 at will)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if ip.version == 4:
        return str(ip)
    if ip.ipv4_mapped is not None:  # an IPv4 client of a dual-stack socket (systemd's BindIPv6Only=both)
        return str(ip.ipv4_mapped)
    return str(ipaddress.ip_network(f"{ip}/64", strict=False))


def local_path(target: str) -> str | None:
    """``target`` if it is a path on this device (``/gallery?label=x``), else None.

    Browsers drop tabs and line breaks from a URL and read ``\\`` as ``/``, so ``/<tab>/evil.example/``
    or ``/\\evil.example/`` would lead off the device: a target holding a control or format
    character, white space or a backslash is refused outright, and what is left must start with
    one ``/`` and have neither scheme nor host."""
    if not target.startswith("/") or target.startswith("//"):
        return None
    if any(ch == "\\" or ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co") for ch in target):
        return None
    parts = urlsplit(target)
    return None if parts.scheme or parts.netloc else target


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def tokens_match(expected: str | None, given: str | None) -> bool:
    return bool(expected and given) and hmac.compare_digest(expected, given)


def monotonic() -> float:
    return time.monotonic()
