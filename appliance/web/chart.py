"""The activity chart as a self-contained SVG string: stacked bars of keeps per bucket, per label.

Drawn on the server so the review page needs no script. The page's Content-Security-Policy forbids
inline styles, so everything is set with SVG presentation attributes (``fill``, ``font-size``...),
and nothing is fetched: no fonts, no images. Hover tooltips are ``<title>`` children, which browsers
and screen readers understand without script.
"""

from __future__ import annotations

import math
import re
from xml.sax.saxutils import escape

from appliance.storage.activity import Activity

# Okabe & Ito's palette (minus black), ordered so neighbouring stack segments differ in lightness as
# well as hue: distinguishable with the common colour-vision deficiencies.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#56B4E9", "#CC79A7", "#F0E442")
OTHER_COLOUR = "#999999"
OTHER = "other"
TEXT_COLOUR, AXIS_COLOUR, GRID_COLOUR = "#333333", "#666666", "#DDDDDD"
FONT_PX = 11
CHAR_PX = 6.2  # a rough average glyph width of sans-serif at FONT_PX, to keep labels from colliding
LEFT, RIGHT, LEGEND_H, TOP_GAP, BOTTOM = 40, 20, 18, 10, 22
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
HOUR_STEPS = (1, 2, 3, 4, 6, 12, 24)  # divisors of 24, so hour labels land on round hours
DAY_STEPS = (1, 2, 3, 5, 7, 14)
# Characters XML 1.0 cannot carry at all, even escaped; a label from a model file could hold one.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def activity_svg(activity: Activity, width: int = 720, height: int = 240, max_labels: int = 6) -> str:
    """An SVG document (a string) drawing ``activity`` as stacked bars, one bar per bucket.

    The ``max_labels`` most frequent labels get their own colour; when there are more, the top
    ``max_labels - 1`` keep theirs and the rest share one grey "other" segment. Each segment has a
    hover tooltip (``"Nov 25 14:00 — Ara macao (Scarlet Macaw): 3"``). With no keeps the SVG says
    "No keeps yet". Segments are ``<rect class="segment">`` carrying ``data-bucket`` and ``data-label``.
    """
    if not 1 <= max_labels <= len(PALETTE):
        raise ValueError(f"max_labels: {max_labels} is out of range, allowed: 1 to {len(PALETTE)}")
    summary = _summary(activity)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label={_attr(summary)} '
           f'font-family="sans-serif" font-size="{FONT_PX}" fill="{TEXT_COLOUR}">',
           f"<title>{_text(summary)}</title>"]
    if activity.total == 0:
        out.append(f'<text x="{width / 2:g}" y="{height / 2:g}" text-anchor="middle">No keeps yet</text>')
    else:
        named, others = _series(activity.labels, max_labels)
        plot = (LEFT, LEGEND_H + TOP_GAP, width - RIGHT, height - BOTTOM)  # left, top, right, bottom
        y_max, ticks = _y_scale(max(activity.bucket_total(b) for b in activity.bucket_starts))
        out += _legend(named, bool(others), plot)
        out += _y_axis(ticks, y_max, plot)
        out += _bars(activity, named, others, y_max, plot)
        out += _x_axis(activity, plot)
    out.append("</svg>")
    return "\n".join(out)


def _summary(activity: Activity) -> str:
    n = len(activity.bucket_starts)
    span = activity.period if n == 1 else f"{n} {activity.period}s"
    if activity.total == 0:
        return f"No keeps in the last {span}"
    return f"{activity.total} keep{'' if activity.total == 1 else 's'} in the last {span}"


def _series(labels, max_labels):
    """(labels with their own colour, labels folded into "other")."""
    if len(labels) <= max_labels:
        return tuple(labels), ()
    return tuple(labels[:max_labels - 1]), tuple(labels[max_labels - 1:])


def _y_scale(highest: int):
    """A round top for the axis and at most five round ticks from 0: 1, 2 or 5 times a power of ten."""
    magnitude = 1
    while True:
        for factor in (1, 2, 5):
            step = factor * magnitude
            if step * 4 >= highest:
                y_max = math.ceil(highest / step) * step
                return y_max, tuple(range(0, y_max + 1, step))
        magnitude *= 10


def _legend(named, has_other, plot):
    left, _, right, _ = plot
    items = [(label, PALETTE[i]) for i, label in enumerate(named)]
    if has_other:
        items.append((OTHER, OTHER_COLOUR))
    slot = (right - left) / len(items)
    max_chars = max(4, int((slot - 20) / CHAR_PX))
    out = ['<g class="legend">']
    for i, (label, colour) in enumerate(items):
        x = left + i * slot
        out.append(f'<g class="legend-item"><title>{_text(label)}</title>'
                   f'<rect x="{_n(x)}" y="3" width="10" height="10" fill="{colour}"/>'
                   f'<text x="{_n(x + 14)}" y="12">{_text(_ellipsised(label, max_chars))}</text></g>')
    out.append("</g>")
    return out


