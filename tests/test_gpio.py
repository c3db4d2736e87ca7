"""LEDs and buttons on gpiozero's own MockFactory: the pins' recorded states and times, and button
presses driving a real running appliance (replay camera, real model)."""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from conftest import REPO, TINY_EDGETPU_MODEL, TINY_MODEL
from gpiozero.pins.mock import MockFactory

from appliance.config import GpioConfig
from appliance.errors import CameraError
from appliance.network.service import read_request
from appliance.panel import gpio as gpio_module
from appliance.panel import indicator as ind
from appliance.panel.gpio import GpioPanel, open_panel
from appliance.service.app import Appliance
from appliance.storage.store import Store

PINS = GpioConfig()


def wait_until(condition, what, timeout_s=15.0):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.01)


def expected_states(pattern, cycles):
    """What the mock pin should record for ``pattern``: (seconds since the previous change, state)."""
    expected, previous_s = [(0.0, False)], 0.0
    steps = [s for s in pattern.steps * cycles]
    for is_on, seconds in steps:
        if is_on != expected[-1][1]:
            expected.append((previous_s, is_on))
            previous_s = 0.0
        previous_s += seconds or 0.0
    return expected


@pytest.fixture
def panel():
    factory = MockFactory()
    panel = GpioPanel(PINS, queue.Queue(), factory)
    yield panel
    panel.close()


def pin(panel, key):
    return panel.pin_factory.pin(getattr(PINS, key))


