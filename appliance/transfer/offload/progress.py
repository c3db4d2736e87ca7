"""One offload at a time, and what it is doing: a lock and a progress file in the runtime directory
(a tmpfs), read by the page and the LEDs.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path

from appliance.errors import OffloadError

PROGRESS_FILE = "offload.json"
LOCK_FILE = "offload.lock"


class OffloadLock:
    """Only one offload at a time, across processes (the button, the page and udev may all ask)."""

    def __init__(self, runtime_dir: Path):
        Path(runtime_dir).mkdir(parents=True, exist_ok=True)
        self.path = Path(runtime_dir) / LOCK_FILE
        self._fd = None

    def __enter__(self):
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o660)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise OffloadError("an offload is already running") from None
        return self

    def __exit__(self, *exc):
        os.close(self._fd)


def is_offload_running(runtime_dir: Path) -> bool:
    """Another process holds the offload lock."""
    try:
        with OffloadLock(runtime_dir):
            return False
    except OffloadError:
        return True


class ProgressFile:
    """Live offload progress in the runtime dir (tmpfs) for the page and the LEDs."""

    def __init__(self, runtime_dir: Path, clock=time.monotonic):
        self.path = Path(runtime_dir) / PROGRESS_FILE
        self.clock = clock
        self.started_s = clock()

    def write(self, state: str, **fields) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps({"state": state, "updated_at": time.time(), **fields}))
        os.replace(tmp, self.path)

    def __call__(self, report, done_bytes, total_bytes, current) -> None:
        elapsed_s = max(self.clock() - self.started_s, 1e-6)
        rate = done_bytes / elapsed_s
        self.write("running", items_done=report.verified, items_total=report.total, bytes_done=done_bytes,
                   bytes_total=total_bytes,
                   rate_bytes_s=round(rate), eta_s=round((total_bytes - done_bytes) / rate, 1) if rate else None,
                   dest=report.dest)


def read_progress(runtime_dir) -> dict | None:
    try:
        return json.loads((Path(runtime_dir) / PROGRESS_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
