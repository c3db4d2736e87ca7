"""The outbox: keeps queued for each link in the transaction of their row; sent at least once, in order,
with backoff; bounded, with notifications and then MQTT messages giving way, never uploads. Real SQLite."""

from __future__ import annotations

import sqlite3

import pytest
from appliance.config import Config
from appliance.service.app import Appliance
from appliance.storage import outbox
from appliance.storage.outbox import MAX_BACKOFF_S, Outbox, configured_links
from appliance.storage.store import DB_NAME, Store

ROW = {"captured_at": "2026-01-01T00:00:00.000Z", "label": "Robin", "score": 0.9, "kind": "match", "bytes": 10,
       "thumb_path": ""}


def row(n):
    return dict(ROW, image_path=f"2026/01/01/{n}.jpg", sha256=f"{n:064x}")


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path / "data")
    yield store
    store.close()


@pytest.fixture
def box(store):
    """The links process's outbox: a connection of its own to the same database."""
    conn = sqlite3.connect(store.data_dir / DB_NAME, timeout=30)
    yield Outbox(conn)
    conn.close()


def test_a_keep_is_queued_for_each_link_in_the_transaction_of_its_row(store, box):
    first = store.insert_row(row(1), links=("mqtt", "upload"))
    store.insert_row(row(2))  # no link configured: nothing queued
    assert [(e.link, e.key, e.capture_id) for e in box.due("mqtt") + box.due("upload")] == \
        [("mqtt", f"keep:{first}", first), ("upload", f"keep:{first}", first)]
    assert box.depth() == {"mqtt": 1, "upload": 1, "notify": 0}
    # A refused entry takes its row with it: never a keep the links do not know about.
    store.db.execute("create trigger refuse before insert on outbox begin select raise(abort, 'refused'); end")
    with pytest.raises(sqlite3.IntegrityError):
        store.insert_row(row(3), links=("notify",))
    assert [r["image_path"] for r in store.rows()] == ["2026/01/01/1.jpg", "2026/01/01/2.jpg"]


def test_queueing_twice_queues_once_and_a_replacing_entry_overwrites_the_waiting_one(box):
    box.enqueue("mqtt", "keep:7", {"a": 1}, capture_id=7)
    box.enqueue("mqtt", "keep:7", {"a": 2}, capture_id=7)
    box.enqueue("mqtt", "status", {"fps": 1}, replace=True)
    box.enqueue("mqtt", "status", {"fps": 2}, replace=True)
    assert [(e.key, e.payload) for e in box.due("mqtt")] == [("keep:7", {"a": 1}), ("status", {"fps": 2})]
    with pytest.raises(ValueError, match="no link named 'smtp'"):
        box.enqueue("smtp", "x")


def test_a_failed_send_waits_longer_each_time_and_a_link_back_up_makes_it_due_at_once(box):
    box.enqueue("upload", "keep:1", capture_id=1)
    [entry] = box.due("upload", now=1000.0)
    assert box.failed(entry, "connection refused", now=1000.0) == 2.0
    assert box.due("upload", now=1001.0) == []
    [entry] = box.due("upload", now=1002.0)
    assert entry.attempts == 1 and box.failed(entry, "timed out", now=1002.0) == 4.0
    for _ in range(20):
        [entry] = box.due("upload", now=1e9)
        delay = box.failed(entry, "down", now=0.0)
    assert delay == MAX_BACKOFF_S
    box.retry_now("upload")
    assert [e.key for e in box.due("upload", now=0.0)] == ["keep:1"]
    box.done(box.due("upload", now=0.0))
    assert box.depth()["upload"] == 0


def test_a_full_outbox_drops_the_oldest_notifications_then_mqtt_messages_never_uploads(box):
    for n in range(5):
        for link in ("upload", "mqtt", "notify"):
            box.enqueue(link, f"keep:{n}", capture_id=n)
    assert box.trim(15) == {}
    assert box.trim(8) == {"notify": 5, "mqtt": 2}
    assert [e.key for e in box.due("mqtt")] == ["keep:2", "keep:3", "keep:4"]
    assert box.trim(1) == {"mqtt": 3}
    assert box.depth() == {"mqtt": 0, "upload": 5, "notify": 0}  # uploads stay, over the bound
    assert box.dropped() == {"mqtt": 5, "upload": 0, "notify": 5}


def test_the_links_a_config_turns_on():
    assert configured_links(Config()) == ()
    config = Config().replace(mqtt={"url": "mqtt://127.0.0.1"}, notify={"urls": ("json://127.0.0.1/",)})
    assert configured_links(config) == ("mqtt", "notify")


def test_the_loop_queues_each_keep_for_the_configured_links(make_config):
    config = make_config(mqtt={"url": "mqtt://127.0.0.1:1"}, upload={"endpoint": "http://127.0.0.1:1", "bucket": "cams"})
    with Appliance(config) as appliance:
        appliance.run()
    store = Store(config.storage.data_dir)
    kept = [r["id"] for r in store.rows()]
    queued = store.select("select link, capture_id from outbox order by id")
    assert len(kept) == 2 and sorted(queued) == sorted((link, i) for i in kept for link in ("mqtt", "upload"))
    store.close()


def test_an_entry_knows_nothing_of_its_keep_but_its_id(store):
    """The sender reads the row when it sends: a relabel made meanwhile goes out, a deleted keep does not."""
    capture = store.insert_row(row(1), links=("mqtt",))
    [[payload]] = store.select("select payload from outbox")
    assert payload == "{}" and outbox.keep_key(capture) == f"keep:{capture}"
