"""The writer thread: encodes kept frames and stores them, off the capture → classify hot path.

The queue between the loop and the writer is bounded. When it is full the loop drops the keep (the
camera never waits for the SD card) and counts it as ``writer-behind``. Before each write the writer
applies retention: evict what the rules allow, or refuse the keep and report storage full.

With a best-N limit set (``storage.best_per_label_per_day``, ``storage.best_per_label``) the writer
first asks the rule (``retention.plan_best_n``) whether the keep is good enough, before encoding it,
so a refused keep costs one query and no JPEG (counted ``not-best`` or ``best-n-protected``). The keep
it replaces is deleted only once the new one is durable (counted ``replaced-better``), chosen again
at that moment, since the page may have starred or relabelled it meanwhile. The rule reads SQLite, so
it runs here, on the writer's thread: capture and inference never wait on it.

What one keep writes, in this order, so that a crash or a power cut at any point leaves something
start-up reconciliation settles (``storage.reconcile``) and never a row without its file:

1. the JPEG, encoded in memory with its EXIF and XMP (``Writer.tags``: the time zone, the camera,
   the deployment) and its record in a comment, and the sha256 of the rest of its bytes in that
   record (``images.kept_jpeg``: how reconciliation tells a complete file);
2. the image file: written to a temp file beside its place, fsynced, renamed into place, and its
   folder fsynced (``files.atomic_file``);
3. its thumbnail, the same way;
4. its row in SQLite (``Store.add`` does 2 to 4), with the crop of a detector keep (a second small
   image, in the database) in the same transaction.

A detector keep that replaces a worse keep of its own track (``two_stage.BoxKeep.replaces_frame``)
deletes that one once it is durable, as a best-N replacement does (counted ``replaced-better``).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass

from PIL import Image

from appliance.clock import clock_source, utc_iso
from appliance.pipeline.frames import Classification, Keep, MainImage
from appliance.pipeline.two_stage import BoxKeep
from appliance.storage import retention
from appliance.storage.best_n import best_n_scopes
from appliance.storage.image_tags import ImageTags
from appliance.storage.images import box_text, encode_jpeg, kept_jpeg, make_thumbnail, thumbnail_of_file  # noqa: F401
from appliance.storage.store import Store

log = logging.getLogger(__name__)

_STOP = object()
# The writer runs this many nice steps below the thread that starts it (the loop's), never at a fixed
# value: appliance.service runs at Nice=-5 and the page at Nice=10, and a writer at a fixed nice 10
# waited behind every page view while keeps were dropped (writer-behind).
WRITER_NICE_STEPS = 3
# While storage is full the loop offers a keep this often, so keeping resumes by itself once images
# are offloaded, synced or deleted, without the writer checking retention for every frame.
FULL_RECHECK_S = 10.0
CROP_QUALITY = 85  # the crop of a detector keep: the classifier's input, ~10 KB


@dataclass(frozen=True)
class KeepJob:
    """One keep waiting to be written."""

    decision: Keep
    classification: Classification
    main: MainImage
    captured_at_s: float
    source: str
    box_keep: BoxKeep | None = None  # a detector keep's box, crop and track; None without a detector


@dataclass(frozen=True)
class ModelInfo:
    name: str
    sha256: str


class Writer:
    """Consumes ``KeepJob``s on its own thread; ``submit`` never blocks.

    ``tags`` (``ImageTags.from_config``) is what each kept JPEG's EXIF and XMP say of the camera, the
    time zone and the deployment; without it, UTC times and no camera or place. The composition root
    may replace ``writer.tags`` once the camera has started and named its model."""

    def __init__(self, store: Store, storage_config, model: ModelInfo, counts, detector: ModelInfo | None = None,
                 links: tuple[str, ...] = (), tags: ImageTags | None = None):
        self.store = store
        self.tags = tags or ImageTags()
        self.links = links  # each keep is queued for these (storage.outbox), in the transaction of its row
        self.config = storage_config
        self.model = model
        self.detector = detector
        self.counts = counts  # a collections.Counter shared with the loop's status
        self.kept = 0
        self.last_keep: dict | None = None
        self.is_full = False
        self._refused_at_s = float("-inf")
        self._queue: queue.Queue = queue.Queue(maxsize=storage_config.writer_queue)
        self._thread = threading.Thread(target=self._run, name="writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, job: KeepJob) -> bool:
        """Queue a keep; False (and nothing queued) when the writer is behind."""
        try:
            self._queue.put_nowait(job)
            return True
        except queue.Full:
            return False

    def accepts_keeps(self, now_s: float) -> bool:
        """False while storage is known to be full, except once every ``FULL_RECHECK_S``."""
        return not self.is_full or now_s - self._refused_at_s >= FULL_RECHECK_S

    @property
    def backlog(self) -> int:
        return self._queue.qsize()

    def close(self) -> None:
        """Write everything queued, then stop."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()

    def _run(self) -> None:
        # A little below the loop: when the CPU is short, classifying the next frame matters more than
        # encoding this one; the bounded queue (and its counted drops) absorbs the difference. Still
        # far above the page, whose browsing must never cost a keep. (Linux: nice is per thread, and
        # this one started at its creator's.)
        try:
            me = threading.get_native_id()
            os.setpriority(os.PRIO_PROCESS, me, os.getpriority(os.PRIO_PROCESS, me) + WRITER_NICE_STEPS)
        except (AttributeError, OSError):
            pass  # not Linux, or not permitted: run at the loop's priority
        while (job := self._queue.get()) is not _STOP:
            try:
                self.write(job)
            except OSError as e:
                self.counts["write-failed"] += 1
                log.error("could not store a keep of %s: %s", job.decision.label, e)
            except Exception:  # the writer must outlive one bad frame; the loop's status shows the count
                self.counts["write-failed"] += 1
                log.exception("could not store a keep of %s", job.decision.label)

    def write(self, job: KeepJob) -> int | None:
        """Apply the best-N rule, encode, apply retention, store one keep, then delete the keep it
        replaces; returns the new row id, or None if the keep was refused (not best, or full)."""
        captured_at = utc_iso(job.captured_at_s, "milliseconds")
        best = self._best_n(job.decision, captured_at)
        if best.refused:
            self.counts[best.refused] += 1
            log.debug("not kept (%s): %s %.2f", best.refused, job.decision.label, job.decision.score)
            return None
        image = Image.fromarray(job.main.array())
        record = {
            "captured_at": captured_at, "clock_source": clock_source(),
            "label": job.decision.label, "score": job.decision.score,
            "top_k": json.dumps(job.classification.top_k), "kind": job.decision.kind,
            "reason": job.decision.reason, "model_name": self.model.name, "model_sha256": self.model.sha256,
            "backend": job.classification.backend, "inference_ms": round(job.classification.inference_ms, 3),
            "source": job.source, "width": image.width, "height": image.height,
        }
        crop_bytes, track_replaces = self._detection(job.box_keep, record)
        image_bytes = kept_jpeg(image, self.config.jpeg_quality, record, self.tags)
        thumb_bytes = make_thumbnail(image, self.config.thumbnail_px)
        # The quota counts kept images' bytes, as the store does; thumbnails (~2 % more) are not counted.
        # The keeps this one replaces are deleted just after it, so their bytes count as freed: at the
        # quota, a better keep still takes a worse one's place.
        replaced = self.store.rows_by_id([i for i in (best.replace_id, track_replaces) if i is not None])
        if not self._make_room(len(image_bytes) - sum(row["bytes"] for row in replaced)):
            return None
        row_id = self.store.add(record, image_bytes, thumb_bytes, crop_bytes, self.links)
        log.info("kept %s %.2f (%s) from %s", record["label"], record["score"], record["kind"], record["source"])
        self.kept += 1
        self.last_keep = dict(record, id=row_id)
        if track_replaces is not None and self.store.delete([track_replaces], keep_starred=True):
            self.counts[retention.REPLACED_BETTER] += 1
            log.info("kept %s %.2f in place of item %d, a worse frame of its event", record["label"],
                     record["score"], track_replaces)
        if best.replace_id is not None and best.replace_id != track_replaces:
            self._replace_worse(job.decision, captured_at, row_id)
        return row_id

    def _detection(self, box_keep: BoxKeep | None, record: dict) -> tuple[bytes | None, int | None]:
        """Add a detector keep's box, detector and event to ``record``; its crop's JPEG, and the id of
        the keep of its event that it replaces (None if none, or that keep is already gone)."""
        if box_keep is None or box_keep.detection is None:
            return None, None
        detection = box_keep.detection
        box = detection.box
        record.update(box=box_text((box.left, box.top, box.right, box.bottom)),
                      detector_label=detection.label, detector_score=round(float(detection.score), 5),
                      detector_name=self.detector.name if self.detector else None,
                      detector_sha256=self.detector.sha256 if self.detector else None)
        replaces = None
        if box_keep.event_id is not None:
            record.update(event_id=box_keep.event_id, event_frame=box_keep.event_frame)
            if box_keep.replaces_frame is not None:
                replaces = self.store.event_keep_id(box_keep.event_id, box_keep.replaces_frame)
        crop = encode_jpeg(Image.fromarray(box_keep.crop), CROP_QUALITY) if box_keep.crop is not None else None
        return crop, replaces

    def _best_n(self, decision: Keep, captured_at: str, new_id: int | None = None) -> retention.BestN:
        config = self.config
        if decision.kind != "match" or not (config.best_per_label_per_day or config.best_per_label):
            return retention.BestN()
        scopes = best_n_scopes(self.store, decision.label, captured_at, config.best_per_label_per_day,
                               config.best_per_label, exclude_id=new_id)
        return retention.plan_best_n(decision.score, scopes, config.replace_not_taken_off)

    def _replace_worse(self, decision: Keep, captured_at: str, new_id: int) -> None:
        """Delete the worst keep that the durable keep ``new_id`` replaces, chosen again now: the page
        may have starred, relabelled or deleted the one chosen before encoding."""
        best = self._best_n(decision, captured_at, new_id)
        if best.replace_id is not None and self.store.delete([best.replace_id], keep_starred=True):
            self.counts[retention.REPLACED_BETTER] += 1
            log.info("kept %s %.2f in place of item %d, a worse keep of its label", decision.label,
                     decision.score, best.replace_id)
        elif best.refused:  # a rival was starred or relabelled while this keep was encoded: it stays too
            log.info("kept %s %.2f over its best-N limit: nothing worse may be replaced now (%s)",
                     decision.label, decision.score, best.refused)

    def _make_room(self, incoming_bytes: int) -> bool:
        need = self._bytes_needed(incoming_bytes)
        if need:
            self.store.refresh_usage()  # the page may have deleted items since this process counted
            need = self._bytes_needed(incoming_bytes)
        plan = retention.plan_eviction(self.store.retention_candidates(), need, self.config.when_full) \
            if need else retention.Plan()
        if plan.is_full:
            self.counts["storage-full"] += 1
            if not self.is_full:
                log.warning("storage full (%d bytes must be freed and nothing may be evicted): keeping "
                            "stopped until images are offloaded, synced, uploaded or deleted", need)
            self.is_full = True
            self._refused_at_s = time.monotonic()
            return False
        if plan.evict_ids:
            freed = self.store.delete(plan.evict_ids, keep_starred=True)
            self.counts["evicted"] += len(plan.evict_ids)
            log.info("retention evicted %d oldest items (%d bytes)", len(plan.evict_ids), freed)
        if self.is_full:
            log.info("storage has room again: keeping resumed")
        self.is_full = False
        return True

    def _bytes_needed(self, incoming_bytes: int) -> int:
        return retention.bytes_needed(self.store.used_bytes, incoming_bytes, self.config.quota_bytes,
                                      self.store.free_bytes(), self.config.min_free_bytes)
