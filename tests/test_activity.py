"""The activity chart: keeps counted per hour and per day from a real store, and the SVG drawn from them."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from datetime import datetime, timezone

import numpy as np
import pytest
from PIL import Image

from appliance.pipeline.writer import encode_jpeg
from appliance.storage.activity import Activity, keeps_per_bucket
from appliance.storage.store import Store, metadata_comment
from appliance.web.chart import activity_svg

SVG = "{http://www.w3.org/2000/svg}"
NOW_S = datetime(2026, 11, 25, 14, 30, tzinfo=timezone.utc).timestamp()
MACAW = "Ara macao (Scarlet Macaw)"


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path / "data")
    yield store
    store.close()


def keep(store, captured_at, label=MACAW, kind="match", corrected=None, missing=0, times=1):
    """Rows straight into the table: the chart only reads them, so no image files are needed."""
    for _ in range(times):
        store.db["captures"].insert({"captured_at": captured_at, "label": label, "kind": kind,
                                     "corrected_label": corrected, "missing": missing,
                                     "image_path": "x.jpg", "sha256": "00" * 32, "bytes": 1})


# -- counting ------------------------------------------------------------------------------------------

def test_hour_buckets_cover_the_last_48_hours_oldest_first_with_empty_ones_present(store):
    activity = keeps_per_bucket(store, "hour", NOW_S)
    assert activity.period == "hour" and len(activity.bucket_starts) == 48
    assert activity.bucket_starts[0] == "2026-11-23T15:00:00Z"
    assert activity.bucket_starts[-1] == "2026-11-25T14:00:00Z"
    assert list(activity.bucket_starts) == sorted(activity.bucket_starts)
    assert activity.total == 0 and activity.labels == () and dict(activity.counts) == {}


def test_keeps_are_counted_per_hour_including_both_edges_of_the_range(store):
    keep(store, "2026-11-23T14:59:59.999Z")  # just before the oldest bucket
    keep(store, "2026-11-23T15:00:00.000Z")  # the first instant of the oldest bucket
    keep(store, "2026-11-25T13:59:59.999Z")
    keep(store, "2026-11-25T14:00:00.000Z", times=2)  # the first instant of the newest bucket
    keep(store, "2026-11-25T14:59:59.999Z")  # later than now, but in the bucket now is in
    keep(store, "2026-11-25T15:00:00.000Z")  # the next bucket: not yet charted
    activity = keeps_per_bucket(store, "hour", NOW_S)
    assert dict(activity.counts) == {("2026-11-23T15:00:00Z", MACAW): 1, ("2026-11-25T13:00:00Z", MACAW): 1,
                                     ("2026-11-25T14:00:00Z", MACAW): 3}
    assert activity.total == 5
    assert activity.count("2026-11-24T09:00:00Z", MACAW) == 0


def test_keeps_are_counted_per_utc_day_over_the_last_30_days(store):
    keep(store, "2026-10-26T23:59:59.999Z")
    keep(store, "2026-10-27T00:00:00.000Z")
    keep(store, "2026-11-25T00:00:00.000Z")
    keep(store, "2026-11-25T23:59:59.999Z")
    keep(store, "2026-11-26T00:00:00.000Z")
    activity = keeps_per_bucket(store, "day", NOW_S)
    assert len(activity.bucket_starts) == 30
    assert (activity.bucket_starts[0], activity.bucket_starts[-1]) == ("2026-10-27", "2026-11-25")
    assert dict(activity.counts) == {("2026-10-27", MACAW): 1, ("2026-11-25", MACAW): 2}


def test_the_number_of_buckets_can_be_chosen(store):
    keep(store, "2026-11-25T12:10:00.000Z")
    keep(store, "2026-11-25T11:10:00.000Z")
    activity = keeps_per_bucket(store, "hour", NOW_S, buckets=3)
    assert activity.bucket_starts == ("2026-11-25T12:00:00Z", "2026-11-25T13:00:00Z", "2026-11-25T14:00:00Z")
    assert activity.total == 1


def test_a_corrected_keep_counts_under_its_correction(store):
    keep(store, "2026-11-25T14:01:00.000Z", label="Ara ararauna", corrected=MACAW)
    keep(store, "2026-11-25T14:02:00.000Z", label="Ara ararauna")
    activity = keeps_per_bucket(store, "hour", NOW_S)
    assert activity.count("2026-11-25T14:00:00Z", MACAW) == 1
    assert activity.count("2026-11-25T14:00:00Z", "Ara ararauna") == 1


def test_audit_keeps_and_rows_with_missing_files_are_left_out(store):
    keep(store, "2026-11-25T14:01:00.000Z")
    keep(store, "2026-11-25T14:02:00.000Z", kind="audit")
    keep(store, "2026-11-25T14:03:00.000Z", missing=1)
    assert keeps_per_bucket(store, "hour", NOW_S).total == 1
    assert keeps_per_bucket(store, "hour", NOW_S, kinds=("match", "audit")).total == 2


def test_labels_are_ordered_by_their_total_most_first_then_by_name(store):
    keep(store, "2026-11-25T10:00:00.000Z", label="b", times=2)
    keep(store, "2026-11-25T11:00:00.000Z", label="c", times=3)
    keep(store, "2026-11-25T12:00:00.000Z", label="a", times=2)
    keep(store, "2026-11-25T13:00:00.000Z", label="d")
    activity = keeps_per_bucket(store, "hour", NOW_S)
    assert activity.labels == ("c", "a", "b", "d")
    assert activity.label_total("a") == 2 and activity.bucket_total("2026-11-25T11:00:00Z") == 3


def test_a_keep_written_by_the_store_itself_is_counted(store):
    rec = {"captured_at": "2026-11-25T14:15:30.123Z", "clock_source": "ntp", "label": MACAW, "score": 0.74,
           "top_k": json.dumps([[MACAW, 0.74]]), "kind": "match", "reason": "match", "model_name": "inat-bird",
           "model_sha256": "ab" * 32, "backend": "cpu", "inference_ms": 9.5, "source": "parrot.jpg",
           "width": 64, "height": 48}
    image = encode_jpeg(Image.fromarray(np.full((48, 64, 3), 120, np.uint8)), 90, metadata_comment(rec))
    store.add(rec, image, b"thumb")
    assert dict(keeps_per_bucket(store, "day", NOW_S).counts) == {("2026-11-25", MACAW): 1}


def test_an_unknown_period_or_no_buckets_is_refused(store):
    with pytest.raises(ValueError, match="week"):
        keeps_per_bucket(store, "week", NOW_S)
    with pytest.raises(ValueError, match="buckets"):
        keeps_per_bucket(store, "hour", NOW_S, buckets=0)


# -- drawing ---------------------------------------------------------------------------------------------

def activity_of(counts, period="hour", buckets=("2026-11-25T12:00:00Z", "2026-11-25T13:00:00Z",
                                                "2026-11-25T14:00:00Z")):
    """An Activity from plain values, ordered as keeps_per_bucket orders it."""
    per_label = {}
    for (_, label), n in counts.items():
        per_label[label] = per_label.get(label, 0) + n
    labels = tuple(sorted(per_label, key=lambda label: (-per_label[label], label)))
    return Activity(period, tuple(buckets), labels, counts, sum(counts.values()))


def parse(svg):
    root = ET.fromstring(svg)  # raises unless well-formed
    assert root.tag == SVG + "svg"
    return root


def segments(root):
    return [e for e in root.iter(SVG + "rect") if e.get("class") == "segment"]


def legend_names(root):
    return [item.find(SVG + "title").text for item in root.iter(SVG + "g") if item.get("class") == "legend-item"]


SEVEN = {("2026-11-25T12:00:00Z", "a"): 7, ("2026-11-25T12:00:00Z", "b"): 6, ("2026-11-25T14:00:00Z", "c"): 5,
         ("2026-11-25T14:00:00Z", "d"): 4, ("2026-11-25T14:00:00Z", "e"): 3, ("2026-11-25T14:00:00Z", "f"): 2,
         ("2026-11-25T14:00:00Z", "g"): 1}


def test_the_chart_is_an_accessible_svg_summarising_the_keeps(store):
    keep(store, "2026-11-25T14:01:00.000Z", times=142)
    root = parse(activity_svg(keeps_per_bucket(store, "hour", NOW_S)))
    assert root.get("role") == "img"
    assert root.get("aria-label") == root.find(SVG + "title").text == "142 keeps in the last 48 hours"


def test_each_nonzero_label_in_a_bucket_is_one_segment_and_the_rest_fold_into_other():
    root = parse(activity_svg(activity_of(SEVEN), max_labels=6))
    # Bucket 12:00 has a and b; bucket 14:00 has c, d, e, and f+g folded into one "other".
    assert [(s.get("data-label")) for s in segments(root)] == ["a", "b", "c", "d", "e", "other"]
    other = segments(root)[-1]
    assert other.get("fill") == "#999999"
    assert other.find(SVG + "title").text.startswith("Nov 25 14:00 — other: 3")


def test_segment_heights_are_proportional_to_counts_and_bars_to_bucket_totals():
    counts = {("2026-11-25T12:00:00Z", "a"): 10, ("2026-11-25T12:00:00Z", "b"): 30,
              ("2026-11-25T14:00:00Z", "a"): 5}
    root = parse(activity_svg(activity_of(counts)))
    per_keep = {float(s.get("height")) / int(s.find(SVG + "title").text.rsplit(": ", 1)[1]) for s in segments(root)}
    assert max(per_keep) == pytest.approx(min(per_keep), rel=1e-3)
    heights = {}
    for bucket in root.iter(SVG + "g"):
        if bucket.get("class") == "bucket":
            heights[bucket.get("data-bucket")] = sum(float(s.get("height")) for s in segments(bucket))
    assert heights["2026-11-25T13:00:00Z"] == 0
    assert heights["2026-11-25T12:00:00Z"] / heights["2026-11-25T14:00:00Z"] == pytest.approx(40 / 5, rel=1e-3)


def test_segments_stack_upwards_without_gaps():
    counts = {("2026-11-25T12:00:00Z", "a"): 3, ("2026-11-25T12:00:00Z", "b"): 2}
    lower, upper = segments(parse(activity_svg(activity_of(counts))))
    assert float(upper.get("y")) + float(upper.get("height")) == pytest.approx(float(lower.get("y")), abs=0.01)


def test_the_legend_shows_the_top_labels_then_other_in_distinct_colours():
    root = parse(activity_svg(activity_of(SEVEN), max_labels=6))
    assert legend_names(root) == ["a", "b", "c", "d", "e", "other"]
    swatches = [e.get("fill") for g in root.iter(SVG + "g") if g.get("class") == "legend-item"
                for e in g.iter(SVG + "rect")]
    assert len(set(swatches)) == 6


def test_the_legend_needs_no_other_when_every_label_fits():
    root = parse(activity_svg(activity_of(SEVEN), max_labels=7))
    assert legend_names(root) == ["a", "b", "c", "d", "e", "f", "g"]
    assert "other" not in [s.get("data-label") for s in segments(root)]


def test_a_long_label_is_ellipsised_in_the_legend_but_whole_in_its_tooltip():
    long = "Ara macao (Scarlet Macaw)"
    counts = {("2026-11-25T12:00:00Z", long): 9, **{("2026-11-25T13:00:00Z", c): 1 for c in "bcdef"}}
    root = parse(activity_svg(activity_of(counts)))  # six legend entries share 680 pixels
    shown = [t.text for g in root.iter(SVG + "g") if g.get("class") == "legend-item" for t in g.iter(SVG + "text")]
    assert shown[0].endswith("…") and long.startswith(shown[0][:-1]) and len(shown[0]) < 20
    assert shown[1:] == ["b", "c", "d", "e", "f"]
    assert legend_names(root)[0] == long
    assert segments(root)[0].find(SVG + "title").text == f"Nov 25 12:00 — {long}: 9"


def test_a_tooltip_names_the_hour_the_label_and_the_count():
    root = parse(activity_svg(activity_of({("2026-11-25T14:00:00Z", MACAW): 3})))
    assert segments(root)[0].find(SVG + "title").text == f"Nov 25 14:00 — {MACAW}: 3"


def test_day_buckets_are_named_by_month_and_day():
    days = tuple(f"2026-11-{d:02d}" for d in range(20, 26))
    root = parse(activity_svg(activity_of({("2026-11-25", "a"): 2}, period="day", buckets=days)))
    assert segments(root)[0].find(SVG + "title").text == "Nov 25 — a: 2"
    assert "Nov 25" in axis_labels(root)
    assert root.get("aria-label") == "2 keeps in the last 6 days"


def axis_labels(root, axis="x-axis"):
    return [t.text for g in root.iter(SVG + "g") if g.get("class") == axis for t in g.iter(SVG + "text")]


def test_x_axis_labels_are_thinned_so_they_do_not_overlap():
    hours = tuple(f"2026-11-{24 + h // 24}T{h % 24:02d}:00:00Z" for h in range(48))
    root = parse(activity_svg(activity_of({(hours[0], "a"): 1}, buckets=hours)))
    texts = [t for g in root.iter(SVG + "g") if g.get("class") == "x-axis" for t in g.iter(SVG + "text")]
    assert 2 <= len(texts) < 48
    assert all(re.fullmatch(r"\d\d:00", t.text) for t in texts)
    xs = [float(t.get("x")) for t in texts]
    assert min(b - a for a, b in zip(xs, xs[1:])) > 5 * 7  # wider than "14:00" at any sans-serif 11px


def test_y_axis_ticks_are_round_numbers_from_zero_reaching_the_tallest_bar():
    root = parse(activity_svg(activity_of({("2026-11-25T12:00:00Z", "a"): 137})))
    ticks = [int(t) for t in axis_labels(root, "y-axis")]
    assert ticks[0] == 0 and ticks[-1] >= 137 and 3 <= len(ticks) <= 6
    step = ticks[1]
    assert str(step)[0] in "125" and set(str(step)[1:]) <= {"0"}
    assert ticks == list(range(0, ticks[-1] + 1, step))


def test_a_label_with_markup_characters_is_escaped_and_reads_back_unchanged():
    nasty = 'Tom & "Jerry" <script>\x01'
    svg = activity_svg(activity_of({("2026-11-25T12:00:00Z", nasty): 2}))
    assert "<script" not in svg
    root = parse(svg)
    assert segments(root)[0].get("data-label") == 'Tom & "Jerry" <script>\ufffd'
    assert legend_names(root) == ['Tom & "Jerry" <script>\ufffd']
    assert segments(root)[0].find(SVG + "title").text.endswith('<script>\ufffd: 2')


def test_with_no_keeps_the_chart_says_so():
    root = parse(activity_svg(activity_of({})))
    assert [t.text for t in root.iter(SVG + "text")] == ["No keeps yet"]
    assert segments(root) == [] and root.get("aria-label") == "No keeps in the last 3 hours"


@pytest.mark.parametrize("counts", [{}, SEVEN], ids=["empty", "seven labels"])
def test_the_chart_uses_no_style_script_or_outside_reference(counts):
    svg = activity_svg(activity_of(counts))
    for element in parse(svg).iter():
        assert element.tag not in (SVG + "style", SVG + "script", SVG + "image", SVG + "use")
        assert "style" not in element.attrib
        assert not any(name.startswith("on") or "href" in name for name in element.attrib)
    assert "url(" not in svg and "@import" not in svg


def test_too_many_labels_for_the_palette_is_refused():
    with pytest.raises(ValueError, match="max_labels"):
        activity_svg(activity_of(SEVEN), max_labels=8)
