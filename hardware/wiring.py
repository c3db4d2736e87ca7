"""The parts on the 40-pin header, built from the pins the code uses: the data the docs are drawn from.

``wiring(GpioConfig())`` gives every part (LEDs with their resistors, buttons, the optional DS3231
clock), the physical pin of each of its terminals, and the GND pin each side's ground rail goes to.
``make_docs.py`` turns it into ``pinmap.md`` and, through ``wiring_svg.py``, ``wiring.svg``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from appliance.config import I2C_PINS, PIN_KEYS, GpioConfig
from appliance.panel import indicator

# The 40-pin header of the Pi 4, Pi 5 and Zero 2 W (and every Pi since the B+): physical pin → BCM
# GPIO number, or the name of a power pin. Odd pins are the row nearer the middle of the board.
HEADER: dict[int, int | str] = {
    1: "3V3", 2: "5V", 3: 2, 4: "5V", 5: 3, 6: "GND", 7: 4, 8: 14, 9: "GND", 10: 15,
    11: 17, 12: 18, 13: 27, 14: "GND", 15: 22, 16: 23, 17: "3V3", 18: 24, 19: 10, 20: "GND",
    21: 9, 22: 25, 23: 11, 24: 8, 25: "GND", 26: 7, 27: 0, 28: 1, 29: 5, 30: "GND",
    31: 6, 32: 12, 33: 13, 34: "GND", 35: 19, 36: 16, 37: 26, 38: 20, 39: "GND", 40: 21,
}
# The other job some GPIOs have, worth seeing before wiring to them.
ALT_FUNCTIONS = {0: "ID_SD", 1: "ID_SC", 2: "SDA", 3: "SCL", 14: "TXD", 15: "RXD"}

# LED series resistors. A GPIO drives 3.3 V; the resistor is chosen for the *lowest* forward voltage
# a part of that colour is likely to have, because that is when the most current flows, and the
# result is rounded up to the next E12 value. The cap of 8 mA per pin is half the 16 mA per-pin
# figure usually given for the Pi.
SUPPLY_V = 3.3
MAX_LED_CURRENT_A = 0.008
E12_OHM = (10, 12, 15, 18, 22, 27, 33, 39, 47, 56, 68, 82)


@dataclass(frozen=True)
class LedType:
    colour: str
    vf_typical_v: float  # at a few mA
    vf_lowest_v: float  # the low end of what parts of this colour show at a few mA
    chemistry: str


LED_TYPES = {
    "red": LedType("red", 2.0, 1.8, "AlGaInP"),
    "green": LedType("green", 3.0, 2.7, "InGaN (a \"true\" green, ~525 nm)"),
    "white": LedType("white", 3.0, 2.7, "InGaN with a phosphor"),
}


def series_resistor_ohm(led: LedType) -> int:
    """The smallest E12 resistor that keeps the current at or under the cap at the LED's lowest Vf."""
    needed = (SUPPLY_V - led.vf_lowest_v) / MAX_LED_CURRENT_A
    for decade in (1, 10, 100, 1000):
        for base in E12_OHM:
            if base * decade >= needed - 1e-9:
                return base * decade
    raise ValueError(f"no E12 resistor up to 10 kΩ for {led.colour}")  # pragma: no cover


def ohm_text(value: int | None) -> str:
    return f"{value} Ω" if value is not None else ""


def led_current_ma(led: LedType, ohm: int, vf_v: float) -> float:
    return (SUPPLY_V - vf_v) / ohm * 1000


def physical_pin(bcm: int) -> int:
    """The header position of GPIO ``bcm``: ``physical_pin(17) == 11``."""
    for pin, name in HEADER.items():
        if name == bcm:
            return pin
    raise ValueError(f"BCM {bcm} is not on the 40-pin header")


def pin_name(pin: int) -> str:
    """``"GPIO17"`` for a GPIO, else the power pin's name (``"3V3"``, ``"5V"``, ``"GND"``)."""
    name = HEADER[pin]
    return f"GPIO{name}" if isinstance(name, int) else name


def row(pin: int) -> int:
    """The header row of a physical pin, 1 (pins 1 and 2) to 20 (pins 39 and 40)."""
    return (pin + 1) // 2


