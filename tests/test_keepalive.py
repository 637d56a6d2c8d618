"""Keep-alive connections of ``serve``'s HTTP server (server/keepalive.py): idle ones, slow
headers and bodies that stop coming are cut off by a sweep rather than a timer per request, a
request under way is not, and TCP_NODELAY stays set between answers."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

import pytest
import tornado.ioloop
import tornado.netutil
import tornado.web

from symbolon.conf import Settings
from symbolon.server import app as server_app
from symbolon.server.app import make_app, make_server
from symbolon.server.keepalive import KeepAliveHTTPServer
from tests.conftest import wait_until
from tests.crashes import headers_for, report

IDLE = 0.5
WITHIN = 30
REQUEST = b"GET /__lbheartbeat__ HTTP/1.1\r\nHost: x\r\n\r\n"


class Slow(tornado.web.RequestHandler):
    async def get(self) -> None:
        await asyncio.sleep(4 * IDLE)  # longer than a connection may wait for its headers
        self.finish("done")

    def post(self) -> None:
        self.finish(str(len(self.request.body)))


@tornado.web.stream_request_body
class Pausing(tornado.web.RequestHandler):
    """Takes longer than the idle time over the body's first piece: its client is held back
    meanwhile, not idle."""

    def prepare(self) -> None:
        self.received = 0

    async def data_received(self, chunk: bytes) -> None:
        if not self.received:
            await asyncio.sleep(4 * IDLE)
        self.received += len(chunk)

    def post(self) -> None:
        self.finish(str(self.received))


Client = tuple[KeepAliveHTTPServer, asyncio.StreamReader, asyncio.StreamWriter]


@asynccontextmanager
async def connected(runtime: Any) -> AsyncIterator[Client]:
    """``serve``'s server for one web process, with a short idle time, and a connection to it."""
    server = make_server(make_app(runtime, [(r"/slow", Slow), (r"/pausing", Pausing)]))
    [sock] = tornado.netutil.bind_sockets(0, "127.0.0.1")
    server.add_socket(sock)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", sock.getsockname()[1])
        try:
            yield server, reader, writer
        finally:
            writer.close()
    finally:
        server.stop()
        await server.close_all_connections()


async def cut_off(reader: asyncio.StreamReader) -> None:
    """Until the server closes the connection unanswered; with bytes it left unread, Linux
    closes it with a reset."""
    with suppress(ConnectionResetError):
        assert await asyncio.wait_for(reader.read(), WITHIN) == b""


