"""The review page in a real browser: Debian's Chromium, driven by Playwright, against the real
waitress server and a real appliance replaying photos through the real bird model.

One appliance keeps the two bird photos over and over (about two keeps a second) while the tests
run; each test uses a fresh browser context and, when it changes an item, an item of its own.
Every step leaves a screenshot in tests/artifacts/ (git-ignored) for a person to look at.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import time
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from appliance.config import Config
from conftest import SHARED
from appliance.web.server import WebServer
from browser import (CHROMIUM, CHROMIUM_ARGS, PASSWORD, PageWatch, RunningAppliance, copy_photos, log_in,
                     replay_config, screenshot, wait_until)

SSD = SHARED / "models" / "tf" / "ssd_mobilenet_v1_1.0_coco_quant.tflite"

pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM}: install Debian's chromium "
                                                     "package (./dev does); these tests never download a browser"),
    pytest.mark.slow,
]

TIMEOUT_MS = 15_000
CHICKADEE = "Poecile atricapillus (Black-capped Chickadee)"
MACAW = "Ara macao (Scarlet Macaw)"


@dataclass
class Device:
    """A running appliance and its review page."""

    config: Config
    running: RunningAppliance | None
    server: WebServer
    claimed: set = field(default_factory=set)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def store(self):
        return self.server.store

    def claim_item(self) -> dict:
        """The newest kept item no other test has claimed, so tests that change items stay apart."""
        row = next(r for r in self.store.rows(order="id desc") if r["id"] not in self.claimed)
        self.claimed.add(row["id"])
        return row


def _serve(config) -> WebServer:
    server = WebServer(config, config_path=None, host="127.0.0.1", port=0)
    server.start()
    return server


@pytest.fixture(scope="module")
def device(tmp_path_factory):
    """The appliance looping over the photos at 10 fps, keeping every bird it sees, and its page."""
    root = tmp_path_factory.mktemp("device")
    config = replay_config(root, copy_photos(root / "photos"))
    running = RunningAppliance(config).start()
    try:
        server = _serve(config)
        try:
            wait_until(lambda: server.store.count() >= 12, "the loop has kept a dozen images")
            yield Device(config, running, server)
        finally:
            server.close()
    finally:
        running.stop()


@pytest.fixture(scope="module")
def stopped_device(tmp_path_factory):
    """A page whose appliance played the photos once and stopped: its loop is not running."""
    root = tmp_path_factory.mktemp("stopped")
    config = replay_config(root, copy_photos(root / "photos"), camera={"fps": 0.0, "replay_loop": False})
    RunningAppliance(config).start().join()
    server = _serve(config)
    yield Device(config, None, server)
    server.close()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        expect.set_options(timeout=TIMEOUT_MS)
        yield browser
        browser.close()


@pytest.fixture
def watched(browser):
    """A page in a fresh browser context, watched for CSP violations, script errors and requests
    off the device; any of those fails the test that caused it."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    watch = PageWatch(page)
    yield page, watch
    context.close()
    assert not watch.problems(), "\n".join(watch.problems())


@pytest.fixture
def page(watched):
    return watched[0]


@pytest.fixture
def watch(watched):
    return watched[1]


def field_text(page, path):
    return page.locator(f'[data-field="{path}"]')


def captions(page) -> list[tuple[str, float]]:
    """(label, score) of every thumbnail in the gallery, from captions like "★ label · 0.74 · audit"."""
    out = []
    for text in page.locator(".thumbs .caption").all_inner_texts():
        parts = text.removeprefix("★ ").split(" · ")
        out.append((parts[0], float(parts[1])))
    return out


def shown_ids(page) -> list[int]:
    """The capture ids of the gallery's thumbnails, in order."""
    return [int(href.rsplit("/", 1)[1]) for href in
            page.locator(".thumbs li > a").evaluate_all("links => links.map(a => a.getAttribute('href'))")]


def wait_for_images(page, selector):
    """Wait until every image matching ``selector`` has loaded with real pixels."""
    page.wait_for_function(
        """selector => { const images = Array.from(document.querySelectorAll(selector));
                         return images.length > 0 && images.every(i => i.complete && i.naturalWidth > 0); }""",
        arg=selector)


def filter_gallery(page, **choices):
    """Set the gallery's filter form (field name → value, as in the URL) and submit it."""
    form = page.locator("#filters")
    for name, value in choices.items():
        control = form.locator(f'[name="{name}"]')
        if control.evaluate("e => e.tagName") == "SELECT":
            control.select_option(value)
        else:
            control.fill(value)
    form.get_by_role("button", name="Filter").click()
    page.wait_for_load_state()


