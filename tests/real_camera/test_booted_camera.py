"""The appliance as the service runs it, through the real camera stack: ``appliance run`` with
``camera.backend = "picamera2"`` on libcamera's virtual camera, real picamera2, our adapter, the real
model.

These run in the camera VM (``image/test-camera-vm.sh``), where the virtual camera serves the photos
of ``../shared/images`` (``$APPLIANCE_VIRTUAL_CAMERA``: ``frames/N.jpg`` and ``sources.txt`` naming the
photo each one is) and its config is ``/usr/share/libcamera/pipeline/virtual/virtual.yaml``. The
virtual camera has no frame pacing and repeats each photo for four frames, and the loop takes the
newest frame whenever the model is free, so which photos a run sees is not fixed: a run goes on until
it has seen every photo, and the keeps are identified by comparing each kept image with the photos.
A camera "goes" by its config file going: libcamera does not lock a virtual camera against another
process (it has no device to lock), and reads the file once per process, so the camera comes back at
the service's next start, which is what systemd's restart gives. Elsewhere (no virtual camera) these
fail: they are for the VM.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from appliance.cameras.picamera2_stack import load
from appliance.config import Config, to_toml
from appliance.service.status import read_status
from appliance.storage.store import Store

pytestmark = [pytest.mark.pi, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
BIRD_MODEL = REPO.parent / "shared" / "models" / "coral" / "mobilenet_v2_1.0_224_inat_bird_quant.tflite"
VIRTUAL_CAMERA = Path(os.environ.get("APPLIANCE_VIRTUAL_CAMERA", "/srv/virtual-camera"))
VIRTUAL_YAML = Path("/usr/share/libcamera/pipeline/virtual/virtual.yaml")
# What the bird model says about the two bird photos (../shared/README.md; labels as the model's own
# labels file writes them); every other photo is a discard under the model's catalog rule (any label
# but background, score >= 0.5).
BIRDS = {"bird.bmp": "Poecile atricapillus (Black-capped Chickadee)", "parrot.jpg": "Ara macao (Scarlet Macaw)"}
STILL_SIZE = (1280, 720)
# systemd/appliance.service restarts the loop this long after it exits with a fault.
RESTART_S = float(next(line.split("=", 1)[1] for line in (REPO / "systemd" / "appliance.service").read_text()
                       .splitlines() if line.startswith("RestartSec=")))


def sources() -> dict[str, str]:
    """Frame file → photo name, as the camera VM wrote them."""
    lines = (VIRTUAL_CAMERA / "sources.txt").read_text().splitlines()
    return dict(line.split(maxsplit=1) for line in lines if line.strip())


def thumbnail(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB").resize((96, 54), Image.Resampling.BOX), np.float32)


class Photos:
    """Tells which of the camera's photos a kept image is: the nearest, by mean difference of small
    thumbnails (libcamera stretches each photo to the stream's size, as these references are)."""

    def __init__(self):
        self.names, self.references = [], []
        for frame, name in sources().items():
            self.names.append(name)
            self.references.append(thumbnail(Image.open(VIRTUAL_CAMERA / "frames" / frame)))

    def identify(self, path: Path) -> str:
        kept = thumbnail(Image.open(path))
        distances = [float(np.abs(kept - reference).mean()) for reference in self.references]
        best, second = sorted(distances)[:2]
        assert best < 8.0 and second > 2 * best, f"{path.name} is none of the photos clearly: {distances}"
        return self.names[int(np.argmin(distances))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(tmp_path, **sections) -> Path:
    config = Config().replace(
        camera={"backend": "picamera2", "fps": 0.0, "still_size": STILL_SIZE},
        model={"path": str(BIRD_MODEL)},
        storage={"data_dir": str(tmp_path / "data"), "min_free_bytes": 0},
        status={"runtime_dir": str(tmp_path / "run"), "interval_s": 0.2},
        web={"host": "127.0.0.1", "port": free_port()},
        # No GPIO in the VM: gpiozero's mock pins, so that the status shows what the LEDs would.
        gpio={"enabled": "on", "pin_factory": "mock", "fault_display_s": 3.0},
    ).replace(**sections)
    path = tmp_path / "appliance.toml"
    path.write_text(to_toml(config))
    return path


def appliance(*args, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "appliance", *args], stdout=subprocess.DEVNULL,
                            stderr=log.open("a"), start_new_session=True)


def stop(process: subprocess.Popen) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    return process.wait(timeout=120)


def wait_until(condition, timeout_s: float, what: str, log: Path | None = None):
    until = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > until:
            tail = log.read_text()[-3000:] if log and log.exists() else ""
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}\n{tail}")
        time.sleep(0.5)


