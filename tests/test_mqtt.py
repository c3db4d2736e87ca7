"""The MQTT link against a real Mosquitto on 127.0.0.1, with a real subscriber; real keeps of the real loop."""

from __future__ import annotations

import json
import threading
import time

import pytest
from mosquitto import Broker, Subscriber

from appliance.links.discovery import Topics, discovery_configs
from appliance.links.service import LinksService
from appliance.service.app import Appliance
from appliance.storage.store import Store

CHICKADEE = "Poecile atricapillus (Black-capped Chickadee)"


@pytest.fixture
def broker(tmp_path):
    broker = Broker(tmp_path / "broker").start()
    yield broker
    broker.stop()


def links_config(make_config, broker_url, **mqtt):
    return make_config(system={"hostname": "cam1"}, mqtt={"url": broker_url, "status_interval_s": 5.0, **mqtt})


def run_loop(config):
    with Appliance(config) as appliance:
        appliance.run()


def drain(service, until, timeout_s=20.0):
    """Step the links service until ``until()`` or the timeout."""
    deadline = time.monotonic() + timeout_s
    while not until():
        assert time.monotonic() < deadline, f"links state: {service.state()}"
        service.step()
        time.sleep(0.05)


def test_each_keep_is_an_event_and_a_snapshot_and_the_camera_says_it_is_online(make_config, broker):
    config = links_config(make_config, broker.url)
    run_loop(config)  # the two bird photos kept, each queued for mqtt
    topics = Topics.of("appliance", "cam1")
    subscriber = Subscriber(broker.url, ("appliance/cam1/#",))
    service = LinksService(config)
    service.links[0].start()
    drain(service, lambda: len(subscriber.on(topics.events)) == 2 and subscriber.on(topics.status))
    events = [json.loads(p) for p in subscriber.on(topics.events)]
    store = Store(config.storage.data_dir)
    rows = {r["id"]: r for r in store.rows()}
    assert sorted(e["id"] for e in events) == sorted(rows)
    for event in events:
        row = rows[event["id"]]
        assert (event["label"], event["sha256"], event["bytes"], event["device"]) == \
            (row["label"], row["sha256"], row["bytes"], "cam1")
        assert event["time"] == row["captured_at"] and event["url"] == f"http://cam1.local/captures/{row['id']}"
        snapshot = subscriber.on(topics.label_snapshot(row["label"]))
        assert snapshot == [(store.data_dir / row["thumb_path"]).read_bytes()]
    assert subscriber.on(topics.available)[-1] == b"online"
    status = json.loads(subscriber.on(topics.status)[-1])
    assert status["device"] == "cam1" and status["keeps_today"] == 2 and status["items"] == 2
    assert status["last_keep"] is None or status["last_keep"]["label"] in (CHICKADEE, "Ara macao (Scarlet Macaw)")
    assert service.outbox.depth() == {"mqtt": 0, "upload": 0, "notify": 0}
    state = service.state()["links"]["mqtt"]
    assert state["connected"] and state["sent"] >= 3 and state["problem"] is None
    service.close()
    # A clean goodbye says offline, retained, for whoever subscribes later.
    late = Subscriber(broker.url, (topics.available,))
    late.wait_for(lambda s: s.on(topics.available) == [b"offline"], what="the retained offline")
    late.close()
    subscriber.close()
    store.close()


def test_home_assistant_discovery_describes_one_device_with_its_entities(make_config, broker):
    config = links_config(make_config, broker.url)
    subscriber = Subscriber(broker.url, ("homeassistant/#",))
    service = LinksService(config)
    service.links[0].start()
    expected = discovery_configs("homeassistant", Topics.of("appliance", "cam1"), "cam1")
    drain(service, lambda: len({t for t, *_ in subscriber.messages}) == len(expected))
    got = {topic: json.loads(payload) for topic, payload, retain, _ in subscriber.messages if retain or True}
    assert got == expected
    components = sorted(topic.split("/")[1] for topic in got)
    assert components == ["binary_sensor", "button", "image", "sensor", "sensor", "sensor", "sensor", "sensor",
                          "switch"]
    for topic, payload in got.items():
        check_discovery(topic, payload)
    assert len({p["unique_id"] for p in got.values()}) == len(got)
    service.close()
    subscriber.close()


