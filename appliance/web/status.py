"""The status page, its live JSON, the loop's controls, and the activity chart."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from flask import Blueprint, Response, abort, flash, jsonify, redirect, render_template, request, url_for

from appliance.errors import ApplianceError, LoopNotRunning
from appliance.links.service import read_links
from appliance.network.service import read_network, request_hotspot
from appliance.service.status import read_status
from appliance.storage.store import COUNT_MAX_AGE_S
from appliance.transfer.offload import read_progress
from appliance.web import deps

log = logging.getLogger(__name__)

bp = Blueprint("status", __name__)

STALE_AFTER_S = 10.0  # the loop writes status about once a second; this much silence means it stopped
THERMAL_ZONE = Path("/sys/class/thermal/thermal_zone0/temp")
CONTROLS = {"pause": "Paused", "resume": "Resumed", "offload": "USB offload started"}


def live_status() -> dict:
    """What the loop last reported, plus what this process can see for itself (disk, temperature)."""
    config, store = deps()["config"], deps()["store"]
    loop = read_status(config.status.runtime_dir)
    is_running = bool(loop) and loop.get("state") not in ("stopped",) and \
        time.time() - loop.get("updated_at", 0) < max(STALE_AFTER_S, 5 * config.status.interval_s)
    return {
        "loop": loop, "is_loop_running": is_running,
        "items": store.count(max_age_s=COUNT_MAX_AGE_S), "free_bytes": store.free_bytes(),
        "offload": read_progress(config.status.runtime_dir),
        "network": read_network(config.status.runtime_dir),
        "links": read_links(config.status.runtime_dir),
        "cpu_temperature_c": cpu_temperature_c(),
        "device_uptime_s": device_uptime_s(),
    }


def cpu_temperature_c() -> float | None:
    try:
        return round(int(THERMAL_ZONE.read_text()) / 1000, 1)
    except (OSError, ValueError):
        return None


def device_uptime_s() -> float | None:
    try:
        return float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


@bp.route("/")
def page():
    return render_template("status.html", status=live_status())


@bp.route("/api/v1/status")
def status_json():
    return jsonify(live_status())


@bp.route("/control/<action>", methods=["POST"])
def control(action):
    if action not in CONTROLS:
        abort(404, f"no such control: {action}")
    wants_json = request.accept_mimetypes.best == "application/json"
    try:
        reply = deps()["control"].send(action)
        message, ok = CONTROLS[action], True
    except LoopNotRunning as e:
        log.info("control %s: %s", action, e)
        message, ok, reply = "The capture loop is not running, so it cannot be controlled.", False, {}
    except ApplianceError as e:
        message, ok, reply = str(e), False, {}
    if wants_json:
        return jsonify({**reply, "ok": ok, "message": message}), (200 if ok else 409)
    flash(message, "ok" if ok else "error")
    return redirect(request.referrer if _same_site(request.referrer) else url_for("status.page"))


HOTSPOT_REQUESTS = {"on": "Opening the hotspot", "auto": "The hotspot opens when no network is up",
                    "off": "The hotspot stays closed"}


@bp.route("/network/hotspot/<wanted>", methods=["POST"])
def hotspot(wanted):
    """Ask the network service (appliance-network.service) to open or close the hotspot."""
    if wanted not in HOTSPOT_REQUESTS:
        abort(404, f"no such hotspot request: {wanted} (on, off or auto)")
    try:
        request_hotspot(deps()["config"].status.runtime_dir, wanted)
        message, ok = HOTSPOT_REQUESTS[wanted], True
    except OSError as e:
        log.error("hotspot %s: %s", wanted, e)
        message, ok = f"Cannot ask for the hotspot ({e.strerror})", False
    if request.accept_mimetypes.best == "application/json":
        return jsonify({"ok": ok, "message": message, "request": wanted}), (200 if ok else 409)
    flash(message, "ok" if ok else "error")
    return redirect(request.referrer if _same_site(request.referrer) else url_for("status.page"))


def _same_site(url) -> bool:
    return bool(url) and url.startswith(request.host_url)


@bp.route("/activity.svg")
def activity():
    from appliance.storage.activity import keeps_per_bucket
    from appliance.web.chart import activity_svg

    period = request.args.get("period", "hour")
    if period not in ("hour", "day"):
        abort(400, "period must be hour or day")
    svg = activity_svg(keeps_per_bucket(deps()["store"], period, time.time()))
    return Response(svg, mimetype="image/svg+xml", headers={"Cache-Control": "no-cache"})
