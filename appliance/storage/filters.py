"""What the gallery shows: filters on the kept captures, as SQL conditions for the store."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Filters:
    """What the gallery shows; empty or None fields do not filter."""

    label: str = ""
    date_from: str = ""  # YYYY-MM-DD, inclusive, UTC
    date_to: str = ""  # YYYY-MM-DD, inclusive, UTC
    min_score: float | None = None
    kind: str = ""  # "match" or "audit"
    is_starred: bool | None = None
    is_offloaded: bool | None = None
    is_synced: bool | None = None

    def sql(self) -> tuple[list[str], list]:
        where, params = [], []
        if self.label:
            where.append("coalesce(corrected_label, label) = ?")
            params.append(self.label)
        if self.date_from:
            where.append("captured_at >= ?")
            params.append(self.date_from)
        if self.date_to:
            where.append("captured_at < date(?, '+1 day')")
            params.append(self.date_to)
        if self.min_score is not None:
            where.append("score >= ?")
            params.append(self.min_score)
        if self.kind:
            where.append("kind = ?")
            params.append(self.kind)
        if self.is_starred is not None:
            where.append("starred = ?")
            params.append(int(self.is_starred))
        for column, wanted in (("offloaded_at", self.is_offloaded), ("synced_at", self.is_synced)):
            if wanted is not None:
                where.append(f"{column} is {'not ' if wanted else ''}null")
        return where, params