def side_of(pin: int) -> str:
    """``"left"`` for the odd pins, ``"right"`` for the even ones, as wiring.svg draws them."""
    return "left" if pin % 2 else "right"


def led_colours() -> dict[str, str]:
    """LED name → colour, read from the documented vocabulary ("status (green)"), so both agree."""
    colours = {}
    for _, led, _, _ in indicator.VOCABULARY:
        match = re.fullmatch(r"(\w+) \((\w+)\)", led)
        if match:
            colours[match.group(1)] = match.group(2)
    missing = set(indicator.LEDS) - set(colours)
    if missing:
        raise ValueError(f"indicator.VOCABULARY names no colour for {sorted(missing)}")
    return colours


@dataclass(frozen=True)
class Part:
    """One thing on the header: ``terminals`` are (its terminal's name, physical pin)."""

    key: str  # the [gpio] key ("status_led"), or "rtc"
    name: str
    kind: str  # led, button, rtc
    terminals: tuple[tuple[str, int], ...]
    does: str
    colour: str = ""
    led: LedType | None = None
    resistor_ohm: int | None = None
    is_optional: bool = False

    @property
    def signal_pin(self) -> int:
        return self.terminals[0][1]


@dataclass(frozen=True)
class Wiring:
    parts: tuple[Part, ...]
    ground_pins: dict[str, int]  # side of the header ("left", "right") → the GND pin its rail goes to

    def used_pins(self) -> list[int]:
        pins = {pin for part in self.parts for _, pin in part.terminals} | set(self.ground_pins.values())
        return sorted(pins)

    def part_at(self, pin: int) -> Part | None:
        return next((part for part in self.parts for _, p in part.terminals if p == pin), None)


RTC_TERMINALS = (("VCC", 1), ("SDA", physical_pin(I2C_PINS[0])), ("SCL", physical_pin(I2C_PINS[1])), ("GND", 9))
_BUTTONS = {"pause_button": "pause button", "offload_button": "offload button"}


def wiring(gpio: GpioConfig) -> Wiring:
    """Every part, its pins and resistor, and the GND pin each side's ground rail goes to."""
    colours = led_colours()
    parts = []
    for key in PIN_KEYS:
        pin = physical_pin(getattr(gpio, key))
        if key.endswith("_led"):
            name = key.removesuffix("_led")
            led = LED_TYPES[colours[name]]
            parts.append(Part(key, f"{name} LED", "led", (("signal", pin),), _led_does(name), colour=led.colour,
                              led=led, resistor_ohm=series_resistor_ohm(led)))
        else:
            parts.append(Part(key, _BUTTONS[key], "button", (("signal", pin),), _button_does(key, gpio)))
    used_bcm = {getattr(gpio, key) for key in PIN_KEYS}
    if not used_bcm & set(I2C_PINS):
        # Small plug-on DS3231 boards sit on pins 1, 3, 5, 7 and 9: 3V3, SDA, SCL, (GPIO4 unused), GND.
        parts.append(Part("rtc", "DS3231 real-time clock", "rtc", RTC_TERMINALS,
                          "keeps the time while the Pi is off", is_optional=not gpio.rtc))
    # Each side's ground rail goes to the GND pin of that side nearest the middle of its parts (short
    # wires, and a rail that does not cross the other parts), never to the clock's GND pin.
    rtc_pins = {pin for part in parts if part.kind == "rtc" for _, pin in part.terminals}
    ground_pins = {}
    for side in ("left", "right"):
        rows = [row(p.signal_pin) for p in parts if p.kind != "rtc" and side_of(p.signal_pin) == side]
        if rows:
            middle = sum(rows) / len(rows)
            candidates = [pin for pin, name in HEADER.items()
                          if name == "GND" and side_of(pin) == side and pin not in rtc_pins]
            ground_pins[side] = min(candidates, key=lambda pin: (abs(row(pin) - middle), pin))
    return Wiring(tuple(parts), ground_pins)


def _led_does(name: str) -> str:
    doing = [what for what, led, _, _ in indicator.VOCABULARY if led.startswith(f"{name} ")]
    return ", ".join(doing)


def _button_does(key: str, gpio: GpioConfig) -> str:
    if key == "pause_button":
        return f"press: pause or resume; hold {gpio.hold_to_shutdown_s:g} s: shut down safely"
    return "press: copy kept images to a USB stick"
