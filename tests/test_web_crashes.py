"""The crash report pages (docs/web.md, "Crashes"): recent reports from the crash store, one
report's annotations, dumps and signature, for ``crashes.view_crashes`` only, escaped."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from symbolon.crashes.crashid import create_crash_id, submitted_timestamp
from symbolon.crashes.store import raw_crash_json
from tests.accounts import Caller, make_user, token_of
from tests.web_pages import Page, fetch_page


async def store_crash(runtime, annotations: dict, dumps: dict[str, bytes], when=None) -> str:
    when = when or datetime.now(UTC)
    crash_id = create_crash_id(when, 0)
    raw = {
        **annotations,
        "uuid": crash_id,
        "submitted_timestamp": submitted_timestamp(when),
        "version": 2,
        "metadata": {"payload": "multipart", "user_agent": "<b>agent</b>"},
    }
    await runtime.collector.storage.save(crash_id, raw_crash_json(raw), dumps)
    return crash_id


async def get(http_client, base_url, caller: Caller, path: str) -> Page:
    return await fetch_page(http_client, base_url, caller, path)


@pytest.mark.gen_test(timeout=60)
async def test_anonymous_visitors_sign_in_first(http_client, base_url, runtime):
    crash_id = await store_crash(runtime, {"ProductName": "App"}, {"upload_file_minidump": b"MDMP"})
    for path in ("/crashes/", f"/crashes/{crash_id}", f"/crashes/{crash_id}/dumps/dump"):
        page = await get(http_client, base_url, Caller.anonymous(), path)
        assert page.status == 302 and (page.location or "").startswith(
            "/oidc/authenticate/?next="
        ), path


@pytest.mark.gen_test(timeout=60)
async def test_recent_reports_are_listed_newest_day_first(http_client, base_url, runtime):
    today = await store_crash(runtime, {"ProductName": "Today", "Version": "2.0"}, {})
    earlier = datetime.now(UTC) - timedelta(days=2)
    older = await store_crash(runtime, {"ProductName": "Older", "Version": "1.0"}, {}, earlier)
    await runtime.collector.storage.save_processed(
        older, json.dumps({"uuid": older, "signature": "<b>crash_here</b>"}).encode()
    )
    caller = await Caller.with_session(runtime, await make_user(runtime, superuser=True))
    page = await get(http_client, base_url, caller, "/crashes/")
    assert page.status == 200 and page.h1() == "Crash reports"
    links = [href for _, href in page.links]
    if f"/crashes/{today}" in links and f"/crashes/{older}" in links:
        assert links.index(f"/crashes/{today}") < links.index(f"/crashes/{older}")
    # One day: only its reports, with product, version, time and the signature placeholder.
    day = await get(http_client, base_url, caller, f"/crashes/?date={earlier.date().isoformat()}")
    assert (older, f"/crashes/{older}") in day.links
    assert f"/crashes/{today}" not in [href for _, href in day.links]
    assert "Older" in day.text and "1.0" in day.text
    assert "<b>crash_here</b>" in day.text and "<b>crash_here" not in day.body  # escaped
    today_page = await get(http_client, base_url, caller, "/crashes/")
    assert "not processed" in today_page.text
    assert earlier.strftime("%Y-%m-%d %H:%M") in day.text
    bad = await get(http_client, base_url, caller, "/crashes/?date=soon")
    assert bad.status == 400 and "'soon' is not a date" in bad.text
    nul = await get(http_client, base_url, caller, "/crashes/?date=%00")
    assert nul.status == 400 and "Date: must not hold control characters" in nul.text


@pytest.mark.gen_test(timeout=60)
async def test_crash_data_needs_the_view_crashes_permission(http_client, base_url, runtime):
    crash_id = await store_crash(
        runtime,
        {"ProductName": "Secret", "Email": "someone@example.com"},
        {"upload_file_minidump": b"MDMP"},
    )
    paths = ("/crashes/", f"/crashes/{crash_id}", f"/crashes/{crash_id}/dumps/upload_file_minidump")
    for groups in ((), ("Uploaders",), ("Upload Auditors",)):
        caller = await Caller.with_session(runtime, await make_user(runtime, groups=groups))
        for path in paths:
            page = await get(http_client, base_url, caller, path)
            assert page.status == 403, (groups, path)
            assert "View crash reports" in page.text
            assert "someone@example.com" not in page.body and "MDMP" not in page.body
    # Superusers hold it, and may give it to a token.
    boss = await make_user(runtime, superuser=True)
    token = Caller.with_token(await token_of(runtime, boss, ("crashes.view_crashes",)))
    for path in paths:
        assert (await get(http_client, base_url, token, path)).status == 200, path
    other = Caller.with_token(await token_of(runtime, boss, ("upload.view_all_uploads",)))
    assert (await get(http_client, base_url, other, f"/crashes/{crash_id}")).status == 403


@pytest.mark.gen_test(timeout=60)
async def test_a_report_shows_annotations_escaped_dumps_and_signature(
    http_client, base_url, runtime
):
    crash_id = await store_crash(
        runtime,
        {
            "ProductName": "<script>alert(1)</script>",
            "Version": "1.0",
            "Notes": '"><img src=x onerror=alert(2)>',
            "Email": "someone@example.com",
        },
        {"upload_file_minidump": b"MDMP" + b"\x00" * 2044, "memory_report": b"{}"},
    )
    boss = await Caller.with_session(runtime, await make_user(runtime, superuser=True))
    page = await get(http_client, base_url, boss, f"/crashes/{crash_id}")
    assert page.status == 200
    assert "<script>alert(1)" not in page.body and "<img src=x" not in page.body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.body
    assert "&lt;b&gt;agent&lt;/b&gt;" in page.body
    assert "upload_file_minidump" in page.text and "memory_report" in page.text
    assert "someone@example.com" in page.text
    assert "not processed" in page.text
    dump = f"/crashes/{crash_id}/dumps/upload_file_minidump"
    assert ("Download", dump) in page.links
    response = await http_client.fetch(base_url + dump, headers=boss.headers)
    assert response.body == b"MDMP" + b"\x00" * 2044
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert (
        f'filename="{crash_id}.upload_file_minidump.dmp"' in response.headers["Content-Disposition"]
    )
    # Only the report's own dumps.
    for name in ("raw_crash", "dump_names", "nothing"):
        page = await get(http_client, base_url, boss, f"/crashes/{crash_id}/dumps/{name}")
        assert page.status == 404, name
    # Once processed: its signature.
    await runtime.collector.storage.save_processed(
        crash_id, json.dumps({"uuid": crash_id, "signature": "app::crash_here"}).encode()
    )
    page = await get(http_client, base_url, boss, f"/crashes/{crash_id}")
    assert "app::crash_here" in page.text and "not processed" not in page.text


@pytest.mark.gen_test(timeout=60)
async def test_unknown_and_malformed_ids_are_not_found(http_client, base_url, runtime):
    caller = await Caller.with_session(runtime, await make_user(runtime, superuser=True))
    unknown = create_crash_id(datetime.now(UTC), 0)
    page = await get(http_client, base_url, caller, f"/crashes/{unknown}")
    assert page.status == 404 and unknown in page.text
    page = await get(http_client, base_url, caller, "/crashes/" + "z" * 36)
    assert page.status == 404


@pytest.mark.gen_test(timeout=60)
async def test_a_report_page_reads_no_dump(http_client, base_url, runtime, monkeypatch):
    """Dumps may be large: the report names them and reads none; only a download reads one."""
    crash_id = await store_crash(
        runtime, {"ProductName": "App"}, {"upload_file_minidump": b"MDMP", "extra": b"x"}
    )
    store = runtime.collector.storage
    read: list[str] = []
    load_dump = store.load_dump

    async def counted(crash: str, name: str) -> bytes | None:
        read.append(name)
        return await load_dump(crash, name)

    monkeypatch.setattr(store, "load_dump", counted)
    boss = await Caller.with_session(runtime, await make_user(runtime, superuser=True))
    page = await get(http_client, base_url, boss, f"/crashes/{crash_id}")
    assert page.status == 200 and read == []
    for name in ("upload_file_minidump", "extra"):
        assert ("Download", f"/crashes/{crash_id}/dumps/{name}") in page.links
    dump = await get(http_client, base_url, boss, f"/crashes/{crash_id}/dumps/extra")
    assert dump.status == 200 and dump.body == "x" and read == ["extra"]
