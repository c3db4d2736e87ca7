"""Checks that need more than a type and a range: [system] values (host name, time zone, Wi-Fi, SSH
keys, password hashes), pins that must not collide, Wi-Fi keys that only work together, best-N limits
that must leave room for each other, a deployment's times and coordinates.

A value check returns the value, perhaps normalised, or raises ``ValueError(problem)``; the loader
turns that into a ``ConfigError`` naming the file and the key.
"""

from __future__ import annotations

import base64
import re
from datetime import datetime
from typing import TYPE_CHECKING

from appliance.errors import ConfigError

if TYPE_CHECKING:  # annotations only: the schema imports these checks
    from appliance.config.schema import DeploymentConfig, GpioConfig, StorageConfig, SystemConfig

SSH_KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
                 "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com")


def valid_hostname(value: str) -> str:
    name = value.lower()  # host names are case-insensitive (RFC 1123); the device's is kept lower-case
    if not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", name):
        raise ValueError(f"{value!r} is not a host name")
    return name


def valid_timezone(value: str) -> str:
    # A path under /usr/share/zoneinfo, so no segment may be empty, "." or ".."
    if len(value) > 100 or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z][A-Za-z0-9_+-]*)*", value):
        raise ValueError(f"{value!r} is not a time zone name")
    return value


def valid_country(value: str) -> str:
    if value and not re.fullmatch(r"[A-Za-z]{2}", value):
        raise ValueError(f"{value!r} is not a two-letter country code")
    return value.upper()


def valid_ssid(value: str) -> str:
    if len(value.encode()) > 32:
        raise ValueError(f"{value!r} is {len(value.encode())} bytes long")
    return value


def valid_passphrase(value: str) -> str:
    is_key = re.fullmatch(r"[0-9A-Fa-f]{64}", value)
    is_text = 8 <= len(value) <= 63 and all(" " <= c <= "~" for c in value)
    if value and not (is_key or is_text):
        raise ValueError(f"the value ({len(value)} characters) is not a WPA passphrase")
    return value


def ssh_key_lines(text: str) -> list[str]:
    """The key lines of an authorized_keys text: stripped, without blank lines and # comments."""
    return [line.strip() for line in text.split("\n") if line.strip() and not line.strip().startswith("#")]


def valid_ssh_keys(value: str) -> str:
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


def valid_tiles(value: str) -> str:
    """A grid of detector tiles, ``COLSxROWS`` such as ``4x3``, normalised; "" for none."""
    if not value.strip():
        return ""
    from appliance.pipeline.detections import parse_grid  # numpy only; imported late, the schema loads first

    cols, rows = parse_grid(value)
    return f"{cols}x{rows}"


