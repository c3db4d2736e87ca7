"""``appliance serve``: the review and sync page."""

from __future__ import annotations

import signal
from pathlib import Path

from appliance.cli import add_command
from appliance.config import DEVICE_CONFIG_PATH, config_path, load_config


def register(subparsers):
    parser = add_command(subparsers, "serve", serve_command)
    parser.add_argument("--config", type=Path, default=None,
                        help=f"the config file (default: {DEVICE_CONFIG_PATH} if it exists)")
    parser.add_argument("--host", default=None, help="address to listen on (default: web.host)")
    parser.add_argument("--port", type=int, default=None, help="port (default: web.port; 80 on the device)")


def serve_command(args) -> int:
    """Serve the review and sync page until stopped (SIGTERM or Ctrl-C).

    On the device appliance-web.service runs it on port 80; on a laptop use --port 8080. A clear-text
    web.password in the config file is hashed, and the file rewritten, at start.

    Example:
        appliance serve --config /boot/firmware/appliance.toml --port 8080
    """
    from appliance.web.server import WebServer

    path = config_path(args.config)
    server = WebServer(load_config(path), config_path=path, host=args.host, port=args.port)
    signal.signal(signal.SIGTERM, lambda *_: server.stop())
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0
