"""The control channel: the review page pauses, resumes and offloads the loop over a Unix socket."""

from __future__ import annotations

import json
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import IMAGES, REPO

from appliance.cameras.replay import ReplayCamera, read_rgb, scale_like_isp
from appliance.config import to_toml
from appliance.errors import ApplianceError, LoopNotRunning
from appliance.service.app import Appliance
from appliance.service.control import CONTROL_SOCKET, ControlClient, ControlServer
from appliance.service.status import read_status


def _wait_until(predicate, what, timeout_s=20.0):
    deadline_s = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline_s:
            raise AssertionError(f"timed out after {timeout_s}s waiting until {what}")
        time.sleep(0.02)


def _raw(path, request: bytes) -> dict:
    """Send raw bytes, as a confused or hostile client would, and return the server's reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.settimeout(5)
        connection.connect(str(path))
        connection.sendall(request)
        return json.loads(connection.makefile("rb").readline())


class Switch:
    """Handlers as the appliance registers them, over a plain flag."""

    def __init__(self):
        self.is_paused = False
        self.calls = []

    def handlers(self):
        return {"pause": self.pause, "resume": self.resume, "echo": lambda args: {"args": args},
                "refuse": self.refuse, "crash": lambda args: 1 / 0}

    def pause(self, args):
        self.is_paused = True
        return {"is_paused": True}

    def resume(self, args):
        self.is_paused = False
        return {"is_paused": False}

    def refuse(self, args):
        raise ApplianceError("no USB stick is plugged in")


@pytest.fixture
def socket_path(tmp_path):
    return tmp_path / CONTROL_SOCKET


@pytest.fixture
def switch(socket_path):
    switch = Switch()
    server = ControlServer(socket_path, switch.handlers())
    server.start()
    yield switch
    server.close()


def test_pause_and_resume_run_their_handlers_and_answer_ok(socket_path, switch):
    client = ControlClient(socket_path)
    assert client.send("pause") == {"ok": True, "is_paused": True}
    assert switch.is_paused
    assert client.send("resume") == {"ok": True, "is_paused": False}
    assert not switch.is_paused


def test_a_commands_arguments_reach_its_handler(socket_path, switch):
    assert ControlClient(socket_path).send("echo", device="sda1", verify=True)["args"] == {
        "device": "sda1", "verify": True}


def test_an_unknown_command_is_refused_naming_the_allowed_ones(socket_path, switch):
    assert _raw(socket_path, b'{"command": "launch"}\n') == {
        "ok": False, "error": 'unknown command "launch", allowed: crash, echo, pause, refuse, resume'}
    with pytest.raises(ApplianceError, match='unknown command "launch"'):
        ControlClient(socket_path).send("launch")


def test_a_handlers_appliance_error_comes_back_as_its_message(socket_path, switch):
    assert _raw(socket_path, b'{"command": "refuse"}\n') == {"ok": False, "error": "no USB stick is plugged in"}
    with pytest.raises(ApplianceError, match="^no USB stick is plugged in$") as raised:
        ControlClient(socket_path).send("refuse")
    assert not isinstance(raised.value, LoopNotRunning)


def test_a_handler_that_crashes_is_answered_and_the_server_keeps_serving(socket_path, switch):
    reply = _raw(socket_path, b'{"command": "crash"}\n')
    assert reply["ok"] is False and "ZeroDivisionError" in reply["error"]
    assert ControlClient(socket_path).send("pause")["ok"] is True


@pytest.mark.parametrize("request_line, error", [
    (b"pause\n", "malformed request (not JSON)"),
    (b'["pause"]\n', 'expected a JSON object with a "command" string'),
    (b'{"cmd": "pause"}\n', 'expected a JSON object with a "command" string'),
    (b'{"command": 1}\n', 'expected a JSON object with a "command" string'),
])
def test_a_malformed_request_is_refused_and_the_server_keeps_serving(socket_path, switch, request_line, error):
    reply = _raw(socket_path, request_line)
    assert reply["ok"] is False and error in reply["error"]
    assert ControlClient(socket_path).send("pause")["ok"] is True


def test_a_request_of_4096_bytes_is_answered_and_one_byte_more_is_refused(socket_path, switch):
    def request_of(size):
        head, tail = b'{"command": "echo", "pad": "', b'"}'
        return head + b"x" * (size - len(head) - len(tail)) + tail

    assert len(request_of(4096)) == 4096
    assert _raw(socket_path, request_of(4096) + b"\n")["ok"] is True
    assert _raw(socket_path, request_of(4097) + b"\n") == {"ok": False, "error": "request longer than 4096 bytes"}
    assert _raw(socket_path, b"x" * 100_000) == {"ok": False, "error": "request longer than 4096 bytes"}
    assert ControlClient(socket_path).send("pause")["ok"] is True


def test_a_client_that_sends_nothing_holds_up_the_next_only_until_its_timeout(socket_path, switch):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent:
        silent.connect(str(socket_path))
        started_s = time.monotonic()
        assert ControlClient(socket_path, timeout_s=5.0).send("pause")["ok"] is True
        assert time.monotonic() - started_s < 2.0
        silent.settimeout(5)
        assert silent.recv(100) == b""  # the server hung up on it without an answer


def test_a_client_that_hangs_up_mid_request_does_not_stop_the_server(socket_path, switch):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as rude:
        rude.connect(str(socket_path))
        rude.sendall(b'{"command": "pa')
    assert ControlClient(socket_path).send("pause")["ok"] is True


def test_the_socket_is_read_write_for_owner_and_group_only(socket_path, switch):
    mode = socket_path.stat().st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o660


def test_close_removes_the_socket_and_clients_then_learn_the_loop_is_not_running(socket_path):
    server = ControlServer(socket_path, Switch().handlers())
    server.start()
    assert ControlClient(socket_path).send("pause")["ok"] is True
    server.close()
    assert not socket_path.exists()
    with pytest.raises(LoopNotRunning):
        ControlClient(socket_path).send("pause")


def test_a_missing_socket_means_the_loop_is_not_running(socket_path):
    with pytest.raises(LoopNotRunning, match="the capture loop is not running") as raised:
        ControlClient(socket_path).send("pause")
    assert str(socket_path) in str(raised.value)
    assert isinstance(raised.value, ConnectionError)


def test_a_stale_socket_file_with_no_server_means_the_loop_is_not_running(socket_path):
    _leave_stale_socket(socket_path)
    with pytest.raises(LoopNotRunning, match="the capture loop is not running"):
        ControlClient(socket_path).send("pause")


def test_a_loop_that_accepts_but_never_answers_is_reported_as_not_running_after_the_timeout(socket_path):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stuck:
        stuck.bind(str(socket_path))
        stuck.listen()
        with pytest.raises(LoopNotRunning, match="not answering"):
            ControlClient(socket_path, timeout_s=0.3).send("pause")


def test_a_server_replaces_a_stale_socket_file(socket_path):
    _leave_stale_socket(socket_path)
    server = ControlServer(socket_path, Switch().handlers())
    server.start()
    try:
        assert ControlClient(socket_path).send("pause")["ok"] is True
    finally:
        server.close()


def test_a_second_server_refuses_to_take_over_a_live_socket(socket_path, switch):
    with pytest.raises(ApplianceError, match="another appliance loop is already running"):
        ControlServer(socket_path, {}).start()
    assert ControlClient(socket_path).send("pause")["ok"] is True  # the first one still answers


def test_a_server_that_cannot_create_its_socket_says_where(tmp_path):
    path = tmp_path / "missing-dir" / CONTROL_SOCKET
    with pytest.raises(ApplianceError, match=f"cannot open the control socket {path}"):
        ControlServer(path, {}).start()


def _leave_stale_socket(path):
    """A socket file with nobody listening, as a crashed loop leaves behind."""
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()
    assert path.exists()


# The real appliance: the real bird model on the replayed photos.

class Running:
    """``Appliance.run()`` on a background thread; stopped and joined on exit."""

    def __init__(self, appliance):
        self.appliance = appliance
        self.error = None
        self._thread = threading.Thread(target=self._run, name="appliance")

    def _run(self):
        try:
            self.appliance.run()
        except BaseException as e:  # reported by the test, not lost in a thread
            self.error = e

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.appliance.stop()
        self._thread.join(timeout=30)
        assert not self._thread.is_alive()
        self.appliance.close()
        if self.error is not None:
            raise self.error


def test_pausing_a_running_appliance_stops_classification_but_not_the_camera(make_config, tmp_path):
    config = make_config(camera={"replay_loop": True, "fps": 50.0})
    runtime = config.status.runtime_dir
    socket_path = Path(runtime) / CONTROL_SOCKET
    client = ControlClient(socket_path)
    no_sticks = tmp_path / "by-id"
    no_sticks.mkdir()
    with Appliance(config, usb_by_id=no_sticks) as appliance, Running(appliance) as running:
        stats = appliance.stats
        _wait_until(lambda: running.error is not None or (stats.classified > 0 and socket_path.exists()),
                    "the loop classifies and the control socket is up")
        assert running.error is None, running.error
        assert client.send("status") == {"ok": True, "state": "running", "is_paused": False}

        assert client.send("pause") == {"ok": True, "state": "paused", "is_paused": True}
        # Once one frame was counted as paused, no frame taken before the pause is still in flight.
        _wait_until(lambda: stats.counts["paused"] > 0, "a frame is released unclassified")
        paused, classified, seen = stats.counts["paused"], stats.classified, stats.frames_seen
        _wait_until(lambda: stats.counts["paused"] >= paused + 10, "ten more frames pass while paused")
        # A frame counted as seen but not yet as paused when we read may be among the ten: hence 9.
        assert stats.classified == classified and stats.frames_seen >= seen + 9
        assert time.monotonic() - appliance.loop.heartbeat_s < 1.0
        status = appliance.status()
        assert status["state"] == "paused" and status["frames"]["by_reason"]["paused"] >= 10
        _wait_until(lambda: (read_status(runtime) or {}).get("state") == "paused", "status.json says paused")
        assert client.send("status") == {"ok": True, "state": "paused", "is_paused": True}

        assert client.send("resume") == {"ok": True, "state": "running", "is_paused": False}
        _wait_until(lambda: stats.classified > classified, "classification resumes")
        assert appliance.status()["state"] == "running"

        with pytest.raises(ApplianceError, match="^no USB stick is plugged in"):
            client.send("offload")
    assert running.error is None
    assert not socket_path.exists()
    with pytest.raises(LoopNotRunning):
        client.send("status")
    assert read_status(runtime)["state"] == "stopped"


def test_an_offload_given_to_the_appliance_answers_the_offload_command(make_config):
    config = make_config(camera={"replay_loop": True, "fps": 50.0})
    requests = []

    def offload(args):
        requests.append(args)
        return {"offload": "started"}

    client = ControlClient(f"{config.status.runtime_dir}/{CONTROL_SOCKET}")
    with Appliance(config, offload=offload) as appliance, Running(appliance):
        _wait_until(lambda: client.socket_path.exists(), "the control socket is up")
        assert client.send("offload", device="/dev/sda1") == {"ok": True, "offload": "started"}
    assert requests == [{"device": "/dev/sda1"}]


def test_a_loop_paused_before_it_starts_counts_every_frame_as_paused_and_classifies_none(make_config):
    bird = scale_like_isp(read_rgb(IMAGES / "bird.bmp"), (224, 224))
    camera = ReplayCamera.from_arrays([(bird, bird, f"frame{i}") for i in range(30)], (224, 224), loop=False)
    with Appliance(make_config(), camera=camera) as appliance:
        appliance.loop.pause()
        assert appliance.loop.state == "starting" and appliance.loop.is_paused
        appliance.run()
        appliance.close()
        status = appliance.status()
    assert status["state"] == "stopped"  # not "paused": the loop has ended
    assert status["frames"]["seen"] == 30 and status["frames"]["classified"] == 0
    assert status["frames"]["by_reason"] == {"paused": 30} and status["frames"]["kept"] == 0


def test_appliance_run_in_a_child_process_is_paused_and_resumed_over_its_socket(tmp_path, make_config, cli_env):
    config = make_config(camera={"replay_loop": True, "fps": 50.0})
    runtime = config.status.runtime_dir
    config_path = tmp_path / "appliance.toml"
    config_path.write_text(to_toml(config))
    client = ControlClient(f"{runtime}/{CONTROL_SOCKET}")
    child = subprocess.Popen([sys.executable, "-m", "appliance", "run", "--config", str(config_path)],
                             env=cli_env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_until(lambda: child.poll() is not None or client.socket_path.exists(), "the child's socket is up", 60)
        assert child.poll() is None, child.communicate()[1]
        # Paused while still loading the model, it would answer "starting": wait until it runs.
        _wait_until(lambda: (read_status(runtime) or {}).get("state") == "running", "status.json says running", 60)
        assert client.send("pause")["state"] == "paused"
        _wait_until(lambda: (read_status(runtime) or {}).get("state") == "paused", "status.json says paused")
        assert client.send("resume")["state"] == "running"
        _wait_until(lambda: (read_status(runtime) or {}).get("state") == "running", "status.json says running")
        child.send_signal(signal.SIGTERM)
        _, stderr = child.communicate(timeout=30)
    finally:
        child.kill()
    assert child.returncode == 0, stderr
    assert "paused: frames are released unclassified" in stderr and "resumed" in stderr
    assert not client.socket_path.exists()
    with pytest.raises(LoopNotRunning):
        client.send("status")
    status = read_status(runtime)
    assert status["state"] == "stopped" and status["frames"]["by_reason"]["paused"] > 0
