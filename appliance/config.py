"""The appliance's one config file: TOML in, frozen dataclasses out.

Every key has a default, so an empty file is a valid config. Unknown keys, wrong types and values out
of range are a ``ConfigError`` that names the file, the key and what is allowed. Relative paths in
the file are taken relative to the file's own folder. Each field's metadata (``doc``, and ``choices``
or ``min``/``max`` where they apply) drives validation, ``appliance config show`` and the README's
config reference, so the three cannot drift apart.
"""

from __future__ import annotations

import base64
import dataclasses
import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path

from appliance.errors import ConfigError
from appliance.storage.files import atomic_write_bytes

DEVICE_CONFIG_PATH = Path("/boot/firmware/appliance.toml")


def _key(default, doc, **rules):
    """A config key: its default, one line of documentation, and its rules.

    Rules: ``choices``, ``min``, ``max``, ``size``; ``check``, a function that returns the value
    (perhaps normalised) or raises ``ValueError`` with the problem, with ``allowed`` saying in words
    what it accepts; ``secret``, so that errors never echo the value."""
    factory = {"default_factory": lambda: default} if isinstance(default, (dict, list)) else {"default": default}
    return field(metadata={"doc": doc, **rules}, **factory)


@dataclass(frozen=True)
class CameraConfig:
    backend: str = _key("picamera2", "Where frames come from: the Pi's camera, or a folder of images replayed as frames.",
                        choices=("picamera2", "replay"))
    fps: float = _key(5.0, "Frames per second asked of the camera; 0 replays as fast as the model keeps up.",
                      min=0.0, max=120.0)
    still_size: tuple[int, int] = _key((1920, 1080), "Width and height of the kept (main stream) image, in pixels.",
                                       min=64, max=9152)
    replay_dir: str = _key("/var/lib/appliance/replay", "Folder of images the replay camera plays (JPEG, PNG, BMP, WebP).")
    replay_loop: bool = _key(True, "Start again from the first image after the last one.")


@dataclass(frozen=True)
class ModelConfig:
    path: str = _key("/var/lib/appliance/models/mobilenet_v2_1.0_224_inat_bird_quant.tflite",
                     "The TFLite classifier to run (see models/catalog.toml and `appliance models list`).")
    labels: str = _key("", "A labels file; empty takes the labels embedded in the model.")
    num_threads: int = _key(0, "CPU threads for inference; 0 uses every core but one, which is left for capture and writing.", min=0, max=64)
    top_k: int = _key(5, "How many of the best labels each kept record stores.", min=1, max=100)
    accelerator: str = _key("cpu", "cpu runs on the CPU; coral requires the Edge TPU; auto uses it when it is there.",
                            choices=("cpu", "coral", "auto"))
    on_accelerator_missing: str = _key("fallback", "With accelerator = coral and no TPU: run on the CPU (fallback) or refuse to start (stop).",
                                       choices=("fallback", "stop"))
    edgetpu_path: str = _key("", "The Edge TPU build of the model; empty looks for NAME_edgetpu.tflite beside the model.")


@dataclass(frozen=True)
class KeepConfig:
    labels: tuple[str, ...] | None = _key(None, "Labels to keep: exact names or glob patterns such as \"*Owl*\"; unset takes the model's catalog rule, else [\"*\"].")
    ignore: tuple[str, ...] | None = _key(None, "Labels never kept (\"anything except\"); unset takes the model's catalog rule, else [].")
    min_score: float | None = _key(None, "Lowest score a target label needs; unset takes the model's catalog rule, else 0.5.",
                                   min=0.0, max=1.0)
    min_score_by_label: dict[str, float] = _key({}, "Per-label minimum scores: {\"PATTERN\" = SCORE}; the first matching pattern wins.",
                                                min=0.0, max=1.0)
    confirm_frames: int = _key(1, "A label must win this many of the last confirm_window frames before it is kept.", min=1, max=100)
    confirm_window: int = _key(1, "How many recent frames confirmation looks at.", min=1, max=100)
    cooldown_s: float = _key(0.0, "After keeping a label, do not keep the same label again for this long.", min=0.0, max=86400.0)
    max_per_minute: int = _key(0, "Keep at most this many frames in any minute; 0 means no cap.", min=0, max=100000)
    duplicate_max_distance: int = _key(-1, "Skip a keep whose image hash is within this many bits (of 64) of the last keep of its label; -1 turns it off.",
                                       min=-1, max=64)
    motion_gate: bool = _key(False, "Skip inference on frames that barely differ from the last classified one.")
    motion_min_change: float = _key(0.02, "Mean change (0-1) below which a frame counts as static for the motion gate.",
                                    min=0.0, max=1.0)
    audit_one_in: int = _key(0, "Keep 1 in this many discarded frames, marked audit, to measure misses later; 0 turns it off.",
                             min=0, max=1000000)
    audit_budget_bytes: int = _key(100_000_000, "Most bytes audit keeps may use on the card.", min=0, size=True)


