"""Logging in and out."""

from __future__ import annotations

from flask import Blueprint, abort, redirect, render_template, request, session, url_for

from appliance.web import deps

bp = Blueprint("auth", __name__)


@bp.route("/login", methods=["GET", "POST"])
def login():
    passwords, limiter, clock = deps()["passwords"], deps()["limiter"], deps()["clock"]
    target = request.values.get("next", "")
    target = target if target.startswith("/") and not target.startswith("//") else url_for("status.page")
    if not passwords.is_set:
        return render_template("login.html", next=target, error=None), 200
    error = None
    if request.method == "POST":
        address = request.remote_addr or "?"
        wait_s = limiter.wait_s(address, clock())
        if wait_s:
            abort(429, f"too many failed logins: try again in {int(wait_s) + 1} s")
        if passwords.check(request.form.get("password", "")):
            limiter.succeeded(address)
            csrf = session.get("csrf")
            session.clear()  # a fresh session on login: nothing from before carries over
            session.update(user=True, csrf=csrf)
            session.permanent = True
            return redirect(target)
        limiter.failed(address, clock())
        error = "wrong password"
    return render_template("login.html", next=target, error=error), (401 if error else 200)


@bp.route("/logout", methods=["POST"])
def logout():
    session.clear()
    return redirect(url_for("auth.login"))
