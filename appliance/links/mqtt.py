"""The MQTT link (paho-mqtt): events, snapshots, the retained status, availability, discovery, commands.

Topics under ``<topic_prefix>/<hostname>`` (``discovery.Topics``):

* ``available`` — ``online`` once connected, ``offline`` as the broker's last will; retained.
* ``status`` — retained, every ``mqtt.status_interval_s``: state, fps, keeps today, the last keep, storage,
  temperature, camera, model, accelerator, the outbox's depth.
* ``events`` — one JSON message per keep (``event_message``).
* ``<label>/snapshot`` and ``snapshot`` — the keep's thumbnail JPEG, retained (the last of each label; the
  last of all, which Home Assistant's image entity shows).
* ``set/paused`` (``ON``/``OFF``) → the loop pauses or resumes → ``state/paused``; ``set/offload``
  (any payload) starts a USB offload; both over the loop's control channel.

Every message but ``available`` goes through the outbox: a keep's entry becomes its event and snapshots
when sent; the status, the discovery configs and ``state/paused`` are entries that replace the one
waiting (key ``status``, ``discovery:…``, ``state:paused``), queued by ``tick``. An entry is done only
once the broker acknowledged each of its messages (QoS 1 or 2; QoS 0: once written to the socket).
paho's network thread calls back into this object; the outbox is touched only from the service's thread.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import paho.mqtt.client as paho

from appliance.errors import ApplianceError, LinkError
from appliance.links.discovery import Topics, discovery_configs
from appliance.service.control import CONTROL_SOCKET, ControlClient
from appliance.service.status import read_status
from appliance.storage.images import box_or_none

log = logging.getLogger(__name__)

ACK_TIMEOUT_S = 10.0
STALE_AFTER_S = 10.0  # the loop writes its status about once a second
LOOP_READ_S = 1.0  # how often the loop's status is read for its paused state (it writes it about that often)


def event_message(capture: dict, device: str) -> dict:
    """The ``events`` message of a keep: what it is, when, how sure, where in the frame, which event."""
    return {
        "id": capture["id"], "device": device, "time": capture["captured_at"],
        "label": capture["corrected_label"] or capture["label"], "model_label": capture["label"],
        "score": capture["score"], "kind": capture["kind"], "event_id": capture.get("event_id"),
        "box": box_or_none(capture.get("box")), "detector_label": capture.get("detector_label"),
        "detector_score": capture.get("detector_score"), "sha256": capture["sha256"], "bytes": capture["bytes"],
        "width": capture["width"], "height": capture["height"], "model": capture["model_name"],
        "url": f"http://{device}.local/captures/{capture['id']}",
    }


class MqttLink:
    name = "mqtt"

    def __init__(self, config, control: ControlClient | None = None):
        self.config = config
        settings = config.mqtt
        url = urlsplit(settings.url)
        self.is_tls = url.scheme == "mqtts"
        self.host, self.port = url.hostname, url.port or (8883 if self.is_tls else 1883)
        self.device = config.system.hostname
        self.topics = Topics.of(settings.topic_prefix, self.device)
        self.qos = settings.qos
        self.client_id = settings.client_id or f"appliance-{self.device}"
        self.runtime_dir = Path(config.status.runtime_dir)
        self.control = control or ControlClient(self.runtime_dir / CONTROL_SOCKET)
        self.client: paho.Client | None = None
        self._connected = threading.Event()
        self._problem: str | None = "connecting"
        self._closing = False
        self._refused = False  # the broker refused the last connection (credentials): its reason stays the problem
        self._announce = False   # set by on_connect: queue the discovery configs and the paused state again
        self._replies: queue.Queue = queue.Queue()  # (key, topic, payload) from paho's thread, queued by tick
        self._next_status_s = 0.0
        self._next_loop_read_s = 0.0
        self._last_paused: bool | None = None

    # -- the connection (paho's thread calls the on_… methods) -----------------------------------------

    def start(self) -> None:
        settings = self.config.mqtt
        client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=paho.MQTTv311)
        if settings.username:
            client.username_pw_set(settings.username, settings.password or None)
        if self.is_tls:
            client.tls_set(ca_certs=settings.ca_file or None)
        client.will_set(self.topics.available, "offline", qos=1, retain=True)
        client.reconnect_delay_set(1, 30)
        client.on_connect, client.on_disconnect, client.on_message = \
            self._on_connect, self._on_disconnect, self._on_message
        client.on_connect_fail = self._on_connect_fail
        self.client = client
        try:
            client.connect_async(self.host, self.port, keepalive=30)
        except (OSError, ValueError) as e:
            self._problem = f"cannot connect to {self.host}:{self.port}: {e} (check mqtt.url)"
        client.loop_start()

    def _on_connect(self, client, _userdata, _flags, reason_code, _properties) -> None:
        if reason_code.is_failure:
            hint = " (check mqtt.username and mqtt.password)" if "authori" in str(reason_code).lower() \
                or "password" in str(reason_code).lower() else ""
            problem = f"the broker at {self.host}:{self.port} refused the connection: {reason_code}{hint}"
            if problem != self._problem:  # once, not at every retry
                log.error("mqtt: %s", problem)
            self._problem, self._refused = problem, True
            return
        self._problem, self._refused = None, False
        client.publish(self.topics.available, "online", qos=1, retain=True)
        client.subscribe([(self.topics.command("paused"), self.qos), (self.topics.command("offload"), self.qos)])
        self._announce = True
        self._connected.set()
        log.info("mqtt: connected to %s:%d as %s", self.host, self.port, self.client_id)

    def _on_connect_fail(self, _client, _userdata) -> None:
        """No connection at all (nothing listens, no route, a name that does not resolve): said from the
        first failed try on, so that days offline never read "connecting"."""
        problem = f"cannot reach the broker at {self.host}:{self.port} (check mqtt.url and the network); retrying"
        if problem != self._problem:  # once, not at every retry
            log.warning("mqtt: %s", problem)
        self._problem, self._refused = problem, False

    def _on_disconnect(self, _client, _userdata, _flags, reason_code, _properties) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        if self._refused or self._closing:  # the refusal says more; a goodbye of ours is no problem
            return
        self._problem = f"not connected to {self.host}:{self.port} ({reason_code}); retrying"
        if was_connected:
            log.warning("mqtt: %s", self._problem)

    def _on_message(self, _client, _userdata, message) -> None:
        payload = message.payload.decode("utf-8", "replace").strip().upper()
        try:
            if message.topic == self.topics.command("paused") and payload in ("ON", "OFF", "TRUE", "FALSE", "1", "0"):
                reply = self.control.send("pause" if payload in ("ON", "TRUE", "1") else "resume")
                self._replies.put(("state:paused", self.topics.state("paused"), "ON" if reply.get("is_paused") else "OFF"))
            elif message.topic == self.topics.command("offload"):
                self.control.send("offload", trigger="mqtt")
            else:
                log.warning("mqtt: ignored %r on %s", payload[:40], message.topic)
        except ApplianceError as e:  # the loop is not running, no stick plugged in…
            log.warning("mqtt: %s from %s not done: %s", payload[:40], message.topic, e)

    # -- the Link protocol ------------------------------------------------------------------------------

    def is_up(self) -> bool:
        return self._connected.is_set()

    def catch_up(self, outbox, store) -> None:
        """Old keeps' events are history: nothing to catch up on."""

    def tick(self, outbox) -> None:
        if self._announce:
            self._announce = False
            if self.config.mqtt.discovery:
                for topic, config in discovery_configs(self.config.mqtt.discovery_prefix, self.topics,
                                                       self.device).items():
                    outbox.enqueue("mqtt", f"discovery:{topic}", {"topic": topic, "payload": config, "retain": True},
                                   replace=True)
            self._last_paused, self._next_loop_read_s = None, 0.0  # the retained state again, for a broker that lost it
        while not self._replies.empty():
            key, topic, payload = self._replies.get()
            outbox.enqueue("mqtt", key, {"topic": topic, "payload": payload, "retain": True}, replace=True)
        now_s = time.monotonic()
        if now_s >= self._next_loop_read_s:
            self._next_loop_read_s = now_s + LOOP_READ_S
            self._paused_state(outbox)
        if now_s >= self._next_status_s:
            self._next_status_s = now_s + self.config.mqtt.status_interval_s
            outbox.enqueue("mqtt", "status", {"topic": self.topics.status, "status": True, "retain": True},
                           replace=True)

    def _paused_state(self, outbox) -> None:
        """The loop's paused state, retained, whenever it changes (or the broker may have lost it)."""
        loop = read_status(self.runtime_dir) or {}
        paused = loop.get("state") == "paused"
        if loop and paused != self._last_paused:
            self._last_paused = paused
            outbox.enqueue("mqtt", "state:paused", {"topic": self.topics.state("paused"),
                                                    "payload": "ON" if paused else "OFF", "retain": True}, replace=True)

    def send(self, entry, capture, store) -> None:
        if capture is not None:
            self._publish(self.topics.events, json.dumps(event_message(capture, self.device)), retain=False)
            thumb = store.data_dir / capture["thumb_path"] if capture.get("thumb_path") else None
            if thumb is not None and thumb.is_file():
                data = thumb.read_bytes()
                self._publish(self.topics.label_snapshot(capture["corrected_label"] or capture["label"]), data, True)
                self._publish(self.topics.snapshot, data, retain=True)
            return
        payload = entry.payload
        if payload.get("status"):  # made when sent, so it is never older than the link's last chance to send
            body = self.status_message(store)
        else:
            body = payload["payload"]
        self._publish(payload["topic"], body if isinstance(body, str) else json.dumps(body), payload.get("retain", False))

    def _publish(self, topic: str, payload, retain: bool) -> None:
        if self.client is None or not self._connected.is_set():
            raise LinkError(f"not connected to the broker at {self.host}:{self.port}")
        info = self.client.publish(topic, payload, qos=self.qos, retain=retain)
        try:
            info.wait_for_publish(ACK_TIMEOUT_S)
        except (ValueError, RuntimeError) as e:
            raise LinkError(f"the broker did not take a message for {topic}: {e}") from None
        if not info.is_published():
            raise LinkError(f"no acknowledgement from the broker within {ACK_TIMEOUT_S:g} s for {topic}")

    def status_message(self, store) -> dict:
        """The retained status: the loop's last report (or "not running"), with what the store can say."""
        loop = read_status(self.runtime_dir) or {}
        is_running = bool(loop) and time.time() - loop.get("updated_at", 0) < STALE_AFTER_S \
            and loop.get("state") != "stopped"
        zone = ZoneInfo(self.config.system.timezone)
        midnight = datetime.now(zone).replace(hour=0, minute=0, second=0, microsecond=0)
        since = midnight.astimezone(ZoneInfo("UTC")).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        [(keeps_today,)] = store.select("select count(*) from captures where captured_at >= ?", [since])
        from appliance.links.service import read_links
        links = read_links(self.runtime_dir) or {}
        last = loop.get("last_keep") or None
        return {
            "device": self.device, "state": loop.get("state", "stopped") if is_running else "not running",
            "updated_at": time.time(), "fps": loop.get("fps", 0.0) if is_running else 0.0,
            "keeps_today": keeps_today, "items": store.count(max_age_s=5.0),
            "last_keep": {k: last.get(k) for k in ("id", "label", "score", "captured_at")} if last else None,
            "storage": {"free_bytes": store.free_bytes(), "used_bytes": store.used_bytes,
                        "level": (loop.get("storage") or {}).get("level")},
            "temperature_c": _cpu_temperature_c(), "camera": (loop.get("camera") or {}).get("description"),
            "model": (loop.get("model") or {}).get("name"), "accelerator": (loop.get("accelerator") or {}).get("backend"),
            "outbox": {"queued": links.get("queued")},
        }

    def describe(self) -> dict:
        return {"connected": self._connected.is_set(), "problem": self._problem,
                "broker": f"{self.host}:{self.port}", "tls": self.is_tls}

    def close(self) -> None:
        if self.client is None:
            return
        self._closing = True
        if self._connected.is_set():  # a clean goodbye: the will is not sent, so say it ourselves
            self.client.publish(self.topics.available, "offline", qos=1, retain=True).wait_for_publish(2.0)
        self.client.disconnect()
        self.client.loop_stop()


def _cpu_temperature_c() -> float | None:
    try:
        return round(int(Path("/sys/class/thermal/thermal_zone0/temp").read_text()) / 1000, 1)
    except (OSError, ValueError):
        return None
