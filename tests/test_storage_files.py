"""``GET|HEAD|PUT /storage/<location id>/<key>`` (docs/download.md, "Directory locations"):
a directory location's files served by the real app, signed where private, streamed both ways."""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import tornado.httpclient
from tornado.iostream import IOStream
from tornado.tcpclient import TCPClient

from symbolon.conf import SettingsError
from symbolon.runtime import Runtime
from symbolon.storage.sources import StorageConfig, SymbolSource
from symbolon.storage.stores.directory import DirectoryStore
from tests.conftest import wait_until
from tests.downloads import get

KEY = "v1/xul.pdb/44E4EC8C2F41492B9369D6B9A059577C2/xul.sym"
BODY = b"MODULE windows x86_64 44E4EC8C2F41492B9369D6B9A059577C2 xul.pdb\n" * 40
LIMIT = 4096  # REQUEST_MAX_BODY_SIZE here: the body limit of the route's other methods


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@pytest.fixture
def directories(tmp_path: Path) -> dict[str, str]:
    return {
        "public": f"file://{tmp_path}/public?access=public",
        "private": f"file://{tmp_path}/private",
    }


@pytest.fixture
def settings(live_settings, directories):
    """The embedded S3 locations, then a public and a private directory."""
    return live_settings.replace(
        symbol_urls=(*live_settings.symbol_urls, *directories.values()),
        request_max_body_size=LIMIT,
    )


def directory(runtime: Runtime, url: str) -> DirectoryStore:
    store = runtime.stores.at(SymbolSource.parse(url, runtime.settings.symbol_file_prefix))
    assert isinstance(store, DirectoryStore)
    return store


@pytest.fixture
def public(runtime, directories, io_loop) -> DirectoryStore:
    store = directory(runtime, directories["public"])
    io_loop.run_sync(store.ensure)
    return store


@pytest.fixture
def private(runtime, directories, io_loop) -> DirectoryStore:
    store = directory(runtime, directories["private"])
    io_loop.run_sync(store.ensure)
    return store


def tmp_files(store: DirectoryStore) -> list[str]:
    return sorted(p.name for p in (Path(store.root) / ".tmp").iterdir())


# -- GET and HEAD


@pytest.mark.gen_test
async def test_a_public_directory_serves_its_files_unsigned(http_client, base_url, public):
    await public.put_bytes(KEY, BODY, content_type="text/plain")
    info = await public.head(KEY)
    assert info is not None
    url = await public.download_url(KEY, 60)
    assert url == f"/storage/{public.source.location_id}/{KEY}"
    response = await get(http_client, base_url, url)
    assert response.code == 200 and response.body == BODY
    headers = response.headers
    assert headers["ETag"] == f'"{md5(BODY)}"'
    assert headers["Content-Type"] == "text/plain"
    assert headers["Content-Length"] == str(len(BODY))
    assert headers["Accept-Ranges"] == "bytes"
    assert headers["Last-Modified"] == tornado.httputil.format_timestamp(info.last_modified)
    assert "Cache-Control" not in headers and "Content-Encoding" not in headers


@pytest.mark.gen_test
async def test_a_download_found_in_a_private_directory_redirects_to_its_signed_url(
    http_client, base_url, private
):
    debug_id = uuid.uuid4().hex.upper() + "1"
    await private.put_bytes(private.source.object_key(f"dir.pdb/{debug_id}/dir.sym"), BODY)
    found = await get(http_client, base_url, f"/dir.pdb/{debug_id}/dir.sym")
    assert found.code == 302
    location = urlsplit(found.headers["Location"])
    assert (location.scheme, location.netloc) == ("", "")  # relative: no Host echoed
    assert location.path.startswith(f"/storage/{private.source.location_id}/v1/dir.pdb/")
    assert "signature=" in location.query
    followed = await http_client.fetch(f"{base_url}/dir.pdb/{debug_id}/dir.sym")
    assert followed.body == BODY


@pytest.mark.gen_test
async def test_a_file_stored_without_a_type_is_sent_as_s3_sends_it(http_client, base_url, public):
    await public.put_bytes(KEY, BODY)
    response = await get(http_client, base_url, await public.download_url(KEY, 60))
    assert response.headers["Content-Type"] == "binary/octet-stream"


