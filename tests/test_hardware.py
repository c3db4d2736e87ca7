"""hardware/ stays true: its pin map and wiring diagram are the ones generated from the code's pins."""

from __future__ import annotations

import re
import sys
import xml.etree.ElementTree as ET

import pytest
from conftest import REPO

from appliance.config import I2C_PINS, PIN_KEYS, GpioConfig
from appliance.panel.indicator import vocabulary_markdown

HARDWARE = REPO / "hardware"
SVG = "{http://www.w3.org/2000/svg}"
# Read off the Raspberry Pi pinout, not computed: BCM number → physical pin.
KNOWN_PHYSICAL_PINS = {17: 11, 27: 13, 22: 15, 5: 29, 6: 31, 2: 3, 3: 5}


sys.path.insert(0, str(HARDWARE))  # hardware/ is a folder of scripts, not a package
import make_docs  # noqa: E402
import wiring  # noqa: E402

PINMAP = (HARDWARE / "pinmap.md").read_text(encoding="utf-8")
WIRING_SVG = (HARDWARE / "wiring.svg").read_text(encoding="utf-8")
USED_PINS = wiring.wiring(GpioConfig()).used_pins()


def _pin_map_rows() -> list[dict[str, str]]:
    """The first table of pinmap.md (BCM, physical pin, part, colour, resistor, to) as dicts."""
    lines = PINMAP.splitlines()
    start = lines.index("| BCM | physical pin | part | colour | resistor | to |")
    header = [cell.strip() for cell in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(header, (cell.strip() for cell in line.strip("|").split("|")))))
    return rows


def test_the_pin_map_is_the_one_generated_from_the_code_defaults():
    assert PINMAP == make_docs.pinmap_markdown(GpioConfig()), "run `python hardware/make_docs.py`"


def test_the_wiring_diagram_is_the_one_generated_from_the_code_defaults():
    assert WIRING_SVG == make_docs.wiring_svg(GpioConfig()), "run `python hardware/make_docs.py`"


def test_moving_a_default_pin_without_regenerating_would_fail_the_comparisons_above():
    moved = GpioConfig(status_led=18)
    assert make_docs.pinmap_markdown(moved) != PINMAP
    assert make_docs.wiring_svg(moved) != WIRING_SVG


def test_the_generator_gives_the_same_bytes_every_time():
    assert make_docs.pinmap_markdown() == make_docs.pinmap_markdown()
    assert make_docs.wiring_svg() == make_docs.wiring_svg()


def test_the_generator_check_mode_finds_the_committed_files_up_to_date():
    assert make_docs.main(["--check"]) == 0


@pytest.mark.parametrize("bcm, physical", sorted(KNOWN_PHYSICAL_PINS.items()))
def test_the_header_table_puts_each_known_gpio_at_its_physical_pin(bcm, physical):
    assert wiring.physical_pin(bcm) == physical


def test_the_header_table_has_every_gpio_once_and_the_power_pins_in_their_places():
    names = wiring.HEADER
    assert sorted(names) == list(range(1, 41))
    assert sorted(n for n in names.values() if isinstance(n, int)) == list(range(28))
    assert [p for p, n in names.items() if n == "3V3"] == [1, 17]
    assert [p for p, n in names.items() if n == "5V"] == [2, 4]
    assert [p for p, n in names.items() if n == "GND"] == [6, 9, 14, 20, 25, 30, 34, 39]


@pytest.mark.parametrize("key", PIN_KEYS)
def test_every_default_pin_is_in_the_pin_map_at_its_physical_pin(key):
    bcm = getattr(GpioConfig(), key)
    rows = [row for row in _pin_map_rows() if f"`gpio.{key}`" in row["part"]]
    assert len(rows) == 1, f"gpio.{key} should have one row in hardware/pinmap.md"
    assert rows[0]["BCM"] == str(bcm)
    assert rows[0]["physical pin"] == str(wiring.physical_pin(bcm))
    if bcm in KNOWN_PHYSICAL_PINS:
        assert rows[0]["physical pin"] == str(KNOWN_PHYSICAL_PINS[bcm])


def test_the_pin_map_puts_the_clock_on_the_i2c_pins():
    rows = {row["part"].split(" (")[0]: row for row in _pin_map_rows() if row["part"].startswith("DS3231")}
    sda, scl = I2C_PINS
    assert (rows["DS3231 SDA"]["BCM"], rows["DS3231 SDA"]["physical pin"]) == (str(sda), str(KNOWN_PHYSICAL_PINS[sda]))
    assert (rows["DS3231 SCL"]["BCM"], rows["DS3231 SCL"]["physical pin"]) == (str(scl), str(KNOWN_PHYSICAL_PINS[scl]))
    assert wiring.HEADER[int(rows["DS3231 VCC"]["physical pin"])] == "3V3"
    assert wiring.HEADER[int(rows["DS3231 GND"]["physical pin"])] == "GND"