@dataclass(frozen=True)
class StorageConfig:
    data_dir: str = _key("/var/lib/appliance/data", "Where kept images and the database live.")
    quota_bytes: int = _key(0, "Most bytes kept images may use; 0 means no quota (the free-space floor still applies).", min=0, size=True)
    min_free_bytes: int = _key(500_000_000, "Free space to leave on the data filesystem.", min=0, size=True)
    when_full: str = _key("stop", "At the quota or floor: stop keeping, or evict the oldest items even if not yet offloaded or synced (never starred ones).",
                          choices=("stop", "evict-oldest"))
    jpeg_quality: int = _key(90, "JPEG quality of kept images.", min=10, max=100)
    thumbnail_px: int = _key(320, "Longest side of each thumbnail, in pixels.", min=32, max=2048)
    writer_queue: int = _key(8, "Keeps waiting to be written before new keeps are dropped (and counted).", min=1, max=1000)
    after_offload: str = _key("keep", "After a USB offload: keep the images on the device, or delete those verified on the stick.",
                              choices=("keep", "delete"))


@dataclass(frozen=True)
class StatusConfig:
    runtime_dir: str = _key("/run/appliance", "Where live status is written; a tmpfs, never the SD card.")
    interval_s: float = _key(1.0, "How often live status is written.", min=0.1, max=60.0)


@dataclass(frozen=True)
class GpioConfig:
    enabled: str = _key("auto", "LEDs and buttons: auto uses them when the device has GPIO; on requires it; off never.",
                        choices=("auto", "on", "off"))
    pin_factory: str = _key("default", "default: the Pi's own pins (lgpio on Pi 5 and Bookworm); mock: gpiozero's MockFactory, for laptops and demos.",
                            choices=("default", "mock"))
    status_led: int = _key(17, "BCM pin of the green status LED (watching, paused, offloading).", min=0, max=27)
    keep_led: int = _key(27, "BCM pin of the white LED that flashes once per keep.", min=0, max=27)
    warning_led: int = _key(22, "BCM pin of the red warning LED (storage, faults, offload problems).", min=0, max=27)
    pause_button: int = _key(5, "BCM pin of the pause button (to ground): press to pause or resume, hold to shut down.", min=0, max=27)
    offload_button: int = _key(6, "BCM pin of the offload button (to ground): press to copy kept images to a USB stick.", min=0, max=27)
    hold_to_shutdown_s: float = _key(3.0, "How long the pause button is held to shut the device down safely.", min=1.0, max=30.0)
    fault_display_s: float = _key(30.0, "How long a fault's blink code shows before the appliance exits (systemd then restarts it).",
                                  min=0.0, max=600.0)
    rtc: bool = _key(False, "A DS3231 real-time clock is wired to I2C, so BCM 2 and 3 are reserved for it.")


@dataclass(frozen=True)
class WebConfig:
    host: str = _key("0.0.0.0", "Address the review page listens on; 0.0.0.0 is every network interface.")
    port: int = _key(80, "Port of the review page (80 on the device, so http://HOSTNAME.local/ works).", min=1, max=65535)
    password: str = _key("", "Password for the page and the sync API, in clear text: at first start it is hashed into password_hash and removed from this file.",
                         secret=True)
    password_hash: str = _key("", "The password's salted hash, written by the appliance; leave it empty and set password instead.",
                              secret=True)


# -- [system] checks: each returns the value, perhaps normalised, or raises ValueError(problem) -------

SSH_KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
                 "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com")


def _hostname(value: str) -> str:
    name = value.lower()  # host names are case-insensitive (RFC 1123); the device's is kept lower-case
    if not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", name):
        raise ValueError(f"{value!r} is not a host name")
    return name


def _timezone(value: str) -> str:
    # A path under /usr/share/zoneinfo, so no segment may be empty, "." or ".."
    if len(value) > 100 or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z][A-Za-z0-9_+-]*)*", value):
        raise ValueError(f"{value!r} is not a time zone name")
    return value


def _country(value: str) -> str:
    if value and not re.fullmatch(r"[A-Za-z]{2}", value):
        raise ValueError(f"{value!r} is not a two-letter country code")
    return value.upper()


def _ssid(value: str) -> str:
    if len(value.encode()) > 32:
        raise ValueError(f"{value!r} is {len(value.encode())} bytes long")
    return value


def _passphrase(value: str) -> str:
    is_key = re.fullmatch(r"[0-9A-Fa-f]{64}", value)
    is_text = 8 <= len(value) <= 63 and all(" " <= c <= "~" for c in value)
    if value and not (is_key or is_text):
        raise ValueError(f"the value ({len(value)} characters) is not a WPA passphrase")
    return value


