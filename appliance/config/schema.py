"""The config's schema: one frozen dataclass per section, each key with its default, its one line of
documentation and its rules; what a key accepts, in words.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path

from appliance.config.checks import (SSH_KEY_TYPES, ssh_key_lines, valid_country, valid_crypt_hash, valid_hostname,
                                     valid_login_password, valid_passphrase, valid_ssh_keys, valid_ssid, valid_tiles,
                                     valid_timezone, valid_broker_url, valid_endpoint, valid_topic_prefix,
                                     valid_bucket, valid_key_prefix, valid_quiet_hours, valid_deployment_time,
                                     valid_one_line)

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
    backend: str = _key("picamera2", "Where frames come from: a camera through picamera2 (a Raspberry Pi camera, a USB webcam), or a folder of images replayed as frames.",
                        choices=("picamera2", "replay"))
    index: int = _key(0, "Which camera, when several are connected: 0 is the first in picamera2's order (Raspberry Pi cameras before USB ones).",
                      min=0, max=15)
    fps: float = _key(5.0, "Frames per second asked of the camera; 0 lets it run free (up to 30 fps, slower in dim light) and replays as fast as the model keeps up.",
                      min=0.0, max=120.0)
    still_size: tuple[int, int] = _key((1920, 1080), "Width and height of the kept (main stream) image, in pixels.",
                                       min=64, max=9152)
    replay_dir: str = _key("/var/lib/appliance/replay", "Folder of images the replay camera plays (JPEG, PNG, BMP, WebP).")
    replay_loop: bool = _key(True, "Start again from the first image after the last one.")
    replay_repeat: int = _key(1, "Frames each replayed image is shown for, as a camera sees a subject that stays a while (the detector's tracks need detector.track_min_frames of them).",
                              min=1, max=1000)


_ONE_LINE = "one line of at most 200 characters"
_TIME = '"" or a quoted date and time with its UTC offset, such as "2026-05-01T08:00:00+02:00" (Z for UTC)'


@dataclass(frozen=True)
class DeploymentConfig:
    """Where and how the camera is set up: Camtrap DP's deployment, in each kept JPEG (EXIF GPS, XMP) and the exports."""
    id: str = _key("", "The deployment's identifier (Camtrap DP deploymentID), such as \"feeder-2026-05\"; empty: none.",
                   check=valid_one_line, allowed=_ONE_LINE)
    location_id: str = _key("", "An identifier of the place, the same for every deployment there (locationID).",
                            check=valid_one_line, allowed=_ONE_LINE)
    location_name: str = _key("", "A name of the place (locationName).", check=valid_one_line, allowed=_ONE_LINE)
    latitude: float | None = _key(None, "Latitude in decimal degrees, WGS84, south negative; set with longitude, it goes into each kept JPEG's GPS tags.",
                                  min=-90.0, max=90.0)
    longitude: float | None = _key(None, "Longitude in decimal degrees, WGS84, west negative.", min=-180.0, max=180.0)
    coordinate_uncertainty_m: int = _key(0, "Radius in metres of the smallest circle holding the place (coordinateUncertainty; larger for coordinates rounded to protect a species); 0: not given.",
                                         min=0, max=20_000_000)
    camera_height_m: float | None = _key(None, "Height of the camera above the ground, in metres.", min=0.0, max=100.0)
    camera_tilt_deg: float | None = _key(None, "Vertical angle of the camera: -90 facing down, 0 level, 90 facing up.", min=-90.0, max=90.0)
    camera_heading_deg: float | None = _key(None, "Direction the camera faces, degrees clockwise from north (90 east).", min=0.0, max=360.0)
    setup_by: str = _key("", "Who set the camera up: a person or an organisation (setupBy).", check=valid_one_line, allowed=_ONE_LINE)
    start: str = _key("", "When the deployment started, with its UTC offset; empty: not given.", check=valid_deployment_time, allowed=_TIME)
    end: str = _key("", "When it ended (after start); empty while the camera is still out.", check=valid_deployment_time, allowed=_TIME)


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
    labels: tuple[str, ...] | None = _key(None, "Labels to keep: exact names or glob patterns such as \"*Owl*\"; unset takes the model's catalog rule (a model the catalog does not know needs it set).")
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
class DetectorConfig:
    path: str = _key("", "A TFLite object detector (an SSD with TFLite_Detection_PostProcess, such as coco-ssd in `appliance models list`) that finds the subjects the classifier then names, each on its own crop; empty: none, the classifier sees the whole frame.")
    labels: str = _key("", "The detector's labels file; empty takes the catalog's beside the model, else those embedded in it.")
    targets: tuple[str, ...] = _key(("bird",), "The detector's labels whose boxes are classified, such as [\"bird\"]; [] takes every label.")
    min_score: float = _key(0.75, "Lowest detection score a box needs: on the shared photos 0.5 let a dragonfly through as a bird, 0.75 nothing that was not one.",
                            min=0.0, max=1.0)
    classify_crops: bool = _key(True, "Classify each box's square crop of the full image (the keep rule applies to the crop's label); false keeps boxes by the detector's label and score.")
    tiles: str = _key("", "Also run the detector on a grid of overlapping tiles of the full image, such as \"4x3\" (one inference a tile), to find subjects too small for the whole frame; empty: the whole frame only.",
                      check=valid_tiles, allowed='"" or COLSxROWS such as "4x3", 2 to 16 tiles')
    max_boxes: int = _key(4, "Most boxes classified in one frame, best first.", min=1, max=20)
    track_min_frames: int = _key(3, "Frames a track (one subject followed across frames) needs before it is kept; 1 keeps from its first frame.",
                                 min=1, max=100)
    track_min_share: float = _key(0.6, "Share of a track's summed crop scores its leading label needs before it is kept.", min=0.0, max=1.0)
    track_gap_s: float = _key(5.0, "A track ends after this long without a detection of it; so does every track when the frames' source changes (another replayed file).",
                              min=0.1, max=3600.0)
    best_per_track: int = _key(1, "Keeps a track may have standing: a later frame better by 0.1 or more replaces the worst of them.", min=1, max=100)


