"""The crash pages (docs/web.md, "Crashes"): the crash index with the API's filters, top
signatures and the crashes processing has not reached; a crash's state, and for
``crashes.view_crashes`` its stacks, modules, notes, annotations and dumps, escaped, whatever
shape its processed crash has.

Processed and failed crashes are made by the real pipeline (``CrashProcessor.process`` on a
stored crash, without the queue): a minidump written byte by byte (tests/processing/synth.py)
and a .sym in this server's own storage. Listings of many crashes, and processed crashes of odd
shapes, are written as the pipeline writes them: ``records.finish`` and ``save_processed``.
"""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from symbolon.crashes.crashid import create_crash_id, submitted_timestamp
from symbolon.crashes.store import raw_crash_json
from symbolon.processing.pipeline import records
from tests.accounts import Caller, make_user, token_of
from tests.crash_pages import HOSTILE_FILE, HOSTILE_FUNCTION, app_symbols, crash_dump
from tests.processing_support import processing_settings
from tests.symbolication_support import put_own
from tests.web_pages import Page, fetch_page


@pytest.fixture
def settings(live_settings, cache_dir, tmp_path):
    # A crash store of each test's own: the list shows the first crashes not processed yet, and
    # the session's store holds every other test's.
    return processing_settings(live_settings, cache_dir).replace(
        crash_storage="fs", crash_fs_root=tmp_path / "crashes"
    )


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


async def processed_crash(runtime, settings, product: str) -> str:
    """A crash stored and processed by the real pipeline, with ``app``'s symbols only."""
    dump, debug_file, debug_id = crash_dump()
    put_own(
        settings, f"{debug_file}/{debug_id}/{debug_file}.sym", app_symbols(debug_file, debug_id)
    )
    crash_id = await store_crash(
        runtime,
        {"ProductName": product, "Version": "3.1", "ReleaseChannel": "nightly", "Email": "x@y.z"},
        {"upload_file_minidump": dump},
    )
    done = await runtime.processor.process(crash_id)
    assert done is not None and done.failure is None
    return crash_id


@pytest.mark.gen_test(timeout=60)
async def test_anonymous_visitors_sign_in_first(http_client, base_url, runtime):
    crash_id = await store_crash(runtime, {"ProductName": "App"}, {"upload_file_minidump": b"MDMP"})
    for path in ("/crashes/", f"/crashes/{crash_id}", f"/crashes/{crash_id}/dumps/dump"):
        page = await get(http_client, base_url, Caller.anonymous(), path)
        assert page.status == 302 and (page.location or "").startswith(
            "/oidc/authenticate/?next="
        ), path


@pytest.mark.gen_test(timeout=120)
async def test_a_processed_crash_shows_its_stacks_modules_and_notes(
    http_client, base_url, runtime, settings
):
    product = f"Processed-{uuid.uuid4().hex[:8]}"
    crash_id = await processed_crash(runtime, settings, product)
    row = await records.find(runtime.db, crash_id)
    assert row is not None and row["state"] == "processed"
    boss = await Caller.with_session(runtime, await make_user(runtime, superuser=True))
    page = await get(http_client, base_url, boss, f"/crashes/{crash_id}")
    assert page.status == 200
    text = page.text
    assert "processed" in text and "SIGSEGV" in text and "0x5a0" in text
    assert "Linux" in text and "amd64" in text
    # The crashing thread's frames: the function with its offset, file:line, trust.
    crashing = re.search(
        r'<section aria-labelledby="crashing-thread">.*?</section>', page.body, re.S
    )
    assert crashing is not None
    assert "+ 0x10" in crashing.group(0) and "context" in crashing.group(0)
    assert "libnosyms.so" in crashing.group(0) and "scan" in crashing.group(0)
    assert ":42" in crashing.group(0)
    # Hostile names from the .sym are text, never markup.
    assert HOSTILE_FUNCTION in text and HOSTILE_FILE + ":42" in text
    assert "<script>alert(1)" not in page.body and "<img src=x" not in page.body
    assert "evil&lt;script&gt;alert(1)&lt;/script&gt;" in page.body
    # The other thread, collapsed; the modules, the one without symbols highlighted.
    assert re.search(r'<details class="threads">\s*<summary>Other threads \(1\)', page.body)
    assert "spin_here" in page.body.split('<details class="threads">')[1]
    missing = re.findall(r'<tr class="missing">.*?</tr>', page.body, re.S)
    assert len(missing) == 1 and "libnosyms.so" in missing[0]
    assert "1 without symbols" in text
    # Processor notes, annotations and dumps as before; the API's JSON.
    assert "no symbols for libnosyms.so/" in text
    assert "x@y.z" in text
    assert ("Download", f"/crashes/{crash_id}/dumps/upload_file_minidump") in page.links
    assert ("Processed crash as JSON", f"/api/crashes/{crash_id}") in page.links
    assert f"/api/crashes/{crash_id}" in text  # the curl block
    # The signature links to the list filtered by it.
    signature = row["signature"]
    assert signature and any(href.startswith("/crashes/?signature=") for _, href in page.links)

    # Without "View crash reports": the state and signature, as the API shows them, no more.
    person = await Caller.with_session(runtime, await make_user(runtime, groups=("Uploaders",)))
    page = await get(http_client, base_url, person, f"/crashes/{crash_id}")
    assert page.status == 200 and "processed" in page.text
    assert signature in page.text
    assert "spin_here" not in page.body and "x@y.z" not in page.body
    assert "libnosyms" not in page.body and "View crash reports" in page.text
    assert not [href for _, href in page.links if "/dumps/" in href]
    dump = await get(
        http_client, base_url, person, f"/crashes/{crash_id}/dumps/upload_file_minidump"
    )
    assert dump.status == 403

    # In the list, for both.
    for caller in (boss, person):
        listed = await get(http_client, base_url, caller, f"/crashes/?product={product}")
        assert listed.status == 200
        assert (crash_id, f"/crashes/{crash_id}") in listed.links
        assert "3.1" in listed.text and "nightly" in listed.text and "processed" in listed.text


