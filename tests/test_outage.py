"""The outage acceptance run (``bench.outage``, issue 16) at a small scale: keeps queued while a real
Mosquitto and a real SeaweedFS are down, `appliance links` running throughout as its own process; both
back, down again in the middle of each link's drain, back: every event delivered, every image in the
bucket once with its SHA-256, every keep marked, memory flat. And its verdict, on plain values."""

from __future__ import annotations

import copy

import pytest
from conftest import IMAGES

from appliance.bench.outage import memory_summary, run
from appliance.bench.outage_checks import MAX_GROWTH_MB, SENT_AGAIN_PER_RESTART, problems

KEEPS = 200


@pytest.mark.slow
def test_keeps_queued_through_outages_are_all_delivered_and_uploaded_once_and_verified(tmp_path):
    result = run(keeps=KEEPS, images_dir=IMAGES, cut_s=2.0, sample_s=0.25, stall_s=60.0, work=tmp_path)

    outage = result["outage"]  # what links.json said before the servers came back
    assert not outage["mqtt"]["connected"] and outage["mqtt"]["queued"] >= KEEPS
    assert not outage["upload"]["connected"] and "cannot reach the object store" in outage["upload"]["problem"]
    events, drain = result["events"], result["drain"]
    assert (events["unique"], events["missing"], events["not_a_keep"], events["sha256_mismatched"]) == (KEEPS, 0, 0, 0)
    assert events["sent_again"] <= SENT_AGAIN_PER_RESTART * len(drain["cuts"]), events
    assert result["bucket"] == {"objects": 2 * KEEPS, "images": KEEPS, "sidecars": KEEPS, "missing_images": 0,
                                "missing_sidecars": 0, "not_a_keep": 0, "listed_twice": 0, "images_verified": KEEPS,
                                "images_mismatched": 0, "sidecars_mismatched": 0}
    assert result["store"] == {"rows": KEEPS, "unique_sha256": KEEPS, "marked_uploaded": KEEPS,
                               "outbox_left": {"mqtt": 0, "upload": 0}}
    assert drain["is_drained"] and drain["cut_mid_drain"] == ["mqtt", "upload"], drain
    assert result["rss"]["samples"] >= 8 and result["rss"]["growth_mb"] <= MAX_GROWTH_MB, result["rss"]
    assert result["links_stopped"]["exit"] == 0
    assert result["problems"] == []


def passed() -> dict:
    """A result as ``run`` returns it for a run that passed (two cuts: events repeated by them)."""
    return {"keeps": 100, "cut_s": 5.0,
            "drain": {"is_drained": True, "cuts": [{}, {}], "cut_mid_drain": ["mqtt", "upload"]},
            "events": {"received": 150, "unique": 100, "missing": 0, "repeated": 50, "redelivered_by_broker": 46,
                       "sent_again": 4, "not_a_keep": 0, "sha256_mismatched": 0, "unreadable": 0},
            "bucket": {"objects": 200, "images": 100, "sidecars": 100, "missing_images": 0, "missing_sidecars": 0,
                       "not_a_keep": 0, "listed_twice": 0, "images_verified": 100, "images_mismatched": 0,
                       "sidecars_mismatched": 0},
            "store": {"rows": 100, "unique_sha256": 100, "marked_uploaded": 100, "outbox_left": {"mqtt": 0, "upload": 0}},
            "rss": {"samples": 40, "growth_mb": 3.0}, "links_stopped": {"exit": 0, "seconds": 0.3}}


@pytest.mark.parametrize("section, field, value, line", [
    ("events", "missing", 1, "1 keeps' events never reached the subscriber (lost)"),
    ("bucket", "missing_images", 2, "2 keeps' images are not in the bucket (lost)"),
    ("bucket", "not_a_keep", 1, "1 objects in the bucket are no keep's image or sidecar (duplicates)"),
    ("bucket", "images_mismatched", 1, "1 images in the bucket differ from their keep (SHA-256)"),
    ("store", "marked_uploaded", 99, "1 keeps are not marked uploaded_at"),
    ("events", "sent_again", 5, "5 events sent twice by the links, more than 4 that 2 broker restart(s) mid-drain"),
    ("rss", "growth_mb", 20.5, "the links process grew by 20.5 MB between the drain's first and last quarters"),
    ("drain", "cut_mid_drain", ["mqtt"], "no outage came in the middle of the upload link's drain"),
    ("links_stopped", "seconds", None, "appliance links did not stop cleanly on SIGTERM"),
])
def test_the_verdict_names_what_was_lost_duplicated_unverified_or_grown(section, field, value, line):
    assert problems(passed()) == []
    result = copy.deepcopy(passed())
    result[section][field] = value
    [said] = problems(result)
    assert said.startswith(line), said


def test_without_a_restart_mid_drain_the_links_may_send_no_event_twice():
    result = copy.deepcopy(passed())
    result["cut_s"], result["drain"]["cuts"], result["drain"]["cut_mid_drain"] = None, [], []
    assert problems(result) == ["4 events sent twice by the links, more than 0 that 0 broker restart(s) mid-drain "
                                "can explain (duplicates)"]


def test_memory_growth_is_the_last_quarters_median_less_the_first_quarters():
    # One spike in each quarter: the medians ignore it, the peak does not.
    samples = [(0.0, 100_000), (1.0, 150_000), (2.0, 100_000), (4.0, 102_400), (6.0, 110_240), (7.0, 110_240),
               (7.5, 200_000), (8.0, 110_240)]
    summary = memory_summary(samples)
    assert summary["growth_mb"] == 10.0 and summary["peak_mb"] == 195.3 and summary["end_mb"] == 107.7
    assert summary["start_mb"] == 97.7 and summary["samples"] == 8
    assert memory_summary(samples[:3])["growth_mb"] is None  # too few to tell