def loop_status(page, device) -> dict:
    """The live status JSON, fetched with the page's own session."""
    response = page.request.get(device.url + "api/v1/status")
    assert response.ok, response.status
    return response.json()


# -- logging in and the status page -----------------------------------------------------------------


def test_logging_in_refuses_a_wrong_password_and_lands_on_a_live_status_page(page, device):
    page.goto(device.url)
    expect(page).to_have_url(re.compile(r"/login\?next=/$"))
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    screenshot(page, "01-login.png")

    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator(".error-message")).to_have_text("wrong password")
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    screenshot(page, "01-login-wrong-password.png")

    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(device.url)
    expect(page.get_by_role("heading", name="Status", exact=True)).to_be_visible()
    expect(field_text(page, "loop.state")).to_have_text("running")
    expect(page.locator("#loop-missing")).to_be_hidden()
    expect(field_text(page, "loop.fps")).to_have_text(re.compile(r"^\d+(\.\d+)?$"))
    assert float(field_text(page, "loop.fps").inner_text()) > 0
    expect(field_text(page, "loop.model.name")).to_have_text("inat-bird")

    # The numbers move while the page stays put: a flag set on this document survives the update.
    page.evaluate("window.notReloaded = true")
    seen = field_text(page, "loop.frames.seen").inner_text()
    page.wait_for_function("""([path, before]) =>
        document.querySelector(`[data-field="${path}"]`).textContent !== before""", arg=["loop.frames.seen", seen])
    assert int(field_text(page, "loop.frames.seen").inner_text()) > int(seen)
    assert page.evaluate("window.notReloaded") is True
    expect(page.locator("#reasons")).to_contain_text("match")
    wait_for_images(page, "img.chart, #last-keep-thumb")
    screenshot(page, "02-status.png")


# -- the gallery ------------------------------------------------------------------------------------


def test_the_gallery_filters_by_label_by_minimum_score_and_by_kind(page, device):
    log_in(page, device.url)
    page.get_by_role("link", name="Gallery").click()
    labels = page.locator("#filters select[name=label] option").all_inner_texts()
    assert {CHICKADEE, MACAW} <= set(labels)

    filter_gallery(page, label=MACAW)
    expect(page).to_have_url(re.compile(r"label=Ara\+macao"))
    shown = captions(page)
    assert shown and {label for label, _ in shown} == {MACAW}
    wait_for_images(page, ".thumbs li:nth-child(-n+6) img")
    screenshot(page, "03-gallery-filtered.png")

    # The chickadee scores just under 0.70 (shown rounded, as 0.70) and the macaw about 0.74; the
    # form accepts steps of 0.05, so the threshold is the first step above the lowest score.
    page.get_by_role("link", name="Clear").click()
    scores = {row["label"]: row["score"] for row in device.store.rows()}
    threshold = math.floor(min(scores.values()) * 20 + 1) / 20
    assert threshold <= max(scores.values()), f"the photos no longer score apart: {scores}"
    filter_gallery(page, min_score=f"{threshold:.2f}")
    expect(page).to_have_url(re.compile(rf"min_score={threshold:.2f}"))
    shown = [device.store.get(i) for i in shown_ids(page)]
    assert shown and all(row["score"] >= threshold for row in shown)
    assert {row["label"] for row in shown} == {label for label, score in scores.items() if score >= threshold}
    screenshot(page, "03-gallery-min-score.png")

    filter_gallery(page, kind="audit")
    expect(page.locator("#selection")).to_contain_text("No kept images match these filters.")
    expect(page.locator(".thumbs li")).to_have_count(0)
    screenshot(page, "03-gallery-audit-empty.png")


def test_an_item_shows_its_full_image_and_the_models_top_five(page, device):
    log_in(page, device.url)
    page.get_by_role("link", name="Gallery").click()
    page.locator(".thumbs li a").first.click()
    page.wait_for_url(re.compile(r"/captures/\d+$"))
    capture_id = int(page.url.rsplit("/", 1)[1])
    row = device.store.get(capture_id)

    wait_for_images(page, "img.full")
    natural = page.locator("img.full").evaluate("i => [i.naturalWidth, i.naturalHeight]")
    assert natural == [row["width"], row["height"]]
    meters = page.locator("table.scores meter")
    expect(meters).to_have_count(5)
    values = [float(v) for v in meters.evaluate_all("ms => ms.map(m => m.value)")]
    assert values == sorted(values, reverse=True) and 0 < values[0] <= 1
    expect(page.locator("table.scores tr").first).to_contain_text(row["label"])
    expect(page.locator("dl.details")).to_contain_text(row["sha256"])
    screenshot(page, "04-item.png")


