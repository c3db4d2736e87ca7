"""What the outage run (``bench.outage``) checks once the links are stopped, and the lines it fails with.

* ``EventsSubscriber`` — a real MQTT client with a persistent session: each keep's event counted by id;
* ``check_bucket`` — the bucket listed, each keep's image read back and hashed against its row, its
  sidecar's id and SHA-256 read, every object not of a keep counted;
* ``check_store`` — the rows (each SHA-256 its own, each marked ``uploaded_at``) and what the outbox
  still holds of the keeps;
* ``problems`` — the verdict: one line for each thing lost, duplicated, unverified or grown (pure).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

from appliance.errors import BenchmarkError
from appliance.storage.store import DB_NAME

MAX_GROWTH_MB = 20.0  # why: bench.outage's module doc
# Events are at least once (storage.outbox): a subscriber drops a repeat by its id. Two kinds of repeat:
# * redelivered by the broker (its DUP flag set): what the broker had sent the subscriber without yet
#   reading its acknowledgement when it stopped, sent again from its saved session; MQTT's own QoS 1
#   between broker and subscriber, nothing of the appliance's: counted, never a failure;
# * sent again by the links (a new message): at a broker's restart mid-drain, the one keep in the
#   links' hands (they publish one at a time, each to its PUBACK) may go twice, by paho's resend on
#   reconnecting and by the outbox's retry after the acknowledgement timed out. Beyond that, a failure.
SENT_AGAIN_PER_RESTART = 2
READERS = 8


class EventsSubscriber:
    """A real MQTT client subscribed to ``topic`` at QoS 1 with a persistent session (``client_id``, clean
    session off): the broker queues what comes while it is away. Counts each event by its keep's id."""

    def __init__(self, url: str, topic: str, client_id: str, timeout_s: float = 10.0):
        import paho.mqtt.client as paho

        self.counts: dict[int, int] = {}
        self.sha256: dict[int, set[str]] = {}
        self.unreadable = self.redelivered = 0
        self.first_at: float | None = None  # time.monotonic() of the first event, and of the last new one
        self.last_new_at: float | None = None
        self._lock = threading.Lock()
        subscribed = threading.Event()
        address = urlsplit(url)
        client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False,
                             protocol=paho.MQTTv311)
        client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)  # again at each reconnection: harmless
        client.on_subscribe = lambda *_: subscribed.set()
        client.on_message = self._on_message
        client.reconnect_delay_set(0.05, 0.25)  # back soon after the broker, which keeps what came meanwhile
        client.connect(address.hostname, address.port)
        client.loop_start()
        self.client = client
        if not subscribed.wait(timeout_s):
            self.close()
            raise BenchmarkError(f"the events subscriber could not subscribe at {url} within {timeout_s:g} s")

    def _on_message(self, _client, _userdata, message) -> None:
        try:
            event = json.loads(message.payload)
            capture_id = int(event["id"])
        except (ValueError, KeyError, TypeError):
            with self._lock:
                self.unreadable += 1
            return
        with self._lock:
            if capture_id not in self.counts:
                self.last_new_at = time.monotonic()
                self.first_at = self.first_at or self.last_new_at
            elif message.dup:
                self.redelivered += 1
            self.counts[capture_id] = self.counts.get(capture_id, 0) + 1
            self.sha256.setdefault(capture_id, set()).add(str(event.get("sha256")))

    def unique(self) -> int:
        with self._lock:
            return len(self.counts)

    def check(self, data_dir) -> dict:
        """The events received against the keeps in the store at ``data_dir``."""
        keeps = dict(_select(data_dir, "select id, sha256 from captures"))
        with self._lock:
            received = sum(self.counts.values())
            return {"received": received, "unique": len(self.counts), "missing": len(keeps.keys() - self.counts),
                    "repeated": received - len(self.counts), "redelivered_by_broker": self.redelivered,
                    "sent_again": received - len(self.counts) - self.redelivered, "not_a_keep": len(self.counts.keys() - keeps),
                    "sha256_mismatched": sum(1 for i, said in self.sha256.items() if i in keeps and said != {keeps[i]}),
                    "unreadable": self.unreadable}

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def check_bucket(server, bucket: str, data_dir, device: str) -> dict:
    """Every object in ``bucket`` against the keeps in the store at ``data_dir``: each image read back
    and hashed, each sidecar read; objects that are no keep's image or sidecar are ``not_a_keep``."""
    from appliance.links.upload import object_key

    expected = {object_key("", device, at, path): (capture_id, sha256)
                for capture_id, at, path, sha256 in _select(data_dir, "select id, captured_at, image_path, sha256 "
                                                                      "from captures")}
    client = server.client()
    listed = [item["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
              for item in page.get("Contents", [])]
    present = set(listed)
    images = [key for key in expected if key in present]
    sidecars = {key for key in expected if f"{key}.json" in present}

    def verify(key: str) -> tuple[bool, bool]:
        capture_id, sha256 = expected[key]
        image = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        is_image_right = hashlib.sha256(image).hexdigest() == sha256
        if key not in sidecars:
            return is_image_right, True
        record = json.loads(client.get_object(Bucket=bucket, Key=f"{key}.json")["Body"].read())
        is_sidecar_right = (record.get("id"), record.get("sha256"), record.get("device")) == (capture_id, sha256, device)
        return is_image_right, is_sidecar_right

    with ThreadPoolExecutor(READERS) as pool:
        verdicts = list(pool.map(verify, images))
    return {"objects": len(listed), "images": len(images), "sidecars": len(sidecars),
            "missing_images": len(expected) - len(images), "missing_sidecars": len(expected) - len(sidecars),
            "not_a_keep": len(present - set(expected) - {f"{key}.json" for key in expected}),
            "listed_twice": len(listed) - len(present),
            "images_verified": sum(1 for image, _ in verdicts if image),
            "images_mismatched": sum(1 for image, _ in verdicts if not image),
            "sidecars_mismatched": sum(1 for _, side in verdicts if not side)}


def check_store(data_dir) -> dict:
    """The keeps' rows (each SHA-256 its own, each marked uploaded) and their entries left in the outbox."""
    [(rows, unique, marked)] = _select(data_dir, "select count(*), count(distinct sha256), count(uploaded_at) "
                                                 "from captures")
    left = dict(_select(data_dir, "select link, count(*) from outbox where key like 'keep:%' or key like 'sidecar:%' "
                                  "group by link"))
    return {"rows": rows, "unique_sha256": unique, "marked_uploaded": marked,
            "outbox_left": {"mqtt": left.get("mqtt", 0), "upload": left.get("upload", 0)}}


def problems(result: dict, max_growth_mb: float = MAX_GROWTH_MB) -> list[str]:
    """One line for each thing the run (``bench.outage.run``'s result) shows lost, duplicated, unverified
    or grown; none: it passed."""
    keeps, events, bucket, store = result["keeps"], result["events"], result["bucket"], result["store"]
    drain, rss = result["drain"], result["rss"]
    restarts = len(drain["cuts"])
    lines = []
    if store["rows"] != keeps or store["unique_sha256"] != keeps:
        lines.append(f"{store['rows']} rows with {store['unique_sha256']} distinct SHA-256 for {keeps} keeps: "
                     "each keep must be one row with its own SHA-256")
    if not drain["is_drained"]:
        lines.append(f"not drained: {events['unique']} of {keeps} events arrived, {store['marked_uploaded']} "
                     "keeps marked uploaded when the run gave up")
    for link in ("mqtt", "upload"):
        if result["cut_s"] and link not in drain["cut_mid_drain"]:
            lines.append(f"no outage came in the middle of the {link} link's drain: it was over before")
    for count, what in ((events["missing"], "keeps' events never reached the subscriber (lost)"),
                        (events["not_a_keep"], "events name no keep"),
                        (events["sha256_mismatched"], "events name another SHA-256 than their keep's"),
                        (events["unreadable"], "messages on the events topic are not an event"),
                        (bucket["missing_images"], "keeps' images are not in the bucket (lost)"),
                        (bucket["missing_sidecars"], "keeps' sidecars are not in the bucket (lost)"),
                        (bucket["not_a_keep"], "objects in the bucket are no keep's image or sidecar (duplicates)"),
                        (bucket["listed_twice"], "keys are listed twice in the bucket (duplicates)"),
                        (bucket["images_mismatched"], "images in the bucket differ from their keep (SHA-256)"),
                        (bucket["sidecars_mismatched"], "sidecars in the bucket name another id, SHA-256 or device"),
                        (keeps - store["marked_uploaded"], "keeps are not marked uploaded_at"),
                        (store["outbox_left"]["mqtt"], "keeps' MQTT entries are still in the outbox"),
                        (store["outbox_left"]["upload"], "keeps' upload entries are still in the outbox")):
        if count:
            lines.append(f"{count} {what}")
    if events["sent_again"] > SENT_AGAIN_PER_RESTART * restarts:
        lines.append(f"{events['sent_again']} events sent twice by the links, more than "
                     f"{SENT_AGAIN_PER_RESTART * restarts} that {restarts} broker restart(s) mid-drain can explain "
                     "(duplicates)")
    if rss["growth_mb"] is None:
        lines.append(f"memory not measured: {rss['samples']} RSS samples, at least 4 needed")
    elif rss["growth_mb"] > max_growth_mb:
        lines.append(f"the links process grew by {rss['growth_mb']} MB between the drain's first and last quarters "
                     f"(at most {max_growth_mb:g} MB): memory is not flat")
    stopped = result["links_stopped"]
    if stopped["exit"] != 0 or stopped["seconds"] is None:
        lines.append(f"appliance links did not stop cleanly on SIGTERM (exit {stopped['exit']}, "
                     f"{'killed after 30 s' if stopped['seconds'] is None else 'in time'})")
    return lines


def _select(data_dir, sql: str) -> list[tuple]:
    """A read-only query of the appliance's database at ``data_dir`` (a connection of its own)."""
    database = sqlite3.connect(f"file:{Path(data_dir) / DB_NAME}?mode=ro", uri=True, timeout=30)
    try:
        return database.execute(sql).fetchall()
    finally:
        database.close()
