"""Passwords: the page's (salted scrypt) and the admin user's (crypt(3) SHA-512), hashed in one place.

Both the page and the boot-time system settings (run as root, before any page exists) use this
module, so hashing a password never imports the web framework. The page's hashes use Werkzeug's
text format (``scrypt:N:r:p$salt$hex``, or ``pbkdf2:sha256:iterations$salt$hex``), so hashes made by
earlier versions, or by ``werkzeug.security.generate_password_hash``, keep working.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import string
import warnings
from pathlib import Path

from appliance.config import remove_clear_text
from appliance.errors import SystemSettingsError

log = logging.getLogger(__name__)

_SALT_CHARS = string.ascii_letters + string.digits
_SALT_LENGTH = 16
_SCRYPT = (2**15, 8, 1)  # N, r, p: Werkzeug's default, ~50 ms and 32 MB on a Pi 4


def hash_password(password: str) -> str:
    """A new salted scrypt hash of ``password`` (``scrypt:32768:8:1$salt$hex``)."""
    salt = "".join(secrets.choice(_SALT_CHARS) for _ in range(_SALT_LENGTH))
    n, r, p = _SCRYPT
    method = f"scrypt:{n}:{r}:{p}"
    return f"{method}${salt}${_digest(method, salt, password)}"


def check_password(password_hash: str, password: str) -> bool:
    """Whether ``password`` matches ``password_hash``; False for a hash this module cannot read."""
    try:
        method, salt, digest = password_hash.split("$", 2)
        return hmac.compare_digest(_digest(method, salt, password), digest)
    except (ValueError, TypeError):
        return False


def _digest(method: str, salt: str, password: str) -> str:
    name, *args = method.split(":")
    if name == "scrypt":
        n, r, p = map(int, args) if args else _SCRYPT
        return hashlib.scrypt(password.encode(), salt=salt.encode(), n=n, r=r, p=p, maxmem=132 * n * r * p).hex()
    if name == "pbkdf2" and len(args) == 2:
        return hashlib.pbkdf2_hmac(args[0], password.encode(), salt.encode(), int(args[1])).hex()
    raise ValueError(f"unknown password hash method {name!r}")


def adopt_password(web_config, config_path: Path | None) -> str:
    """The page's password hash to use; a clear-text ``web.password`` is hashed and the file rewritten.

    If the file cannot be rewritten (a read-only boot partition), the hash is used from memory and
    a warning says the clear text is still in the file."""
    if not web_config.password:
        return web_config.password_hash
    password_hash = hash_password(web_config.password)
    if config_path is None:
        return password_hash
    try:
        remove_clear_text(config_path, "web", "password", password_hash)
        log.info("hashed the web password and removed its clear text from %s", config_path)
    except (OSError, ValueError) as e:
        log.warning("could not remove the clear-text web password from %s (%s): it stays readable there",
                    config_path, e)
    return password_hash


def crypt_sha512(password: str, salt: str | None = None) -> str:
    """crypt(3) for /etc/shadow; ``salt=None`` makes a new SHA-512 one, a full hash as ``salt`` re-hashes
    with its salt (to compare). Python 3.11's crypt is deprecated, not yet gone."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import crypt
        except ImportError:  # pragma: no cover - Python 3.13 and later
            raise SystemSettingsError("this Python has no crypt module to hash system.admin_password: set "
                                      "admin_password_hash to the output of `mkpasswd -m sha-512` instead") from None
    return crypt.crypt(password, salt or crypt.mksalt(crypt.METHOD_SHA512))