# -- changing items: star, relabel, delete ----------------------------------------------------------


def test_starring_an_item_toggles_its_button_and_marks_it_in_the_gallery(page, device):
    row = device.claim_item()
    log_in(page, device.url)
    page.goto(f"{device.url}captures/{row['id']}")
    page.locator("#star").click()
    expect(page.locator("#star")).to_have_text("Unstar")
    expect(page.locator("h1")).to_have_text(f"★ {row['label']}")
    assert device.store.get(row["id"])["starred"] == 1

    page.get_by_role("link", name="Gallery").click()
    filter_gallery(page, starred="yes")
    item = page.locator(f'.thumbs li:has(a[href="/captures/{row["id"]}"])')
    expect(item.locator(".caption")).to_have_text(re.compile(rf"^★ {re.escape(row['label'])} · "))
    expect(item).to_have_class("starred")
    screenshot(page, "05-starred.png")

    page.goto(f"{device.url}captures/{row['id']}")
    page.locator("#star").click()
    expect(page.locator("#star")).to_have_text("Star")
    expect(page.locator("h1")).to_have_text(row["label"])


def test_relabelling_shows_the_new_label_and_what_the_model_said(page, device):
    row = device.claim_item()
    new_label = "Erithacus rubecula (European Robin), checked by a person"
    log_in(page, device.url)
    page.goto(f"{device.url}captures/{row['id']}")
    page.get_by_label("label", exact=True).fill(new_label)
    page.get_by_role("button", name="Relabel").click()
    expect(page.locator("h1")).to_have_text(new_label)
    expect(page.get_by_text("the model said")).to_have_text(f"Corrected by a person; the model said {row['label']}.")
    assert device.store.get(row["id"])["corrected_label"] == new_label
    screenshot(page, "05-relabelled.png")

    page.get_by_role("link", name="Gallery").click()
    filter_gallery(page, label=new_label)
    assert captions(page) == [(new_label, pytest.approx(row["score"], abs=0.005))]


def test_deleting_asks_first_then_removes_the_item_for_good(page, device):
    row = device.claim_item()
    image = Path(device.config.storage.data_dir) / row["image_path"]
    assert image.is_file()
    log_in(page, device.url)
    page.goto(f"{device.url}captures/{row['id']}")
    page.get_by_role("link", name="Delete…").click()
    page.wait_for_url(re.compile(rf"/captures/{row['id']}/delete$"))
    expect(page.get_by_role("heading", name="Delete this image?")).to_be_visible()
    wait_for_images(page, "main img")
    screenshot(page, "05-delete-confirm.png")
    assert device.store.get(row["id"]) is not None  # asking is not deleting

    page.get_by_role("button", name="Delete").click()
    page.wait_for_url(re.compile(r"/gallery$"))
    expect(page.locator(f'a[href="/captures/{row["id"]}"]')).to_have_count(0)
    response = page.goto(f"{device.url}captures/{row['id']}")
    assert response.status == 404
    expect(page.locator(".error-message")).to_have_text(f"no capture {row['id']}")
    screenshot(page, "05-deleted-404.png")
    assert device.store.get(row["id"]) is None and not image.exists()


# -- downloading a selection ------------------------------------------------------------------------


