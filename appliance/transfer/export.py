"""Taking kept images home: names in the image-folder layout, the manifest, and a streamed zip.

The layout is the one training tools read: ``<label>/<file>.jpg``, where the label is the effective
one (a person's correction wins over the model's). Every export carries ``manifest.csv`` and
``manifest.jsonl`` with one row per image. Used by the zip download, ``appliance sync`` and the USB
offload alike, so the three agree. The JSONL holds every value exactly; in the CSV a text cell that a
spreadsheet would run as a formula (``=``, ``+``, ``-``, ``@``, tab, CR first) starts with ``'``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import time
import zipfile
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterable, Iterator

from appliance.storage.files import atomic_write_bytes, fsync_dir

log = logging.getLogger(__name__)

MANIFEST_FIELDS = ("file", "sha256", "bytes", "captured_at", "label", "model_label", "corrected_label",
                   "score", "model", "kind", "source", "id")
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
    return f"{base}_{dot}{rest}" if base.upper() in _WINDOWS_DEVICES else name


def export_name(row) -> str:
    """``<label>/<YYYY-MM-DD>_<file>.jpg``: the date keeps names unique across days."""
    year, month, day, name = Path(row["image_path"]).parts[-4:]
    return f"{label_dirname(effective_label(row))}/{year}-{month}-{day}_{name}"


def manifest_row(row, file: str) -> dict:
    return {"file": file, "sha256": row["sha256"], "bytes": row["bytes"], "captured_at": row["captured_at"],
            "label": effective_label(row), "model_label": row["label"], "corrected_label": row["corrected_label"] or "",
            "score": row["score"], "model": row["model_name"], "kind": row["kind"], "source": row["source"],
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
    all while the manifest has no rows.
    """

    def __init__(self, stem: Path, resume: bool, fsync_each_add: bool):
        self.jsonl_path, self.csv_path = stem.with_name(stem.name + ".jsonl"), stem.with_name(stem.name + ".csv")
        self.fsync_each_add = fsync_each_add
        self.rows: dict[int, dict] = {}
        self._jsonl = None
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

    def close(self) -> None:
        if self._jsonl is not None:
            os.fsync(self._jsonl.fileno())
            self._jsonl.close()
            self._jsonl = None
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
            with archive.open(zipfile.ZipInfo(name, time.gmtime()[:6]), "w", force_zip64=True) as target:
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
                info = zipfile.ZipInfo(export_name(row), _zip_time(row["captured_at"]))
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


def _zip_time(captured_at: str):
    moment = datetime.fromisoformat(captured_at.replace("Z", "+00:00"))
    return (max(moment.year, 1980), moment.month, moment.day, moment.hour, moment.minute, moment.second)
