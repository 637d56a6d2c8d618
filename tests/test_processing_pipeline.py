"""Crash processing end to end: a real crashpad_handler uploads a real crash of a C program to
``/submit``, the collector publishes it, the processor takes it from the queue, walks and
symbolicates it with the program's own .sym files (made by Breakpad's dump_syms), signs it,
stores the processed crash beside the raw one and indexes it; the API shows it to each caller as
their permissions allow."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis

from symbolon.accounts.permissions import Permission
from symbolon.crashes.publish import Publisher
from symbolon.queues import NAMESPACE
from symbolon.runtime import Runtime
from tests.accounts import Caller, call, make_user, token_of
from tests.conftest import running_worker, served
from tests.crashes import published
from tests.crashpad_support import WITHIN, crashpad_handler  # noqa: F401 (a fixture)
from tests.processing_support import (
    CRASH_LINE,
    CRASHING_FUNCTION,
    crash,
    crashing_frames,
    processing_settings,
    program,  # noqa: F401 (a fixture)
    program_dump,  # noqa: F401 (a fixture)
    submit,
    wait_for_state,
)
from tests.symbolication_support import put_own


@pytest.fixture
def settings(live_settings, cache_dir):
    return processing_settings(live_settings, cache_dir)


def crash_id_in(database) -> str:
    """The crash id the collector answered, as Crashpad's database keeps it."""
    (meta,) = (database / "completed").glob("*.meta")
    return meta.read_bytes().rsplit(b"CrashID=bp-", 1)[1].strip().decode()


@pytest.mark.gen_test(timeout=4 * WITHIN)
async def test_a_crash_from_crashpad_is_processed_signed_indexed_and_shown(
    crashpad_handler, program, settings, tmp_path
):
    put_own(settings, program.app.key, program.app.data)
    put_own(settings, program.libmid.key, program.libmid.data)
    server = served(settings)
    with running_worker(settings):
        async with server as (http_client, base_url):
            runtime = server.runtime
            database = tmp_path / "crashpad-db"
            # In a thread: the server answering the upload runs on this event loop.
            await asyncio.to_thread(
                crash,
                program,
                crashpad_handler,
                database,
                url=f"{base_url}/submit",
                annotations={"prod": "Processing Test", "ver": "2.0.1", "channel": "beta"},
            )
            crash_id = crash_id_in(database)
            row = await wait_for_state(runtime, crash_id)

            # The index row.
            assert row["state"] == "processed", row["reason"]
            assert (row["product"], row["version"], row["release_channel"]) == (
                "Processing Test",
                "2.0.1",
                "beta",
            )
            assert row["signature"] == CRASHING_FUNCTION
            assert row["reason"] is None and row["processed_at"] is not None

            # The processed crash, beside the raw crash in the crash store.
            processed = json.loads(await runtime.processor.storage.load_processed(crash_id))
            assert processed["uuid"] == crash_id
            assert processed["signature"] == CRASHING_FUNCTION
            assert (processed["product"], processed["version"]) == ("Processing Test", "2.0.1")
            assert processed["release_channel"] == "beta"
            assert (processed["os_name"], processed["cpu_arch"]) == ("Linux", "amd64")
            raw = json.loads(await runtime.processor.storage.load_raw_crash(crash_id))
            assert processed["date_processed"] == raw["submitted_timestamp"]
            assert "libc.so.6/" in processed["processor_notes"].split("no symbols for ")[1]
            dump = processed["json_dump"]
            assert dump["crash_info"] == {
                "type": "SIGSEGV /SEGV_MAPERR",
                "address": "0x5a0",
                "crashing_thread": 0,
                "assertion": None,
            }
            frames = crashing_frames(processed)
            top = frames[0]
            assert (top["function"], top["line"], top["trust"]) == (
                CRASHING_FUNCTION,
                CRASH_LINE,
                "context",
            )
            assert top["file"].endswith("tests/processing/stackwalk_app.c")
            assert (top["module"], top["inlines"]) == ("stackwalk_app", [])
            assert int(top["function_offset"], 16) > 0
            # The callers, each named by the line of its call: through libmid and back.
            functions = [frame["function"] for frame in frames]
            assert functions[:11] == [
                "crash_here",
                "step_c",
                "step_b",
                "step_a",
                "mid_inner",
                "mid_call",
                *["recurse"] * 4,
                "main",
            ]
            assert [frame["trust"] for frame in frames[1:11]] == ["cfi"] * 10
            assert frames[4]["module"] == "libmid.so"
            assert frames[4]["file"].endswith("tests/processing/libmid.c")
            # Other threads are walked and symbolicated too: the one spinning in the program's
            # own code, for one (the others wait in the C library, which has no symbols here).
            assert len(dump["threads"]) == 5
            tops = [t["frames"][0]["function"] for t in dump["threads"] if t["frames"]]
            assert tops.count("spinner_level3") == 1
            modules = {m["filename"]: m for m in dump["modules"]}
            assert modules["stackwalk_app"]["debug_id"] == program.app.debug_id
            assert modules["stackwalk_app"]["missing_symbols"] is False
            assert modules["libmid.so"]["missing_symbols"] is False
            assert modules["libc.so.6"]["missing_symbols"] is True
            # The crash was taken off the queue.
            assert published(settings) == []

            await check_api(http_client, base_url, runtime, crash_id, raw, processed)