def test_every_led_row_names_a_resistor_that_keeps_the_pin_at_or_under_8_ma():
    leds = [row for row in _pin_map_rows() if " LED " in row["part"]]
    assert len(leds) == 3
    for row in leds:
        led = wiring.LED_TYPES[row["colour"]]
        ohm = int(row["resistor"].removesuffix(" Ω"))
        assert wiring.led_current_ma(led, ohm, led.vf_lowest_v) <= 8.0, row
        assert wiring.led_current_ma(led, ohm, led.vf_typical_v) >= 2.0, f"{row['part']} would be too dim"


def test_the_buttons_go_to_ground_without_a_resistor():
    buttons = [row for row in _pin_map_rows() if "button" in row["part"]]
    assert len(buttons) == 2
    for row in buttons:
        assert row["resistor"].startswith("none") and "GND rail" in row["to"]
    ground = [row for row in _pin_map_rows() if row["part"] == "GND rail"]
    assert [wiring.HEADER[int(row["physical pin"])] for row in ground] == ["GND"]


def test_the_pin_map_vocabulary_is_the_one_generated_from_the_indicator():
    block = re.search(re.escape(make_docs.VOCABULARY_START) + r"\n(.*?)" + re.escape(make_docs.VOCABULARY_END),
                      PINMAP, re.S)
    assert block, "hardware/pinmap.md lost its led-vocabulary markers"
    assert block.group(1) == vocabulary_markdown()


def test_the_wiring_diagram_is_standalone_svg_with_presentation_attributes_only():
    root = ET.fromstring(WIRING_SVG.encode("utf-8"))
    assert root.tag == f"{SVG}svg"
    assert root.get("viewBox") and root.get("width") and root.get("height")
    tags = {element.tag.removeprefix(SVG) for element in root.iter()}
    assert not tags & {"style", "script", "foreignObject", "image"}
    assert not [element for element in root.iter() if "style" in element.attrib
                or any(name.startswith("on") for name in element.attrib)]


def test_the_wiring_diagram_draws_all_40_header_pins_with_their_numbers():
    texts = {element.text for element in ET.fromstring(WIRING_SVG.encode("utf-8")).iter(f"{SVG}text")}
    assert {str(pin) for pin in range(1, 41)} <= texts


def test_every_default_pin_is_among_the_pins_the_diagram_wires():
    for key in PIN_KEYS:
        assert KNOWN_PHYSICAL_PINS[getattr(GpioConfig(), key)] in USED_PINS, key


@pytest.mark.parametrize("pin", USED_PINS)
def test_the_wiring_diagram_has_a_labelled_wire_for_each_used_pin(pin):
    root = ET.fromstring(WIRING_SVG.encode("utf-8"))
    groups = [g for g in root.iter(f"{SVG}g") if g.get("id") == f"wire-pin-{pin}"]
    assert len(groups) == 1, f"physical pin {pin} should have one wire"
    wire = groups[0]
    assert wire.findall(f"{SVG}line"), f"physical pin {pin} has no line"
    labels = [t.text for t in wire.iter(f"{SVG}text")]
    assert any(label.startswith(wiring.pin_name(pin)) for label in labels), labels
    assert wire.find(f"{SVG}title").text.startswith(f"Physical pin {pin} ")


def test_every_pin_the_hardware_readme_names_is_where_the_header_table_puts_it():
    readme = (HARDWARE / "README.md").read_text(encoding="utf-8")
    named = {(int(bcm), int(pin)) for bcm, pin in re.findall(r"BCM (\d+), (?:physical )?pin (\d+)", readme)}
    assert named, "hardware/README.md names no pins"
    assert all(wiring.physical_pin(bcm) == pin for bcm, pin in named), named
    assert {getattr(GpioConfig(), key) for key in PIN_KEYS} <= {bcm for bcm, _ in named}


def test_the_parts_list_has_each_resistor_value_in_the_number_the_pin_map_needs():
    parts = (HARDWARE / "parts.md").read_text(encoding="utf-8")
    needed: dict[int, int] = {}
    for part in wiring.wiring(GpioConfig()).parts:
        if part.resistor_ohm:
            needed[part.resistor_ohm] = needed.get(part.resistor_ohm, 0) + 1
    for ohm, count in needed.items():
        assert f"| {count} | {ohm} Ω resistor" in parts, f"parts.md should list {count} × {ohm} Ω"