@pytest.mark.gen_test(timeout=120)
async def test_a_failed_crash_says_why_and_a_pending_one_says_so(http_client, base_url, runtime):
    boss = await Caller.with_session(runtime, await make_user(runtime, superuser=True))
    failed = await store_crash(
        runtime, {"ProductName": "Broken"}, {"upload_file_minidump": b"MDMP" + bytes(60)}
    )
    done = await runtime.processor.process(failed)
    assert done is not None and done.failure is not None
    page = await get(http_client, base_url, boss, f"/crashes/{failed}")
    assert page.status == 200 and "failed" in page.text
    assert "Why it failed" in page.text and done.failure in page.text
    assert "The dump was not walked." in page.text
    # The reason is the index's, so anyone signed in sees it, as in the API.
    person = await Caller.with_session(runtime, await make_user(runtime))
    page = await get(http_client, base_url, person, f"/crashes/{failed}")
    assert page.status == 200 and done.failure in page.text

    # Processing started (the pipeline's first write), not ended.
    started = await store_crash(runtime, {"ProductName": "Slow"}, {})
    raw = json.loads(await runtime.collector.storage.load_raw_crash(started))
    await records.start(runtime.db, started, records.meta_of(raw, started))
    page = await get(http_client, base_url, boss, f"/crashes/{started}")
    assert page.status == 200 and "pending" in page.text and "not processed yet" in page.text

    # Stored, never reached: pending on its page, and listed apart on the list's first page.
    waiting = await store_crash(runtime, {"ProductName": "Waiting"}, {})
    page = await get(http_client, base_url, boss, f"/crashes/{waiting}")
    assert page.status == 200 and "pending" in page.text and "Waiting" in page.text
    listing = await get(http_client, base_url, person, "/crashes/")
    assert (waiting, f"/crashes/{waiting}") in listing.links
    assert "Stored, not processed yet" in listing.text
    assert (started, f"/crashes/{started}") in listing.links  # in the index, pending
    pending = await get(http_client, base_url, person, "/crashes/?state=pending")
    assert (waiting, f"/crashes/{waiting}") in pending.links
    filtered = await get(http_client, base_url, person, "/crashes/?state=failed")
    assert f"/crashes/{waiting}" not in [href for _, href in filtered.links]
    assert (failed, f"/crashes/{failed}") in filtered.links


