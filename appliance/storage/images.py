"""The JPEGs the store keeps: the record each carries, how it proves itself complete, its thumbnail.

A kept JPEG is self-describing: a comment segment (``COM``) holds ``appliance:`` and its record as
JSON, so a file whose row was lost is indexed again from the file alone. The writer's files also
record ``jpeg_sha256``: the sha256 of the file without that comment segment (the JPEG as the
encoder made it, before the record was spliced in), so reconciliation can tell a complete file from
one a crash or a power cut left short or damaged without trusting that it decodes.

The writer's files also carry EXIF and XMP for other tools (``image_tags``: capture time with its
offset, camera, GPS, label and score), written with the image and so covered by ``jpeg_sha256``; the
comment goes after them, at the end of the file's leading APPn segments.

A keep made through the detector stage also carries ``DETECTION_FIELDS``: where its subject was in
the frame (``box``), the track it belongs to (``event_id``, ``event_frame``) and what found it (the
detector's label, score and model). They are optional: a keep without a detector has none of them,
and a file written before they existed reads back as it always did.

A record read back is validated field by field (``read_record``): it comes from a file on a card
anyone may have edited, and a row made from it is what the page, the exports and the sync show.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
import struct
from datetime import datetime
from typing import TYPE_CHECKING

from appliance.storage.image_tags import XMP_HEADER

if TYPE_CHECKING:  # Pillow is imported where images are made or read: the store's rows need none of it
    from PIL import Image

    from appliance.storage.image_tags import ImageTags

METADATA_PREFIX = b"appliance:"
# What a kept file's comment carries: enough to rebuild its row without the database.
RECORD_FIELDS = ("captured_at", "clock_source", "label", "score", "top_k", "kind", "reason", "model_name",
                 "model_sha256", "backend", "inference_ms", "source")
CONTENT_SHA256 = "jpeg_sha256"
# A detector's keep's fields, and their columns' types. ``box`` is JSON text of [left, top, right, bottom],
# each 0 to 1 of the frame (``box_text``); ``(event_id, event_frame)`` names a keep of a track.
DETECTION_FIELDS = {"event_id": str, "event_frame": int, "box": str, "detector_label": str,
                    "detector_score": float, "detector_name": str, "detector_sha256": str}
MAX_INTEGER = 2**63 - 1  # SQLite's largest
KINDS = ("match", "audit")
_NUMBERS = ("score", "inference_ms")
_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,6})?Z")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_HEX32 = re.compile(r"[0-9a-f]{32}")
SOI, EOI = b"\xff\xd8", b"\xff\xd9"
_COM, _SOS, _APP0, _APP1, _APP15 = 0xFE, 0xDA, 0xE0, 0xE1, 0xEF
_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # markers without a length: TEM, RST0-7


def metadata_comment(record: dict) -> bytes:
    """The JPEG comment that makes a kept file self-describing."""
    fields = {k: record[k] for k in RECORD_FIELDS}
    fields.update((k, record[k]) for k in DETECTION_FIELDS if record.get(k) is not None)
    if CONTENT_SHA256 in record:
        fields[CONTENT_SHA256] = record[CONTENT_SHA256]
    return METADATA_PREFIX + json.dumps(fields, separators=(",", ":")).encode()


def encode_jpeg(image: Image.Image, quality: int, comment: bytes = b"", exif: bytes = b"") -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality, comment=comment, exif=exif)
    return out.getvalue()


def kept_jpeg(image: Image.Image, quality: int, record: dict, tags: ImageTags | None = None) -> bytes:
    """``image`` as the JPEG the store keeps: its record in a comment, with the sha256 of the rest;
    with ``tags``, its EXIF and XMP (``image_tags``) too."""
    plain = memoryview(encode_jpeg(image, quality, exif=tags.exif(record) if tags else b""))
    at = _after_app_segments(plain)  # JFIF's APP0 and EXIF's APP1 want to come first; then XMP, then the comment
    xmp = tags.xmp(record) if tags else b""
    xmp_segment = _segment(_APP1, XMP_HEADER + xmp) if xmp else b""
    content = hashlib.sha256(plain[:at])
    content.update(xmp_segment)
    content.update(plain[at:])
    comment = metadata_comment(dict(record, **{CONTENT_SHA256: content.hexdigest()}))
    return b"".join((plain[:at], xmp_segment, _segment(_COM, comment), plain[at:]))  # one copy of the image, not two


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes((0xFF, marker)) + struct.pack(">H", len(payload) + 2) + payload


def _after_app_segments(data: bytes) -> int:
    """Where the APPn segments that follow a JPEG's start-of-image marker end."""
    at = 2
    while at + 4 <= len(data) and data[at] == 0xFF and _APP0 <= data[at + 1] <= _APP15:
        at += 2 + struct.unpack(">H", data[at + 2:at + 4])[0]
    return at


