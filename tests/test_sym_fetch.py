"""Fetching sym files from upstream symbol servers (docs/symbolication.md), against real HTTP
servers on 127.0.0.1 that answer as scripted: retries, timeouts, encodings, source order."""

from __future__ import annotations

import gzip
import os

import pytest
from markus.testing import MetricsMock
from tornado.testing import bind_unused_port

from symbolon.symbolication.sym_fetch import sym_filename, upstream_url
from tests.symbolication_support import Upstream, new_id, put_own, sym, with_debug_id


@pytest.fixture
def settings(symbolication_settings):
    """The app of these tests has an upstream and a symcache directory of its own."""
    return symbolication_settings


DEMO = "examples/libdemo.so.sym"


def demo(ident: str) -> bytes:
    return with_debug_id(sym(DEMO), ident)


async def found(symbolication, name: str, ident: str) -> bool:
    outcome = await symbolication.module((name, ident))
    return outcome.table is not None


@pytest.fixture
def second(io_loop):
    server = Upstream()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def two_sources(symbolication, upstream, second):
    symbolication.fetcher.upstream_urls = (upstream.url, second.url)
    return upstream, second


def test_urls_follow_the_reference():
    base = "https://symbols.example.com/try"
    assert upstream_url(base, ("xul.pdb", "44E4EC8C2F41492B9369D6B9A059577C2")) == (
        "https://symbols.example.com/try/xul.pdb/44E4EC8C2F41492B9369D6B9A059577C2/xul.sym"
    )
    assert upstream_url(base + "/", ("libstdc++.so.6", "abc")).endswith(
        "/try/libstdc++.so.6/abc/libstdc++.so.6.sym"
    )
    assert upstream_url(base, ("Font Awesome 5.otf", "ABC")).endswith(
        "/Font%20Awesome%205.otf/ABC/Font%20Awesome%205.otf.sym"
    )
    assert upstream_url(base, ("<unknown>", "ABC")).endswith("/%3Cunknown%3E/ABC/%3Cunknown%3E.sym")
    assert upstream_url(base, ("{a}@b.xpi", "0")).endswith("/%7Ba%7D@b.xpi/0/%7Ba%7D@b.xpi.sym")
    assert sym_filename("foo.PDB") == "foo.PDB.sym"
    assert sym_filename("xpcshell.dbg") == "xpcshell.dbg.sym"


@pytest.mark.gen_test(timeout=60)
async def test_request_headers_and_percent_encoded_paths(upstream, symbolication):
    ident = new_id()
    assert not await found(symbolication, "Font Awesome 5.otf", ident)
    assert upstream.hits == [f"/symbols/Font%20Awesome%205.otf/{ident}/Font%20Awesome%205.otf.sym"]
    headers = upstream.headers[0]
    assert headers["User-Agent"].startswith("symbolon")
    assert headers["Accept-Encoding"] == "gzip, deflate"


@pytest.mark.gen_test(timeout=60)
async def test_retryable_statuses_are_retried_until_success(upstream, symbolication):
    ident = new_id()
    path = upstream.put("libdemo.so", ident, demo(ident))
    upstream.script[path] = [500, 503, 429, 504]
    with MetricsMock() as mm:
        assert await found(symbolication, "libdemo.so", ident)
    assert upstream.hits == [path] * 5
    # One sample per source per module, covering all its attempts.
    downloads = mm.filter_records("histogram", stat="eliot.downloader.download")
    assert [r.tags for r in downloads] == [["response:fail"], ["response:success"]]  # own, then up


@pytest.mark.gen_test(timeout=60)
async def test_five_attempts_at_most(upstream, symbolication):
    ident = new_id()
    path = upstream.put("libdemo.so", ident, demo(ident))
    upstream.script[path] = [500] * 5
    assert not await found(symbolication, "libdemo.so", ident)
    assert upstream.hits == [path] * 5
    # A source that could not answer is no proof of absence: the next request asks again.
    assert await found(symbolication, "libdemo.so", ident)
    assert upstream.hits == [path] * 6


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("status", [404, 400, 401, 403, 502])
async def test_other_statuses_are_final(upstream, symbolication, status):
    ident = new_id()
    path = upstream.put("libdemo.so", ident, demo(ident))
    upstream.script[path] = [status]
    assert not await found(symbolication, "libdemo.so", ident)
    assert upstream.hits == [path]


