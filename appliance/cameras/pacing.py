"""Pacing a camera that cannot keep a frame rate itself, by holding its buffers between frames.

A camera without ``FrameDurationLimits`` (most USB webcams), or one that lists it and ignores it
(libcamera's virtual camera completes each request the moment it is queued), would fill every buffer
picamera2 hands back, as fast as it can, only for the frames to be thrown away. Instead each request
it completes is parked (picamera2's ``pre_callback`` acquires it) rather than going straight back,
so between frames the camera has no buffer to fill and rests. When the next frame is due,
``next_request`` asks picamera2 for the next completed request, then hands the parked ones back:
the first frame they are filled with is the one taken. picamera2 must keep no completed request of
its own for later (``queue=False`` in its configuration), so that the one taken is new.
"""

from __future__ import annotations

import threading
import time


class ParkedPacing:
    """``period_s`` between frames (0: a frame whenever one is asked for)."""

    def __init__(self, period_s: float):
        self.period_s = period_s
        self._lock = threading.Lock()
        self._parked: list = []
        self._last_s: float | None = None
        self._closed = False

    def park(self, request) -> None:
        """picamera2's pre_callback, for each completed request: kept from the camera until a frame is due."""
        with self._lock:
            if self._closed:
                return
            request.acquire()
            self._parked.append(request)

    def next_request(self, picam2, timeout_s: float, stopping: threading.Event):
        """The first request to complete once ``period_s`` has passed since the last one taken; None if
        ``stopping`` is set meanwhile. Raises picamera2's TimeoutError after ``timeout_s`` without one."""
        if self._last_s is not None and stopping.wait(self._last_s + self.period_s - time.monotonic()):
            return None
        job = picam2.capture_request(wait=False)  # asked first: the parked buffers fill as soon as they go back
        for request in self._take_parked():
            request.release()
        request = picam2.wait(job, timeout=timeout_s)
        self._last_s = time.monotonic()
        return request

    def close(self) -> list:
        """Stop parking; the parked requests, for the caller to release before picamera2 closes."""
        with self._lock:
            self._closed = True
        return self._take_parked()

    @property
    def parked(self) -> list:
        with self._lock:
            return list(self._parked)

    def _take_parked(self) -> list:
        with self._lock:
            parked, self._parked = self._parked, []
        return parked
