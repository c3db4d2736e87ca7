"""Live status: what the loop is doing, written about once a second to the runtime directory.

The runtime directory is a tmpfs (``/run/appliance`` on the device), never the SD card. The file is
``status.json``, replaced atomically so a reader (the web page, ``cat``) never sees half of it.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

STATUS_FILE = "status.json"
_WINDOW = 256  # frames over which fps and inference percentiles are computed


class LoopStats:
    """Counters the loop updates per frame: cheap to update, summarised only when status is written."""

    def __init__(self):
        self.counts: Counter = Counter()  # decisions and drops by reason
        self.frames_seen = 0
        self.classified = 0
        self._inference_ms = np.zeros(_WINDOW)
        self._frame_s = np.zeros(_WINDOW)
        # The detector stage's, when there is one: boxes by reason, and per frame looked at, the
        # detector's time and every inference the frame cost (detector runs and crops classified).
        self.boxes: Counter = Counter()
        self.detected = 0
        self._detector_ms = np.zeros(_WINDOW)
        self._inferences = np.zeros(_WINDOW)

    def frame(self, now_s: float) -> None:
        self._frame_s[self.frames_seen % _WINDOW] = now_s
        self.frames_seen += 1

    def inference(self, inference_ms: float) -> None:
        self._inference_ms[self.classified % _WINDOW] = inference_ms
        self.classified += 1

    def detection(self, detector_ms: float, detector_inferences: int, crops_classified: int) -> None:
        at = self.detected % _WINDOW
        self._detector_ms[at] = detector_ms
        self._inferences[at] = detector_inferences + crops_classified
        self.detected += 1

    def detector_summary(self) -> dict:
        """The detector's ms (p50, p95) and the inferences a frame cost (mean, most), over recent frames."""
        n = min(self.detected, _WINDOW)
        if not n:
            return {"ms": {"p50": None, "p95": None}, "inferences_per_frame": {"mean": None, "max": None},
                    "boxes_by_reason": dict(self.boxes)}
        p50, p95 = np.percentile(self._detector_ms[:n], [50, 95])
        inferences = self._inferences[:n]
        return {"ms": {"p50": round(float(p50), 2), "p95": round(float(p95), 2)},
                "inferences_per_frame": {"mean": round(float(inferences.mean()), 2), "max": int(inferences.max())},
                "boxes_by_reason": dict(self.boxes)}

    def fps(self, now_s: float) -> float:
        n = min(self.frames_seen, _WINDOW)
        if n < 2:
            return 0.0
        recent = self._frame_s[:n]
        oldest = recent.min()
        span_s = max(now_s, recent.max()) - oldest
        return round((n - 1) / span_s, 2) if span_s > 0 else 0.0

    def inference_percentiles(self) -> dict:
        n = min(self.classified, _WINDOW)
        if not n:
            return {"p50": None, "p95": None}
        p50, p95 = np.percentile(self._inference_ms[:n], [50, 95])
        return {"p50": round(float(p50), 2), "p95": round(float(p95), 2)}


def write_status(runtime_dir: Path, status: dict) -> None:
    """Replace ``status.json`` atomically (tmpfs: no fsync needed, a rename is enough)."""
    path = runtime_dir / STATUS_FILE
    tmp = runtime_dir / f".{STATUS_FILE}.tmp"
    tmp.write_text(json.dumps(status, indent=1, default=str))
    os.replace(tmp, path)


def read_status(runtime_dir: str | Path) -> dict | None:
    try:
        return json.loads((Path(runtime_dir) / STATUS_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


class StatusReporter:
    """A thread that writes ``snapshot()`` every ``interval_s`` and pings systemd's watchdog.

    The watchdog is pinged only while the loop's heartbeat is fresh, so a stuck loop is restarted.
    """

    def __init__(self, runtime_dir, interval_s, snapshot, notifier, heartbeat):
        self.runtime_dir = Path(runtime_dir)
        self.interval_s = interval_s
        self.snapshot = snapshot
        self.notifier = notifier
        self.heartbeat = heartbeat  # returns monotonic seconds of the loop's last sign of life
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="status", daemon=True)

    def start(self) -> None:
        self.runtime_dir.mkdir(parents=True, exist_ok=True)
        self._thread.start()

    def write_now(self) -> None:
        try:
            write_status(self.runtime_dir, self.snapshot())
        except OSError as e:
            log.warning("cannot write status to %s: %s", self.runtime_dir, e)

    def _run(self) -> None:
        watchdog_s = self.notifier.watchdog_interval_s
        period_s = min(self.interval_s, watchdog_s) if watchdog_s else self.interval_s
        while not self._stop.wait(period_s):
            self.write_now()
            if watchdog_s and time.monotonic() - self.heartbeat() < 2 * watchdog_s:
                self.notifier.watchdog()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.write_now()
