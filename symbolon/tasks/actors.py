"""Task actors. Import only through ``setup_broker`` (see broker.py)."""

from __future__ import annotations

import asyncio
import logging
import threading

import dramatiq

PING_TTL_SECONDS = 300
# Uploads by URL wait on other servers: they have a queue of their own, and at most
# ``fetch_slots`` of a process's worker threads run them, so archives keep being processed.
FETCH_QUEUE = "upload-fetch"
FETCH_BUSY_DELAY_MS = 2_000
fetch_slots = threading.BoundedSemaphore(1)


def limit_fetches(worker_threads: int) -> None:
    """Let all but one of ``worker_threads`` fetch at once (one thread: that one)."""
    global fetch_slots
    fetch_slots = threading.BoundedSemaphore(max(1, worker_threads - 1))


@dramatiq.actor(max_retries=0)
def ping(token: str) -> None:
    """Leaves a mark in the broker's Redis: proof that some worker consumes the queue."""
    broker = dramatiq.get_broker()
    broker.client.set(f"symbolon:ping:{token}", "pong", ex=PING_TTL_SECONDS)  # type: ignore[attr-defined]


# process_upload gives up by itself after MAX_ATTEMPTS (recording why); retries beyond are no-ops.
@dramatiq.actor(max_retries=6, min_backoff=1_000, max_backoff=60_000, time_limit=6 * 3_600_000)
async def process_upload(upload_id: int) -> None:
    """Store the members of a received archive; safe to run again after a crash."""
    await _process_upload(upload_id)


async def _process_upload(upload_id: int) -> None:
    from symbolon.tasks.worker_runtime import worker_runtime
    from symbolon.uploads.process import process_upload as run

    await run(await worker_runtime(), upload_id)


@dramatiq.actor(
    queue_name=FETCH_QUEUE,
    max_retries=6,
    min_backoff=1_000,
    max_backoff=60_000,
    time_limit=6 * 3_600_000,
)
async def fetch_upload(upload_id: int) -> None:
    """``process_upload`` for an upload by URL, when a fetch slot is free; else again shortly."""
    slots = fetch_slots
    if not slots.acquire(blocking=False):
        # Off the event loop: other actors' coroutines share it.
        await asyncio.to_thread(
            fetch_upload.send_with_options, args=(upload_id,), delay=FETCH_BUSY_DELAY_MS
        )
        return
    try:
        await _process_upload(upload_id)
    finally:
        slots.release()


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


@dramatiq.actor(max_retries=3, time_limit=3_600_000)
async def expire_pending_uploads() -> None:
    """Fail v2 uploads never completed and delete what was PUT for them; sent hourly."""
    from symbolon.tasks.worker_runtime import worker_runtime
    from symbolon.uploads.v2 import expire_pending

    rt = await worker_runtime()
    await expire_pending(rt, rt.settings.upload_v2_pending_expiry_seconds)


@dramatiq.actor(max_retries=3, time_limit=3_600_000)
async def sweep_staging() -> None:
    """Delete staged archives older than UPLOAD_STAGING_SWEEP_AGE that no unfinished upload
    refers to (left by a crash); the scheduler sends it hourly."""
    from symbolon.tasks.worker_runtime import worker_runtime
    from symbolon.uploads.staging import sweep

    rt = await worker_runtime()
    await sweep(rt, rt.settings.upload_staging_sweep_seconds)


@dramatiq.actor(max_retries=3, time_limit=3_600_000)
async def requeue_pending_crashes() -> None:
    """Queue again crashes left ``pending`` longer than PROCESSOR_REQUEUE_PENDING_AFTER (their
    processing died, or its task gave up); the scheduler sends it hourly."""
    from symbolon.tasks.worker_runtime import worker_runtime

    rt = await worker_runtime()
    if rt.settings.enable_crash_processor:
        await rt.processor.requeue_stale()


def _declare_process_crash() -> dramatiq.Actor | None:
    """The crash processor's actor, on the queue and under the name the collector publishes to
    (docs/processing.md), unless ENABLE_CRASH_PROCESSOR is off. setup_broker configures the
    settings before importing this module."""
    from symbolon.tasks.worker_runtime import configured_settings

    settings = configured_settings()
    if settings is None or not settings.enable_crash_processor:
        return None
    # Retried while the crash store, the database or the walking processes are away; a dump
    # that cannot be walked is a recorded failure, not an exception.
    declare = dramatiq.actor(
        queue_name=settings.crashpublish_queue_name,
        actor_name=settings.crashpublish_actor_name,
        max_retries=10,
        min_backoff=5_000,
        max_backoff=600_000,
        time_limit=3_600_000,
    )
    return declare(_process_crash)


async def _process_crash(crash_id: str) -> None:
    """Process one crash id of the processing queue; the publisher's test message is dropped."""
    from symbolon.crashes.crashid import is_valid_crash_id
    from symbolon.crashes.publish import TEST_MESSAGE
    from symbolon.tasks.worker_runtime import worker_runtime

    if crash_id == TEST_MESSAGE:
        return
    if not isinstance(crash_id, str) or not is_valid_crash_id(crash_id, strict=False):
        logging.getLogger("symbolon.processing").warning("not a crash id: %r", crash_id)
        return
    rt = await worker_runtime()
    await rt.processor.process(crash_id)


process_crash = _declare_process_crash()
