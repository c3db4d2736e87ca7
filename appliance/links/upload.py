"""The upload link: each kept image, and a JSON sidecar of its record, to an S3-compatible store (boto3).

Where: ``[PREFIX/]HOSTNAME/YYYY/MM/DD/FILE`` in ``upload.bucket`` (the UTC day of the keep's
``captured_at``, its file's name on the card), and ``FILE.json`` beside it. The same keep always goes
to the same key, so sending it twice (at-least-once delivery) leaves one object.

How a keep goes (``send``), each step or the keep stays queued (``LinkError``) and nothing is marked:

1. the file on the card is read and its SHA-256 checked against the one recorded when it was kept: a
   file changed since (a damaged card) is refused, never uploaded as if it were the keep;
2. the image is PUT with ``x-amz-checksum-sha256``: the store computes the SHA-256 of what arrived
   and refuses the object if it differs (``BadDigest``), so a body damaged on the way is never stored;
   its answer reports the SHA-256 of what it stored, which must be the keep's. The request's signature
   covers that header but not the body (``UNSIGNED-PAYLOAD``, over ``http://`` too): a signed body
   would cost a second SHA-256 of every image in boto3 and another in the store, for no more than the
   checksum already proves;
3. the sidecar, the same way;
4. a store whose PUT answer reports no SHA-256 is asked (HEAD in checksum mode) and, if it says none
   there either, the object is read back and hashed (``verified_by`` in ``describe()``: "checksum" or
   "read-back"). SeaweedFS reports it on PUT and HEAD (``tests/test_upload.py``); AWS documents both;
5. only then the keep is marked ``uploaded_at`` (``Store.mark_uploaded``), as offload and sync mark
   theirs after their read-back.

A relabel of a keep already uploaded queues a ``sidecar:ID`` entry (``Store.relabel``, in the
relabel's transaction; ``Store.mark_uploaded`` queues it too for a relabel made while the upload was
under way): its sidecar alone goes again, as the row is then, verified the same way.

Several at once: the links service sends one entry at a time, and a store answers each request after
a delay that one keep at a time would spend idle; so ``send`` also queues the uploads (steps 1-4) of
the entries due next, up to ``AHEAD`` keeps, for ``WINDOW`` uploads at once (as rclone's
``--transfers``), refilled once half of it is uploaded. It is deep so that the uploads go on while
the service's thread commits (two a keep: its mark, its entry's deletion). Marks stay in order, each
in its own ``send``: an entry read ahead is marked only when it is sent, and only if its row is still
the one uploaded (else it goes again as it is now: a relabel made meanwhile goes out). After any
failure what was read ahead is forgotten (what had not started is not sent) and sent again.

Bandwidth: ``upload.max_bytes_per_s`` paces every body sent (image and sidecar) across uploads: the
body is read for sending at most that fast (the pacing is put on after signing, in botocore's
``before-send``).

When the store fails as a whole (unreachable, no such bucket, keys refused, a server error) the link
says it is down (``is_up``) and lets one entry try again after 1 s, then 2, 4 … 60 s: the first success
brings it back up, and the links service then sends the whole queue at once. A failure of one keep
(its file damaged, a body damaged on the way) leaves the link up and that entry waits its backoff.
Retries are the outbox's: boto3's own are off, its timeouts short.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import threading
import time
from concurrent import futures
from pathlib import Path

import boto3
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError
from botocore.handlers import add_expect_header

from appliance.clock import utc_iso
from appliance.errors import LinkError
from appliance.storage.files import read_regular
from appliance.storage.images import DETECTION_FIELDS, box_or_none
from appliance.storage.outbox import Outbox, enqueue_keep, keep_key, sidecar_key
from appliance.transfer.export import effective_label

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5
READ_TIMEOUT_S = 30
PROBE_FIRST_S = 1.0  # the link down: one entry tries again after this, then twice as long each time …
PROBE_MAX_S = 60.0   # … up to this
CHUNK = 64 * 1024
WINDOW = 4  # keeps uploading at once, as rclone's --transfers (2, 3 and 6 measured no better: docs/performance.md)
AHEAD = 16  # keeps read ahead, queued for those WINDOW: they go on while the service's thread marks (module doc)
SIDECAR_FIELDS = ("captured_at", "clock_source", "score", "kind", "reason", "model_name", "model_sha256", "backend",
                  "inference_ms", "source", "width", "height", "bytes", "sha256")
DENIED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"}
DAMAGED = {"BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch"}


def object_key(prefix: str, device: str, captured_at: str, image_path: str) -> str:
    """``[PREFIX/]DEVICE/YYYY/MM/DD/FILE``: the UTC day of ``captured_at``, the kept file's name."""
    year, month, day = captured_at[:10].split("-")
    return "/".join([*([prefix.strip("/")] if prefix.strip("/") else []), device, year, month, day,
                     Path(image_path).name])


