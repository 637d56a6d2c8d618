"""What every route shares at the HTTP level: body limits decided before a body is read, the
answers to unknown paths and bad tokens, and the security headers (docs/operations.md,
"Limits"; docs/configuration.md, "Server")."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from tornado.httputil import HTTPHeaders
from tornado.tcpclient import TCPClient

from symbolon.server.app import make_app, make_server
from tests.accounts import Caller, call, make_user
from tests.conftest import s3_client, s3_endpoint, served
from tests.downloads import get

LIMIT = 4096


@pytest.fixture
def settings(live_settings):
    return live_settings.replace(request_max_body_size=LIMIT, symbolication_max_body_size=4 * LIMIT)


@pytest.fixture
def http_server(app, io_loop, _unused_port):
    """The server as ``serve`` runs it (its own body limit, X-Forwarded-Proto believed)."""
    server = make_server(app)
    server.add_socket(_unused_port[0])
    yield server
    server.stop()
    io_loop.run_sync(server.close_all_connections)


@pytest.fixture
def port(http_server, http_port) -> int:
    """The served port, for requests written by hand."""
    return http_port


async def raw(port: int, request: bytes) -> tuple[int, HTTPHeaders, bytes]:
    """Sends ``request`` as it is and reads the first answer: status, headers, body."""
    stream = await TCPClient().connect("127.0.0.1", port)
    try:
        await stream.write(request)
        head = (await stream.read_until(b"\r\n\r\n")).decode("latin-1")
        status_line, _, rest = head.partition("\r\n")
        headers = HTTPHeaders.parse(rest)
        body = await stream.read_bytes(int(headers.get("Content-Length", "0")))
        return int(status_line.split()[1]), headers, body
    finally:
        stream.close()


def post_head(path: str, length: int, *extra: str) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: localhost", f"Content-Length: {length}", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


# -- body limits ----------------------------------------------------------------------------


@pytest.mark.gen_test
async def test_a_large_anonymous_body_is_refused_from_its_headers(port):
    # Expect: 100-continue asks whether to send the body: the answer is the 413, never 100.
    status, headers, body = await raw(
        port,
        post_head(
            "/api/tokens/", 95_000_000, "Content-Type: application/json", "Expect: 100-continue"
        ),
    )
    assert status == 413
    assert headers["Content-Type"] == "application/json"
    assert headers["Connection"] == "close"
    assert json.loads(body) == {
        "error": f"Request body too large: 95000000 bytes, the limit is {LIMIT} bytes"
    }


@pytest.mark.gen_test
async def test_a_body_is_refused_before_it_is_sent_with_or_without_a_token(port):
    # Past Tornado's own limit too, and with a token that is not one: the same JSON 413.
    status, _, body = await raw(
        port, post_head("/api/tokens/", 200 * 1024**2, "Auth-Token: not-a-token")
    )
    assert status == 413
    assert json.loads(body)["error"].startswith("Request body too large: 209715200 bytes")


def chunked(path: str, size: int, end: bool) -> bytes:
    head = post_head(path, 0).replace(b"Content-Length: 0", b"Transfer-Encoding: chunked")
    return head + b"%x\r\n%s\r\n" % (size, b"x" * size) + (b"0\r\n\r\n" if end else b"")


@pytest.mark.gen_test
async def test_a_chunked_body_is_refused_once_past_the_limit(port):
    # Far past it: answered at once, though the body has not ended.
    status, _, body = await raw(port, chunked("/api/tokens/", 2 * LIMIT + 1, end=False))
    assert status == 413
    assert json.loads(body) == {"error": f"Request body too large: the limit is {LIMIT} bytes"}
    # Just past it: read to its end and dropped, then answered.
    status, _, body = await raw(port, chunked("/api/tokens/", LIMIT + 1, end=True))
    assert status == 413
    assert json.loads(body) == {"error": f"Request body too large: the limit is {LIMIT} bytes"}


@pytest.mark.gen_test
async def test_a_body_just_past_the_limit_is_dropped_then_answered(port):
    request = post_head("/api/tokens/", LIMIT + 1) + b"x" * (LIMIT + 1)
    status, _, body = await raw(port, request)
    assert status == 413
    assert json.loads(body) == {
        "error": f"Request body too large: {LIMIT + 1} bytes, the limit is {LIMIT} bytes"
    }


@pytest.mark.gen_test
@pytest.mark.parametrize("token", [None, "not-a-token"])
async def test_an_upload_past_its_limit_without_a_token_is_a_json_403(port, token):
    # The upload route streams its body and decides from the token first (docs/upload.md).
    extra = [f"Auth-Token: {token}"] if token else []
    status, _, body = await raw(port, post_head("/upload/", 3 * 1024**3, *extra))
    assert status == 403
    assert "error" in json.loads(body)


@pytest.mark.gen_test
async def test_symbolication_has_a_larger_limit_of_its_own(http_client, base_url, port):
    jobs = {"jobs": [{"memoryMap": [], "stacks": [[]]}]}
    padded = json.dumps(jobs) + " " * (2 * LIMIT)  # over the general limit, under its own
    response = await http_client.fetch(
        base_url + "/symbolicate/v5", method="POST", body=padded, raise_error=False
    )
    assert response.code == 200, response.body
    too_long = b"x" * (4 * LIMIT + 1)
    status, headers, body = await raw(
        port,
        post_head("/symbolicate/v5", len(too_long), "Origin: https://example.com") + too_long,
    )
    assert status == 413
    assert headers["Access-Control-Allow-Origin"] == "*"  # still the route's own answer
    assert json.loads(body) == {
        "title": f"Request body too large: {4 * LIMIT + 1} bytes, the limit is {4 * LIMIT} bytes"
    }


@pytest.mark.gen_test
async def test_requests_within_the_limit_work(http_client, base_url, runtime):
    user = await make_user(runtime, groups=("Uploaders",))
    browser = await Caller.with_session(runtime, user)
    ids = {r["codename"]: r["id"] for r in await runtime.db.fetch("SELECT * FROM permissions")}
    form = {
        "permissions": str(ids["upload.upload_symbols"]),
        "expires": "7",
        "notes": "n" * (LIMIT - 200),
    }
    status, body = await call(http_client, base_url, browser, "/api/tokens/", "POST", form)
    assert status == 201, body


# -- unknown paths and bad tokens -----------------------------------------------------------


@pytest.mark.gen_test
@pytest.mark.parametrize("path", ["/no/such/thing", "/symbolicate/v6", "/submit/more", "/api/x/"])
async def test_unknown_paths_answer_one_404_body(http_client, base_url, path):
    response = await get(http_client, base_url, path)
    assert response.code == 404
    assert json.loads(response.body) == {"error": "Not Found", "path": path}


@pytest.mark.gen_test
@pytest.mark.parametrize("path", ["/no/such/thing", "/api/tokens/", "/api/stats/"])
async def test_a_bad_token_is_a_403_on_every_path(http_client, base_url, path):
    response = await get(http_client, base_url, path, headers={"Auth-Token": "not-a-token"})
    assert response.code == 403
    assert response.headers["Content-Type"] == "application/json"
    assert "error" in json.loads(response.body)


# -- security headers -----------------------------------------------------------------------

SECURITY = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "frame-ancestors 'none'",
}


def assert_security(headers: Any, https: bool) -> None:
    for name, value in SECURITY.items():
        assert headers.get(name) == value, name
    assert headers.get("Strict-Transport-Security") == ("max-age=31536000" if https else None)


@pytest.fixture
def stored_symbol(settings) -> str:
    path = f"xul.pdb/{uuid.uuid4().hex.upper()}1/xul.sym"
    bucket = settings.symbol_urls[0].rsplit("/", 1)[1]
    s3_client(s3_endpoint(settings)).put_object(
        Bucket=bucket, Key=f"v1/{path}", Body=b"MODULE windows x86_64 0 xul.pdb\n"
    )
    return f"/{path}"


@pytest.mark.gen_test
@pytest.mark.parametrize("https", [False, True])
async def test_every_answer_carries_the_security_headers(
    http_client, base_url, port, stored_symbol, https
):
    proto = {"X-Forwarded-Proto": "https"} if https else {}
    answers = {
        "json": await get(http_client, base_url, "/__version__", headers=proto),
        "download redirect": await get(http_client, base_url, stored_symbol, headers=proto),
        "slash redirect": await get(http_client, base_url, "/api/tokens", headers=proto),
        "404": await get(http_client, base_url, "/no/such/thing", headers=proto),
        "403": await get(http_client, base_url, "/api/tokens/", headers=proto),
        "500": await get(http_client, base_url, "/__broken__", headers=proto),
        "crash 405": await get(http_client, base_url, "/submit", method="PATCH", headers=proto),
    }
    assert answers["download redirect"].code == 302
    assert answers["slash redirect"].code == 301
    for name, response in answers.items():
        assert_security(response.headers, https), name
    forwarded = ["X-Forwarded-Proto: https"] if https else []
    status, headers, _ = await raw(port, post_head("/api/tokens/", 10**9, *forwarded))
    assert status == 413
    assert_security(headers, https)


@pytest.mark.gen_test
async def test_the_security_headers_can_be_turned_off(settings):
    quiet = settings.replace(
        secure_content_type_nosniff=False, x_frame_options="OFF", secure_hsts_seconds=0
    )
    async with served(quiet) as (client, base):
        response = await get(client, base, "/__version__", headers={"X-Forwarded-Proto": "https"})
    for name in [*SECURITY, "Strict-Transport-Security"]:
        assert name not in response.headers


@pytest.mark.gen_test
async def test_sameorigin_frames_allow_the_site_itself(settings):
    async with served(settings.replace(x_frame_options="SAMEORIGIN")) as (client, base):
        response = await get(client, base, "/__version__")
    assert response.headers["X-Frame-Options"] == "SAMEORIGIN"
    assert response.headers["Content-Security-Policy"] == "frame-ancestors 'self'"


def test_make_app_is_what_serve_runs(runtime):
    app = make_app(runtime)
    make_server(app)
    assert app.behind_proxy
