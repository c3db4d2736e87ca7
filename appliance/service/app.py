"""The composition root: builds config → classifier → policy → store → camera → writer → loop →
control channel, in that order, and closes them in reverse. Nothing else in the package constructs
backends.
"""

from __future__ import annotations

import logging
import os
import queue
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

from appliance.cameras import open_camera
from appliance.cameras.convert import crop_to_input
from appliance.config import Config, ModelConfig, to_toml
from appliance.errors import AcceleratorMissing, ApplianceError, CameraError, ModelError, RuntimeMissing, StorageError
from appliance.inference.catalog import keep_defaults
from appliance.inference.classifier import Classifier
from appliance.network.service import read_network, request_hotspot
from appliance.panel import indicator
from appliance.panel.controller import Actions, PanelController
from appliance.panel.gpio import open_panel
from appliance.pipeline.loop import Loop
from appliance.pipeline.detections import TileGrid, parse_grid
from appliance.pipeline.policy import KeepRule, Policy
from appliance.pipeline.tracks import Tracker, TrackRule
from appliance.pipeline.two_stage import DetectorStage
from appliance.pipeline.writer import ModelInfo, Writer, thumbnail_of_file
from appliance.service.control import CONTROL_SOCKET, ControlServer
from appliance.service.sdnotify import Notifier
from appliance.service.status import LoopStats, StatusReporter
from appliance.storage import retention
from appliance.storage.image_tags import ImageTags
from appliance.storage.outbox import configured_links
from appliance.storage.store import Store
from appliance.transfer import stick
from appliance.transfer.offload import is_offload_running, read_progress
from appliance.transfer.stick import find_stick

log = logging.getLogger(__name__)

# Which fault each error shows on the red LED (indicator.FAULT_CODES).
FAULTS = ((CameraError, "no-camera"), (AcceleratorMissing, "coral-missing"), (ModelError, "model"),
          (RuntimeMissing, "model"), (StorageError, "storage"))


def open_stage(config: Config, classifier, policy) -> DetectorStage | None:
    """The detector stage ``config.detector`` asks for, around ``classifier`` and ``policy``; None without one."""
    section = config.detector
    if not section.path:
        return None
    from appliance.inference.detector import Detector

    model = config.model
    detector = Detector.open(ModelConfig(path=section.path, labels=section.labels, num_threads=model.num_threads,
                                         accelerator=model.accelerator,
                                         on_accelerator_missing=model.on_accelerator_missing),
                             targets=section.targets, min_score=section.min_score)
    rule = TrackRule(max_gap_s=section.track_gap_s, min_frames=section.track_min_frames,
                     min_share=section.track_min_share, best_per_track=section.best_per_track)
    grid = TileGrid(*parse_grid(section.tiles)) if section.tiles else None
    log.info("detector %s (%s), targets %s at a score of %.2f or more%s; tracks kept after %d frames at %d %% agreement",
             detector.model_path.name, detector.backend, sorted(detector.targets) or "every label", section.min_score,
             f", on {section.tiles} tiles and the whole frame ({grid.inferences} inferences a frame)" if grid else "",
             section.track_min_frames, round(section.track_min_share * 100))
    return DetectorStage(detector, classifier, policy, Tracker(rule), crop_to_input, grid, section.classify_crops,
                         section.max_boxes)


def _power_off() -> None:
    subprocess.run(["systemctl", "poweroff"], check=False)