@pytest.mark.gen_test
async def test_head_answers_the_headers_without_the_body(http_client, base_url, public):
    await public.put_bytes(KEY, BODY)
    response = await get(http_client, base_url, await public.download_url(KEY, 60), "HEAD")
    assert response.code == 200 and response.body == b""
    assert response.headers["Content-Length"] == str(len(BODY))
    assert response.headers["ETag"] == f'"{md5(BODY)}"'


@pytest.mark.gen_test
async def test_a_gzipped_file_is_served_as_stored_with_its_encoding(
    http_client, base_url, public, tmp_path
):
    stored = gzip.compress(BODY)
    source = tmp_path / "xul.sym.gz"
    source.write_bytes(stored)
    await public.put_file(KEY, source, content_type="text/plain", content_encoding="gzip")
    url = base_url + await public.download_url(KEY, 60)
    raw = await http_client.fetch(url, decompress_response=False)
    assert raw.body == stored
    assert raw.headers["Content-Encoding"] == "gzip"
    assert raw.headers["Content-Length"] == str(len(stored))
    assert raw.headers["ETag"] == f'"{md5(stored)}"'
    assert (await http_client.fetch(url)).body == BODY  # what a client that inflates reads


@pytest.mark.gen_test
async def test_a_private_directory_needs_a_valid_signature(http_client, base_url, private):
    await private.put_bytes(KEY, BODY)
    signed = await private.download_url(KEY, 60)
    parts = urlsplit(signed)
    assert "signature=" in parts.query and "expires=" in parts.query

    assert (await get(http_client, base_url, signed)).body == BODY
    assert (await get(http_client, base_url, signed, "HEAD")).code == 200

    async def refused(path: str, method: str = "GET") -> str:
        response = await get(http_client, base_url, path, method)
        assert response.code == 403
        assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
        return response.body.decode()

    assert "not signed" in await refused(parts.path)
    assert await refused(parts.path, "HEAD") == ""  # the same answer, without its body
    tampered = parts.query[:-4] + ("0000" if not parts.query.endswith("0000") else "1111")
    assert "does not match" in await refused(f"{parts.path}?{tampered}")
    other_key = parts.path.replace("xul.sym", "other.sym")
    assert "does not match" in await refused(f"{other_key}?{parts.query}")
    expired = await private.download_url(KEY, -1)
    assert "expired" in await refused(expired)


@pytest.mark.gen_test
async def test_a_public_directory_serves_nothing_of_a_private_location_inside_it(
    http_client, base_url, public
):
    inner = DirectoryStore(SymbolSource.parse(f"file://{public.root}/try"), "s" * 32)
    await inner.ensure()
    await inner.put_bytes(KEY, BODY)
    through_public = f"/storage/{public.source.location_id}/try/{KEY}"
    for method in ("GET", "HEAD"):
        assert (await get(http_client, base_url, through_public, method)).code == 404


@pytest.mark.gen_test
async def test_the_route_serves_configured_directories_with_their_configured_access(
    http_client, base_url, runtime, private, directories, tmp_path
):
    """A URL read from the database (an upload's destination) may name a configured directory
    with another access, or a directory no longer configured: neither changes what is served."""
    await private.put_bytes(KEY, BODY)
    flipped = runtime.stores.at(SymbolSource.parse(f"{directories['private']}?access=public"))
    assert flipped is private
    unsigned = f"/storage/{private.source.location_id}/{KEY}"
    assert (await get(http_client, base_url, unsigned)).code == 403
    elsewhere = runtime.stores.at(SymbolSource.parse(f"file://{tmp_path}/gone?access=public"))
    await elsewhere.ensure()
    await elsewhere.put_bytes(KEY, BODY)
    assert (await get(http_client, base_url, await elsewhere.download_url(KEY, 60))).code == 404


def test_directories_inside_one_another_with_different_access_stop_start_up(settings, tmp_path):
    outer, inner = f"file://{tmp_path}/s?access=public", f"file://{tmp_path}/s/try"

    def storage(*urls: str, try_url: str | None = None) -> StorageConfig:
        return StorageConfig.from_settings(
            settings.replace(
                symbol_urls=urls, upload_default_url=urls[0], upload_try_symbols_url=try_url
            )
        )

    for urls, try_url, named in [
        ((outer,), inner, inner),
        ((outer, f"file://{tmp_path}/s"), f"{inner}?access=public", f"file://{tmp_path}/s"),
    ]:
        with pytest.raises(SettingsError) as refused:
            storage(*urls, try_url=try_url)
        assert any(outer in p and f"{named}'" in p for p in refused.value.problems)
    # The same access, or directories side by side, are fine.
    storage(outer, try_url=f"{inner}?access=public")
    storage(outer, f"file://{tmp_path}/sx", try_url=f"{inner}?access=public")
    storage(outer)  # the derived try directory has the directory's access


