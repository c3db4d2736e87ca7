"""``appliance network run``, ``appliance network hotspot on|off|auto`` and ``appliance network status``."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path

from appliance.cli import add_command
from appliance.config import DEVICE_CONFIG_PATH, Config, config_path, load_config
from appliance.errors import ApplianceError


def register(subparsers):
    parser = subparsers.add_parser("network", help="the camera's own Wi-Fi hotspot when no network is up")
    group = parser.add_subparsers(dest="network_command", metavar="COMMAND", required=True)
    for name, func in (("run", run_command), ("hotspot", hotspot_command), ("status", status_command)):
        command = add_command(group, name, func)
        command.add_argument("--config", type=Path, default=None, metavar="FILE",
                             help=f"the config file (default: {DEVICE_CONFIG_PATH}, if it exists)")
        if name == "hotspot":
            command.add_argument("request", choices=("on", "off", "auto"),
                                 help="on: open it now and keep it open; off: keep it closed; auto: open it when no network is up")


def _config(args) -> Config:
    path = config_path(args.config)
    return load_config(path) if path else Config()


def run_command(args) -> int:
    """Open the camera's hotspot when no network is up, and leave it when one is (a service).

    Every 5 s it asks NetworkManager what is up. When neither Ethernet nor the Wi-Fi of
    system.wifi_ssid has been up for system.hotspot_after_s, it opens the hotspot (network name:
    the hostname; WPA2 with system.hotspot_passphrase; the page at http://10.42.0.1/ and
    http://HOSTNAME.local/). While it is open it tries the Wi-Fi again every system.hotspot_retry_s,
    unless a device is connected to it. What it does is in network.json in status.runtime_dir, which
    the LEDs and the status page show. appliance-network.service runs this on the device.

    Example:
        appliance network run --config /boot/firmware/appliance.toml
    """
    from appliance.network.nm import NetworkManager
    from appliance.network.service import run

    config = _config(args)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    run(config.system, config.status.runtime_dir, NetworkManager(), stop)
    return 0


def hotspot_command(args) -> int:
    """Open the hotspot now (on), keep it closed (off), or let the camera decide (auto).

    "on" is what a long press of the offload button does (another long press: back to auto). The
    request lasts until the next one, or a reboot.

    Example:
        sudo -u appliance appliance network hotspot on
    """
    from appliance.network.service import request_hotspot

    config = _config(args)
    try:
        request_hotspot(config.status.runtime_dir, args.request)
    except OSError as e:
        raise ApplianceError(f"cannot write the request into {config.status.runtime_dir} ({e.strerror}): "
                             "run it as the appliance user or root (sudo)") from None
    print(f"hotspot: {args.request} (asked; `appliance network status` shows what it does)")
    return 0


def status_command(args) -> int:
    """What the network service is doing, as JSON (mode, the network in use, the hotspot's clients).

    Modes: waiting (nothing up yet), connected, hotspot, joining (trying the Wi-Fi again), offline.

    Example:
        appliance network status
    """
    from appliance.network.service import read_network

    config = _config(args)
    status = read_network(config.status.runtime_dir)
    if status is None:
        raise ApplianceError(f"no network status in {config.status.runtime_dir}: "
                             "is appliance-network.service running? (systemctl status appliance-network)")
    print(json.dumps(status, indent=1))
    return 0
