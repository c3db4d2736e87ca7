"""USB offload: copy every kept item not yet offloaded to a stick, verify it there, then mark it.

Layout on the stick: ``<stick>/<hostname>/<label>/<YYYY-MM-DD>_<file>.jpg`` (names safe on FAT, exFAT
and ext4), plus a per-run ``manifest-<UTC time>.csv`` / ``.jsonl`` in ``<stick>/<hostname>/``. Nothing
is written outside that folder.

For each item: copy it (hashing the source as it is read), fsync the file and its folder, drop the
copy from the page cache (``posix_fadvise(DONTNEED)``), read it back from the stick and compare its
sha256 with the database's; only then set ``offloaded_at``. A copy already on the stick with the same
sha256 is verified and marked, not copied again. A full, removed or read-only stick stops the run
cleanly: what was verified stays marked, nothing else is, and the next offload resumes.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from appliance.errors import ApplianceError
from appliance.export import MANIFEST_FIELDS, _csv_lines, export_name, label_dirname, manifest_row
from appliance.files import atomic_file, atomic_write_bytes, fsync_dir

log = logging.getLogger(__name__)

PROGRESS_FILE = "offload.json"
LOCK_FILE = "offload.lock"
_CHUNK = 1 << 20
_STICK_GONE = {errno.EIO, errno.ENODEV, errno.ENXIO, errno.ENOTCONN, errno.ESHUTDOWN, errno.ESTALE, errno.ENOENT}


class OffloadError(ApplianceError, OSError):
    """The offload cannot start or had to stop: no stick, read-only, unsupported, busy."""


@dataclass
class OffloadReport:
    dest: str
    total: int = 0  # items not yet offloaded when the run began
    copied: int = 0  # items copied and verified this run
    already_there: int = 0  # items found on the stick with the right sha256, verified and marked
    failed: list = field(default_factory=list)  # (id, reason): not marked
    bytes_copied: int = 0
    seconds: float = 0.0
    remaining: int = 0  # items still not offloaded after this run
    remaining_bytes: int = 0
    deleted: int = 0  # with after_offload = "delete"
    stopped_because: str | None = None  # why the run ended early, if it did

    @property
    def verified(self) -> int:
        return self.copied + self.already_there

    @property
    def is_complete(self) -> bool:
        return not self.failed and self.stopped_because is None and self.remaining == 0

    def summary(self) -> str:
        text = (f"{self.verified} images verified on the stick ({self.copied} copied, {self.already_there} already "
                f"there), {self.bytes_copied / 1e6:.1f} MB in {self.seconds:.1f} s")
        if self.deleted:
            text += f", {self.deleted} deleted from the device"
        if self.failed:
            text += f"; {len(self.failed)} failed"
        if self.stopped_because:
            text += f"; stopped: {self.stopped_because}"
        if self.remaining:
            text += f"; {self.remaining} images ({self.remaining_bytes / 1e6:.1f} MB) still to offload"
        return text


class _StickFull(Exception):
    pass


class _SourceMismatch(Exception):
    pass


def offload(store, stick: Path, hostname: str | None = None, after_offload: str = "keep", progress=None,
            clock=time.monotonic) -> OffloadReport:
    """Offload ``store``'s not-yet-offloaded items to the mounted ``stick``; see the module docstring.

    ``progress(report, done_bytes, total_bytes, current)`` is called after each item."""
    folder = Path(stick) / label_dirname(hostname or socket.gethostname())
    report = OffloadReport(dest=str(folder))
    started_s = clock()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _stick_error(e, stick) from None
    stick_device = os.stat(stick).st_dev
    rows = store.rows("offloaded_at is null and missing = 0", order="captured_at, id")
    total_bytes = sum(r["bytes"] for r in rows)
    report.total = len(rows)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    manifest = _Manifest(folder / f"manifest-{stamp}")
    delete_ids, done_bytes = [], 0
    try:
        for row in rows:
            try:
                # If the stick's mount vanished, its mount point is an empty folder on the SD card:
                # copying on would "succeed" there. Stop instead.
                if os.stat(folder).st_dev != stick_device:
                    raise OSError(errno.ENODEV, "the stick is no longer mounted")
                copied = _offload_one(store, row, folder)
            except _SourceMismatch as e:
                report.failed.append((row["id"], str(e)))
                continue
            except _StickFull:
                report.stopped_because = "the stick is full"
                break
            except OSError as e:
                if e.errno == errno.ENOSPC:
                    report.stopped_because = "the stick is full"
                elif e.errno == errno.EROFS:
                    report.stopped_because = "the stick is read-only"
                elif e.errno in _STICK_GONE:
                    report.stopped_because = f"the stick was removed or failed ({e.strerror})"
                else:
                    report.stopped_because = f"{e.strerror or e} ({row['image_path']})"
                break
            store.mark_offloaded([row["id"]], _now())
            manifest.add(manifest_row(row, export_name(row)))
            if copied:
                report.copied += 1
                report.bytes_copied += row["bytes"]
            else:
                report.already_there += 1
            if after_offload == "delete":
                delete_ids.append(row["id"])
            done_bytes += row["bytes"]
            report.seconds = clock() - started_s
            if progress:
                progress(report, done_bytes, total_bytes, row)
        manifest.close()
        fsync_dir(folder)
    except OSError as e:  # finishing the manifest failed: the stick went away at the very end
        report.stopped_because = report.stopped_because or f"the stick was removed or failed ({e.strerror})"
    if delete_ids:  # only what was verified on the stick
        store.delete(delete_ids)
        report.deleted = len(delete_ids)
    left = store.rows("offloaded_at is null and missing = 0")
    report.remaining, report.remaining_bytes = len(left), sum(r["bytes"] for r in left)
    report.seconds = clock() - started_s
    log.info("offload to %s: %s", folder, report.summary())
    return report


def _offload_one(store, row, folder: Path) -> bool:
    """Make the stick hold a verified copy of ``row``; True if it had to be copied."""
    target = folder / export_name(row)
    if not target.resolve().is_relative_to(folder.resolve()):  # a label cannot lead outside our folder
        raise _SourceMismatch(f"unsafe name {export_name(row)!r}")
    if target.is_file() and target.stat().st_size == row["bytes"] and read_back_sha256(target) == row["sha256"]:
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    source = store.data_dir / row["image_path"]
    digest = hashlib.sha256()
    with open(source, "rb") as src, atomic_file(target) as out:  # a failure here installs nothing
        while chunk := src.read(_CHUNK):
            digest.update(chunk)
            out.write(chunk)
        if digest.hexdigest() != row["sha256"]:
            raise _SourceMismatch(f"the device's own file does not match its sha256 ({row['image_path']})")
    if read_back_sha256(target) != row["sha256"]:
        target.unlink(missing_ok=True)
        raise _SourceMismatch(f"the copy on the stick reads back wrong ({export_name(row)})")
    return True


def read_back_sha256(path: Path) -> str:
    """sha256 of a file as the stick holds it: its cached pages are dropped first, so the bytes come
    from the device, not from memory (the pages are clean after fsync, so DONTNEED discards them)."""
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        while chunk := os.read(fd, _CHUNK):
            digest.update(chunk)
    finally:
        os.close(fd)
    return digest.hexdigest()


class _Manifest:
    """This run's manifest, appended as items are verified, so an interrupted run keeps its list."""

    def __init__(self, stem: Path):
        self.jsonl_path, self.csv_path = stem.with_suffix(".jsonl"), stem.with_suffix(".csv")
        self.rows: list[dict] = []
        self._jsonl = None

    def add(self, row: dict) -> None:
        if self._jsonl is None:
            self._jsonl = open(self.jsonl_path, "a", encoding="utf-8")
        self._jsonl.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._jsonl.flush()
        self.rows.append({k: row[k] for k in MANIFEST_FIELDS})

    def close(self) -> None:
        if self._jsonl is None:
            return
        os.fsync(self._jsonl.fileno())
        self._jsonl.close()
        self._jsonl = None
        atomic_write_bytes(self.csv_path, "".join(_csv_lines(self.rows)).encode())


