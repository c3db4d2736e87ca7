"""The sync API: list captures by a stable cursor, fetch an image by id, acknowledge what was verified.

``GET /api/v1/captures?after=ID&limit=N`` lists captures with id > ID, oldest first, with the cursor
for the next call; ids only grow, so a client that stores the cursor resumes exactly where it
stopped. ``GET /api/v1/captures/<id>/image`` sends the file with its sha256 as ETag.
``POST /api/v1/sync/ack`` with ``{"items": [{"id": 1, "sha256": "…"}, …]}`` marks as synced those
whose sha256 matches the device's.

A detector keep's item also says where its subject was and what found it: ``box`` (``[left, top,
right, bottom]``, each 0 to 1 of the frame), ``event_id``, ``event_frame``, ``detector_label``,
``detector_score``, ``detector_name``; each is null for a keep without a detector.
"""

from __future__ import annotations

from flask import Blueprint, abort, jsonify, request, url_for

from appliance.clock import utc_iso
from appliance.storage.images import box_or_none
from appliance.transfer.export import effective_label, export_name
from appliance.web import MAX_CAPTURE_ID, changes_or_syncs, deps
from appliance.web.gallery import _row_or_404, _send

bp = Blueprint("api", __name__, url_prefix="/api/v1")

MAX_LIMIT = 1000
MAX_ACK_ITEMS = 1000


def _int_arg(name, default, low, high):
    value = request.args.get(name, str(default))
    if not value.isdigit() or not low <= int(value) <= high:
        abort(400, f"{name} must be a whole number from {low} to {high}")
    return int(value)


@bp.route("/captures")
@changes_or_syncs
def captures():
    after = _int_arg("after", 0, 0, 2**62)
    limit = _int_arg("limit", 100, 1, MAX_LIMIT)
    rows = deps()["store"].after_id(after, limit)
    items = [{
        "id": r["id"], "file": export_name(r), "label": effective_label(r), "model_label": r["label"],
        "corrected_label": r["corrected_label"], "score": r["score"], "kind": r["kind"],
        "captured_at": r["captured_at"], "model": r["model_name"], "source": r["source"],
        "sha256": r["sha256"], "bytes": r["bytes"], "synced_at": r["synced_at"],
        "image_url": url_for("api.image", capture_id=r["id"]),
        "box": box_or_none(r["box"]), "event_id": r["event_id"], "event_frame": r["event_frame"],
        "detector_label": r["detector_label"], "detector_score": r["detector_score"],
        "detector_name": r["detector_name"],
    } for r in rows]
    return jsonify(items=items, next=str(rows[-1]["id"]) if len(rows) == limit else None,
                   cursor=str(rows[-1]["id"]) if rows else str(after))


@bp.route("/captures/<capture_id:capture_id>/image")
@changes_or_syncs
def image(capture_id):
    row = _row_or_404(capture_id)
    return _send(row, row["image_path"], row["sha256"])


@bp.route("/sync/ack", methods=["POST"])
def ack():
    body = request.get_json(silent=True)
    items = body.get("items") if isinstance(body, dict) else None
    if not isinstance(items, list) or len(items) > MAX_ACK_ITEMS:
        abort(400, f'expected {{"items": [{{"id": N, "sha256": "…"}}, …]}} with at most {MAX_ACK_ITEMS} items')
    verified = {}
    for item in items:
        if not (isinstance(item, dict) and type(item.get("id")) is int and 0 <= item["id"] <= MAX_CAPTURE_ID
                and isinstance(item.get("sha256"), str)):
            abort(400, 'each item needs an "id" (a capture number) and a string "sha256"')
        verified[item["id"]] = item["sha256"].lower()
    marked, mismatched = deps()["store"].mark_synced(verified, utc_iso())
    return jsonify(synced=marked, refused=mismatched)
