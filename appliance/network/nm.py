"""NetworkManager through nmcli: what is up, and opening or closing the hotspot.

The connections are the keyfiles ``appliance system apply`` writes (``appliance-wifi``,
``appliance-hotspot``); Ethernet is NetworkManager's own automatic wired connection. nmcli runs as
the service user, which the image's polkit rule lets control the network. Every command goes through
the injected ``run`` (called like ``subprocess.run``), so tests can answer for nmcli.
"""

from __future__ import annotations

import subprocess

from appliance.network import HOTSPOT_ID, WIFI_ID
from appliance.errors import NetworkError
from appliance.network.hotspot import Seen

UPLINK_TYPES = ("802-3-ethernet", "802-11-wireless")  # nmcli -t's TYPE of wired and Wi-Fi connections
NOT_ACTIVE = 10  # nmcli's exit status for "connection, device or access point does not exist / is not active"


def split_terse(line: str) -> list[str]:
    """One line of ``nmcli -t``: fields split at ':', where a ':' or '\\' inside a field is escaped."""
    fields, field, escaped = [], [], False
    for char in line:
        if escaped:
            field.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ":":
            fields.append("".join(field))
            field = []
        else:
            field.append(char)
    fields.append("".join(field))
    return fields


class NetworkManager:
    def __init__(self, run=subprocess.run, interface: str = "wlan0"):
        self.run = run
        self.interface = interface

    def _nmcli(self, *args: str, timeout_s: float = 60.0, allowed=()) -> str:
        try:
            result = self.run(["nmcli", *args], capture_output=True, text=True, timeout=timeout_s)
        except FileNotFoundError:
            raise NetworkError("nmcli is not installed (NetworkManager)") from None
        except subprocess.TimeoutExpired:
            raise NetworkError(f"nmcli {' '.join(args)} did not answer within {timeout_s:.0f} s") from None
        if result.returncode != 0 and result.returncode not in allowed:
            message = (result.stderr or result.stdout).strip().splitlines()
            raise NetworkError(message[-1] if message else f"nmcli {' '.join(args)} failed (exit {result.returncode})")
        return result.stdout

    def seen(self) -> Seen:
        uplink, is_hotspot_up = None, False
        for line in self._nmcli("-t", "-f", "NAME,TYPE,DEVICE,STATE", "connection", "show", "--active").splitlines():
            fields = split_terse(line)
            if len(fields) != 4 or fields[3] != "activated":
                continue
            name, kind, _, _ = fields
            if name == HOTSPOT_ID:
                is_hotspot_up = True
            elif kind in UPLINK_TYPES and uplink is None:
                uplink = name
        return Seen(uplink=uplink, is_hotspot_up=is_hotspot_up, clients=self.clients() if is_hotspot_up else 0)

    def clients(self) -> int:
        """Devices associated with the hotspot (``iw``'s station list; 0 if iw cannot tell)."""
        try:
            result = self.run(["iw", "dev", self.interface, "station", "dump"], capture_output=True, text=True, timeout=10)
        except (FileNotFoundError, subprocess.TimeoutExpired):
            return 0
        return sum(line.startswith("Station ") for line in result.stdout.splitlines()) if result.returncode == 0 else 0

    def open_hotspot(self) -> None:
        self._nmcli("--wait", "30", "connection", "up", "id", HOTSPOT_ID, timeout_s=45)

    def close_hotspot(self) -> None:
        self._nmcli("connection", "down", "id", HOTSPOT_ID, allowed=(NOT_ACTIVE,))

    def join_wifi(self, timeout_s: float) -> None:
        self._nmcli("--wait", str(int(timeout_s)), "connection", "up", "id", WIFI_ID, timeout_s=timeout_s + 15)
