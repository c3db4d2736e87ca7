"""What is taken off the device: offloaded to a USB stick, synced to a laptop, uploaded to an object store.

Each is marked on a capture's row only once its copy was verified there (its SHA-256). Retention and
the best-N rule free first what is taken off: offloaded or synced, and uploaded where
``upload.evict_uploaded`` says so (``Store(..., is_uploaded_taken_off=True)``: the SQL of
``taken_off_sql``). ``TakenOff`` is the store's part that reads and writes these marks.
"""

from __future__ import annotations

from appliance.storage import outbox

TAKEN_OFF_SQL = "(offloaded_at is not null or synced_at is not null)"
TAKEN_OFF_OR_UPLOADED_SQL = "(offloaded_at is not null or synced_at is not null or uploaded_at is not null)"


def taken_off_sql(is_uploaded_taken_off: bool) -> str:
    """A SQL expression on a ``captures`` row: true if it is taken off the device."""
    return TAKEN_OFF_OR_UPLOADED_SQL if is_uploaded_taken_off else TAKEN_OFF_SQL


class TakenOff:
    """The marks of ``Store`` (its lock, its connection, its ``_update``)."""

    def unsynced_ids(self) -> list[int]:
        with self._lock:
            return [r[0] for r in self.db.execute(
                "select id from captures where synced_at is null and missing = 0 order by id")]

    def mark_synced(self, verified: dict[int, str], when: str) -> tuple[list[int], list[int]]:
        """Mark captures synced whose sha256 the client verified; returns ``(marked, mismatched)``.

        An id whose sha256 differs from the stored one (or that does not exist) is not marked."""
        marked, mismatched = [], []
        with self._lock, self.db.conn:
            for capture_id, sha256 in verified.items():
                cursor = self.db.execute("update captures set synced_at = ? where id = ? and sha256 = ?",
                                         [when, capture_id, sha256])
                (marked if cursor.rowcount else mismatched).append(capture_id)
        return marked, mismatched

    def not_offloaded(self, up_to_id: int | None = None) -> tuple[int, int]:
        """How many kept items are not yet offloaded, and their bytes (only ids ≤ ``up_to_id`` if given)."""
        where, params = "offloaded_at is null and missing = 0", []
        if up_to_id is not None:
            where, params = where + " and id <= ?", [up_to_id]
        with self._lock:
            count, size = self.db.execute(
                f"select count(*), coalesce(sum(bytes), 0) from captures where {where}", params).fetchone()
        return count, size

    def mark_offloaded(self, ids, when: str) -> None:
        """Record that these captures are on a USB stick, verified there."""
        with self._lock, self.db.conn:
            self.db.conn.executemany("update captures set offloaded_at = ? where id = ?", [(when, i) for i in ids])

    def not_uploaded_ids(self) -> list[int]:
        """Kept captures (their files present) not yet in the object store, oldest id first."""
        with self._lock:
            return [r[0] for r in self.db.execute(
                "select id from captures where uploaded_at is null and missing = 0 order by id")]

    def mark_uploaded(self, capture_id: int, when: str, corrected_label: str | None = None) -> bool:
        """Record that a capture is in the object store, its SHA-256 verified there (``links.upload``);
        False if there is no such capture (deleted meanwhile). ``corrected_label`` is the one its
        uploaded sidecar carries: if a relabel came meanwhile, the sidecar is queued to go again in the
        same transaction (a relabel after this mark queues it itself: ``Store.relabel``)."""
        with self._lock, self.db.conn:
            cursor = self.db.execute("update captures set uploaded_at = ? where id = ?", [when, capture_id])
            is_relabelled = self.db.execute("select corrected_label is not ? from captures where id = ?",
                                            [corrected_label, capture_id]).fetchone()
            if is_relabelled and is_relabelled[0]:
                outbox.enqueue_sidecar(self.db.conn, capture_id)
            return cursor.rowcount == 1