def ssh_key_lines(text: str) -> list[str]:
    """The key lines of an authorized_keys text: stripped, without blank lines and # comments."""
    return [line.strip() for line in text.split("\n") if line.strip() and not line.strip().startswith("#")]


def _ssh_keys(value: str) -> str:
    for number, line in enumerate(ssh_key_lines(value), 1):
        kind, *rest = line.split()
        if kind not in SSH_KEY_TYPES:
            raise ValueError(f"key {number} starts with {kind[:40]!r}, not a key type")
        if not rest or not _names_key_type(rest[0], kind):
            raise ValueError(f"key {number} ({kind}) is damaged or cut short: copy the whole line of the .pub file")
    return value


def _names_key_type(blob: str, kind: str) -> bool:
    """An OpenSSH public key's base64 part is whole: length-prefixed fields, the first its own key type."""
    try:
        raw = base64.b64decode(blob, validate=True)
    except ValueError:
        return False
    fields, at = [], 0
    while at + 4 <= len(raw):
        length = int.from_bytes(raw[at:at + 4], "big")
        fields.append(raw[at + 4:at + 4 + length])
        at += 4 + length
    return at == len(raw) and len(fields) >= 2 and fields[0] == kind.encode()


def _login_password(value: str) -> str:
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("the value has a control character (a line break, a tab)")
    return value


def _crypt_hash(value: str) -> str:
    # Never a ':' or a line break: the hash goes into a field of /etc/shadow
    if value and not re.fullmatch(r"\$[0-9a-z]+\$[A-Za-z0-9./$=,]+", value):
        raise ValueError("the value is not a crypt(3) hash")
    return value


@dataclass(frozen=True)
class SystemConfig:
    hostname: str = _key("appliance", "The device's name on the network (http://HOSTNAME.local/); upper case is taken as lower case.",
                         check=_hostname, allowed="1 to 63 letters, digits and '-', not starting or ending with '-'")
    timezone: str = _key("UTC", "Time zone of the device's clock and logs, from the tz database.",
                         check=_timezone, allowed='a tz database name such as "Europe/Oslo" or "UTC"')
    wifi_country: str = _key("", "Country whose radio rules the Wi-Fi obeys; required with wifi_ssid.",
                             check=_country, allowed='"" or a two-letter ISO 3166 code such as "NO", "GB" or "US"')
    wifi_ssid: str = _key("", "The Wi-Fi network to join; empty turns Wi-Fi off (Ethernet still works).",
                          check=_ssid, allowed='"" or a name of 1 to 32 bytes')
    wifi_passphrase: str = _key("", "The network's WPA2 passphrase; only the key derived from it is written to the device; empty for an open network.",
                                check=_passphrase, secret=True,
                                allowed='"", 8 to 63 printable ASCII characters, or 64 hex digits (the key itself)')
    ssh_authorized_keys: str = _key("", "OpenSSH public keys that may log in as admin, one per line; SSH is on only when this is set.",
                                    check=_ssh_keys, allowed='"" or lines that each start with ' + ", ".join(SSH_KEY_TYPES))
    admin_password: str = _key("", "Password of admin, the console and SSH user, in clear text: `appliance system apply` hashes it into admin_password_hash and removes it from this file.",
                               check=_login_password, secret=True, allowed="a string without control characters")
    admin_password_hash: str = _key("", "The admin password's crypt(3) hash, written by the appliance; with both empty the password is left as it is.",
                                    check=_crypt_hash, secret=True, allowed='"" or a crypt(3) hash such as "$6$salt$hash"')

    @property
    def ssh_keys(self) -> list[str]:
        return ssh_key_lines(self.ssh_authorized_keys)