def test_appliance_run_through_picamera2_keeps_exactly_the_two_bird_photos(tmp_path):
    # audit_one_in = 1 records every frame the rule discards too (kind "audit"), so the test can see
    # that every photo was classified and how; a match is kind "match".
    config = write_config(tmp_path, keep={"audit_one_in": 1})
    photos, log = Photos(), tmp_path / "appliance.log"
    model = load().picamera2_class.global_camera_info()[0]["Model"]  # the camera as libcamera lists it
    run = appliance("run", "--config", str(config), log=log)
    seen: dict[str, set[str]] = {}  # photo name → the kinds it was kept as
    labels: dict[str, set[str]] = {}
    identified: set[int] = set()

    def every_photo_seen():
        assert run.poll() is None, f"appliance run exited {run.returncode}: {log.read_text()[-3000:]}"
        if read_status(tmp_path / "run") is None:  # the loop's store is set up before its first status
            return False
        store = Store(tmp_path / "data")
        try:
            rows = [r for r in store.rows(order="captured_at, id") if r["id"] not in identified]
        finally:
            store.close()
        for row in rows:
            name = photos.identify(tmp_path / "data" / row["image_path"])
            seen.setdefault(name, set()).add(row["kind"])
            labels.setdefault(name, set()).add(row["label"])
            identified.add(row["id"])
        return set(seen) == set(photos.names)

    try:
        wait_until(every_photo_seen, 900, "a frame of every photo", log)
        status = read_status(tmp_path / "run")
    finally:
        code = stop(run)
    print("kept as:", {name: sorted(kinds) for name, kinds in seen.items()})
    print("labels:", labels)
    assert code == 0, log.read_text()[-3000:]
    matched = {name for name, kinds in seen.items() if "match" in kinds}
    assert matched == set(BIRDS), f"kept as matches: {sorted(matched)}"
    assert all(seen[name] == {"match"} for name in BIRDS), "a frame of a bird photo was discarded"
    assert all(labels[name] == {label} for name, label in BIRDS.items()), labels
    assert status["camera"]["backend"] == "picamera2"
    assert status["camera"]["description"].startswith(f"picamera2 {model} "), status["camera"]
    assert status["frames"]["by_reason"].get("match", 0) >= 2


def test_a_camera_that_is_gone_shows_the_fault_and_the_service_recovers_when_it_returns(tmp_path):
    """The camera is gone (virtual.yaml removed) when the service starts: the loop's status and the
    page's status JSON show the camera fault, the loop exits, and systemd restarts it (here a
    supervisor does what appliance.service's Restart=on-failure does); once the camera is back, the
    next start captures and the fault is gone."""
    config = write_config(tmp_path)
    runtime, log, web_log = tmp_path / "run", tmp_path / "appliance.log", tmp_path / "web.log"
    web = appliance("serve", "--config", str(config), log=web_log)
    saved = tmp_path / "virtual.yaml"
    supervisor = Supervisor(["run", "--config", str(config)], log)
    try:
        wait_until(lambda: _page_answers(config), 300, "the page (appliance serve)", web_log)
        shutil.move(VIRTUAL_YAML, saved)  # the camera is gone
        supervisor.start()
        status = wait_until(lambda: _camera_problem(read_status(runtime)), 300, "the camera fault on the status", log)
        page = wait_until(lambda: _camera_problem(_page_status(config)), 120, "the camera fault on the page", web_log)
        print("status:", status["camera"], status["leds"])
        assert "no camera" in status["camera"]["problem"]
        assert status["leds"]["warning"] == "blink code 2"
        assert page["camera"]["problem"] == status["camera"]["problem"]
        wait_until(lambda: supervisor.exits, 120, "the loop to give up (systemd then restarts it)", log)
        assert supervisor.exits[0] != 0
        shutil.move(saved, VIRTUAL_YAML)  # the camera is back
        wait_until(lambda: ((read_status(runtime) or {}).get("frames") or {}).get("classified"), 600,
                   "frames classified after the camera returned", log)
        status = read_status(runtime)
        page = wait_until(lambda: _page_status(config), 60, "the page's status", web_log)
        assert not status["camera"].get("problem") and not page["camera"].get("problem")
        assert status["leds"]["warning"] != "blink code 2"
    finally:
        if saved.exists():
            shutil.move(saved, VIRTUAL_YAML)
        code = supervisor.stop()
        stop(web)
    assert code == 0, log.read_text()[-3000:]


def _camera_problem(loop_status):
    return loop_status if loop_status and (loop_status.get("camera") or {}).get("problem") else None


def _page_json(config_path: Path) -> dict | None:
    """The review page's status JSON (``/api/v1/status``; no password set: read-only), or None."""
    port = tomllib.loads(config_path.read_text())["web"]["port"]
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/status", timeout=10) as reply:
            return json.load(reply)
    except OSError:
        return None


def _page_answers(config_path: Path) -> bool:
    return _page_json(config_path) is not None


def _page_status(config_path: Path) -> dict | None:
    """The loop's status as the page shows it."""
    return (_page_json(config_path) or {}).get("loop")


class Supervisor:
    """What systemd does for appliance.service: start the loop, and after it exits with an error,
    start it again ``RestartSec`` later (Restart=on-failure)."""

    def __init__(self, args, log: Path):
        self.args, self.log = args, log
        self.exits: list[int] = []
        self.process = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self._thread.start()

    def _run(self):
        while not self._stopping.is_set():
            self.process = appliance(*self.args, log=self.log)
            code = self.process.wait()
            if self._stopping.is_set():
                return
            self.exits.append(code)
            if code == 0 or self._stopping.wait(RESTART_S):
                return

    def stop(self) -> int:
        self._stopping.set()
        code = stop(self.process) if self.process else 0
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        return code
