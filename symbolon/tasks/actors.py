"""Task actors. Import only through ``setup_broker`` (see broker.py)."""

from __future__ import annotations

import dramatiq

PING_TTL_SECONDS = 300


@dramatiq.actor(max_retries=0)
def ping(token: str) -> None:
    """Leaves a mark in the broker's Redis: proof that some worker consumes the queue."""
    broker = dramatiq.get_broker()
    broker.client.set(f"symbolon:ping:{token}", "pong", ex=PING_TTL_SECONDS)  # type: ignore[attr-defined]


# process_upload gives up by itself after MAX_ATTEMPTS (recording why); retries beyond are no-ops.
@dramatiq.actor(max_retries=6, min_backoff=1_000, max_backoff=60_000, time_limit=6 * 3_600_000)
async def process_upload(upload_id: int) -> None:
    """Store the members of a received archive; safe to run again after a crash."""
    from symbolon.tasks.worker_runtime import worker_runtime
    from symbolon.uploads.process import process_upload as run

    await run(await worker_runtime(), upload_id)


@dramatiq.actor(max_retries=3, time_limit=3_600_000)
async def expire_try_symbols() -> None:
    """Delete try symbols older than TRY_SYMBOLS_EXPIRY_DAYS; the scheduler sends it hourly."""
    from symbolon.symbols.expiry import expire_try_symbols as run
    from symbolon.tasks.worker_runtime import worker_runtime

    rt = await worker_runtime()
    await run(rt, rt.settings.try_symbols_expiry_days)


@dramatiq.actor(max_retries=5, min_backoff=1_000, time_limit=6 * 3_600_000)
async def complete_upload_v2(upload_id: int) -> None:
    """Verify and record the files a v2 client PUT to storage."""
    from symbolon.tasks.worker_runtime import worker_runtime
    from symbolon.uploads.v2 import complete

    await complete(await worker_runtime(), upload_id)
