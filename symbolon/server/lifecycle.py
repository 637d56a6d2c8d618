"""Start-up and shut-down: embedded services, checks, the web server and the embedded worker."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Iterator
from contextlib import contextmanager, suppress

from symbolon.conf import Settings
from symbolon.logs import configure_logging
from symbolon.metrics import configure_metrics
from symbolon.sentry import configure_sentry
from symbolon.server.app import make_app
from symbolon.server.embedded import EmbeddedStack
from symbolon.server.runtime import Runtime

logger = logging.getLogger(__name__)
SHUTDOWN_GRACE_SECONDS = 10


class StartupError(RuntimeError):
    """The service must not start; the message says what to fix."""


def configure_process(settings: Settings) -> None:
    configure_logging(settings)
    configure_metrics(settings)
    configure_sentry(settings)


@contextmanager
def services(settings: Settings) -> Iterator[Settings]:
    """Settings pointing at real services: the configured ones, or embedded ones started now."""
    needs_embedded = (
        settings.embedded_postgres or settings.redis_url is None or settings.embedded_s3
    ) or settings.secret_key is None
    if not needs_embedded:
        yield settings
        return
    stack = EmbeddedStack(settings.data_dir)
    try:
        yield stack.start(settings)
    finally:
        stack.stop()


async def connect(settings: Settings) -> Runtime:
    """Connect, migrate and check storage, or raise StartupError naming what is wrong."""
    try:
        runtime = await Runtime.create(settings)
    except (TimeoutError, OSError) as exc:
        raise StartupError(f"cannot connect to the database (DATABASE_URL): {exc}") from exc
    try:
        if settings.storage_is_embedded:
            # Only the embedded development server gets buckets made for it.
            await runtime.s3.ensure_buckets(runtime.storage)
        problems = await runtime.s3.check_buckets(runtime.storage)
        if problems:
            raise StartupError("storage not reachable:\n" + "\n".join(problems.values()))
        try:
            await runtime.cache.ping()
            await runtime.store.ping()
        except Exception as exc:
            raise StartupError(f"Redis (REDIS_URL / REDIS_STORE_URL) not reachable: {exc}") from exc
    except BaseException:
        await runtime.close()
        raise
    return runtime


async def serve_forever(settings: Settings, stop: asyncio.Event | None = None) -> None:
    from symbolon.tasks.broker import Scheduler, setup_broker, start_worker

    runtime = await connect(settings)
    broker = worker = server = scheduler = None
    try:
        await runtime.symbolication.start()
        broker = setup_broker(settings)
        if settings.worker_threads:
            worker = start_worker(broker, settings.worker_threads)
            scheduler = Scheduler(broker)
            scheduler.start()
        app = make_app(runtime)
        server = app.listen(settings.port, settings.host, xheaders=True)
        logger.info("Symbolon serving on http://%s:%d", settings.host, settings.port)
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        logger.info("stopping")
    finally:
        if server is not None:
            server.stop()
            with suppress(asyncio.TimeoutError):
                await asyncio.wait_for(server.close_all_connections(), SHUTDOWN_GRACE_SECONDS)
        if scheduler is not None:
            scheduler.stop()
        if worker is not None:
            await asyncio.to_thread(worker.stop)
        if broker is not None:
            broker.close()
        await runtime.close()
