"""The local control channel: how the review page asks the loop process to pause, resume or offload.

The loop process serves a Unix stream socket, ``control.sock`` in the runtime directory (a tmpfs,
``/run/appliance`` on the device). A client connects, sends one JSON object on one line and reads
one JSON line back::

    → {"command": "pause"}
    ← {"ok": true, "state": "paused", "is_paused": true}
    → {"command": "launch"}
    ← {"ok": false, "error": "unknown command \\"launch\\", allowed: offload, pause, resume, status"}

Any keys besides ``command`` are the command's arguments. The socket is mode 0660, so the web
service's user needs only to share the loop's group. Requests are tiny and served one at a time.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Callable, Mapping

from appliance.errors import ApplianceError, LoopNotRunning

log = logging.getLogger(__name__)

CONTROL_SOCKET = "control.sock"
SOCKET_MODE = 0o660
MAX_REQUEST_BYTES = 4096
_MAX_REPLY_BYTES = 1 << 20  # replies are small; this only bounds a confused peer
_CONNECTION_TIMEOUT_S = 1.0  # a silent client holds up the next one at most this long
_ACCEPT_POLL_S = 0.2  # how soon close() is noticed; portable, unlike shutdown() waking accept()

Handler = Callable[[dict], dict]


class ControlServer:
    """Serves ``handlers`` (command name → handler) on a Unix socket from a daemon thread.

    A handler gets the request's arguments (every key but ``command``) and returns a dict that is
    sent back with ``"ok": true``. A handler that raises ``ApplianceError`` is answered with
    ``"ok": false`` and the error's message. Handlers run on the server's thread, one at a time,
    so they must return quickly (start long work elsewhere).
    """

    def __init__(self, socket_path, handlers: Mapping[str, Handler]):
        self.socket_path = Path(socket_path)
        self.handlers = dict(handlers)
        self._stop = threading.Event()
        self._listener: socket.socket | None = None
        self._thread = threading.Thread(target=self._serve, name="control", daemon=True)

    def start(self) -> None:
        """Listen on the socket; raises ``ApplianceError`` if it cannot, or if another loop owns it."""
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._remove_stale_socket()
            listener.bind(str(self.socket_path))
            # Before listen(), nobody can connect yet, so there is no moment with looser permissions.
            os.chmod(self.socket_path, SOCKET_MODE)
            listener.listen()
        except OSError as e:
            listener.close()
            raise ApplianceError(f"cannot open the control socket {self.socket_path}: {e}") from e
        except BaseException:
            listener.close()
            raise
        listener.settimeout(_ACCEPT_POLL_S)
        self._listener = listener
        self._thread.start()
        log.info("control channel on %s: %s", self.socket_path, ", ".join(sorted(self.handlers)))

    def close(self) -> None:
        """Stop answering and remove the socket file, so clients learn the loop is gone."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
            self.socket_path.unlink(missing_ok=True)

    def _remove_stale_socket(self) -> None:
        if not self.socket_path.exists():
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.settimeout(_CONNECTION_TIMEOUT_S)
                probe.connect(str(self.socket_path))
        except ConnectionRefusedError:
            # Nobody listens: left behind by a loop that crashed. Replace it.
            self.socket_path.unlink(missing_ok=True)
            return
        raise ApplianceError(f"another appliance loop is already running: it answers on {self.socket_path}")

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError as e:  # e.g. out of file descriptors: wait, rather than spin
                log.warning("control channel: accept failed: %s", e)
                self._stop.wait(_ACCEPT_POLL_S)
                continue
            # One bad client must not end the channel.
            with connection:
                try:
                    self._answer(connection)
                except OSError as e:
                    log.warning("control channel: a client went away before its answer: %s", e)
                except Exception:
                    log.exception("control channel: a request failed")

    def _answer(self, connection: socket.socket) -> None:
        try:
            line = _read_line(connection, time.monotonic() + _CONNECTION_TIMEOUT_S, MAX_REQUEST_BYTES)
        except TimeoutError:
            log.warning("control channel: a client sent no complete request within %gs", _CONNECTION_TIMEOUT_S)
            return
        except _LineTooLong:
            reply = {"ok": False, "error": f"request longer than {MAX_REQUEST_BYTES} bytes"}
        else:
            if not line:
                return  # connected and hung up without asking anything (as start()'s probe does)
            reply = self._reply_to(line)
        connection.settimeout(_CONNECTION_TIMEOUT_S)
        connection.sendall(json.dumps(reply, default=str).encode() + b"\n")

    def _reply_to(self, line: bytes) -> dict:
        try:
            request = json.loads(line)
        except ValueError as e:
            return {"ok": False, "error": f"malformed request (not JSON): {e}"}
        if not isinstance(request, dict) or not isinstance(request.get("command"), str):
            return {"ok": False, "error": 'malformed request: expected a JSON object with a "command" string'}
        args = dict(request)
        command = args.pop("command")
        handler = self.handlers.get(command)
        if handler is None:
            return {"ok": False, "error": f'unknown command "{command}", allowed: {", ".join(sorted(self.handlers))}'}
        try:
            return {**(handler(args) or {}), "ok": True}
        except ApplianceError as e:
            return {"ok": False, "error": str(e)}
        except Exception as e:  # a bug: say so to the client rather than leave it waiting
            log.exception("control channel: %s failed", command)
            return {"ok": False, "error": f"{command} failed: {type(e).__name__}: {e}"}


