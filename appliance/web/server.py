"""Serving the review page in production: waitress (pure Python, fine on a Pi Zero 2 W)."""

from __future__ import annotations

import errno
import logging
import os
import socket
import threading
from pathlib import Path

from appliance.errors import ModelError, WebServerError
from appliance.inference.labels import load_labels
from appliance.passwords import adopt_password
from appliance.service.control import CONTROL_SOCKET, ControlClient
from appliance.storage.store import Store
from appliance.web import create_app

log = logging.getLogger(__name__)

THREADS = 6
# A gallery page asks for dozens of thumbnails at once; waitress logs every moment its queue is
# non-empty as a warning, which would fill the journal with noise on each page view.
logging.getLogger("waitress.queue").setLevel(logging.ERROR)


SD_LISTEN_FDS_START = 3


def systemd_socket(environ=os.environ) -> socket.socket | None:
    """The listening socket systemd passed (sd_listen_fds(3)), or None when not socket-activated."""
    if environ.get("LISTEN_PID") != str(os.getpid()) or environ.get("LISTEN_FDS") != "1":
        return None
    listening = socket.socket(fileno=SD_LISTEN_FDS_START)
    os.set_inheritable(listening.fileno(), False)
    return listening


def _listen_error(error: OSError | ValueError, host: str, port: int) -> WebServerError:
    """What to tell a person whose page cannot listen on ``host:port``."""
    errno_ = getattr(error, "errno", None)
    if isinstance(error, (socket.gaierror, ValueError)) or errno_ == errno.EADDRNOTAVAIL:
        return WebServerError(f"web.host: {host!r} is not an address of this machine: "
                              "use 0.0.0.0 (every interface), 127.0.0.1 (this machine only) or one of its addresses")
    if errno_ == errno.EADDRINUSE:
        return WebServerError(f"port {port} is in use: pass --port (or set web.port), or stop what listens there")
    if errno_ == errno.EACCES:
        return WebServerError(f"port {port} needs root: pass --port 8080 (on the device, "
                              "appliance-web.socket opens port 80)")
    return WebServerError(f"cannot listen on {host}:{port}: {error.strerror or error}")


class WebServer:
    """The page for ``config``, on ``host:port``; ``run()`` blocks, ``start()`` runs it in a thread."""

    def __init__(self, config, config_path: Path | None = None, host=None, port=None):
        import waitress.server  # imported here: only the commands that serve need it

        self.store = Store(config.storage.data_dir)
        try:
            labels = load_labels(Path(config.model.path), config.model.labels or None)
        except ModelError as e:
            log.warning("relabel suggestions unavailable: %s", e)
            labels = []
        control = ControlClient(Path(config.status.runtime_dir) / CONTROL_SOCKET)
        self.app = create_app(config, self.store, control, password_hash=adopt_password(config.web, config_path),
                              labels=labels)
        listening = systemd_socket()
        if listening is not None:  # socket activation: systemd bound port 80; this process needs no privilege
            self.server = waitress.server.create_server(self.app, sockets=[listening], threads=THREADS,
                                                        ident="appliance")
        else:
            host, port = host or config.web.host, config.web.port if port is None else port
            try:
                self.server = waitress.server.create_server(self.app, host=host, port=port, threads=THREADS,
                                                            ident="appliance")
            except (OSError, ValueError) as e:  # waitress says ValueError for a host it cannot resolve
                self.store.close()
                raise _listen_error(e, host, port) from None
        self._thread = None

    @property
    def url(self) -> str:
        host, port = self.server.effective_host, self.server.effective_port
        return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}/"

    def run(self) -> None:
        log.info("review page on %s", self.url)
        self.server.run()

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="web", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End ``run()``; safe from another thread or a signal handler. Everything is closed on the
        server's own loop thread (through its trigger), so nothing is closed under its ``select()``."""
        from waitress import wasyncore

        sockets = getattr(self.server, "_map", None) or self.server.map
        self.server.trigger.pull_trigger(lambda: wasyncore.close_all(sockets))

    def close(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self.stop()
            self._thread.join(timeout=5)
        self.server.task_dispatcher.shutdown()
        self.store.close()
