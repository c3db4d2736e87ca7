"""The browsers of ``appliance bench-web --page-load``: threads that log in and browse the page.

They run in a process of their own (``python -m appliance.bench.page_clients``), so that neither
their CPU nor their GIL is the loop's or the page's. The parent talks to it over stdin and stdout,
one JSON line each way:

1. parent → ``{"url": …, "password": …, "clients": N}``; each client logs in through the form, one
   after the other (as N people would, and so no burst of logins meets the login limiter), then the
   child answers ``{"ready": true}``;
2. parent → ``{"requests": R, "duration_s": D}`` (either may be null); every client browses until it
   has made R requests or D seconds have passed, and the child answers with every request's time:
   ``{"gallery_ms": […], "status_ms": […], "errors": n, "error_examples": […], "seconds": s}``;
   step 2 repeats until stdin closes.

A client browses as a person with the page open does: a gallery page, the status API (the page polls
it), the next gallery page by its "next" link, the status API… back to the first page after five
pages; one keep-alive connection each, with the session cookie the login gave.
"""

from __future__ import annotations

import html
import http.client
import json
import re
import sys
import threading
import time
import urllib.parse

GALLERY_DEPTH = 5  # pages followed by "next" before a client starts again at the first
STATUS_API = "/api/v1/status"
_NEXT = re.compile(r'<a href="([^"]+)" id="next-page">')
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_ERROR_EXAMPLES = 5


class Browser:
    """One logged-in browser on a keep-alive connection; ``browse`` times its requests."""

    def __init__(self, url: str):
        parts = urllib.parse.urlsplit(url)
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
        self.cookies: dict[str, str] = {}
        self.gallery_path = "/gallery"
        self.depth = 0

    def request(self, method: str, path: str, body: bytes | None = None, headers=None) -> tuple[int, bytes]:
        headers = dict(headers or {})
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{name}={value}" for name, value in self.cookies.items())
        for is_retry in (False, True):
            try:
                self.connection.request(method, path, body, headers)
                response = self.connection.getresponse()
                data = response.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # The server let an idle connection go (as it may): a browser opens another one.
                self.connection.close()
                if is_retry:
                    raise
        for cookie in response.headers.get_all("Set-Cookie") or []:
            name, _, rest = cookie.partition("=")
            value = rest.split(";", 1)[0]
            if value:
                self.cookies[name.strip()] = value
            else:
                self.cookies.pop(name.strip(), None)
        return response.status, data

    def log_in(self, password: str) -> None:
        status, page = self.request("GET", "/login")
        token = _CSRF.search(page.decode())
        if status != 200 or token is None:
            raise RuntimeError(f"GET /login answered {status} without a form token")
        form = urllib.parse.urlencode({"csrf_token": token.group(1), "password": password, "next": "/gallery"})
        status, _ = self.request("POST", "/login", form.encode(), {"Content-Type": "application/x-www-form-urlencoded"})
        if status != 302:
            raise RuntimeError(f"logging in answered {status}, not a redirect: is the password right?")

    def next_path(self, gallery_page: bytes) -> None:
        """Where the next gallery request goes: the "next" link, or the first page again."""
        match = _NEXT.search(gallery_page.decode())
        self.depth += 1
        if match and self.depth < GALLERY_DEPTH:
            self.gallery_path = html.unescape(match.group(1))
        else:
            self.gallery_path, self.depth = "/gallery", 0

    def browse(self, requests: int | None, deadline_s: float | None, times: dict, errors: list) -> None:
        """Alternate gallery pages and the status API; append each time (ms) to ``times[kind]``."""
        made = 0
        while (requests is None or made < requests) and (deadline_s is None or time.monotonic() < deadline_s):
            kind, path = ("gallery", self.gallery_path) if made % 2 == 0 else ("status", STATUS_API)
            started = time.perf_counter()
            try:
                status, body = self.request("GET", path)
            except (OSError, http.client.HTTPException) as e:
                status, body = None, repr(e).encode()
            elapsed_ms = (time.perf_counter() - started) * 1000
            made += 1
            if status != 200:
                errors.append(f"GET {path}: {status}: {body[:200]!r}")
                if kind == "gallery":
                    self.gallery_path, self.depth = "/gallery", 0
                continue
            times[kind].append(round(elapsed_ms, 2))
            if kind == "gallery":
                self.next_path(body)


def browse_all(browsers: list[Browser], requests: int | None, duration_s: float | None) -> dict:
    """Every browser on its own thread until done; their times, errors and the wall time."""
    times: dict[str, list[float]] = {"gallery": [], "status": []}
    errors: list[str] = []
    deadline_s = time.monotonic() + duration_s if duration_s else None
    threads = [threading.Thread(target=b.browse, args=(requests, deadline_s, times, errors), name=f"browser-{i}")
               for i, b in enumerate(browsers)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"gallery_ms": times["gallery"], "status_ms": times["status"], "errors": len(errors),
            "error_examples": errors[:_ERROR_EXAMPLES], "seconds": round(time.perf_counter() - started, 3)}


def main() -> None:
    setup = json.loads(sys.stdin.readline())
    browsers = [Browser(setup["url"]) for _ in range(setup["clients"])]
    for browser in browsers:
        browser.log_in(setup["password"])
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        run = json.loads(line)
        print(json.dumps(browse_all(browsers, run["requests"], run["duration_s"])), flush=True)


if __name__ == "__main__":
    main()
