"""A real MQTT broker to publish to: Debian's ``mosquitto`` on a free port of 127.0.0.1.

For the links benchmarks (``bench.links``, ``bench.outage``) and the tests (``tests/mosquitto.py``): one
``mosquitto`` process, its configuration, log and state (retained messages, persistent sessions) in a
folder of the caller's, kept across ``stop()`` and ``start()`` so that a restart is a broker coming
back, not a new one. With ``users`` ({name: password}) only they may connect.
"""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import time
from pathlib import Path

from appliance.bench.seaweed import free_ports
from appliance.errors import BenchmarkError

START_S = 10.0


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(found).exists():
        raise BenchmarkError("no mosquitto here: install Debian's (apt-get install mosquitto)")
    return found


class Broker:
    """``mosquitto`` on a free port of 127.0.0.1, its state kept in ``folder`` across ``stop()`` and
    ``start()``; with ``users`` ({name: password}), only they may connect; ``options``: more lines of
    mosquitto.conf."""

    def __init__(self, folder: Path, users: dict[str, str] | None = None, options: tuple[str, ...] = ()):
        self.folder = Path(folder)
        [self.port] = free_ports(1)
        self.process: subprocess.Popen | None = None
        self.folder.mkdir(parents=True, exist_ok=True)
        # As whoever runs it (root in CI): mosquitto started as root would otherwise become the
        # mosquitto user, who cannot read the password file or write its state here.
        lines = [f"user {getpass.getuser()}", f"listener {self.port} 127.0.0.1", "persistence true",
                 f"persistence_location {self.folder}/", "autosave_interval 1",
                 f"log_dest file {self.folder / 'mosquitto.log'}"]
        if users:
            passwords = self.folder / "passwords"
            passwords.touch(mode=0o600)
            for name, password in users.items():
                subprocess.run(["mosquitto_passwd", "-b", str(passwords), name, password], check=True,
                               capture_output=True)
            lines += ["allow_anonymous false", f"password_file {passwords}"]
        else:
            lines += ["allow_anonymous true"]
        lines += options
        self.conf = self.folder / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> Broker:
        """Start (or start again, with the state it saved) and wait until it listens."""
        self.process = subprocess.Popen([mosquitto_binary(), "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + START_S
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                if self.process.poll() is not None:
                    raise BenchmarkError(f"mosquitto exited at start: see {self.folder / 'mosquitto.log'}") from None
                time.sleep(0.05)
        self.stop()
        raise BenchmarkError(f"mosquitto did not listen within {START_S:g} s: see {self.folder / 'mosquitto.log'}")

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """SIGTERM (it saves its state); the folder stays for the next ``start()``."""
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.process = None

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