def test_downloading_selected_items_gives_a_zip_of_their_images_and_a_manifest(page, device, tmp_path):
    log_in(page, device.url)
    page.get_by_role("link", name="Gallery").click()
    boxes = page.locator('.thumbs input[name="ids"]')
    count = page.locator("#selected-count")
    expect(count).to_have_text("0 selected")

    select_all = page.get_by_role("button", name="Select all on this page")
    select_all.click()
    expect(count).to_have_text(f"{boxes.count()} selected")
    assert all(boxes.evaluate_all("bs => bs.map(b => b.checked)"))
    select_all.click()
    expect(count).to_have_text("0 selected")
    assert not any(boxes.evaluate_all("bs => bs.map(b => b.checked)"))

    for i in (0, 2, 4):
        boxes.nth(i).check()
    expect(count).to_have_text("3 selected")
    ids = sorted(int(boxes.nth(i).get_attribute("value")) for i in (0, 2, 4))
    screenshot(page, "08-download-selected.png")
    with page.expect_download() as download_info:
        page.get_by_role("button", name="Download selected (zip)").click()
    download = download_info.value
    assert download.suggested_filename == "appliance-images.zip"
    path = tmp_path / download.suggested_filename
    download.save_as(path)

    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        assert sorted(n for n in names if not n.endswith(".jpg")) == ["manifest.csv", "manifest.jsonl"]
        assert len([n for n in names if n.endswith(".jpg")]) == 3
        rows = list(csv.DictReader(io.StringIO(archive.read("manifest.csv").decode())))
        jsonl = [json.loads(line) for line in archive.read("manifest.jsonl").decode().splitlines()]
        assert sorted(int(r["id"]) for r in rows) == ids == sorted(r["id"] for r in jsonl)
        for entry in jsonl:
            on_device = device.store.get(entry["id"])
            assert hashlib.sha256(archive.read(entry["file"])).hexdigest() == on_device["sha256"] == entry["sha256"]


# -- controlling the loop ---------------------------------------------------------------------------


def test_pausing_stops_classifying_and_resuming_starts_again(page, device):
    log_in(page, device.url)
    state = field_text(page, "loop.state")
    expect(state).to_have_text("running")
    try:
        page.get_by_role("button", name="Pause").click()
        expect(page.locator(".flash.ok")).to_have_text("Paused")
        expect(state).to_have_text("paused")
        expect(page.locator("#reasons")).to_contain_text("paused")
        page.wait_for_timeout(500)  # a frame already being classified when the pause came finishes
        classified = loop_status(page, device)["loop"]["frames"]["classified"]
        page.wait_for_timeout(1500)  # several frames' time at 10 fps, and several status writes
        after = loop_status(page, device)["loop"]["frames"]
        assert after["classified"] == classified
        assert after["by_reason"]["paused"] > 0
        screenshot(page, "06-paused.png")

        page.get_by_role("button", name="Resume").click()
        expect(page.locator(".flash.ok")).to_have_text("Resumed")
        expect(state).to_have_text("running")
        wait_until(lambda: loop_status(page, device)["loop"]["frames"]["classified"] > classified,
                   "frames are classified again", timeout_s=10)
        screenshot(page, "06-resumed.png")
    finally:
        device.running.appliance.loop.resume()  # never leave the shared appliance paused for later tests


def test_with_the_loop_stopped_the_status_page_says_so_and_pause_is_refused(page, stopped_device):
    log_in(page, stopped_device.url)
    expect(page.locator("#loop-missing")).to_be_visible()
    expect(page.locator("#loop-missing")).to_have_text(re.compile(r"The capture loop is not running"))
    expect(field_text(page, "loop.state")).to_have_text("not running")
    expect(field_text(page, "items")).to_have_text("2")
    expect(page.locator("#detector")).to_be_hidden()  # no detector configured: no row for one
    screenshot(page, "07-loop-not-running.png")

    page.get_by_role("button", name="Pause").click()
    expect(page.locator(".flash.error")).to_have_text("The capture loop is not running, so it cannot be controlled.")
    expect(page.locator(".flash.ok")).to_have_count(0)
    screenshot(page, "07-pause-refused.png")


def test_with_a_detector_the_status_page_says_what_a_frame_costs(page, tmp_path):
    photos = copy_photos(tmp_path / "photos")
    config = replay_config(tmp_path, photos, camera={"fps": 0.0, "replay_loop": False, "replay_repeat": 3},
                           detector={"path": str(SSD)})
    RunningAppliance(config).start().join()
    server = _serve(config)
    try:
        log_in(page, server.url)
        expect(page.locator("#detector")).to_be_visible()
        expect(field_text(page, "loop.detector.name")).to_have_text("coco-ssd")
        # One detector inference a frame, and one crop classified on each of the two birds' six frames.
        frames = 3 * len([p for p in photos.iterdir() if p.suffix in (".bmp", ".jpg")])
        expect(field_text(page, "loop.detector.inferences_per_frame.mean")).to_have_text(f"{1 + 6 / frames:.2f}".rstrip("0"))
        expect(field_text(page, "items")).to_have_text("2")
        screenshot(page, "07-detector-status.png")
    finally:
        server.close()


