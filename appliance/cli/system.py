"""``appliance system apply`` and ``appliance system read-only-root``."""

from __future__ import annotations

import subprocess
from pathlib import Path

from appliance.cli import add_command
from appliance.config import DEVICE_CONFIG_PATH, load_config
from appliance.errors import SystemSettingsError
from appliance.system.settings import apply


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

    ro = add_command(group, "read-only-root", read_only_root_command)
    switch = ro.add_mutually_exclusive_group(required=True)
    switch.add_argument("--enable", action="store_true", help="mount the OS read-only from the next boot")
    switch.add_argument("--disable", action="store_true", help="mount the OS read-write from the next boot")
    ro.add_argument("--reboot", action="store_true", help="reboot now if anything changed")
    ro.add_argument("--cmdline", type=Path, default=None, metavar="FILE",
                    help="the kernel command line file (default: /boot/firmware/cmdline.txt)")


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


def read_only_root_command(args) -> int:
    """Switch the read-only root (overlayroot) on or off from the next boot, in cmdline.txt.

    Images built with --read-only-root switch it on once first boot is done; switch it off to
    update the OS (apt), then on again. Only the data partition (/var/lib/appliance) is written
    while it is on; changes anywhere else last until the next reboot.

    Example:
        sudo appliance system read-only-root --disable --reboot
    """
    from appliance.system.read_only_root import CMDLINE_PATH, set_read_only_root

    path = args.cmdline or CMDLINE_PATH
    is_changed = set_read_only_root(args.enable, path)
    state = "read-only" if args.enable else "read-write"
    print(f"{path}: the root filesystem is {state} from the next boot" + ("" if is_changed else " (it already was)"))
    if is_changed and args.reboot:
        subprocess.run(["systemctl", "reboot", "--no-block"], check=False)
    return 0
