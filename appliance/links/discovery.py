"""Home Assistant MQTT discovery: the camera as one device with its entities, and the topics they use.

Each entity's config is published retained to ``<discovery_prefix>/<component>/<node_id>/<object_id>/config``
(https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery), all sharing one ``device`` block and
the camera's availability topic, so Home Assistant shows one device that goes unavailable with the camera.
Pure: topics and payloads from the config and the device's name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from appliance import __version__


@dataclass(frozen=True)
class Topics:
    """The camera's topics under ``<prefix>/<device>``."""

    base: str

    @classmethod
    def of(cls, prefix: str, device: str) -> Topics:
        return cls(f"{prefix}/{device}")

    @property
    def available(self) -> str:
        return f"{self.base}/available"

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def events(self) -> str:
        return f"{self.base}/events"

    @property
    def snapshot(self) -> str:
        """The last keep's thumbnail, whatever its label (Home Assistant's image entity)."""
        return f"{self.base}/snapshot"

    def label_snapshot(self, label: str) -> str:
        return f"{self.base}/{topic_level(label)}/snapshot"

    def command(self, name: str) -> str:
        return f"{self.base}/set/{name}"

    def state(self, name: str) -> str:
        return f"{self.base}/state/{name}"


def topic_level(label: str) -> str:
    """A label as one topic level: no '/', '+', '#' or NUL; spaces and punctuation as '_' (the label
    itself is in the messages)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", label).strip("_")[:80] or "unlabelled"


def discovery_configs(discovery_prefix: str, topics: Topics, device: str) -> dict[str, dict]:
    """Discovery topic → config payload, for every entity of the camera."""
    node = topic_level(device)
    block = {"identifiers": [f"appliance_{node}"], "name": device, "manufacturer": "edge-AI camera appliance",
             "model": "camera appliance", "sw_version": __version__, "configuration_url": f"http://{device}.local/"}
    common = {"availability": [{"topic": topics.available, "payload_available": "online",
                                "payload_not_available": "offline"}], "device": block}

    def status_sensor(object_id, name, template, **extra):
        return object_id, "sensor", {"name": name, "state_topic": topics.status, "value_template": template, **extra}

    entities = [
        status_sensor("last_label", "Last keep", "{{ value_json.last_keep.label if value_json.last_keep else '' }}",
                      icon="mdi:bird"),
        status_sensor("keeps_today", "Keeps today", "{{ value_json.keeps_today }}", state_class="total",
                      unit_of_measurement="keeps"),
        status_sensor("storage_free", "Storage free", "{{ (value_json.storage.free_bytes / 1000000) | round(0) }}",
                      device_class="data_size", unit_of_measurement="MB", entity_category="diagnostic"),
        status_sensor("fps", "Frames per second", "{{ value_json.fps }}", state_class="measurement",
                      unit_of_measurement="fps", entity_category="diagnostic"),
        status_sensor("outbox", "Messages waiting", "{{ value_json.outbox.queued }}", state_class="measurement",
                      entity_category="diagnostic"),
        ("running", "binary_sensor", {"name": "Running", "state_topic": topics.status, "device_class": "running",
                                      "value_template": "{{ 'ON' if value_json.state == 'running' else 'OFF' }}"}),
        ("last_keep", "image", {"name": "Last keep", "image_topic": topics.snapshot, "content_type": "image/jpeg"}),
        ("paused", "switch", {"name": "Paused", "command_topic": topics.command("paused"),
                              "state_topic": topics.state("paused"), "payload_on": "ON", "payload_off": "OFF",
                              "icon": "mdi:pause"}),
        ("offload", "button", {"name": "Start USB offload", "command_topic": topics.command("offload"),
                               "payload_press": "PRESS", "icon": "mdi:usb-flash-drive"}),
    ]
    return {f"{discovery_prefix}/{component}/{node}/{object_id}/config":
            {**config, "unique_id": f"appliance_{node}_{object_id}", "object_id": f"{node}_{object_id}", **common}
            for object_id, component, config in entities}
