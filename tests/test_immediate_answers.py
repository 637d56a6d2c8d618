"""Cached download hits answered without a request handler (server/immediate.py): the same
answer, byte for byte, as the handler's, against real S3 (moto) and Redis."""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from symbolon.handlers.download import DownloadHandler
from symbolon.runtime import Runtime
from tests.conftest import s3_client, s3_endpoint, wait_until
from tests.downloads import behind_a_proxy

BUCKET = "immediate"


@pytest.fixture(scope="module")
def bucket(live_settings):
    client = s3_client(s3_endpoint(live_settings))
    client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture
def settings(live_settings, bucket):
    url = f"{s3_endpoint(live_settings)}/{BUCKET}"
    # HSTS on, so that the output transforms' work shows in the comparison too.
    return live_settings.replace(
        symbol_urls=(url,), upload_default_url=url, secure_hsts_seconds=3600
    )


def stored(bucket, name: str = "xul") -> str:
    """A new symbol file in the bucket; its download path (upper-case id)."""
    ident = uuid.uuid4().hex.upper() + "1"
    key = f"{name}.pdb/{ident}/{name}.sym"
    bucket.put_object(Bucket=BUCKET, Key=f"v1/{key}", Body=b"MODULE windows x86_64 0 xul.pdb\n")
    return f"/{key}"


@asynccontextmanager
async def connection(runtime: Runtime) -> AsyncIterator[Exchange]:
    """One connection to the app served as ``serve`` serves it, once the memo is trusted."""
    assert await wait_until(lambda: runtime.lookup.memo.active)
    with behind_a_proxy(runtime) as base:
        host, port = base.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            yield Exchange(reader, writer)
        finally:
            writer.close()


class Exchange:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def ask(
        self, path: str, version: str = "HTTP/1.1", method: str = "GET", **headers: str
    ) -> bytes:
        """The answer as sent, without its ``Date`` (which changes every second)."""
        lines = [f"{method} {path} {version}", "Host: symbols.example.com", "User-Agent: test"]
        lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 10)
        length = re.search(rb"\r\nContent-Length: (\d+)\r\n", head)
        assert length is not None
        body = b"" if method == "HEAD" else await self.reader.readexactly(int(length[1]))
        dated = (line for line in head.split(b"\r\n") if not line.startswith(b"Date:"))
        return b"\r\n".join(dated) + body


@pytest.fixture
def handlers(monkeypatch) -> list[DownloadHandler]:
    """Every DownloadHandler made from now on."""
    made: list[DownloadHandler] = []
    initialize = DownloadHandler.initialize

    def counted(self: DownloadHandler, **kwargs: bool) -> None:
        made.append(self)
        initialize(self, **kwargs)

    monkeypatch.setattr(DownloadHandler, "initialize", counted)
    return made


@pytest.mark.gen_test(timeout=30)
async def test_a_remembered_hit_is_answered_without_a_handler(runtime, bucket, handlers):
    path = stored(bucket)
    async with connection(runtime) as http:
        first = await http.ask(path)
        assert first.startswith(b"HTTP/1.1 302 Found\r\n")
        assert len(handlers) == 1  # storage was asked: the handler's work
        again = [await http.ask(path) for _ in range(3)]
    assert again == [first] * 3
    assert len(handlers) == 1


@pytest.mark.gen_test(timeout=30)
async def test_the_answer_is_the_handlers_byte_for_byte(runtime, bucket, handlers):
    """A ``Debug`` header that asks for nothing sends a request to the handler and changes
    nothing in its answer: each request is asked once each way."""
    path = stored(bucket)
    lower = path.replace(path.split("/")[2], path.split("/")[2].lower())
    cases: list[tuple[str, str, dict[str, str]]] = [
        (path, "HTTP/1.1", {}),
        (path + "?code_file=xul.dll&code_id=5A", "HTTP/1.1", {}),
        (path + "?try", "HTTP/1.1", {}),
        ("/try" + path, "HTTP/1.1", {}),
        ("/firefox" + path, "HTTP/1.1", {}),
        (lower, "HTTP/1.1", {}),
        (path, "HTTP/1.1", {"X_Forwarded_Proto": "https"}),  # HSTS, behind the proxy
        (path, "HTTP/1.0", {"Connection": "keep-alive"}),
    ]
    answers = []
    async with connection(runtime) as http:
        await http.ask(path)  # remembered from now on
        for target, version, headers in cases:
            made = len(handlers)
            immediate = await http.ask(target, version, **headers)
            assert len(handlers) == made, target
            handled = await http.ask(target, version, Debug="no", **headers)
            assert len(handlers) == made + 1, target
            assert immediate == handled, target
            assert immediate.startswith(b"HTTP/1.1 302 Found\r\n")
            answers.append(immediate)
    assert b"\r\nStrict-Transport-Security: max-age=3600\r\n" in answers[-2]
    assert b"\r\nConnection: Keep-Alive\r\n" in answers[-1]


@pytest.mark.gen_test(timeout=30)
async def test_what_memory_cannot_answer_goes_to_the_handler(runtime, bucket, handlers):
    path = stored(bucket)
    async with connection(runtime) as http:
        await http.ask(path)
        made = len(handlers)
        # A token to check (a bad one is a 403, even for a file everyone may download).
        refused = await http.ask(path, Auth_Token=uuid.uuid4().hex)
        assert refused.startswith(b"HTTP/1.1 403 ")
        # Timings asked for.
        assert b"\r\nDebug-Time: " in await http.ask(path, Debug="1")
        # A lookup that must ask storage again.
        assert (await http.ask(path + "?_refresh")).startswith(b"HTTP/1.1 302 ")
        # A file never asked for, and one storage does not have.
        assert (await http.ask(stored(bucket, "new"))).startswith(b"HTTP/1.1 302 ")
        missing = path.replace(".sym", ".nope.sym")
        assert (await http.ask(missing)).startswith(b"HTTP/1.1 404 ")
        assert (await http.ask(missing)).startswith(b"HTTP/1.1 404 ")  # misses are recorded
        assert len(handlers) == made + 6
        # A HEAD of the remembered file.
        head = await http.ask(path, method="HEAD")
        assert head.startswith(b"HTTP/1.1 200 ") and b"Location" not in head
        assert len(handlers) == made + 7


@pytest.mark.gen_test(timeout=30)
async def test_an_immediate_answer_is_logged_and_timed(runtime, bucket, caplog, metricsmock):
    path = stored(bucket)
    async with connection(runtime) as http:
        await http.ask(path)
        metricsmock.clear_records()
        with caplog.at_level(logging.INFO, logger="symbolon.access"):
            await http.ask(path + "?x=1")
    lines = [r.getMessage() for r in caplog.records if r.name == "symbolon.access"]
    assert len(lines) == 1 and lines[0].startswith(f"GET {path}?x=1 302 ")
    metricsmock.assert_timing_once("symbolon.download_symbol")


@pytest.mark.gen_test(timeout=30)
async def test_a_failing_memory_answer_is_left_to_the_handler(
    runtime, bucket, handlers, monkeypatch, caplog
):
    path = stored(bucket)

    def broken(*args: object) -> None:
        raise RuntimeError("broken")

    async with connection(runtime) as http:
        expected = await http.ask(path)
        monkeypatch.setattr(DownloadHandler, "answer_from_memory", classmethod(broken))
        assert await http.ask(path) == expected
    assert len(handlers) == 2
    assert "DownloadHandler could not answer from memory" in caplog.text