@pytest.mark.gen_test
async def test_signatures_stay_out_of_the_access_log(http_client, base_url, private, caplog):
    await private.put_bytes(KEY, BODY)
    with caplog.at_level(logging.INFO, logger="symbolon.access"):
        assert (await get(http_client, base_url, await private.download_url(KEY, 60))).code == 200
        url, _ = await private.upload_url(KEY, 60)
        assert (await get(http_client, base_url, url, "PUT", body=b"x")).code == 200
    logged = [r.getMessage() for r in caplog.records if r.name == "symbolon.access"]
    assert [line.split()[0] for line in logged] == ["GET", "PUT"]
    assert not any("signature" in line for line in logged)


@pytest.mark.gen_test
async def test_unknown_locations_and_missing_objects_are_404(
    http_client, base_url, public, runtime
):
    bucket = runtime.storage.sources[0]
    assert not bucket.is_directory
    await public.put_bytes(KEY, BODY)  # v1/ there: a lookup reaches the names below it
    for path in (
        f"/storage/{'0' * 16}/{KEY}",
        f"/storage/{bucket.location_id}/{KEY}",
        f"/storage/{public.source.location_id}/v1/missing",
        f"/storage/{public.source.location_id}/v1/.meta/x",
        f"/storage/{public.source.location_id}/v1/%2E%2E/x",
        f"/storage/{public.source.location_id}/v1/{'L' * 300}/x",
    ):
        for method in ("GET", "HEAD"):
            response = await get(http_client, base_url, path, method)
            assert response.code == 404, (method, path)


@pytest.mark.parametrize(
    "path",
    ["/.meta/ABC/x.sym", "/%2E/ABC/x.sym", "/%2E%2E/ABC/x.sym", f"/{'A' * 300}/ABC/x.sym"],
)
@pytest.mark.gen_test
async def test_a_download_no_directory_can_hold_is_not_found(
    http_client, base_url, public, private, path, caplog
):
    """S3 could hold such a key; the directories say they have none, rather than failing."""
    await public.put_bytes(KEY, BODY)  # v1/ there: a lookup reaches the names below it
    await private.put_bytes(KEY, BODY)
    with caplog.at_level(logging.ERROR):
        response = await get(http_client, base_url, path)
    assert response.code == 404
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.gen_test
async def test_ranges(http_client, base_url, public):
    await public.put_bytes(KEY, BODY)
    url = await public.download_url(KEY, 60)
    size = len(BODY)

    async def ranged(value: str, **headers: str) -> tornado.httpclient.HTTPResponse:
        return await get(http_client, base_url, url, headers={"Range": value, **headers})

    response = await ranged("bytes=2-5")
    assert (response.code, response.body) == (206, BODY[2:6])
    assert response.headers["Content-Range"] == f"bytes 2-5/{size}"
    assert response.headers["Content-Length"] == "4"
    assert response.headers["ETag"] == f'"{md5(BODY)}"'  # the whole object's
    response = await ranged("bytes=-3")
    assert (response.code, response.body) == (206, BODY[-3:])
    response = await ranged(f"bytes={size - 2}-{size + 100}")
    assert (response.code, response.body) == (206, BODY[-2:])
    response = await ranged(f"bytes={size}-")
    assert response.code == 416
    assert response.headers["Content-Range"] == f"bytes */{size}"
    response = await get(http_client, base_url, url, "HEAD", headers={"Range": f"bytes={size}-"})
    assert response.code == 416
    response = await get(http_client, base_url, url, "HEAD", headers={"Range": "bytes=1-2"})
    assert (response.code, response.headers["Content-Length"]) == (206, "2")
    for whole in ("bytes=0-1,4-5", "bytes=5-2", "lines=1-2", "bytes=x-"):
        response = await ranged(whole)
        assert (response.code, response.body) == (200, BODY), whole
    response = await ranged("bytes=2-5", **{"If-Range": f'"{md5(BODY)}"'})
    assert response.code == 206
    response = await ranged("bytes=2-5", **{"If-Range": '"changed since"'})
    assert (response.code, response.body) == (200, BODY)


