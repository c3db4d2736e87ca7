"""The writer thread: encodes kept frames and stores them, off the capture → classify hot path.

The queue between the loop and the writer is bounded. When it is full the loop drops the keep (the
camera never waits for the SD card) and counts it as ``writer-behind``. Before each write the writer
applies retention: evict what the rules allow, or refuse the keep and report storage full.
"""

from __future__ import annotations

import io
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
from appliance.storage import retention
from appliance.storage.store import Store, metadata_comment

log = logging.getLogger(__name__)

_STOP = object()
WRITER_NICE = 10
# While storage is full the loop offers a keep this often, so keeping resumes by itself once images
# are offloaded, synced or deleted, without the writer checking retention for every frame.
FULL_RECHECK_S = 10.0


@dataclass(frozen=True)
class KeepJob:
    """One keep waiting to be written."""

    decision: Keep
    classification: Classification
    main: MainImage
    captured_at_s: float
    source: str


@dataclass(frozen=True)
class ModelInfo:
    name: str
    sha256: str


def encode_jpeg(image: Image.Image, quality: int, comment: bytes = b"") -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality, comment=comment)
    return out.getvalue()


def make_thumbnail(image: Image.Image, longest_px: int) -> bytes:
    scale = min(1.0, longest_px / max(image.size))
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    # resize() with a reducing gap first shrinks by whole factors (cheap), then filters the rest;
    # unlike Image.thumbnail() it needs no copy of the full-resolution frame.
    return encode_jpeg(image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0), quality=80)


def thumbnail_of_file(path, longest_px: int = 320) -> bytes:
    with Image.open(path) as image:
        return make_thumbnail(image.convert("RGB"), longest_px)


class Writer:
    """Consumes ``KeepJob``s on its own thread; ``submit`` never blocks."""

    def __init__(self, store: Store, storage_config, model: ModelInfo, counts):
        self.store = store
        self.config = storage_config
        self.model = model
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
        # Below the loop's priority: when the CPU is short, classifying the next frame matters more
        # than encoding this one; the bounded queue (and its counted drops) absorbs the difference.
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), WRITER_NICE)
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
        """Encode, apply retention, and store one keep; returns the new row id, or None if full."""
        image = Image.fromarray(job.main.array())
        record = {
            "captured_at": utc_iso(job.captured_at_s, "milliseconds"), "clock_source": clock_source(),
            "label": job.decision.label, "score": job.decision.score,
            "top_k": json.dumps(job.classification.top_k), "kind": job.decision.kind,
            "reason": job.decision.reason, "model_name": self.model.name, "model_sha256": self.model.sha256,
            "backend": job.classification.backend, "inference_ms": round(job.classification.inference_ms, 3),
            "source": job.source, "width": image.width, "height": image.height,
        }
        image_bytes = encode_jpeg(image, self.config.jpeg_quality, metadata_comment(record))
        thumb_bytes = make_thumbnail(image, self.config.thumbnail_px)
        # The quota counts kept images' bytes, as the store does; thumbnails (~2 % more) are not counted.
        if not self._make_room(len(image_bytes)):
            return None
        row_id = self.store.add(record, image_bytes, thumb_bytes)
        log.info("kept %s %.2f (%s) from %s", record["label"], record["score"], record["kind"], record["source"])
        self.kept += 1
        self.last_keep = dict(record, id=row_id)
        return row_id

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
                            "stopped until images are offloaded, synced or deleted", need)
            self.is_full = True
            self._refused_at_s = time.monotonic()
            return False
        if plan.evict_ids:
            freed = self.store.delete(plan.evict_ids)
            self.counts["evicted"] += len(plan.evict_ids)
            log.info("retention evicted %d oldest items (%d bytes)", len(plan.evict_ids), freed)
        if self.is_full:
            log.info("storage has room again: keeping resumed")
        self.is_full = False
        return True

    def _bytes_needed(self, incoming_bytes: int) -> int:
        return retention.bytes_needed(self.store.used_bytes, incoming_bytes, self.config.quota_bytes,
                                      self.store.free_bytes(), self.config.min_free_bytes)
