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
from pathlib import Path

from appliance.config import remove_clear_text

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


def crypt_sha512(password: str, salt: str | None = None) -> str | None:
    """crypt(3)'s SHA-512 (``$6$``) for /etc/shadow, as glibc and libxcrypt compute it.

    ``salt=None`` makes a new salt; a full hash (or ``$6$[rounds=N$]SALT``) as ``salt`` hashes with its
    salt and rounds, so the result equals that hash exactly when the password matches. Returns None
    for another method's hash (``$y$`` yescrypt, ``$1$``…), which this module does not compute.
    Written out (Drepper's "Unix crypt using SHA-256 and SHA-512") because Python 3.13 has no
    ``crypt`` module."""
    if salt is None:
        salt = "$6$" + "".join(secrets.choice(_CRYPT_ALPHABET[2:]) for _ in range(16))
    if not salt.startswith("$6$"):
        return None
    setting = salt[3:]
    rounds, prefix = _SHA512_ROUNDS, "$6$"
    if setting.startswith("rounds="):
        count, _, setting = setting[len("rounds="):].partition("$")
        if not count.isdigit():
            return None
        rounds = min(max(int(count), 1000), 999_999_999)
        prefix += f"rounds={rounds}$"
    salt_text = setting.split("$", 1)[0][:16]
    digest = _sha512_crypt_digest(password.encode(), salt_text.encode(), rounds)
    return prefix + salt_text + "$" + _crypt_base64(digest)


_SHA512_ROUNDS = 5000
_CRYPT_ALPHABET = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def _sha512_crypt_digest(key: bytes, salt: bytes, rounds: int) -> bytes:
    def repeated(block: bytes, length: int) -> bytes:
        return (block * (length // len(block) + 1))[:length]

    alternate = hashlib.sha512(key + salt + key).digest()
    a = hashlib.sha512(key + salt + repeated(alternate, len(key)))
    length = len(key)
    while length:  # each bit of the key's length, lowest first: 1 adds the alternate sum, 0 the key
        a.update(alternate if length & 1 else key)
        length >>= 1
    result = a.digest()
    p = repeated(hashlib.sha512(key * len(key)).digest(), len(key)) if key else b""
    s = repeated(hashlib.sha512(salt * (16 + result[0])).digest(), len(salt)) if salt else b""
    for i in range(rounds):
        h = hashlib.sha512(p if i & 1 else result)
        if i % 3:
            h.update(s)
        if i % 7:
            h.update(p)
        h.update(result if i & 1 else p)
        result = h.digest()
    return result


def _crypt_base64(digest: bytes) -> str:
    """crypt's own base-64 of the 64-byte digest, in its byte order: groups (i, i+21, i+42), rotated."""
    out = []
    for i in range(21):
        group = (i, i + 21, i + 42)
        b2, b1, b0 = group[i % 3:] + group[:i % 3]
        out.append(_b64_from_24bit(digest[b2], digest[b1], digest[b0], 4))
    out.append(_b64_from_24bit(0, 0, digest[63], 2))
    return "".join(out)


def _b64_from_24bit(b2: int, b1: int, b0: int, n: int) -> str:
    w = (b2 << 16) | (b1 << 8) | b0
    chars = []
    for _ in range(n):
        chars.append(_CRYPT_ALPHABET[w & 0x3F])
        w >>= 6
    return "".join(chars)