def _stick_error(e: OSError, stick) -> OffloadError:
    if e.errno == errno.EROFS:
        return OffloadError(f"{stick}: the stick is read-only (write-protect switch?): nothing was copied")
    return OffloadError(f"{stick}: cannot write to the stick ({e.strerror})")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


class OffloadLock:
    """Only one offload at a time, across processes (the button, the page and udev may all ask)."""

    def __init__(self, runtime_dir: Path):
        Path(runtime_dir).mkdir(parents=True, exist_ok=True)
        self.path = Path(runtime_dir) / LOCK_FILE
        self._fd = None

    def __enter__(self):
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o660)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise OffloadError("an offload is already running") from None
        return self

    def __exit__(self, *exc):
        os.close(self._fd)


def is_offload_running(runtime_dir: Path) -> bool:
    """Another process holds the offload lock."""
    try:
        with OffloadLock(runtime_dir):
            return False
    except OffloadError:
        return True


class ProgressFile:
    """Live offload progress in the runtime dir (tmpfs) for the page and the LEDs."""

    def __init__(self, runtime_dir: Path, clock=time.monotonic):
        self.path = Path(runtime_dir) / PROGRESS_FILE
        self.clock = clock
        self.started_s = clock()

    def write(self, state: str, **fields) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps({"state": state, "updated_at": time.time(), **fields}))
        os.replace(tmp, self.path)

    def __call__(self, report, done_bytes, total_bytes, current) -> None:
        elapsed_s = max(self.clock() - self.started_s, 1e-6)
        rate = done_bytes / elapsed_s
        self.write("running", items_done=report.verified, items_total=report.total, bytes_done=done_bytes,
                   bytes_total=total_bytes,
                   rate_bytes_s=round(rate), eta_s=round((total_bytes - done_bytes) / rate, 1) if rate else None,
                   dest=report.dest)


def read_progress(runtime_dir) -> dict | None:
    try:
        return json.loads((Path(runtime_dir) / PROGRESS_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
