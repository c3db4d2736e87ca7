"""What the LEDs say: a pure state machine from appliance events to one pattern per LED.

No I/O and no clock: events and the time (monotonic seconds) are passed in. Short-lived signals (a
keep, "no USB stick", "offload done") are timed states, so what each LED shows is always a function
of the state and the time. The gpiozero adapter (``gpio.py``) plays the patterns; ``VOCABULARY`` is the documented table (README, ``hardware/``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

LEDS = ("status", "keep", "warning")  # green, white, red


@dataclass(frozen=True)
class Pattern:
    """A named sequence of ``(is_on, seconds)`` steps, repeated; ``seconds`` None holds the step."""

    name: str
    steps: tuple[tuple[bool, float | None], ...]


OFF = Pattern("off", ((False, None),))
STEADY = Pattern("steady", ((True, None),))
SLOW_PULSE = Pattern("slow pulse", ((True, 1.0), (False, 1.0)))
HEARTBEAT = Pattern("heartbeat", ((True, 0.1), (False, 1.9)))
DOUBLE_HEARTBEAT = Pattern("double heartbeat", ((True, 0.1), (False, 0.2), (True, 0.1), (False, 1.6)))
FAST_PULSE = Pattern("fast pulse", ((True, 0.1), (False, 0.1)))
HOLD_FEEDBACK = Pattern("very fast pulse", ((True, 0.05), (False, 0.05)))
SLOW_WARNING = Pattern("slow warning blink", ((True, 0.5), (False, 2.5)))

FAULT_CODES = {"no-camera": 2, "model": 3, "coral-missing": 4, "storage": 5}
FAULT_NAMES = {"no-camera": "no camera", "model": "model error", "coral-missing": "Coral missing (required)",
               "storage": "storage error"}


def blink_code(blinks: int) -> Pattern:
    """``blinks`` short blinks, then a pause: a number a person can count."""
    return Pattern(f"blink code {blinks}", ((True, 0.2), (False, 0.3)) * (blinks - 1) + ((True, 0.2), (False, 1.5)))


KEEP_FLASH_S = 0.15
NO_STICK_S = 0.6  # three fast red blinks
OFFLOAD_DONE_S = 5.0
OFFLOAD_FAILED_S = 10.0


@dataclass(frozen=True)
class IndicatorState:
    mode: str = "booting"  # booting, watching, paused, stopping
    storage: str = "ok"  # ok, low, full
    fault: str | None = None  # a FAULT_CODES key
    is_offloading: bool = False
    is_holding: bool = False  # the pause button is held down (shutdown feedback)
    is_hotspot: bool = False  # the camera's own Wi-Fi hotspot is open
    keep_until_s: float = float("-inf")
    no_stick_until_s: float = float("-inf")
    offload_done_until_s: float = float("-inf")
    offload_failed_until_s: float = float("-inf")


def handle(state: IndicatorState, event: str, now_s: float, value=None) -> IndicatorState:
    """The state after ``event`` (mode, kept, storage, fault, holding, hotspot or offload) happened at ``now_s``."""
    if event == "mode":
        return replace(state, mode=value)
    if event == "kept":
        return replace(state, keep_until_s=now_s + KEEP_FLASH_S)
    if event == "storage":
        return replace(state, storage=value)
    if event == "fault":
        return replace(state, fault=value)
    if event == "holding":
        return replace(state, is_holding=bool(value))
    if event == "hotspot":
        return replace(state, is_hotspot=bool(value))
    if event == "offload":
        if value == "started":
            return replace(state, is_offloading=True, offload_failed_until_s=float("-inf"))
        if value == "done":
            return replace(state, is_offloading=False, offload_done_until_s=now_s + OFFLOAD_DONE_S)
        if value == "failed":
            return replace(state, is_offloading=False, offload_failed_until_s=now_s + OFFLOAD_FAILED_S)
        if value == "no-stick":
            return replace(state, no_stick_until_s=now_s + NO_STICK_S)
    raise ValueError(f"unknown indicator event {event!r} = {value!r}")



def patterns(state: IndicatorState, now_s: float) -> dict[str, Pattern]:
    """One pattern per LED, by precedence: what matters most to a person in the field wins."""
    if state.mode == "stopping":
        return dict.fromkeys(LEDS, STEADY)
    return {"status": _status(state, now_s), "keep": STEADY if now_s < state.keep_until_s else OFF,
            "warning": _warning(state, now_s)}


def _status(state, now_s):
    if state.is_holding:
        return HOLD_FEEDBACK
    if state.is_offloading:
        return FAST_PULSE
    if now_s < state.offload_done_until_s:
        return STEADY
    watching = DOUBLE_HEARTBEAT if state.is_hotspot else HEARTBEAT
    return {"booting": SLOW_PULSE, "watching": watching, "paused": STEADY}.get(state.mode, OFF)


def _warning(state, now_s):
    if state.fault:
        return blink_code(FAULT_CODES[state.fault])
    if now_s < state.no_stick_until_s:
        return FAST_PULSE
    if now_s < state.offload_failed_until_s:
        return FAST_PULSE
    return {"full": STEADY, "low": SLOW_WARNING}.get(state.storage, OFF)


# The documented vocabulary: (what the appliance is doing, LED, pattern, timing in words).
VOCABULARY = (
    ("booting", "status (green)", SLOW_PULSE, "1 s on, 1 s off"),
    ("watching", "status (green)", HEARTBEAT, "a 0.1 s flash every 2 s"),
    ("watching, with its own Wi-Fi hotspot open", "status (green)", DOUBLE_HEARTBEAT, "two 0.1 s flashes every 2 s"),
    ("paused", "status (green)", STEADY, "on"),
    ("kept a frame", "keep (white)", STEADY, f"one {KEEP_FLASH_S} s flash"),
    ("storage low", "warning (red)", SLOW_WARNING, "0.5 s on, 2.5 s off"),
    ("storage full: keeping stopped", "warning (red)", STEADY, "on"),
    *((f"fault: {FAULT_NAMES[kind]}", "warning (red)", blink_code(n), f"{n} short blinks, then a pause")
      for kind, n in FAULT_CODES.items()),
    ("offloading to USB", "status (green)", FAST_PULSE, "0.1 s on, 0.1 s off"),
    ("offload done", "status (green)", STEADY, f"on for {OFFLOAD_DONE_S:g} s"),
    ("offload failed", "warning (red)", FAST_PULSE, f"0.1 s on, 0.1 s off for {OFFLOAD_FAILED_S:g} s"),
    ("offload button, but no USB stick", "warning (red)", FAST_PULSE, "three fast blinks"),
    ("pause button held: keep holding to shut down", "status (green)", HOLD_FEEDBACK, "0.05 s on, 0.05 s off"),
    ("shutting down (safe to unplug once all are dark)", "all three", STEADY, "on, then off"),
)


def vocabulary_markdown() -> str:
    """The LED table for the README and hardware/, generated so it cannot drift from the code."""
    rows = ["| the appliance is… | LED | pattern |", "| --- | --- | --- |"]
    rows += [f"| {what} | {led} | {timing} |" for what, led, _, timing in VOCABULARY]
    return "\n".join(rows) + "\n"
