"""A real Mosquitto broker on 127.0.0.1 for the tests (Debian's `mosquitto`, installed by ./dev's set-up),
and a real MQTT subscriber that records what it receives."""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as paho

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """``mosquitto`` on a free port of 127.0.0.1, its state (retained messages) kept in ``folder`` across
    ``stop()`` and ``start()``; with ``users`` ({name: password}), only they may connect."""

    def __init__(self, folder: Path, users: dict[str, str] | None = None):
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        folder.mkdir(parents=True, exist_ok=True)
        # As whoever runs the tests (root in CI): mosquitto started as root would otherwise become the
        # mosquitto user, who cannot read the password file or write its state here.
        lines = [f"user {getpass.getuser()}", f"listener {self.port} 127.0.0.1", "persistence true", f"persistence_location {folder}/",
                 "autosave_interval 1", f"log_dest file {folder / 'mosquitto.log'}"]
        if users:
            passwords = folder / "passwords"
            passwords.touch(mode=0o600)
            for name, password in users.items():
                subprocess.run(["mosquitto_passwd", "-b", str(passwords), name, password], check=True,
                               capture_output=True)
            lines += ["allow_anonymous false", f"password_file {passwords}"]
        else:
            lines += ["allow_anonymous true"]
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> Broker:
        self.process = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError(f"mosquitto exited: {(self.folder / 'mosquitto.log').read_text()}")
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not listen within 10 s")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None


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
