"""The panel controller: buttons in, LED patterns out, in the loop process (which owns the pins).

A thread reads button events from the queue the gpiozero callbacks fill, asks the appliance what
it is doing (loop state, keeps, storage, accelerator), feeds both to the pure ``indicator``, and
shows the patterns. The pause button: a short press pauses or resumes; held for
``gpio.hold_to_shutdown_s`` it shuts the device down (the loop drains and closes the database
first). The offload button, pressed, starts a USB offload, or says on the LEDs that there is no
stick; held for ``gpio.hold_for_hotspot_s`` it opens the camera's Wi-Fi hotspot (held again: back to
the network service's own choice).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable

from appliance.panel import indicator
from appliance.panel.gpio import OFFLOAD_HELD, OFFLOAD_PRESSED, OFFLOAD_RELEASED, PAUSE_HELD, PAUSE_PRESSED, PAUSE_RELEASED

log = logging.getLogger(__name__)

POLL_S = 0.05  # how often the appliance's state is looked at: a keep's flash starts this soon
_MODES = {"starting": "booting", "running": "watching", "paused": "paused", "stopped": "stopping"}
_OFFLOAD_EVENTS = {"running": "started", "done": "done", "failed": "failed"}


@dataclass(frozen=True)
class Actions:
    """What the panel can see of and do to the appliance; plain callables, so a test can pass its own."""

    loop_state: Callable[[], str]  # starting, running, paused, stopped
    kept: Callable[[], int]  # keeps written so far
    storage: Callable[[], str]  # ok, low, full
    fault: Callable[[], str | None]  # an indicator.FAULT_CODES key, or None
    pause: Callable[[], None]
    resume: Callable[[], None]
    shutdown: Callable[[], None]  # stop the loop, drain, close, power off: returns at once
    offload: Callable[[], str]  # "started", "no-stick" or "failed"
    offload_state: Callable[[], str | None] = lambda: None  # the offload process's progress: running, done, failed
    network_mode: Callable[[], str | None] = lambda: None  # the network service's mode (hotspot, connected, …)
    hotspot: Callable[[], str] = lambda: "auto"  # toggle the owner's hotspot request; returns the new one


class PanelController:
    def __init__(self, panel, events: queue.Queue, actions: Actions, clock=time.monotonic):
        self.panel = panel  # a gpio.GpioPanel, or None (no pins: the state is still kept for the status)
        self.events = events
        self.actions = actions
        self.clock = clock
        self.state = indicator.IndicatorState()
        self._kept = 0
        self._offload_state = None  # set at start: an old "done" in the progress file is not news
        self._is_held = False
        self._is_offload_held = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="panel", daemon=True)

    def start(self) -> None:
        self._offload_state = self.actions.offload_state()
        self._show()
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def show_fault(self, kind: str) -> None:
        """Show a fault's blink code now (called when the appliance cannot start)."""
        self._event("fault", kind)

    def describe(self) -> dict[str, str]:
        return {name: pattern.name for name, pattern in indicator.patterns(self.state, self.clock()).items()}

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._button(self.events.get(timeout=POLL_S))
            except queue.Empty:
                pass
            except Exception:  # a failing action must not take the LEDs and buttons down with it
                log.exception("panel: a button action failed")
            self._poll()

    def _button(self, event: str) -> None:
        if event == PAUSE_PRESSED:
            self._is_held = False
            self._event("holding", True)
        elif event == PAUSE_HELD:
            self._is_held = True
            log.warning("pause button held: shutting down")
            self._event("holding", False)
            self._event("mode", "stopping")
            self.actions.shutdown()
        elif event == PAUSE_RELEASED:
            self._event("holding", False)
            if not self._is_held:  # a short press
                if self.actions.loop_state() == "paused":
                    self.actions.resume()
                else:
                    self.actions.pause()
        elif event == OFFLOAD_PRESSED:
            self._is_offload_held = False
        elif event == OFFLOAD_HELD:
            self._is_offload_held = True
            log.info("offload button held: hotspot %s", self.actions.hotspot())
        elif event == OFFLOAD_RELEASED and not self._is_offload_held:  # a short press
            result = self.actions.offload()
            log.info("offload button: %s", result)
            self._event("offload", result)

    def _poll(self) -> None:
        """Turn what the appliance is doing into indicator events (only changes are events)."""
        if self.state.mode != "stopping":
            mode = _MODES.get(self.actions.loop_state(), "booting")
            if mode != self.state.mode:
                self._event("mode", mode)
        kept = self.actions.kept()
        if kept != self._kept:
            self._kept = kept
            self._event("kept")
        offload_state = self.actions.offload_state()
        if offload_state != self._offload_state:
            self._offload_state = offload_state
            if offload_state in _OFFLOAD_EVENTS:
                self._event("offload", _OFFLOAD_EVENTS[offload_state])
        is_hotspot = self.actions.network_mode() == "hotspot"
        if is_hotspot != self.state.is_hotspot:
            self._event("hotspot", is_hotspot)
        for name, value in (("storage", self.actions.storage()), ("fault", self.actions.fault())):
            if getattr(self.state, name) != value:
                self._event(name, value)
        self._show()

    def _event(self, name, value=None) -> None:
        self.state = indicator.handle(self.state, name, self.clock(), value)
        self._show()

    def _show(self) -> None:
        if self.panel is not None:
            self.panel.show(indicator.patterns(self.state, self.clock()))