class _LineTooLong(ValueError):
    """A line passed its byte limit before its newline."""


def _read_line(connection: socket.socket, deadline_s: float, limit: int) -> bytes:
    """Bytes up to the first newline (or the end of the stream), at most ``limit`` of them.

    Raises ``TimeoutError`` at ``deadline_s`` (one deadline for the whole line, so a client that
    trickles bytes cannot hold the server) and ``_LineTooLong`` past ``limit``.
    """
    data = b""
    while b"\n" not in data:
        remaining_s = deadline_s - time.monotonic()
        if remaining_s <= 0:
            raise TimeoutError
        connection.settimeout(remaining_s)
        chunk = connection.recv(min(65536, limit + 1 - len(data)))
        if not chunk:
            break
        data += chunk
        if b"\n" not in data and len(data) > limit:
            raise _LineTooLong
    return data.split(b"\n", 1)[0]


class ControlClient:
    """Sends commands to the loop process; what the review page uses.

    ``send()`` raises ``LoopNotRunning`` when no loop answers, and ``ApplianceError`` with the loop's
    own message when it refuses a command.
    """

    def __init__(self, socket_path, timeout_s: float = 2.0):
        self.socket_path = Path(socket_path)
        self.timeout_s = timeout_s

    def send(self, command: str, **args) -> dict:
        """Run ``command`` in the loop process and return its reply (which includes ``"ok": true``)."""
        request = json.dumps({**args, "command": command}).encode() + b"\n"
        deadline_s = time.monotonic() + self.timeout_s
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
                connection.settimeout(self.timeout_s)
                connection.connect(str(self.socket_path))
                connection.sendall(request)
                line = _read_line(connection, deadline_s, _MAX_REPLY_BYTES)
        except FileNotFoundError as e:
            raise LoopNotRunning(f"the capture loop is not running (no control socket at {self.socket_path})") from e
        except ConnectionRefusedError as e:
            raise LoopNotRunning(f"the capture loop is not running (nothing answers on {self.socket_path})") from e
        except TimeoutError as e:
            raise LoopNotRunning(f"the capture loop is not answering (no reply on {self.socket_path} "
                                 f"within {self.timeout_s:g}s)") from e
        except ConnectionError as e:  # reset or broken pipe: the loop went away mid-request
            raise LoopNotRunning(f"the capture loop closed the control connection ({e})") from e
        except PermissionError as e:
            raise ApplianceError(f"{self.socket_path}: permission denied; this user must be in the "
                                 "appliance's group to control the loop") from e
        except _LineTooLong as e:
            raise ApplianceError(f"the capture loop sent a reply to {command} over {_MAX_REPLY_BYTES} bytes") from e
        except OSError as e:
            raise ApplianceError(f"cannot reach the capture loop on {self.socket_path}: {e}") from e
        if not line:
            raise LoopNotRunning(f"the capture loop closed the control connection on {self.socket_path} "
                                 "without answering")
        try:
            reply = json.loads(line)
        except ValueError:
            reply = None
        if not isinstance(reply, dict):
            raise ApplianceError(f"the capture loop sent a malformed reply to {command}: {line[:200]!r}")
        if not reply.get("ok"):
            raise ApplianceError(reply.get("error") or f"the capture loop refused {command}")
        return reply
