"""POST /submit end to end: real HTTP, the embedded S3 and the real task broker (docs/crashes.md)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os

import pytest

from tests.conftest import served, wait_until
from tests.crashes import (
    body_of,
    chunked,
    crash_id_of,
    crash_keys,
    gzipped,
    headers_for,
    part,
    post,
    published,
    raw_crash,
    report,
    send_raw,
    unique_queue,
)


@pytest.fixture
def settings(live_settings):
    return live_settings.replace(
        crashmover_retry_sleep_seconds=0.01, crashpublish_queue_name=unique_queue()
    )


@pytest.mark.gen_test
async def test_a_minimal_report_is_stored_in_the_v1_layout_and_published(
    http_client, base_url, runtime, settings
):
    body = report(
        {"ProductName": "Firefox", "Version": "60.0a1", "ReleaseChannel": "nightly"},
        {"upload_file_minidump": b"abcd1234"},
    )
    response = await post(
        http_client, base_url, body, headers_for(**{"User-Agent": "crash-client/1.0"})
    )
    assert response.code == 200
    assert response.headers["Content-Type"] == "text/plain"
    crash_id = crash_id_of(response)
    assert crash_id[-7] == "0"  # accepted

    date = "20" + crash_id[-6:]
    assert crash_keys(settings, crash_id) == [
        f"v1/dump/{crash_id}",
        f"v1/dump_names/{crash_id}",
        f"v1/raw_crash/{date}/{crash_id}",
    ]
    stored_bytes = await runtime.collector.storage.load_raw_crash(crash_id)
    crash = json.loads(stored_bytes)
    assert stored_bytes == json.dumps(crash, sort_keys=True).encode()  # byte-exact form
    assert crash["ProductName"] == "Firefox"
    assert crash["uuid"] == crash_id
    assert crash["version"] == 2
    assert crash["submitted_timestamp"].endswith("+00:00")
    assert crash["submitted_timestamp"][2:10].replace("-", "") == crash_id[-6:]
    assert crash["metadata"] == {
        "collector_notes": [],
        "dump_checksums": {"upload_file_minidump": hashlib.sha256(b"abcd1234").hexdigest()},
        "payload": "multipart",
        "payload_compressed": "0",
        "payload_size": len(body),
        "throttle_rule": "accept_everything",
        "user_agent": "crash-client/1.0",
    }
    assert await runtime.collector.storage.load_dump_names(crash_id) == ["upload_file_minidump"]
    assert await runtime.collector.storage.load_dump(crash_id, "upload_file_minidump") == (
        b"abcd1234"
    )
    assert published(settings) == [crash_id]


@pytest.mark.gen_test
async def test_other_dumps_keep_their_names_and_dump_names_is_sorted(
    http_client, base_url, runtime, settings
):
    dumps = {
        "upload_file_minidump_flash1": b"f1",
        "upload_file_minidump": b"main",
        "memory_report": b"",
    }
    response = await post(http_client, base_url, report({"ProductName": "X"}, dumps))
    crash_id = crash_id_of(response)
    assert await runtime.collector.storage.load_dump_names(crash_id) == sorted(dumps)
    keys = crash_keys(settings, crash_id)
    assert f"v1/upload_file_minidump_flash1/{crash_id}" in keys
    assert f"v1/memory_report/{crash_id}" in keys  # an empty dump is kept
    assert await runtime.collector.storage.load_dump(crash_id, "memory_report") == b""


@pytest.mark.gen_test
async def test_json_extra_keeps_json_types_and_sets_payload_json(http_client, base_url, runtime):
    extra = {"ProductName": "Firefox", "Number": 0, "Null": None, "Nested": {"a": [1, "b"]}}
    response = await post(
        http_client, base_url, report(extra=extra, dumps={"upload_file_minidump": b"x"})
    )
    crash = await raw_crash(runtime, crash_id_of(response))
    assert crash["metadata"]["payload"] == "json"
    assert crash["Number"] == 0 and crash["Null"] is None and crash["Nested"] == {"a": [1, "b"]}
    assert crash["metadata"]["collector_notes"] == []


@pytest.mark.gen_test
async def test_json_extra_replaces_earlier_fields_and_later_fields_merge(
    http_client, base_url, runtime
):
    body = body_of(
        [
            part("Before", "lost"),
            part("extra", '{"ProductName": "First"}', "application/json", "extra.json"),
            part("extra", '{"ProductName": "Firefox", "Kept": "yes"}', "application/json"),
            part("After", "merged"),
            part("Kept", "overridden"),
        ]
    )
    crash = await raw_crash(runtime, crash_id_of(await post(http_client, base_url, body)))
    assert "Before" not in crash
    assert crash["ProductName"] == "Firefox"
    assert crash["After"] == "merged"
    assert crash["Kept"] == "overridden"
    assert crash["metadata"]["collector_notes"] == [
        "includes annotations in both json-encoded extra and formdata parts"
    ]


@pytest.mark.gen_test
async def test_collector_fields_overwrite_client_fields_and_private_fields_are_removed(
    http_client, base_url, runtime
):
    fields = {
        "ProductName": "Firefox",
        "metadata": "client",
        "submitted_timestamp": "client",
        "version": "client",
        "Email": "someone@example.com",
        "TelemetryClientId": "a",
        "TelemetryServerURL": "b",
        "TelemetrySessionId": "c",
    }
    crash = await raw_crash(runtime, crash_id_of(await post(http_client, base_url, report(fields))))
    assert crash["version"] == 2
    assert isinstance(crash["metadata"], dict)
    assert crash["submitted_timestamp"] != "client"
    for name in ("Email", "TelemetryClientId", "TelemetryServerURL", "TelemetrySessionId"):
        assert name not in crash
    assert crash["metadata"]["collector_notes"] == [
        "Removed Email from raw crash.",
        "Removed TelemetryClientId from raw crash.",
        "Removed TelemetryServerURL from raw crash.",
        "Removed TelemetrySessionId from raw crash.",
    ]


@pytest.mark.gen_test
async def test_user_agent_is_the_string_none_when_absent(http_client, base_url, runtime):
    body = report({"ProductName": "X"})
    status, _, answer = await send_raw(
        base_url, body, headers_for(**{"Content-Length": str(len(body))})
    )
    assert status == 200
    crash = await raw_crash(runtime, answer.decode()[len("CrashID=bp-") :].strip())
    assert crash["metadata"]["user_agent"] == "None"


@pytest.mark.gen_test
async def test_gzip_bodies_are_inflated_and_recorded_as_compressed(http_client, base_url, runtime):
    plain = report({"ProductName": "Fenix"}, {"upload_file_minidump": b"\x00" * 5000})
    body = gzipped(plain) + b"trailing bytes after the gzip member are ignored"
    response = await post(http_client, base_url, body, headers_for(**{"Content-Encoding": "gzip"}))
    crash = await raw_crash(runtime, crash_id_of(response))
    assert crash["ProductName"] == "Fenix"
    assert crash["metadata"]["payload_compressed"] == "1"
    assert crash["metadata"]["payload_size"] == len(body)  # the wire size


@pytest.mark.gen_test
async def test_only_the_exact_gzip_label_inflates(http_client, base_url, runtime):
    plain = report({"ProductName": "X"})
    response = await post(
        http_client, base_url, gzipped(plain), headers_for(**{"Content-Encoding": "GZIP"})
    )
    assert (response.code, response.body) == (400, b"Discarded=malformed_invalid_payload_structure")
    response = await post(
        http_client, base_url, plain, headers_for(**{"Content-Encoding": "deflate"})
    )
    assert response.code == 200 and response.body.startswith(b"CrashID=bp-")


@pytest.mark.gen_test
async def test_a_body_larger_than_the_memory_threshold_is_spooled_and_stored_whole(
    http_client, base_url, runtime
):
    dump = bytes(range(256)) * (6 * 1024 * 1024 // 256)  # 6 MiB: spooled to a file
    response = await post(
        http_client, base_url, report({"ProductName": "X"}, {"upload_file_minidump": dump})
    )
    crash_id = crash_id_of(response)
    assert await runtime.collector.storage.load_dump(crash_id, "upload_file_minidump") == dump


@pytest.mark.gen_test
async def test_query_string_parameters_are_annotations_as_crashpad_sends_them(
    http_client, base_url, runtime
):
    body = report({"ProductName": "Body", "Other": "x"}, {"upload_file_minidump": b"MDMP"})
    path = "/submit?product=MyApp&channel=beta&guid=abc&ProductName=Query&ver=1&ver=2"
    response = await post(http_client, base_url, body, path=path)
    crash = await raw_crash(runtime, crash_id_of(response))
    assert (crash["product"], crash["channel"], crash["guid"]) == ("MyApp", "beta", "abc")
    assert crash["ProductName"] == "Body"  # the body's fields come later and win
    assert crash["ver"] == "2"
    # A dump with annotations only in the query string is a report.
    body = report(dumps={"upload_file_minidump": b"MDMP"})
    response = await post(http_client, base_url, body, path="/submit?prod=A")
    assert (await raw_crash(runtime, crash_id_of(response)))["prod"] == "A"


@pytest.mark.gen_test
async def test_submit_with_a_trailing_slash_is_not_found(http_client, base_url):
    response = await post(http_client, base_url, report({"ProductName": "X"}), path="/submit/")
    assert response.code == 404


@pytest.mark.gen_test
async def test_other_methods_are_405_with_allow_and_options_answers(http_client, base_url):
    response = await http_client.fetch(base_url + "/submit", raise_error=False)
    assert response.code == 405
    assert response.headers["Allow"] == "POST, OPTIONS"
    assert json.loads(response.body) == {"title": "405 Method Not Allowed"}
    response = await http_client.fetch(base_url + "/submit", method="OPTIONS", raise_error=False)
    assert response.code == 200
    assert response.headers["Allow"] == "POST, OPTIONS"
    assert response.body == b""


@pytest.mark.gen_test
@pytest.mark.parametrize(
    ("headers", "body", "reason"),
    [
        ({}, report({"A": "1"}), "no_content_type"),
        ({"Content-Type": "application/json"}, b"{}", "wrong_content_type"),
        ({"Content-Type": "multipart/form-data"}, report({"A": "1"}), "no_boundary"),
        (headers_for(**{"Content-Encoding": "gzip"}), report({"A": "1"}), "bad_gzip"),
        (
            headers_for(**{"Content-Encoding": "gzip"}),
            gzipped(report({"A": "1"}))[:-12],
            "bad_gzip",
        ),
        (headers_for(boundary="foo"), report({"A": "1"}), "invalid_payload_structure"),
        (
            headers_for(),
            body_of([part("extra", "{nope", "application/json")]),
            "invalid_json",
        ),
        (headers_for(), body_of([part("extra", "[]", "application/json")]), "invalid_json_value"),
        (
            headers_for(),
            body_of([part("raw_crash", b"x", "application/octet-stream")]),
            "invalid_dump_name",
        ),
        (headers_for(), report(dumps={"upload_file_minidump": b"x"}), "no_annotations"),
        (headers_for(), report(extra={}), "no_annotations"),
    ],
)
async def test_malformed_reports_are_discarded_with_their_reason(
    http_client, base_url, settings, headers, body, reason
):
    headers = {"Content-Length": str(len(body)), **headers}
    status, response_headers, answer = await send_raw(base_url, body, headers)
    assert (status, answer) == (400, f"Discarded=malformed_{reason}".encode())
    assert response_headers["content-type"] == "text/plain"
    assert published(settings) == []


@pytest.mark.gen_test
async def test_a_broken_structure_logs_what_the_parser_found(http_client, base_url, caplog):
    # The one malformed case the reference logs (docs/crashes.md, "Logs"), in the parser's words.
    body = report({"A": "1"})
    headers = headers_for(boundary="foo", **{"Content-Length": str(len(body))})
    status, _, answer = await send_raw(base_url, body, headers)
    assert (status, answer) == (400, b"Discarded=malformed_invalid_payload_structure")
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == ["extract payload exception: no boundary delimiter in the body"]
    # Other malformed reports are only counted.
    caplog.clear()
    body = report(dumps={"upload_file_minidump": b"x"})
    status, _, _ = await send_raw(base_url, body, headers_for(**{"Content-Length": str(len(body))}))
    assert status == 400
    assert [r for r in caplog.records if r.levelname == "ERROR"] == []


@pytest.mark.gen_test
@pytest.mark.parametrize("length", [None, "0"])
async def test_a_body_without_length_or_chunking_is_no_content_length(
    http_client, base_url, length
):
    headers = headers_for()
    if length is not None:
        headers["Content-Length"] = length
    status, _, answer = await send_raw(base_url, b"", headers)
    assert (status, answer) == (400, b"Discarded=malformed_no_content_length")


@pytest.mark.gen_test
@pytest.mark.parametrize("length", ["foo", "-5"])
async def test_a_length_that_is_not_a_number_is_a_400(http_client, base_url, length):
    status, _, _ = await send_raw(base_url, b"", headers_for(**{"Content-Length": length}))
    assert status == 400


@pytest.mark.gen_test
async def test_a_short_content_length_parses_only_that_many_bytes(http_client, base_url):
    body = report({"A": "1"})
    status, _, answer = await send_raw(
        base_url, body, headers_for(**{"Content-Length": str(len(body) - 20)})
    )
    assert (status, answer) == (400, b"Discarded=malformed_invalid_payload_structure")
    # Cutting only the final CRLF still parses.
    status, _, answer = await send_raw(
        base_url, body, headers_for(**{"Content-Length": str(len(body) - 2)})
    )
    assert status == 200 and answer.startswith(b"CrashID=bp-")


@pytest.mark.gen_test
async def test_chunked_gzip_bodies_are_accepted_like_crashpad_sends_them(
    http_client, base_url, runtime, settings
):
    plain = report({"prod": "MyApp", "ver": "1.0"}, {"upload_file_minidump": b"M" * 300_000})
    wire = gzipped(plain)
    headers = headers_for(**{"Content-Encoding": "gzip", "Transfer-Encoding": "chunked"})
    status, _, answer = await send_raw(base_url, b"", headers, chunks=chunked(wire, 4096))
    assert status == 200, answer
    crash_id = answer.decode().strip()[len("CrashID=bp-") :]
    crash = await raw_crash(runtime, crash_id)
    assert crash["prod"] == "MyApp"
    assert crash["metadata"]["payload_compressed"] == "1"
    assert crash["metadata"]["payload_size"] == len(wire)  # bytes received
    assert await runtime.collector.storage.load_dump(crash_id, "upload_file_minidump") == (
        b"M" * 300_000
    )
    assert published(settings) == [crash_id]


@pytest.fixture
def small_limits(live_settings):
    return live_settings.replace(
        collector_max_body_size=100_000,
        collector_max_decompressed_size=400_000,
        crashpublish_queue_name=unique_queue(),
    )


@pytest.mark.gen_test
async def test_a_declared_length_over_the_limit_is_413(small_limits):
    async with served(small_limits) as (_, base_url):
        # Far over the limit: answered from the headers alone, the body is never read.
        headers = headers_for(**{"Content-Length": str(10_000_000)})
        status, _, answer = await send_raw(base_url, b"", headers, chunks=[])
        assert (status, answer) == (413, b"Discarded=too_large")
        # Just over: the body is read and dropped, so that the client reads the answer.
        body = report({"A": "1"}, {"upload_file_minidump": b"x" * 100_000})
        headers = headers_for(**{"Content-Length": str(len(body))})
        status, _, answer = await send_raw(base_url, body, headers)
        assert (status, answer) == (413, b"Discarded=too_large")
        body = report({"A": "1"}, {"upload_file_minidump": b"x" * (100_000 - 300)})
        assert len(body) <= 100_000
        status, _, _ = await send_raw(
            base_url, body, headers_for(**{"Content-Length": str(len(body))})
        )
        assert status == 200  # the limit is inclusive


@pytest.mark.gen_test
async def test_a_chunked_body_over_the_limit_is_stopped_with_413(small_limits):
    async with served(small_limits) as (_, base_url):
        headers = headers_for(**{"Transfer-Encoding": "chunked"})
        over = report({"A": "1"}, {"upload_file_minidump": b"x" * 150_000})
        status, _, answer = await send_raw(base_url, b"", headers, chunks=chunked(over, 8192))
        assert (status, answer) == (413, b"Discarded=too_large")
        # Far over: answered at once and the connection closed; the client may only see the
        # connection reset, but it is not read on.
        endless = [b"2000\r\n" + b"x" * 0x2000 + b"\r\n"] * 1000
        status, _, answer = await send_raw(base_url, b"", headers, chunks=endless)
        assert (status, answer) in ((413, b"Discarded=too_large"), (0, b""))
        assert published(small_limits) == []


@pytest.mark.gen_test
async def test_a_gzip_bomb_is_stopped_at_the_inflated_limit(small_limits):
    async with served(small_limits) as (_, base_url):
        bomb = gzipped(report({"A": "1"}, {"upload_file_minidump": b"\0" * 50_000_000}))
        assert len(bomb) < 100_000
        headers = headers_for(**{"Content-Encoding": "gzip", "Content-Length": str(len(bomb))})
        status, _, answer = await send_raw(base_url, bomb, headers)
        assert (status, answer) == (413, b"Discarded=too_large")


@pytest.mark.gen_test
async def test_an_idle_body_times_out_without_a_5xx(live_settings):
    settings = live_settings.replace(collector_body_timeout=0.5)
    async with served(settings) as (_, base_url):
        body = report({"A": "1"})
        headers = headers_for(**{"Content-Length": str(len(body) + 1000)})
        status, _, _ = await send_raw(base_url, body, headers)  # then goes quiet
        assert status == 408


@pytest.mark.gen_test
async def test_a_limit_above_tornados_own_is_the_collectors_to_enforce(live_settings):
    # Tornado answers 400 to a declared length over its own 100 MiB limit unless the handler
    # lifts it: a body the configured limit allows is read, here until it goes quiet.
    settings = live_settings.replace(
        collector_max_body_size=200 * 1024**2, collector_body_timeout=0.5
    )
    async with served(settings) as (_, base_url):
        body = report({"A": "1"})
        headers = headers_for(**{"Content-Length": str(150 * 1024**2)})
        status, _, answer = await send_raw(base_url, body, headers)
        assert (status, answer) == (408, b"Discarded=timeout")


@pytest.mark.gen_test
async def test_a_collector_turned_off_has_no_submit(live_settings):
    async with served(live_settings.replace(enable_crash_collector=False)) as (client, base_url):
        response = await post(client, base_url, report({"A": "1"}))
        assert response.code == 404


@pytest.mark.gen_test(timeout=30)
async def test_a_slow_save_is_waited_for_not_timed_out(live_settings):
    settings = live_settings.replace(
        collector_body_timeout=0.3, crashpublish_queue_name=unique_queue()
    )
    server = served(settings)
    async with server as (client, base_url):
        storage = server.runtime.collector.storage
        original = storage.save

        async def slow_save(*args, **kwargs):
            await asyncio.sleep(1.0)  # longer than the idle-body timeout
            await original(*args, **kwargs)

        storage.save = slow_save
        response = await post(client, base_url, report({"ProductName": "X"}))
        assert response.code == 200 and response.body.startswith(b"CrashID=bp-")


@pytest.mark.gen_test(timeout=60)
async def test_a_burst_of_gzip_bombs_shares_one_spool_budget(live_settings):
    mib = 1024**2
    settings = live_settings.replace(
        collector_max_decompressed_size=16 * mib,
        collector_spool_budget=10 * mib,
        crashpublish_queue_name=unique_queue(),
    )
    bomb = gzipped(report({"ProductName": "X"}, {"upload_file_minidump": b"\0" * 8 * mib}))
    head = "POST /submit HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
    headers = headers_for(**{"Content-Encoding": "gzip", "Content-Length": str(len(bomb))})
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    server = served(settings)
    async with server as (_, base_url):
        budget = server.runtime.collector.spool_budget
        port = int(base_url.rsplit(":", 1)[1])
        # The first report is held in the middle of its body, 6 MiB or so already inflated.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(head.encode() + bomb[: len(bomb) * 3 // 4])
        await writer.drain()
        assert await wait_until(lambda: budget.used > 4 * mib, seconds=30)

        status, answer_headers, answer = await send_raw(base_url, bomb, headers)
        assert (status, answer) == (503, b"")
        assert answer_headers["retry-after"] == "60"
        assert published(settings) == []

        writer.write(bomb[len(bomb) * 3 // 4 :])  # the first one ends: stored, budget back
        await writer.drain()
        first = await asyncio.wait_for(reader.read(), 30)
        writer.close()
        assert first.startswith(b"HTTP/1.1 200 "), first[:200]
        assert await wait_until(lambda: budget.used == 0, seconds=30)
        status, _, answer = await send_raw(base_url, bomb, headers)  # sent again, it fits
        assert status == 200 and answer.startswith(b"CrashID=bp-")
        assert budget.used == 0
        assert len(published(settings)) == 2


@pytest.mark.gen_test(timeout=60)
async def test_a_body_received_in_one_buffer_gives_its_memory_back(live_settings):
    settings = live_settings.replace(crashpublish_queue_name=unique_queue())
    dump = os.urandom(300_000)
    body = report({"ProductName": "X"}, {"upload_file_minidump": dump})
    headers = headers_for(**{"Content-Length": str(len(body))})
    head = "POST /submit HTTP/1.1\r\nHost: localhost\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    server = served(settings)
    async with server as (_, base_url):
        budget = server.runtime.collector.placed_budget
        # Held in the middle of its body: the whole buffer is set aside, then the client goes.
        _, writer = await asyncio.open_connection("127.0.0.1", int(base_url.rsplit(":", 1)[1]))
        writer.write(head.encode() + body[: len(body) // 2])
        await writer.drain()
        assert await wait_until(lambda: budget.used == len(body), seconds=30)
        writer.close()
        assert await wait_until(lambda: budget.used == 0, seconds=30)

        status, _, answer = await send_raw(base_url, body, headers)
        assert status == 200 and answer.startswith(b"CrashID=bp-")
        crash_id = answer.decode().strip().removeprefix("CrashID=bp-")
        storage = server.runtime.collector.storage
        assert await storage.load_dump(crash_id, "upload_file_minidump") == dump
        assert budget.used == 0
