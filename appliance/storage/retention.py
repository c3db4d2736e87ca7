"""Retention: what to evict so a new keep fits, and how full the store is. Pure functions.

Limits are a byte quota for kept images (0: none) and a free-space floor on the data filesystem.
Eviction goes oldest first and never touches a starred item. Items not yet taken off the device
(offloaded to USB or synced to a laptop) are evicted only when ``when_full = "evict-oldest"``; with
``"stop"`` (the default) the appliance stops keeping instead and reports storage full.
"""

from __future__ import annotations

from dataclasses import dataclass

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