class Appliance:
    """One running appliance. Use as a context manager; ``run()`` blocks until the camera ends or
    ``stop()`` (from a signal handler or another thread).

    While it runs, the review page controls it through ``<runtime_dir>/control.sock`` (see
    control.py): ``pause``, ``resume``, ``status`` and ``offload``. ``offload``, if given, is called
    with the request's arguments and returns a dict for the reply; it must return quickly (start the
    copy elsewhere). Without it, an offload request is refused.
    """

    def __init__(self, config: Config, camera=None, notifier=None, offload=None, power_off=None,
                 usb_by_id=stick.USB_BY_ID, pin_factory=None):
        self.config = config
        self.notifier = notifier or Notifier()
        self.offload = offload
        self.power_off = power_off or _power_off
        self.usb_by_id = Path(usb_by_id)
        self.is_shutdown_requested = False
        self.started_s = time.monotonic()
        self._network_read_s, self._network_seen = float("-inf"), None
        self.camera_problem: str | None = None  # why the camera failed, for the status and the page
        self._stack = ExitStack()
        # The pins first: if anything after this fails, the LEDs can still say what.
        self.button_events: queue.Queue = queue.Queue()
        self.panel, self.panel_problem = open_panel(config.gpio, self.button_events, pin_factory)
        self.panel_controller = PanelController(self.panel, self.button_events, self._panel_actions())
        try:
            self._build(camera)
        except BaseException as e:
            self._stack.close()
            self._show_fault(e)
            self._close_panel()
            raise

    def _build(self, camera):
        config = self.config
        self.classifier = Classifier.open(config.model)
        entry = self.classifier.catalog_entry  # a damaged catalog model has already failed to open
        self.model = ModelInfo(entry.name if entry else Path(config.model.path).stem, self.classifier.model_sha256)
        self.rule = KeepRule.from_config(config.keep, keep_defaults(entry, config.keep, config.model.path, config.source))
        log.info("model %s (%s, %s), %d labels, keep rule: labels %s, ignore %s, min score %.2f",
                 self.model.name, self.classifier.backend, self.classifier.runtime, len(self.classifier.labels),
                 list(self.rule.labels), list(self.rule.ignore), self.rule.min_score)
        # With upload.evict_uploaded, an uploaded item is taken off the device, like a synced one.
        self.store = Store(config.storage.data_dir, is_uploaded_taken_off=config.upload.evict_uploaded)
        self._stack.callback(self.store.close)
        self.store.reconcile(thumbnail=lambda path: thumbnail_of_file(path, config.storage.thumbnail_px))
        policy = Policy(self.rule)
        self.stage = open_stage(config, self.classifier, policy)
        self.detector_model = self.stage and ModelInfo(
            self.stage.detector.catalog_entry.name if self.stage.detector.catalog_entry else Path(config.detector.path).stem,
            self.stage.detector.model_sha256)
        # With a detector, the lores stream is the detector's input (crops of the main image feed the classifier).
        self.camera = camera or open_camera(config.camera, self.stage.lores_size if self.stage else
                                            self.classifier.input_size)
        self.stats = LoopStats()
        self.writer = Writer(self.store, config.storage, self.model, self.stats.counts, self.detector_model,
                             configured_links(config), ImageTags.from_config(config))
        self.loop = Loop(self.camera, self.classifier, policy, self.writer, self.store, self.stats, self.stage)
        self.reporter = StatusReporter(config.status.runtime_dir, config.status.interval_s, self.status,
                                       self.notifier, lambda: self.loop.heartbeat_s)
        self.control = ControlServer(Path(config.status.runtime_dir) / CONTROL_SOCKET, {
            "pause": self._pause, "resume": self._resume, "status": self._loop_state, "offload": self._offload})

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def run(self) -> None:
        # Started in this order so that closing in reverse first stops the camera, then the buttons
        # and the control channel (no pause or offload arrives mid-shutdown, and the page learns at
        # once that the loop is gone), then drains the writer (every keep decided is written), writes
        # the final status, and closes the store.
        self.reporter.start()
        self._stack.callback(self.reporter.close)
        self.writer.start()
        self._stack.callback(self.writer.close)
        self.control.start()
        self._stack.callback(self.control.close)
        if self.panel is not None:  # without pins there is nothing to light and no button to read
            self.panel_controller.start()
            self._stack.callback(self.panel_controller.close)
        try:
            self.camera.start()
            self._stack.callback(self.camera.close)
            self.writer.tags = ImageTags.from_config(self.config, self.camera.model)  # its sensor's name, now known
            self.notifier.ready(f"watching with {self.camera.describe()}")
            log.info("watching: %s", self.camera.describe())
            self.loop.run()
        except ApplianceError as e:
            self.panel_controller.close()  # its polling would otherwise replace the fault's code
            is_shown = self._light_fault(e)  # the LEDs first: a status naming the problem shows its code too
            if isinstance(e, CameraError):  # the status (and the page) says why while the LEDs show it
                self.camera_problem = str(e)
            if is_shown:
                time.sleep(self.config.gpio.fault_display_s)
            raise

    def stop(self) -> None:
        self.notifier.stopping()
        self.loop.stop()

    def request_shutdown(self) -> None:
        """Stop, and once everything is closed (the writer drained, the database closed), power off."""
        self.is_shutdown_requested = True
        self.stop()

    def close(self) -> None:
        """Stop the camera and the controls, drain the writer, write the last status, close the
        database; then power off if that was asked for; then let go of the pins."""
        try:
            self._stack.close()
            if self.is_shutdown_requested:
                self.is_shutdown_requested = False
                log.warning("powering off")
                self.power_off()
        finally:
            self._close_panel()

    def _close_panel(self) -> None:
        self.panel_controller.close()
        if self.panel is not None:
            self.panel.close()
            self.panel = None

    def _show_fault(self, error: BaseException) -> None:
        """Show the error's blink code for ``gpio.fault_display_s`` (the caller then gives up)."""
        if self._light_fault(error):
            time.sleep(self.config.gpio.fault_display_s)

    def _light_fault(self, error: BaseException) -> bool:
        """Set the LEDs to the error's blink code; False if it has none or there are no pins."""
        kind = next((kind for cls, kind in FAULTS if isinstance(error, cls)), None)
        if kind is None or self.panel is None:
            return False
        log.error("LEDs: showing the %s fault (red: %d blinks) for %g s", kind, indicator.FAULT_CODES[kind],
                  self.config.gpio.fault_display_s)
        self.panel_controller.show_fault(kind)
        return True

    def _panel_actions(self) -> Actions:
        runtime = self.config.status.runtime_dir
        return Actions(loop_state=lambda: self.loop.state, kept=lambda: self.writer.kept,
                       offload_state=lambda: (read_progress(runtime) or {}).get("state"),
                       storage=self.storage_level,
                       fault=lambda: "coral-missing" if self.classifier.accelerator.is_degraded else None,
                       pause=lambda: self.loop.pause(), resume=lambda: self.loop.resume(),
                       shutdown=self.request_shutdown, offload=self._offload_button,
                       network_mode=lambda: (self._network() or {}).get("mode"), hotspot=self._hotspot_button)

    def _network(self) -> dict | None:
        """The network service's network.json, read at most once a second (the panel asks 20 times)."""
        now_s = time.monotonic()
        if now_s - self._network_read_s >= 1.0:
            self._network_read_s, self._network_seen = now_s, read_network(self.config.status.runtime_dir)
        return self._network_seen

    def _hotspot_button(self) -> str:
        """A long press: open the hotspot, or, when the owner had opened it, back to automatic."""
        request = "auto" if (self._network() or {}).get("request") == "on" else "on"
        request_hotspot(self.config.status.runtime_dir, request)
        self._network_read_s = float("-inf")
        return request

    def _offload_button(self) -> str:
        if find_stick(self.usb_by_id) is None:
            return "no-stick"
        try:
            self._offload({"trigger": "button"})
        except ApplianceError as e:
            log.error("offload button: %s", e)
            return "failed"
        return "started"

    def storage_level(self, free_bytes: int | None = None) -> str:
        storage = self.config.storage
        if self.writer.is_full:
            return "full"
        free_bytes = self.store.free_bytes() if free_bytes is None else free_bytes
        return retention.storage_level(self.store.used_bytes, storage.quota_bytes, free_bytes, storage.min_free_bytes)

    def _pause(self, _args: dict) -> dict:
        self.loop.pause()
        return self._loop_state()

    def _resume(self, _args: dict) -> dict:
        self.loop.resume()
        return self._loop_state()

    def _loop_state(self, _args: dict | None = None) -> dict:
        return {"state": self.loop.state, "is_paused": self.loop.is_paused}

    def _offload(self, args: dict) -> dict:
        return (self.offload or self._start_offload)(args)

    def _start_offload(self, _args: dict) -> dict:
        """Start ``appliance offload`` for the stick that is plugged in, in its own process: under
        systemd as appliance-offload@DEV.service (which may mount), elsewhere as a child process."""
        device = find_stick(self.usb_by_id)
        if device is None:
            raise ApplianceError("no USB stick is plugged in (FAT32, exFAT or ext4)")
        runtime = Path(self.config.status.runtime_dir)
        if (read_progress(runtime) or {}).get("state") == "running" and is_offload_running(runtime):
            raise ApplianceError("an offload is already running")
        if os.environ.get("INVOCATION_ID"):  # run by systemd: the unit has the privileges to mount
            subprocess.run(["systemctl", "start", "--no-block", f"appliance-offload@{Path(device).name}.service"],
                           check=True, capture_output=True)
        else:
            config_path = runtime / "offload.toml"
            config_path.write_text(to_toml(self.config))
            subprocess.Popen([sys.executable, "-m", "appliance", "offload", "--config", str(config_path),
                              "--device", device], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
        log.info("offload of %s started", device)
        return {"started": True, "device": device}

    def status(self) -> dict:
        """The live status snapshot (see status.py)."""
        now_s = time.monotonic()
        stats, store, storage = self.stats, self.store, self.config.storage
        free_bytes = store.free_bytes()
        counts = dict(stats.counts)
        kept = self.writer.kept
        return {
            "state": self.loop.state,
            "updated_at": time.time(),
            "uptime_s": round(now_s - self.started_s, 1),
            "fps": stats.fps(now_s),
            "inference_ms": stats.inference_percentiles(),
            "frames": {"seen": stats.frames_seen, "classified": stats.classified, "kept": kept,
                       "discarded": stats.frames_seen - sum(counts.get(r, 0) for r in ("match", "audit")),
                       "by_reason": counts},
            "last_keep": self.writer.last_keep,
            "storage": {"data_dir": str(store.data_dir), "used_bytes": store.used_bytes, "free_bytes": free_bytes,
                        "quota_bytes": storage.quota_bytes, "min_free_bytes": storage.min_free_bytes,
                        "when_full": storage.when_full, "writer_backlog": self.writer.backlog,
                        "level": self.storage_level(free_bytes)},
            "camera": {"backend": self.config.camera.backend, "description": self.camera.describe(),
                       "problem": self.camera_problem},
            "model": {"name": self.model.name, "path": str(self.classifier.model_path), "sha256": self.model.sha256,
                      "input_size": list(self.classifier.input_size), "runtime": self.classifier.runtime,
                      "labels": len(self.classifier.labels)},
            "detector": self._detector_status(),
            "accelerator": {"requested": self.classifier.accelerator.requested,
                            "backend": self.classifier.backend, "problem": self.classifier.accelerator.problem,
                            "is_degraded": self.classifier.accelerator.is_degraded},
            "network": self._network(),
            "leds": {"pins": self._pins_in_use(), "problem": self.panel_problem,
                     **(self.panel_controller.describe() if self.panel else {})},
        }

    def _detector_status(self) -> dict | None:
        if self.stage is None:
            return None
        detector, config = self.stage.detector, self.config.detector
        grid = self.stage.grid
        return {"name": self.detector_model.name, "path": str(detector.model_path), "sha256": self.detector_model.sha256,
                "input_size": list(detector.input_size), "targets": sorted(detector.targets),
                "min_score": detector.min_score, "tiles": config.tiles or None,
                "detector_inferences": grid.inferences if grid else 1, "classify_crops": config.classify_crops,
                "open_tracks": len(self.stage.tracker.open_tracks), **self.stats.detector_summary()}

    def _pins_in_use(self) -> str:
        if self.panel is None:
            return "none"
        return "mock" if self.config.gpio.pin_factory == "mock" else "gpio"
