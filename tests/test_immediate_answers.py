"""Download answers given without a request handler (server/immediate.py): remembered hits and
misses and refused names, the same answer, byte for byte, as the handler's, against real S3
(moto), Redis and PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine

from symbolon.handlers.base import Answer, BaseHandler
from symbolon.handlers.download import DownloadHandler
from symbolon.runtime import Runtime
from symbolon.server.app import nothing_to_prepare
from symbolon.storage.lookup import UNKNOWN
from symbolon.symbols.keys import key_spellings
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
    """The app served as ``serve`` serves it, once the memo is trusted, and one connection to
    it; ``Exchange.another`` opens more."""
    assert await wait_until(lambda: runtime.lookup.memo.active)
    with behind_a_proxy(runtime) as base:
        host, port = base.removeprefix("http://").split(":")
        first = await Exchange.open(host, int(port))
        try:
            yield first
        finally:
            first.close()


class Exchange:
    def __init__(
        self, address: tuple[str, int], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.address, self.reader, self.writer = address, reader, writer

    @classmethod
    async def open(cls, host: str, port: int) -> Exchange:
        return cls((host, port), *await asyncio.open_connection(host, port))

    def close(self) -> None:
        self.writer.close()

    async def another(self) -> Exchange:
        return await Exchange.open(*self.address)

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

    async def ask_alone(self, path: str, version: str = "HTTP/1.1", **headers: str) -> bytes:
        """Asked on a connection of its own, which the answer may close."""
        other = await self.another()
        try:
            return await other.ask(path, version, **headers)
        finally:
            other.close()


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
        (path, "HTTP/1.1", {"Connection": "close"}),
        (path, "HTTP/1.0", {}),
    ]
    answers = []
    async with connection(runtime) as http:
        await http.ask(path)  # remembered from now on
        for target, version, headers in cases:
            made = len(handlers)
            immediate = await http.ask_alone(target, version, **headers)
            assert len(handlers) == made, target
            handled = await http.ask_alone(target, version, Debug="no", **headers)
            assert len(handlers) == made + 1, target
            assert immediate == handled, target
            assert immediate.startswith(b"HTTP/1.1 302 Found\r\n")
            answers.append(immediate)
    assert b"\r\nStrict-Transport-Security: max-age=3600\r\n" in answers[6]
    assert b"\r\nConnection: Keep-Alive\r\n" in answers[7]
    assert b"\r\nConnection: close\r\n" in answers[8]


def absent() -> str:
    """The download path of a file no storage has."""
    return f"/gone.pdb/{uuid.uuid4().hex.upper()}1/gone.sym"


@pytest.mark.gen_test(timeout=30)
async def test_a_remembered_miss_is_the_handlers_404_byte_for_byte(runtime, bucket, handlers):
    path = absent()
    query = "?code_file=gone.dll&code_id=5A"
    cases: list[tuple[str, str, dict[str, str]]] = [
        (path, "HTTP/1.1", {}),
        (path + query, "HTTP/1.1", {}),
        ("/try" + path, "HTTP/1.1", {}),
        (path, "HTTP/1.1", {"X_Forwarded_Proto": "https"}),
        (path, "HTTP/1.0", {"Connection": "keep-alive"}),
        (path, "HTTP/1.1", {"Connection": "close"}),
    ]
    async with connection(runtime) as http:
        for target in (path, path + query, "/try" + path):  # looked up and counted
            assert (await http.ask(target)).startswith(b"HTTP/1.1 404 ")
        made = len(handlers)
        for target, version, headers in cases:
            immediate = await http.ask_alone(target, version, **headers)
            assert len(handlers) == made, target
            handled = await http.ask_alone(target, version, Debug="no", **headers)
            assert len(handlers) == made + 1, target
            made += 1
            assert immediate == handled, target
            assert immediate.startswith(b"HTTP/1.1 404 Not Found\r\n")
            assert immediate.endswith(b"\r\n\r\nSymbol Not Found")
    rows = await runtime.db.fetch(
        "SELECT code_file, count FROM missing_symbols WHERE debugid = $1 ORDER BY code_file",
        path.split("/")[2],
    )
    assert [tuple(r) for r in rows] == [("gone.dll", 1), (None, 1)]  # each counted once


@pytest.mark.gen_test(timeout=30)
async def test_a_refused_name_is_the_handlers_answer_byte_for_byte(runtime, bucket, handlers):
    ident = uuid.uuid4().hex.upper() + "1"
    cases = {
        f"/xul.pdb/{ident}/xul.ptr": b"HTTP/1.1 404 ",  # ignored
        f"/xul.pdb/{'0' * 33}/xul.sym": b"HTTP/1.1 404 ",  # ignored
        f"/xul.pdb/{ident}/xul.exe": b"HTTP/1.1 404 ",  # an ending not allowed
        f"/x%5E.pdb/{ident}/xul.sym": b"HTTP/1.1 400 ",  # invalid characters
    }
    async with connection(runtime) as http:
        for target, status in cases.items():
            immediate = await http.ask(target)
            assert not handlers, target
            handled = await http.ask(target, Debug="no")
            assert len(handlers) == 1, target
            handlers.clear()
            assert immediate == handled, target
            assert immediate.startswith(status), target


@pytest.mark.gen_test(timeout=30)
async def test_an_immediate_miss_is_logged_and_timed(runtime, handlers, caplog, metricsmock):
    path = absent()
    async with connection(runtime) as http:
        await http.ask(path)
        made = len(handlers)
        metricsmock.clear_records()
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="symbolon.access"):
            await http.ask(path)
    assert len(handlers) == made
    records = [r for r in caplog.records if r.name == "symbolon.access"]
    assert [r.levelno for r in records] == [logging.WARNING]  # as every 4xx
    assert records[0].getMessage().startswith(f"GET {path} 404 ")
    metricsmock.assert_timing_once("symbolon.download_symbol")
    metricsmock.assert_timing_once("symbolon.download_store_missing_symbol")


@pytest.mark.gen_test(timeout=30)
async def test_an_upload_ends_a_remembered_miss_in_every_process(settings, runtime, bucket):
    """An upload in another process (a second runtime on the same Redis) makes this process
    forget the miss: the next request finds the file rather than answering 404 from memory."""
    path = absent()
    key = path.lstrip("/")
    other = await Runtime.create(settings)
    try:
        async with connection(runtime) as http:
            assert (await http.ask(path)).startswith(b"HTTP/1.1 404 ")
            assert (await http.ask(path)).startswith(b"HTTP/1.1 404 ")  # from memory
            bucket.put_object(Bucket=BUCKET, Key=f"v1/{key}", Body=b"MODULE")
            assert await wait_until(lambda: other.lookup.memo.active)
            await other.lookup.invalidate([key])  # what the upload does
            keys = key_spellings(*key.split("/"))
            assert await wait_until(lambda: runtime.lookup.remembered_any(keys, False) is UNKNOWN)
            assert (await http.ask(path)).startswith(b"HTTP/1.1 302 ")
    finally:
        await other.close()


@pytest.mark.gen_test(timeout=30)
async def test_a_miss_is_remembered_only_once_every_spelling_is(runtime, bucket, handlers):
    """A file is looked for under the upper-cased debug id, then the lower-cased one: the first
    remembered missing while the second is not known leaves the answer to the handler."""
    ident = uuid.uuid4().hex.upper() + "1"
    upper, lower = key_spellings("old.pdb", ident, "old.sym")
    async with connection(runtime) as http:
        assert (await http.ask(f"/{upper}")).startswith(b"HTTP/1.1 404 ")  # counted
        bucket.put_object(Bucket=BUCKET, Key=f"v1/{lower}", Body=b"MODULE")
        await runtime.lookup.invalidate([lower])  # the lower-cased spelling only
        assert (await http.ask(f"/{upper}")).startswith(b"HTTP/1.1 302 ")
        assert len(handlers) == 2


@pytest.mark.gen_test(timeout=30)
async def test_misses_are_answered_from_memory_when_none_are_counted(
    settings, runtime, bucket, handlers, metricsmock
):
    """With ``ENABLE_STORE_MISSING_SYMBOLS=false`` a remembered miss has nothing to count."""
    path = absent()
    quiet = await Runtime.create(settings.replace(enable_store_missing_symbols=False))
    try:
        async with connection(quiet) as http:
            assert (await http.ask(path)).startswith(b"HTTP/1.1 404 ")
            assert len(handlers) == 1
            metricsmock.clear_records()
            assert (await http.ask(path + "?code_file=x.dll")).startswith(b"HTTP/1.1 404 ")
            assert len(handlers) == 1
            metricsmock.assert_timing_once("symbolon.download_symbol")
            metricsmock.assert_not_timing("symbolon.download_store_missing_symbol")
            # Still the handler's 400 for a null character.
            assert (await http.ask(path + "?code_id=5%00")).startswith(b"HTTP/1.1 400 ")
            assert len(handlers) == 2
    finally:
        await quiet.close()
    debug_id = path.split("/")[2]
    assert (
        await runtime.db.fetch("SELECT 1 FROM missing_symbols WHERE debugid = $1", debug_id) == []
    )


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
        assert len(handlers) == made + 5
        # A remembered miss asked with code file and id not yet counted for it: counted.
        assert (await http.ask(missing + "?code_file=a.dll")).startswith(b"HTTP/1.1 404 ")
        # A null character in them: the handler's 400.
        assert (await http.ask(missing + "?code_id=5%00")).startswith(b"HTTP/1.1 400 ")
        # A debug id that may be a code id: looked up by code id, in Redis.
        code_id = f"/xul.dll/{uuid.uuid4().hex[:16].upper()}/xul.sym"
        assert (await http.ask(code_id)).startswith(b"HTTP/1.1 404 ")
        assert (await http.ask(code_id)).startswith(b"HTTP/1.1 404 ")
        assert len(handlers) == made + 9
        # Other methods: a HEAD of the remembered file, and one the route does not take.
        head = await http.ask(path, method="HEAD")
        assert head.startswith(b"HTTP/1.1 200 ") and b"Location" not in head
        assert (await http.ask(path, method="DELETE")).startswith(b"HTTP/1.1 405 ")
        assert len(handlers) == made + 11
        # A reused URL past its reuse.
        signed = runtime.lookup._signed
        for memo_key, (_, url) in list(signed.items()):
            signed[memo_key] = (time.monotonic() - 1, url)
        assert (await http.ask(path)).startswith(b"HTTP/1.1 302 ")
        assert len(handlers) == made + 12
        # The memo off (invalidations not reaching this process).
        runtime.lookup.memo.deactivate()
        assert (await http.ask(path)).startswith(b"HTTP/1.1 302 ")
        assert (await http.ask(missing)).startswith(b"HTTP/1.1 404 ")
        assert len(handlers) == made + 14


@pytest.mark.gen_test(timeout=30)
async def test_a_try_symbol_is_remembered_for_try_lookups_only(runtime, bucket, handlers):
    """Try symbols live under the upload location's try prefix and are looked in only when
    asked for (``?try``, ``/try/``): once remembered for such a lookup, a plain one still
    misses."""
    ident = uuid.uuid4().hex.upper() + "1"
    key = f"t.pdb/{ident}/t.sym"
    prefix = runtime.storage.upload_try.object_key(key)
    bucket.put_object(Bucket=runtime.storage.upload_try.bucket, Key=prefix, Body=b"MODULE")
    async with connection(runtime) as http:
        assert (await http.ask(f"/{key}?try")).startswith(b"HTTP/1.1 302 ")
        made = len(handlers)
        assert (await http.ask(f"/try/{key}")).startswith(b"HTTP/1.1 302 ")
        assert len(handlers) == made  # remembered
        assert (await http.ask(f"/{key}")).startswith(b"HTTP/1.1 404 ")
        assert len(handlers) == made + 1


@pytest.mark.gen_test(timeout=30)
async def test_an_immediate_answer_is_logged_and_timed(
    runtime, bucket, handlers, caplog, metricsmock
):
    path = stored(bucket)
    async with connection(runtime) as http:
        await http.ask(path)
        made = len(handlers)
        metricsmock.clear_records()
        with caplog.at_level(logging.INFO, logger="symbolon.access"):
            await http.ask(path + "?x=1")
    assert len(handlers) == made  # answered without one
    records = [r for r in caplog.records if r.name == "symbolon.access"]
    assert [r.levelno for r in records] == [logging.INFO]
    assert records[0].getMessage().startswith(f"GET {path}?x=1 302 ")
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


@pytest.mark.gen_test(timeout=30)
async def test_a_header_value_tornado_refuses_is_left_to_the_handler(
    runtime, bucket, handlers, monkeypatch
):
    """Tornado's ``set_header`` refuses control characters; so is the immediate answer, and the
    handler answers (here its 500) rather than a connection broken mid-answer."""
    path = stored(bucket)
    async with connection(runtime) as http:
        await http.ask(path)
        monkeypatch.setattr(
            runtime.lookup, "remembered_url", lambda *args: "http://symbols.example.com/\x01"
        )
        made = len(handlers)
        assert (await http.ask(path)).startswith(b"HTTP/1.1 500 ")
    assert len(handlers) == made + 1


def test_only_requests_prepare_would_let_through_skip_the_handler():
    def request(method: str = "GET", **headers: str) -> HTTPServerRequest:
        start = RequestStartLine(method, "/a.pdb/1/a.sym", "HTTP/1.1")
        return HTTPServerRequest(start_line=start, headers=HTTPHeaders(Host="x", **headers))

    class WithSessions(BaseHandler):
        uses_session = True

    assert nothing_to_prepare(request(), DownloadHandler)
    assert nothing_to_prepare(request(Cookie="session=1"), DownloadHandler)  # never reads it
    assert not nothing_to_prepare(request("HEAD"), DownloadHandler)
    assert not nothing_to_prepare(request(**{"Auth-Token": "x"}), DownloadHandler)
    assert nothing_to_prepare(request(), WithSessions)
    assert not nothing_to_prepare(request(Cookie="session=1"), WithSessions)


def test_an_answer_is_a_redirect_or_a_refusal():
    assert Answer(302, {}).status == 302
    assert Answer(404, {}, b"Symbol Not Found").body == b"Symbol Not Found"
    for status in (101, 200, 204, 304, 500, 503):
        with pytest.raises(ValueError):
            Answer(status, {})
