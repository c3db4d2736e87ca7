"""Serving the review page in production: waitress (pure Python, fine on a Pi Zero 2 W).

A stranger on the LAN must not be able to take the page away from its owner with a few sockets, so
the server is bounded (``ConnectionLimits``):

* a request body is refused (413) from its Content-Length before any of it is read, and a chunked
  one is cut off at the page's limit (``MAX_REQUEST_BYTES``), so nothing is buffered to disk;
* a fixed pool of worker threads runs the page; a connection holds one only while its request runs;
* open connections are bounded in all and per client address, and when a new one needs a place the
  connection that has waited longest with no request in progress makes room for it, so idle or
  half-sent connections cannot shut real requests out;
* a connection silent for ``idle_timeout_s`` is closed, and so is one whose client stops reading a
  response, which frees the thread that was writing it.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import waitress.server
from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.task import ThreadedTaskDispatcher

from appliance.errors import ModelError, WebServerError
from appliance.inference.labels import load_labels
from appliance.passwords import adopt_password
from appliance.service.control import CONTROL_SOCKET, ControlClient
from appliance.storage.store import Store
from appliance.web import MAX_REQUEST_BYTES, create_app
from appliance.web.security import client_key

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ConnectionLimits:
    """How much of the device the page's clients may hold at once."""

    threads: int = 6  # requests run at once; the rest wait their turn (at most one per connection)
    connections: int = 64  # open connections in all: a phone and a laptop open ~6 each
    connections_per_address: int = 16  # one client (or one IPv6 /64) cannot hold them all
    idle_timeout_s: int = 30  # a client silent this long (no request, or not reading a response) is let go
    send_buffer_bytes: int = 16 * 1024 * 1024  # of a response, held for a slow reader before its thread waits


THREADS = ConnectionLimits.threads
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


