"""``appliance system apply``."""

from __future__ import annotations

from pathlib import Path

from appliance.cli import add_command
from appliance.config import DEVICE_CONFIG_PATH, load_config
from appliance.errors import SystemSettingsError
from appliance.system import apply


def register(subparsers):
    parser = subparsers.add_parser("system", help="apply the device's system settings from the config file")
    group = parser.add_subparsers(dest="system_command", metavar="COMMAND", required=True)
    command = add_command(group, "apply", apply_command)
    command.add_argument("--config", type=Path, default=None, metavar="FILE",
                         help=f"the config file (default: {DEVICE_CONFIG_PATH}, if it exists)")
    command.add_argument("--root", type=Path, default=Path("/"), metavar="DIR",
                         help="the root filesystem to write into (default: /, the running system)")
    command.add_argument("--first-boot", action="store_true",
                         help="also grow the root filesystem to fill the card, and record the first boot")


def apply_command(args) -> int:
    """Write [system] (host name, time zone, Wi-Fi, SSH keys, admin password) into the system.

    Runs as root at boot, before the appliance starts; a second run changes nothing. Clear-text
    passwords in the config file (system.admin_password, web.password) are hashed and removed from
    it. With --first-boot it also grows the root filesystem to fill the SD card and then writes
    /var/lib/appliance/first-boot.json (once; it never holds a secret).

    Example:
        sudo appliance system apply --config /boot/firmware/appliance.toml
    """
    path = args.config
    if path is None:
        if not DEVICE_CONFIG_PATH.exists():
            raise SystemSettingsError(f"{DEVICE_CONFIG_PATH}: no such file: pass --config FILE "
                                      "(the defaults are not applied on their own: they would rename this machine)")
        path = DEVICE_CONFIG_PATH
    report = apply(load_config(path), path, root=args.root, first_boot=args.first_boot)
    summary = f"{len(report.changed)} change(s)" if report.is_changed else "nothing to change"
    print(f"{path}: [system] applied to {args.root}: {summary}")
    return 0
