"""``symbolon crashes reprocess``: crashes queued for processing again, by id or every crash stored
since a day; the processor takes them from the queue as it takes new ones."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from tests.cli import env_for, invoke
from tests.conftest import running_worker, served
from tests.crashpad_support import WITHIN, crashpad_handler  # noqa: F401 (a fixture)
from tests.processing_support import (
    CRASHING_FUNCTION,
    processing_settings,
    program,  # noqa: F401 (a fixture)
    program_dump,  # noqa: F401 (a fixture)
    submit,
    wait_for_state,
)
from tests.symbolication_support import put_own


@pytest.mark.gen_test(timeout=4 * WITHIN)
async def test_reprocess_queues_crashes_by_id_or_since_a_day(
    program, program_dump, live_settings, cache_dir, tmp_path
):
    # A crash store of this test's own, so that --since finds only its crashes.
    crashes = tmp_path / "crashes"
    settings = processing_settings(
        live_settings, cache_dir, crash_storage="fs", crash_fs_root=crashes
    )
    put_own(settings, program.app.key, program.app.data)
    env = env_for(
        settings,
        CRASHMOVER_CRASHPUBLISH_QUEUE_NAME=settings.crashpublish_queue_name,
        CRASHMOVER_CRASHSTORAGE_CLASS="fs",
        CRASHMOVER_CRASHSTORAGE_FS_ROOT=str(crashes),
    )
    server = served(settings)
    with running_worker(settings):
        async with server as (http_client, base_url):
            runtime = server.runtime
            first_id = await submit(http_client, base_url, program_dump)
            second_id = await submit(http_client, base_url, program_dump)
            first = await wait_for_state(runtime, first_id)
            second = await wait_for_state(runtime, second_id)
            assert first["signature"] == second["signature"] == CRASHING_FUNCTION

            # One crash, named as the collector answered it.
            done = await asyncio.to_thread(
                invoke, "crashes", "reprocess", f"bp-{first_id}", env=env
            )
            assert done.returncode == 0, done.stderr
            assert done.stdout == "queued 1 crash(es) for processing\n"
            first = await wait_for_state(runtime, first_id, after=first["processed_at"])
            assert first["state"] == "processed"
            assert (await wait_for_state(runtime, second_id))["processed_at"] == second[
                "processed_at"
            ]

            # Every crash stored since a day.
            yesterday = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%d")
            done = await asyncio.to_thread(
                invoke, "crashes", "reprocess", "--since", yesterday, env=env
            )
            assert done.returncode == 0, done.stderr
            assert done.stdout == "queued 2 crash(es) for processing\n"
            await wait_for_state(runtime, first_id, after=first["processed_at"])
            await wait_for_state(runtime, second_id, after=second["processed_at"])

    # What it refuses.
    unknown = first_id[:24] + "ffffff" + first_id[30:]
    done = invoke("crashes", "reprocess", unknown, env=env)
    assert (done.returncode, done.stderr) == (1, f"Error: no crash {unknown} is stored\n")
    done = invoke("crashes", "reprocess", env=env)
    assert done.returncode == 2 and "give crash ids or --since DATE" in done.stderr
    done = invoke("crashes", "reprocess", first_id, "--since", yesterday, env=env)
    assert done.returncode == 2
    done = invoke("crashes", "reprocess", "--since", "not a day", env=env)
    assert done.returncode == 2 and "is not a date like 2026-11-22" in done.stderr
    done = invoke("crashes", "reprocess", "--since", "1999-01-01", env=env)
    assert done.returncode == 2 and "more than 366 days ago" in done.stderr
