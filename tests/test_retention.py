"""Retention: the pure choice of what to evict, and the writer applying it to a real store."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from appliance.config import StorageConfig
from appliance.pipeline.frames import ArrayImage, Classification, Keep
from appliance.pipeline.writer import FULL_RECHECK_S, KeepJob, ModelInfo, Writer
from appliance.storage.retention import Plan, bytes_needed, plan_eviction, storage_level
from appliance.storage.store import Store

# candidates: (id, bytes, is_starred, is_taken_off), oldest first
OLDEST_FIRST = [(1, 100, False, True), (2, 100, True, True), (3, 100, False, False), (4, 100, False, True)]


def test_nothing_is_needed_below_both_limits():
    assert bytes_needed(used_bytes=500, incoming_bytes=100, quota_bytes=1000, free_bytes=10_000, min_free_bytes=1000) == 0
    assert plan_eviction(OLDEST_FIRST, 0, "stop") == Plan()


def test_the_quota_and_the_free_space_floor_each_demand_room():
    assert bytes_needed(used_bytes=950, incoming_bytes=100, quota_bytes=1000, free_bytes=10_000, min_free_bytes=0) == 50
    assert bytes_needed(used_bytes=0, incoming_bytes=100, quota_bytes=0, free_bytes=1050, min_free_bytes=1000) == 50


def test_stop_evicts_only_items_already_taken_off_and_never_starred_ones():
    assert plan_eviction(OLDEST_FIRST, 150, "stop") == Plan(evict_ids=(1, 4))


def test_evict_oldest_also_evicts_items_not_yet_taken_off_but_never_starred_ones():
    assert plan_eviction(OLDEST_FIRST, 150, "evict-oldest") == Plan(evict_ids=(1, 3))


def test_when_not_enough_can_be_evicted_nothing_is_and_the_store_is_full():
    assert plan_eviction(OLDEST_FIRST, 250, "stop") == Plan(is_full=True)
    assert plan_eviction([(2, 1000, True, True)], 1, "evict-oldest") == Plan(is_full=True)


def test_storage_level_warns_before_it_is_full():
    assert storage_level(used_bytes=100, quota_bytes=1000, free_bytes=10_000, min_free_bytes=1000) == "ok"
    assert storage_level(used_bytes=950, quota_bytes=1000, free_bytes=10_000, min_free_bytes=1000) == "low"
    assert storage_level(used_bytes=0, quota_bytes=0, free_bytes=1500, min_free_bytes=1000) == "low"
    assert storage_level(used_bytes=1000, quota_bytes=1000, free_bytes=10_000, min_free_bytes=1000) == "full"
    assert storage_level(used_bytes=0, quota_bytes=0, free_bytes=900, min_free_bytes=1000) == "full"


# -- the writer applying retention to a real store -------------------------------------------------

def job(seconds, shade):
    rgb = np.random.default_rng(shade).integers(0, 255, (120, 160, 3), dtype=np.uint8)  # ~noise: stable size
    return KeepJob(Keep("match", "Ara macao", 0.9), Classification((("Ara macao", 0.9),), 5.0, "cpu"),
                   ArrayImage(rgb), 1795000000.0 + seconds, f"frame{seconds}.jpg")


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path / "data")
    yield store
    store.close()


def fill(store, when_full, quota_items=3):
    writer = Writer(store, StorageConfig(quota_bytes=0, min_free_bytes=0, when_full=when_full), ModelInfo("m", "s"), Counter())
    first = writer.write(job(0, 0))
    size = store.used_bytes
    writer.config = StorageConfig(quota_bytes=int(size * (quota_items + 0.5)), min_free_bytes=0, when_full=when_full)
    ids = [first] + [writer.write(job(i, i)) for i in range(1, quota_items)]
    return writer, ids


def test_the_writer_stops_keeping_at_the_quota_when_nothing_is_taken_off(store):
    writer, ids = fill(store, "stop")
    assert writer.write(job(10, 10)) is None
    assert writer.is_full and writer.counts["storage-full"] == 1
    assert [r["id"] for r in store.rows()] == ids


def test_the_writer_evicts_the_oldest_taken_off_item_to_make_room(store):
    writer, ids = fill(store, "stop")
    store.db["captures"].update(ids[1], {"offloaded_at": "2026-11-25T00:00:00Z"})
    new_id = writer.write(job(10, 10))
    assert new_id is not None and not writer.is_full
    assert [r["id"] for r in store.rows()] == [ids[0], ids[2], new_id]
    assert writer.counts["evicted"] == 1


def test_evict_oldest_never_evicts_a_starred_item(store):
    writer, ids = fill(store, "evict-oldest")
    store.db["captures"].update(ids[0], {"starred": 1})
    new_id = writer.write(job(10, 10))
    assert [r["id"] for r in store.rows()] == [ids[0], ids[2], new_id]


def test_keeping_resumes_once_room_is_made(store):
    writer, ids = fill(store, "stop")
    assert writer.write(job(10, 10)) is None and writer.is_full
    store.delete([ids[0]])
    assert writer.write(job(11, 11)) is not None and not writer.is_full


def test_a_full_writer_refuses_keeps_but_is_offered_one_again_every_recheck_period(store):
    writer, _ = fill(store, "stop")
    assert writer.accepts_keeps(now_s=0.0)
    assert writer.write(job(10, 10)) is None
    refused_at_s = writer._refused_at_s
    assert not writer.accepts_keeps(refused_at_s + 1.0)
    assert writer.accepts_keeps(refused_at_s + FULL_RECHECK_S)


def test_room_freed_by_another_process_is_seen_before_keeping_is_refused(store):
    writer, ids = fill(store, "stop")
    other_process = Store(store.data_dir)  # the web page deleting an item through its own connection
    other_process.delete([ids[0]])
    other_process.close()
    assert store.used_bytes > sum(r["bytes"] for r in store.rows())  # this process's count is stale
    assert writer.write(job(10, 10)) is not None and not writer.is_full
