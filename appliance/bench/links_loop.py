"""The loop with the links on (``appliance bench --links``): what MQTT and upload cost the camera.

The 10 %-match loop of ``classify`` (one frame in ten kept as a 1920×1080 JPEG) runs in pairs, links off
then on, in alternation. On, the config names an MQTT broker and an S3-compatible store (a real
Mosquitto and SeaweedFS started here), every keep is queued for both in the writer's transaction, and
``appliance links`` runs beside the loop as its unit runs it (its own process, nice 15), sending while
the loop keeps. The broker and the store stand in for machines elsewhere on the network, so they run
as ``SCHED_IDLE`` (every thread): they get only CPU the camera leaves, as if it were not the camera's. Each pair's ratio is the on run's frames/s ÷ the off run's;
the figure is their median (goal ≥ 0.97), with how far behind the links were when the loop ended and
how long they took to send the rest (they keep up, or they do not).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

from appliance.bench.common import interleaved
from appliance.config import to_toml
from appliance.errors import BenchmarkError

LINKS_NICE = 15  # appliance-links.service's Nice=
CONNECT_S = 30.0
DRAIN_S = 300.0


class Servers:
    """A Mosquitto and a SeaweedFS (with a bucket) on 127.0.0.1, in ``root``, as ``SCHED_IDLE``."""

    def __init__(self, root: Path):
        from appliance.bench.mosquitto import Broker
        from appliance.bench.seaweed import SeaweedServer

        self.broker = Broker(root / "broker").start()
        self.store = SeaweedServer(root / "seaweed")
        try:
            self.store.start()
            self.bucket = self.store.create_bucket("bench-links-loop")
        except BaseException:
            self.close()
            raise
        for process in (self.broker.process, self.store.process):  # and their threads: SCHED_IDLE is per thread
            for thread in Path(f"/proc/{process.pid}/task").iterdir():
                os.sched_setscheduler(int(thread.name), os.SCHED_IDLE, os.sched_param(0))
        self.runs = 0

    def links_config(self, config):
        """``config`` with MQTT and upload on, each run to a prefix of its own."""
        self.runs += 1
        return config.replace(mqtt={"url": self.broker.url, "status_interval_s": 5.0},
                              upload={"endpoint": self.store.endpoint, "bucket": self.bucket,
                                      "access_key": self.store.access_key, "secret_key": self.store.secret_key,
                                      "prefix": f"run-{self.runs}"})

    def close(self) -> None:
        self.store.stop()
        self.broker.stop()


@contextlib.contextmanager
def links_process(config, folder: Path):
    """``appliance links`` on ``config`` in a process of its own at nice 15, connected to both before
    this yields; yields a function that waits until the outbox is empty and says how it went."""
    path = folder / "links.toml"
    path.write_text(to_toml(config))
    with open(folder / "links.log", "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "appliance", "links", "--config", str(path)],
                                   stdout=subprocess.DEVNULL, stderr=log, preexec_fn=lambda: os.nice(LINKS_NICE))
    state_file = Path(config.status.runtime_dir) / "links.json"
    try:
        _wait_for(lambda: _connected(state_file), CONNECT_S, process, folder, "connect to the broker and the store")
        yield partial(_drain, state_file, process, folder)
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _connected(state_file: Path) -> bool:
    links = _read(state_file).get("links", {})
    return bool(links) and all(link.get("connected") for link in links.values())


def _read(state_file: Path) -> dict:
    try:
        return json.loads(state_file.read_text())
    except (OSError, ValueError):
        return {}


def _drain(state_file: Path, process, folder: Path) -> dict:
    """After the loop: how many entries waited, and how long the links took to send them."""
    time.sleep(1.5)  # the links service writes its state every second: one written after the loop ended
    queued_at_end = _read(state_file).get("queued")
    started = time.monotonic()
    _wait_for(lambda: _read(state_file).get("queued") == 0, DRAIN_S, process, folder, "send everything the loop kept")
    links = _read(state_file)["links"]
    return {"queued_when_the_loop_ended": queued_at_end, "drained_after_s": round(time.monotonic() - started, 1),
            "sent": {name: link["sent"] for name, link in links.items()},
            "failed": {name: link["failed"] for name, link in links.items()}}


def _wait_for(condition, timeout_s: float, process, folder: Path, what: str) -> None:
    until = time.monotonic() + timeout_s
    while not condition():
        if process.poll() is not None or time.monotonic() > until:
            log = (folder / "links.log").read_text(errors="replace")[-2000:]
            raise BenchmarkError(f"appliance links did not {what} within {timeout_s:.0f} s: {log}")
        time.sleep(0.1)


def links_cost(loop_run, replay_frames, pairs: int, root: Path) -> dict:
    """``loop_run(frames, beside=None)`` off and with the links on, in ``pairs`` pairs: the figures."""
    servers = Servers(root)
    try:
        measured = interleaved(partial(loop_run, replay_frames),
                               partial(loop_run, replay_frames, beside=(servers.links_config, links_process)), pairs,
                               ratio=lambda off, on: on["summary"]["fps"] / off["summary"]["fps"],
                               is_order_alternated=True, log_as="bench: loop, links off / on")
    finally:
        servers.close()
    on = [run["summary"] for run in measured.b]
    return {"fps_off_per_run": [run["summary"]["fps"] for run in measured.a], "fps_on_per_run": [r["fps"] for r in on],
            "kept_per_run": [r["kept"] for r in on], "ratio": measured.summary, "ratio_per_pair": measured.ratios,
            "links_per_run": [r["links"] for r in on]}
