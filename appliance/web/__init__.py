"""The review and sync page: a Flask application factory with one blueprint per area.

``create_app(config, ...)`` builds the app around the same store the loop writes (SQLite in WAL
mode lets it read while the loop writes) and a control client that asks the loop process to pause,
resume or offload over a Unix socket. Every asset is served by the device itself.

Blueprints: ``auth`` (login, logout), ``status`` (the status page, live status API, controls,
activity chart), ``gallery`` (gallery, item page, star / relabel / delete, images, zip export),
``api`` (the sync API).
"""

from __future__ import annotations

import logging
from pathlib import Path

from flask import Flask, g, jsonify, redirect, render_template, request, session, url_for
from werkzeug.routing import IntegerConverter

from appliance.web import security
from appliance.web.sessions import Sessions

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 64 * 1024  # forms and JSON only: nothing is uploaded to the device
MAX_CAPTURE_ID = 2**63 - 1  # SQLite's largest integer


class CaptureIdConverter(IntegerConverter):
    """``<capture_id:...>``: a capture's id in a URL. A number SQLite cannot hold is no capture: a 404."""

    def __init__(self, url_map):
        super().__init__(url_map, max=MAX_CAPTURE_ID)


def create_app(config, store, control, password_hash="", labels=(), clock=security.monotonic, test_config=None):
    """The app. ``store`` is an open ``Store``; ``control`` a ``ControlClient`` (or anything with
    ``send(command)``); ``labels`` the model's labels, offered when relabelling."""
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=security.load_secret_key(Path(config.storage.data_dir)),
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        MAX_CONTENT_LENGTH=MAX_REQUEST_BYTES,
        JSON_SORT_KEYS=False,
    )
    if test_config:
        app.config.update(test_config)
    app.extensions["appliance"] = {
        "config": config, "store": store, "control": control, "labels": list(labels), "clock": clock,
        "passwords": security.Passwords(password_hash), "limiter": security.LoginLimiter(),
        "sessions": Sessions(Path(config.storage.data_dir), app.secret_key, password_hash,
                             app.permanent_session_lifetime.total_seconds()),
        "devices": security.KnownDevices(app.secret_key, password_hash),
    }
    app.url_map.converters["capture_id"] = CaptureIdConverter

    from appliance.web import api, auth, gallery, status

    for blueprint in (auth.bp, status.bp, gallery.bp, api.bp):
        app.register_blueprint(blueprint)

    app.before_request(_authorise)
    app.after_request(_security_headers)
    app.context_processor(lambda: {"csrf_token": _csrf_token(), "can_change": g.get("can_change", False),
                                   "is_logged_in": g.get("is_logged_in", False),
                                   "has_password": deps()["passwords"].is_set, "no_password_message": security.NO_PASSWORD})
    for code in (400, 401, 403, 404, 413, 429):
        app.register_error_handler(code, _error)
    return app


def deps() -> dict:
    """The collaborators ``create_app`` was given, for the views."""
    from flask import current_app

    return current_app.extensions["appliance"]


def _csrf_token() -> str:
    if "csrf" not in session:
        session["csrf"] = security.new_csrf_token()
    return session["csrf"]


def _authorise():
    """Decide, before any view, who the request is: a logged-in browser, a script with Basic auth,
    or nobody; refuse what they may not do."""
    passwords, limiter, clock = deps()["passwords"], deps()["limiter"], deps()["clock"]
    g.is_api = request.path.startswith("/api/")
    g.by_basic = False
    if request.headers.get("Authorization") and passwords.is_set:
        # Basic auth is a login too: each try counts against the same per-address limit.
        client = security.client_key(request.remote_addr or "?")
        wait_s = limiter.attempt(client, clock())
        if wait_s:
            return _refuse(429, too_many_logins(wait_s))
        g.by_basic = passwords.check_basic(request.headers["Authorization"])
        if g.by_basic:
            limiter.succeeded(client)
    is_live = passwords.is_set and deps()["sessions"].is_live(session.get("sid"))
    if "sid" in session and not is_live:  # logged out elsewhere, or the password changed
        session.pop("sid")
    g.is_logged_in = g.by_basic or is_live
    g.can_change = g.is_logged_in
    if request.endpoint in (None, "static") or request.endpoint.startswith("auth."):
        return _check_csrf() if request.method == "POST" else None
    if passwords.is_set and not g.is_logged_in:
        if g.is_api:
            return jsonify(error="log in first: HTTP Basic auth with the appliance's password"), 401
        return redirect(url_for("auth.login", next=request.full_path if request.query_string else request.path))
    if not passwords.is_set and (request.method != "GET" or getattr(_view(), "changes_or_syncs", False)):
        return _refuse(403, security.NO_PASSWORD)
    if request.method == "POST" and not g.by_basic:
        return _check_csrf()
    return None


def too_many_logins(wait_s: float) -> str:
    return f"too many failed logins: try again in {int(wait_s) + 1} s"


def _view():
    from flask import current_app

    return current_app.view_functions.get(request.endpoint)


def _check_csrf():
    given = request.headers.get("X-CSRF-Token") or request.form.get("csrf_token")
    if not security.tokens_match(session.get("csrf"), given):
        return _refuse(400, "missing or stale form token (CSRF): reload the page and try again")
    return None


def changes_or_syncs(view):
    """Mark a GET view that hands data off the device (sync, export): refused without a password."""
    view.changes_or_syncs = True
    return view


def _refuse(code, message):
    if request.path.startswith("/api/") or request.accept_mimetypes.best == "application/json":
        return jsonify(error=message), code
    return render_template("error.html", code=code, message=message), code


def _error(error):
    return _refuse(error.code, error.description)


def _security_headers(response):
    response.headers["Content-Security-Policy"] = security.CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["X-Frame-Options"] = "DENY"
    return response
