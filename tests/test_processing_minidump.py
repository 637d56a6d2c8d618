"""``POST /minidump``: a dump walked and symbolicated on the spot, answered as a processed crash,
with nothing stored; for a token or a signed-in session, within the collector's body limit."""

from __future__ import annotations

import json
import os

import pytest

from tests.accounts import Caller, make_user, token_of
from tests.conftest import served
from tests.crashpad_support import WITHIN, crashpad_handler  # noqa: F401 (a fixture)
from tests.processing_support import (
    CRASH_LINE,
    CRASHING_FUNCTION,
    crashing_frames,
    processing_settings,
    program,  # noqa: F401 (a fixture)
    program_dump,  # noqa: F401 (a fixture)
)
from tests.symbolication_support import put_own
from tests.uploads import multipart


async def send(http_client, base_url, caller, files, fields=None, csrf=True):
    body, content_type = multipart(files, fields)
    headers = {**caller.headers, "Content-Type": content_type}
    if caller.csrf and csrf:
        headers["X-CSRFToken"] = caller.csrf
    return await http_client.fetch(
        f"{base_url}/minidump",
        method="POST",
        body=body,
        headers=headers,
        raise_error=False,
        request_timeout=WITHIN,
    )


@pytest.mark.gen_test(timeout=2 * WITHIN)
async def test_a_minidump_is_walked_symbolicated_and_answered_storing_nothing(
    program, program_dump, live_settings, cache_dir
):
    settings = processing_settings(
        live_settings, cache_dir, processor_minidump_max_body_size=1024**2
    )
    put_own(settings, program.app.key, program.app.data)
    put_own(settings, program.libmid.key, program.libmid.data)
    server = served(settings)
    async with server as (http_client, base_url):
        runtime = server.runtime
        user = await make_user(runtime)
        token = Caller.with_token(await token_of(runtime, user))
        crashes_before = await runtime.db.fetchval("SELECT count(*) FROM crashes")

        response = await send(
            http_client,
            base_url,
            token,
            {"upload_file_minidump": program_dump},
            {"ProductName": "OnTheSpot", "Version": "3.1"},
        )
        assert response.code == 200, response.body
        assert response.headers["Content-Type"] == "application/json"
        processed = json.loads(response.body)
        assert processed["uuid"] is None
        assert (processed["product"], processed["version"]) == ("OnTheSpot", "3.1")
        assert processed["signature"] == CRASHING_FUNCTION
        assert (processed["os_name"], processed["cpu_arch"]) == ("Linux", "amd64")
        top = crashing_frames(processed)[0]
        assert (top["function"], top["line"]) == (CRASHING_FUNCTION, CRASH_LINE)
        assert [f["function"] for f in crashing_frames(processed)[3:6]] == [
            "step_a",
            "mid_inner",
            "mid_call",
        ]
        # Nothing stored: no index row, nothing new in the crash store today.
        assert await runtime.db.fetchval("SELECT count(*) FROM crashes") == crashes_before

        # A signed-in session works too (with its CSRF token).
        browser = await Caller.with_session(runtime, user)
        response = await send(
            http_client, base_url, browser, {"upload_file_minidump": program_dump}
        )
        assert response.code == 200
        assert json.loads(response.body)["signature"] == CRASHING_FUNCTION
        response = await send(
            http_client, base_url, browser, {"upload_file_minidump": program_dump}, csrf=False
        )
        assert (response.code, json.loads(response.body)) == (
            403,
            {"error": "CSRF token missing or incorrect"},
        )

        # Anonymous callers are refused; so are forms without a dump, and dumps that are none.
        response = await send(
            http_client, base_url, Caller.anonymous(), {"upload_file_minidump": program_dump}
        )
        assert response.code == 403
        response = await send(http_client, base_url, token, {"other": program_dump})
        assert (response.code, json.loads(response.body)) == (
            400,
            {"error": "The form has no upload_file_minidump file"},
        )
        response = await send(
            http_client, base_url, token, {"upload_file_minidump": b"MDMP" + os.urandom(100)}
        )
        assert response.code == 400
        assert json.loads(response.body)["error"].startswith(
            "The minidump cannot be processed: the minidump cannot be read"
        )
        # The body limit is its own.
        response = await send(
            http_client, base_url, token, {"upload_file_minidump": bytes(2 * 1024**2)}
        )
        assert response.code == 413


@pytest.mark.gen_test(timeout=2 * WITHIN)
async def test_minidump_authenticates_before_reading_and_shares_a_byte_budget(
    live_settings, cache_dir
):
    limit = 1024**2
    settings = processing_settings(
        live_settings,
        cache_dir,
        processor_minidump_max_body_size=limit,
        processor_minidump_budget=2 * limit,
    )
    server = served(settings)
    async with server as (http_client, base_url):
        runtime = server.runtime
        token = Caller.with_token(await token_of(runtime, await make_user(runtime)))
        # Past the limit: an anonymous caller is told it is not authenticated, which is found
        # before the body is read; a token holder is told the body is too large.
        big = {"upload_file_minidump": bytes(limit + 1)}
        response = await send(http_client, base_url, Caller.anonymous(), big)
        assert response.code == 403
        response = await send(http_client, base_url, token, big)
        assert response.code == 413

        # Bodies being received hold the budget: over it, 503 and Retry-After.
        bodies = runtime.processor.minidump_bodies
        assert bodies.take(2 * limit - 1000)  # other dumps arriving
        dump = {"upload_file_minidump": b"MDMP" + os.urandom(5000)}
        response = await send(http_client, base_url, token, dump)
        assert response.code == 503, response.body
        assert response.headers["Retry-After"]
        bodies.give_back(2 * limit - 1000)
        response = await send(http_client, base_url, token, dump)
        assert response.code == 400  # walked: not a minidump
        assert bodies.used == 0


@pytest.mark.gen_test(timeout=2 * WITHIN)
async def test_a_form_whose_parts_cannot_be_read_is_a_400(live_settings, cache_dir):
    settings = processing_settings(live_settings, cache_dir)
    server = served(settings)
    async with server as (http_client, base_url):
        runtime = server.runtime
        token = Caller.with_token(await token_of(runtime, await make_user(runtime)))
        boundary = "b0undary"
        # A control character in a part's header: Tornado's form parser refuses it.
        body = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="a\x1cb"\r\n\r\nx\r\n'
            f"--{boundary}--\r\n"
        ).encode()
        response = await http_client.fetch(
            f"{base_url}/minidump",
            method="POST",
            body=body,
            headers={
                **token.headers,
                "Content-Type": f"multipart/form-data; boundary={boundary}",
            },
            raise_error=False,
            request_timeout=WITHIN,
        )
        assert response.code == 400, response.body
        assert "not a form" in json.loads(response.body)["error"]