# From Home Assistant's MQTT discovery documentation (https://www.home-assistant.io/integrations/mqtt/,
# and each platform's page: sensor.mqtt, binary_sensor.mqtt, switch.mqtt, button.mqtt, image.mqtt): the keys
# each platform requires, and the options this appliance uses, each documented for that platform.
REQUIRED = {"sensor": {"state_topic"}, "binary_sensor": {"state_topic"}, "switch": {"command_topic"},
            "button": {"command_topic"}, "image": set()}
COMMON = {"name", "unique_id", "object_id", "device", "availability", "icon", "entity_category"}
DOCUMENTED = {
    "sensor": {"state_topic", "value_template", "unit_of_measurement", "device_class", "state_class"},
    "binary_sensor": {"state_topic", "value_template", "device_class", "payload_on", "payload_off"},
    "switch": {"command_topic", "state_topic", "payload_on", "payload_off", "state_on", "state_off"},
    "button": {"command_topic", "payload_press"},
    "image": {"image_topic", "content_type", "url_topic"},
}
DEVICE_KEYS = {"identifiers", "name", "manufacturer", "model", "sw_version", "configuration_url", "hw_version"}


def check_discovery(topic, payload):
    prefix, component, node, object_id, config = topic.split("/")
    assert (prefix, config) == ("homeassistant", "config") and node == "cam1"
    assert REQUIRED[component] <= payload.keys(), topic
    assert payload.keys() <= COMMON | DOCUMENTED[component], payload.keys() - COMMON - DOCUMENTED[component]
    if component == "image":  # one of the two is required
        assert "image_topic" in payload or "url_topic" in payload
    assert payload["device"].keys() <= DEVICE_KEYS and payload["device"]["identifiers"] == ["appliance_cam1"]
    [availability] = payload["availability"]
    assert availability == {"topic": "appliance/cam1/available", "payload_available": "online",
                            "payload_not_available": "offline"}
    if "value_template" in payload:
        assert payload["value_template"].startswith("{{") and payload["value_template"].endswith("}}")


def test_keeps_made_while_the_broker_is_down_are_all_delivered_once_it_is_back(make_config, broker):
    config = links_config(make_config, broker.url)
    service = LinksService(config)
    service.links[0].start()
    drain(service, lambda: service.links[0].is_up())
    broker.stop()
    drain(service, lambda: not service.links[0].is_up())
    run_loop(config)
    run_loop(config)  # four keeps in all, queued while the broker is away
    for _ in range(10):
        service.step()
    assert service.outbox.depth()["mqtt"] >= 4 and "not connected" in service.state()["links"]["mqtt"]["problem"]
    broker.start()
    subscriber = Subscriber(broker.url, ("appliance/cam1/events",))
    drain(service, lambda: len(subscriber.on("appliance/cam1/events")) >= 4, timeout_s=60)
    store = Store(config.storage.data_dir)
    assert sorted(json.loads(p)["id"] for p in subscriber.on("appliance/cam1/events")) == \
        sorted(r["id"] for r in store.rows())
    drain(service, lambda: service.outbox.depth()["mqtt"] == 0)
    service.close()
    subscriber.close()
    store.close()


