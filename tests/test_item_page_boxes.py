"""A detector's keep on the review page (issue 15): its box drawn over the image, what the detector
said, its track, its crop at ``/captures/<id>/crop``, and its fields in the sync API. Flask's test
client over a real store for the routes and the HTML; Debian's Chromium for where the box lands."""

from __future__ import annotations

import hashlib
import re

import pytest
from playwright.sync_api import sync_playwright

from appliance.storage.images import DETECTION_FIELDS
from appliance.web.server import WebServer
from browser import CHROMIUM, CHROMIUM_ARGS, PASSWORD as BROWSER_PASSWORD, PageWatch, log_in, replay_config, screenshot
from test_detection_keeps_store import EVENT, crop_of, detector_record, keep, photo, record  # noqa: F401 (a fixture)
from test_web import PASSWORD, basic, client, make_client, setup  # noqa: F401 (fixtures)

# The macaw's box in parrot.jpg: [left, top, right, bottom] of the frame.
BOX = (0.21, 0.1, 0.74, 0.93)


@pytest.fixture
def detected(setup, photo):  # noqa: F811 (the fixture imported above)
    """A detector's keep with its crop, added to test_web's sixty keeps without a detector."""
    _, store, _ = setup
    crop = crop_of(photo, BOX)
    return keep(store, photo, detector_record(), crop), crop


def rect_of(html) -> dict[str, float]:
    rect = re.search(r"<svg class=\"boxes\"[^>]*>\s*<rect ([^>]*)>", html).group(1)
    return {k: float(v) for k, v in re.findall(r'\b(x|y|width|height)="([^"]*)"', rect)}


def test_the_item_page_draws_the_box_over_the_image_with_what_the_detector_said(client, detected):  # noqa: F811
    capture_id, _ = detected
    page = client.get(f"/captures/{capture_id}").text
    assert '<svg class="boxes" viewBox="0 0 1 1" preserveAspectRatio="none"' in page
    assert rect_of(page) == pytest.approx({"x": 0.21, "y": 0.1, "width": 0.53, "height": 0.83})
    caption = re.search(r'<p class="detection"[^>]*>(.*?)</p>', page, re.S).group(1)
    assert caption.startswith("bird 0.78 — detector ssd_mobilenet_v1_1.0_coco_quant · event ")
    assert f'<abbr title="{EVENT}">{EVENT[:8]}</abbr>, frame 2' in caption
    assert f'<img class="crop" src="/captures/{capture_id}/crop"' in page
    for key in DETECTION_FIELDS:  # and every field in the details
        assert f"<dt>{key}</dt>" in page


def test_the_crop_is_served_as_a_jpeg_cached_privately_like_the_thumbnail(client, setup, detected):  # noqa: F811
    _, store, _ = setup
    capture_id, crop = detected
    response = client.get(f"/captures/{capture_id}/crop")
    assert response.status_code == 200 and response.mimetype == "image/jpeg" and response.data == crop
    assert response.headers["ETag"].strip('"') == f"{store.get(capture_id)['sha256']}-crop"
    cache = response.headers["Cache-Control"]
    assert "private" in cache and "public" not in cache and "max-age=86400" in cache
    assert client.get(f"/captures/{capture_id}/crop", headers={"If-None-Match": response.headers["ETag"]}).status_code == 304


def test_the_crop_needs_the_same_login_as_the_thumbnail(setup, detected):  # noqa: F811
    capture_id, _ = detected
    stranger = make_client(setup)
    for what in ("thumb", "crop"):
        response = stranger.get(f"/captures/{capture_id}/{what}")
        assert response.status_code == 302 and response.headers["Location"].startswith("/login")
    assert stranger.get(f"/captures/{capture_id}/crop", headers=basic(PASSWORD)).data == detected[1]


def test_a_keep_without_a_detector_has_no_box_no_crop_and_a_404_for_one(client, detected):  # noqa: F811
    page = client.get("/captures/5").text
    assert "<svg" not in page and 'class="crop"' not in page and 'class="detection"' not in page
    assert "event_id" not in page and 'class="photo"' in page
    response = client.get("/captures/5/crop")
    assert response.status_code == 404 and "has no crop" in response.text
    assert client.get("/captures/9999/crop").status_code == 404


