"""Keep-alive connections spread over the web processes of one ``serve`` (docs/operations.md).

Each web process accepts from a SO_REUSEPORT socket of its own, where the kernel places a new
connection by a hash of its addresses and ports, so a few long-lived connections can all land
on one process. Every process publishes how many connections it holds (those carrying load) in
memory shared by the processes; one holding at least ``MARGIN`` more than the least-loaded
answers one request with ``Connection: close`` and closes after that response, and the client's
next connection is hashed again.
"""

from __future__ import annotations

import ctypes
import fcntl
import multiprocessing
import socket
import termios
import time
from collections.abc import Awaitable, Callable
from typing import Any

import tornado.ioloop
import tornado.iostream
from tornado import httputil
from tornado.http1connection import HTTP1Connection

from symbolon.server.keepalive import KeepAliveHTTPServer

# A process closes a connection only when it holds this many more than the least-loaded one, so
# shares that differ by one (an odd count) stay put.
MARGIN = 2
# After closing one, a process waits for a new connection to arrive anywhere (the client coming
# back) before closing another; this long at most, for a client that does not come back.
RECONNECT_WAIT_SECONDS = 1.0
NOT_SERVING = -1
# A connection counts as load while a request is in progress on it, or for this long after one
# ended or it was accepted; the counts are brought up to date this often.
ACTIVE_WITHIN_SECONDS = 10.0
AGING_EVERY_SECONDS = 1.0


class ConnectionShares:
    """Open connections per web process, one slot per process, made before forking.

    Each process writes only its own slot; reads of the others may be a moment stale, which
    costs at most one needless reconnection."""

    def __init__(self, processes: int) -> None:
        self.open = multiprocessing.RawArray(ctypes.c_long, [NOT_SERVING] * processes)
        self.accepted = multiprocessing.RawArray(ctypes.c_long, processes)
        # Connections marked to close after their answer, not closed yet.
        self.closing = multiprocessing.RawArray(ctypes.c_long, processes)
        self.slot = -1
        self.serving = False
        self._waiting_since: tuple[int, float] | None = None

    def serve_as(self, slot: int) -> None:
        """This process is the one of ``slot`` from now on."""
        self.slot, self.serving = slot, True
        self.open[slot] = 0
        self.closing[slot] = 0

    def stopped(self, slot: int) -> None:
        """The process of ``slot`` accepts no more: the others send no connections its way."""
        if slot == self.slot:
            self.serving = False  # the connections it closes while stopping change nothing
        self.open[slot] = NOT_SERVING
        self.closing[slot] = 0

    def set_open(self, count: int, accepted: bool = False) -> None:
        if not self.serving:
            return
        self.open[self.slot] = count
        if accepted:
            self.accepted[self.slot] += 1

    def set_closing(self, count: int) -> None:
        if self.serving:
            self.closing[self.slot] = count

    def over_share(self) -> bool:
        """Whether this process should give one of its connections up now."""
        if not self.serving:
            return False
        serving = [i for i, n in enumerate(self.open) if n != NOT_SERVING]
        others = [self.open[i] - self.closing[i] for i in serving if i != self.slot]
        if not others:
            return False
        # A connection marked to close still counts where it is until its (maybe slow) answer
        # is sent, yet its client is about to connect again: it is taken off its process and
        # counted as coming to the least-loaded one, so that marks are not repeated for it.
        coming = sum(self.closing[i] for i in serving)
        mine = self.open[self.slot] - self.closing[self.slot]
        if mine < min(others) + coming + MARGIN:
            return False
        if self._waiting_since is not None:
            since, at = self._waiting_since
            if sum(self.accepted) == since and time.monotonic() - at < RECONNECT_WAIT_SECONDS:
                return False
        return True

    def gave_up(self) -> None:
        """This process is closing a connection over its share: it waits for the client to
        come back before giving up another."""
        self._waiting_since = (sum(self.accepted), time.monotonic())


def pipelined(stream: tornado.iostream.IOStream) -> bool:
    """Whether the client already sent more than the request being answered: closing then
    would drop those requests and could reset the connection before the answer is read."""
    if stream._read_buffer_size:  # read by Tornado, not parsed yet
        return True
    sock = stream.socket
    if not isinstance(sock, socket.socket):
        return True
    try:
        waiting = bytearray(4)
        fcntl.ioctl(sock.fileno(), termios.FIONREAD, waiting)
    except OSError:
        return True
    return int.from_bytes(waiting, "little") > 0


