"""POST /upload/ when things go wrong: slow servers to fetch from, bodies past the limit, clients
that go away, a broker that does not take the task. Nothing is left staged and no upload is left
"processing" with nothing to process it (docs/upload.md, "What happens")."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from contextlib import suppress
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest
import redis
import tornado.httpserver
import tornado.web
from tornado.testing import bind_unused_port

from symbolon.uploads import staging
from tests.conftest import running_worker, served, unique_email, wait_until
from tests.uploads import UPLOAD, debug_id, make_zip, multipart, post, token_for

IDENT = uuid.uuid4().hex.upper() + "1"
ARCHIVE = make_zip(
    {f"d.pdb/{IDENT}/d.sym": b"MODULE windows x86_64 " + IDENT.encode() + b" d.pdb\n"}
)


class Dribble(tornado.web.RequestHandler):
    """An artifact server that sends its archive a byte at a time until released."""

    def initialize(self, state: dict) -> None:
        self.state = state

    def head(self) -> None:
        self.set_header("Content-Type", "application/zip")

    async def get(self) -> None:
        self.state["serving"] += 1
        self.set_header("Content-Type", "application/zip")
        release: asyncio.Event = self.state["release"]
        sent = 0
        try:
            while sent < len(ARCHIVE) - 1 and not release.is_set():
                self.write(ARCHIVE[sent : sent + 1])
                await self.flush()
                sent += 1
                with suppress(TimeoutError):
                    await asyncio.wait_for(release.wait(), 0.2)
            self.write(ARCHIVE[sent:])
        finally:
            self.state["serving"] -= 1


@pytest.fixture
def dribbling(io_loop):
    state = {"serving": 0, "release": asyncio.Event()}
    sock, port = bind_unused_port()
    server = tornado.httpserver.HTTPServer(
        tornado.web.Application([(r"/slow/.*", Dribble, {"state": state})])
    )
    server.add_sockets([sock])
    state["url"] = f"http://127.0.0.1:{port}/slow"
    yield state
    state["release"].set()
    server.stop()


@pytest.fixture(scope="module")
def failure_settings(live_settings, tmp_path_factory):
    # Loopback servers are allowed; only the gate on fetching threads keeps archives moving
    # here, not the download deadline or rate.
    return live_settings.replace(
        allow_upload_by_any_domain=True,
        upload_wait_seconds=15.0,
        upload_by_download_min_rate=0,
        upload_tempdir=tmp_path_factory.mktemp("staging"),
    )


@pytest.fixture
def settings(failure_settings):
    return failure_settings


@pytest.fixture(scope="module")
def worker(failure_settings):
    with running_worker(failure_settings) as running:
        yield running


def staged(settings) -> list[Path]:
    return sorted(settings.staging_dir.glob("*"))


def url_form(url: str) -> tuple[bytes, str]:
    return urlencode({"url": url}).encode(), "application/x-www-form-urlencoded"


async def status_of(runtime, upload_id: int) -> tuple[bool, bool]:
    row = await runtime.db.fetchrow(
        "SELECT completed_at, failed_at FROM uploads WHERE id = $1", upload_id
    )
    return row["completed_at"] is not None, row["failed_at"] is not None


@pytest.mark.gen_test(timeout=120)
async def test_slow_servers_to_fetch_from_do_not_hold_up_received_archives(
    http_client, base_url, runtime, worker, dribbling
):
    token, _ = await token_for(runtime, UPLOAD)
    slow = []
    for n in range(2):
        response = await post(
            http_client,
            base_url,
            *url_form(f"{dribbling['url']}/{n}.zip"),
            token,
            headers={"Prefer": "respond-async"},
        )
        assert response.code == 202, response.body
        slow.append(json.loads(response.body)["upload"]["id"])
    assert await wait_until(lambda: dribbling["serving"] > 0, seconds=30)

    body, content_type = multipart({"quick.zip": make_zip({f"q.pdb/{debug_id()}/q.sym": b"M"})})
    response = await post(http_client, base_url, body, content_type, token)
    assert response.code == 201, response.body
    assert dribbling["serving"] > 0  # still dribbling: it held no thread the archive needed
    assert [await status_of(runtime, i) for i in slow] == [(False, False)] * 2

    dribbling["release"].set()
    for upload_id in slow:
        deadline = time.monotonic() + 60
        while await status_of(runtime, upload_id) == (False, False):
            assert time.monotonic() < deadline, f"upload {upload_id} still processing"
            await asyncio.sleep(0.1)
        assert await status_of(runtime, upload_id) == (True, False)


@pytest.mark.parametrize("host", ["2130706433", "127.1", "0x7f.1", "017700000001", "127.0.0.1."])
@pytest.mark.gen_test(timeout=60)
async def test_shorthand_ip_addresses_are_refused(http_client, base_url, runtime, host):
    token, _ = await token_for(runtime, UPLOAD)
    response = await post(http_client, base_url, *url_form(f"http://{host}/a.zip"), token)
    assert response.code == 400, response.body
    assert json.loads(response.body) == {
        "error": f"Enter a valid URL: {host!r} is neither a host name nor an IP address "
        "written as four decimal numbers (a.b.c.d)."
    }


@pytest.mark.gen_test(timeout=60)
async def test_nul_characters_are_refused_and_leave_nothing(
    http_client, base_url, runtime, settings
):
    token, _ = await token_for(runtime, UPLOAD)
    before = await runtime.db.fetchval("SELECT count(*) FROM uploads")
    archive = make_zip({f"n.pdb/{debug_id()}/n.sym": b"MODULE"})
    for body, content_type in (
        multipart({"a\x00.zip": archive}),
        multipart({"a.zip": archive}, {"b\x00": "1"}),
        url_form("http://symbols.example.com/a\x00.zip"),
    ):
        response = await post(http_client, base_url, body, content_type, token)
        assert response.code == 400, response.body
        assert "NUL" in json.loads(response.body)["error"]
    assert await runtime.db.fetchval("SELECT count(*) FROM uploads") == before
    assert staged(settings) == []


async def send_raw(base_url: str, head: str, pieces: list[bytes]) -> bytes:
    """Send a request as written and return what the server answers, up to its close."""
    address = urlsplit(base_url)
    reader, writer = await asyncio.open_connection(address.hostname, address.port)
    writer.write(head.encode())
    for piece in pieces:
        writer.write(piece)
        await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    return answer


async def post_chunked_past(limit: int, settings, token: str | None) -> tuple[bytes, object]:
    """A chunked upload one byte past ``limit``, sent to the end; the status line and body."""
    boundary = uuid.uuid4().hex
    start = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="big.zip"; filename="big.zip"'
        "\r\nContent-Type: application/zip\r\n\r\n"
    ).encode()
    body = start + b"x" * (limit + 1 - len(start))
    pieces = [body[i : i + 32_768] for i in range(0, len(body), 32_768)]
    chunks = [b"%x\r\n%b\r\n" % (len(p), p) for p in pieces]
    chunks[-1] = chunks[-1][:-2]  # nothing after the last byte: the server reads all that came
    head = (
        "POST /upload/ HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n"
        + (f"Auth-Token: {token}\r\n" if token else "")
        + f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n"
    )
    async with served(settings.replace(upload_max_size=limit)) as (_, base):
        answer = await send_raw(base, head, chunks)
    status, _, rest = answer.partition(b"\r\n")
    return status, json.loads(rest.split(b"\r\n\r\n", 1)[1])


@pytest.mark.gen_test(timeout=60)
async def test_a_chunked_body_past_the_limit_gets_the_json_413_and_leaves_no_file(
    runtime, settings
):
    token, _ = await token_for(runtime, UPLOAD)
    limit = 200_000
    status, answer = await post_chunked_past(limit, settings, token)
    assert status == b"HTTP/1.1 413 Request Entity Too Large", answer
    assert answer == {
        "error": f"Upload too large: the body passed the limit of {limit} bytes. "
        "Split the archive and upload the parts."
    }
    assert await wait_until(lambda: staged(settings) == [], seconds=10), staged(settings)


@pytest.mark.gen_test(timeout=60)
async def test_a_chunked_body_past_the_limit_without_a_token_is_still_the_403(settings):
    status, answer = await post_chunked_past(200_000, settings, None)
    assert status == b"HTTP/1.1 403 Forbidden", answer
    assert "error" in answer


@pytest.mark.gen_test(timeout=60)
async def test_a_client_going_away_mid_body_leaves_no_file(
    http_server, base_url, runtime, settings
):
    token, _ = await token_for(runtime, UPLOAD)
    boundary = uuid.uuid4().hex
    start = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="gone.zip"; filename="gone.zip"'
        "\r\nContent-Type: application/zip\r\n\r\n"
    ).encode() + b"x" * 100_000
    address = urlsplit(base_url)
    _, writer = await asyncio.open_connection(address.hostname, address.port)
    writer.write(
        (
            f"POST /upload/ HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10000000\r\n"
            f"Auth-Token: {token}\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n\r\n"
        ).encode()
        + start
    )
    await writer.drain()
    assert await wait_until(lambda: staged(settings) != [], seconds=30)
    writer.close()
    assert await wait_until(lambda: staged(settings) == [], seconds=30), staged(settings)


@pytest.mark.gen_test(timeout=60)
async def test_an_upload_whose_task_cannot_be_queued_fails_with_a_503(
    http_client, base_url, runtime, settings, worker, monkeypatch
):
    import symbolon.tasks.actors as actors

    def refuse(*args, **kwargs):
        raise redis.ConnectionError("Error 111 connecting to the broker. Connection refused.")

    monkeypatch.setattr(actors.process_upload, "send", refuse)
    token, _ = await token_for(runtime, UPLOAD)
    body, content_type = multipart({"nq.zip": make_zip({f"nq.pdb/{debug_id()}/nq.sym": b"M"})})
    response = await post(http_client, base_url, body, content_type, token)
    assert response.code == 503, response.body
    assert response.headers["Retry-After"] == "30"
    message = "The task queue is unavailable: the upload was not processed. Try again."
    assert json.loads(response.body) == {"error": message}
    row = await runtime.db.fetchrow("SELECT * FROM uploads ORDER BY id DESC LIMIT 1")
    assert row["filename"] == "nq.zip"
    assert (row["failed_at"] is not None, row["error"], row["error_status"]) == (True, message, 503)
    assert row["staging_ref"] is None
    assert staged(settings) == []


@pytest.mark.gen_test(timeout=60)
async def test_the_sweep_removes_old_orphans_and_keeps_what_an_upload_refers_to(runtime, settings):
    directory = settings.staging_dir
    directory.mkdir(parents=True, exist_ok=True)
    old_orphan, referenced, recent = (
        directory / f"upload-{uuid.uuid4().hex}.zip" for _ in range(3)
    )
    fetched = directory / f"staged-{uuid.uuid4().hex}.zip"
    for path in (old_orphan, referenced, recent, fetched):
        path.write_bytes(b"PK")
    a_day_ago = time.time() - 86_400
    for path in (old_orphan, referenced, fetched):
        os.utime(path, (a_day_ago, a_day_ago))
    user_id = await runtime.db.fetchval(
        "INSERT INTO users (email) VALUES ($1) RETURNING id", unique_email()
    )
    await runtime.db.execute(
        """INSERT INTO uploads (user_id, filename, bucket_name, staging_ref, destination_url)
           VALUES ($1, 'kept.zip', 'symbols', $2, $3)""",
        user_id,
        str(referenced),
        runtime.storage.upload_default.url,
    )
    assert await staging.sweep(runtime, 3600) == 2
    assert staged(settings) == sorted([referenced, recent])
    for path in (referenced, recent):
        path.unlink()