@pytest.mark.gen_test
async def test_conditional_get(http_client, base_url, public):
    await public.put_bytes(KEY, BODY)
    url = await public.download_url(KEY, 60)
    first = await get(http_client, base_url, url)
    etag, modified = first.headers["ETag"], first.headers["Last-Modified"]

    response = await get(http_client, base_url, url, headers={"If-None-Match": etag})
    assert (response.code, response.body) == (304, b"")
    assert response.headers["ETag"] == etag
    response = await get(http_client, base_url, url, headers={"If-None-Match": '"other"'})
    assert response.code == 200
    response = await get(http_client, base_url, url, headers={"If-Modified-Since": modified})
    assert response.code == 304
    long_ago = "Mon, 01 Jan 2001 00:00:00 GMT"
    response = await get(http_client, base_url, url, headers={"If-Modified-Since": long_ago})
    assert (response.code, response.body) == (200, BODY)


def open_descriptors(path: Path) -> int:
    """How many of this process's file descriptors have ``path`` open."""
    count = 0
    for fd in Path("/proc/self/fd").iterdir():
        try:
            count += fd.readlink() == path
        except OSError:
            continue  # closed meanwhile
    return count


@pytest.mark.gen_test
async def test_a_date_no_calendar_holds_is_no_date(http_client, base_url, public):
    await public.put_bytes(KEY, BODY)
    url = await public.download_url(KEY, 60)
    for headers in (
        {"If-Modified-Since": "Mon, 01 Jan 99999999999 00:00:00 GMT"},
        {"Range": "bytes=0-1", "If-Range": "Mon, 01 Jan 2020 00:00:00 +99999999999999999999"},
    ):
        response = await get(http_client, base_url, url, headers=headers)
        assert (response.code, response.body) == (200, BODY), headers


@pytest.mark.gen_test
async def test_an_uncaught_exception_is_logged_without_the_signature(
    http_client, base_url, private, monkeypatch, caplog
):
    await private.put_bytes(KEY, BODY)
    url = await private.download_url(KEY, 60)

    def broken(key: str) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(private, "open_file", broken)
    with caplog.at_level(logging.ERROR):
        assert (await get(http_client, base_url, url)).code == 500
    (logged,) = [r for r in caplog.records if r.name == "tornado.application"]
    assert urlsplit(url).path in logged.getMessage() and logged.exc_info is not None
    assert not any("signature" in r.getMessage() for r in caplog.records)


