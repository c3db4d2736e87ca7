"""The camera's keeps come before the page: at the priorities the systemd units give the loop and the
page, the writer thread that stores each keep runs ahead of the page, and not ahead of the loop."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter

import numpy as np
from conftest import REPO

from appliance.config import StorageConfig
from appliance.pipeline.frames import ArrayImage, Classification, Keep
from appliance.pipeline.writer import KeepJob, ModelInfo, Writer
from appliance.storage.store import Store

SYSTEMD = REPO / "systemd"


def unit_nice(unit: str) -> int:
    """The unit's ``Nice=`` (0, the default, when it sets none)."""
    lines = (SYSTEMD / unit).read_text().splitlines()
    return next((int(line.split("=", 1)[1]) for line in lines if line.startswith("Nice=")), 0)


def writer_nice_in_a_thread_at(nice: int, data_dir) -> int:
    """Start a real writer from a thread at ``nice`` (Linux keeps a nice value per thread, and a new
    thread starts at its creator's: so this thread stands for appliance.service's main thread), store
    one keep, and read the writer thread's nice value while it still runs."""
    seen = {}

    def as_the_service():
        os.setpriority(os.PRIO_PROCESS, 0, nice)  # 0: the calling thread only, not the test process
        store = Store(data_dir)
        writer = Writer(store, StorageConfig(min_free_bytes=0), ModelInfo("m", "s"), Counter())
        writer.start()
        rgb = np.random.default_rng(1).integers(0, 255, (120, 160, 3), dtype=np.uint8)
        writer.submit(KeepJob(Keep("match", "Ara macao", 0.9), Classification((("Ara macao", 0.9),), 5.0, "cpu"),
                              ArrayImage(rgb), 1795000000.0, "frame.jpg"))
        deadline = time.monotonic() + 30
        while writer.kept < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        thread = next(t for t in threading.enumerate() if t.name == "writer")
        seen["writer"] = os.getpriority(os.PRIO_PROCESS, thread.native_id)
        writer.close()
        store.close()

    service = threading.Thread(target=as_the_service)
    service.start()
    service.join()
    return seen["writer"]


def test_the_writer_thread_runs_ahead_of_the_page_at_the_units_priorities(tmp_path):
    loop_nice, page_nice = unit_nice("appliance.service"), unit_nice("appliance-web.service")
    # Only root may go below 0; elsewhere both go up together, which keeps what the scheduler weighs.
    shift = 0 if os.geteuid() == 0 else max(0, -loop_nice)
    writer_nice = writer_nice_in_a_thread_at(loop_nice + shift, tmp_path / "data")
    assert writer_nice < page_nice + shift, \
        f"the writer runs at nice {writer_nice}, the page at {page_nice + shift}: keeps wait behind page views"
    assert writer_nice >= loop_nice + shift, "the writer must not run ahead of classifying the next frame"
