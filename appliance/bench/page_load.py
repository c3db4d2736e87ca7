"""``appliance bench-web --page-load``: what people browsing the review page cost the camera's keeps.

Three processes, as on the device plus the people on the LAN, each at its unit's priority:

* the loop: ``appliance run`` (the replay camera over the photos, each cropped and scaled to the
  camera's 1920×1080 main stream; the real model; a keep rule that keeps every frame: labels ``*``,
  nothing ignored, min score 0, no cooldown), at ``LOOP_NICE`` (``Nice=`` of appliance.service);
* the page: a real ``WebServer`` (waitress, its ``ConnectionLimits``: 6 worker threads) over the same
  data dir, which holds ``items`` rows besides the loop's own keeps, at ``PAGE_NICE`` (``Nice=`` of
  appliance-web.service);
* the browsers (``page_clients``): ``clients`` threads in a process of their own, at the page's
  priority. On the device they are phones and laptops and cost it nothing; here they share its
  cores, and charging them to the page rather than to the loop is the nearest this machine comes.

The priorities are set between fork and exec, as systemd sets ``Nice=``. The children share one
scheduling group here (one autogroup, no CPU cgroups), so their nice values weigh against each
other as the units' ``CPUWeight=`` values (chosen to match them) weigh the two services on the device.

Two phases, counted from the loop's own ``status.json`` (written every 0.2 s here; a window runs
from one snapshot to another, rates over the snapshots' own times):

1. at ``fps`` (the device's 5), keeping every frame: a window of ``window_s`` with nobody browsing,
   then one while ``clients`` × ``requests`` requests are made (gallery pages and the status API in
   turn). Each window: keeps/s (written by the writer), keeps dropped (the loop's ``writer-behind``),
   frames/s and each process's CPU seconds; gallery and status API p50/p95/max ms as the browsers
   timed them (request sent to last byte read, over a keep-alive connection);
2. at full speed (fps 0) keeping nothing (every label ignored: the classifying is measured, not the
   disk): the loop's frames/s over windows of ``window_s`` without and with the browsers browsing,
   ``pairs`` of each in alternation (``common.interleaved``, order alternated); the ratio (with ÷
   without) is the median of the per-pair ratios, with their min–max.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

from PIL import Image, ImageOps

from appliance.bench import MIN_PAIRS
from appliance.bench.common import interleaved, machine, percentiles
from appliance.bench.web_data import PASSWORD, bench_config, fake_rows, insert_rows, write_config, write_samples
from appliance.bench.web_transfer import Server, child_env, niced
from appliance.cameras.replay import read_rgb
from appliance.config import load_config
from appliance.errors import BenchmarkError, ConfigError
from appliance.service.status import read_status
from appliance.storage.store import Store

log = logging.getLogger(__name__)

LOOP_NICE = -5  # Nice= of systemd/appliance.service (tests/test_systemd.py holds the two together)
PAGE_NICE = 10  # Nice= of systemd/appliance-web.service
KEEP_EVERY_FRAME = {"labels": ("*",), "ignore": (), "min_score": 0.0, "cooldown_s": 0.0}
KEEP_NOTHING = {"labels": ("*",), "ignore": ("*",)}
STATUS_INTERVAL_S = 0.2
GOALS = {"keeps_dropped_at_5_fps": 0, "gallery_p95_ms": 100.0, "fps_drop_at_full_speed": 0.15}
_START_TIMEOUT_S = 180  # model load and start-up reconciliation of a large store, on a busy machine


def priorities(is_applied: bool = True) -> dict:
    """Each process's nice value: the units' (all 0 unless ``is_applied``). A user who may not go
    below 0 gets them all shifted up together: the differences are what the scheduler weighs."""
    if not is_applied:
        return {"loop": 0, "page": 0, "clients": 0, "shifted_by": 0}
    shift = 0 if os.geteuid() == 0 else max(0, -min(LOOP_NICE, PAGE_NICE))
    return {"loop": LOOP_NICE + shift, "page": PAGE_NICE + shift, "clients": PAGE_NICE + shift, "shifted_by": shift}


def run_benchmark(model_path, images_dir, items=100_000, clients=8, requests=500, fps=5.0, pairs=MIN_PAIRS,
                  window_s=20.0, num_threads=0, is_prioritised=True) -> dict:
    """Every figure of the module doc, as a dict ready for JSON; progress is logged."""
    started = time.perf_counter()
    result = {"machine": machine()}
    nices = priorities(is_prioritised)
    with tempfile.TemporaryDirectory(prefix="appliance-bench-page-load-") as tmp:
        work = Path(tmp)
        every_frame, nothing = _prepare(work, Path(model_path), Path(images_dir), items, fps, num_threads)
        with Server(every_frame, nice=nices["page"]) as page, \
                _Browsers(work, page.url, clients, nices["clients"]) as browsers:
            processes = {"page": page.process.pid, "clients": browsers.process.pid}
            log.info("page load: the loop at %g fps keeping every frame; %d browsers × %d requests", fps, clients,
                     requests)
            with _Loop(work, every_frame, nices["loop"]) as loop:
                processes["loop_at_fps"] = loop.process.pid
                read_back = {"loop": loop.nice, "page": _nice_of(page.process.pid), "clients": browsers.nice}
                result["at_fps"] = _keeps_at_fps(loop, browsers, requests, window_s, processes) | {"fps": fps}
            log.info("page load: the loop at full speed keeping nothing, %d pairs of %g s windows", pairs, window_s)
            with _Loop(work, nothing, nices["loop"]) as loop:
                processes["loop_at_full_speed"] = loop.process.pid
                result["at_full_speed"] = _full_speed(loop, browsers, pairs, window_s, processes)
    result["priorities"] = {"nice": nices, "nice_read_back": read_back, "is_applied": is_prioritised,
                            "from": "Nice= of systemd/appliance.service (loop) and appliance-web.service (page, "
                                    "and here the browsers too)"}
    result["setup"] = {"model": str(model_path), "images": str(images_dir),
                       "frames": "each photo cropped to 16:9 and scaled to 1920x1080 (BMP)", "items": items,
                       "clients": clients, "requests_per_client": requests, "window_s": window_s, "pairs": pairs,
                       "num_threads": num_threads, "processes": processes}
    result["goals"] = _goals(result)
    result["machine"]["load_avg_1min_at_end"] = round(os.getloadavg()[0], 2)
    result["total_s"] = round(time.perf_counter() - started, 1)
    return result


def _prepare(work: Path, model: Path, images: Path, items: int, fps: float, num_threads: int) -> tuple[Path, Path]:
    """A data dir holding ``items`` rows, and the two loops' configs: (at ``fps`` keeping every frame,
    at full speed keeping nothing). The page reads the first; all three share data and runtime dirs."""
    config = bench_config(work)
    data_dir = Path(config.storage.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    samples = write_samples(data_dir)
    store = Store(data_dir)
    try:
        log.info("page load: inserting %d rows", items)
        insert_rows(store, fake_rows(items, seed=3, files=lambda at, label: samples[int(at[20:23]) % len(samples)]))
    finally:
        store.close()
    frames = _device_sized_frames(images, work / "frames", config.camera.still_size)
    config = config.replace(camera={"backend": "replay", "replay_dir": str(frames), "replay_loop": True},
                            model={"path": str(model.resolve()), "num_threads": num_threads},
                            status={"interval_s": STATUS_INTERVAL_S})
    every_frame = config.replace(camera={"fps": float(fps)}, keep=KEEP_EVERY_FRAME)
    nothing = config.replace(camera={"fps": 0.0}, keep=KEEP_NOTHING)
    (work / "nothing").mkdir()
    return write_config(work, every_frame), write_config(work / "nothing", nothing)


def _device_sized_frames(images: Path, frames: Path, size: tuple[int, int]) -> Path:
    """Each photo cropped to the camera's aspect and scaled to its main stream's ``size``, as BMP: so
    a keep encodes what a keep on the device encodes, and reading a frame costs about the copy of a
    camera buffer, not a JPEG decode."""
    frames.mkdir()
    for path in sorted(images.iterdir()):
        try:
            photo = read_rgb(path, size)
        except OSError:
            continue  # not a photo (a COPYRIGHT file): the replay camera skips it too
        ImageOps.fit(photo, size, Image.Resampling.BICUBIC).save(frames / f"{path.stem}.bmp")
    if not any(frames.iterdir()):
        raise ConfigError("appliance bench-web", "--images", f"{images} holds no photos", "a folder of photos")
    return frames


def _keeps_at_fps(loop, browsers, requests: int, window_s: float, processes: dict) -> dict:
    pids = _pids(loop, processes)
    loop.wait_until_running()
    quiet = _window(loop, pids, lambda: time.sleep(window_s))
    browsed = {}
    loaded = _window(loop, pids, lambda: browsed.update(browsers.browse(requests=requests)))
    final = loop.stop()
    dropped_in_all = final["frames"]["by_reason"].get("writer-behind", 0)
    return {
        "without_browsers": quiet, "with_browsers": loaded,
        "keeps_dropped_in_the_whole_run": dropped_in_all, "kept_in_the_whole_run": final["frames"]["kept"],
        "frames_in_the_whole_run": final["frames"]["seen"],
    } | _page_figures(browsed)


def _full_speed(loop, browsers, pairs: int, window_s: float, processes: dict) -> dict:
    pids = _pids(loop, processes)
    loop.wait_until_running()
    measured = interleaved(lambda: _window(loop, pids, lambda: time.sleep(window_s)),
                           partial(_browsed_window, loop, pids, browsers, window_s), pairs,
                           ratio=lambda quiet, loaded: loaded["fps"] / quiet["fps"], is_order_alternated=True,
                           log_as="page load: full speed, without and with the browsers")
    loop.stop()
    ratio = measured.summary
    return {
        "keeping": "nothing (keep.ignore = [\"*\"]): the loop's classifying, not its writing",
        "fps_without_browsers": [w["fps"] for w in measured.a], "fps_with_browsers": [w["fps"] for w in measured.b],
        "with_vs_without": ratio["median"], "with_vs_without_min": ratio["min"], "with_vs_without_max": ratio["max"],
        "pairs": ratio["pairs"], "with_vs_without_per_pair": measured.ratios, "orders": measured.orders,
        "fps_drop": round(1 - ratio["median"], 3),
        "gallery_p95_ms_per_window": [w["gallery_ms"].get("p95_ms") for w in measured.b],
        "requests_per_window": [w["requests"] for w in measured.b],
        "errors": sum(w["errors"] for w in measured.b),
    }


def _pids(loop, processes: dict) -> dict:
    """The processes whose CPU time a window reports."""
    return {"loop": loop.process.pid, "page": processes["page"], "clients": processes["clients"]}


def _browsed_window(loop, pids, browsers, window_s: float) -> dict:
    browsed = {}
    window = _window(loop, pids, lambda: browsed.update(browsers.browse(duration_s=window_s)))
    return window | _page_figures(browsed)


def _page_figures(browsed: dict) -> dict:
    gallery, status = browsed["gallery_ms"], browsed["status_ms"]
    return {"gallery_ms": percentiles(gallery, "_ms") if gallery else {"n": 0},
            "status_api_ms": percentiles(status, "_ms") if status else {"n": 0},
            "requests": len(gallery) + len(status) + browsed["errors"], "errors": browsed["errors"],
            "error_examples": browsed["error_examples"], "browsing_s": browsed["seconds"],
            "requests_per_s": round((len(gallery) + len(status)) / browsed["seconds"], 1)}


def _window(loop, pids: dict, during) -> dict:
    """Run ``during()`` between two snapshots of the loop's status; what the loop did in between, and
    where the machine's CPU time went (ours, everything else on it, idle, taken by the hypervisor)."""
    cpu_before, machine_before = {name: _cpu_s(pid) for name, pid in pids.items()}, _machine_cpu_s()
    before = loop.snapshot()
    during()
    after = loop.snapshot()
    cpu = {name: _cpu_s(pid) - cpu_before[name] for name, pid in pids.items()}
    machine = {key: value - machine_before[key] for key, value in _machine_cpu_s().items()}
    cpu |= {"everything_else": machine.pop("busy") - sum(cpu.values())} | machine
    seconds = after["at"] - before["at"]
    return {"seconds": round(seconds, 2),
            "fps": round((after["classified"] - before["classified"]) / seconds, 2),
            "keeps_per_s": round((after["kept"] - before["kept"]) / seconds, 2),
            "keeps_dropped": after["dropped"] - before["dropped"], "writer_backlog_at_end": after["backlog"],
            "cpu_s": {name: round(value, 2) for name, value in cpu.items()}}


