"""Reading the config: TOML in, checked values out, a ``ConfigError`` naming the file and the key otherwise.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
import typing
from pathlib import Path

from appliance.config.checks import check_pins, check_system
from appliance.config.schema import PATH_KEYS, SECTIONS, Config, section_of, describe_allowed
from appliance.errors import ConfigError

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_bytes(value) -> int:
    """``"500 MB"``, ``"2GiB"``, ``"0"`` or an int → a number of bytes; ``ValueError`` otherwise."""
    if isinstance(value, bool):
        raise ValueError(value)
    if isinstance(value, int):
        return value
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", str(value))
    if not match or match.group(2).upper() not in _UNITS:
        raise ValueError(value)
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def load_config(path: str | Path | None) -> Config:
    """Read and check a config file; ``None`` gives the built-in defaults."""
    if path is None:
        return Config()
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(path, None, "no such file", "a path to an existing TOML file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(path, None, f"not valid TOML ({e})") from None
    except OSError as e:
        raise ConfigError(path, None, f"cannot be read ({e.strerror})") from None
    return config_from_dict(data, source=path, base_dir=path.parent)


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
            problem = problem.replace(repr(value), "the value")
        raise ConfigError(source, key, problem, allowed)

    if rules.get("size"):
        try:
            value = parse_bytes(value)
        except ValueError:
            fail(f"{value!r} is not a size")
    elif kind is bool:
        if not isinstance(value, bool):
            fail(f"{value!r} is not true or false")
    elif kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail(f"{value!r} is not a whole number")
    elif kind in (float, float | None):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail(f"{value!r} is not a number")
        value = float(value)
    elif kind is str:
        if not isinstance(value, str):
            fail(f"{value!r} is not a string")
    elif kind == tuple[int, int]:
        if (not isinstance(value, list) or len(value) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
            fail(f"{value!r} is not [WIDTH, HEIGHT]")
        value = tuple(value)
    elif kind == (tuple[str, ...] | None):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            fail(f"{value!r} is not a list of strings")
        value = tuple(value)
    elif kind == dict[str, float]:
        if not isinstance(value, dict):
            fail(f"{value!r} is not a table of label = score")
        for label, score in value.items():
            if isinstance(score, bool) or not isinstance(score, (int, float)):
                fail(f"{label!r} = {score!r} is not a number")
        value = {label: float(score) for label, score in value.items()}
    else:  # pragma: no cover - a field type this loader does not know is a programming error
        raise TypeError(f"config field {key} has unsupported type {kind}")

    if "check" in rules:
        try:
            value = rules["check"](value)
        except ValueError as e:
            fail(str(e))
    if "choices" in rules and value not in rules["choices"]:
        fail(f"{value!r} is not allowed")
    for number in _numbers(value):
        if "min" in rules and number < rules["min"] or "max" in rules and number > rules["max"]:
            fail(f"{number!r} is out of range")
    return value


def _numbers(value):
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [value]
    if isinstance(value, tuple) and all(isinstance(v, int) for v in value):
        return list(value)
    if isinstance(value, dict):
        return list(value.values())
    return []
