"""Writing the config: the effective config as commented TOML, the generated reference table, and
the one in-place edit the appliance makes to a person's file (a clear-text password swapped for its hash).
"""

from __future__ import annotations

import codecs
import re
import tomllib
from pathlib import Path

from appliance.config.loading import decode_text
from appliance.config.schema import Config, describe_allowed, iter_keys
from appliance.storage.files import atomic_write_bytes


def to_toml(config: Config) -> str:
    """The effective config as a commented TOML file that ``load_config`` reads back unchanged."""
    lines = [f"# Effective appliance config (from {config.source}); every key, defaults included.", ""]
    current = None
    for section, f, value in iter_keys(config):
        if section != current:
            if current is not None:
                lines.append("")
            lines.append(f"[{section}]")
            current = section
        lines.append(f"# {f.metadata['doc']} Allowed: {describe_allowed(f)}.")
        if value is None:
            lines.append(f"# {f.name} = (unset)")
        else:
            lines.append(f"{f.name} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return '"' + re.sub(r"[\x00-\x08\x0a-\x1f\x7f]", _toml_escape, escaped) + '"'
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_value(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(type(value))


def _toml_escape(match) -> str:
    char = match.group()
    return {"\n": "\\n", "\r": "\\r"}.get(char, f"\\u{ord(char):04x}")


def replace_clear_text(text: str, section: str, key: str, hashed: str) -> str:
    """``text`` with ``KEY = "…"`` in ``[SECTION]`` replaced by ``KEY_hash = "HASHED"``; all else kept.

    Comments and the other lines stay as they were; an older ``KEY_hash`` line is dropped. Raises
    ``ValueError`` if the key is not on a line of its own, or the result would not read back as the
    same config with only that change."""
    hash_key = f"{key}_hash"
    lines, current, done = text.splitlines(keepends=True), None, False
    for i, line in enumerate(lines):
        header = re.match(r"\s*\[([^\]]+)\]", line)
        if header:
            current = header.group(1).strip()
        elif current == section and re.match(rf"\s*{re.escape(key)}\s*=", line):
            lines[i] = f"{hash_key} = {_toml_value(hashed)}\n"
            done = True
        elif current == section and re.match(rf"\s*{re.escape(hash_key)}\s*=", line):
            lines[i] = ""
    if not done:
        raise ValueError(f"no {key} line under [{section}]")
    rewritten = "".join(lines)
    expected = tomllib.loads(text)
    expected[section].pop(key)
    expected[section][hash_key] = hashed
    if tomllib.loads(rewritten) != expected:
        raise ValueError(f"{section}.{key} is not on a line of its own")
    return rewritten


def remove_clear_text(path: str | Path, section: str, key: str, hashed: str) -> None:
    """Rewrite the config file so ``[SECTION]`` holds ``KEY_hash`` in place of the clear-text ``KEY``.

    Raises ``OSError`` (a read-only boot partition) or ``ValueError`` (see ``replace_clear_text``; a
    file that is not UTF-8). A leading byte-order mark stays where it was."""
    path = Path(path)
    raw = path.read_bytes()
    bom = codecs.BOM_UTF8 if raw.startswith(codecs.BOM_UTF8) else b""
    rewritten = replace_clear_text(decode_text(raw, path), section, key, hashed)
    atomic_write_bytes(path, bom + rewritten.encode("utf-8"), mode=0o600)


def reference_markdown() -> str:
    """The config reference table for the README, generated from the dataclasses."""
    rows = ["| key | default | allowed | what it does |", "| --- | --- | --- | --- |"]
    for section, f, value in iter_keys():
        default = "(unset)" if value is None else _toml_value(value)
        rows.append(f"| `{section}.{f.name}` | `{default}` | {describe_allowed(f)} | {f.metadata['doc']} |")
    return "\n".join(rows) + "\n"
