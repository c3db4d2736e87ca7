"""The store of kept captures: image files under ``<data>/YYYY/MM/DD/`` and a SQLite database.

Rules (DESIGN.md, "Storage rules"):

* A file is durable before its row exists. ``add`` writes a keep in this order:

  1. the image: a temp file beside it, fsync, rename into place, fsync of the folder;
  2. its thumbnail under ``thumbs/``, the same way;
  3. the row, and a detector keep's crop (``crops``), in one SQLite transaction (WAL).

  Image before thumbnail, so that a crash between them leaves an image without a row (indexed
  again at start-up, its thumbnail made again) rather than a thumbnail of nothing.
* Each kept JPEG carries its own record as JSON in a JPEG comment (``images``), so a file whose row
  was lost (a crash between rename and insert) is indexed again at start-up with its full metadata.
* ``reconcile()`` at start-up brings rows and files back into step, moving what it cannot use to
  ``<data>/quarantine/``, never deleting a file silently (``reconcile`` module).
* A discarded frame never reaches the store, so it costs no writes at all.
* A full card must not keep the appliance from starting: the store sets aside a reserve while
  there is room and gives it back when it opens on a full card (``reserve`` module).
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from sqlite_utils import Database

from appliance.errors import StorageError
from appliance.storage import crops, outbox
from appliance.storage.files import atomic_write_bytes, slug
from appliance.storage.images import DETECTION_FIELDS, detection_fields
from appliance.storage.images import METADATA_PREFIX, RECORD_FIELDS, metadata_comment  # noqa: F401 (their old home)
from appliance.storage.reconcile import QUARANTINE, THUMBS, ReconcileReport, reconcile  # noqa: F401
from appliance.storage.reserve import OPEN_NEEDS_BYTES, RESERVE_BYTES, RESERVE_NAME, make_room  # noqa: F401
from appliance.storage.taken_off import TAKEN_OFF_SQL, TakenOff, taken_off_sql  # noqa: F401

if TYPE_CHECKING:  # an annotation only
    from appliance.storage.filters import Filters

log = logging.getLogger(__name__)

DB_NAME = "appliance.db"
LABELS_MAX_AGE_S = 30.0
COUNT_MAX_AGE_S = 5.0  # the status API's item count: see count()

COLUMNS = {
    "id": int, "captured_at": str, "clock_source": str, "label": str, "score": float, "top_k": str,
    "kind": str, "reason": str, "model_name": str, "model_sha256": str, "backend": str,
    "inference_ms": float, "source": str, "image_path": str, "thumb_path": str, "width": int,
    "height": int, "bytes": int, "sha256": str, "starred": int, "offloaded_at": str, "synced_at": str,
    "uploaded_at": str, "missing": int, "corrected_label": str, **DETECTION_FIELDS,
}


class Store(TakenOff):
    """Kept captures in ``data_dir``: files plus a WAL-mode SQLite database. Thread-safe.

    ``is_uploaded_taken_off`` (``upload.evict_uploaded``): retention and the best-N rule count an item
    uploaded to the object store as taken off the device, like one offloaded or synced (``taken_off``)."""

    def __init__(self, data_dir: str | Path, is_uploaded_taken_off: bool = False):
        self.data_dir = Path(data_dir)
        self.taken_off_sql = taken_off_sql(is_uploaded_taken_off)
        self._lock = threading.Lock()
        self._labels: tuple[float, list[str]] | None = None  # (when counted, labels): see labels()
        self._count: tuple[float, int] | None = None  # (when counted, rows): see count()
        self.released_reserve = False  # the reserve was given back at this start: the card is full
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self.released_reserve = make_room(self.data_dir, self.free_bytes())
            connection = sqlite3.connect(self.data_dir / DB_NAME, check_same_thread=False, timeout=30)
            self.db = Database(connection)
            self.db.enable_wal()
            self._create_schema()
        except (OSError, sqlite3.DatabaseError) as e:
            raise StorageError(f"{self.data_dir}: cannot open the store ({e}): check storage.data_dir "
                               "exists, is writable, and holds a valid appliance.db") from None
        self.used_bytes, self.audit_bytes = self._sums()

    def _create_schema(self):
        table = self.db["captures"]
        if not table.exists():
            table.create(COLUMNS, pk="id", not_null={"captured_at", "label", "kind", "image_path", "sha256"},
                         defaults={"starred": 0, "missing": 0})
        for column, kind in COLUMNS.items():  # a database from an older appliance gains new columns
            if column not in table.columns_dict:
                table.add_column(column, kind)
        outbox.create(self.db.conn)
        # The last capture id given (see _new_id()).
        self.db.execute("create table if not exists ids (name text primary key, last integer not null)")
        # The files of rows deleted but not yet unlinked (see delete()).
        self.db.execute("create table if not exists deleting (path text primary key)")
        self.db.execute(crops.SCHEMA)
        self.db.execute("create index if not exists captures_event on captures(event_id, event_frame)")
        # Newest-first keyset pagination, alone or by effective label (a correction wins).
        self.db.execute("create index if not exists captures_newest on captures(captured_at, id)")
        self.db.execute("create index if not exists captures_label_newest on "
                        "captures(coalesce(corrected_label, label), captured_at, id)")

    def refresh_usage(self) -> None:
        """Re-read bytes used from the database: another process (the web page) may have deleted items."""
        with self._lock:
            self.used_bytes, self.audit_bytes = self._sums()

    def _sums(self):
        row = self.db.execute(
            "select coalesce(sum(bytes), 0), coalesce(sum(case when kind = 'audit' then bytes end), 0) "
            "from captures where missing = 0").fetchone()
        return int(row[0]), int(row[1])

    # -- writing -------------------------------------------------------------------------------------

    def add(self, record: dict, image_bytes: bytes, thumb_bytes: bytes, crop_bytes: bytes | None = None,
            links=()) -> int:
        """Write a kept image and its thumbnail durably, then insert its row (and ``crop_bytes``, a
        detector keep's crop, in the same transaction); returns the row id.

        ``record`` holds ``RECORD_FIELDS`` plus ``width`` and ``height``, and a detector keep's
        ``DETECTION_FIELDS`` (checked here, before any file is written: ``ValueError`` names the field);
        paths, size and sha256 are filled in here.
        """
        detection_fields(record)
        relative = self._free_name(record["captured_at"], record["label"])
        image_path, thumb_path = self.data_dir / relative, self.data_dir / THUMBS / relative
        image_path.parent.mkdir(parents=True, exist_ok=True)
        thumb_path.parent.mkdir(parents=True, exist_ok=True)
        # The durable order of the module's doc: image, thumbnail, row and crop.
        atomic_write_bytes(image_path, image_bytes)
        atomic_write_bytes(thumb_path, thumb_bytes)
        row = dict(record, image_path=str(relative), thumb_path=str(Path(THUMBS) / relative),
                   bytes=len(image_bytes), sha256=hashlib.sha256(image_bytes).hexdigest())
        return self.insert_row(row, crop_bytes, links)

    def insert_row(self, row: dict, crop_bytes: bytes | None = None, links=()) -> int:
        """Insert the row of files already durable on disk (``add``, reconciliation), its crop if given,
        and an outbox entry for each of ``links`` (``outbox``), in one transaction; returns its id."""
        with self._lock:
            with self.db.atomic():  # not `with conn`: sqlite-utils' insert would commit the row alone
                row_id = self._new_id()
                self.db["captures"].insert(dict(row, id=row_id))
                crops.put(self.db.conn, row_id, crop_bytes)
                outbox.enqueue_keep(self.db.conn, row_id, links)
            self._count = None
            self.used_bytes += row["bytes"]
            if row["kind"] == "audit":
                self.audit_bytes += row["bytes"]
        return row_id

    def _new_id(self) -> int:
        """The next capture id, never one a deleted capture had: SQLite would give the largest id again
        once its row is gone, and an id names an item to the page's caches, the sync and the links."""
        return self.db.conn.execute(
            "insert into ids (name, last) values ('captures', 1 + max(coalesce((select last from ids where name = "
            "'captures'), 0), coalesce((select max(id) from captures), 0))) on conflict (name) do update set "
            "last = excluded.last returning last").fetchone()[0]

    def _free_name(self, captured_at: str, label: str) -> Path:
        """``YYYY/MM/DD/HHMMSS.mmm_label.jpg`` (UTC), made unique if two keeps share a millisecond."""
        day, clock = captured_at[:10], captured_at[11:23].replace(":", "")
        stem = f"{clock}_{slug(label)}"
        folder = Path(*day.split("-"))
        candidate, n = folder / f"{stem}.jpg", 1
        while (self.data_dir / candidate).exists():
            candidate, n = folder / f"{stem}_{n}.jpg", n + 1
        return candidate

    def delete(self, ids, keep_starred: bool = False) -> int:
        """Delete captures' rows and files; returns the bytes freed.

        The rows go, and their files' paths are written down (``deleting``), in one transaction;
        then the files are unlinked and the paths let go. A power cut before the transaction leaves
        everything; after it, start-up's reconciliation (``finish_deletes``) unlinks what is left,
        so a delete is never undone (its file re-indexed) nor left half-done (a row marked missing).
        ``keep_starred`` (retention's and the best-N rule's deletes) spares a row starred in the
        meantime, by the page in its own process: the check is part of each row's delete."""
        rows, deleted = self.rows_by_id(ids), []
        spare = " and starred = 0" if keep_starred else ""
        with self._lock:
            with self.db.conn:
                for row in rows:
                    if self.db.conn.execute(f"delete from captures where id = ?{spare}", [row["id"]]).rowcount:
                        deleted.append(row)
                crops.drop(self.db.conn, [row["id"] for row in deleted])
                paths = [relative for row in deleted for relative in (row["image_path"], row["thumb_path"]) if relative]
                self.db["deleting"].insert_all(({"path": p} for p in paths), replace=True)
            self._labels = self._count = None
            for row in deleted:
                if not row["missing"]:
                    self.used_bytes -= row["bytes"]
                    self.audit_bytes -= row["bytes"] if row["kind"] == "audit" else 0
        self._unlink(paths)
        return sum(row["bytes"] for row in deleted)

    def finish_deletes(self) -> list[str]:
        """Unlink the files of deletes a power cut interrupted (see ``delete``); their paths."""
        with self._lock:
            paths = [r[0] for r in self.db.execute("select path from deleting")]
        self._unlink(paths)
        return paths

    def _unlink(self, paths: list[str]) -> None:
        for relative in paths:
            if Path(relative).is_absolute() or ".." in Path(relative).parts:
                log.error("not unlinking %r: not a path inside the data dir", relative)
                continue
            try:
                (self.data_dir / relative).unlink(missing_ok=True)  # a link itself, never what it points to
            except OSError as e:
                log.error("could not delete %s: %s", relative, e)
        if paths:
            with self._lock:
                with self.db.conn:
                    self.db.conn.executemany("delete from deleting where path = ?", [(p,) for p in paths])

    # -- reading -------------------------------------------------------------------------------------

    def rows(self, where: str = "", params=(), order: str = "id"):
        with self._lock:
            return list(self.db["captures"].rows_where(where or None, params, order_by=order))

    def rows_by_id(self, ids):
        ids = list(ids)
        if not ids:
            return []
        return self.rows(f"id in ({', '.join('?' * len(ids))})", ids)

    def count(self, max_age_s: float = 0.0) -> int:
        """The number of captures. Counting reads a whole index (~2 ms at 100,000 items on a laptop,
        under the lock the gallery's queries wait on), so the status API, which every open page polls,
        takes a count up to ``max_age_s`` old; this process's own inserts and deletes refresh it."""
        now_s = time.monotonic()
        with self._lock:
            if max_age_s <= 0 or self._count is None or now_s - self._count[0] > max_age_s:
                self._count = (now_s, self.db["captures"].count)
            return self._count[1]

    def retention_candidates(self):
        """Captures oldest first as ``(id, bytes, is_starred, is_taken_off)``, for retention to choose from."""
        with self._lock:
            cursor = self.db.execute(f"select id, bytes, starred, {self.taken_off_sql} from captures "
                                     "where missing = 0 order by captured_at, id")
            rows = cursor.fetchall()
        return [(i, b, bool(s), bool(t)) for i, b, s, t in rows]

    def free_bytes(self) -> int:
        stats = os.statvfs(self.data_dir)
        return stats.f_bavail * stats.f_frsize

    # -- start-up ------------------------------------------------------------------------------------

    def reconcile(self, thumbnail=None) -> ReconcileReport:
        """Bring rows and files back into step after a crash or a card edited elsewhere (``reconcile``).

        ``thumbnail(image_path) -> bytes`` makes a missing thumbnail (default: 320 px)."""
        return reconcile(self, thumbnail)

    def mark_missing(self, capture_id: int, is_missing: bool) -> None:
        self._update(capture_id, {"missing": int(is_missing)})

    def set_thumb_path(self, capture_id: int, thumb_path: str) -> None:
        self._update(capture_id, {"thumb_path": thumb_path})

    def checkpoint(self) -> None:
        """Move the WAL's pages into the database file and empty the WAL."""
        with self._lock:
            self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # -- review (the web page) ---------------------------------------------------------------------

    def page(self, filters: Filters, before: tuple[str, int] | None = None, limit: int = 48):
        """Captures newest first matching ``filters``, after the keyset cursor ``before``
        ``(captured_at, id)`` of the previous page's last item; returns ``(rows, next_cursor)``.

        Keyset pagination costs the same on the last page as on the first, at any size."""
        where, params = filters.sql()
        if before is not None:
            where.append("(captured_at, id) < (?, ?)")
            params.extend(before)
        sql = (f"select * from captures {'where ' + ' and '.join(where) if where else ''} "
               "order by captured_at desc, id desc limit ?")
        with self._lock:
            rows = [dict(r) for r in self._query(sql, [*params, limit + 1])]
        next_cursor = (rows[limit - 1]["captured_at"], rows[limit - 1]["id"]) if len(rows) > limit else None
        return rows[:limit], next_cursor

    def after_id(self, after: int, limit: int):
        """Captures with id > ``after``, oldest first: the sync API's stable cursor."""
        with self._lock:
            return [dict(r) for r in self._query(
                "select * from captures where id > ? and missing = 0 order by id limit ?", [after, limit])]

    def get(self, capture_id: int) -> dict | None:
        rows = self.rows_by_id([capture_id])
        return rows[0] if rows else None

    def crop(self, capture_id: int) -> bytes | None:
        """The JPEG of a detector keep's crop, or None (no such capture, or a keep without one)."""
        with self._lock:
            return crops.get(self.db.conn, capture_id)

    def has_crop(self, capture_id: int) -> bool:
        with self._lock:
            return crops.has(self.db.conn, capture_id)

    def event_keep_id(self, event_id: str, event_frame: int) -> int | None:
        """The id of the keep of frame ``event_frame`` of the track ``event_id``, or None: a better
        frame of a track replaces its earlier keep."""
        with self._lock:
            row = self.db.execute("select id from captures where event_id = ? and event_frame = ? "
                                  "order by id desc limit 1", [event_id, event_frame]).fetchone()
        return row[0] if row else None

    def labels(self, max_age_s: float = LABELS_MAX_AGE_S) -> list[str]:
        """Effective labels in use, most kept first (for the gallery's filter).

        Counting them reads the whole table (~9 ms at 100,000 items on a laptop, several times that
        on a Pi), so the list is kept for ``max_age_s``; this process's own relabels and deletes
        refresh it at once, the loop's new keeps within ``max_age_s``."""
        now_s = time.monotonic()
        with self._lock:
            if self._labels is None or now_s - self._labels[0] > max_age_s:
                self._labels = (now_s, [r[0] for r in self.db.execute(
                    "select coalesce(corrected_label, label) as l from captures group by l order by count(*) desc, l")])
            return list(self._labels[1])

    def set_starred(self, capture_id: int, is_starred: bool) -> bool:
        return self._update(capture_id, {"starred": int(is_starred)})

    def relabel(self, capture_id: int, label: str | None) -> bool:
        """Record a person's correction (the model's label stays); None or "" clears it. A keep already
        in the object store has its sidecar queued to go again, in the same transaction (see
        ``mark_uploaded``)."""
        self._labels = None
        with self._lock, self.db.conn:
            cursor = self.db.execute("update captures set corrected_label = ? where id = ?", [label or None, capture_id])
            is_uploaded = self.db.execute("select uploaded_at is not null from captures where id = ?",
                                          [capture_id]).fetchone()
            if is_uploaded and is_uploaded[0]:
                outbox.enqueue_sidecar(self.db.conn, capture_id)
            return cursor.rowcount == 1

    def _update(self, capture_id, values) -> bool:
        with self._lock, self.db.conn:
            assignments = ", ".join(f"{column} = ?" for column in values)
            cursor = self.db.execute(f"update captures set {assignments} where id = ?", [*values.values(), capture_id])
            return cursor.rowcount == 1

    def select(self, sql: str, params=()) -> list[tuple]:
        """The rows of a read-only query, as tuples, under the store's lock (its one connection is
        shared between threads). For queries that belong to another module (the activity chart)."""
        with self._lock:
            return self.db.execute(sql, params).fetchall()

    def _query(self, sql, params):
        cursor = self.db.execute(sql, params)
        columns = [c[0] for c in cursor.description]
        return (dict(zip(columns, row)) for row in cursor)

    def close(self) -> None:
        with self._lock:
            self.db.conn.close()