@pytest.mark.gen_test(timeout=60)
async def test_an_error_moves_on_to_the_next_source(two_sources, symbolication):
    first, second = two_sources
    ident = new_id()
    path = first.put("libdemo.so", ident, demo(ident))
    first.script[path] = [403]
    second.put("libdemo.so", ident, demo(ident))
    assert await found(symbolication, "libdemo.so", ident)
    assert len(first.hits) == 1 and len(second.hits) == 1


@pytest.mark.gen_test(timeout=60)
async def test_the_first_source_that_has_it_wins(two_sources, symbolication):
    first, second = two_sources
    ident = new_id()
    first.put("libdemo.so", ident, demo(ident))
    second.put("libdemo.so", ident, b"never asked")
    assert await found(symbolication, "libdemo.so", ident)
    assert second.hits == []


@pytest.mark.gen_test(timeout=60)
async def test_a_refused_source_is_retried_then_skipped(upstream, symbolication):
    sock, port = bind_unused_port()
    sock.close()  # nothing listens there: connections are refused
    refused = f"http://127.0.0.1:{port}/symbols/"
    symbolication.fetcher.upstream_urls = (refused, upstream.url)
    ident = new_id()
    upstream.put("libdemo.so", ident, demo(ident))
    assert await found(symbolication, "libdemo.so", ident)


@pytest.mark.gen_test(timeout=60)
async def test_read_timeouts_are_retried(upstream, symbolication):
    symbolication.fetcher.read_timeout = 0.2
    ident = new_id()
    path = upstream.put("libdemo.so", ident, demo(ident))
    upstream.script[path] = [("sleep", 1.0)]
    assert await found(symbolication, "libdemo.so", ident)
    assert upstream.hits == [path, path]


@pytest.mark.gen_test(timeout=60)
async def test_a_source_that_trickles_past_the_deadline_gives_way_to_the_next(
    two_sources, symbolication
):
    first, second = two_sources
    symbolication.fetcher.deadline = 0.5  # each piece comes within the read timeout
    ident = new_id()
    slow = first.put("libdemo.so", ident, demo(ident))
    first.script[slow] = [("trickle", 3.0)]
    second.put("libdemo.so", ident, demo(ident))
    outcome = await symbolication.module(("libdemo.so", ident))
    assert outcome.table is not None
    assert first.hits == [slow]  # given up, not retried
    assert second.hits == [slow]


@pytest.mark.gen_test(timeout=60)
async def test_a_trickling_only_source_is_an_error_not_a_miss(upstream, symbolication):
    symbolication.fetcher.deadline = 0.5
    ident = new_id()
    path = upstream.put("libdemo.so", ident, demo(ident))
    upstream.script[path] = [("trickle", 3.0)]
    assert not await found(symbolication, "libdemo.so", ident)
    assert await found(symbolication, "libdemo.so", ident)  # not remembered as missing


@pytest.mark.gen_test(timeout=60)
async def test_a_sym_file_over_the_size_limit_is_refused_for_that_source(
    two_sources, symbolication
):
    first, second = two_sources
    ident = new_id()
    small = demo(ident)
    symbolication.fetcher.max_size = len(small) + 100
    path = first.put("libdemo.so", ident, small + b"INFO padding\n" * 1000)
    second.put("libdemo.so", ident, small)
    assert await found(symbolication, "libdemo.so", ident)
    assert first.hits == [path] and second.hits == [path]


@pytest.mark.gen_test(timeout=60)
async def test_a_sym_file_over_the_size_limit_in_own_storage_is_refused(
    settings, upstream, symbolication
):
    ident = new_id()
    small = demo(ident)
    # Stored gzip-compressed: the limit is on the bytes received, so the padding is random.
    symbolication.fetcher.max_size = len(gzip.compress(small)) + 100
    padded = small + b"INFO " + os.urandom(4000).hex().encode() + b"\n"
    put_own(settings, f"libdemo.so/{ident}/libdemo.so.sym", padded)
    upstream.put("libdemo.so", ident, small)
    assert await found(symbolication, "libdemo.so", ident)  # from upstream instead
    assert len(upstream.hits) == 1


