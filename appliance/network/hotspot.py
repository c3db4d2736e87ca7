"""When the camera opens its own hotspot: a state machine over what NetworkManager reports.

No I/O of its own: ``Hotspot.step`` is given the time and the owner's request, asks ``network`` (an
``nm.NetworkManager``, or a test's fake) what is up, and tells it what to open or close. Modes:

* ``waiting``: nothing is up yet, for less than ``system.hotspot_after_s`` (counted from boot, or from
  when the network was lost), or the service started less than ``SETTLE_S`` ago (NetworkManager is
  given that long to try the configured networks, however slowly the system booted);
* ``connected``: a configured network is up (Ethernet, or the Wi-Fi of ``system.wifi_ssid``);
* ``hotspot``: the camera's own access point is open;
* ``joining``: the hotspot is closed for a moment while the configured Wi-Fi is tried again (one
  radio cannot do both), every ``system.hotspot_retry_s``, never while a device is on the hotspot;
* ``offline``: nothing is up and no hotspot is configured (``system.hotspot_passphrase`` empty), or
  the owner closed it.

The owner's request: ``auto`` (the above), ``on`` (open it now and keep it open: a long press of the
offload button, or ``appliance network hotspot on``) or ``off`` (keep it closed).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from appliance.errors import NetworkError
from appliance.network import WIFI_ID

log = logging.getLogger(__name__)

REQUESTS = ("auto", "on", "off")
SETTLE_S = 15.0  # at least this long (or after_s, if shorter) after the service starts before the hotspot opens


@dataclass(frozen=True)
class HotspotSettings:
    is_configured: bool  # system.hotspot_passphrase is set
    has_wifi: bool  # system.wifi_ssid is set: there is a network to try again
    after_s: float = 45.0
    retry_s: float = 300.0
    join_timeout_s: float = 30.0

    @classmethod
    def from_config(cls, system) -> HotspotSettings:
        return cls(is_configured=bool(system.hotspot_passphrase), has_wifi=bool(system.wifi_ssid),
                   after_s=system.hotspot_after_s, retry_s=system.hotspot_retry_s)


@dataclass(frozen=True)
class Seen:
    """What NetworkManager says is up: the configured network in use (a connection id) or None, whether
    the hotspot is open, and how many devices are on it."""

    uplink: str | None
    is_hotspot_up: bool
    clients: int = 0


class Hotspot:
    """``now_s``: the time the service starts; ``down_since_s``: since when no network has been up
    (the service passes the time of boot: ``system.hotspot_after_s`` counts from boot)."""

    def __init__(self, settings: HotspotSettings, network, now_s: float, down_since_s: float | None = None):
        self.settings = settings
        self.network = network
        self.mode = "waiting"
        self.request = "auto"
        self.uplink: str | None = None
        self.clients = 0
        self.problem: str | None = None
        self._down_since_s = now_s if down_since_s is None else min(down_since_s, now_s)
        self._started_s = now_s
        self._last_try_s = now_s  # the last time the configured Wi-Fi was tried (or the hotspot opened)

    def step(self, now_s: float, request: str | None = None) -> str:
        """Look, decide, act once; return the mode."""
        if request is not None and request != self.request:
            if request not in REQUESTS:
                raise ValueError(f"hotspot request {request!r}: use one of {', '.join(REQUESTS)}")
            log.info("hotspot: %s (was %s)", request, self.request)
            self.request = request
            self.problem = None
        seen = self.network.seen()
        self.uplink, self.clients = seen.uplink, seen.clients
        if seen.uplink:
            self._down_since_s = now_s
        self.mode = self._decide(seen, now_s)
        return self.mode

    def _decide(self, seen: Seen, now_s: float) -> str:
        if self.request == "on":
            if seen.is_hotspot_up:
                return "hotspot"
            return self._open_now(now_s)
        if self.request == "off" or not self.settings.is_configured:
            if seen.is_hotspot_up:
                self._close()
            return "connected" if seen.uplink else "offline"
        if seen.uplink:  # e.g. a cable plugged in while the hotspot was open
            if seen.is_hotspot_up:
                log.info("hotspot: closing it, %s is up", seen.uplink)
                self._close()
            self.problem = None
            return "connected"
        if not seen.is_hotspot_up:
            if (now_s - self._down_since_s < self.settings.after_s
                    or now_s - self._started_s < min(SETTLE_S, self.settings.after_s)):
                return "waiting"
            return self._open_now(now_s)
        if self.settings.has_wifi and seen.clients == 0 and now_s - self._last_try_s >= self.settings.retry_s:
            return self._try_wifi(now_s)
        return "hotspot"

    def _try_wifi(self, now_s: float) -> str:
        """Close the hotspot, try the configured Wi-Fi; open the hotspot again if that fails."""
        self._last_try_s = now_s
        log.info("hotspot: trying the configured Wi-Fi again")
        self.mode = "joining"
        self._close()
        try:
            self.network.join_wifi(self.settings.join_timeout_s)
        except NetworkError as e:
            log.info("hotspot: the Wi-Fi did not answer (%s): opening the hotspot again", e)
            return "hotspot" if self._open() else "offline"
        log.info("hotspot: joined the Wi-Fi, the hotspot stays closed")
        self.uplink = WIFI_ID
        return "connected"

    def _open_now(self, now_s: float) -> str:
        """Open the hotspot; after a failure, not again before ``retry_s`` has passed."""
        if self.problem and now_s - self._last_try_s < self.settings.retry_s:
            return "offline"
        log.info("hotspot: opening it (no network for %.0f s)", now_s - self._down_since_s)
        self._last_try_s = now_s
        return "hotspot" if self._open() else "offline"

    def _open(self) -> bool:
        try:
            self.network.open_hotspot()
        except NetworkError as e:
            self.problem = f"cannot open the hotspot: {e}"
            log.warning("%s", self.problem)
            return False
        self.problem = None
        return True

    def _close(self) -> None:
        try:
            self.network.close_hotspot()
        except NetworkError as e:
            log.warning("cannot close the hotspot: %s", e)

    def status(self) -> dict:
        return {"mode": self.mode, "request": self.request, "uplink": self.uplink,
                "hotspot_clients": self.clients if self.mode == "hotspot" else 0, "problem": self.problem}