def _y_axis(ticks, y_max, plot):
    left, top, right, bottom = plot
    out = ['<g class="y-axis">']
    for tick in ticks:
        y = bottom - tick * (bottom - top) / y_max
        out.append(f'<line x1="{left}" y1="{_n(y)}" x2="{right}" y2="{_n(y)}" stroke="{GRID_COLOUR}"/>'
                   f'<text x="{left - 6}" y="{_n(y + 4)}" text-anchor="end">{tick}</text>')
    out.append("</g>")
    return out


def _bars(activity, named, others, y_max, plot):
    left, top, right, bottom = plot
    slot = (right - left) / len(activity.bucket_starts)
    bar_w = slot * 0.8  # the gap keeps neighbouring bars apart even when they are the same colour
    scale = (bottom - top) / y_max
    out = ['<g class="bars">']
    for i, bucket in enumerate(activity.bucket_starts):
        x, base = left + i * slot + (slot - bar_w) / 2, bottom
        when = _when(activity.period, bucket)
        stack = [(label, PALETTE[j], activity.count(bucket, label), "") for j, label in enumerate(named)]
        if others:
            parts = [(label, activity.count(bucket, label)) for label in others]
            parts = [(label, n) for label, n in parts if n]
            detail = ", ".join(f"{label} {n}" for label, n in parts[:3]) + (", …" if len(parts) > 3 else "")
            stack.append((OTHER, OTHER_COLOUR, sum(n for _, n in parts), f" ({detail})"))
        out.append(f'<g class="bucket" data-bucket="{bucket}">')
        for label, colour, n, detail in stack:
            if not n:
                continue
            h = n * scale
            base -= h
            tooltip = f"{when} — {label}: {n}{detail}"
            out.append(f'<rect class="segment" data-label={_attr(label)} x="{_n(x)}" y="{_n(base)}" '
                       f'width="{_n(bar_w)}" height="{_n(h)}" fill="{colour}">'
                       f"<title>{_text(tooltip)}</title></rect>")
        out.append("</g>")
    out.append("</g>")
    return out


def _x_axis(activity, plot):
    left, _, right, bottom = plot
    buckets = activity.bucket_starts
    slot = (right - left) / len(buckets)
    names = [_tick_name(activity.period, b) for b in buckets]
    needed = math.ceil((max(len(name) for name in names) * CHAR_PX + 10) / slot)
    steps = HOUR_STEPS if activity.period == "hour" else DAY_STEPS
    every = next((s for s in steps if s >= needed), needed)
    out = ['<g class="x-axis">', f'<line x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="{AXIS_COLOUR}"/>']
    for i, (bucket, name) in enumerate(zip(buckets, names)):
        if activity.period == "hour" and every in HOUR_STEPS:
            is_labelled = int(bucket[11:13]) % every == 0
        else:  # count back from the newest bucket, so "today" is always labelled
            is_labelled = (len(buckets) - 1 - i) % every == 0
        if is_labelled:
            x = left + (i + 0.5) * slot
            out.append(f'<line x1="{_n(x)}" y1="{bottom}" x2="{_n(x)}" y2="{bottom + 4}" stroke="{AXIS_COLOUR}"/>'
                       f'<text x="{_n(x)}" y="{bottom + 16}" text-anchor="middle">{name}</text>')
    out.append("</g>")
    return out


def _tick_name(period, bucket):
    """``"14:00"`` for an hour bucket, ``"Nov 25"`` for a day bucket."""
    return bucket[11:16] if period == "hour" else f"{MONTHS[int(bucket[5:7]) - 1]} {int(bucket[8:10])}"


def _when(period, bucket):
    day = f"{MONTHS[int(bucket[5:7]) - 1]} {int(bucket[8:10])}"
    return f"{day} {bucket[11:16]}" if period == "hour" else day


def _ellipsised(label, max_chars):
    return label if len(label) <= max_chars else label[:max_chars - 1].rstrip() + "…"


def _text(value) -> str:
    return escape(_NOT_XML.sub("\ufffd", str(value)))


def _attr(value) -> str:
    """A quoted attribute value, safe whatever quotes the value holds."""
    return '"' + escape(_NOT_XML.sub("\ufffd", str(value)), {'"': "&quot;"}) + '"'


def _n(value: float) -> str:
    """A coordinate to two decimals, without trailing zeros: small output, stable in tests."""
    return f"{value:.2f}".rstrip("0").rstrip(".")