@pytest.mark.gen_test(timeout=60)
async def test_gzip_content_encoding_is_inflated(upstream, symbolication):
    ident = new_id()
    path = upstream.put("libdemo.so", ident, b"")
    upstream.script[path] = [("gzip", demo(ident))]
    assert await found(symbolication, "libdemo.so", ident)


@pytest.mark.gen_test(timeout=60)
async def test_gzip_bytes_without_the_header_do_not_parse(upstream, symbolication):
    ident = new_id()
    path = upstream.put("libdemo.so", ident, b"")
    upstream.script[path] = [("raw-gzip", demo(ident))]
    with MetricsMock() as mm:
        assert not await found(symbolication, "libdemo.so", ident)
    errors = mm.filter_records("incr", stat="eliot.symbolicate.parse_sym_file.error")
    assert [r.tags for r in errors] == [["reason:sym_malformed"]]


@pytest.mark.gen_test(timeout=60)
async def test_a_body_that_lies_about_gzip_is_an_error_for_that_source(two_sources, symbolication):
    first, second = two_sources
    ident = new_id()
    path = first.put("libdemo.so", ident, b"")
    first.script[path] = [("bad-gzip", demo(ident))]
    second.put("libdemo.so", ident, demo(ident))
    assert await found(symbolication, "libdemo.so", ident)
    assert len(first.hits) == 1  # not retried


@pytest.mark.gen_test(timeout=60)
async def test_parse_error_reasons(upstream, symbolication):
    mismatch, malformed = new_id(), new_id()
    upstream.put("a.so", mismatch, sym(DEMO))
    upstream.put("b.so", malformed, gzip.compress(b"binary"))
    upstream.put("c.so", "ABCDE", sym(DEMO))
    with MetricsMock() as mm:
        for key in (("a.so", mismatch), ("b.so", malformed), ("c.so", "ABCDE")):
            assert not await found(symbolication, *key)
    errors = mm.filter_records("incr", stat="eliot.symbolicate.parse_sym_file.error")
    assert [r.tags for r in errors] == [
        ["reason:sym_debug_id_lookup_error"],
        ["reason:sym_malformed"],
        ["reason:bad_debug_id"],
    ]
    assert len(mm.filter_records("timing", stat="eliot.symbolicate.parse_sym_file.parse")) == 3


@pytest.mark.gen_test(timeout=60)
async def test_own_storage_honours_try_symbols(settings, upstream, symbolication):
    ident = new_id()
    # The try location of the upload default: <bucket>/try/v1/...
    put_own(settings, f"libdemo.so/{ident}/libdemo.so.sym", demo(ident), try_symbols=True)
    assert await found(symbolication, "libdemo.so", ident)
    assert upstream.hits == []
    other = new_id()
    put_own(settings, f"libdemo.so/{other}/libdemo.so.sym", demo(other), try_symbols=True)
    symbolication.fetcher.include_try = False
    assert not await found(symbolication, "libdemo.so", other)


@pytest.mark.gen_test(timeout=60)
async def test_a_compressed_body_cut_short_does_not_parse(upstream, symbolication):
    ident = new_id()
    path = upstream.put("libdemo.so", ident, b"")
    upstream.script[path] = [("cut-gzip", demo(ident) * 50)]
    with MetricsMock() as mm:
        assert not await found(symbolication, "libdemo.so", ident)
    errors = mm.filter_records("incr", stat="eliot.symbolicate.parse_sym_file.error")
    assert [r.tags for r in errors] == [["reason:sym_malformed"]]


def test_inflated_size_hints():
    from symbolon.symbolication import inflate

    body = gzip.compress(b"x" * 100_000)
    assert inflate.inflated_size_hint(body[-4:], len(body)) == 100_000
    assert inflate.inflated_size_hint(b"", 1000) == 6000  # deflate: no trailer, an estimate
    assert inflate.inflate(body) == b"x" * 100_000
    with pytest.raises(inflate.DecodeError):
        inflate.inflate(body[:-12])
    with pytest.raises(inflate.DecodeError):
        inflate.probe(b"not compressed at all")
