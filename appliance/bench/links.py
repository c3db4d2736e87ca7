"""The MQTT link's latency: a keep's row committed → its ``events`` message at a subscriber.

Keeps are inserted into a real store (as the writer does: row and outbox entry in one transaction) at a
steady rate while ``LinksService`` runs in its own thread against a real broker, and a real subscriber
notes when each keep's event arrives; the figure is the time from the insert's commit to the arrival,
p50/p95/max. Then ``backlog`` keeps are queued with the service stopped (the broker away), and the
service started: how long it takes to deliver them all, and that none is missing or repeated.

Without a broker URL it starts Debian's ``mosquitto`` on a free port of 127.0.0.1 (and stops it).
"""

from __future__ import annotations

import json
import tempfile
import threading
import time
from pathlib import Path

from appliance.bench.common import machine, percentiles
from appliance.bench.mosquitto import Broker
from appliance.config import Config
from appliance.errors import BenchmarkError

_ROW = {"clock_source": "unsynced", "label": "Robin", "score": 0.9, "top_k": "[]", "kind": "match",
        "reason": "match", "model_name": "bench", "model_sha256": "0" * 64, "backend": "cpu", "inference_ms": 1.0,
        "source": "bench", "width": 1, "height": 1, "bytes": 1, "thumb_path": ""}


def run(broker_url: str | None = None, keeps: int = 200, rate_per_s: float = 20.0, backlog: int = 2000) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-links-") as tmp:
        broker = Broker(Path(tmp) / "broker").start() if broker_url is None else None
        url = broker.url if broker else broker_url
        try:
            return {"machine": machine(), "broker": "mosquitto on 127.0.0.1 (started by the bench)" if broker else url,
                    **_measure(url, Path(tmp), keeps, rate_per_s, backlog)}
        finally:
            if broker:
                broker.stop()


def _measure(url, tmp, keeps, rate_per_s, backlog) -> dict:
    import paho.mqtt.client as paho

    from appliance.links.service import LinksService
    from appliance.storage.store import Store

    config = Config().replace(storage={"data_dir": str(tmp / "data"), "min_free_bytes": 0},
                              status={"runtime_dir": str(tmp / "run")}, system={"hostname": "bench"},
                              mqtt={"url": url, "discovery": False, "status_interval_s": 3600.0})
    store = Store(config.storage.data_dir)
    arrived: dict[int, float] = {}
    repeats = [0]
    lock = threading.Condition()

    def on_message(_client, _userdata, message):
        capture_id = json.loads(message.payload)["id"]
        with lock:
            if capture_id in arrived:
                repeats[0] += 1
            arrived.setdefault(capture_id, time.perf_counter())
            lock.notify_all()

    host, port = url.split("://", 1)[1].rsplit(":", 1)
    subscriber = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"bench-{time.monotonic_ns()}")
    subscriber.on_message = on_message
    subscriber.connect(host, int(port))
    subscriber.subscribe(f"{config.mqtt.topic_prefix}/bench/events", qos=1)
    subscriber.loop_start()
    time.sleep(0.3)

    def insert(n):
        captured_at = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        row = dict(_ROW, captured_at=captured_at, image_path=f"bench/{n}.jpg", sha256=f"{n:064x}")
        capture_id = store.insert_row(row, links=("mqtt",))
        return capture_id, time.perf_counter()

    def wait_for(ids, timeout_s):
        deadline = time.monotonic() + timeout_s
        with lock:
            while not set(ids) <= arrived.keys():
                if not lock.wait(max(0.0, deadline - time.monotonic())):
                    raise BenchmarkError(f"{len(set(ids) - arrived.keys())} events never arrived")

    service = LinksService(config)
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not service.links[0].is_up():
            if time.monotonic() > deadline:
                raise BenchmarkError(f"the links service did not connect to {url}")
            time.sleep(0.05)
        sent = []
        for n in range(keeps):
            sent.append(insert(n))
            time.sleep(1.0 / rate_per_s)
        wait_for([i for i, _ in sent], 60)
        latencies = [(arrived[i] - at) * 1000.0 for i, at in sent]
    finally:
        service.stop()
        thread.join(30)
    queued = [insert(keeps + n)[0] for n in range(backlog)]
    service = LinksService(config)
    started = time.perf_counter()
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    try:
        wait_for(queued, 600)
        drain_s = time.perf_counter() - started
    finally:
        service.stop()
        thread.join(30)
        subscriber.loop_stop()
        subscriber.disconnect()
        store.close()
    return {"keeps": keeps, "rate_per_s": rate_per_s, "latency_ms": percentiles(latencies),
            "backlog": backlog, "backlog_drain_s": round(drain_s, 2),
            "backlog_per_s": round(backlog / drain_s, 1), "missing": len(set(queued) - arrived.keys()),
            "repeated": repeats[0]}