@dataclass(frozen=True)
class StorageConfig:
    data_dir: str = _key("/var/lib/appliance/data", "Where kept images and the database live.")
    quota_bytes: int = _key(0, "Most bytes kept images may use; 0 means no quota (the free-space floor still applies).", min=0, size=True)
    min_free_bytes: int = _key(500_000_000, "Free space to leave on the data filesystem.", min=0, size=True)
    when_full: str = _key("stop", "At the quota or floor: stop keeping, or evict the oldest items even if not yet offloaded or synced (never starred ones).",
                          choices=("stop", "evict-oldest"))
    best_per_label_per_day: int = _key(0, "Keep at most this many matches of each label per UTC day: a better keep replaces the worst, a worse one is not kept; 0 turns it off.",
                                       min=0, max=1_000_000)
    best_per_label: int = _key(0, "Keep at most this many matches of each label in all, the same way; 0 turns it off.", min=0, max=1_000_000)
    replace_not_taken_off: bool = _key(False, "A better keep may replace one not yet offloaded or synced; with false only items taken off are replaced, and while none of a label's N is, its new keeps are refused. Never a starred or relabelled item.")
    jpeg_quality: int = _key(90, "JPEG quality of kept images.", min=10, max=100)
    thumbnail_px: int = _key(320, "Longest side of each thumbnail, in pixels.", min=32, max=2048)
    writer_queue: int = _key(8, "Keeps waiting to be written before new keeps are dropped (and counted).", min=1, max=1000)
    after_offload: str = _key("keep", "After a USB offload: keep the images on the device, or delete those verified on the stick.",
                              choices=("keep", "delete"))


@dataclass(frozen=True)
class MqttConfig:
    url: str = _key("", "The MQTT broker, mqtt://HOST[:PORT] or mqtts://HOST[:PORT] (TLS); empty: no MQTT.",
                    check=valid_broker_url, allowed='"", mqtt://HOST[:PORT] or mqtts://HOST[:PORT]')
    username: str = _key("", "The broker user's name; empty: anonymous.")
    password: str = _key("", "The broker user's password.", secret=True)
    client_id: str = _key("", "The MQTT client id; empty: appliance-HOSTNAME.")
    topic_prefix: str = _key("appliance", "First levels of every topic: PREFIX/HOSTNAME/events and the rest.",
                             check=valid_topic_prefix, allowed="levels of letters, digits, '_' and '-' joined by '/'")
    qos: int = _key(1, "MQTT quality of service of every message: 1 (at least once) suits a queue that survives restarts.",
                    min=0, max=2)
    status_interval_s: float = _key(30.0, "How often the retained status message is published.", min=5.0, max=3600.0)
    discovery: bool = _key(True, "Announce the camera to Home Assistant (MQTT discovery).")
    discovery_prefix: str = _key("homeassistant", "Home Assistant's discovery prefix.", check=valid_topic_prefix,
                                 allowed="levels of letters, digits, '_' and '-' joined by '/'")
    ca_file: str = _key("", "With mqtts: a CA certificate file to trust; empty: the system's.")