# Each documented pattern, played on the pins; three LEDs at a time to keep the test short.
@pytest.mark.parametrize("status, keep, warning, seconds", [
    (ind.HEARTBEAT, ind.FAST_PULSE, ind.blink_code(2), 4.2),
    (ind.SLOW_PULSE, ind.HOLD_FEEDBACK, ind.SLOW_WARNING, 4.2),
    (ind.STEADY, ind.OFF, ind.blink_code(4), 3.3),
])
def test_each_pattern_drives_its_pin_with_the_documented_timing(panel, status, keep, warning, seconds):
    for key in ("status_led", "keep_led", "warning_led"):
        pin(panel, key).clear_states()
    panel.show({"status": status, "keep": keep, "warning": warning})
    time.sleep(seconds)
    for key, pattern in (("status_led", status), ("keep_led", keep), ("warning_led", warning)):
        cycle_s = sum(s or 0 for _, s in pattern.steps)
        cycles = int(seconds // cycle_s) if cycle_s else 1
        expected = expected_states(pattern, cycles)
        states = pin(panel, key).states
        assert len(states) >= len(expected), f"{key} ({pattern.name}) changed {len(states)} times, expected {len(expected)}"
        pin(panel, key).assert_states_and_times(expected)


def test_a_new_pattern_starts_at_once(panel):
    status = pin(panel, "status_led")
    panel.show({"status": ind.SLOW_PULSE})
    time.sleep(0.3)
    status.clear_states()
    panel.show({"status": ind.OFF})
    time.sleep(0.1)
    status.assert_states_and_times([(0.0, True), (0.0, False)])


def test_a_laptop_without_gpio_runs_without_leds_when_auto_and_refuses_when_on(caplog, tmp_path):
    caplog.set_level(logging.INFO)
    laptop = tmp_path / "no-device-tree"
    assert open_panel(GpioConfig(enabled="auto"), queue.Queue(), model_path=laptop) == (None, None)
    assert "no LEDs or buttons" in caplog.text and "WARNING" not in caplog.text
    with pytest.raises(Exception, match='gpio.enabled = "auto"'):
        open_panel(GpioConfig(enabled="on"), queue.Queue(), model_path=laptop)
    assert open_panel(GpioConfig(enabled="off"), queue.Queue(), model_path=laptop) == (None, None)


def test_a_raspberry_pi_whose_pins_do_not_open_is_a_problem_shown_not_an_info_line(caplog, tmp_path):
    model = tmp_path / "model"
    model.write_bytes(b"Raspberry Pi 5 Model B Rev 1.0\0")  # as /proc/device-tree/model reads
    panel, problem = open_panel(GpioConfig(enabled="auto"), queue.Queue(), model_path=model)
    assert panel is None and problem.startswith("the LEDs and buttons are off: Raspberry Pi 5 Model B Rev 1.0 has GPIO")
    assert "LG_WD" in problem
    assert any(r.levelno == logging.WARNING and r.getMessage() == problem for r in caplog.records)


def test_the_status_and_its_page_field_say_why_a_raspberry_pis_leds_are_off(make_config, tmp_path, monkeypatch):
    model = tmp_path / "model"
    model.write_bytes(b"Raspberry Pi 4 Model B Rev 1.5\0")
    monkeypatch.setattr(gpio_module, "DEVICE_TREE_MODEL", model)
    appliance = Appliance(make_config(gpio={"enabled": "auto", "pin_factory": "default"}))
    try:
        leds = appliance.status()["leds"]
    finally:
        appliance.close()
    assert leds["pins"] == "none" and "Raspberry Pi 4 Model B Rev 1.5 has GPIO" in leds["problem"]
    page = (REPO / "appliance/web/templates/status.html").read_text()
    assert 'data-field="loop.leds.problem"' in page


# -- buttons on a running appliance ---------------------------------------------------------------------

class Running:
    """An Appliance running its loop on a thread."""

    def __init__(self, appliance):
        self.appliance = appliance
        self.error = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            self.appliance.run()
        except BaseException as e:  # handed to the test
            self.error = e

    def finish(self):
        self.appliance.stop()
        self.thread.join(30)
        assert not self.thread.is_alive()
        self.appliance.close()


@pytest.fixture
def device(make_config, tmp_path):
    """A running appliance on mock pins; ``power_off`` records what it found when called."""
    factory = MockFactory()
    usb = tmp_path / "by-id"
    usb.mkdir()
    calls = {"power_off": [], "offload": []}

    def power_off():
        try:
            appliance.store.db.execute("select 1")
            calls["power_off"].append("database still open")
        except sqlite3.ProgrammingError:
            calls["power_off"].append("database closed")

    config = make_config(camera={"replay_loop": True, "fps": 20.0}, gpio={"enabled": "on"})
    appliance = Appliance(config, pin_factory=factory, power_off=power_off, usb_by_id=usb,
                          offload=lambda args: calls["offload"].append(args) or {"started": True})
    running = Running(appliance)
    wait_until(lambda: appliance.loop.state == "running" and appliance.writer.kept >= 1, "the loop keeps birds")
    yield appliance, running, factory, calls, usb
    if running.thread.is_alive():
        running.finish()


def press(factory, bcm, hold_s=0.1):
    button = factory.pin(bcm)
    button.drive_low()  # buttons pull up: pressed is low
    time.sleep(hold_s)
    button.drive_high()


def test_a_short_press_pauses_the_running_loop_and_another_resumes_it(device):
    appliance, _, factory, _, _ = device
    assert appliance.status()["leds"]["status"] == "heartbeat"
    press(factory, PINS.pause_button)
    wait_until(lambda: appliance.loop.is_paused, "the loop is paused")
    wait_until(lambda: appliance.status()["leds"]["status"] == "steady", "the status LED is steady")
    press(factory, PINS.pause_button)
    wait_until(lambda: not appliance.loop.is_paused, "the loop runs again")
    wait_until(lambda: appliance.status()["leds"]["status"] == "heartbeat", "the heartbeat is back")


def test_holding_the_pause_button_shuts_down_only_after_the_loop_has_drained(device):
    appliance, running, factory, calls, _ = device
    button = factory.pin(PINS.pause_button)
    button.drive_low()
    wait_until(lambda: appliance.panel_controller.describe()["status"] == "very fast pulse", "feedback while held")
    assert not appliance.is_shutdown_requested  # not yet: it takes the whole hold
    wait_until(lambda: not running.thread.is_alive(), "the loop stops after the hold", timeout_s=PINS.hold_to_shutdown_s + 5)
    button.drive_high()
    appliance.close()
    assert running.error is None
    assert calls["power_off"] == ["database closed"]
    # Every keep decided before the hold and handed to the writer was written (the writer may still
    # have been draining its queue when the loop stopped: count decisions, not writes so far).
    counts = appliance.stats.counts
    queued = counts["match"] + counts["audit"] - counts["writer-behind"] - counts["storage-full"]
    store = Store(appliance.config.storage.data_dir)
    assert store.count() == queued > 0
    store.close()


def test_the_offload_button_says_when_there_is_no_stick_and_starts_an_offload_when_there_is(device):
    appliance, _, factory, calls, usb = device
    press(factory, PINS.offload_button)
    wait_until(lambda: appliance.panel_controller.describe()["warning"] == "fast pulse", "no stick: red blinks")
    assert calls["offload"] == []
    (usb / "usb-SanDisk_Cruzer_4C530001-0:0-part1").touch()
    press(factory, PINS.offload_button)
    wait_until(lambda: calls["offload"] == [{"trigger": "button"}], "the offload is started")
    wait_until(lambda: appliance.panel_controller.describe()["status"] == "fast pulse", "offloading: fast green pulse")


def test_holding_the_offload_button_asks_for_the_hotspot_and_the_green_led_says_when_it_is_open(device):
    appliance, _, factory, calls, usb = device
    runtime = appliance.config.status.runtime_dir
    (usb / "usb-SanDisk_Cruzer_4C530001-0:0-part1").touch()  # a stick is there: a hold must still not offload
    press(factory, PINS.offload_button, hold_s=PINS.hold_for_hotspot_s + 0.3)
    wait_until(lambda: read_request(runtime) == "on", "the hotspot is asked for")
    assert calls["offload"] == []
    # What appliance-network.service writes once the hotspot is open.
    write_network(runtime, {"mode": "hotspot", "request": "on"})
    wait_until(lambda: appliance.panel_controller.describe()["status"] == "double heartbeat", "green: double heartbeat")
    assert appliance.status()["network"]["mode"] == "hotspot"
    press(factory, PINS.offload_button, hold_s=PINS.hold_for_hotspot_s + 0.3)  # held again: back to automatic
    wait_until(lambda: read_request(runtime) == "auto", "automatic again")
    write_network(runtime, {"mode": "connected", "request": "auto"})
    wait_until(lambda: appliance.panel_controller.describe()["status"] == "heartbeat", "green: heartbeat again")
    assert calls["offload"] == []
    press(factory, PINS.offload_button)  # a short press still offloads
    wait_until(lambda: calls["offload"] == [{"trigger": "button"}], "the offload is started")


def write_network(runtime, status):
    (Path(runtime) / "network.json").write_text(json.dumps(status))


def test_a_keep_flashes_the_keep_led_on_its_pin(device):
    appliance, _, factory, _, _ = device
    keep = factory.pin(PINS.keep_led)
    keep.clear_states()
    kept = appliance.writer.kept
    wait_until(lambda: appliance.writer.kept > kept + 1, "two more keeps")
    assert any(state.state for state in keep.states)


# -- faults -------------------------------------------------------------------------------------------

def test_no_camera_shows_blink_code_two_before_the_appliance_gives_up(make_config, tmp_path):
    factory = MockFactory()
    config = make_config(camera={"replay_dir": str(tmp_path / "no-camera-here")},
                         gpio={"enabled": "on", "fault_display_s": 1.3})
    warning = factory.pin(PINS.warning_led)
    shown_at_s = []

    class FaultShown(logging.Handler):
        """Times the pin from the moment the appliance says it shows the fault (its log line), not
        from the start of the test: loading the model before it takes seconds on a loaded machine."""

        def emit(self, record):
            if "showing the no-camera fault" in record.getMessage():
                warning.clear_states()
                shown_at_s.append(time.monotonic())

    handler, logger = FaultShown(), logging.getLogger("appliance.service.app")
    logger.addHandler(handler)
    try:
        with pytest.raises(CameraError):
            Appliance(config, pin_factory=factory)
    finally:
        logger.removeHandler(handler)
    assert shown_at_s, "the appliance did not say it shows the fault"
    assert time.monotonic() - shown_at_s[0] >= config.gpio.fault_display_s  # it showed the code, then gave up
    expected = expected_states(ind.blink_code(2), 1)  # the first blink starts at once (0.0 after the log line)
    assert len(warning.states) >= len(expected)
    warning.assert_states_and_times(expected)


def test_a_required_coral_that_is_missing_shows_blink_code_four_while_running_on_the_cpu(make_config, tmp_path):
    model = tmp_path / TINY_MODEL.name
    model.write_bytes(TINY_MODEL.read_bytes())
    (tmp_path / TINY_EDGETPU_MODEL.name).write_bytes(TINY_EDGETPU_MODEL.read_bytes())
    config = make_config(model=model).replace(model={"accelerator": "coral", "on_accelerator_missing": "fallback"},
                            camera={"replay_loop": True, "fps": 20.0}, gpio={"enabled": "on"})
    appliance = Appliance(config, pin_factory=MockFactory())
    running = Running(appliance)
    try:
        wait_until(lambda: appliance.panel_controller.describe()["warning"] == "blink code 4", "the Coral fault shows")
        assert appliance.classifier.backend == "cpu" and appliance.loop.state == "running"
    finally:
        running.finish()
