"""Taking kept images home: names in the image-folder layout, the manifest, and a streamed zip.

The layout is the one training tools read: ``<label>/<file>.jpg``, where the label is the effective
one (a person's correction wins over the model's). Audit keeps (rejects sampled to check the model)
are never in a class folder: they go to ``_audit/<file>.jpg``, whatever their label, and no label's
folder is named ``_audit``. Every export carries ``manifest.csv`` and ``manifest.jsonl`` with one row
per image. Used by the zip download, ``appliance sync`` and the USB offload alike, so the three agree.
The JSONL holds every value exactly; in the CSV a text cell that a spreadsheet would run as a formula
(``=``, ``+``, ``-``, ``@``, tab, CR first) starts with ``'``. Every time in an export is UTC with
milliseconds and its offset, ``2026-11-25T10:15:00.123+00:00`` (see ``export_time``).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import struct
import time
import zipfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterable, Iterator

from appliance.storage.files import atomic_write_bytes, fsync_dir

log = logging.getLogger(__name__)

MANIFEST_FIELDS = ("file", "sha256", "bytes", "captured_at", "label", "model_label", "corrected_label",
                   "score", "model", "kind", "source", "id")
AUDIT_DIR = "_audit"  # audit keeps' folder in every export: not a class
_CHUNK = 256 * 1024
_UNSAFE = set('/\\\0:*?"<>|')
_WINDOWS_DEVICES = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}


def effective_label(row) -> str:
    return row["corrected_label"] or row["label"]


def label_dirname(label: str, limit: int = 100) -> str:
    """A folder name for a label that is safe on ext4, FAT and exFAT, and that Windows can open: no
    separators, no control or reserved characters, no leading dot or trailing dot/space, not a
    reserved device name (CON, NUL, COM1, …)."""
    name = "".join("_" if ch in _UNSAFE or ord(ch) < 32 else ch for ch in label)
    name = name.strip().lstrip(".").rstrip(". ")[:limit].rstrip(". ") or "unlabelled"
    base, dot, rest = name.partition(".")  # Windows judges the part before the first dot
    # and FAT, exFAT and Windows fold case: "_AUDIT" would be the audit keeps' folder
    is_reserved = base.upper() in _WINDOWS_DEVICES or name.casefold() == AUDIT_DIR
    return f"{base}_{dot}{rest}" if is_reserved else name


def export_name(row) -> str:
    """``<label>/<YYYY-MM-DD>_<file>.jpg``, or ``_audit/<YYYY-MM-DD>_<file>.jpg`` for an audit keep:
    the date keeps names unique across days (the stored name is the UTC time of day and the label)."""
    year, month, day, name = row["image_path"].split("/")[-4:]  # YYYY/MM/DD/<file>; 4x Path's speed
    folder = AUDIT_DIR if row["kind"] == "audit" else label_dirname(effective_label(row))
    return f"{folder}/{year}-{month}-{day}_{name}"


def export_time(stored: str) -> str:
    """A stored time (``2026-11-25T10:15:00.123Z``) as every export writes it: UTC, milliseconds and
    the offset in digits, ``2026-11-25T10:15:00.123+00:00``, which more parsers read than a ``Z``
    (Python's ``fromisoformat`` before 3.11 does not) and which still sorts as text. UTC, not the
    device's zone: the stored time and the file names are UTC, and a zone set wrong, or changed
    between deployments, cannot shift an export."""
    moment = datetime.fromisoformat(stored.replace("Z", "+00:00")).astimezone(timezone.utc)
    return moment.isoformat(timespec="milliseconds")


def manifest_row(row, file: str) -> dict:
    return {"file": file, "sha256": row["sha256"], "bytes": row["bytes"],
            "captured_at": export_time(row["captured_at"]), "label": effective_label(row),
            "model_label": row["label"], "corrected_label": row["corrected_label"] or "", "score": row["score"],
            "model": row["model_name"], "kind": row["kind"], "source": row["source"],
            "id": row["id"]}


def manifest_csv(rows: Iterable[dict]) -> str:
    return "".join(_csv_lines(rows))


def manifest_jsonl(rows: Iterable[dict]) -> str:
    return "".join(_jsonl_lines(rows))


class Manifest:
    """``STEM.jsonl``, appended as items are installed, and ``STEM.csv``, written from it at ``close()``.

    The one manifest writer of the USB offload and of ``appliance sync``, with their two policies:

    * ``resume`` — sync keeps one manifest per folder across runs: the rows already in the file are
      read first, an id already there is not added twice, and a line cut short by a power cut is
      repaired (its item was never acknowledged, so it is checked and added again). The offload
      writes a new manifest per run.
    * ``fsync_each_add`` — sync makes each row durable as it is added (and the folder, when the file
      is new). The offload adds a batch at a time and makes it durable with the stick's own sync of
      that batch; the file is fsynced at ``close()``.

    The CSV lists every row by id; it is rewritten only when its text changes, and not written at
    all while the manifest has no rows. ``replace()`` changes rows already there (sync, when the
    device changed an item synced before); the JSONL is then rewritten once, at ``close()``.
    """

    def __init__(self, stem: Path, resume: bool, fsync_each_add: bool):
        self.jsonl_path, self.csv_path = stem.with_name(stem.name + ".jsonl"), stem.with_name(stem.name + ".csv")
        self.fsync_each_add = fsync_each_add
        self.rows: dict[int, dict] = {}
        self._jsonl = None
        self._is_stale = False  # a row was replaced: the JSONL is rewritten at close()
        if resume:
            self._load()

    def _load(self) -> None:
        text = self.jsonl_path.read_text(encoding="utf-8") if self.jsonl_path.is_file() else ""
        is_damaged = bool(text) and not text.endswith("\n")
        for line in text.splitlines():
            try:
                row = json.loads(line)
                is_damaged |= row["id"] in self.rows
                self.rows.setdefault(row["id"], row)
            except (ValueError, KeyError, TypeError):
                is_damaged = True  # a line cut short by a power cut
        if is_damaged:
            atomic_write_bytes(self.jsonl_path, manifest_jsonl(self.rows.values()).encode())

    def add(self, rows: list[dict]) -> None:
        """Append rows whose ids are not in the manifest yet, in one write (a round trip to a FUSE driver)."""
        rows = [row for row in rows if row["id"] not in self.rows]
        if not rows:
            return
        if self._jsonl is None:
            is_new_file = not self.jsonl_path.exists()
            self._jsonl = open(self.jsonl_path, "a", encoding="utf-8")
            if is_new_file and self.fsync_each_add:
                os.fsync(self._jsonl.fileno())
                fsync_dir(self.jsonl_path.parent)
        self._jsonl.write(manifest_jsonl(rows))
        self._jsonl.flush()
        if self.fsync_each_add:
            os.fsync(self._jsonl.fileno())
        self.rows.update((row["id"], {k: row[k] for k in MANIFEST_FIELDS}) for row in rows)

    def replace(self, row: dict) -> None:
        """Put ``row`` in place of the row with its id, in its place in the order."""
        self.rows[row["id"]] = {k: row[k] for k in MANIFEST_FIELDS}
        self._is_stale = True

    def close(self) -> None:
        if self._jsonl is not None:
            os.fsync(self._jsonl.fileno())
            self._jsonl.close()
            self._jsonl = None
        if self._is_stale:
            atomic_write_bytes(self.jsonl_path, manifest_jsonl(self.rows.values()).encode())
            self._is_stale = False
        if not self.rows:
            return
        text = manifest_csv(sorted(self.rows.values(), key=lambda r: r["id"])).encode()
        if not self.csv_path.is_file() or self.csv_path.read_bytes() != text:  # a run that brought nothing changes nothing
            atomic_write_bytes(self.csv_path, text)


class _Sink(io.RawIOBase):
    """A write-only, unseekable stream whose bytes are handed on as they come."""

    def __init__(self):
        self._chunks: list[bytes] = []
        self._position = 0

    def writable(self):
        return True

    def write(self, data):
        self._chunks.append(bytes(data))
        self._position += len(data)
        return len(data)

    def tell(self):
        return self._position

    def take(self) -> bytes:
        data = b"".join(self._chunks)
        self._chunks.clear()
        return data


def stream_zip(rows: Callable[[], Iterable], data_dir: Path) -> Iterator[bytes]:
    """A zip of the rows' images (stored, not recompressed: they are JPEGs) with the manifest,
    produced piece by piece so memory stays flat however many images there are.

    ``rows()`` is called twice: the first pass writes the manifests line by line (so no list of
    them is kept), the second the images. Only zipfile's own directory (~0.5 KB an entry) grows.
    A row whose file is missing when the manifest is written is left out of both."""
    sink = _Sink()
    data_dir = Path(data_dir)

    def present():
        return (row for row in rows() if (data_dir / row["image_path"]).is_file())

    with zipfile.ZipFile(sink, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, render in (("manifest.csv", _csv_lines), ("manifest.jsonl", _jsonl_lines)):
            with archive.open(_zip_entry(name, time.time()), "w", force_zip64=True) as target:
                for line in render(manifest_row(row, export_name(row)) for row in present()):
                    target.write(line.encode())
                    yield sink.take()
        for row in present():
            try:
                source = open(data_dir / row["image_path"], "rb")
            except FileNotFoundError:  # deleted since the manifest was written: rare, and said in the log
                log.warning("zip: %s was deleted while the zip was being made", row["image_path"])
                continue
            with source:
                info = _zip_entry(export_name(row), _seconds(row["captured_at"]))
                with archive.open(info, "w", force_zip64=row["bytes"] >= 2**31) as target:
                    while chunk := source.read(_CHUNK):
                        target.write(chunk)
                        yield sink.take()
    yield sink.take()


def _csv_lines(rows) -> Iterator[str]:
    # "\r\n" as the writer's terminator makes it quote a field holding a lone "\r" (with "\n" alone it
    # would not, and a spreadsheet would split the row there); each line's own "\r\n" becomes "\n".
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=MANIFEST_FIELDS, lineterminator="\r\n")

    def line() -> str:
        text = out.getvalue()
        out.seek(0)
        out.truncate()
        return text.removesuffix("\r\n") + "\n"

    writer.writeheader()
    yield line()
    for row in rows:
        writer.writerow({key: spreadsheet_safe(value) for key, value in row.items()})
        yield line()


_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(value):
    """A CSV cell a spreadsheet shows as text: a string it would read as a formula (starting with
    ``= + - @``, tab or CR) gets a leading ``'``, as OWASP advises against CSV injection. Numbers
    stay numbers; only the CSV manifest is escaped, the JSONL keeps every value exact."""
    return "'" + value if isinstance(value, str) and value.startswith(_FORMULA_STARTS) else value


def _jsonl_lines(rows) -> Iterator[str]:
    return (json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def _seconds(stored: str) -> float:
    return datetime.fromisoformat(stored.replace("Z", "+00:00")).timestamp()


def _zip_entry(name: str, seconds: float) -> zipfile.ZipInfo:
    """An entry dated ``seconds``: the zip's own fields hold UTC (they have no zone), and the extended
    timestamp field (0x5455, UTC seconds), which unzip honours, says the moment."""
    moment = datetime.fromtimestamp(seconds, timezone.utc)
    info = zipfile.ZipInfo(name, (max(moment.year, 1980), *moment.timetuple()[1:6]))
    info.extra = struct.pack("<HHBl", 0x5455, 5, 1, int(seconds))  # flags 1: the modification time only
    return info
