"""A hostile or careless config file: nan, infinity, another text encoding, NUL characters, numbers of
hundreds of digits. Each is one ``ConfigError`` line naming the file and the key, never a traceback."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import typing
from pathlib import Path

import pytest
from conftest import REPO

from appliance.cli import main
from appliance.config import config_path, iter_keys, load_config, remove_clear_text
from appliance.config.schema import PATH_KEYS, SECTIONS
from appliance.errors import ConfigError

NOT_FINITE = ("nan", "inf", "-inf")


def write(tmp_path, text):
    path = tmp_path / "appliance.toml"
    path.write_text(text, encoding="utf-8")
    return path


def keys_of_kind(*kinds):
    """``section.key`` of every schema key whose type is one of ``kinds``: new keys are covered as they come."""
    return [f"{section}.{f.name}" for section, f, _ in iter_keys()
            if typing.get_type_hints(SECTIONS[section])[f.name] in kinds]


def keys_with(rule):
    return [f"{section}.{f.name}" for section, f, _ in iter_keys() if f.metadata.get(rule)]


FLOAT_KEYS = keys_of_kind(float, float | None)
INT_KEYS = [key for key in keys_of_kind(int) if key not in keys_with("size")]


def refused(tmp_path, key, value_toml) -> str:
    """Load a config setting ``key`` to ``value_toml``; the one-line ConfigError naming file and key."""
    section, name = key.split(".")
    path = write(tmp_path, f"[{section}]\n{name} = {value_toml}\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert_one_line_naming(error, path, key)
    return str(error.value)


def assert_one_line_naming(error, path, key):
    message = str(error.value)
    assert message.startswith(f"{path}: {key}: "), message
    assert "\n" not in message and ", allowed: " in message, message
    assert len(message) < 400, message  # a 400-digit value is not echoed whole


def test_the_walk_finds_the_keys_it_should():
    assert {"keep.min_score", "status.interval_s", "camera.fps", "system.hotspot_after_s"} <= set(FLOAT_KEYS)
    assert {"storage.quota_bytes", "storage.min_free_bytes", "keep.audit_budget_bytes"} <= set(keys_with("size"))
    assert ("model", "path") in PATH_KEYS and "model.top_k" in INT_KEYS


@pytest.mark.parametrize("key", FLOAT_KEYS)
@pytest.mark.parametrize("value", NOT_FINITE)
def test_every_float_key_refuses_nan_and_infinity(tmp_path, key, value):
    message = refused(tmp_path, key, value)
    assert value in message


@pytest.mark.parametrize("value", NOT_FINITE)
def test_a_per_label_minimum_score_refuses_nan_and_infinity(tmp_path, value):
    path = write(tmp_path, f'[keep]\nmin_score_by_label = {{ "*Owl*" = {value} }}\n')
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert_one_line_naming(error, path, "keep.min_score_by_label")


def test_nan_min_score_from_the_command_line_is_one_line_and_exit_two(tmp_path, capsys):
    path = write(tmp_path, "[keep]\nmin_score = nan\n")
    assert main(["config", "check", str(path)]) == 2
    assert capsys.readouterr().err == f"appliance: error: {path}: keep.min_score: nan is not a number, " \
                                      "allowed: a number from 0.0 to 1.0\n"


def test_a_config_saved_as_latin_1_names_the_line_and_says_to_save_it_as_utf_8(tmp_path, capsys):
    path = tmp_path / "appliance.toml"
    path.write_bytes('# from Notepad\n[system]\nhostname = "kamera-sør"\n'.encode("latin-1"))
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert "not UTF-8" in message and "line 3, column 21" in message and "0xf8" in message
    assert "save it as UTF-8" in message
    assert main(["config", "check", str(path)]) == 2
    assert capsys.readouterr().err == f"appliance: error: {message}\n"


def test_a_utf_8_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "appliance.toml"
    path.write_bytes('\ufeff[system]\nhostname = "kamera"\n'.encode("utf-8"))
    assert load_config(path).system.hostname == "kamera"


def test_a_clear_text_password_leaves_a_file_with_a_byte_order_mark_which_stays(tmp_path):
    path = tmp_path / "appliance.toml"
    path.write_bytes('\ufeff# Notepad\n[web]\npassword = "sør-1234"\n'.encode("utf-8"))
    remove_clear_text(path, "web", "password", "scrypt:hash")
    assert path.read_bytes() == '\ufeff# Notepad\n[web]\npassword_hash = "scrypt:hash"\n'.encode("utf-8")
    assert load_config(path).web.password_hash == "scrypt:hash"


@pytest.mark.parametrize("section, name", sorted(PATH_KEYS))
def test_a_nul_character_in_any_path_key_is_one_line(tmp_path, section, name):
    path = write(tmp_path, f'[{section}]\n{name} = "models/bird\\u0000.tflite"\n')
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert_one_line_naming(error, path, f"{section}.{name}")
    assert "NUL" in str(error.value)


@pytest.mark.parametrize("key", [f"{s}.{f.name}" for s, f, _ in iter_keys() if isinstance(f.default, str)])
def test_a_nul_character_in_any_string_key_is_refused(tmp_path, key):
    refused(tmp_path, key, '"a\\u0000b"')


@pytest.mark.parametrize("key", keys_with("size"))
@pytest.mark.parametrize("value", ["9" * 400, '"' + "9" * 400 + ' GB"', '"' + "9" * 400 + '.5 GB"'])
def test_a_size_of_hundreds_of_digits_is_one_line(tmp_path, key, value):
    refused(tmp_path, key, value)


@pytest.mark.parametrize("key", INT_KEYS)
def test_every_whole_number_key_refuses_hundreds_of_digits(tmp_path, key):
    refused(tmp_path, key, '9' * 400)


def test_the_largest_size_a_file_system_can_report_is_still_accepted(tmp_path):
    config = load_config(write(tmp_path, '[storage]\nquota_bytes = "8000000 TiB"\nmin_free_bytes = 9223372036854775807\n'))
    assert config.storage.quota_bytes == 8_000_000 * 2**40 and config.storage.min_free_bytes == 2**63 - 1
    path = write(tmp_path, '[storage]\nquota_bytes = "9000000 TiB"\n')
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert_one_line_naming(error, path, "storage.quota_bytes")


def test_more_digits_than_python_reads_is_a_config_error_not_a_traceback(tmp_path):
    path = write(tmp_path, f"[storage]\nquota_bytes = 1{'0' * 5000}\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value).startswith(f"{path}: ") and "\n" not in str(error.value)


@pytest.mark.parametrize("key", keys_with("secret"))
def test_a_long_secret_is_not_echoed_even_in_part_when_shortened(tmp_path, key):
    # A list where a string belongs; for a list of secrets (notify.urls), a table where a string belongs in it.
    message = refused(tmp_path, key, f'["{"s3cret" * 20}", {{ a = 1 }}]')
    assert "s3cret" not in message


# -- the config file kept from other users (it holds the camera's passwords and keys) ---------------------

def as_another_user(code: str) -> subprocess.CompletedProcess:
    """Python ``code`` run by a user who is not root and not in the file's group (root reads anything)."""
    prefix = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"] if os.geteuid() == 0 else []
    return subprocess.run([*prefix, sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)


@pytest.fixture
def secret_config():
    """A config file readable by its owner only, in a folder any user may enter (the boot partition's
    files are root:appliance-config 0640; its folders 0750)."""
    folder = Path(tempfile.mkdtemp(prefix="secret-config-"))
    folder.chmod(0o755)
    path = folder / "appliance.toml"
    path.write_text('[upload]\nendpoint = "http://127.0.0.1:1"\nbucket = "b"\naccess_key = "k"\nsecret_key = "s3cr3t"\n')
    path.chmod(0o600)
    yield path
    shutil.rmtree(folder)


def test_a_config_file_another_user_may_not_read_says_to_use_sudo_and_never_falls_back_to_the_defaults(
        secret_config):
    reading = as_another_user(f"from appliance.config import load_config\nload_config({str(secret_config)!r})")
    assert reading.returncode != 0 and "s3cr3t" not in reading.stderr
    assert (f"ConfigError: {secret_config}: cannot be read by this user: it holds the camera's passwords and keys, "
            "so only root and the appliance service may read it; run the command with sudo") in reading.stderr
    # The device's own file, in a folder this user may not enter: the commands' default is refused the same
    # way, not taken for "no file" (which would run on the built-in defaults).
    secret_config.parent.chmod(0o750)
    finding = as_another_user(f"from pathlib import Path\nfrom appliance.config import config_path\n"
                              f"print(config_path(None, Path({str(secret_config)!r})))")
    assert finding.returncode != 0 and "cannot be read by this user" in finding.stderr, finding
    assert config_path(None, secret_config) == secret_config  # root may
    assert config_path(None, secret_config.parent / "none.toml") is None  # no file: the defaults
    assert config_path("given.toml", secret_config) == Path("given.toml")
