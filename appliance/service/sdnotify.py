"""systemd's notify protocol (READY, WATCHDOG, STATUS, STOPPING) without a dependency.

Does nothing when the process is not run by systemd (``NOTIFY_SOCKET`` unset).
"""

from __future__ import annotations

import os
import socket


class Notifier:
    def __init__(self, environ=os.environ):
        address = environ.get("NOTIFY_SOCKET", "")
        self._address = "\0" + address[1:] if address.startswith("@") else address
        usec = environ.get("WATCHDOG_USEC", "")
        # Ping at half the watchdog period, as sd_watchdog_enabled(3) advises.
        self.watchdog_interval_s = int(usec) / 2e6 if usec.isdigit() and int(usec) > 0 else None

    def notify(self, message: str) -> None:
        if not self._address:
            return
        # Never blocks: a notify socket nobody reads (its queue holds ~10 datagrams) would otherwise
        # hang the thread that pings the watchdog, and with it the shutdown that joins that thread.
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK) as s:
            try:
                s.sendto(message.encode(), self._address)
            except OSError:
                pass  # systemd gone (shutting down) or not reading: nothing to tell

    def ready(self, status: str = "") -> None:
        self.notify("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def watchdog(self) -> None:
        self.notify("WATCHDOG=1")

    def stopping(self) -> None:
        self.notify("STOPPING=1")