def make_thumbnail(image: Image.Image, longest_px: int) -> bytes:
    from PIL import Image

    scale = min(1.0, longest_px / max(image.size))
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    # resize() with a reducing gap first shrinks by whole factors (cheap), then filters the rest;
    # unlike Image.thumbnail() it needs no copy of the full-resolution frame.
    return encode_jpeg(image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0), quality=80)


def thumbnail_of_file(path, longest_px: int = 320) -> bytes:
    from PIL import Image

    with Image.open(path) as image:
        return make_thumbnail(image.convert("RGB"), longest_px)


def read_kept(data: bytes) -> tuple[dict, tuple[int, int]]:
    """The validated record (``RECORD_FIELDS``, and the ``DETECTION_FIELDS`` it has) and the
    (width, height) of a kept JPEG's bytes.

    Raises ``ValueError`` saying what is wrong when the file is not complete (no end marker, bytes
    that differ from its recorded ``jpeg_sha256``, or, without one, a decode that fails) or its
    record is absent or invalid."""
    if not data.startswith(SOI):
        raise ValueError("not a JPEG")
    if not data.endswith(EOI):
        raise ValueError("incomplete: it does not end with the JPEG end-of-image marker")
    start, end = _comment_segment(data)
    record = read_record(data[start + 4:end][len(METADATA_PREFIX):])
    expected = record.pop(CONTENT_SHA256, None)
    if expected is not None and hashlib.sha256(data[:start] + data[end:]).hexdigest() != expected:
        raise ValueError(f"damaged: its bytes do not match the {CONTENT_SHA256} its record holds")
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format != "JPEG":
                raise ValueError("not a JPEG")
            if expected is None:  # nothing else proves it whole: decode it all
                image.load()
            return record, image.size
    except ValueError:
        raise
    except Exception as e:  # Pillow raises many kinds on a damaged file (OSError, SyntaxError, DecompressionBombError...)
        raise ValueError(f"unreadable ({e})") from None


def _comment_segment(data: bytes) -> tuple[int, int]:
    """Where the appliance's comment segment starts (its 0xFF) and ends, among the header's segments."""
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            break
        marker = data[at + 1]
        if marker == 0xFF:  # a fill byte
            at += 1
            continue
        if marker in _STANDALONE:
            at += 2
            continue
        if marker == _SOS:
            break
        end = at + 2 + struct.unpack(">H", data[at + 2:at + 4])[0]
        if marker == _COM and data[at + 4:end].startswith(METADATA_PREFIX):
            return at, end
        at = end
    raise ValueError("no appliance record in its JPEG comment")


def read_record(payload: bytes) -> dict:
    """A record from its JSON, every field checked; raises ``ValueError`` naming the field at fault."""
    try:
        record = json.loads(payload)
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ValueError(f"its record is not JSON ({e})") from None
    if not isinstance(record, dict):
        raise ValueError(f"its record is {type(record).__name__}, not an object")
    for key in RECORD_FIELDS:
        if key not in record:
            raise ValueError(f"its record has no {key}")
        value = record[key]
        if key in _NUMBERS:
            if not _is_number(value):
                raise ValueError(f"its record's {key} is {value!r}, not a number")
        elif not isinstance(value, str):
            raise ValueError(f"its record's {key} is {type(value).__name__}, not text")
    _check_forms(record)
    out = {k: record[k] for k in RECORD_FIELDS}
    out.update(detection_fields(record))
    if CONTENT_SHA256 in record:
        if not (isinstance(record[CONTENT_SHA256], str) and _HEX64.fullmatch(record[CONTENT_SHA256])):
            raise ValueError(f"its record's {CONTENT_SHA256} is not a sha256")
        out[CONTENT_SHA256] = record[CONTENT_SHA256]
    return out


