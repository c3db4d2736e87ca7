"""Logging in and out."""

from __future__ import annotations

from flask import Blueprint, abort, redirect, render_template, request, session, url_for

from appliance.web import deps, security, too_many_logins

bp = Blueprint("auth", __name__)


@bp.route("/login", methods=["GET", "POST"])
def login():
    passwords, limiter, clock = deps()["passwords"], deps()["limiter"], deps()["clock"]
    target = security.local_path(request.values.get("next", "")) or url_for("status.page")
    if not passwords.is_set:
        return render_template("login.html", next=target, error=None), 200
    error = None
    if request.method == "POST":
        devices = deps()["devices"]
        device_id = devices.device_id(request.cookies.get(security.DEVICE_COOKIE))
        # A browser that has logged in before is limited on its own; any other by its address.
        key = f"device {device_id}" if device_id else security.client_key(request.remote_addr or "?")
        wait_s = limiter.attempt(key, clock())
        if wait_s:
            abort(429, too_many_logins(wait_s))
        if passwords.check(request.form.get("password", "")):
            limiter.succeeded(key)
            session.clear()  # a fresh session on login: nothing from before carries over, the form token neither
            session.update(sid=deps()["sessions"].start(), csrf=security.new_csrf_token())
            session.permanent = True
            response = redirect(target)
            response.set_cookie(security.DEVICE_COOKIE, devices.cookie(device_id),
                                max_age=security.DEVICE_COOKIE_MAX_AGE_S, httponly=True, samesite="Strict")
            return response
        error = "wrong password"
    return render_template("login.html", next=target, error=error), (401 if error else 200)


@bp.route("/logout", methods=["POST"])
def logout():
    deps()["sessions"].end(session.get("sid"))
    session.clear()
    return redirect(url_for("auth.login"))