@dataclass(frozen=True)
class UploadConfig:
    endpoint: str = _key("", "An S3-compatible object store, http(s)://HOST[:PORT] (SeaweedFS, Garage, MinIO, AWS); empty: no upload.",
                         check=valid_endpoint, allowed='"" or http(s)://HOST[:PORT]')
    bucket: str = _key("", "The bucket kept images go to (it must exist).", check=valid_bucket,
                       allowed='"" or 3-63 lower-case letters, digits, "." and "-"')
    region: str = _key("us-east-1", "The store's region (most S3-compatible stores take any).")
    access_key: str = _key("", "The access key id.", secret=True)
    secret_key: str = _key("", "The secret access key.", secret=True)
    prefix: str = _key("", "First part of every object key: PREFIX/HOSTNAME/YYYY/MM/DD/FILE.", check=valid_key_prefix,
                       allowed="path segments without '..' and no leading '/'")
    max_bytes_per_s: int = _key(0, "Bandwidth cap of uploads; 0: none.", min=0, size=True)
    evict_uploaded: bool = _key(True, "Retention treats an uploaded item as taken off the device (like a synced one), so it may give way first.")


@dataclass(frozen=True)
class NotifyConfig:
    urls: tuple[str, ...] = _key((), "Apprise URLs to notify (ntfy://, tgram://, mailtos://, json://…); [] turns notifications off.",
                                 secret=True)
    labels: tuple[str, ...] = _key(("*",), "Labels that notify: exact names or glob patterns such as \"*Owl*\".")
    min_score: float = _key(0.0, "Lowest score of a keep that notifies.", min=0.0, max=1.0)
    min_score_by_label: dict[str, float] = _key({}, "Per-label minimum scores: {\"PATTERN\" = SCORE}; the first matching pattern wins.",
                                                min=0.0, max=1.0)
    first_of_day: bool = _key(False, "Notify only the first keep of each label each day (the device's time zone).")
    cooldown_s: float = _key(300.0, "After notifying a label, do not notify it again for this long.", min=0.0, max=604800.0)
    quiet_hours: str = _key("", "HH:MM-HH:MM (the device's time zone) in which nothing is sent; kept notifications wait until it ends. Empty: none.",
                            check=valid_quiet_hours, allowed='"" or HH:MM-HH:MM such as "22:00-06:30"')
    attach_thumbnail: bool = _key(True, "Attach the keep's thumbnail where the service takes attachments.")


@dataclass(frozen=True)
class OutboxConfig:
    max_entries: int = _key(50_000, "Most messages and uploads waiting to be sent; past it the oldest notifications give way first, then MQTT events (counted and logged); uploads never.",
                            min=100, max=10_000_000)


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
    offload_button: int = _key(6, "BCM pin of the offload button (to ground): press to copy kept images to a USB stick, hold to open the hotspot.", min=0, max=27)
    hold_to_shutdown_s: float = _key(3.0, "How long the pause button is held to shut the device down safely.", min=1.0, max=30.0)
    hold_for_hotspot_s: float = _key(3.0, "How long the offload button is held to open the camera's hotspot (or, when it is open, to close it).",
                                     min=1.0, max=30.0)
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