async def check_api(http_client, base_url, runtime, crash_id, raw, processed):
    viewer = await make_user(runtime, superuser=True)
    other = await make_user(runtime, groups=("Uploaders",))
    with_permission = Caller.with_token(
        await token_of(runtime, viewer, (Permission.VIEW_CRASHES.value,))
    )
    without = Caller.with_token(await token_of(runtime, other, ("upload.upload_symbols",)))
    browser = await Caller.with_session(runtime, viewer)  # a superuser holds it anyway
    path = f"/api/crashes/{crash_id}"

    for caller in (with_permission, browser):
        status, body = await call(http_client, base_url, caller, path)
        assert status == 200
        assert body == {
            "crash_id": crash_id,
            "state": "processed",
            "reason": None,
            "signature": CRASHING_FUNCTION,
            "raw_crash": raw,
            "processed_crash": processed,
        }
    # Annotations and dumps can hold personal data: without view_crashes, neither crash.
    status, body = await call(http_client, base_url, without, path)
    assert status == 200
    assert (body["state"], body["signature"]) == ("processed", CRASHING_FUNCTION)
    assert (body["raw_crash"], body["processed_crash"]) == (None, None)
    status, body = await call(http_client, base_url, Caller.anonymous(), path)
    assert status == 403
    unknown = crash_id[:24] + "ffffff" + crash_id[30:]
    status, body = await call(http_client, base_url, with_permission, f"/api/crashes/{unknown}")
    assert (status, body) == (404, {"error": "No crash matches the given query."})

    # The lists need only a token or a session.
    for caller in (without, browser):
        status, body = await call(
            http_client, base_url, caller, "/api/crashes/?product=Processing%20Test"
        )
        assert status == 200
        (listed,) = [c for c in body["crashes"] if c["crash_id"] == crash_id]
        assert listed["signature"] == CRASHING_FUNCTION
        assert (listed["version"], listed["state"]) == ("2.0.1", "processed")
    status, body = await call(http_client, base_url, without, "/api/crashes/?product=Other")
    assert crash_id not in [c["crash_id"] for c in body["crashes"]]
    status, body = await call(
        http_client, base_url, without, f"/api/crashes/?signature={CRASHING_FUNCTION}&date=today"
    )
    assert crash_id in [c["crash_id"] for c in body["crashes"]]
    status, body = await call(http_client, base_url, without, "/api/crashes/?date=<2000-01-01")
    assert (status, body["crashes"], body["total"]) == (200, [], 0)
    status, body = await call(http_client, base_url, without, "/api/crashes/?date=soon")
    assert (status, body) == (400, {"errors": {"date": ["Unable to parse 'soon'"]}})
    status, _ = await call(http_client, base_url, Caller.anonymous(), "/api/crashes/")
    assert status == 403

    status, body = await call(
        http_client, base_url, without, "/api/crashes/signatures/?product=Processing%20Test"
    )
    assert status == 200
    assert body["days"] == 7
    counts = {s["signature"]: s["count"] for s in body["signatures"]}
    assert counts[CRASHING_FUNCTION] >= 1
    status, body = await call(http_client, base_url, without, "/api/crashes/signatures/?days=0")
    assert status == 400 and "days" in body["errors"]


