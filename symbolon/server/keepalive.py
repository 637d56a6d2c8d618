"""Keep-alive connections at a lower cost per request than Tornado's own handling.

Tornado times each wait for a request's headers with a timer of its own (``idle_connection_timeout``
becomes its header timeout), and turns Nagle's algorithm off and on again around every answer.
Together these were about a tenth of the CPU a small answer costs (bench/keepalive.py). Here
``TCP_NODELAY`` is set once per connection and stays set, and one sweep per server closes the
connections that have waited longer than the idle time for a request's headers: the same rule,
checked every tenth of the idle time (every 5 s at most) rather than timed per request.

The sweep also closes a connection whose request body has stopped coming: the server is waiting
to read it and the kernel has received none of its bytes for the idle time, at two sweeps in a
row (Tornado itself never bounds a body's pauses). While a handler works on a piece of a body of
declared length, the server is not waiting to read, so its client, held back meanwhile, is not
cut off; with a chunked body Tornado asks for the next piece first, so a client that also pauses
for the idle time then is. A handler that bounds the pauses itself says so (``times_own_body``).
"""

from __future__ import annotations

import socket
import struct
import time
import weakref
from typing import Any

import tornado.httpserver
import tornado.ioloop
import tornado.iostream
from tornado import httputil
from tornado.http1connection import HTTP1Connection, HTTP1ServerConnection

# A connection is closed between one and 1 + SWEEP_FRACTION times the idle time after it began
# waiting; the sweep runs at least this often.
SWEEP_FRACTION = 0.1
LONGEST_SWEEP_SECONDS = 5.0
# Linux's struct tcp_info: tcpi_last_data_recv, milliseconds since data last came, at this offset.
TCP_INFO = getattr(socket, "TCP_INFO", None)
LAST_DATA_RECV = struct.Struct("=I")
LAST_DATA_RECV_OFFSET = 52
TCP_INFO_ASKED = 104  # bytes of it asked for: the kernel gives what it has, up to that

# Requests whose handler bounds the pauses in their body itself: the sweep leaves them be.
_OWN_BODY_TIMERS: weakref.WeakSet[HTTP1Connection] = weakref.WeakSet()


def times_own_body(request: httputil.HTTPServerRequest) -> None:
    """The handler of ``request`` bounds the pauses in its body with a rule (and an answer) of
    its own: the sweep does not close its connection for them, whichever rule is longer."""
    if isinstance(request.connection, HTTP1Connection):
        _OWN_BODY_TIMERS.add(request.connection)


def keep_nodelay(stream: tornado.iostream.IOStream) -> None:
    """Set TCP_NODELAY on ``stream`` for good: Tornado's toggles around each answer do nothing."""
    stream.set_nodelay(True)
    stream.set_nodelay = _ignore_nodelay  # type: ignore[method-assign]


def _ignore_nodelay(value: bool) -> None:
    """Tornado's toggles around each answer, ignored: the socket keeps TCP_NODELAY, so every
    write goes out at once. Tornado writes an answer's headers and body together, and a
    streamed one in large pieces, so Nagle's algorithm would save no packets here. (A handler
    asking for Nagle's algorithm with ``set_nodelay(False)`` is ignored too; none does.)"""


class KeepAliveHTTPServer(tornado.httpserver.HTTPServer):
    """An HTTP server whose idle keep-alive connections, connections still sending their headers
    and requests whose body has stopped coming are closed after ``idle_connection_timeout``
    seconds by a periodic sweep."""

    def initialize(self, *args: Any, **kwargs: Any) -> None:
        super().initialize(*args, **kwargs)
        # The idle time, taken from Tornado's per-request timer, which is turned off.
        self.idle_seconds: float = self.conn_params.header_timeout or 3600.0
        self.conn_params.header_timeout = None
        # Per connection: when it began waiting for a request, and that request.
        self._waits: dict[HTTP1ServerConnection, tuple[float, HTTP1Connection]] = {}
        # Connections whose body had stopped coming at the last sweep: closed if still so.
        self._stalled: set[HTTP1ServerConnection] = set()
        self._sweep: tornado.ioloop.PeriodicCallback | None = None

    def handle_stream(self, stream: tornado.iostream.IOStream, address: tuple) -> None:
        keep_nodelay(stream)
        super().handle_stream(stream, address)
        if self._sweep is None:  # here, on the event loop that serves
            every = min(LONGEST_SWEEP_SECONDS, SWEEP_FRACTION * self.idle_seconds)
            self._sweep = tornado.ioloop.PeriodicCallback(self.close_idle, every * 1000)
            self._sweep.start()

    def start_request(
        self, server_conn: object, request_conn: httputil.HTTPConnection
    ) -> httputil.HTTPMessageDelegate:
        # Called when the connection is accepted or its previous answer is sent: the wait for
        # the next request's headers begins.
        if isinstance(server_conn, HTTP1ServerConnection) and isinstance(
            request_conn, HTTP1Connection
        ):
            self._waits[server_conn] = (time.monotonic(), request_conn)
        return super().start_request(server_conn, request_conn)

    def close_idle(self) -> None:
        """Close each connection whose request's headers have not all come within the idle
        time (an idle keep-alive connection, or a client sending its headers too slowly), and
        each whose request body has stopped coming for the idle time."""
        oldest = time.monotonic() - self.idle_seconds
        stalled = set()
        for server_conn, (since, request_conn) in list(self._waits.items()):
            if since >= oldest:
                continue  # neither rule can apply yet
            # Tornado sets the start line once the headers are read, and _read_finished once
            # the body is.
            if request_conn._request_start_line is None:
                server_conn.stream.close()
            elif (
                not request_conn._read_finished
                and request_conn not in _OWN_BODY_TIMERS
                and self._body_stalled(server_conn.stream)
            ):
                if server_conn in self._stalled:
                    server_conn.stream.close()
                else:
                    # Once more at the next sweep: the kernel's clock may predate a pause the
                    # handler ended just now, and the client's next bytes are on their way.
                    stalled.add(server_conn)
        self._stalled = stalled

    def _body_stalled(self, stream: tornado.iostream.IOStream) -> bool:
        """Whether the server waits to read from ``stream`` and no data came for the idle time
        (False where the kernel does not say: not Linux, or not TCP)."""
        if not stream.reading() or TCP_INFO is None:
            return False
        try:
            info = stream.socket.getsockopt(socket.IPPROTO_TCP, TCP_INFO, TCP_INFO_ASKED)
        except OSError:
            return False
        if len(info) < LAST_DATA_RECV_OFFSET + LAST_DATA_RECV.size:
            return False
        [quiet_ms] = LAST_DATA_RECV.unpack_from(info, LAST_DATA_RECV_OFFSET)
        return bool(quiet_ms >= self.idle_seconds * 1000)

    def on_close(self, server_conn: object) -> None:
        super().on_close(server_conn)
        if isinstance(server_conn, HTTP1ServerConnection):
            self._waits.pop(server_conn, None)
            self._stalled.discard(server_conn)

    def stop(self) -> None:
        super().stop()
        if self._sweep is not None:
            self._sweep.stop()