@dataclass(frozen=True)
class SystemConfig:
    hostname: str = _key("appliance", "The device's name on the network (http://HOSTNAME.local/); upper case is taken as lower case.",
                         check=valid_hostname, allowed="1 to 63 letters, digits and '-', not starting or ending with '-'")
    timezone: str = _key("UTC", "Time zone of the device's clock and logs, from the tz database.",
                         check=valid_timezone, allowed='a tz database name such as "Europe/Oslo" or "UTC"')
    wifi_country: str = _key("", "Country whose radio rules the Wi-Fi obeys; required with wifi_ssid.",
                             check=valid_country, allowed='"" or a two-letter ISO 3166 code such as "NO", "GB" or "US"')
    wifi_ssid: str = _key("", "The Wi-Fi network to join; empty turns Wi-Fi off (Ethernet still works).",
                          check=valid_ssid, allowed='"" or a name of 1 to 32 bytes')
    wifi_passphrase: str = _key("", "The network's WPA2 passphrase; only the key derived from it is written to the device; empty for an open network.",
                                check=valid_passphrase, secret=True,
                                allowed='"", 8 to 63 printable ASCII characters, or 64 hex digits (the key itself)')
    hotspot_passphrase: str = _key("", "WPA2 passphrase of the camera's own Wi-Fi hotspot (network name: the hostname), opened when no network is up; empty: no hotspot.",
                                   check=valid_passphrase, secret=True,
                                   allowed='"", 8 to 63 printable ASCII characters, or 64 hex digits (the key itself)')
    hotspot_after_s: float = _key(45.0, "How long no network may be up (after boot, or after a network was lost) before the hotspot opens.",
                                  min=10.0, max=3600.0)
    hotspot_retry_s: float = _key(300.0, "While the hotspot is open, how often the Wi-Fi network of wifi_ssid is tried again (not while a device is connected to the hotspot).",
                                  min=60.0, max=86400.0)
    ssh_authorized_keys: str = _key("", "OpenSSH public keys that may log in as admin, one per line; SSH is on only when this is set.",
                                    check=valid_ssh_keys, allowed='"" or lines that each start with ' + ", ".join(SSH_KEY_TYPES))
    admin_password: str = _key("", "Password of admin, the console and SSH user, in clear text: `appliance system apply` hashes it into admin_password_hash and removes it from this file.",
                               check=valid_login_password, secret=True, allowed="a string without control characters")
    admin_password_hash: str = _key("", "The admin password's crypt(3) hash, written by the appliance; with both empty the password is left as it is.",
                                    check=valid_crypt_hash, secret=True, allowed='"" or a crypt(3) hash such as "$6$salt$hash"')

    @property
    def ssh_keys(self) -> list[str]:
        return ssh_key_lines(self.ssh_authorized_keys)


@dataclass(frozen=True)
class Config:
    camera: CameraConfig = field(default_factory=CameraConfig)
    deployment: DeploymentConfig = field(default_factory=DeploymentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    keep: KeepConfig = field(default_factory=KeepConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    upload: UploadConfig = field(default_factory=UploadConfig)
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    outbox: OutboxConfig = field(default_factory=OutboxConfig)
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


SECTIONS = {"camera": CameraConfig, "deployment": DeploymentConfig, "model": ModelConfig, "keep": KeepConfig,
            "detector": DetectorConfig, "storage": StorageConfig, "mqtt": MqttConfig, "upload": UploadConfig,
            "notify": NotifyConfig, "outbox": OutboxConfig, "status": StatusConfig, "web": WebConfig, "gpio": GpioConfig,
            "system": SystemConfig}
PATH_KEYS = {("camera", "replay_dir"), ("model", "path"), ("model", "labels"), ("model", "edgetpu_path"),
             ("detector", "path"), ("detector", "labels"), ("mqtt", "ca_file"),
             ("storage", "data_dir"), ("status", "runtime_dir")}


def section_of(f):
    for cls in SECTIONS.values():
        if f in dataclasses.fields(cls):
            return cls
    raise LookupError(f.name)


def describe_allowed(f) -> str:
    """What a key accepts, in words: used in errors and in the README's reference."""
    rules = f.metadata
    kind = typing.get_type_hints(section_of(f))[f.name]
    if "allowed" in rules:
        return rules["allowed"]
    if "choices" in rules:
        return " or ".join(f'"{c}"' for c in rules["choices"])
    names = {bool: "true or false", int: "a whole number", str: "a string", float: "a number",
             float | None: "a number", tuple[int, int]: "[WIDTH, HEIGHT]",
             tuple[str, ...] | None: "a list of strings", tuple[str, ...]: "a list of strings", dict[str, float]: "a table of label = score",
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
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            yield section, f, getattr(getattr(config, section), f.name)
