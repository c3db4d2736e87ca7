"""Keeps per hour or per day, per effective label: the numbers behind the review page's activity chart.

Pure apart from one read of the store, and the time is passed in (``now_s``), so a test or a
replay can ask "what did the chart look like at noon yesterday" and get a fixed answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

from appliance.clock import utc_datetime

# period -> (bucket length in seconds, default number of buckets, SQLite strftime format of a bucket).
# Buckets are UTC, like captured_at, so a day's bar is the same on every viewer's browser.
PERIODS = MappingProxyType({
    "hour": (3600, 48, "%Y-%m-%dT%H:00:00Z"),
    "day": (86400, 30, "%Y-%m-%d"),
})


@dataclass(frozen=True)
class Activity:
    """Keeps counted per UTC bucket and per effective label (a person's correction wins).

    ``bucket_starts`` holds every bucket in the range, empty ones too, oldest first: an hour bucket
    reads ``"2026-11-25T14:00:00Z"``, a day bucket ``"2026-11-25"``. ``labels`` are ordered by their
    total count, most first (ties by name). ``counts[(bucket, label)]`` is absent when zero.
    """

    period: str
    bucket_starts: tuple[str, ...]
    labels: tuple[str, ...]
    counts: Mapping[tuple[str, str], int]
    total: int

    def count(self, bucket: str, label: str) -> int:
        return self.counts.get((bucket, label), 0)

    def bucket_total(self, bucket: str) -> int:
        return sum(self.count(bucket, label) for label in self.labels)

    def label_total(self, label: str) -> int:
        return sum(self.count(bucket, label) for bucket in self.bucket_starts)


def keeps_per_bucket(store, period: str, now_s: float, buckets: int | None = None,
                     kinds=("match",)) -> Activity:
    """Count the captures of ``kinds`` per bucket and label, over the ``buckets`` up to ``now_s``.

    ``period`` is ``"hour"`` (48 buckets by default) or ``"day"`` (30); the newest bucket is the one
    holding ``now_s``. Rows whose file is missing are left out: they are no longer keeps.

    ``store`` is an ``appliance.storage.store.Store``. Its one sqlite3 connection is shared between the
    writer thread and web requests, so the read runs under the store's lock; Store has no public
    read-query method to use instead (``Store.query()`` would be the cleaner seam).
    """
    if period not in PERIODS:
        raise ValueError(f"period: {period!r} is not a period, allowed: {', '.join(PERIODS)}")
    length_s, default_buckets, bucket_format = PERIODS[period]
    buckets = default_buckets if buckets is None else buckets
    if buckets < 1:
        raise ValueError(f"buckets: {buckets} must be at least 1")
    kinds = tuple(kinds)
    if not kinds:
        raise ValueError("kinds: at least one kind of capture must be counted")

    newest_start_s = int(now_s // length_s) * length_s
    starts_s = [newest_start_s - (buckets - 1 - i) * length_s for i in range(buckets)]
    bucket_starts = tuple(utc_datetime(s).strftime(bucket_format) for s in starts_s)
    # The bounds leave off the "Z": "…T10:00:00.000Z" sorts before "…T10:00:00Z" ('.' < 'Z') and would
    # drop a keep made exactly on the hour, but sorts after "…T10:00:00". Plain string comparison lets
    # the captures_newest index find the range.
    low, high = (utc_datetime(s).strftime("%Y-%m-%dT%H:%M:%S") for s in (starts_s[0], newest_start_s + length_s))

    sql = (
        "select strftime(?, captured_at) as bucket, coalesce(corrected_label, label) as effective_label, "
        "count(*) from captures "
        f"where missing = 0 and kind in ({', '.join('?' * len(kinds))}) "
        "and captured_at >= ? and captured_at < ? "
        "group by bucket, effective_label"
    )
    rows = store.select(sql, (bucket_format, *kinds, low, high))

    in_range = set(bucket_starts)
    counts, per_label = {}, {}
    for bucket, label, n in rows:
        if bucket in in_range:  # a malformed captured_at gives a NULL bucket: not countable, not charted
            counts[(bucket, label)] = n
            per_label[label] = per_label.get(label, 0) + n
    labels = tuple(sorted(per_label, key=lambda label: (-per_label[label], label)))
    return Activity(period, bucket_starts, labels, MappingProxyType(counts), sum(per_label.values()))