@pytest.mark.gen_test(timeout=4 * WITHIN)
async def test_the_publishers_test_message_is_dropped_and_crashes_still_flow(
    program, program_dump, settings
):
    put_own(settings, program.app.key, program.app.data)
    server = served(settings)
    with running_worker(settings):
        async with server as (http_client, base_url):
            # What every collector publishes at start-up, to prove the queue works.
            publisher = Publisher(settings)
            await publisher.publish("test")
            await publisher.close()
            crash_id = await submit(http_client, base_url, program_dump)
            row = await wait_for_state(server.runtime, crash_id)
            assert row["state"] == "processed"
            assert (
                await server.runtime.db.fetchval(
                    "SELECT count(*) FROM crashes WHERE crash_id = 'test'"
                )
                == 0
            )
            # Neither waiting nor waiting to be retried.
            assert published(settings) == []
            assert delayed(settings) == 0


def delayed(settings) -> int:
    client = redis.Redis.from_url(settings.redis_url)
    try:
        return client.hlen(f"{NAMESPACE}:{settings.crashpublish_queue_name}.DQ.msgs")
    finally:
        client.close()


@pytest.mark.gen_test(timeout=WITHIN)
async def test_crashes_arriving_together_at_a_new_worker_share_one_runtime(settings):
    # Two actors starting at once on the worker's loop: one runtime, not one each (the other
    # would never be closed, its connections and tasks left behind).
    from symbolon.tasks import worker_runtime

    worker_runtime.configure(settings)
    first, second = await asyncio.gather(
        worker_runtime.worker_runtime(), worker_runtime.worker_runtime()
    )
    try:
        assert first is second
        assert await worker_runtime.worker_runtime() is first
    finally:
        worker_runtime._runtimes.pop(asyncio.get_running_loop(), None)
        await first.close()


@pytest.mark.gen_test(timeout=2 * WITHIN)
async def test_crashes_left_pending_are_queued_again_by_the_periodic_task(live_settings, cache_dir):
    from datetime import UTC, datetime

    from symbolon.crashes.crashid import create_crash_id
    from symbolon.processing.pipeline import records

    settings = processing_settings(live_settings, cache_dir)
    runtime = await Runtime.create(settings)
    try:
        db = runtime.db
        ids = {name: create_crash_id(datetime.now(UTC), 0) for name in ("old", "new", "done")}
        for crash_id in ids.values():
            await records.start(db, crash_id, records.meta_of({}, crash_id))
        await records.finish(db, ids["done"], records.meta_of({}, ids["done"]), "f")
        # Processing of "old" died two hours ago; "done" finished then.
        await db.execute(
            "UPDATE crashes SET updated_at = now() - interval '2 hours' WHERE crash_id = ANY($1)",
            [ids["old"], ids["done"]],
        )
        assert await runtime.processor.requeue_stale() == 1
        assert published(settings) == [ids["old"]]
        # Queued once: the next run waits for the processing it was queued for.
        assert await runtime.processor.requeue_stale() == 0
        assert published(settings) == [ids["old"]]
    finally:
        await runtime.close()
