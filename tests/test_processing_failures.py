"""Dumps that cannot be walked end in a recorded failure with a reason, never a dead worker, a
hang or a lost crash: a dump that is not a minidump, one that would take gigabytes, one that
would walk for long, and a walking process killed from outside. The next crash is processed as
usual. And the processor can be switched off for sites that run their own."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import uuid

import pytest
import redis

import symbolon.processing.pipeline.sandbox as sandbox
import symbolon.tasks.actors as actors
from symbolon.processing.pipeline.sandbox import WalkPool, WalkUnavailable
from tests.accounts import Caller, call, make_user, token_of
from tests.conftest import running_worker, served, wait_until
from tests.crashes import published
from tests.crashpad_support import WITHIN, crashpad_handler  # noqa: F401 (a fixture)
from tests.processing_support import (
    CRASHING_FUNCTION,
    name_bomb,
    processing_settings,
    program,  # noqa: F401 (a fixture)
    program_dump,  # noqa: F401 (a fixture)
    scan_bomb,
    submit,
    wait_for_state,
)
from tests.symbolication_support import put_own
from tests.uploads import multipart

HOSTILE = {
    "garbage": (
        lambda: b"MDMP" + os.urandom(2000),
        {},
        "the minidump cannot be read",
    ),
    # Gigabytes of module names: out of the walking process's address space.
    "memory": (
        name_bomb,
        {"processor_walk_memory": 512 * 1024**2},
        "the dump needs more memory than PROCESSOR_WALK_MEMORY",
    ),
    # Seconds of stack scanning: past the walk's time.
    "time": (
        scan_bomb,
        {"processor_walk_timeout_seconds": 1.0},
        "walking the dump took longer than 1 s",
    ),
}


@pytest.mark.parametrize("kind", list(HOSTILE))
@pytest.mark.gen_test(timeout=4 * WITHIN)
async def test_a_hostile_dump_fails_with_a_reason_and_the_worker_goes_on(
    program, program_dump, live_settings, cache_dir, kind
):
    make, changes, reason = HOSTILE[kind]
    settings = processing_settings(live_settings, cache_dir, **changes)
    put_own(settings, program.app.key, program.app.data)
    put_own(settings, program.libmid.key, program.libmid.data)
    dump = make()
    assert len(dump) < settings.collector_max_body_size  # what /submit takes
    server = served(settings)
    with running_worker(settings):
        async with server as (http_client, base_url):
            runtime = server.runtime
            crash_id = await submit(http_client, base_url, dump)
            row = await wait_for_state(runtime, crash_id)
            assert row["state"] == "failed"
            assert row["reason"].startswith(reason), row["reason"]
            assert row["signature"] is None
            # The worker is still there, and walks the next crash as usual.
            good = await submit(http_client, base_url, program_dump)
            row = await wait_for_state(runtime, good)
            assert (row["state"], row["signature"]) == ("processed", CRASHING_FUNCTION)

            # The failed crash is not lost: its processed crash says why, the API shows it.
            viewer = await make_user(runtime, superuser=True)
            caller = Caller.with_token(await token_of(runtime, viewer, ("crashes.view_crashes",)))
            status, body = await call(http_client, base_url, caller, f"/api/crashes/{crash_id}")
            assert status == 200
            assert body["state"] == "failed" and body["reason"].startswith(reason)
            assert body["raw_crash"]["uuid"] == crash_id
            processed = body["processed_crash"]
            assert (processed["success"], processed["signature"]) == (False, None)
            assert body["reason"] in processed["processor_notes"]
            assert processed["json_dump"] == {"status": "ERROR", "error": body["reason"]}
            status, body = await call(http_client, base_url, caller, "/api/crashes/?state=failed")
            assert crash_id in {c["crash_id"] for c in body["crashes"]}
            assert published(settings) == []


@pytest.mark.gen_test(timeout=2 * WITHIN)
async def test_a_walking_process_killed_mid_walk_is_retried_and_the_pool_goes_on(
    program_dump, tmp_path
):
    pool = WalkPool(processes=1, memory=2 * 1024**3, timeout=60)

    async def kill_the_walker(key):
        for child in multiprocessing.active_children():
            if child.name == "symbolon-walk":
                os.kill(child.pid, signal.SIGKILL)  # as the kernel's OOM killer would
        await asyncio.sleep(0)
        return None

    async def no_symbols(key):
        return None

    try:
        # Killed from outside, not by the dump: no failure to record, the task is tried again.
        with pytest.raises(WalkUnavailable) as failure:
            await pool.walk(program_dump, kill_the_walker)
        assert str(failure.value) == "the walking process was killed by SIGKILL"
        walked = await pool.walk(program_dump, no_symbols)
        assert walked.result["crash_info"]["crashing_thread"] == 0
        assert len(walked.cfi_requests) >= 2  # the program and libmid, at least
    finally:
        pool.close()
    assert await wait_until(
        lambda: not [c for c in multiprocessing.active_children() if c.name == "symbolon-walk"],
        WITHIN,
    )


@pytest.mark.gen_test(timeout=2 * WITHIN)
async def test_switched_off_the_processor_leaves_the_queue_to_another(
    program_dump, live_settings, cache_dir
):
    settings = processing_settings(live_settings, cache_dir, enable_crash_processor=False)
    server = served(settings)
    with running_worker(settings) as worker:
        async with server as (http_client, base_url):
            crash_id = await submit(http_client, base_url, program_dump)
            assert actors.process_crash is None
            assert settings.crashpublish_queue_name not in worker.broker.get_declared_queues()
            # The worker runs (it answers a ping), and the crash waits for another processor.
            token = uuid.uuid4().hex
            await asyncio.to_thread(actors.ping.send, token)
            client = redis.Redis.from_url(settings.redis_url)
            try:
                assert await wait_until(
                    lambda: client.get(f"symbolon:ping:{token}") == b"pong", WITHIN
                )
            finally:
                client.close()
            # Still in the queue, under the actor name a processor of the site's declares.
            assert published(settings) == [crash_id]
            assert (
                await server.runtime.db.fetchrow(
                    "SELECT * FROM crashes WHERE crash_id = $1", crash_id
                )
                is None
            )


@pytest.mark.gen_test(timeout=4 * WITHIN)
async def test_no_walking_process_leaves_the_crash_pending_and_minidump_answers_503(
    program_dump, live_settings, cache_dir, monkeypatch
):
    settings = processing_settings(live_settings, cache_dir)
    # A walking process that never says it is ready: as when none can be started.
    monkeypatch.setattr(sandbox, "START_SECONDS", 0.0)
    server = served(settings)
    async with server as (http_client, base_url):
        runtime = server.runtime
        crash_id = await submit(http_client, base_url, program_dump)
        with pytest.raises(WalkUnavailable, match="no walking process started"):
            await runtime.processor.process(crash_id)
        row = await runtime.db.fetchrow("SELECT * FROM crashes WHERE crash_id = $1", crash_id)
        assert (row["state"], row["reason"]) == ("pending", None)

        caller = Caller.with_token(await token_of(runtime, await make_user(runtime), ()))
        body, content_type = multipart({"upload_file_minidump": program_dump})
        response = await http_client.fetch(
            f"{base_url}/minidump",
            method="POST",
            body=body,
            headers={**caller.headers, "Content-Type": content_type},
            raise_error=False,
        )
        assert response.code == 503, response.body
        assert response.headers["Retry-After"]
        assert b"no walking process" not in response.body

        # Once processes start again, the retried task processes it.
        monkeypatch.setattr(sandbox, "START_SECONDS", 60.0)
        assert await runtime.processor.process(crash_id) is not None
        row = await runtime.db.fetchrow("SELECT * FROM crashes WHERE crash_id = $1", crash_id)
        assert row["state"] == "processed"


@pytest.mark.gen_test(timeout=2 * WITHIN)
async def test_a_crash_store_error_is_logged_and_answered_without_its_details(
    live_settings, cache_dir, caplog
):
    from symbolon.crashes.store import StorageError

    settings = processing_settings(live_settings, cache_dir)
    server = served(settings)
    async with server as (http_client, base_url):
        runtime = server.runtime
        storage = runtime.processor.storage

        async def broken(crash_id: str) -> bytes | None:
            raise StorageError("cannot read /srv/secret/crashes/bucket-name: Permission denied")

        storage.load_raw_crash = broken  # type: ignore[method-assign]
        storage.load_processed = broken  # type: ignore[method-assign]
        viewer = await make_user(runtime, superuser=True)
        for permissions in ((), ("crashes.view_crashes",)):
            caller = Caller.with_token(await token_of(runtime, viewer, permissions))
            crash_id = str(uuid.uuid4())
            status, body = await call(http_client, base_url, caller, f"/api/crashes/{crash_id}")
            assert status == 503
            assert body == {"error": "The crash store cannot be read; try again later"}
        assert "/srv/secret/crashes" in caplog.text
