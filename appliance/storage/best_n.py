"""The best-N rule's one read of the store: a new keep's rivals, the kept matches of its label.

The rule itself is ``retention.plan_best_n`` (pure). Its rivals are read here:

* by the effective label (a person's correction wins), as the gallery groups;
* per UTC day of ``captured_at``, as the store's folders and the activity chart's days are, so a day
  does not move when the device's time zone is changed;
* matches only: audit keeps sample what the keep rule discards, to measure misses later, under their
  own budget, so they neither count toward a label's N nor are replaced;
* rows whose file is missing are no longer keeps and do not count.
"""

from __future__ import annotations

from appliance.storage.retention import Rival


def best_n_scopes(store, label: str, captured_at: str, per_day: int, overall: int, exclude_id: int | None = None):
    """``(limit, rivals)`` pairs for ``retention.plan_best_n``: ``label``'s keeps of ``captured_at``'s
    UTC day, then all of its keeps; ``exclude_id`` (the new keep, once it is stored) is left out.

    All of the label's keeps are read only when ``overall`` is set; else only its day's (through
    the store's index on the effective label and ``captured_at``)."""
    day = captured_at[:10]  # "2026-11-25" of "2026-11-25T14:03:02.123Z"
    sql = ("select id, coalesce(score, 0), starred, corrected_label is not null, "
           f"{store.taken_off_sql}, captured_at from captures "
           "where coalesce(corrected_label, label) = ? and kind = 'match' and missing = 0")
    params = [label]
    if not overall:
        # Every ISO time of the day sorts between the bare date and the date then "~" (after "T" and "Z").
        sql += " and captured_at >= ? and captured_at < ?"
        params += [day, day + "~"]
    rows = [row for row in store.select(sql, params) if row[0] != exclude_id]
    everything = [Rival(i, s, bool(starred), bool(relabelled), bool(off)) for i, s, starred, relabelled, off, _ in rows]
    of_the_day = [rival for rival, row in zip(everything, rows) if row[5].startswith(day)]
    return [(per_day, of_the_day), (overall, everything)]