class _Loop:
    """``appliance run`` in a child process at ``nice``. ``stop()`` ends it as systemd does (SIGTERM);
    leaving the ``with`` block kills it if it still runs (a benchmark that failed half-way)."""

    def __init__(self, work: Path, config_path: Path, nice: int):
        self.runtime_dir = Path(load_config(config_path).status.runtime_dir)
        self.log_path = config_path.with_name("loop.log")
        with open(self.log_path, "ab") as stderr:
            self.process = subprocess.Popen([sys.executable, "-m", "appliance", "run", "--config", str(config_path)],
                                            stdout=subprocess.DEVNULL, stderr=stderr, env=child_env(),
                                            preexec_fn=niced(nice), cwd=work)
        self.nice = _nice_of(self.process.pid)
        self._last_at = 0.0

    def wait_until_running(self, frames: int = 10) -> None:
        """Until the loop has taken ``frames`` frames (the model loaded, the store reconciled)."""
        deadline = time.monotonic() + _START_TIMEOUT_S
        while (snapshot := self.snapshot(deadline))["seen"] < frames:
            time.sleep(0.1)
        log.info("page load: the loop is running (%d frames)", snapshot["seen"])

    def snapshot(self, deadline: float | None = None) -> dict:
        """The first status the loop writes after this call begins (its counters are cumulative)."""
        asked_at, deadline = time.time(), deadline or time.monotonic() + 30
        while True:
            status = read_status(self.runtime_dir)
            if status and status.get("updated_at", 0) > max(asked_at, self._last_at) and status["state"] == "running":
                break
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise BenchmarkError(f"the loop {'ended' if self.process.poll() is not None else 'wrote no status'}: "
                                     f"{self.log_path.read_text()[-2000:]}")
            time.sleep(0.02)
        self._last_at = status["updated_at"]
        frames = status["frames"]
        return {"at": status["updated_at"], "seen": frames["seen"], "classified": frames["classified"],
                "kept": frames["kept"], "dropped": frames["by_reason"].get("writer-behind", 0),
                "backlog": status["storage"]["writer_backlog"]}

    def stop(self) -> dict:
        """Stop the loop as systemd does and return its last status (written after the writer drained)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=120)
        if self.process.returncode != 0:
            raise BenchmarkError(f"the loop exited with {self.process.returncode}: {self.log_path.read_text()[-2000:]}")
        return read_status(self.runtime_dir)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class _Browsers:
    """The ``page_clients`` process at ``nice``, its browsers logged in to ``url``."""

    def __init__(self, work: Path, url: str, clients: int, nice: int):
        self.log_path = work / "clients.log"
        with open(self.log_path, "ab") as stderr:
            self.process = subprocess.Popen([sys.executable, "-m", "appliance.bench.page_clients"],
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
                                            env=child_env(), preexec_fn=niced(nice), text=True)
        self.nice = _nice_of(self.process.pid)
        self._ask({"url": url, "password": PASSWORD, "clients": clients})

    def browse(self, requests: int | None = None, duration_s: float | None = None) -> dict:
        return self._ask({"requests": requests, "duration_s": duration_s})

    def _ask(self, message: dict) -> dict:
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline()
        if not answer:
            self.close()
            raise BenchmarkError(f"the browsers stopped: {self.log_path.read_text()[-2000:]}")
        return json.loads(answer)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process.stdout.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _nice_of(pid: int) -> int:
    return os.getpriority(os.PRIO_PROCESS, pid)


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and all its threads so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_cpu_s() -> dict:
    """CPU seconds of the whole machine so far (all cores): busy, idle, and stolen by the hypervisor."""
    ticks = [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = ticks
    hz = os.sysconf("SC_CLK_TCK")
    return {"busy": (user + nice + system + irq + softirq) / hz, "idle": (idle + iowait) / hz, "stolen": steal / hz}


def _goals(result: dict) -> dict:
    at_fps, full = result["at_fps"], result["at_full_speed"]
    dropped = at_fps["with_browsers"]["keeps_dropped"]
    gallery_p95 = at_fps["gallery_ms"].get("p95_ms")
    return {"goals": GOALS,
            "no_keep_dropped_while_browsing": dropped <= GOALS["keeps_dropped_at_5_fps"],
            "gallery_p95_within_goal": gallery_p95 is not None and gallery_p95 <= GOALS["gallery_p95_ms"],
            "fps_drop_within_goal": full["fps_drop"] <= GOALS["fps_drop_at_full_speed"]}


def main_json(**kwargs) -> str:
    return json.dumps(run_benchmark(**kwargs), indent=2)
