"""A body of declared length read straight into its handler's buffer (server/body_buffer.py):
every piece a view into that buffer, the body whole, and the connection's next request its own."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import logging
import os
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import tornado.httpserver
import tornado.netutil
import tornado.web

from symbolon.server.body_buffer import read_body_into

WITHIN = 30


@tornado.web.stream_request_body
class Into(tornado.web.RequestHandler):
    """Answers the body's SHA-256, its length and whether every piece was read in place. With
    ``?short=1`` its buffer is one byte short."""

    closed = asyncio.Event()
    connections: list[weakref.ref] = []

    def prepare(self) -> None:
        length = int(self.request.headers["Content-Length"])
        if self.get_argument("short", None):
            length -= 1
        self.buffer = bytearray(length)
        self.in_place = read_body_into(self.request, memoryview(self.buffer))
        self.connections.append(weakref.ref(self.request.connection))
        self.pieces: list[bool] = []
        self.received = bytearray()

    def data_received(self, chunk: bytes) -> None:
        self.pieces.append(isinstance(chunk, memoryview) and chunk.obj is self.buffer)
        self.received += chunk

    def on_connection_close(self) -> None:
        super().on_connection_close()
        self.closed.set()

    def post(self) -> None:
        self.finish(
            f"{hashlib.sha256(self.received).hexdigest()} {len(self.received)} "
            f"{self.in_place and all(self.pieces)} {len(self.pieces)}"
        )


@asynccontextmanager
async def connection() -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    server = tornado.httpserver.HTTPServer(tornado.web.Application([(r"/into", Into)]))
    [sock] = tornado.netutil.bind_sockets(0, "127.0.0.1")
    server.add_socket(sock)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", sock.getsockname()[1])
        try:
            yield reader, writer
        finally:
            writer.close()
    finally:
        server.stop()
        await server.close_all_connections()


def request(body: bytes, query: str = "") -> bytes:
    head = f"POST /into{query} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


async def answer(reader: asyncio.StreamReader) -> str:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WITHIN)
    assert head.startswith(b"HTTP/1.1 200"), head
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return (await asyncio.wait_for(reader.readexactly(length), WITHIN)).decode()


def expected(body: bytes, in_place: bool = True) -> tuple[str, str, str]:
    return hashlib.sha256(body).hexdigest(), str(len(body)), str(in_place)


@pytest.mark.gen_test(timeout=60)
async def test_a_body_sent_in_pauses_lands_whole_in_the_handlers_buffer():
    body = os.urandom(700_000)
    async with connection() as (reader, writer):
        data = request(body)
        for start in range(0, len(data), 100_000):  # the server reads it in several pieces
            writer.write(data[start : start + 100_000])
            await writer.drain()
            await asyncio.sleep(0.02)
        digest, length, in_place, pieces = (await answer(reader)).split()
        assert (digest, length, in_place) == expected(body)
        assert int(pieces) > 1


@pytest.mark.gen_test(timeout=60)
async def test_the_next_request_on_the_connection_keeps_its_own_bytes():
    first, second = os.urandom(300_000), os.urandom(5_000)
    async with connection() as (reader, writer):
        writer.write(request(first) + request(second))  # the second right behind the first
        await writer.drain()
        assert tuple((await answer(reader)).split()[:3]) == expected(first)
        assert tuple((await answer(reader)).split()[:3]) == expected(second)


@pytest.mark.gen_test(timeout=60)
async def test_a_client_gone_in_the_middle_of_the_body_ends_the_request_quietly(caplog):
    Into.closed = asyncio.Event()
    async with connection() as (_, writer):
        writer.write(request(os.urandom(400_000))[:200_000])
        await writer.drain()
        writer.close()
        await asyncio.wait_for(Into.closed.wait(), WITHIN)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.gen_test(timeout=60)
async def test_a_buffer_of_another_length_leaves_the_body_to_tornado():
    body = os.urandom(200_000)
    async with connection() as (reader, writer):
        writer.write(request(body, "?short=1"))
        await writer.drain()
        digest, length, in_place, _ = (await answer(reader)).split()
        assert (digest, length, in_place) == expected(body, in_place=False)


@pytest.mark.gen_test(timeout=60)
async def test_a_request_read_in_place_is_freed_without_the_cyclic_collector():
    """Else each request's buffer would stay in memory until a full collection."""
    Into.connections = []
    gc.collect()
    gc.disable()
    try:
        async with connection() as (reader, writer):
            for _ in range(3):
                writer.write(request(os.urandom(100_000)))
                await writer.drain()
                await answer(reader)
            # The first two are over: the server reads the third with a connection object of
            # its own.
            assert [ref() for ref in Into.connections[:2]] == [None, None]
    finally:
        gc.enable()
