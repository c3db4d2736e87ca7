"""The LED state machine with plain values: events and times in, one pattern per LED out."""

from __future__ import annotations

import pytest

from appliance.panel import indicator as ind
from appliance.panel.indicator import IndicatorState, handle, patterns


def after(*events, now_s=100.0):
    state = IndicatorState()
    for event in events:
        name, value = event if isinstance(event, tuple) else (event, None)
        state = handle(state, name, now_s, value)
    return state


def test_booting_pulses_the_status_led_slowly_and_the_others_are_dark():
    assert patterns(IndicatorState(), 0.0) == {"status": ind.SLOW_PULSE, "keep": ind.OFF, "warning": ind.OFF}


@pytest.mark.parametrize("mode, pattern", [("watching", ind.HEARTBEAT), ("paused", ind.STEADY)])
def test_the_status_led_says_watching_or_paused(mode, pattern):
    assert patterns(after(("mode", mode)), 100.0)["status"] == pattern


def test_a_keep_flashes_the_keep_led_once_then_it_goes_dark():
    state = after(("mode", "watching"), "kept", now_s=100.0)
    assert patterns(state, 100.0)["keep"] == ind.STEADY
    assert patterns(state, 100.0 + ind.KEEP_FLASH_S - 0.01)["keep"] == ind.STEADY
    assert patterns(state, 100.0 + ind.KEEP_FLASH_S)["keep"] == ind.OFF


@pytest.mark.parametrize("level, pattern", [("ok", ind.OFF), ("low", ind.SLOW_WARNING), ("full", ind.STEADY)])
def test_the_warning_led_says_how_full_storage_is(level, pattern):
    assert patterns(after(("storage", level)), 100.0)["warning"] == pattern


@pytest.mark.parametrize("kind, blinks", [("no-camera", 2), ("model", 3), ("coral-missing", 4), ("storage", 5)])
def test_each_fault_has_its_own_blink_code_that_beats_a_storage_warning(kind, blinks):
    pattern = patterns(after(("storage", "full"), ("fault", kind)), 100.0)["warning"]
    assert pattern.name == f"blink code {blinks}"
    assert sum(1 for is_on, _ in pattern.steps if is_on) == blinks


def test_offloading_pulses_fast_then_done_holds_steady_for_a_few_seconds():
    state = after(("mode", "watching"), ("offload", "started"))
    assert patterns(state, 100.0)["status"] == ind.FAST_PULSE
    state = handle(state, "offload", 200.0, "done")
    assert patterns(state, 200.0)["status"] == ind.STEADY
    assert patterns(state, 200.0 + ind.OFFLOAD_DONE_S)["status"] == ind.HEARTBEAT


def test_a_failed_offload_blinks_red_fast_for_a_while_then_the_storage_state_returns():
    state = after(("storage", "low"), ("offload", "started"))
    state = handle(state, "offload", 200.0, "failed")
    assert patterns(state, 200.0)["warning"] == ind.FAST_PULSE and patterns(state, 200.0)["status"] != ind.FAST_PULSE
    assert patterns(state, 200.0 + ind.OFFLOAD_FAILED_S)["warning"] == ind.SLOW_WARNING


def test_no_stick_is_three_fast_red_blinks():
    state = after(("mode", "watching"), ("offload", "no-stick"), now_s=100.0)
    assert patterns(state, 100.0)["warning"] == ind.FAST_PULSE
    assert ind.NO_STICK_S == pytest.approx(3 * sum(s for _, s in ind.FAST_PULSE.steps))
    assert patterns(state, 100.0 + ind.NO_STICK_S)["warning"] == ind.OFF


def test_holding_the_pause_button_gives_feedback_and_shutting_down_lights_everything():
    held = after(("mode", "watching"), ("holding", True))
    assert patterns(held, 100.0)["status"] == ind.HOLD_FEEDBACK
    assert patterns(handle(held, "holding", 101.0, False), 101.0)["status"] == ind.HEARTBEAT
    stopping = after(("fault", "model"), ("mode", "stopping"))
    assert patterns(stopping, 100.0) == dict.fromkeys(ind.LEDS, ind.STEADY)


def test_an_unknown_event_is_a_programming_error():
    with pytest.raises(ValueError):
        handle(IndicatorState(), "sparkle", 0.0)


# How to get into each situation the documented vocabulary names.
SITUATIONS = {
    "booting": [], "watching": [("mode", "watching")], "paused": [("mode", "paused")],
    "watching, with its own Wi-Fi hotspot open": [("mode", "watching"), ("hotspot", True)],
    "kept a frame": [("mode", "watching"), "kept"],
    "storage low": [("storage", "low")], "storage full: keeping stopped": [("storage", "full")],
    **{f"fault: {ind.FAULT_NAMES[k]}": [("fault", k)] for k in ind.FAULT_CODES},
    "offloading to USB": [("offload", "started")], "offload done": [("offload", "started"), ("offload", "done")],
    "offload failed": [("offload", "started"), ("offload", "failed")],
    "offload button, but no USB stick": [("offload", "no-stick")],
    "pause button held: keep holding to shut down": [("mode", "watching"), ("holding", True)],
    "shutting down (safe to unplug once all are dark)": [("mode", "stopping")],
}


@pytest.mark.parametrize("what, led, pattern", [(w, l, p) for w, l, p, _ in ind.VOCABULARY], ids=[w for w, *_ in ind.VOCABULARY])
def test_each_documented_situation_shows_its_documented_pattern(what, led, pattern):
    shown = patterns(after(*SITUATIONS[what]), 100.0)
    leds = ind.LEDS if led == "all three" else (led.split()[0],)
    assert all(shown[name] == pattern for name in leds)
