"""A real Mosquitto broker on 127.0.0.1 for the tests (``appliance.bench.mosquitto.Broker``: Debian's
`mosquitto`, installed by ./dev's set-up), and a real MQTT subscriber that records what it receives."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import paho.mqtt.client as paho

from appliance.bench.mosquitto import Broker  # noqa: F401 (the tests' broker is the benchmarks')


@dataclass
class Subscriber:
    """A real MQTT client subscribed to ``topics``: every message it got, in order, as (topic, payload, retain)."""

    url: str
    topics: tuple[str, ...]
    messages: list = field(default_factory=list)

    def __post_init__(self):
        self._lock = threading.Condition()
        self._subscribed = threading.Event()
        port = int(self.url.rsplit(":", 1)[1])
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"test-{time.monotonic_ns()}")
        self.client.on_connect = lambda c, *_: (c.subscribe([(t, 1) for t in self.topics]), self._subscribed.set())
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.2, 1)
        self.client.connect_async("127.0.0.1", port)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("the test subscriber could not connect")
        time.sleep(0.2)  # the SUBACK

    def _on_message(self, _client, _userdata, message):
        with self._lock:
            self.messages.append((message.topic, message.payload, message.retain, time.monotonic()))
            self._lock.notify_all()

    def on(self, topic: str) -> list[bytes]:
        with self._lock:
            return [payload for t, payload, _, _ in self.messages if t == topic]

    def wait_for(self, predicate, timeout_s: float = 20.0, what: str = "the messages"):
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while not predicate(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out waiting for {what}; got topics "
                                         f"{sorted({t for t, *_ in self.messages})}")
                self._lock.wait(left)

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()
