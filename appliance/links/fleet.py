"""The fleet's view: every camera reporting to a broker, from their retained status and availability."""

from __future__ import annotations

import json
import threading
import time
from urllib.parse import urlsplit

import paho.mqtt.client as paho

from appliance.errors import LinkError


def collect(broker_url: str, prefix: str, wait_s: float = 2.0, username: str = "", password: str = "") -> list[dict]:
    """``[{"device", "online", "status"}]`` of each camera with a retained message under ``prefix/+/``,
    by name; raises ``LinkError`` when the broker cannot be reached or refuses."""
    url = urlsplit(broker_url)
    is_tls = url.scheme == "mqtts"
    host, port = url.hostname, url.port or (8883 if is_tls else 1883)
    cameras: dict[str, dict] = {}
    connected, refused = threading.Event(), []

    def on_connect(client, _userdata, _flags, reason_code, _properties):
        if reason_code.is_failure:
            refused.append(str(reason_code))
        else:
            client.subscribe([(f"{prefix}/+/status", 1), (f"{prefix}/+/available", 1)])
        connected.set()

    def on_message(_client, _userdata, message):
        device, kind = message.topic[len(prefix) + 1:].split("/", 1)
        camera = cameras.setdefault(device, {"device": device, "online": False, "status": None})
        text = message.payload.decode("utf-8", "replace")
        if kind == "available":
            camera["online"] = text == "online"
        else:
            try:
                camera["status"] = json.loads(text)
            except ValueError:
                camera["status"] = None

    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"appliance-fleet-{time.monotonic_ns()}")
    if username:
        client.username_pw_set(username, password or None)
    if is_tls:
        client.tls_set()
    client.on_connect, client.on_message = on_connect, on_message
    try:
        client.connect(host, port, keepalive=30)
    except OSError as e:
        raise LinkError(f"cannot reach the broker at {host}:{port}: {e}") from None
    client.loop_start()
    try:
        if not connected.wait(10.0):
            raise LinkError(f"the broker at {host}:{port} did not answer within 10 s")
        if refused:
            raise LinkError(f"the broker at {host}:{port} refused the connection: {refused[0]}")
        time.sleep(wait_s)
    finally:
        client.disconnect()
        client.loop_stop()
    return [cameras[name] for name in sorted(cameras)]
