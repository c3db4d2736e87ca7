"""The offload's run: batches of copies handed to a verifier, marked once durable and read back right.

See the package's docstring for the whole procedure; ``offload()`` is the entry point.
"""

from __future__ import annotations

import contextlib
import errno
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
from appliance.storage.files import fsync_dir, sha256_file
from appliance.transfer.export import Manifest, export_name, label_dirname, manifest_row
from appliance.transfer.offload.copy import Copy, _ItemFailed, _Stop, copy_item, remove_leftovers, stick_error, why
from appliance.transfer.offload.verify import read_back_sha256s, sync_stick

log = logging.getLogger(__name__)


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
        remove_leftovers(folder)
    except OSError as e:
        raise stick_error(e, stick) from None
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
                in_flight.append((row, pool.submit(copy_item, store, row, folder, folders)))
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
        report.stopped_because = str(e) if isinstance(e, _Stop) else why(e)
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
        self._unsynced: list[Copy] = []  # read back right; their renames wait for the next sync

    def hand_over(self, batch: list[Copy]) -> None:
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
            sync_stick(self.folder, next((item.tmp for item in reversed(batch) if item.tmp is not None), self.folder))
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
                stopped = stopped or why(result)
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
            sync_stick(self.folder, self.folder)
            self._mark(unsynced)

    def _mark(self, good: list[Copy]) -> None:
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
            raise _Stop(why(e)) from None

    def _mismatch(self, item) -> str:
        source = self.store.data_dir / item.row["image_path"]
        if sha256_file(source) != item.row["sha256"]:
            return f"the device's own file does not match its sha256 ({item.row['image_path']})"
        return f"the copy on the stick reads back wrong ({export_name(item.row)})"

    def salvage(self, batch: list[Copy]) -> None:
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