async def answer(reader: asyncio.StreamReader) -> bytes:
    """One answer's head and body (its Content-Length)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WITHIN)
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return head + await asyncio.wait_for(reader.readexactly(length), WITHIN)


async def ask(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, times: int) -> None:
    """``times`` requests on one keep-alive connection, each answered 200."""
    for _ in range(times):
        writer.write(REQUEST)
        assert (await answer(reader)).startswith(b"HTTP/1.1 200")


@pytest.fixture(autouse=True)
def short_idle_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_app, "IDLE_CONNECTION_SECONDS", IDLE)


@pytest.fixture
def settings(live_settings: Settings) -> Settings:
    # Longer than the idle time: the crash collector's own rule must still answer.
    return live_settings.replace(collector_body_timeout=4 * IDLE)


@pytest.mark.gen_test(timeout=60)
async def test_an_idle_keep_alive_connection_is_closed(runtime):
    async with connected(runtime) as (_, reader, writer):
        await ask(reader, writer, 1)
        # Nothing more is asked: the server closes the connection.
        assert await asyncio.wait_for(reader.read(), WITHIN) == b""


async def trickle(writer: asyncio.StreamWriter) -> None:
    """Header lines, one every 0.1 s, never the blank line that ends them."""
    with suppress(ConnectionError):
        while not writer.is_closing():
            writer.write(b"X-Slow: 1\r\n")
            await writer.drain()
            await asyncio.sleep(0.1)


@pytest.mark.gen_test(timeout=60)
async def test_headers_sent_too_slowly_are_cut_off(runtime):
    async with connected(runtime) as (_, reader, writer):
        writer.write(b"GET /__lbheartbeat__ HTTP/1.1\r\n")
        began = time.monotonic()
        sending = asyncio.create_task(trickle(writer))
        try:
            await cut_off(reader)
            assert time.monotonic() - began >= IDLE
        finally:
            writer.close()  # the trickle stops
            await sending


@pytest.mark.gen_test(timeout=60)
async def test_a_request_under_way_longer_than_the_idle_time_is_answered(runtime):
    async with connected(runtime) as (_, reader, writer):
        writer.write(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        got = await answer(reader)
        assert got.startswith(b"HTTP/1.1 200") and got.endswith(b"done"), got


@pytest.mark.gen_test(timeout=60)
async def test_connections_keep_tcp_nodelay_between_answers(runtime):
    async with connected(runtime) as (server, reader, writer):
        await ask(reader, writer, 3)
        [connection] = server._connections
        sock = connection.stream.socket
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


@pytest.mark.gen_test(timeout=60)
async def test_waiting_for_requests_sets_no_timer_per_request(runtime, monkeypatch):
    """The idle time is kept by one sweep, not a timer made and cancelled per request."""
    loop = tornado.ioloop.IOLoop.current()
    timers = 0
    add_timeout = loop.add_timeout

    def counting(*args: Any, **kwargs: Any) -> object:
        nonlocal timers
        timers += 1
        return add_timeout(*args, **kwargs)

    monkeypatch.setattr(loop, "add_timeout", counting)
    # The sweep's own timer is counted too: with the real idle time it runs every 5 s.
    monkeypatch.setattr(server_app, "IDLE_CONNECTION_SECONDS", 75.0)
    async with connected(runtime) as (_, reader, writer):
        await ask(reader, writer, 50)
    assert timers < 10


@pytest.mark.gen_test(timeout=60)
async def test_a_body_that_stops_coming_is_cut_off(runtime):
    async with connected(runtime) as (_, reader, writer):
        writer.write(b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
        writer.write(b"x" * 10)  # and nothing more
        began = time.monotonic()
        await cut_off(reader)
        assert time.monotonic() - began >= IDLE


@pytest.mark.gen_test(timeout=60)
async def test_a_body_sent_slowly_but_steadily_is_answered(runtime):
    async with connected(runtime) as (_, reader, writer):
        writer.write(b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n\r\n")
        for _ in range(20):  # 4 times the idle time in all, a byte every fifth of it
            writer.write(b"x")
            await writer.drain()
            await asyncio.sleep(IDLE / 5)
        got = await answer(reader)
        assert got.startswith(b"HTTP/1.1 200") and got.endswith(b"\r\n\r\n20"), got


@pytest.mark.gen_test(timeout=60)
async def test_a_client_held_back_by_a_slow_handler_is_not_cut_off(runtime):
    size = 32 * 1024 * 1024  # more than the sockets' buffers hold: the client has to wait
    async with connected(runtime) as (_, reader, writer):
        writer.write(b"POST /pausing HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size)
        piece = b"x" * (1024 * 1024)
        for _ in range(size // len(piece)):
            writer.write(piece)
            await asyncio.wait_for(writer.drain(), WITHIN)
        got = await answer(reader)
        assert got.startswith(b"HTTP/1.1 200") and got.endswith(b"%d" % size), got


def in_body(server: KeepAliveHTTPServer) -> bool:
    """Whether the server has read a request's headers and waits for its body."""
    return any(
        conn._request_start_line is not None and not conn._read_finished
        for _, conn in server._waits.values()
    )


@pytest.mark.gen_test(timeout=60)
async def test_a_stalled_body_is_closed_at_the_second_sweep_that_finds_it(runtime):
    async with connected(runtime) as (server, _, writer):
        writer.write(b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
        writer.write(b"x" * 10)
        assert await wait_until(lambda: in_body(server), WITHIN)
        assert server._sweep is not None
        server._sweep.stop()  # swept by hand from here
        await asyncio.sleep(1.5 * IDLE)
        [connection] = server._connections
        server.close_idle()
        assert not connection.stream.closed()  # marked only
        server.close_idle()
        assert connection.stream.closed()


@pytest.mark.gen_test(timeout=60)
async def test_a_crash_report_body_keeps_the_collectors_own_timeout(runtime):
    """COLLECTOR_BODY_TIMEOUT, here longer than the idle time, answers 408 itself."""
    body = report({"ProductName": "Firefox"})
    head = "POST /submit HTTP/1.1\r\nHost: x\r\n"
    for name, value in headers_for(**{"Content-Length": str(len(body) + 1000)}).items():
        head += f"{name}: {value}\r\n"
    async with connected(runtime) as (_, reader, writer):
        writer.write(head.encode() + b"\r\n" + body)  # and the rest never comes
        began = time.monotonic()
        got = await asyncio.wait_for(reader.read(), WITHIN)
        assert got.startswith(b"HTTP/1.1 408"), got
        assert time.monotonic() - began >= 4 * IDLE
