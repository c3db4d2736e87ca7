"""Retention: what to evict so a new keep fits, which keep a better one replaces, and how full the
store is. Pure functions.

Limits are a byte quota for kept images (0: none) and a free-space floor on the data filesystem.
Eviction goes oldest first and never touches a starred item. Items not yet taken off the device
(offloaded to USB, synced to a laptop, or uploaded to an object store where ``upload.evict_uploaded``
says so: ``storage.taken_off``) are evicted only when ``when_full = "evict-oldest"``; with
``"stop"`` (the default) the appliance stops keeping instead and reports storage full.

The best-N rule (``plan_best_n``) keeps at most N matches of a label per UTC day, or overall: a new
keep of a label that has N replaces the worst of them that may go, if it scores better, and is
refused otherwise. Never a starred item, nor one a person relabelled (its score is the model's for
another label, so it cannot be compared), nor one not yet taken off unless the owner chose so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

# Counted by reason in the status: a kept item deleted for a better keep of its label, and a new keep
# refused because it is no better than what the rule may replace, or because nothing may be replaced.
REPLACED_BETTER = "replaced-better"
NOT_BEST = "not-best"
BEST_N_PROTECTED = "best-n-protected"

# "low" is reported (LEDs, page) this far before "full", so a person can act in time.
LOW_QUOTA_FRACTION = 0.9
LOW_FLOOR_FACTOR = 2


@dataclass(frozen=True)
class Plan:
    """Evict ``evict_ids`` (oldest first) and then write; or, if ``is_full``, write nothing."""

    evict_ids: tuple[int, ...] = ()
    is_full: bool = False


def bytes_needed(used_bytes, incoming_bytes, quota_bytes, free_bytes, min_free_bytes) -> int:
    """How many bytes must be freed before ``incoming_bytes`` can be written within both limits."""
    over_quota = used_bytes + incoming_bytes - quota_bytes if quota_bytes else 0
    under_floor = min_free_bytes - (free_bytes - incoming_bytes)
    return max(over_quota, under_floor, 0)


def plan_eviction(candidates, need_bytes, when_full) -> Plan:
    """Choose what to evict to free ``need_bytes``.

    ``candidates`` are ``(id, bytes, is_starred, is_taken_off)`` oldest first. If the evictable items
    cannot free enough, nothing is evicted (that would lose images and still not fit) and the plan
    says the store is full.
    """
    if need_bytes <= 0:
        return Plan()
    chosen, freed = [], 0
    for item_id, size, is_starred, is_taken_off in candidates:
        if is_starred or (not is_taken_off and when_full != "evict-oldest"):
            continue
        chosen.append(item_id)
        freed += size
        if freed >= need_bytes:
            return Plan(tuple(chosen))
    return Plan(is_full=True)


def storage_level(used_bytes, quota_bytes, free_bytes, min_free_bytes) -> str:
    """``"ok"``, ``"low"`` (nearing a limit) or ``"full"`` (at a limit)."""
    if (quota_bytes and used_bytes >= quota_bytes) or free_bytes <= min_free_bytes:
        return "full"
    if (quota_bytes and used_bytes >= LOW_QUOTA_FRACTION * quota_bytes) or free_bytes <= LOW_FLOOR_FACTOR * min_free_bytes:
        return "low"
    return "ok"


class Rival(NamedTuple):
    """A kept match of the new keep's label that counts toward its best-N limits."""

    id: int
    score: float
    is_starred: bool
    is_relabelled: bool  # a person corrected its label
    is_taken_off: bool   # offloaded or synced (or uploaded, with upload.evict_uploaded)


@dataclass(frozen=True)
class BestN:
    """Keep the new keep, deleting ``replace_id`` once it is durable (if set); or, if ``refused``, do
    not write it, for that reason (``NOT_BEST`` or ``BEST_N_PROTECTED``)."""

    replace_id: int | None = None
    refused: str | None = None


def plan_best_n(score: float, scopes, may_replace_not_taken_off: bool = False) -> BestN:
    """What the best-N rule says of a new keep scoring ``score``.

    ``scopes`` are ``(limit, rivals)`` pairs, narrowest first, each scope's rivals within the next
    (the label's keeps of the keep's day, then all of them); a limit of 0 is off. The narrowest scope
    already at its limit decides: its worst rival that may go (lowest score, the oldest on a tie) is
    replaced if the new keep scores strictly better, and since the scopes nest, that one replacement
    keeps every wider scope within its limit too. A new keep never costs more than one item, so a
    limit lowered below what is kept is reached by replacements, not by deleting the surplus at once.
    With nothing that may go, the keep is refused: the limit is the owner's bound on the card.
    """
    full = next((rivals for limit, rivals in scopes if limit and len(rivals) >= limit), None)
    if full is None:
        return BestN()
    may_go = [(r.score, r.id) for r in full
              if not r.is_starred and not r.is_relabelled and (r.is_taken_off or may_replace_not_taken_off)]
    if may_go:
        worst_score, worst_id = min(may_go)
        return BestN(replace_id=worst_id) if score > worst_score else BestN(refused=NOT_BEST)
    is_better_than_any = any(score > r.score for r in full)
    return BestN(refused=BEST_N_PROTECTED if is_better_than_any else NOT_BEST)