def _check_forms(record: dict) -> None:
    """The text fields the page, the exports and pagination read as more than text."""
    if not record["label"]:
        raise ValueError("its record's label is empty")
    if record["kind"] not in KINDS:
        raise ValueError(f"its record's kind is {record['kind']!r}, allowed: {', '.join(KINDS)}")
    captured_at = record["captured_at"]
    try:
        if not _UTC.fullmatch(captured_at):
            raise ValueError
        datetime.fromisoformat(captured_at.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"its record's captured_at {captured_at!r} is not a UTC time like "
                         "2026-11-25T10:15:30.123Z") from None
    try:
        top_k = json.loads(record["top_k"])
        if not isinstance(top_k, list):
            raise ValueError
        for pair in top_k:
            if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], str) and _is_number(pair[1])):
                raise ValueError
    except ValueError:
        raise ValueError("its record's top_k is not a JSON list of [label, score] pairs") from None


def detection_fields(record: dict) -> dict:
    """The ``DETECTION_FIELDS`` that ``record`` has (one that is null has no value: absent), each
    checked; raises ``ValueError`` naming the field at fault."""
    out = {k: record[k] for k in DETECTION_FIELDS if record.get(k) is not None}
    for key, value in out.items():
        if DETECTION_FIELDS[key] is str and not isinstance(value, str):
            raise ValueError(f"its record's {key} is {type(value).__name__}, not text")
    if "event_id" in out and not _HEX32.fullmatch(out["event_id"]):
        raise ValueError(f"its record's event_id {out['event_id']!r:.60} is not 32 lowercase hex digits (a uuid4's hex)")
    frame = out.get("event_frame", 0)
    if isinstance(frame, bool) or not isinstance(frame, int) or not 0 <= frame <= MAX_INTEGER:
        raise ValueError(f"its record's event_frame {frame!r:.60} is not a whole number from 0")
    if "box" in out:
        parse_box(out["box"])
    if out.get("detector_label") == "":
        raise ValueError("its record's detector_label is empty")
    score = out.get("detector_score", 0)
    if not (_is_number(score) and 0 <= score <= 1):
        raise ValueError(f"its record's detector_score {score!r:.60} is not a number from 0 to 1")
    if "detector_sha256" in out and not _HEX64.fullmatch(out["detector_sha256"]):
        raise ValueError("its record's detector_sha256 is not a sha256")
    return out


def parse_box(text) -> tuple[float, float, float, float]:
    """``(left, top, right, bottom)`` from a record's ``box`` text; raises ``ValueError`` naming ``box``."""
    try:
        box = json.loads(text)
    except (TypeError, ValueError, RecursionError):
        box = None
    if not (isinstance(box, list) and len(box) == 4 and all(_is_number(v) and 0 <= v <= 1 for v in box)
            and box[0] < box[2] and box[1] < box[3]):
        raise ValueError(f"its record's box {text!r:.80} is not a JSON [left, top, right, bottom] of the frame: "
                         "each from 0 to 1, left < right, top < bottom")
    return tuple(float(v) for v in box)


def box_or_none(text) -> list[float] | None:
    """``[left, top, right, bottom]`` of a row's ``box``, or None if it has none (or one that a
    database edited elsewhere spoilt: the page and the API then show none)."""
    try:
        return list(parse_box(text))
    except ValueError:
        return None


def box_text(box) -> str:
    """A record's ``box`` for ``(left, top, right, bottom)`` relative to the frame: to 6 places (a
    hundredth of a pixel of the largest sensor), and clamped to the frame, which a detector's box may
    overrun a little. Raises ``ValueError`` for a box with nothing inside the frame."""
    text = json.dumps([round(min(max(float(v), 0.0), 1.0), 6) for v in box], separators=(",", ":"))
    parse_box(text)
    return text


def _is_number(value) -> bool:
    """A number a row can hold: a finite float, or a whole number within SQLite's integers (JSON's
    whole numbers have no bound, and one past a float's range would raise OverflowError here)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return abs(value) <= MAX_INTEGER
    return isinstance(value, float) and math.isfinite(value)
