"""Helpers for the browser tests: a real appliance and review page running in threads, and Debian's
Chromium driven through Playwright.

Nothing here downloads a browser: Playwright is pointed at ``/usr/bin/chromium``, started with the
flags that keep it off the network (without them it tries to reach Google's hosts at every start).
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

from conftest import BIRD_MODEL, IMAGES, REPO

from appliance.config import Config
from appliance.service.app import Appliance

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = REPO / "tests" / "artifacts"
PASSWORD = "a long enough test password"
PHOTOS = ("bird.bmp", "parrot.jpg", "cat_720p.jpg", "dragonfly.bmp", "face.jpg", "grace_hopper.bmp",
          "hot_dog.jpg", "kite_and_cold.jpg")  # the two birds are kept; the rest are discarded


def copy_photos(folder: Path) -> Path:
    """A folder of the shared photos (birds and others) for the replay camera."""
    folder.mkdir(parents=True)
    for name in PHOTOS:
        shutil.copy(IMAGES / name, folder / name)
    return folder


def replay_config(root: Path, photos: Path, **sections) -> Config:
    """A config like conftest's ``make_config``, in ``root`` (module-scoped fixtures cannot use it),
    with a password on the page."""
    base = Config().replace(
        camera={"backend": "replay", "replay_dir": str(photos), "fps": 10.0, "replay_loop": True},
        model={"path": str(BIRD_MODEL), "num_threads": 2},
        keep={"cooldown_s": 0.0},
        storage={"data_dir": str(root / "data"), "min_free_bytes": 0},
        status={"runtime_dir": str(root / "run"), "interval_s": 0.2},
        web={"password": PASSWORD},
    )
    return base.replace(**sections)


class RunningAppliance:
    """An ``Appliance`` whose loop runs in a background thread until ``stop()``."""

    def __init__(self, config: Config):
        self.appliance = Appliance(config)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="appliance", daemon=True)

    def _run(self):
        try:
            self.appliance.run()
        except BaseException as e:  # re-raised by stop(), in the test's thread
            self.error = e

    def start(self) -> RunningAppliance:
        self._thread.start()
        return self

    def join(self, timeout_s=30.0) -> None:
        """Wait for the loop to end by itself (a replay that does not loop), then close it."""
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise AssertionError(f"the appliance loop did not end within {timeout_s}s")
        self.appliance.close()
        if self.error is not None:
            raise self.error

    def stop(self) -> None:
        self.appliance.stop()
        self.join()


def wait_until(predicate, what: str, timeout_s=30.0):
    """Poll ``predicate`` until it returns something true; that value is returned."""
    deadline_s = time.monotonic() + timeout_s
    while not (value := predicate()):
        if time.monotonic() > deadline_s:
            raise AssertionError(f"timed out after {timeout_s}s waiting until {what}")
        time.sleep(0.05)
    return value


class PageWatch:
    """Records what a page must never do: break its Content-Security-Policy, throw a script error,
    or send a request anywhere but the appliance on 127.0.0.1."""

    LOCAL_HOSTS = ("127.0.0.1",)

    def __init__(self, page):
        self.csp_violations: list[str] = []
        self.script_errors: list[str] = []
        self.requests: list[str] = []
        self.foreign_requests: list[str] = []
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.script_errors.append(str(error)))
        page.on("request", self._request)

    def _console(self, message):
        text = message.text
        if "Content Security Policy" in text or "Refused to" in text:
            self.csp_violations.append(text)

    def _request(self, request):
        self.requests.append(request.url)
        url = urlsplit(request.url)
        if url.scheme not in ("data", "blob") and url.hostname not in self.LOCAL_HOSTS:
            self.foreign_requests.append(request.url)

    def problems(self) -> list[str]:
        return ([f"CSP violation: {m}" for m in self.csp_violations]
                + [f"script error: {m}" for m in self.script_errors]
                + [f"request off the device: {u}" for u in self.foreign_requests])


def screenshot(page, name: str, full_page=True) -> Path:
    """A screenshot in tests/artifacts (git-ignored), for a person to look at."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=full_page)
    return path


def log_in(page, base_url: str, password=PASSWORD) -> None:
    """Log in through the login page and land on the status page."""
    page.goto(base_url + "login")
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(base_url)
