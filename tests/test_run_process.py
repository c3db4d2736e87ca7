"""`appliance run` as systemd runs it: READY and WATCHDOG over NOTIFY_SOCKET, a clean SIGTERM."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time

import pytest
from conftest import REPO

from appliance.config import to_toml
from appliance.storage.store import Store


@pytest.fixture
def notify_socket(tmp_path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify.sock"
    sock.bind(str(path))
    sock.settimeout(30)
    yield sock, path
    sock.close()


def test_run_notifies_ready_pings_the_watchdog_and_drains_on_sigterm(tmp_path, make_config, cli_env, notify_socket):
    sock, path = notify_socket
    config = make_config(camera={"replay_loop": True, "fps": 20.0})
    config_path = tmp_path / "appliance.toml"
    config_path.write_text(to_toml(config))
    env = dict(cli_env, NOTIFY_SOCKET=str(path), WATCHDOG_USEC="400000")
    child = subprocess.Popen([sys.executable, "-m", "appliance", "run", "--config", str(config_path)],
                             env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        messages = []
        while not any("WATCHDOG=1" in m for m in messages):
            messages.append(sock.recv(4096).decode())
        assert messages[0].startswith("READY=1") and "STATUS=watching with replay" in messages[0]
        time.sleep(1.0)  # let it keep a few birds
        child.send_signal(signal.SIGTERM)
        _, stderr = child.communicate(timeout=30)
    finally:
        child.kill()
    assert child.returncode == 0, stderr
    assert "SIGTERM: stopping" in stderr
    assert "STOPPING=1" in _remaining(sock)
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["state"] == "stopped"
    store = Store(config.storage.data_dir)
    assert store.count() == status["frames"]["kept"] > 0  # every keep decided before SIGTERM was written
    store.close()


def _remaining(sock):
    """Notifications still queued on the socket once the child has exited."""
    sock.settimeout(0.2)
    messages = []
    try:
        while True:
            messages.append(sock.recv(4096).decode())
    except TimeoutError:
        return messages


def test_run_with_a_bad_config_prints_one_line_and_exits_two(tmp_path, cli_env):
    bad = tmp_path / "appliance.toml"
    bad.write_text("[model]\naccelerator = \"tpu\"\n")
    result = subprocess.run([sys.executable, "-m", "appliance", "run", "--config", str(bad)],
                            env=cli_env, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip() == (f'appliance: error: {bad}: model.accelerator: \'tpu\' is not allowed, '
                                     'allowed: "cpu" or "coral" or "auto"')


def test_a_camera_that_fails_to_start_is_on_the_status_while_its_fault_shows(tmp_path, make_config, cli_env):
    """The status (and so the page) names the camera's problem as soon as the LEDs show its fault,
    and still does after the loop has given up (systemd then restarts it)."""
    empty = tmp_path / "no-photos"
    empty.mkdir()  # the replay camera opens, then fails to start: as a camera that is not there
    config = make_config(camera={"replay_dir": str(empty)},
                         gpio={"enabled": "on", "pin_factory": "mock", "fault_display_s": 2.0})
    config_path = tmp_path / "appliance.toml"
    config_path.write_text(to_toml(config))
    child = subprocess.Popen([sys.executable, "-m", "appliance", "run", "--config", str(config_path)],
                             env=cli_env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    status_path = tmp_path / "run" / "status.json"
    try:
        while child.poll() is None and not _shows_camera_fault(_read_json(status_path)):
            time.sleep(0.05)
        shown = _read_json(status_path)
        is_still_running = child.poll() is None
        _, stderr = child.communicate(timeout=60)
    finally:
        child.kill()
    assert is_still_running, f"the status showed no camera fault while the LEDs did: {stderr}"
    assert "nothing to play" in shown["camera"]["problem"]
    assert child.returncode != 0 and "nothing to play" in stderr
    assert json.loads(status_path.read_text())["camera"]["problem"] == shown["camera"]["problem"]


def _read_json(path):
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _shows_camera_fault(status):
    return bool(status and status["camera"].get("problem") and status["leds"].get("warning") == "blink code 2")


def test_a_notify_socket_nobody_reads_never_blocks_the_notifier(tmp_path):
    # A unix datagram socket queues only ~10 messages: past that, a blocking send waits for ever, and
    # the status thread pinging the watchdog (joined at shutdown) with it.
    import threading

    from appliance.service.sdnotify import Notifier

    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as unread:
        unread.bind(str(tmp_path / "notify.sock"))
        notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "400000"})
        pinging = threading.Thread(target=lambda: [notifier.watchdog() for _ in range(100)], daemon=True)
        pinging.start()
        pinging.join(timeout=30)
        assert not pinging.is_alive(), "the notifier blocked on a socket nobody reads"