def test_pause_and_offload_commands_reach_the_running_loop_and_the_state_comes_back(make_config, broker):
    config = links_config(make_config, broker.url, qos=1).replace(camera={"fps": 5.0, "replay_loop": True})
    appliance = Appliance(config)
    loop = threading.Thread(target=appliance.run, daemon=True)
    loop.start()
    service = LinksService(config)
    links = threading.Thread(target=service.run, daemon=True)
    links.start()
    subscriber = Subscriber(broker.url, ("appliance/cam1/state/paused",))
    try:
        subscriber.wait_for(lambda s: s.on("appliance/cam1/state/paused")[-1:] == [b"OFF"], what="state OFF")
        subscriber.client.publish("appliance/cam1/set/paused", "ON", qos=1)
        subscriber.wait_for(lambda s: s.on("appliance/cam1/state/paused")[-1:] == [b"ON"], what="state ON")
        assert appliance.loop.is_paused
        subscriber.client.publish("appliance/cam1/set/paused", "OFF", qos=1)
        subscriber.wait_for(lambda s: s.on("appliance/cam1/state/paused")[-1:] == [b"OFF"], what="state OFF again")
        assert not appliance.loop.is_paused
    finally:
        service.stop()
        links.join(10)
        appliance.stop()
        loop.join(10)
        appliance.close()
        subscriber.close()


def test_wrong_credentials_are_a_clear_problem_in_the_state_and_nothing_is_lost(make_config, tmp_path):
    broker = Broker(tmp_path / "locked", users={"cam": "right-password"}).start()
    try:
        config = links_config(make_config, broker.url, username="cam", password="wrong-password")
        run_loop(config)
        service = LinksService(config)
        service.links[0].start()
        drain(service, lambda: "refused" in (service.links[0].describe()["problem"] or ""))
        for _ in range(5):
            service.step()
        problem = service.state()["links"]["mqtt"]["problem"]
        assert "mqtt.username and mqtt.password" in problem and "wrong-password" not in problem
        assert len([e for e in service.outbox.due("mqtt") if e.capture_id is not None]) == 2  # both keeps wait
        service.close()
    finally:
        broker.stop()


def test_no_broker_at_the_url_is_a_problem_in_the_state_not_a_crash(make_config):
    config = links_config(make_config, "mqtt://127.0.0.1:9")  # the discard port: nothing listens
    service = LinksService(config)
    service.links[0].start()
    until = time.monotonic() + 10
    while "cannot reach" not in (service.state()["links"]["mqtt"]["problem"] or "") and time.monotonic() < until:
        service.step()
        time.sleep(0.1)
    assert not service.state()["links"]["mqtt"]["connected"]
    assert service.state()["links"]["mqtt"]["problem"] == ("cannot reach the broker at 127.0.0.1:9 (check mqtt.url and "
                                                          "the network); retrying")
    service.close()


def test_the_fleet_lists_each_camera_reporting_to_the_broker(make_config, broker, cli_env):
    import subprocess
    import sys

    from conftest import REPO

    config = links_config(make_config, broker.url)
    run_loop(config)
    service = LinksService(config)
    service.links[0].start()
    watcher = Subscriber(broker.url, ("appliance/+/status",))
    drain(service, lambda: watcher.on("appliance/cam1/status"))
    service.close()  # a clean stop: cam1 is offline now, its last status retained
    second = LinksService(links_config(make_config, broker.url).replace(system={"hostname": "cam2"}))
    second.links[0].start()
    drain(second, lambda: watcher.on("appliance/cam2/status"))
    command = [sys.executable, "-m", "appliance", "fleet", "--broker", broker.url, "--wait", "1"]
    try:
        listed = subprocess.run(command + ["--json"], cwd=REPO, env=cli_env, capture_output=True, text=True,
                                timeout=60)
        table = subprocess.run(command, cwd=REPO, env=cli_env, capture_output=True, text=True, timeout=60)
    finally:
        second.close()
        watcher.close()
    assert listed.returncode == 0, listed.stderr
    cameras = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(c["device"], c["online"]) for c in cameras] == [("cam1", False), ("cam2", True)]
    assert cameras[0]["status"]["keeps_today"] == 2 and cameras[0]["status"]["state"] == "not running"
    assert cameras[0]["status"]["last_keep"]["label"] == "Ara macao (Scarlet Macaw)"  # the loop's last report
    assert table.returncode == 0 and "cam1" in table.stdout and "cam2" in table.stdout
    refused = subprocess.run([sys.executable, "-m", "appliance", "fleet", "--broker", "mqtt://127.0.0.1:9"],
                             cwd=REPO, env=cli_env, capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "cannot reach the broker at 127.0.0.1:9" in refused.stderr
