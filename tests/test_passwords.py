"""Password hashes: made without the web framework, readable both ways with Werkzeug's own functions."""

from __future__ import annotations

import subprocess
import sys

from werkzeug.security import check_password_hash, generate_password_hash

from appliance.passwords import check_password, hash_password


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
