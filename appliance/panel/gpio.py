"""The gpiozero adapter: three LEDs that play ``indicator`` patterns, two buttons that post events.

The pins come from ``[gpio]`` in the config. The pin factory is passed to every device (never
gpiozero's process-wide default): the Pi's own (lgpio on a Pi 5 and on Bookworm) or gpiozero's
``MockFactory`` on a laptop. Button callbacks run on gpiozero's threads and only put an event on a
queue; ``panel.PanelController`` acts on them in the loop process.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import warnings
from pathlib import Path

from appliance.errors import GpioUnavailable
from appliance.panel.indicator import LEDS, OFF, Pattern

log = logging.getLogger(__name__)

DEVICE_TREE_MODEL = Path("/proc/device-tree/model")
BOUNCE_S = 0.02  # contact bounce of ordinary tactile switches settles well within this
# Events posted by the buttons.
PAUSE_PRESSED, PAUSE_RELEASED, PAUSE_HELD = "pause-pressed", "pause-released", "pause-held"
OFFLOAD_PRESSED, OFFLOAD_RELEASED, OFFLOAD_HELD = "offload-pressed", "offload-released", "offload-held"


class LedPlayer:
    """Plays one LED's pattern on its own thread; a new pattern starts at its first step."""

    def __init__(self, led):
        self.led = led
        self.pattern = OFF
        self._changed = threading.Event()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name=f"led-{led.pin}", daemon=True)
        self._thread.start()

    def play(self, pattern: Pattern) -> None:
        if pattern != self.pattern:
            self.pattern = pattern
            self._changed.set()

    def _run(self):
        while not self._closing:
            self._changed.clear()
            for is_on, seconds in itertools.cycle(self.pattern.steps):
                self.led.value = is_on
                if self._changed.wait(seconds):  # None: hold until the pattern changes
                    break

    def close(self):
        self._closing = True
        self._changed.set()
        self._thread.join(timeout=2)


class GpioPanel:
    """The LEDs and buttons on ``pin_factory``'s pins; button events go to ``events``."""

    def __init__(self, gpio_config, events: queue.Queue, pin_factory):
        from gpiozero import LED, Button
        from gpiozero.exc import GPIOZeroError

        self.pin_factory = pin_factory
        self.devices = []
        try:
            leds = {name: self._add(LED(getattr(gpio_config, f"{name}_led"), pin_factory=pin_factory)) for name in LEDS}
            pause = self._add(Button(gpio_config.pause_button, pull_up=True, bounce_time=BOUNCE_S,
                                     hold_time=gpio_config.hold_to_shutdown_s, pin_factory=pin_factory))
            offload = self._add(Button(gpio_config.offload_button, pull_up=True, bounce_time=BOUNCE_S,
                                       hold_time=gpio_config.hold_for_hotspot_s, pin_factory=pin_factory))
        except (GPIOZeroError, OSError, RuntimeError) as e:
            self.close()
            raise GpioUnavailable(f"cannot use the GPIO pins ({type(e).__name__}: {e})") from None
        pause.when_pressed = lambda: events.put(PAUSE_PRESSED)
        pause.when_released = lambda: events.put(PAUSE_RELEASED)
        pause.when_held = lambda: events.put(PAUSE_HELD)
        offload.when_pressed = lambda: events.put(OFFLOAD_PRESSED)
        offload.when_released = lambda: events.put(OFFLOAD_RELEASED)
        offload.when_held = lambda: events.put(OFFLOAD_HELD)
        self.players = {name: LedPlayer(led) for name, led in leds.items()}

    def _add(self, device):
        self.devices.append(device)
        return device

    def show(self, patterns: dict[str, Pattern]) -> None:
        for name, pattern in patterns.items():
            self.players[name].play(pattern)

    def describe(self) -> dict[str, str]:
        return {name: player.pattern.name for name, player in self.players.items()}

    def close(self) -> None:
        for player in getattr(self, "players", {}).values():
            player.close()
        for device in reversed(self.devices):
            device.close()
        self.devices.clear()


def pin_factory(name: str):
    """The pin factory the config names: ``mock`` (gpiozero's MockFactory) or the Pi's ``default``."""
    if name == "mock":
        from gpiozero.pins.mock import MockFactory

        return MockFactory()
    from gpiozero import Device
    from gpiozero.exc import BadPinFactory

    try:
        with warnings.catch_warnings():  # gpiozero warns for each factory it tries; one log line says it
            warnings.simplefilter("ignore")
            # What gpiozero itself would pick (lgpio, rpigpio, …), without installing it process-wide.
            return Device._default_pin_factory()
    except (BadPinFactory, ImportError, OSError, RuntimeError) as e:
        raise GpioUnavailable(f"this machine has no GPIO ({e})") from None


def open_panel(gpio_config, events: queue.Queue, factory=None,
               model_path: Path | None = None) -> tuple[GpioPanel | None, str | None]:
    """The panel, or None when ``gpio.enabled`` is off, or auto on a machine without GPIO; and why a
    Raspberry Pi's pins did not open (None elsewhere: a laptop has no LEDs to lose).

    ``factory`` overrides ``gpio.pin_factory`` (a test passes the MockFactory whose pins it drives);
    ``model_path`` the device tree's model file."""
    if gpio_config.enabled == "off":
        return None, None
    try:
        return GpioPanel(gpio_config, events, factory or pin_factory(gpio_config.pin_factory)), None
    except GpioUnavailable as e:
        if gpio_config.enabled == "on":
            raise GpioUnavailable(f"{e}: set gpio.enabled = \"auto\" to run without LEDs and buttons, "
                                  "or gpio.pin_factory = \"mock\"") from None
        model = board_model(model_path or DEVICE_TREE_MODEL)
        if model is None or not model.startswith("Raspberry Pi"):
            log.info("no LEDs or buttons: %s", e)
            return None, None
        problem = (f"the LEDs and buttons are off: {model} has GPIO, but {e}; check that the lgpio module is "
                   "installed and that the service can write its working directory (LG_WD)")
        log.warning("%s", problem)
        return None, problem


def board_model(path: Path = DEVICE_TREE_MODEL) -> str | None:
    """The board's name from the device tree (e.g. "Raspberry Pi 5 Model B Rev 1.0"), None without one."""
    try:
        return path.read_bytes().rstrip(b"\0").decode(errors="replace").strip() or None
    except OSError:
        return None