@dataclass(frozen=True)
class Config:
    camera: CameraConfig = field(default_factory=CameraConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    keep: KeepConfig = field(default_factory=KeepConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    status: StatusConfig = field(default_factory=StatusConfig)
    web: WebConfig = field(default_factory=WebConfig)
    gpio: GpioConfig = field(default_factory=GpioConfig)
    system: SystemConfig = field(default_factory=SystemConfig)
    source: str = field(default="<defaults>", compare=False)

    def replace(self, **sections) -> Config:
        """A copy with whole sections or single keys changed: ``replace(camera={"fps": 0})``."""
        changed = {}
        for name, value in sections.items():
            current = getattr(self, name)
            changed[name] = dataclasses.replace(current, **value) if isinstance(value, dict) else value
        return dataclasses.replace(self, **changed)


_SECTION_TYPES = {"camera": CameraConfig, "model": ModelConfig, "keep": KeepConfig,
                  "storage": StorageConfig, "status": StatusConfig, "web": WebConfig, "gpio": GpioConfig,
                  "system": SystemConfig}
PATH_KEYS = {("camera", "replay_dir"), ("model", "path"), ("model", "labels"), ("model", "edgetpu_path"),
             ("storage", "data_dir"), ("status", "runtime_dir")}

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
        if name not in _SECTION_TYPES:
            raise ConfigError(source, name, "unknown section", ", ".join(f"[{s}]" for s in _SECTION_TYPES))
        if not isinstance(values, dict):
            raise ConfigError(source, name, "must be a table", f"[{name}] with keys under it")
        sections[name] = _build_section(name, _SECTION_TYPES[name], values, source, base_dir)
    config = Config(**sections, source=str(source))
    check_pins(config.gpio, source)
    check_system(config.system, source)
    return config


PIN_KEYS = ("status_led", "keep_led", "warning_led", "pause_button", "offload_button")
I2C_PINS = (2, 3)  # SDA, SCL: the real-time clock's bus
ID_EEPROM_PINS = (0, 1)  # reserved on every Pi for HAT identification


def check_pins(gpio: GpioConfig, source) -> None:
    """Each LED and button on its own usable pin; the I2C pins left free when a clock uses them."""
    seen: dict[int, str] = {}
    for key in PIN_KEYS:
        pin = getattr(gpio, key)
        allowed = "a BCM pin from 2 to 27 that no other [gpio] key uses" + (", not 2 or 3 (rtc = true)" if gpio.rtc else "")
        if pin in ID_EEPROM_PINS:
            raise ConfigError(source, f"gpio.{key}", f"BCM {pin} is reserved for HAT identification", allowed)
        if gpio.rtc and pin in I2C_PINS:
            raise ConfigError(source, f"gpio.{key}", f"BCM {pin} is an I2C pin, used by the real-time clock (gpio.rtc = true)",
                              allowed)
        if pin in seen:
            raise ConfigError(source, f"gpio.{key}", f"BCM {pin} is already gpio.{seen[pin]}", allowed)
        seen[pin] = key


def check_system(system: SystemConfig, source) -> None:
    """Wi-Fi settings that only work together."""
    if system.wifi_ssid and not system.wifi_country:
        raise ConfigError(source, "system.wifi_country", "required when system.wifi_ssid is set (Wi-Fi channels and power are regulated per country)",
                          'a two-letter ISO 3166 code such as "NO", "GB" or "US"')
    if system.wifi_passphrase and not system.wifi_ssid:
        raise ConfigError(source, "system.wifi_passphrase", "set, but system.wifi_ssid is empty",
                          "set wifi_ssid too, or leave wifi_passphrase empty")


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
    kind = typing.get_type_hints(_owner(f))[f.name]
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


def _owner(f):
    for cls in _SECTION_TYPES.values():
        if f in dataclasses.fields(cls):
            return cls
    raise LookupError(f.name)


def describe_allowed(f) -> str:
    """What a key accepts, in words: used in errors and in the README's reference."""
    rules = f.metadata
    kind = typing.get_type_hints(_owner(f))[f.name]
    if "allowed" in rules:
        return rules["allowed"]
    if "choices" in rules:
        return " or ".join(f'"{c}"' for c in rules["choices"])
    names = {bool: "true or false", int: "a whole number", str: "a string", float: "a number",
             float | None: "a number", tuple[int, int]: "[WIDTH, HEIGHT]",
             tuple[str, ...] | None: "a list of strings", dict[str, float]: "a table of label = score",
             }
    text = 'a size: bytes, or a string such as "500 MB" or "2 GiB"' if rules.get("size") else names[kind]
    if "min" in rules and "max" in rules:
        text += f" from {rules['min']} to {rules['max']}"
    elif "min" in rules:
        text += f", at least {rules['min']}"
    return text


def iter_keys(config: Config | None = None):
    """Yield ``(section, field, value)`` for every key, in file order; values from ``config``."""
    config = config or Config()
    for section, cls in _SECTION_TYPES.items():
        for f in dataclasses.fields(cls):
            yield section, f, getattr(getattr(config, section), f.name)


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

    Raises ``OSError`` (a read-only boot partition) or ``ValueError`` (see ``replace_clear_text``)."""
    path = Path(path)
    atomic_write_bytes(path, replace_clear_text(path.read_text(), section, key, hashed).encode(), mode=0o600)


def reference_markdown() -> str:
    """The config reference table for the README, generated from the dataclasses."""
    rows = ["| key | default | allowed | what it does |", "| --- | --- | --- | --- |"]
    for section, f, value in iter_keys():
        default = "(unset)" if value is None else _toml_value(value)
        rows.append(f"| `{section}.{f.name}` | `{default}` | {describe_allowed(f)} | {f.metadata['doc']} |")
    return "\n".join(rows) + "\n"
