"""``appliance network run``: the hotspot's state machine every few seconds, as a service.

It talks to the rest of the appliance through two small files in the runtime directory (a tmpfs):
``network-request`` (``auto``, ``on`` or ``off``: written by the offload button's long press in the
loop, and by ``appliance network hotspot``) and ``network.json`` (what it is doing: read by the loop
for the LEDs and the status page). Both are replaced atomically.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path

from appliance.network import HOTSPOT_ADDRESS
from appliance.network.hotspot import REQUESTS, Hotspot, HotspotSettings

log = logging.getLogger(__name__)

REQUEST_FILE = "network-request"
STATE_FILE = "network.json"
STEP_S = 5.0


def _replace(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.chmod(tmp, 0o664)  # the loop (same group) may write the request
    os.replace(tmp, path)


def request_hotspot(runtime_dir: str | Path, request: str) -> None:
    """Ask the network service to open (``on``), close (``off``) or decide (``auto``) the hotspot."""
    if request not in REQUESTS:
        raise ValueError(f"hotspot request {request!r}: use one of {', '.join(REQUESTS)}")
    _replace(Path(runtime_dir) / REQUEST_FILE, request + "\n")


def read_request(runtime_dir: str | Path) -> str | None:
    try:
        request = (Path(runtime_dir) / REQUEST_FILE).read_text().strip()
    except FileNotFoundError:
        return None
    if request not in REQUESTS:
        log.warning("%s: %r is not one of %s; ignored", Path(runtime_dir) / REQUEST_FILE, request, ", ".join(REQUESTS))
        return None
    return request


def read_network(runtime_dir: str | Path) -> dict | None:
    """The network service's last ``network.json``, or None (no such service here, or not yet)."""
    try:
        return json.loads((Path(runtime_dir) / STATE_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def network_status(hotspot: Hotspot, system) -> dict:
    status = hotspot.status()
    status["hotspot"] = ({"ssid": system.hostname, "address": HOTSPOT_ADDRESS,
                          "url": f"http://{HOTSPOT_ADDRESS}/"} if hotspot.settings.is_configured or hotspot.request == "on" else None)
    status["updated_at_s"] = round(time.time(), 3)
    return status


def run(system, runtime_dir: str | Path, network, stop: threading.Event | None = None, step_s: float = STEP_S,
        clock=time.monotonic, booted_s: float = 0.0) -> None:
    """Step the hotspot every ``step_s`` until ``stop`` is set, writing ``network.json`` each time.

    ``clock`` and ``booted_s``: Linux's monotonic clock counts from boot (0), so the hotspot's wait
    (``system.hotspot_after_s``) counts from boot, not from this service's start."""
    runtime_dir = Path(runtime_dir)
    runtime_dir.mkdir(parents=True, exist_ok=True)
    stop = stop or threading.Event()
    hotspot = Hotspot(HotspotSettings.from_config(system), network, clock(), down_since_s=booted_s)
    log.info("network: hotspot %s (after %.0f s without a network, counted from boot; Wi-Fi retried every %.0f s)",
             "configured" if hotspot.settings.is_configured else "not configured (system.hotspot_passphrase is empty)",
             hotspot.settings.after_s, hotspot.settings.retry_s)
    last_mode = None
    while True:
        try:
            mode = hotspot.step(clock(), read_request(runtime_dir))
        except Exception:  # NetworkManager not answering must not end the service: it tries again
            log.exception("network: a step failed")
            mode = hotspot.mode
        if mode != last_mode:
            log.info("network: %s%s", mode, f" ({hotspot.uplink})" if hotspot.uplink and mode == "connected" else "")
            last_mode = mode
        _replace(runtime_dir / STATE_FILE, json.dumps(network_status(hotspot, system), indent=1))
        if stop.wait(step_s):
            return