def test_the_status_page_shows_each_link_its_queue_and_its_problem(page, tmp_path):
    from mosquitto import Broker

    from appliance.links.service import LinksService

    broker = Broker(tmp_path / "broker").start()
    config = replay_config(tmp_path, copy_photos(tmp_path / "photos"), camera={"fps": 0.0, "replay_loop": False},
                           mqtt={"url": broker.url}, notify={"urls": ("json://127.0.0.1:9/",)})
    RunningAppliance(config).start().join()
    service = LinksService(config)
    for link in service.links:
        link.start()
    deadline = time.monotonic() + 20
    while service.outbox.depth()["mqtt"] or not service.links[0].is_up():
        assert time.monotonic() < deadline, service.state()
        service.step()
        time.sleep(0.05)
    service.write_state()
    server = _serve(config)
    try:
        log_in(page, server.url)
        expect(page.locator("#links")).to_be_visible()
        expect(page.locator("#link-mqtt")).to_contain_text("connected · 0 waiting")
        expect(page.locator("#link-upload")).to_be_hidden()  # not configured
        # Nothing listens where the notifications go: they wait, and the page says why.
        expect(page.locator("#link-notify")).to_contain_text("2 waiting")
        expect(page.locator("#link-notify .warning")).to_contain_text("notify.urls[0] did not take the notification")
        screenshot(page, "07-links.png")
    finally:
        server.close()
        service.close()
        broker.stop()


# -- on a phone ------------------------------------------------------------------------------------


PHONE = {"width": 390, "height": 844}


def scrolls_sideways(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth > document.documentElement.clientWidth")


def test_on_a_phones_screen_the_status_and_item_pages_fit_without_sideways_scrolling(page, device):
    page.set_viewport_size(PHONE)
    log_in(page, device.url)
    expect(field_text(page, "loop.state")).to_have_text("running")
    wait_for_images(page, "img.chart, #last-keep-thumb")
    assert not scrolls_sideways(page)
    screenshot(page, "09-phone-status.png")

    page.goto(f"{device.url}captures/{device.claim_item()['id']}")
    wait_for_images(page, "img.full")
    assert not scrolls_sideways(page)
    screenshot(page, "09-phone-item.png")


def test_on_a_phones_screen_the_gallery_fits_even_with_a_long_label(page, device):
    page.set_viewport_size(PHONE)
    log_in(page, device.url)
    page.goto(f"{device.url}captures/{device.claim_item()['id']}")
    page.get_by_label("label", exact=True).fill("Erithacus rubecula (European Robin), juvenile, checked by a person")
    page.get_by_role("button", name="Relabel").click()
    expect(page.locator("h1")).to_contain_text("juvenile")
    page.get_by_role("link", name="Gallery").click()
    wait_for_images(page, ".thumbs li:nth-child(-n+4) img")
    # Only the first screen: further down, lazy thumbnails are not loaded until scrolled to.
    screenshot(page, "09-phone-gallery.png", full_page=False)
    assert not scrolls_sideways(page), "the gallery scrolls sideways"


# -- what the page may load -------------------------------------------------------------------------


def test_no_page_breaks_its_content_security_policy_or_reaches_off_the_device(page, watch, device, browser):
    response = page.goto(device.url)
    assert "script-src 'self'" in response.headers["content-security-policy"]
    log_in(page, device.url)
    page.wait_for_timeout(2500)  # at least one live refresh of the status page
    page.get_by_role("link", name="Gallery").click()
    wait_for_images(page, ".thumbs li:nth-child(-n+6) img")
    page.locator(".thumbs li a").first.click()
    wait_for_images(page, "img.full")
    page.get_by_role("link", name="Delete…").click()  # only the question; nothing is deleted
    page.goto(device.url + "captures/999999999")
    assert watch.csp_violations == [] and watch.script_errors == [] and watch.foreign_requests == []
    assert any(url.endswith("/static/status.js") for url in watch.requests)
    assert any(url.endswith("/static/gallery.js") for url in watch.requests)
    assert any("/api/v1/status" in url for url in watch.requests)

    # The watch is not blind: a page that does break its policy is caught.
    context = browser.new_context()
    try:
        canary = context.new_page()
        canary_watch = PageWatch(canary)
        canary.goto(device.url + "login")
        canary.evaluate("""() => { const i = document.createElement("img");
                                    i.src = "http://192.0.2.1/tracker.png"; document.body.append(i); }""")
        wait_until(lambda: canary_watch.csp_violations, "the canary's CSP violation is reported", timeout_s=10)
    finally:
        context.close()
