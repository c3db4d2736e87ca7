"""The gallery, the item page, star / relabel / delete, images, and the zip download.

A detector keep's item page draws its box over the image (an SVG over the ``<img>``, sized by the
stylesheet: the page's Content-Security-Policy allows no inline style) and shows its crop, the
second small image the species model classified (``/captures/<id>/crop``).
"""

from __future__ import annotations

import io
import json
import re
from datetime import date
from pathlib import Path

from flask import Blueprint, Response, abort, flash, redirect, render_template, request, send_file, url_for

from appliance.storage.filters import Filters
from appliance.storage.images import DETECTION_FIELDS, box_or_none
from appliance.transfer.export import effective_label, stream_zip
from appliance.web import MAX_CAPTURE_ID, deps

bp = Blueprint("gallery", __name__)

PAGE_SIZE = 48
MAX_LABEL_CHARS = 200
# A zip's directory is written at its end, so the server keeps ~3 KB per entry until then (measured by
# `appliance bench-web`): 20,000 images is ~66 MB on a 512 MB Pi. More than that: `appliance sync`.
MAX_EXPORT_IDS = 20_000
_CURSOR = re.compile(r"(\d{4}-\d\d-\d\dT[\d:.]+Z)~(\d+)")
_YES_NO = {"": None, "yes": True, "no": False}


def parse_filters(args) -> Filters:
    """Gallery filters from query arguments; a bad value is a 400 naming the argument."""
    def choice(name, allowed):
        value = args.get(name, "")
        if value not in allowed:
            abort(400, f"{name} must be one of: {', '.join(repr(a) for a in allowed)}")
        return value

    def day(name):
        value = args.get(name, "")
        if value:
            try:
                date.fromisoformat(value)
            except ValueError:
                abort(400, f"{name} must be a date YYYY-MM-DD")
        return value

    min_score = args.get("min_score", "")
    try:
        score = float(min_score) if min_score else None
    except ValueError:
        abort(400, "min_score must be a number from 0 to 1")
    if score is not None and not 0 <= score <= 1:
        abort(400, "min_score must be a number from 0 to 1")
    return Filters(label=args.get("label", "")[:MAX_LABEL_CHARS], date_from=day("from"), date_to=day("to"),
                   min_score=score, kind=choice("kind", ("", "match", "audit")),
                   is_starred=_YES_NO[choice("starred", tuple(_YES_NO))],
                   is_offloaded=_YES_NO[choice("offloaded", tuple(_YES_NO))],
                   is_synced=_YES_NO[choice("synced", tuple(_YES_NO))])


def parse_cursor(value: str):
    if not value:
        return None
    match = _CURSOR.fullmatch(value)
    if not match:
        abort(400, "cursor is not one this page made: start again from the first page")
    return match.group(1), int(match.group(2))


@bp.route("/gallery")
def gallery():
    store = deps()["store"]
    filters = parse_filters(request.args)
    rows, next_cursor = store.page(filters, parse_cursor(request.args.get("cursor", "")), PAGE_SIZE)
    args = {k: v for k, v in request.args.items() if k != "cursor" and v}
    next_url = url_for("gallery.gallery", **args, cursor=f"{next_cursor[0]}~{next_cursor[1]}") if next_cursor else None
    # Each item's two links from one url_for, not 96 of them (a fifth of the page's CPU, measured).
    captures_url = url_for("gallery.item", capture_id=0).removesuffix("/0")
    return render_template("gallery.html", rows=rows, filters=filters, args=args, next_url=next_url,
                           is_first_page="cursor" not in request.args, labels=store.labels(),
                           effective_label=effective_label, captures_url=captures_url)


def _row_or_404(capture_id: int) -> dict:
    row = deps()["store"].get(capture_id)
    if row is None:
        abort(404, f"no capture {capture_id}")
    return row


@bp.route("/captures/<capture_id:capture_id>")
def item(capture_id):
    row = _row_or_404(capture_id)
    return render_template("item.html", row=row, top_k=json.loads(row["top_k"] or "[]"),
                           label=effective_label(row), labels=deps()["labels"], box=_box(row),
                           has_crop=deps()["store"].has_crop(capture_id),
                           detection_keys=[k for k in DETECTION_FIELDS if row.get(k) is not None])


def _box(row) -> dict | None:
    """The SVG rectangle of a detector keep's box, in the frame's units (0 to 1), or None."""
    box = box_or_none(row["box"])
    if box is None:
        return None
    left, top, right, bottom = box
    return {"x": left, "y": top, "width": round(right - left, 6), "height": round(bottom - top, 6)}