@pytest.mark.gen_test
async def test_a_client_gone_mid_download_leaves_the_file_closed(public, http_server, http_port):
    big = b"s" * (16 * 1024 * 1024)  # more than the sockets' buffers hold
    await public.put_bytes(KEY, big)
    stream = await TCPClient().connect("127.0.0.1", http_port)
    await stream.write(f"GET {public.url_path(KEY)} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await stream.read_until(b"\r\n\r\n")
    await stream.read_bytes(64 * 1024)
    path = Path(public.root) / KEY
    assert open_descriptors(path) == 1  # being sent, a chunk at a time
    stream.close()
    assert await wait_until(lambda: open_descriptors(path) == 0, 10)


@pytest.mark.gen_test
async def test_other_methods_are_405_within_the_usual_body_limit(http_client, base_url, public):
    url = await public.download_url(KEY, 60)
    response = await get(http_client, base_url, url, "DELETE")
    assert response.code == 405
    assert response.headers["Allow"] == "GET, HEAD, PUT"
    response = await get(http_client, base_url, url, "POST", body=b"x" * (LIMIT + 1))
    assert response.code == 413


# -- PUT


async def put(
    http_client: tornado.httpclient.AsyncHTTPClient, base_url: str, url: str, body: Any, **kw: Any
) -> tornado.httpclient.HTTPResponse:
    return await get(http_client, base_url, url, "PUT", body=body, **kw)


@pytest.mark.gen_test
async def test_a_signed_put_stores_what_was_signed_and_serves_it_back(
    http_client, base_url, private
):
    stored = gzip.compress(BODY)
    meta = {"original_size": str(len(BODY)), "original_md5_hash": md5(BODY)}
    url, headers = await private.upload_url(
        KEY, 60, content_type="text/plain", content_encoding="gzip", metadata=meta
    )
    # The headers sent do not change what is stored: the signed query does.
    response = await put(
        http_client, base_url, url, stored, headers={"Content-Type": "text/html", **headers}
    )
    assert response.code == 200
    assert response.headers["ETag"] == f'"{md5(stored)}"'
    info = await private.head(KEY)
    assert info is not None
    assert (info.etag, info.size, info.content_type, info.content_encoding) == (
        md5(stored),
        len(stored),
        "text/plain",
        "gzip",
    )
    assert dict(info.metadata) == meta
    served = await http_client.fetch(
        base_url + await private.download_url(KEY, 60), decompress_response=False
    )
    assert served.body == stored
    assert (served.headers["Content-Encoding"], served.headers["Content-Type"]) == (
        "gzip",
        "text/plain",
    )
    assert tmp_files(private) == []


@pytest.mark.gen_test
async def test_a_put_replaces_the_object(http_client, base_url, public):
    await public.put_bytes(KEY, b"old", content_type="text/old")
    url, _ = await public.upload_url(KEY, 60)
    assert (await put(http_client, base_url, url, b"new")).code == 200
    info = await public.head(KEY)
    assert info is not None and (info.etag, info.content_type) == (md5(b"new"), None)


@pytest.mark.gen_test
async def test_a_put_of_a_key_the_directory_cannot_hold_is_400_saying_why(
    http_client, base_url, public
):
    longest = "f" * 250  # the longest file name whose sidecar's name fits
    for key, why in [
        (f"v1/{'L' * 300}/x.sym", "key too long"),
        (f"v1/{longest}x", "key too long"),
        ("v1/xul.pdb", "names a directory"),  # KEY's directory
        (f"{KEY}/under", "another object is where"),
    ]:
        await public.put_bytes(KEY, BODY)
        url, _ = await public.upload_url(key, 60)
        response = await put(http_client, base_url, url, b"x")
        assert response.code == 400, key
        assert why in response.body.decode(), key
        assert public.root not in response.body.decode()
    assert (
        await put(http_client, base_url, (await public.upload_url(f"v1/{longest}", 60))[0], b"x")
    ).code == 200
    assert tmp_files(public) == []


@pytest.mark.gen_test
async def test_a_put_without_a_valid_put_signature_is_403(http_client, base_url, public):
    path = public.url_path(KEY)
    url, _ = await public.upload_url(KEY, 60, content_type="text/plain")
    expired, _ = await public.upload_url(KEY, -1)
    for refused in (
        path,  # a public directory is read unsigned, never written unsigned
        await public.download_url(KEY, 60),
        url.replace("text%2Fplain", "text%2Fhtml"),
        url.replace("max_size=", "max_size=9"),
        expired,
    ):
        response = await put(http_client, base_url, refused, BODY)
        assert response.code == 403, refused
        assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert await public.head(KEY) is None
    assert tmp_files(public) == []


@pytest.mark.gen_test
async def test_a_put_past_the_signed_size_is_413_and_leaves_nothing(http_client, base_url, public):
    url, _ = await public.upload_url(KEY, 60, max_size=100)
    assert (await put(http_client, base_url, url, b"x" * 100)).code == 200
    await public.delete([KEY])

    response = await put(http_client, base_url, url, b"x" * 101)
    assert response.code == 413
    assert b"limit is 100 bytes" in response.body

    async def chunked(write: Callable[[bytes], Awaitable[None]]) -> None:
        for _ in range(10):
            await write(b"y" * 30)

    response = await put(http_client, base_url, url, None, body_producer=chunked)
    assert response.code == 413
    assert await wait_until(lambda: tmp_files(public) == [], 10)
    assert await public.head(KEY) is None


async def send_head(port: int, path: str, length: int) -> IOStream:
    stream = await TCPClient().connect("127.0.0.1", port)
    lines = [f"PUT {path} HTTP/1.1", "Host: localhost", f"Content-Length: {length}"]
    await stream.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    return stream


@pytest.mark.gen_test
async def test_a_client_gone_mid_put_leaves_nothing(public, http_server, http_port):
    url, _ = await public.upload_url(KEY, 60)
    stream = await send_head(http_port, url, 1024 * 1024)
    await stream.write(b"z" * 200_000)
    # The body is being written to a temporary file...
    assert await wait_until(lambda: len(tmp_files(public)) == 1, 10)
    stream.close()
    # ...which goes with the client; no object appears.
    assert await wait_until(lambda: tmp_files(public) == [], 10)
    assert await public.head(KEY) is None
    assert not (Path(public.root) / "v1").exists()


async def read_answer(stream: IOStream) -> tuple[bytes, bytes]:
    """The status line and the body of the next answer on ``stream``."""
    head = await stream.read_until(b"\r\n\r\n")
    headers = tornado.httputil.HTTPHeaders.parse(head.decode("latin-1").partition("\r\n")[2])
    body = await stream.read_bytes(int(headers.get("Content-Length", "0")))
    return head.partition(b"\r\n")[0], body


@pytest.mark.gen_test
async def test_a_refused_put_reads_a_small_body_before_answering(public, http_server, http_port):
    await public.put_bytes(KEY, BODY)
    stream = await send_head(http_port, public.url_path(KEY), LIMIT)
    try:
        await stream.write(b"x" * LIMIT)
        status, body = await read_answer(stream)
        assert status == b"HTTP/1.1 403 Forbidden" and b"not signed" in body
        # The body was read, not left unread: the connection serves the next request.
        await stream.write(f"GET {public.url_path(KEY)} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert await read_answer(stream) == (b"HTTP/1.1 200 OK", BODY)
    finally:
        stream.close()


@pytest.mark.gen_test
async def test_a_put_declared_past_its_size_is_refused_before_it_is_sent(
    public, http_server, http_port
):
    url, _ = await public.upload_url(KEY, 60, max_size=10)
    stream = await send_head(http_port, url, 10**12)
    answer = await stream.read_until(b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 413")
    stream.close()
    assert tmp_files(public) == []


@pytest.mark.gen_test
async def test_a_big_put_streams_through_a_small_request_limit(http_client, base_url, public):
    big = bytes(range(256)) * 4096  # 1 MiB, well past REQUEST_MAX_BODY_SIZE here
    url, _ = await public.upload_url(KEY, 60, max_size=len(big))
    assert (await put(http_client, base_url, url, big)).code == 200
    served = await get(http_client, base_url, await public.download_url(KEY, 60))
    assert served.body == big


# -- start-up


@pytest.mark.gen_test
async def test_every_start_clears_what_writers_killed_mid_write_left(settings, tmp_path):
    """Not only the embedded location: a configured directory uploads write to is swept too."""
    from symbolon.server.lifecycle import connect

    root = tmp_path / "uploads-here"
    url = root.as_uri()
    (root / ".tmp").mkdir(parents=True)
    (root / ".meta").mkdir()
    stale = root / ".tmp" / "left-by-a-kill"
    stale.write_bytes(b"half")
    long_ago = 2 * 86400
    os.utime(stale, (time.time() - long_ago, time.time() - long_ago))
    fresh = root / ".tmp" / "still-being-written"
    fresh.write_bytes(b"writing")
    runtime = await connect(
        settings.replace(symbol_urls=(url,), upload_default_url=url, storage_is_embedded=False)
    )
    try:
        assert not stale.exists()
        assert fresh.exists()  # a write under way elsewhere is left alone
    finally:
        await runtime.close()


@pytest.mark.gen_test
async def test_a_missing_directory_stops_start_up_and_is_not_made(settings, tmp_path):
    from symbolon.server.lifecycle import StartupError, connect

    mistyped = tmp_path / "symbolz"
    url = mistyped.as_uri()
    with pytest.raises(StartupError, match="does not exist"):
        await connect(
            settings.replace(symbol_urls=(url,), upload_default_url=url, storage_is_embedded=False)
        )
    assert not mistyped.exists()


# -- existence lookups


@pytest.mark.gen_test
async def test_directories_answer_lookups_without_redis_which_keeps_the_buckets_answers(
    runtime, public, private
):
    """A stat costs less than a Redis round trip: only buckets' answers are shared in Redis."""
    key = f"missing-{uuid.uuid4().hex[:8]}.pdb/0123456789ABCDEF0123456789ABCDEF1/x.sym"
    lookup = runtime.lookup
    assert await lookup.find(key, include_try=False) is None
    sources = lookup.regular
    assert any(s.is_directory for s in sources) and any(not s.is_directory for s in sources)
    stored = await runtime.cache.get_many([lookup.cache_key(s, key) for s in sources])
    for source, value in zip(sources, stored, strict=True):
        assert (value is None) == source.is_directory, source.url
    # And a file stored since is found at once, with no invalidation to wait for.
    await private.put_bytes(private.source.object_key(key), BODY)
    await lookup.invalidate([key])
    found = await lookup.find(key, include_try=False)
    assert found is not None and found.source.url == private.source.url
