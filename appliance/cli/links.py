"""``appliance links`` (the outbox drained to MQTT, the object store and notifications) and ``appliance fleet``."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

from appliance.cli import add_command
from appliance.config import DEVICE_CONFIG_PATH, Config, config_path, load_config
from appliance.config.checks import valid_broker_url, valid_topic_prefix
from appliance.errors import ConfigError


def register(subparsers):
    links = add_command(subparsers, "links", links_command)
    links.add_argument("--config", type=Path, default=None, metavar="FILE",
                       help=f"the config file (default: {DEVICE_CONFIG_PATH}, if it exists)")
    fleet = add_command(subparsers, "fleet", fleet_command)
    fleet.add_argument("--broker", required=True, metavar="URL", help="mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
    fleet.add_argument("--prefix", default="appliance", help="the cameras' mqtt.topic_prefix (default: appliance)")
    fleet.add_argument("--username", default="", help="the broker user's name")
    fleet.add_argument("--password", default="", help="the broker user's password")
    fleet.add_argument("--wait", type=float, default=2.0, metavar="S",
                       help="how long to collect the cameras' retained messages (default: 2 s)")
    fleet.add_argument("--json", action="store_true", help="one JSON object per camera")


def links_command(args) -> int:
    """Send what the camera queued: MQTT events and status, uploads, notifications (a service).

    Each keep is queued in the appliance's database for each link the config turns on ([mqtt] url,
    [upload] endpoint, [notify] urls). This process sends what is queued through each link that is up,
    keeps what it could not send for later (days offline are fine), and writes each link's state
    (connected, last success, queue depth) to links.json in status.runtime_dir, which the status page
    shows. appliance-links.service runs it on the device; it exits at once when no link is configured.

    Example:
        appliance links --config /boot/firmware/appliance.toml
    """
    from appliance.links.service import LinksService

    path = config_path(args.config)
    config = load_config(path) if path else Config()
    service = LinksService(config)
    if not service.links:
        service.close()
        print("appliance links: no link configured ([mqtt] url, [upload] endpoint, [notify] urls): nothing to do",
              file=sys.stderr)
        return 0
    signal.signal(signal.SIGTERM, lambda *_: service.stop())
    signal.signal(signal.SIGINT, lambda *_: service.stop())
    service.run()
    return 0


def fleet_command(args) -> int:
    """List every camera reporting to a broker: name, online, last keep, keeps today, storage, outbox.

    Reads the retained status and availability messages the cameras publish under PREFIX/+/status and
    PREFIX/+/available for --wait seconds.

    Example:
        appliance fleet --broker mqtt://broker.local
    """
    for key, check, value in (("--broker", valid_broker_url, args.broker), ("--prefix", valid_topic_prefix, args.prefix)):
        try:
            check(value)
        except ValueError as e:
            raise ConfigError("appliance fleet", key, str(e), "mqtt://HOST[:PORT] or mqtts://HOST[:PORT]"
                              if key == "--broker" else "levels of letters, digits, '_' and '-' joined by '/'") from None
    from appliance.links.fleet import collect

    cameras = collect(args.broker, args.prefix, args.wait, args.username, args.password)
    if args.json:
        for camera in cameras:
            print(json.dumps(camera))
        return 0
    if not cameras:
        print(f"no camera reports to {args.broker} under {args.prefix}/")
        return 0
    print(f"{'camera':<20} {'online':<7} {'keeps today':>11} {'storage free':>13} {'outbox':>7}  last keep")
    for camera in cameras:
        status = camera.get("status") or {}
        last = status.get("last_keep") or {}
        free = (status.get("storage") or {}).get("free_bytes")
        print(f"{camera['device']:<20} {'yes' if camera['online'] else 'no':<7} {status.get('keeps_today', '—')!s:>11} "
              f"{_size(free):>13} {str((status.get('outbox') or {}).get('queued', '—')):>7}  "
              f"{last.get('label', '—')} {_ago(last.get('captured_at'))}")
    return 0


def _size(free) -> str:
    return "—" if free is None else f"{free / 1e9:.1f} GB"


def _ago(when) -> str:
    if not when:
        return ""
    from datetime import datetime

    try:
        seconds = time.time() - datetime.fromisoformat(when.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return ""
    return f"({int(seconds // 60)} min ago)" if seconds < 7200 else f"({seconds / 3600:.0f} h ago)"
