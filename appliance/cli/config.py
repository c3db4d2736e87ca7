"""``appliance config check|show|reference``."""

from __future__ import annotations

import sys
from pathlib import Path

from appliance.cli import add_command
from appliance.config import DEVICE_CONFIG_PATH, config_path, load_config, reference_markdown, to_toml


def register(subparsers):
    parser = subparsers.add_parser("config", help="check or show the config file")
    group = parser.add_subparsers(dest="config_command", metavar="COMMAND", required=True)
    check = add_command(group, "check", check_command)
    check.add_argument("file", type=Path)
    show = add_command(group, "show", show_command)
    show.add_argument("file", type=Path, nargs="?", default=None)
    add_command(group, "reference", reference_command)


def check_command(args) -> int:
    """Check a config file: exit 0 if it is valid, else print FILE: KEY: problem and exit 2.

    Beyond the keys and values, each of notify.urls is tried on Apprise (an unknown service, a
    malformed part): named by its place in the list, never shown, since URLs hold secrets.

    Example:
        appliance config check /boot/firmware/appliance.toml
    """
    config = load_config(args.file)
    if config.notify.urls:
        from appliance.links.notify import check_urls

        if problems := check_urls(config):
            for problem in problems:
                print(problem, file=sys.stderr)
            return 2
    print(f"{args.file}: ok")
    return 0


def show_command(args) -> int:
    """Print the effective config as TOML: every key, with defaults filled in and a comment each.

    Without FILE, shows the device's config if it exists, else the built-in defaults.

    Example:
        appliance config show my.toml > effective.toml
    """
    path = config_path(args.file)
    print(to_toml(load_config(path)), end="")
    return 0


def reference_command(args) -> int:
    """Print the config reference (every key, default, allowed values) as a Markdown table.

    Example:
        appliance config reference
    """
    print(reference_markdown(), end="")
    return 0