def _send(row, relative: str, etag: str):
    """A file of the store's, by the path the database holds; never by a path from the request."""
    data_dir = Path(deps()["config"].storage.data_dir).resolve()
    path = (data_dir / relative).resolve()
    if not path.is_relative_to(data_dir) or not path.is_file():
        abort(404, f"the file of capture {row['id']} is missing")
    return _cache_privately(send_file(path, mimetype="image/jpeg", etag=etag, conditional=True, max_age=86400))


def _cache_privately(response):
    response.cache_control.public = False  # send_file says public; these may be private images
    response.cache_control.private = True
    response.cache_control.immutable = True  # an id's image never changes; a relabel does not touch it
    return response


@bp.route("/captures/<capture_id:capture_id>/thumb")
def thumb(capture_id):
    row = _row_or_404(capture_id)
    return _send(row, row["thumb_path"], f"{row['sha256']}-thumb")


@bp.route("/captures/<capture_id:capture_id>/image")
def image(capture_id):
    row = _row_or_404(capture_id)
    return _send(row, row["image_path"], row["sha256"])


@bp.route("/captures/<capture_id:capture_id>/crop")
def crop(capture_id):
    """A detector keep's crop (from the database, not a file), cached as its thumbnail is."""
    row = _row_or_404(capture_id)
    jpeg = deps()["store"].crop(capture_id)
    if jpeg is None:
        abort(404, f"capture {capture_id} has no crop: only a detector's keeps have one")
    return _cache_privately(send_file(io.BytesIO(jpeg), mimetype="image/jpeg", etag=f"{row['sha256']}-crop",
                                      conditional=True, max_age=86400))


@bp.route("/captures/<capture_id:capture_id>/star", methods=["POST"])
def star(capture_id):
    _row_or_404(capture_id)
    deps()["store"].set_starred(capture_id, request.form.get("starred") == "1")
    return redirect(url_for("gallery.item", capture_id=capture_id))


@bp.route("/captures/<capture_id:capture_id>/relabel", methods=["POST"])
def relabel(capture_id):
    row = _row_or_404(capture_id)
    label = " ".join(request.form.get("label", "").split())
    if len(label) > MAX_LABEL_CHARS:
        abort(400, f"a label is at most {MAX_LABEL_CHARS} characters")
    deps()["store"].relabel(capture_id, None if label in ("", row["label"]) else label)
    return redirect(url_for("gallery.item", capture_id=capture_id))


@bp.route("/captures/<capture_id:capture_id>/delete", methods=["GET", "POST"])
def delete(capture_id):
    row = _row_or_404(capture_id)
    if request.method == "GET":
        return render_template("delete.html", row=row, label=effective_label(row))
    deps()["store"].delete([capture_id])
    flash(f"Deleted {effective_label(row)} kept {row['captured_at']}.", "ok")
    return redirect(url_for("gallery.gallery"))


@bp.route("/export.zip", methods=["POST"])
def export_zip():
    """The selected captures (``ids``), or with ``unsynced=1`` everything not yet synced, as a zip
    streamed while it is made."""
    store = deps()["store"]
    if request.form.get("unsynced") == "1":
        ids = store.unsynced_ids()
    else:
        try:
            ids = sorted({int(i) for i in request.form.getlist("ids")})
        except ValueError:
            abort(400, "ids must be capture numbers")
        if ids and not 0 <= ids[0] <= ids[-1] <= MAX_CAPTURE_ID:
            abort(400, "ids must be capture numbers")
    if not ids:
        abort(400, "nothing selected: tick some images first")
    if len(ids) > MAX_EXPORT_IDS:
        abort(400, f"at most {MAX_EXPORT_IDS} images per zip ({len(ids)} asked): select fewer, "
                   "or pull them all with `appliance sync`")
    data_dir = Path(deps()["config"].storage.data_dir)
    def rows():
        return (row for chunk in _chunks(ids, 500) for row in store.rows_by_id(chunk) if not row["missing"])

    return Response(stream_zip(rows, data_dir), mimetype="application/zip",
                    headers={"Content-Disposition": 'attachment; filename="appliance-images.zip"',
                             "Cache-Control": "no-store"})


def _chunks(items, size):
    for start in range(0, len(items), size):
        yield items[start:start + size]
