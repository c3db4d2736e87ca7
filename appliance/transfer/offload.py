"""USB offload: copy every kept item not yet offloaded to a stick, verify it there, then mark it.

Layout on the stick: ``<stick>/<hostname>/<label>/<YYYY-MM-DD>_<file>.jpg`` (names safe on FAT, exFAT
and ext4), plus a per-run ``manifest-<UTC time>.csv`` / ``.jsonl`` in ``<stick>/<hostname>/``. Nothing
is written outside that folder.

Items go in batches. A batch is copied to temporary names beside their targets, made durable with
one sync of the stick's filesystem, renamed into place, its pages dropped from the page cache
(``posix_fadvise(DONTNEED)``), read back from the stick and compared with the sha256 the database
holds; the next batch's sync makes those renames durable, and only then is the batch's
``offloaded_at`` set. A copy already on the stick with the same size is read back and, if its sha256
matches, marked without copying again. A full, removed or read-only stick stops the run cleanly:
what was verified stays marked, nothing else is, and the next offload resumes.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import json
import logging
import os
import socket
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from appliance.clock import utc_compact, utc_iso
from appliance.errors import OffloadError
from appliance.storage.files import TMP_SUFFIX, fsync_dir, sha256_file
from appliance.transfer.export import Manifest, export_name, label_dirname, manifest_row

log = logging.getLogger(__name__)

PROGRESS_FILE = "offload.json"
LOCK_FILE = "offload.lock"
_CHUNK = 4 << 20
_PIPE_BYTES = 1 << 20
_READ_CHUNK = 1 << 20  # read back and hashed in pieces that stay in the CPU's cache
_READ_BACK_THREADS = 2
_STICK_GONE = {errno.EIO, errno.ENODEV, errno.ENXIO, errno.ENOTCONN, errno.ECONNABORTED, errno.ESHUTDOWN,
               errno.ESTALE, errno.ENOENT}


@dataclass
class OffloadReport:
    dest: str
    total: int = 0  # items not yet offloaded when the run began
    copied: int = 0  # items copied and verified this run
    already_there: int = 0  # items found on the stick with the right sha256, verified and marked
    failed: list = field(default_factory=list)  # (id, reason): not marked
    bytes_copied: int = 0
    seconds: float = 0.0
    remaining: int = 0  # items this run set out to copy that are still not offloaded
    remaining_bytes: int = 0
    kept_since: int = 0  # items kept while this run went on: the next offload takes them
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
        if self.kept_since:
            text += f"; {self.kept_since} kept since it started (offload again to take them)"
        return text


FIRST_BATCH_BYTES = 8 << 20
COPY_THREADS = 3  # copies in flight (measured: 2 → 3 helps exFAT-FUSE, no change on ext4)
BATCH_BYTES = 32 * 2**20  # copied, then made durable with one sync, then verified, then marked


class _Stop(Exception):
    """The stick cannot take more: full, pulled, vanished or read-only. ``str()`` says which."""


class _ItemFailed(Exception):
    """This one item cannot be offloaded (its file on the device is unreadable); the rest go on."""


def offload(store, stick: Path, hostname: str | None = None, after_offload: str = "keep", progress=None,
            before_verify=None, batch_bytes: int = BATCH_BYTES, clock=time.monotonic) -> OffloadReport:
    """Offload ``store``'s not-yet-offloaded items to the mounted ``stick``; see the module docstring.

    Items go in batches of about ``batch_bytes`` (the first one smaller, so verifying starts early).
    A batch is copied (no per-file fsync), made durable with one sync of the stick's filesystem,
    renamed into place, and then read back and checked on a second thread while the next batch
    copies; it is marked, in one transaction, once the next sync has made its renames durable.
    ``before_verify()`` runs before each read-back (the callers drop the device's cache with it:
    under a FUSE driver, which reads the device through the page cache, that cache would otherwise
    answer). ``progress(report, done_bytes, total_bytes, row)`` is called after each batch."""
    folder = Path(stick) / label_dirname(hostname or socket.gethostname())
    report = OffloadReport(dest=str(folder))
    started_s = clock()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _remove_leftovers(folder)
    except OSError as e:
        raise _stick_error(e, stick) from None
    stick_device = os.stat(stick).st_dev
    rows = store.rows("offloaded_at is null and missing = 0", order="captured_at, id")
    report.total, total_bytes = len(rows), sum(r["bytes"] for r in rows)
    manifest = Manifest(folder / f"manifest-{utc_compact()}", resume=False,
                        fsync_each_add=False)
    run = _Run(store, folder, report, manifest, after_offload, before_verify)
    batch, in_batch = [], 0
    folders: dict[Path, dict[str, os.DirEntry]] = {}
    # Several copies at a time: some wait for the SD card or the stick while another moves bytes, and
    # a FUSE driver's single thread always has the next request waiting.
    pool = ThreadPoolExecutor(COPY_THREADS, thread_name_prefix="offload-copy")
    in_flight: deque = deque()
    try:
        for row in [*rows, None]:  # None: no more to start, take what is in flight
            if row is not None:
                # If the stick's mount vanished, its mount point is an empty folder on the SD card:
                # copying on would "succeed" there. Stop instead.
                if os.stat(folder).st_dev != stick_device:
                    raise _Stop("the stick was removed (it is no longer mounted)")
                in_flight.append((row, pool.submit(_copy, store, row, folder, folders)))
            while in_flight and (row is None or len(in_flight) > COPY_THREADS):
                done_row, copying = in_flight.popleft()
                try:
                    batch.append(copying.result())
                except _ItemFailed as e:
                    report.failed.append((done_row["id"], str(e)))
                    continue
                in_batch += done_row["bytes"]
                # The first batch is small, so verifying starts early; then the full size.
                if in_batch >= (batch_bytes if run.batches else min(batch_bytes, FIRST_BATCH_BYTES)):
                    run.hand_over(batch)
                    batch, in_batch = [], 0
                    _report_progress(progress, report, run, total_bytes, clock, started_s)
        run.hand_over(batch)
        run.finish()
        manifest.close()
        fsync_dir(folder)
    except (_Stop, OSError) as e:
        pool.shutdown(wait=True, cancel_futures=True)  # the copies under way finish (or fail) first
        batch += [copying.result() for _, copying in in_flight
                  if not copying.cancelled() and copying.exception() is None]
        report.stopped_because = str(e) if isinstance(e, _Stop) else _why(e)
        run.salvage(batch)  # what finished copying may still be made durable, verified and marked
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    _report_progress(progress, report, run, total_bytes, clock, started_s)
    if run.delete_ids:  # only what was verified on the stick
        store.delete(run.delete_ids)
        report.deleted = len(run.delete_ids)
    # What this run set out to copy: items the loop kept while it ran are for the next offload, and
    # do not make this one incomplete.
    up_to_id = max((r["id"] for r in rows), default=0)
    report.remaining, report.remaining_bytes = store.not_offloaded(up_to_id)
    report.kept_since = store.not_offloaded()[0] - report.remaining
    report.seconds = clock() - started_s
    log.info("offload to %s: %s", folder, report.summary())
    return report


def _report_progress(progress, report, run, total_bytes, clock, started_s):
    report.seconds = clock() - started_s
    if progress:
        progress(report, run.done_bytes, total_bytes, None)


def _why(e: OSError) -> str:
    if e.errno == errno.ENOSPC:
        return "the stick is full"
    if e.errno == errno.EROFS:
        return "the stick is read-only"
    if e.errno in _STICK_GONE:
        return f"the stick was removed or failed ({e.strerror})"
    return f"{e.strerror or e}"


@dataclass
class _Copy:
    row: dict
    target: Path
    tmp: Path | None  # None: the target was on the stick already, to be verified as it is


def _copy(store, row, folder: Path, folders: dict[Path, dict[str, os.DirEntry]]) -> _Copy:
    """Copy one item to a temporary name beside its target (or note that it is there already).
    ``folders``: the label folders made so far and checked to lead nowhere outside ``folder``, with
    what each held at the time: each is listed once per run, not asked about file by file (under a
    FUSE driver every lookup is a round trip to it)."""
    target = folder / export_name(row)
    try:
        entries = folders.get(target.parent)
        if entries is None:
            target.parent.mkdir(parents=True, exist_ok=True)
            # A label cannot lead outside our folder, and neither can a symlink the stick holds.
            if not target.parent.resolve().is_relative_to(folder.resolve()):
                raise _Stop(f"unsafe name {export_name(row)!r}")
            with os.scandir(target.parent) as listing:
                entries = folders[target.parent] = {entry.name: entry for entry in listing}
        there = entries.get(target.name)
        if (there is not None and there.is_file(follow_symlinks=False)
                and there.stat(follow_symlinks=False).st_size == row["bytes"]):
            return _Copy(row, target, None)
    except FileNotFoundError:
        pass
    except OSError as e:
        raise _Stop(_why(e)) from None
    tmp = target.with_name(f".{target.name}{TMP_SUFFIX}")
    try:
        src = open(store.data_dir / row["image_path"], "rb")
    except OSError as e:
        raise _ItemFailed(f"cannot read {row['image_path']} on the device ({e.strerror})") from None
    try:
        with src, open(tmp, "xb", opener=_no_follow) as out:  # x: never through a link the stick holds
            _copy_bytes(src, out, row["bytes"])
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise _Stop(_why(e)) from None
    return _Copy(row, target, tmp)


def _no_follow(path, flags):
    try:
        return os.open(path, flags | os.O_NOFOLLOW, 0o644)
    except FileExistsError:  # not a leftover of ours (those went at the start): whatever it is, it goes
        os.unlink(path)
        return os.open(path, flags | os.O_NOFOLLOW, 0o644)


def _copy_bytes(src, out, size: int) -> None:
    """Copy in the kernel, with no trip through Python's buffers: copy_file_range where the kernel
    allows it (not between two filesystems since Linux 5.19), else splice through a 1 MB pipe (so
    a FUSE driver gets big writes: sendfile's 64 KB pieces halve exFAT-FUSE's speed), else reads."""
    try:
        copied = 0
        while copied < size:
            n = os.copy_file_range(src.fileno(), out.fileno(), size - copied)
            if n == 0:
                break
            copied += n
        if copied == size:
            return
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL):
            raise
    _start_over(src, out)
    try:
        _splice(src.fileno(), out.fileno())
        return
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOSYS):
            raise
    _start_over(src, out)
    while chunk := src.read(_CHUNK):
        out.write(chunk)


def _start_over(src, out) -> None:
    src.seek(0)
    out.seek(0)
    out.truncate()


def _splice(src: int, out: int) -> None:
    """Everything from ``src`` (at its offset) to ``out``, through a pipe."""
    read_end, write_end = os.pipe()
    try:
        with contextlib.suppress(OSError):  # a smaller pipe works too, only slower
            fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
        while n := os.splice(src, write_end, _PIPE_BYTES):
            while n:
                written = os.splice(read_end, out, n)
                if written == 0:
                    raise OSError(errno.EIO, "the copy stopped writing")
                n -= written
    finally:
        os.close(read_end)
        os.close(write_end)


class _Run:
    """Batches on their way: made durable, renamed, verified on a thread, marked.

    One sync per batch makes both that batch's bytes and the previous batch's renames durable, so a
    batch is marked once the next batch's sync (or the last one, in ``finish``) has gone through:
    each item is marked only when its content was read back right and its name is durable."""

    def __init__(self, store, folder, report, manifest, after_offload, before_verify):
        self.store, self.folder, self.report, self.manifest = store, folder, report, manifest
        self.after_offload, self.before_verify = after_offload, before_verify
        self.delete_ids: list[int] = []
        self.done_bytes = 0
        self.batches = 0
        self._verifying: threading.Thread | None = None
        self._verified: list = []
        self._synced = False  # the thread's sync went through: the batch before it is durable
        self._unsynced: list[_Copy] = []  # read back right; their renames wait for the next sync

    def hand_over(self, batch: list[_Copy]) -> None:
        """Settle ``batch`` on a second thread (make it durable, rename it into place, read it back)
        while the caller copies the next one; the batch before is collected first."""
        if not batch:
            return
        self.batches += 1
        self._collect()
        # Until the thread says otherwise, nothing of this batch is verified (and, should the thread
        # die, the previous batch's results are not counted twice).
        self._verified = [(item, OSError(errno.EIO, "the read-back did not finish")) for item in batch]
        self._synced = False
        self._verifying = threading.Thread(target=self._settle, args=(batch,), name="offload-verify")
        self._verifying.start()

    def _settle(self, batch):
        try:
            # This batch's bytes, and the previous batch's renames and new folders, in one go.
            _sync(self.folder, next((item.tmp for item in reversed(batch) if item.tmp is not None), self.folder))
            self._synced = True
            for item in batch:
                if item.tmp is not None:
                    os.replace(item.tmp, item.target)
            if self.before_verify:
                self.before_verify()
        except OSError as e:  # nothing of this batch can be trusted: none of it is marked
            self._verified = [(item, e) for item in batch]
            return
        read_back = read_back_sha256s([item.target for item in batch])
        self._verified = [(item, result) for item, (_, result) in zip(batch, read_back)]

    def _collect(self) -> None:
        """Wait for the batch being verified; mark the batch before it (that thread's sync made its
        renames durable) and keep what read back right for the next sync."""
        if self._verifying is None:
            return
        self._verifying.join()
        self._verifying = None
        unsynced, self._unsynced = self._unsynced, []
        if self._synced:
            self._mark(unsynced)
        good, stopped = [], None
        for item, result in self._verified:
            row = item.row
            if isinstance(result, OSError):
                stopped = stopped or _why(result)
            elif result == row["sha256"]:
                good.append(item)
            else:
                self.report.failed.append((row["id"], self._mismatch(item)))
                with contextlib.suppress(OSError):
                    item.target.unlink()
        self._unsynced = good
        if stopped:
            raise _Stop(stopped)

    def finish(self) -> None:
        """Wait for the batch being verified, make its renames durable, and mark what matched."""
        self._collect()
        if self._unsynced:
            unsynced, self._unsynced = self._unsynced, []
            _sync(self.folder, self.folder)
            self._mark(unsynced)

    def _mark(self, good: list[_Copy]) -> None:
        self.store.mark_offloaded([item.row["id"] for item in good], utc_iso())
        for item in good:
            if item.tmp is None:
                self.report.already_there += 1
            else:
                self.report.copied += 1
                self.report.bytes_copied += item.row["bytes"]
            self.done_bytes += item.row["bytes"]
            if self.after_offload == "delete":
                self.delete_ids.append(item.row["id"])
        try:  # after the counting: a stick pulled now must not hide what was verified and marked
            self.manifest.add([manifest_row(item.row, export_name(item.row)) for item in good])
        except OSError as e:
            raise _Stop(_why(e)) from None

    def _mismatch(self, item) -> str:
        source = self.store.data_dir / item.row["image_path"]
        if sha256_file(source) != item.row["sha256"]:
            return f"the device's own file does not match its sha256 ({item.row['image_path']})"
        return f"the copy on the stick reads back wrong ({export_name(item.row)})"

    def salvage(self, batch: list[_Copy]) -> None:
        """After a stop: mark the batch being verified, and the copies already complete if the
        stick still takes a sync; the rest is left for the next offload."""
        try:
            self.finish()
            done = [item for item in batch if item.tmp is None or item.tmp.exists()]
            if done:
                self.hand_over(done)
                self.finish()
            self.manifest.close()
        except (_Stop, OSError) as e:
            log.info("offload: after the stop, nothing more could be verified (%s)", e)
            with contextlib.suppress(OSError):
                self.manifest.close()


def _sync(folder: Path, also: Path) -> None:
    """Make everything written to the stick durable: one sync of its whole filesystem (data,
    directories, renames), plus an fsync of ``also`` (a file or folder on it), which FUSE drivers
    need to pass the flush on to the device (exfat-fuse then flushes all it holds); under the
    kernel's drivers that fsync finds nothing left to write."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _libc_syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)
    fd = os.open(also, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _libc_syncfs(fd: int) -> int:
    try:
        return ctypes.CDLL(None, use_errno=True).syncfs(fd)
    except AttributeError:
        return -1


def _remove_leftovers(folder: Path) -> None:
    """Temporary copies an interrupted offload left in the appliance's own folder."""
    for leftover in folder.rglob(f".*{TMP_SUFFIX}"):
        leftover.unlink()


def read_back_sha256s(paths: list[Path], threads: int = _READ_BACK_THREADS) -> list[tuple[Path, str | OSError]]:
    """(path, sha256 or the error reading it) of each file as the stick holds it: its cached pages
    are dropped first, so the bytes come from the device, not from memory (the pages are clean
    after fsync, so DONTNEED discards them). Hashing is the costly part, so ``threads`` threads
    each take a contiguous share of ``paths`` (hashlib lets go of the GIL); in each, while one file
    is hashed the next is already being read from the device (POSIX_FADV_WILLNEED), so the stick
    and the CPU work at the same time. Never raises OSError: a stick that fails mid-way fails the
    files it was reading."""
    share = -(-len(paths) // max(1, threads))
    parts = [paths[i:i + share] for i in range(0, len(paths), share)] or [[]]
    results: list[list] = [[] for _ in parts]
    helpers = [threading.Thread(target=_read_back, args=(part, out), name="offload-read-back")
               for part, out in zip(parts[1:], results[1:])]
    for helper in helpers:
        helper.start()
    try:
        _read_back(parts[0], results[0])
    finally:
        for helper in helpers:
            helper.join()
    done = [r for out in results for r in out]
    # a helper that died (it should not: errors are results) leaves its files unverified
    done += [(path, OSError(errno.EIO, "the read-back did not finish")) for path in paths[len(done):]]
    return done


def _read_back(paths: list[Path], results: list) -> None:
    buffer = bytearray(_READ_CHUNK)
    ahead = _start_reading(paths[0]) if paths else None
    try:
        for i, path in enumerate(paths):
            fd, ahead = ahead, _start_reading(paths[i + 1]) if i + 1 < len(paths) else None
            results.append((path, fd if isinstance(fd, OSError) else _sha256_and_close(fd, buffer)))
    finally:
        if isinstance(ahead, int):  # interrupted: the next file's fd is still open
            _close(ahead)


def _start_reading(path: Path) -> int | OSError:
    """An open fd on ``path`` with its cached pages dropped and a read from the device under way."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        return e
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
    except OSError as e:
        _close(fd)
        return e
    return fd


def _sha256_and_close(fd: int, buffer: bytearray) -> str | OSError:
    view, digest = memoryview(buffer), hashlib.sha256()
    try:
        while n := os.readv(fd, [buffer]):
            digest.update(view[:n])
    except OSError as e:
        _close(fd)
        return e
    return _close(fd) or digest.hexdigest()


def _close(fd: int) -> OSError | None:
    """Close ``fd``; the error if that failed (under FUSE even a close fails once the stick is gone)."""
    try:
        os.close(fd)
    except OSError as e:
        return e
    return None


def _stick_error(e: OSError, stick) -> OffloadError:
    if e.errno == errno.EROFS:
        return OffloadError(f"{stick}: the stick is read-only (write-protect switch?): nothing was copied")
    return OffloadError(f"{stick}: cannot write to the stick ({e.strerror})")


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