def valid_broker_url(value: str) -> str:
    """An MQTT broker's URL: ``mqtt://HOST[:PORT]`` or ``mqtts://HOST[:PORT]``, no user or path; "" for none."""
    if not value:
        return value
    from urllib.parse import urlsplit

    try:
        url = urlsplit(value)
        port = url.port
    except ValueError:
        raise ValueError(f"{value!r} is not a URL") from None
    if url.scheme not in ("mqtt", "mqtts") or not url.hostname:
        raise ValueError(f"{value!r} is not mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
    if url.username or url.password:
        raise ValueError("the URL holds a user name or password: give them as mqtt.username and mqtt.password")
    if url.path not in ("", "/") or url.query or url.fragment:
        raise ValueError(f"{value!r} has a path, query or fragment: a broker URL is only scheme, host and port")
    if port == 0:
        raise ValueError(f"{value!r} has port 0")
    return value


def valid_endpoint(value: str) -> str:
    """An S3-compatible store's endpoint: ``http(s)://HOST[:PORT]``; "" for none."""
    if not value:
        return value
    from urllib.parse import urlsplit

    try:
        url = urlsplit(value)
        url.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValueError(f"{value!r} is not a URL") from None
    if url.scheme not in ("http", "https") or not url.hostname or url.username or url.query or url.fragment:
        raise ValueError(f"{value!r} is not http(s)://HOST[:PORT]")
    return value.rstrip("/")


def valid_topic_prefix(value: str) -> str:
    """An MQTT topic prefix: levels of letters, digits, '_' and '-', joined by '/'."""
    if not re.fullmatch(r"[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*", value):
        raise ValueError(f"{value!r} is not a topic prefix")
    return value


def valid_bucket(value: str) -> str:
    """An S3 bucket name (3-63 lower-case letters, digits, '.', '-'); "" for none."""
    if value and not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", value):
        raise ValueError(f"{value!r} is not a bucket name")
    return value


def valid_key_prefix(value: str) -> str:
    """An object key prefix: "" or path segments without '..', no leading '/'."""
    if value.startswith("/") or ".." in value.split("/") or "\\" in value or any(ord(c) < 32 for c in value):
        raise ValueError(f"{value!r} is not a key prefix")
    return value.strip("/")


def valid_quiet_hours(value: str) -> str:
    """``HH:MM-HH:MM`` (may cross midnight), or "" for none."""
    if value and not re.fullmatch(r"([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-3]):[0-5]\d", value):
        raise ValueError(f"{value!r} is not HH:MM-HH:MM")
    return value


def valid_login_password(value: str) -> str:
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("the value has a control character (a line break, a tab)")
    return value


def valid_crypt_hash(value: str) -> str:
    # Never a ':' or a line break: the hash goes into a field of /etc/shadow
    if value and not re.fullmatch(r"\$[0-9a-z]+\$[A-Za-z0-9./$=,]+", value):
        raise ValueError("the value is not a crypt(3) hash")
    return value


def valid_one_line(value: str) -> str:
    """A name or an identifier: one line of at most 200 characters (it goes into CSV cells and XMP)."""
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("the value has a control character (a line break, a tab)")
    if len(value) > 200:
        raise ValueError(f"the value is {len(value)} characters long")
    return value.strip()


def valid_deployment_time(value: str) -> str:
    """An ISO 8601 date and time with its UTC offset, to the second (as Camtrap DP takes it); "" for none."""
    if not value:
        return value
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"{value!r} is not an ISO 8601 date and time") from None
    if moment.utcoffset() is None:
        raise ValueError(f"{value!r} has no UTC offset (add one, such as +02:00, or Z for UTC)")
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


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
    if system.hotspot_passphrase and not system.wifi_country:
        raise ConfigError(source, "system.wifi_country", "required when system.hotspot_passphrase is set (the hotspot is a Wi-Fi transmitter)",
                          'a two-letter ISO 3166 code such as "NO", "GB" or "US"')
    if system.wifi_passphrase and not system.wifi_ssid:
        raise ConfigError(source, "system.wifi_passphrase", "set, but system.wifi_ssid is empty",
                          "set wifi_ssid too, or leave wifi_passphrase empty")


def check_links(config, source) -> None:
    """Keys of one link that only work together."""
    upload = config.upload
    if upload.endpoint and not upload.bucket:
        raise ConfigError(source, "upload.bucket", "must be set with upload.endpoint", "the bucket's name")
    if upload.endpoint and bool(upload.access_key) != bool(upload.secret_key):
        raise ConfigError(source, "upload.secret_key", "upload.access_key and upload.secret_key go together",
                          "both, or neither (the store then takes anonymous requests)")
    mqtt = config.mqtt
    if mqtt.password and not mqtt.username:
        raise ConfigError(source, "mqtt.username", "must be set with mqtt.password", "the broker user's name")


def check_storage(storage: StorageConfig, source) -> None:
    """An overall best-N limit that leaves room for the per-day one."""
    per_day, overall = storage.best_per_label_per_day, storage.best_per_label
    if per_day and overall and overall < per_day:
        raise ConfigError(source, "storage.best_per_label",
                          f"{overall} is fewer than storage.best_per_label_per_day ({per_day}), which could then never be reached",
                          f"0 (no overall limit) or at least {per_day}")


_TIME_EXAMPLE = 'a date and time with its UTC offset, such as "2026-05-01T08:00:00+02:00"'


def check_deployment(deployment: DeploymentConfig, source) -> None:
    """Coordinates that come in pairs, and an end after the start."""
    has_lat, has_lon = deployment.latitude is not None, deployment.longitude is not None
    if has_lat != has_lon:
        missing = "longitude" if has_lat else "latitude"
        raise ConfigError(source, f"deployment.{missing}", f"must be set with deployment.{'latitude' if has_lat else 'longitude'}",
                          "both in decimal degrees (WGS84), or neither")
    if deployment.coordinate_uncertainty_m and not has_lat:
        raise ConfigError(source, "deployment.coordinate_uncertainty_m", "set, but the deployment has no latitude and longitude",
                          "set them too, or leave it 0")
    if deployment.end and not deployment.start:
        raise ConfigError(source, "deployment.start", "must be set with deployment.end", _TIME_EXAMPLE)
    if deployment.end and datetime.fromisoformat(deployment.end) <= datetime.fromisoformat(deployment.start):
        raise ConfigError(source, "deployment.end", f"{deployment.end} is not after deployment.start ({deployment.start})",
                          "a later date and time, or \"\" while the camera is still out")