def _create_server(app, limits: ConnectionLimits, **listen) -> _Serving:
    """waitress's ``create_server``, with ``BoundedServer`` listening (on ``host``/``port`` or ``sockets``)."""
    adj = Adjustments(
        **listen, ident="appliance", threads=limits.threads,
        # waitress refuses a body of max_request_body_size or more: exactly MAX_REQUEST_BYTES still passes.
        max_request_body_size=MAX_REQUEST_BYTES + 1, max_request_header_size=MAX_REQUEST_BYTES,
        channel_timeout=limits.idle_timeout_s, cleanup_interval=max(1, min(5, limits.idle_timeout_s // 2)),
        outbuf_high_watermark=limits.send_buffer_bytes,  # (BoundedServer keeps to limits.connections itself)
    )
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.set_thread_count(adj.threads)
    socket_map: dict = {}
    if adj.sockets:
        servers = [BoundedServer(app, socket_map, True, sock, dispatcher=dispatcher, adj=adj, bind_socket=False,
                                  sockinfo=(sock.family, sock.type, sock.proto, sock.getsockname()), limits=limits)
                   for sock in adj.sockets]
    else:
        servers = []
        try:
            for sockinfo in adj.listen:
                servers.append(BoundedServer(app, socket_map, dispatcher=dispatcher, adj=adj, sockinfo=sockinfo,
                                              limits=limits))
        except OSError:
            for server in servers:
                server.close()
            dispatcher.shutdown()
            raise
    return _Serving(servers, socket_map, dispatcher, adj)


class _Serving:
    """The listening sockets of one page: one loop, one socket map, one pool of worker threads."""

    def __init__(self, servers, socket_map, task_dispatcher, adj):
        self.map, self.task_dispatcher, self.adj = socket_map, task_dispatcher, adj
        self.effective_listen = [(server.effective_host, server.effective_port) for server in servers]
        self.effective_port = self.effective_listen[0][1]
        self.trigger = servers[0].trigger

    def run(self) -> None:
        wasyncore.loop(timeout=self.adj.asyncore_loop_timeout, map=self.map, use_poll=self.adj.asyncore_use_poll)


class Channel(HTTPChannel):
    """waitress's connection, knowing its client (``client_key``: an IPv4 address or an IPv6 /64)."""

    def __init__(self, server, sock, addr, adj, map=None):
        super().__init__(server, sock, addr, adj, map=map)
        self.client = client_key(addr[0] if isinstance(addr, tuple) else "")


class BoundedServer(waitress.server.TcpWSGIServer):
    """waitress's TCP server that makes room for a new connection instead of refusing it.

    waitress stops accepting at its connection limit until a connection times out, so a
    stranger's idle sockets would keep everyone else out for minutes. Here every connection
    in the socket map (all listening sockets share it) counts; when a client address or the
    whole server is at its limit, the connections of that address (or of anyone) that have
    waited longest with no request in progress are closed to make room. Only when every
    connection is busy does the server stop accepting, and new ones wait in the kernel's queue."""

    channel_class = Channel

    def __init__(self, *args, limits: ConnectionLimits, **kwargs):
        self.limits = limits
        super().__init__(*args, **kwargs)

    def channels(self) -> list:
        """The open connections of every listening socket (they share one map), less those closing."""
        return [c for c in self._map.values()
                if isinstance(c, Channel) and c.connected and not (c.will_close or c.close_when_flushed)]

    def readable(self):
        now = time.time()
        if now >= self.next_channel_cleanup:
            self.next_channel_cleanup = now + self.adj.cleanup_interval
            self.maintenance(now)
        if not self.accepting:
            return False
        by_address = self._by_address()
        if sum(map(len, by_address.values())) < self.limits.connections:
            return True
        return any(_can_go(c, now) for c in max(by_address.values(), key=len))  # what _make_room would close

    def handle_accept(self):
        """waitress's own ``handle_accept``, keeping the new channel to make room for it."""
        try:
            accepted = self.accept()
            if accepted is None:
                return
            conn, addr = accepted
            self.set_socket_options(conn)
        except OSError:  # the client gave up before it was accepted
            return
        newest = self.channel_class(self, conn, self.fix_addr(addr), self.adj, map=self._map)
        self._make_room(newest.client, time.time())

    def _make_room(self, address: str, now: float) -> None:
        """Over a limit, close idle connections (``_can_go``), longest waiting first: the address's
        own, then, over the server's limit, those of the address that holds the most, and only
        theirs, so a crowd from one machine never closes another's. Never a busy one: while none
        can go the server is just over its limit, and stops accepting (``readable``)."""
        mine = self._by_address().get(address, [])
        _close_idle(mine, len(mine) - self.limits.connections_per_address, now)
        by_address = self._by_address()
        total = sum(map(len, by_address.values()))
        if total > self.limits.connections:
            _close_idle(max(by_address.values(), key=len), total - self.limits.connections, now)

    def _by_address(self) -> dict[str, list]:
        by_address: dict[str, list] = {}
        for channel in self.channels():
            by_address.setdefault(channel.client, []).append(channel)
        return by_address

    def maintenance(self, now):
        """Close connections silent for ``idle_timeout_s``: with no request in progress (waitress's
        own rule), or with a response their client has stopped reading, which frees its thread.

        waitress only marks them (``will_close``), which is acted on when the socket turns writable:
        never, for a client that reads nothing. They are closed on the loop's thread through its
        trigger, after this turn's ``select()``, which may already hold their descriptors."""
        cutoff = now - self.adj.channel_timeout
        silent = [c for c in self.active_channels.values()
                  if c.last_activity < cutoff and (not c.requests or c.total_outbufs_len)]
        if silent:
            self.trigger.pull_trigger(lambda: _close_silent(silent, cutoff))


def _close_silent(channels, cutoff: float) -> None:
    for channel in channels:
        if channel.connected and channel.last_activity < cutoff:  # still silent
            if channel.requests:
                log.info("closing the connection of %s: it stopped reading its response", channel.client)
            channel.handle_close()


NEW_CONNECTION_GRACE_S = 0.5  # a new connection's time to send its request (one round trip) before it may go


def _can_go(channel, now: float) -> bool:
    """Whether a connection may be closed to make room: no request of its running or queued, nothing
    of a response left to send, and open long enough to have sent its request on a LAN."""
    return (not channel.requests and not channel.total_outbufs_len
            and now - channel.creation_time >= NEW_CONNECTION_GRACE_S)


def _close_idle(channels: list, count: int, now: float) -> None:
    """Close the ``count`` longest waiting of ``channels`` that may go."""
    for channel in sorted((c for c in channels if _can_go(c, now)), key=lambda c: c.last_activity)[:max(count, 0)]:
        channel.handle_close()  # after select(), on the loop's thread; no worker thread holds an idle channel


class WebServer:
    """The page for ``config``, on ``host:port``; ``run()`` blocks, ``start()`` runs it in a thread."""

    def __init__(self, config, config_path: Path | None = None, host=None, port=None,
                 limits: ConnectionLimits = ConnectionLimits()):
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
            self.server = _create_server(self.app, limits, sockets=[listening])
        else:
            host, port = host or config.web.host, config.web.port if port is None else port
            try:
                self.server = _create_server(self.app, limits, host=host, port=port)
            except (OSError, ValueError) as e:  # waitress says ValueError for a host it cannot resolve
                self.store.close()
                raise _listen_error(e, host, port) from None
        self._thread = None

    @property
    def url(self) -> str:
        host, port = self.server.effective_listen[0]
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
        sockets = self.server.map
        self.server.trigger.pull_trigger(lambda: wasyncore.close_all(sockets))

    def close(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self.stop()
            self._thread.join(timeout=5)
        self.server.task_dispatcher.shutdown()
        self.store.close()