class Rebalancing(httputil.HTTPMessageDelegate):
    """Wraps a request's delegate: once the request is read in full, and before its answer
    starts, marks the connection to be closed after that answer when this process holds more
    than its share."""

    def __init__(
        self,
        delegate: httputil.HTTPMessageDelegate,
        connection: httputil.HTTPConnection,
        shares: ConnectionShares,
        began: Callable[[], None],
        marked: Callable[[], None],
    ) -> None:
        self.delegate = delegate
        self.connection = connection
        self.shares = shares
        self.began = began
        self.marked = marked
        self.version = ""

    def headers_received(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
    ) -> Awaitable[None] | None:
        self.version = start_line.version
        self.began()
        return self.delegate.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        return self.delegate.data_received(chunk)

    def finish(self) -> None:
        connection = self.connection
        if (
            isinstance(connection, HTTP1Connection)
            # Tornado says ``Connection: close`` only to HTTP/1.1; an HTTP/1.0 keep-alive client
            # would be told Keep-Alive and then see the connection closed.
            and self.version == "HTTP/1.1"
            and connection._response_start_line is None  # the answer has not started
            and not connection._disconnect_on_finish  # nor is it closing anyway
            and connection.stream is not None
            and self.shares.over_share()
            and not pipelined(connection.stream)
        ):
            # Tornado then answers with ``Connection: close`` and closes once the answer is sent.
            connection._disconnect_on_finish = True
            self.shares.gave_up()
            self.marked()
        self.delegate.finish()

    def on_connection_close(self) -> None:
        self.delegate.on_connection_close()


class BalancingHTTPServer(KeepAliveHTTPServer):
    """An HTTP server that keeps ``shares`` up to date and gives up connections over its share.

    The connections it publishes are those carrying load: with a request in progress, or one
    that ended (or was accepted) within ``ACTIVE_WITHIN_SECONDS``; an idle connection, until it
    is closed, would otherwise make this process give up the active ones."""

    # Its own keyword beside HTTPServer's (Configurable passes the constructor's arguments).
    def initialize(  # type: ignore[override]
        self, *args: Any, shares: ConnectionShares, **kwargs: Any
    ) -> None:
        super().initialize(*args, **kwargs)
        self.shares = shares
        self._closing: set[object] = set()
        # Per connection: when it last began or ended a request, and the request in progress.
        self._activity: dict[object, tuple[float, HTTP1Connection | None]] = {}
        self._aging: tornado.ioloop.PeriodicCallback | None = None

    def active(self) -> int:
        """The connections carrying load now."""
        now = time.monotonic()
        count = 0
        for conn in self._connections:
            at, request = self._activity.get(conn, (now, None))
            if now - at < ACTIVE_WITHIN_SECONDS or (
                request is not None and not request._finish_future.done()
            ):
                count += 1
        return count

    def publish(self, accepted: bool = False) -> None:
        self.shares.set_open(self.active(), accepted=accepted)

    def handle_stream(self, stream: tornado.iostream.IOStream, address: tuple) -> None:
        super().handle_stream(stream, address)
        self.publish(accepted=True)
        if self._aging is None:  # here, on the event loop that serves
            self._aging = tornado.ioloop.PeriodicCallback(self.publish, AGING_EVERY_SECONDS * 1000)
            self._aging.start()

    def stop(self) -> None:
        super().stop()
        if self._aging is not None:
            self._aging.stop()

    def on_close(self, server_conn: object) -> None:
        super().on_close(server_conn)
        self._activity.pop(server_conn, None)
        self.publish()
        if server_conn in self._closing:
            self._closing.discard(server_conn)
            self.shares.set_closing(len(self._closing))

    def start_request(
        self, server_conn: object, request_conn: httputil.HTTPConnection
    ) -> httputil.HTTPMessageDelegate:
        # Called once the connection is accepted or its previous answer is sent.
        self._activity[server_conn] = (time.monotonic(), None)
        delegate = super().start_request(server_conn, request_conn)

        def began() -> None:
            if isinstance(request_conn, HTTP1Connection):
                now = time.monotonic()
                previous = self._activity.get(server_conn)
                self._activity[server_conn] = (now, request_conn)
                # The count changes only when an idle connection wakes: counting every
                # connection on each request would cost the busiest process the most.
                if previous is None or now - previous[0] >= ACTIVE_WITHIN_SECONDS:
                    self.publish()

        def marked() -> None:
            self._closing.add(server_conn)
            self.shares.set_closing(len(self._closing))

        return Rebalancing(delegate, request_conn, self.shares, began, marked)