@pytest.mark.gen_test(timeout=60)
async def test_processed_crashes_of_odd_shapes_are_shown(http_client, base_url, runtime):
    """Written by an older version, or another processor: any field missing or of a wrong type."""
    boss = await Caller.with_session(runtime, await make_user(runtime, superuser=True))
    odd = [
        b"not json",
        b"[1, 2]",
        b"{}",
        json.dumps(
            {
                "signature": {"a": 1},
                "processor_notes": 5,
                "crashing_thread": "0",
                "reason": ["x"],
                "json_dump": {
                    "threads": [
                        {
                            "frames": [
                                None,
                                3,
                                {"frame": "x", "function": 7, "line": "abc", "inlines": "no"},
                                {"function": "<b>f</b>", "inlines": [None, {"function": None}]},
                            ],
                            "thread_id": {"x": 1},
                        },
                        "thread",
                    ],
                    "modules": [1, None, {"filename": ["x"], "missing_symbols": "yes"}],
                    "crash_info": {"crashing_thread": 99},
                    "system_info": [],
                },
            }
        ).encode(),
        json.dumps({"json_dump": {"threads": "nope", "modules": {}, "crash_info": None}}).encode(),
        json.dumps({"json_dump": {"status": "ERROR", "error": 3}, "success": False}).encode(),
    ]
    for data in odd:
        crash_id = await store_crash(runtime, {"ProductName": "Odd"}, {})
        await runtime.collector.storage.save_processed(crash_id, data)
        raw = json.loads(await runtime.collector.storage.load_raw_crash(crash_id))
        await records.finish(runtime.db, crash_id, records.meta_of(raw, crash_id), "odd")
        page = await get(http_client, base_url, boss, f"/crashes/{crash_id}")
        assert page.status == 200, data
        assert "<b>f</b>" not in page.body
    # A processed crash without its raw crash (gone from the store), and an index row alone.
    crash_id = create_crash_id(datetime.now(UTC), 0)
    meta = records.meta_of({"ProductName": "Gone"}, crash_id)
    await records.finish(runtime.db, crash_id, meta, None, reason="<i>bad</i>")
    page = await get(http_client, base_url, boss, f"/crashes/{crash_id}")
    assert page.status == 200 and "<i>bad</i>" in page.text and "<i>bad" not in page.body
    assert "The raw crash is no longer in the crash store." in page.text


@pytest.mark.gen_test(timeout=120)
async def test_filters_pages_and_top_signatures(http_client, base_url, runtime):
    product = f"Filtered<{uuid.uuid4().hex[:8]}>"
    now = datetime.now(UTC)
    made: dict[str, str] = {}
    for n, (version, signature, reason) in enumerate(
        [
            ("1.0", "<b>sig-a</b>", None),
            ("1.0", "<b>sig-a</b>", None),
            ("2.0", "sig-b", None),
            ("2.0", None, "the minidump cannot be read"),
        ]
    ):
        when = now - timedelta(hours=n)
        crash_id = create_crash_id(when, 0)
        meta = records.CrashMeta(product, version, "beta", when)
        await records.finish(runtime.db, crash_id, meta, signature, reason=reason)
        made[f"{n}"] = crash_id
    old = create_crash_id(now - timedelta(days=30), 0)
    await records.finish(
        runtime.db, old, records.CrashMeta(product, "1.0", "beta", now - timedelta(days=30)), "old"
    )
    person = await Caller.with_session(runtime, await make_user(runtime))
    quoted = product.replace("<", "%3C").replace(">", "%3E")

    def ids(page: Page) -> list[str]:
        return [text for text, href in page.links if href == f"/crashes/{text}"]

    page = await get(http_client, base_url, person, f"/crashes/?product={quoted}")
    assert page.status == 200
    # Newest first.
    assert ids(page) == [made["0"], made["1"], made["2"], made["3"], old]
    assert f"{product}" in page.text and f"<{product[9:]}" not in page.body
    assert "failed" in page.text and "&lt;b&gt;sig-a&lt;/b&gt;" in page.body
    form = page.form("/crashes/")
    assert form["fields"]["product"] == product
    assert {"version", "release_channel", "signature", "date", "state"} <= set(form["fields"])
    page = await get(http_client, base_url, person, f"/crashes/?product={quoted}&version=2.0")
    assert ids(page) == [made["2"], made["3"]]
    page = await get(
        http_client, base_url, person, f"/crashes/?product={quoted}&signature=%3Cb%3Esig-a%3C/b%3E"
    )
    assert ids(page) == [made["0"], made["1"]]
    page = await get(http_client, base_url, person, f"/crashes/?product={quoted}&state=failed")
    assert ids(page) == [made["3"]]
    page = await get(
        http_client, base_url, person, f"/crashes/?product={quoted}&date=%3C2000-01-01"
    )
    assert ids(page) == [] and "No crashes match." in page.text
    page = await get(http_client, base_url, person, f"/crashes/?product={quoted}&date=today")
    assert old not in ids(page)
    bad = await get(http_client, base_url, person, "/crashes/?date=soon")
    assert bad.status == 400 and "Received: Unable to parse 'soon'" in bad.text
    bad = await get(http_client, base_url, person, "/crashes/?state=gone")
    assert bad.status == 400 and "State: Invalid state 'gone'" in bad.text
    nul = await get(http_client, base_url, person, "/crashes/?product=%00")
    assert nul.status == 400 and "Product: must not hold control characters" in nul.text

    # Top signatures of the last 7 days, for the product: counts, links filtering by each.
    page = await get(http_client, base_url, person, f"/crashes/?product={quoted}")
    top = page.body.split('id="top-signatures"')[1].split("</section>")[0]
    assert "the last 7 days" in top
    rows = re.findall(
        r'<a href="([^"]+)">([^<]*(?:&lt;[^<]*)*)</a>\s*</td>\s*<td class="num"[^>]*>\s*(\d+)', top
    )
    assert [(text, count) for _, text, count in rows] == [
        ("&lt;b&gt;sig-a&lt;/b&gt;", "2"),
        ("sig-b", "1"),
    ]
    link = rows[0][0].replace("&amp;", "&")
    page = await get(http_client, base_url, person, link)
    assert ids(page) == [made["0"], made["1"]]

    # Pages of the API's size (100), the filters kept.
    many = f"Many-{uuid.uuid4().hex[:8]}"
    for n in range(101):
        when = now - timedelta(minutes=n)
        meta = records.CrashMeta(many, "1", "", when)
        await records.finish(runtime.db, create_crash_id(when, 0), meta, "s")
    page = await get(http_client, base_url, person, f"/crashes/?product={many}")
    assert len(ids(page)) == 100 and "1\u2013100 of 101" in page.text
    assert ("Next", f"/crashes/?product={many}&page=2") in page.links
    page = await get(http_client, base_url, person, f"/crashes/?product={many}&page=2")
    assert len(ids(page)) == 1