def sidecar(row: dict, device: str) -> dict:
    """The record uploaded beside a keep's image: what it is, what found it, and how to check it."""
    record = {"id": row["id"], "device": device, "file": Path(row["image_path"]).name,
              "label": effective_label(row), "model_label": row["label"], "corrected_label": row["corrected_label"],
              **{field: row[field] for field in SIDECAR_FIELDS}, "top_k": json.loads(row["top_k"] or "[]")}
    record.update((field, row[field]) for field in DETECTION_FIELDS if row.get(field) is not None)
    if "box" in record:
        record["box"] = box_or_none(record["box"])
    return record


def checksum_b64(sha256_hex: str) -> str:
    """S3's form of a SHA-256: base64 of the digest's bytes."""
    return base64.b64encode(bytes.fromhex(sha256_hex)).decode()


def reported_sha256(answer: dict) -> str | None:
    """The hex SHA-256 a store's answer (to a PUT, or a HEAD in checksum mode) reports, or None."""
    reported = answer.get("ChecksumSHA256")
    if not reported or "-" in reported:  # "…-N": a multipart object's checksum of its parts' checksums
        return None
    return base64.b64decode(reported).hex()


def stored_sha256(client, bucket: str, key: str) -> tuple[str, str]:
    """The hex SHA-256 of the object at ``key``, and how it is known: ``"checksum"`` (the store reports
    it on HEAD) or ``"read-back"`` (it reports none: the object is read back and hashed)."""
    reported = reported_sha256(client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED"))
    if reported:
        return reported, "checksum"
    digest = hashlib.sha256()
    for chunk in client.get_object(Bucket=bucket, Key=key)["Body"].iter_chunks(CHUNK):
        digest.update(chunk)
    return digest.hexdigest(), "read-back"


class Pacer:
    """At most ``bytes_per_s`` over time, across every body sent: ``take(n)`` returns when ``n`` more
    bytes may go. An idle link earns no burst."""

    def __init__(self, bytes_per_s: int):
        self.bytes_per_s = bytes_per_s
        self._free_at = 0.0  # time.monotonic() from which the next bytes may go
        self._lock = threading.Lock()  # several uploads take from it at once

    def take(self, count: int) -> None:
        with self._lock:
            now = time.monotonic()
            start = max(now, self._free_at)
            self._free_at = start + count / self.bytes_per_s
        if start > now:
            time.sleep(start - now)


class PacedBody(io.RawIOBase):
    """A request body read no faster than its ``Pacer`` allows."""

    def __init__(self, body, pacer: Pacer):
        self.body, self.pacer = (io.BytesIO(body) if isinstance(body, bytes) else body), pacer

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self.body.read(CHUNK if size is None or size < 0 else min(size, CHUNK))
        if data:
            self.pacer.take(len(data))
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def tell(self) -> int:
        return self.body.tell()

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self.body.seek(offset, whence)


class UploadLink:
    """Kept images and their sidecars to ``config.upload``'s bucket, verified by SHA-256 (module doc)."""

    name = "upload"

    def __init__(self, config):
        self.upload = config.upload
        self.device = config.system.hostname
        self.pacer = Pacer(self.upload.max_bytes_per_s) if self.upload.max_bytes_per_s else None
        self.client = None
        self.problem: str | None = None
        self.verified_by: str | None = None  # "checksum" (the store's) or "read-back"
        self._down_until: float | None = None  # time.monotonic() of the next try while down; None: up
        self._probe_s = PROBE_FIRST_S
        self._pool: futures.ThreadPoolExecutor | None = None
        self._outbox: Outbox | None = None  # the links service's, to read ahead in (see _read_ahead)
        # entry key → (the entry's id, the row it read, its upload)
        self._ahead: dict[str, tuple[int, dict, futures.Future]] = {}

    def start(self) -> None:
        """Build the S3 client (no request yet: a store that is down is found by the first send)."""
        upload = self.upload
        signing = {} if upload.access_key else {"signature_version": UNSIGNED}  # no keys: anonymous requests
        self.client = boto3.client(
            "s3", endpoint_url=upload.endpoint, region_name=upload.region,
            aws_access_key_id=upload.access_key or None, aws_secret_access_key=upload.secret_key or None,
            # UNSIGNED-PAYLOAD: the store checks each body against its signed x-amz-checksum-sha256 (module doc).
            config=Config(s3={"addressing_style": "path", "payload_signing_enabled": False},
                          retries={"total_max_attempts": 1},
                          connect_timeout=CONNECT_TIMEOUT_S, read_timeout=READ_TIMEOUT_S,
                          max_pool_connections=WINDOW, request_checksum_calculation="when_required",
                          response_checksum_validation="when_required", **signing))
        # No "Expect: 100-continue": it costs a round trip every image, to spare a body only when the
        # store refuses it, and then the link is down and tries one keep a minute at most.
        self.client.meta.events.unregister("before-call.s3", add_expect_header)
        if self.pacer:
            self.client.meta.events.register("before-send.s3.PutObject", self._pace_body)
        self._pool = futures.ThreadPoolExecutor(WINDOW, thread_name_prefix="upload")

    def _pace_body(self, request, **_):
        request.body = PacedBody(request.body, self.pacer)

    def is_up(self) -> bool:
        """Up, or down with its next try due (module doc)."""
        return self._down_until is None or time.monotonic() >= self._down_until

    def catch_up(self, outbox: Outbox, store) -> None:
        """Queue every keep not yet uploaded (kept before the link was configured, re-indexed at start-up,
        or whose entry was lost); one already queued stays as it is. Keeps the service's ``outbox`` to
        read ahead in."""
        self._outbox = outbox
        before = outbox.depth()[self.name]
        with outbox.conn:
            for capture_id in store.not_uploaded_ids():
                enqueue_keep(outbox.conn, capture_id, (self.name,))
        if added := outbox.depth()[self.name] - before:
            log.info("upload: queued %d keeps not yet uploaded", added)

    def tick(self, outbox: Outbox) -> None:
        self._outbox = outbox

    def send(self, entry, capture: dict | None, store) -> None:
        """Upload ``capture``'s image and sidecar, verify the image's SHA-256 in the store, mark it
        uploaded; for a ``sidecar:`` entry (a keep relabelled after its upload), its sidecar alone."""
        if capture is None or capture["missing"]:
            log.warning("upload: %s has no file on the card (missing): nothing to upload", entry.key)
            return
        if entry.key == sidecar_key(capture["id"]):
            self._send_sidecar(capture)
            return
        _, row, upload = self._ahead.pop(entry.key, (None, None, None))
        if row != capture:  # not read ahead, or its row changed since (a relabel): upload it as it is now
            if upload is not None and not upload.cancel():
                futures.wait([upload])  # never two uploads of one key at once
            upload = self._pool.submit(self._upload, capture, store.data_dir)
        self._read_ahead(entry, store)
        try:
            self.verified_by = upload.result()
        except (BotoCoreError, ClientError, LinkError) as e:
            error = e if isinstance(e, LinkError) else self._failure(e, self._key(capture))
            self.problem = str(error)
            self._forget_ahead()  # what was read ahead is sent again, not trusted from before the failure
            raise error from None
        store.mark_uploaded(capture["id"], utc_iso(), capture["corrected_label"])
        self._up()

    def _send_sidecar(self, capture: dict) -> None:
        """The sidecar of a keep already uploaded, as its row is now. Not yet uploaded (its ``keep:``
        entry still waits, and reads the row when it goes): nothing to do."""
        if not capture["uploaded_at"]:
            return
        key = f"{self._key(capture)}.json"
        record = json.dumps(sidecar(capture, self.device), indent=1).encode()
        try:
            self._put(key, record, "application/json", hashlib.sha256(record).hexdigest())
        except (BotoCoreError, ClientError, LinkError) as e:
            error = e if isinstance(e, LinkError) else self._failure(e, key)
            self.problem = str(error)
            raise error from None
        self._up()

    def _up(self) -> None:
        self._down_until, self._probe_s, self.problem = None, PROBE_FIRST_S, None

    def _read_ahead(self, entry, store) -> None:
        """Queue the uploads of the keeps due after ``entry``, up to ``AHEAD`` of them, for the ``WINDOW``
        uploads at once; each is verified but not marked (module doc: "Several at once"). Refilled once
        half of the queue has been uploaded: fewer queries on the service's thread, which also marks."""
        if self._outbox is None or sum(not upload.done() for *_, upload in self._ahead.values()) > AHEAD // 2:
            return
        listed = self._outbox.due(self.name, AHEAD + 1)
        due = [e for e in listed
               if e.key != entry.key and e.capture_id is not None and e.key == keep_key(e.capture_id)]
        # One read ahead that is no longer due (its keep deleted, or backing off) is let go; one past the
        # end of a full list is still due.
        end = listed[-1].id if len(listed) > AHEAD else float("inf")
        keys = {e.key for e in due}
        for key, (entry_id, _, upload) in list(self._ahead.items()):
            if key not in keys and entry_id < end:
                upload.cancel()
                del self._ahead[key]
        new = [e for e in due if e.key not in self._ahead][:AHEAD - len(self._ahead)]
        rows = {row["id"]: row for row in store.rows_by_id(e.capture_id for e in new)} if new else {}
        for ahead in new:
            row = rows.get(ahead.capture_id)
            if row is not None and not row["missing"]:
                self._ahead[ahead.key] = (ahead.id, row, self._pool.submit(self._upload, row, store.data_dir))

    def _forget_ahead(self) -> None:
        uploads = [upload for _, _, upload in self._ahead.values() if not upload.cancel()]
        futures.wait(uploads)
        self._ahead.clear()

    def _key(self, capture: dict) -> str:
        return object_key(self.upload.prefix, self.device, capture["captured_at"], capture["image_path"])

    def _upload(self, capture: dict, data_dir: Path) -> str:
        """Upload and verify one keep (in a thread of the pool); how it was verified. Raises ``LinkError``
        for a file that cannot go, and boto3's own errors for a request that failed."""
        path = data_dir / capture["image_path"]
        try:
            data = read_regular(path)
        except OSError as e:
            raise LinkError(f"{path}: cannot read the kept image ({e}): not uploaded; start-up's check marks a "
                            "missing file") from None
        if hashlib.sha256(data).hexdigest() != capture["sha256"]:
            raise LinkError(f"{path}: its bytes differ from the SHA-256 recorded when it was kept (damaged on the "
                            "card, or edited): not uploaded; check the card (it stays queued and on the device)")
        key = self._key(capture)
        stored, verified_by = self._put(key, data, "image/jpeg", capture["sha256"]), "checksum"
        record = json.dumps(sidecar(capture, self.device), indent=1).encode()
        self._put(f"{key}.json", record, "application/json", hashlib.sha256(record).hexdigest())
        if stored is None:  # a store whose PUT answer does not say: ask it, or read the object back
            stored, verified_by = stored_sha256(self.client, self.upload.bucket, key)
            if stored != capture["sha256"]:
                raise LinkError(f"{self.upload.endpoint}: {self.upload.bucket}/{key} holds SHA-256 {stored}, not the "
                                f"kept image's {capture['sha256']}: not marked uploaded; it is sent again")
        return verified_by

    def _put(self, key: str, body: bytes, content_type: str, sha256_hex: str) -> str | None:
        """PUT one object with its SHA-256 for the store to check; the SHA-256 the store reports for what
        it stored (``LinkError`` if that is not ``sha256_hex``), or None if its answer has none."""
        answer = self.client.put_object(Bucket=self.upload.bucket, Key=key, Body=body, ContentType=content_type,
                                        ChecksumAlgorithm="SHA256", ChecksumSHA256=checksum_b64(sha256_hex))
        stored = reported_sha256(answer)
        if stored not in (None, sha256_hex):
            raise LinkError(f"{self.upload.endpoint}: {self.upload.bucket}/{key} holds SHA-256 {stored}, not the "
                            f"kept one's {sha256_hex}: not marked uploaded; it is sent again")
        return stored

    def _failure(self, error: Exception, key: str) -> LinkError:
        """The ``LinkError`` of a request that failed; the link is down if the store failed as a whole."""
        endpoint, bucket = self.upload.endpoint, self.upload.bucket
        if isinstance(error, (BotoConnectionError, HTTPClientError)):
            return self._down(f"cannot reach the object store at {endpoint} ({error}): check upload.endpoint and the "
                              "network; tried again later")
        if not isinstance(error, ClientError):
            return self._down(f"{endpoint}: boto3 could not send {bucket}/{key} ({error}): check the [upload] "
                              "settings; tried again later")
        code = str(error.response.get("Error", {}).get("Code", ""))
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        said = f"{code or status}: {error.response.get('Error', {}).get('Message') or 'no message'}"
        if code == "NoSuchBucket":
            return self._down(f"upload.bucket {bucket!r} does not exist at {endpoint}: create it there, or set "
                              "upload.bucket to one that does")
        if code in DENIED or status == 403:
            return self._down(f"{endpoint} refused to store {bucket}/{key} ({said}): check upload.access_key and "
                              f"upload.secret_key, and that this key may write and read in bucket {bucket!r}")
        if code in DAMAGED:
            return LinkError(f"{endpoint}: {bucket}/{key} arrived damaged, the store refused it ({said}): sent again")
        if status >= 500:
            return self._down(f"{endpoint}: the object store failed ({said}): tried again later")
        return LinkError(f"{endpoint}: the object store refused {bucket}/{key} ({said})")

    def _down(self, problem: str) -> LinkError:
        self._down_until = time.monotonic() + self._probe_s
        self._probe_s = min(2 * self._probe_s, PROBE_MAX_S)
        return LinkError(problem)

    def describe(self) -> dict:
        return {"connected": self.client is not None and self._down_until is None, "problem": self.problem,
                "endpoint": self.upload.endpoint, "bucket": self.upload.bucket, "verified_by": self.verified_by,
                "max_bytes_per_s": self.upload.max_bytes_per_s}

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)  # waits for the uploads under way
            self._pool = None
        self._ahead.clear()
        if self.client is not None:
            self.client.close()
            self.client = None
