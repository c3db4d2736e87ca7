"""Password hashes: made without the web framework, readable both ways with Werkzeug's own functions."""

from __future__ import annotations

import subprocess
import sys

import pytest
from werkzeug.security import check_password_hash, generate_password_hash

from appliance.passwords import check_password, crypt_sha512, hash_password


def test_a_hash_made_here_is_checked_by_werkzeug_and_by_us():
    password_hash = hash_password("s3cret page")
    assert password_hash.startswith("scrypt:32768:8:1$")
    assert check_password_hash(password_hash, "s3cret page") and check_password(password_hash, "s3cret page")
    assert not check_password_hash(password_hash, "s3cret pagE") and not check_password(password_hash, "s3cret pagE")


def test_hashes_made_by_werkzeug_before_are_still_accepted():
    for method in ("scrypt", "pbkdf2:sha256:1000"):
        password_hash = generate_password_hash("old password", method=method)
        assert check_password(password_hash, "old password"), method
        assert not check_password(password_hash, "old passwort"), method


def test_a_hash_it_cannot_read_is_a_refusal_not_a_crash():
    for garbage in ("", "plain", "md5$salt$abc", "scrypt:x:y:z$salt$abc", "pbkdf2:nohash:10$s$ab"):
        assert check_password(garbage, "anything") is False


def test_the_boot_time_settings_hash_passwords_without_importing_flask_or_werkzeug():
    code = ("import sys, appliance.system.settings, appliance.passwords as p; p.hash_password('x'); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'flask', 'werkzeug'}))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"


# Drepper's "Unix crypt using SHA-256 and SHA-512", its SHA-512 test vectors.
SPEC_VECTORS = [
    ("$6$saltstring", "Hello world!",
     "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"),
    ("$6$rounds=10000$saltstringsaltstring", "Hello world!",
     "$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v."),
    ("$6$rounds=1400$anotherlongsaltstring", "a very much longer text to encrypt.  This one even stretches over morethan one line.",
     "$6$rounds=1400$anotherlongsalts$POfYwTEok97VWcjxIiSOjiykti.o/pQs.wPvMxQ6Fm7I6IoYN3CmLs66x9t0oSwbtEW7o7UmJEiDwGqd8p4ur1"),
    ("$6$rounds=10$roundstoolow", "the minimum number is still observed",
     "$6$rounds=1000$roundstoolow$kUMsbe306n21p9R.FRkW3IGn.S9NPN0x50YhH1xhLsPuWGsUSklZt58jaTfF4ZEQpyUNGc0dqbpBYYBaHHrsX."),
    # Not in the spec: an empty password, as glibc's crypt(3) hashes it (openssl refuses to).
    ("$6$abcdefgh", "",
     "$6$abcdefgh$v7sYNA18/BerGOYQLppYLyjH4yJilp8kqe/ef3KYMK9hOIdzH1yzcmP74Ay.m51y1jP3QqxM7Jl75S4CxDhBq."),
]


@pytest.mark.parametrize("salt, password, expected", SPEC_VECTORS, ids=["default rounds", "rounds 10000", "long key",
                                                                         "rounds too low", "empty password"])
def test_the_admin_password_hash_is_sha512_crypt_as_the_spec_gives_it(salt, password, expected):
    assert crypt_sha512(password, salt) == expected
    assert crypt_sha512(password, expected) == expected  # a full hash re-hashes with its own salt and rounds


@pytest.mark.parametrize("password", ["x", "hunter2-console", "æøå € 🐦", "p" * 64, "q" * 65, "long " * 40])
def test_a_new_admin_hash_is_what_openssl_computes_for_its_salt(password):
    made = crypt_sha512(password)
    salt = made.split("$")[2]
    assert made.startswith("$6$") and len(salt) == 16
    openssl = subprocess.run(["openssl", "passwd", "-6", "-salt", salt, "-stdin"], input=password + "\n",
                             capture_output=True, text=True, check=True).stdout.strip()
    assert made == openssl


def test_another_methods_hash_is_not_guessed_at():
    assert crypt_sha512("pw", "$y$j9T$abc$def") is None and crypt_sha512("pw", "$1$abc$def") is None
