"""Reading the config: TOML in, checked values out, a ``ConfigError`` naming the file and the key otherwise.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
import typing
from fractions import Fraction
from pathlib import Path

from appliance.config.checks import check_deployment, check_links, check_pins, check_storage, check_system
from appliance.config.schema import DEVICE_CONFIG_PATH, PATH_KEYS, SECTIONS, Config, section_of, describe_allowed
from appliance.errors import ConfigError

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
MAX_SIZE_BYTES = 2**63 - 1  # the most a file system (off_t) or SQLite (INTEGER) can count
_SHOWN_CHARS = 40  # a longer value is shortened in errors: a 400-digit number must not flood the line


def parse_bytes(value) -> int:
    """``"500 MB"``, ``"2GiB"``, ``"0"`` or an int → a number of bytes; ``ValueError`` otherwise."""
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, int):
        return value
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", str(value))
    if not match or match.group(2).upper() not in _UNITS:
        raise ValueError(value)
    # Exact, not float: "1e400" bytes must stay a (too large) number, not become infinity
    return int(Fraction(match.group(1)) * _UNITS[match.group(2).upper()])


NOT_READABLE = ("cannot be read by this user: it holds the camera's passwords and keys, so only root and the "
                "appliance service may read it; run the command with sudo")


def config_path(given: str | Path | None, device_path: Path = DEVICE_CONFIG_PATH) -> Path | None:
    """The config file a command reads: ``given`` (its ``--config``), else the boot partition's
    ``appliance.toml`` if there is one, else None (the built-in defaults). On the device that file is
    readable by root and the service only: another user gets a ``ConfigError`` saying so, never the
    defaults in its place."""
    if given:
        return Path(given)
    try:
        device_path.stat()
    except PermissionError:
        raise ConfigError(device_path, None, NOT_READABLE) from None
    except OSError:
        return None
    return device_path


def load_config(path: str | Path | None) -> Config:
    """Read and check a config file; ``None`` gives the built-in defaults."""
    if path is None:
        return Config()
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(path, None, "no such file", "a path to an existing TOML file") from None
    except PermissionError:
        raise ConfigError(path, None, NOT_READABLE) from None
    except OSError as e:
        raise ConfigError(path, None, f"cannot be read ({e.strerror})") from None
    text = decode_text(raw, path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(path, None, f"not valid TOML ({e})") from None
    except ValueError as e:  # tomllib lets Python's own limits through: a number of over 4300 digits
        raise ConfigError(path, None, f"not valid TOML ({str(e).split(':')[0]})") from None
    return config_from_dict(data, source=path, base_dir=path.parent)


def decode_text(raw: bytes, path) -> str:
    """The config file's bytes as text: UTF-8 (as TOML requires), a leading byte-order mark dropped.

    Anything else (a Windows editor's Latin-1 or "ANSI") is a ``ConfigError`` saying where the first
    byte that is not UTF-8 is, and how to fix it."""
    try:
        return raw.decode("utf-8").removeprefix("\ufeff")  # Notepad's BOM: harmless, but not TOML
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        line_start = raw.rfind(b"\n", 0, e.start) + 1
        column = len(raw[line_start:e.start].decode("utf-8")) + 1  # what came before the byte is UTF-8
        raise ConfigError(path, None, f"not UTF-8 text: byte 0x{raw[e.start]:02x} at line {line}, column {column} "
                          "(perhaps saved as Latin-1 or Windows ANSI); save it as UTF-8 "
                          "(in Notepad: Save As, Encoding: UTF-8)") from None


def config_from_dict(data: dict, source="<dict>", base_dir: Path | None = None) -> Config:
    """Check a dict shaped like the TOML file and build a ``Config`` from it."""
    sections = {}
    for name, values in data.items():
        if name not in SECTIONS:
            raise ConfigError(source, name, "unknown section", ", ".join(f"[{s}]" for s in SECTIONS))
        if not isinstance(values, dict):
            raise ConfigError(source, name, "must be a table", f"[{name}] with keys under it")
        sections[name] = _build_section(name, SECTIONS[name], values, source, base_dir)
    config = Config(**sections, source=str(source))
    check_pins(config.gpio, source)
    check_system(config.system, source)
    check_storage(config.storage, source)
    check_deployment(config.deployment, source)
    check_links(config, source)
    return config


def _build_section(section, cls, values, source, base_dir):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        dotted = f"{section}.{key}"
        if key not in fields:
            raise ConfigError(source, dotted, "unknown key", ", ".join(fields))
        value = _check_value(dotted, fields[key], value, source)
        if (section, key) in PATH_KEYS and value and base_dir is not None:
            value = str((base_dir / value).resolve()) if not Path(value).is_absolute() else value
        kwargs[key] = value
    return cls(**kwargs)


def _check_value(key, f, value, source):
    rules = f.metadata
    kind = typing.get_type_hints(section_of(f))[f.name]
    allowed = describe_allowed(f)

    def fail(problem):
        if rules.get("secret"):  # a password must not reach a log through its error message
            for text in (repr(value), _shown(value)):
                problem = problem.replace(text, "the value")
        raise ConfigError(source, key, problem, allowed)

    shown = _shown(value)
    if rules.get("size"):
        try:
            value = parse_bytes(value)
        except ValueError:
            fail(f"{shown} is not a size")
        if value > MAX_SIZE_BYTES:
            fail(f"{shown} is more bytes than a file system can hold")
    elif kind is bool:
        if not isinstance(value, bool):
            fail(f"{shown} is not true or false")
    elif kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail(f"{shown} is not a whole number")
    elif kind in (float, float | None):
        try:
            value = _number(value)
        except ValueError as e:
            fail(f"{shown} is {e}")
    elif kind is str:
        if not isinstance(value, str):
            fail(f"{shown} is not a string")
        if "\0" in value:  # no file name, host name or password holds one; os calls refuse it
            fail("the value has a NUL character (\\u0000)")
    elif kind == tuple[int, int]:
        if (not isinstance(value, list) or len(value) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
            fail(f"{shown} is not [WIDTH, HEIGHT]")
        value = tuple(value)
    elif kind in (tuple[str, ...] | None, tuple[str, ...]):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            fail(f"{shown} is not a list of strings")
        value = tuple(value)
    elif kind == dict[str, float]:
        if not isinstance(value, dict):
            fail(f"{shown} is not a table of label = score")
        scores = {}
        for label, score in value.items():
            try:
                scores[label] = _number(score)
            except ValueError as e:
                fail(f"{_shown(label)} = {_shown(score)} is {e}")
        value = scores
    else:  # pragma: no cover - a field type this loader does not know is a programming error
        raise TypeError(f"config field {key} has unsupported type {kind}")

    if "check" in rules:
        try:
            value = rules["check"](value)
        except ValueError as e:
            fail(str(e))
    if "choices" in rules and value not in rules["choices"]:
        fail(f"{shown} is not allowed")
    for number in _numbers(value):
        # nan compares false with everything, so the bounds alone would let it through (and a
        # min_score of nan keep every frame); no key means "forever" by infinity either
        if isinstance(number, float) and math.isnan(number):
            fail("nan is not a number")
        if ("min" in rules and number < rules["min"] or "max" in rules and number > rules["max"]
                or isinstance(number, float) and math.isinf(number)):
            fail(f"{_shown(number)} is out of range")
    return value


def _shown(value) -> str:
    """``repr(value)``, shortened in the middle when long: errors stay one readable line."""
    text = repr(value)
    if len(text) <= _SHOWN_CHARS:
        return text
    unit = "digits" if isinstance(value, int) else "characters"
    return f"{text[:_SHOWN_CHARS // 2]}…{text[-_SHOWN_CHARS // 2:]} ({len(text)} {unit})"


def _number(value) -> float:
    """A TOML int or float as a float; ``ValueError(what it is instead)`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("not a number")
    try:
        return float(value)
    except OverflowError:  # an int of hundreds of digits
        raise ValueError("out of range") from None


def _numbers(value):
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [value]
    if isinstance(value, tuple) and all(isinstance(v, int) for v in value):
        return list(value)
    if isinstance(value, dict):
        return list(value.values())
    return []