def test_labels_and_names_from_model_files_are_escaped(client, setup, photo):  # noqa: F811
    _, store, _ = setup
    hostile = detector_record(detector_label='<script>alert("label")</script>',
                              detector_name='"><img src=x onerror=alert(1)>')
    capture_id = keep(store, photo, hostile, crop_of(photo, BOX))
    page = client.get(f"/captures/{capture_id}").text
    assert "<script>alert" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(&#34;label&#34;)&lt;/script&gt;" in page
    assert "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in page
    assert not re.search(r"\sstyle=", page) and not re.search(r"<script(?![^>]*\bsrc=)", page)


def test_a_box_spoilt_in_the_database_shows_no_box_and_the_page_still_answers(client, setup, detected):  # noqa: F811
    _, store, _ = setup
    capture_id, _ = detected
    for spoilt in ("[0.9,0.1,0.2,0.5]", "not json", "[" * 5000):
        store.db.execute("update captures set box = ? where id = ?", [spoilt, capture_id])
        page = client.get(f"/captures/{capture_id}")
        assert page.status_code == 200 and "<svg" not in page.text


def test_the_sync_api_lists_a_detector_keeps_box_track_and_detector(setup, detected):  # noqa: F811
    capture_id, _ = detected
    items = make_client(setup).get("/api/v1/captures?limit=1000", headers=basic(PASSWORD)).json["items"]
    by_id = {item["id"]: item for item in items}
    assert by_id[capture_id]["box"] == list(BOX)
    assert {k: by_id[capture_id][k] for k in ("event_id", "event_frame", "detector_label", "detector_score",
                                              "detector_name")} == \
        {"event_id": EVENT, "event_frame": 2, "detector_label": "bird", "detector_score": 0.78,
         "detector_name": "ssd_mobilenet_v1_1.0_coco_quant"}
    assert all(by_id[1][k] is None for k in ("box", "event_id", "event_frame", "detector_label", "detector_score"))


# -- in a real browser -----------------------------------------------------------------------------

@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM}: install Debian's chromium package")
@pytest.mark.slow
def test_in_a_browser_the_box_lands_on_the_birds_place_in_the_image(tmp_path, photo):  # noqa: F811
    config = replay_config(tmp_path, tmp_path / "no-photos")
    server = WebServer(config, config_path=None, host="127.0.0.1", port=0)
    try:
        capture_id = keep(server.store, photo, detector_record(), crop_of(photo, BOX))
        plain_id = keep(server.store, photo, record())
        server.start()
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
            for width in (1280, 420):  # side by side with the card, and stacked on a phone
                page = browser.new_page(viewport={"width": width, "height": 900})
                watch = PageWatch(page)
                log_in(page, server.url, BROWSER_PASSWORD)
                page.goto(f"{server.url}captures/{capture_id}")
                page.wait_for_function("() => { const i = document.querySelector('img.full'); "
                                       "return i.complete && i.naturalWidth > 0; }")
                image = page.locator("img.full").bounding_box()
                rect = page.locator("svg.boxes rect").bounding_box()
                # The 3 px line is centred on the box's edge (3 px on screen however the image is scaled:
                # a line 3 of the image's units wide would cover it), so its outside is 1.5 px further out.
                expected = {"x": image["x"] + BOX[0] * image["width"] - 1.5, "y": image["y"] + BOX[1] * image["height"] - 1.5,
                            "width": (BOX[2] - BOX[0]) * image["width"] + 3, "height": (BOX[3] - BOX[1]) * image["height"] + 3}
                assert rect == pytest.approx(expected, abs=1), (rect, expected)
                assert page.locator("img.crop").evaluate("i => i.complete && i.naturalWidth") == 224
                screenshot(page, f"item-box-{width}.png")
                page.goto(f"{server.url}captures/{plain_id}")
                assert page.locator("svg").count() == 0 and page.locator("img.crop").count() == 0
                assert not watch.problems(), watch.problems()
                page.close()
            browser.close()
    finally:
        server.close()