@pytest.mark.gen_test(timeout=60)
async def test_crash_data_needs_the_view_crashes_permission(http_client, base_url, runtime):
    crash_id = await store_crash(
        runtime,
        {"ProductName": "Secret", "Email": "someone@example.com"},
        {"upload_file_minidump": b"MDMP"},
    )
    for groups in ((), ("Uploaders",), ("Upload Auditors",)):
        caller = await Caller.with_session(runtime, await make_user(runtime, groups=groups))
        # The list and the state, as the API gives them to anyone signed in.
        assert (await get(http_client, base_url, caller, "/crashes/")).status == 200
        page = await get(http_client, base_url, caller, f"/crashes/{crash_id}")
        assert page.status == 200 and "pending" in page.text
        assert "View crash reports" in page.text
        assert "someone@example.com" not in page.body
        dump = f"/crashes/{crash_id}/dumps/upload_file_minidump"
        page = await get(http_client, base_url, caller, dump)
        assert page.status == 403 and "MDMP" not in page.body
    # Superusers hold it, and may give it to a token.
    boss = await make_user(runtime, superuser=True)
    token = Caller.with_token(await token_of(runtime, boss, ("crashes.view_crashes",)))
    for path in ("/crashes/", f"/crashes/{crash_id}", dump):
        assert (await get(http_client, base_url, token, path)).status == 200, path
    page = await get(http_client, base_url, token, f"/crashes/{crash_id}")
    assert "someone@example.com" in page.text
    other = Caller.with_token(await token_of(runtime, boss, ("upload.view_all_uploads",)))
    page = await get(http_client, base_url, other, f"/crashes/{crash_id}")
    assert page.status == 200 and "someone@example.com" not in page.body


@pytest.mark.gen_test(timeout=60)
async def test_a_report_shows_annotations_escaped_and_its_dumps(http_client, base_url, runtime):
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


@pytest.mark.gen_test(timeout=60)
async def test_unknown_and_malformed_ids_are_not_found(http_client, base_url, runtime):
    caller = await Caller.with_session(runtime, await make_user(runtime, superuser=True))
    unknown = create_crash_id(datetime.now(UTC), 0)
    page = await get(http_client, base_url, caller, f"/crashes/{unknown}")
    assert page.status == 404 and unknown in page.text
    page = await get(http_client, base_url, caller, "/crashes/" + "z" * 36)
    assert page.status == 404
    person = await Caller.with_session(runtime, await make_user(runtime))
    page = await get(http_client, base_url, person, f"/crashes/{unknown}")
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
