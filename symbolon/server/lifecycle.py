"""Start-up and shut-down: embedded services, checks, the web server and the embedded worker."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import tornado.netutil

from symbolon.conf import Settings
from symbolon.crashes.collector import Collector
from symbolon.crashes.publish import TEST_MESSAGE
from symbolon.crashes.store import StorageError
from symbolon.logs import configure_logging
from symbolon.metrics import configure_metrics, flush_metrics
from symbolon.runtime import Runtime
from symbolon.sentry import configure_sentry
from symbolon.server.app import make_app, make_server
from symbolon.server.balance import ConnectionShares
from symbolon.server.embedded import EmbeddedStack

logger = logging.getLogger(__name__)
SHUTDOWN_GRACE_SECONDS = 10
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


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
        settings.embedded_postgres or settings.redis_url is None or settings.embedded_storage
    ) or settings.secret_key is None
    if not needs_embedded:
        yield settings
        return
    stack = EmbeddedStack(settings.data_dir)
    try:
        yield stack.start(settings)
    finally:
        stack.stop()


async def connect(settings: Settings, checks: bool = True) -> Runtime:
    """Connect, migrate and check storage, or raise StartupError naming what is wrong.
    Without ``checks`` (processes forked after they ran) it only connects."""
    try:
        runtime = await Runtime.create(settings, apply_migrations=checks)
    except (TimeoutError, OSError) as exc:
        raise StartupError(f"cannot connect to the database (DATABASE_URL): {exc}") from exc
    if not checks:
        return runtime
    try:
        if settings.storage_is_embedded:
            # Only the embedded development server gets buckets made for it.
            await runtime.stores.ensure(runtime.storage)
        await runtime.stores.prepare_directories(runtime.storage)
        problems = await runtime.stores.problems(runtime.storage)
        if problems:
            raise StartupError("storage not reachable:\n" + "\n".join(problems.values()))
        try:
            await runtime.cache.ping()
            await runtime.store.ping()
        except Exception as exc:
            raise StartupError(f"Redis (REDIS_URL / REDIS_STORE_URL) not reachable: {exc}") from exc
        if runtime.collector is not None:
            await check_crash_collector(runtime.collector)
    except BaseException:
        await runtime.close()
        raise
    return runtime


async def check_crash_collector(collector: Collector) -> None:
    """Start-up checks (docs/crashes.md): the crash store answers and takes writes, the broker takes
    messages (the ``test`` publish). Any failure names what to fix."""
    settings, storage = collector.settings, collector.storage
    logger.info("crash storage: %s", storage.description)
    variable = (
        "CRASHMOVER_CRASHSTORAGE_FS_ROOT"
        if settings.crash_storage == "fs"
        else "CRASHMOVER_CRASHSTORAGE_BUCKET_NAME / _REGION / _ENDPOINT_URL"
    )
    try:
        await storage.start_up_check(create=settings.crash_storage_is_embedded)
    except StorageError as exc:
        raise StartupError(f"crash storage ({variable}): {exc}") from exc
    try:
        await collector.publisher.publish(TEST_MESSAGE)
    except Exception as exc:
        raise StartupError(
            f"crash queue (REDIS_URL, queue {collector.publisher.queue_name!r}): "
            f"cannot publish: {exc}"
        ) from exc


async def republish_forever(runtime: Runtime) -> None:
    """Publish the ids a broker outage left unpublished, every so often. Every process runs
    this; a Redis key lets one of them do it per period (and all of them when Redis cannot
    say: publishing an id twice is allowed, never publishing it is not)."""
    collector = runtime.collector
    assert collector is not None
    period = collector.settings.crashpublish_retry_seconds
    while True:
        await asyncio.sleep(period)
        if await runtime.cache.add("symbolon:crashes:republish", "1", ttl=period) is False:
            continue
        try:
            await collector.republish_pending()
        except Exception:
            logger.exception("re-publishing unpublished crash ids failed; will try again")


def loop_factory(settings: Settings) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop ``EVENT_LOOP`` names; None is the standard library's, as ``asyncio.run``."""
    if settings.event_loop == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        raise StartupError(
            "EVENT_LOOP=uvloop, but uvloop is not installed (it is not made for Windows): "
            "install it, or set EVENT_LOOP=asyncio"
        ) from None
    return uvloop.new_event_loop


def run_loop(settings: Settings, main: Coroutine[Any, Any, Any]) -> Any:
    """Run ``main`` to its end on the event loop ``EVENT_LOOP`` names."""
    try:
        factory = loop_factory(settings)
    except StartupError:
        main.close()
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


async def sweep_staging(runtime: Runtime) -> None:
    """Remove what a killed process left staged (the scheduler repeats this hourly)."""
    from symbolon.uploads.staging import sweep

    try:
        await sweep(runtime, runtime.settings.upload_staging_sweep_seconds)
    except Exception:  # the next sweep tries again
        logger.exception("could not sweep the upload staging area")


async def serve_forever(
    settings: Settings,
    stop: asyncio.Event | None = None,
    sockets: list[socket.socket] | None = None,
    worker_threads: int | None = None,
    shares: ConnectionShares | None = None,
    slot: int = 0,
) -> None:
    """Serve until ``stop`` is set or SIGINT/SIGTERM: on ``sockets`` if given (a child of
    ``serve_processes``, which ran the start-up checks), else on HOST:PORT. With ``shares``,
    as the web process of ``slot``, which gives up connections beyond its share."""
    from symbolon.tasks.broker import Scheduler, setup_broker, start_worker

    threads = settings.worker_threads if worker_threads is None else worker_threads
    runtime = await connect(settings, checks=sockets is None)
    broker = worker = server = scheduler = republisher = None
    try:
        await runtime.symbolication.start()
        await sweep_staging(runtime)
        broker = setup_broker(settings)
        if threads:
            worker = start_worker(broker, threads)
            scheduler = Scheduler(broker)
            scheduler.start()
        if runtime.collector is not None:
            republisher = asyncio.create_task(republish_forever(runtime))
        server = make_server(make_app(runtime), shares)
        if sockets is None:
            server.listen(settings.port, settings.host)
        else:
            server.add_sockets(sockets)
        if shares is not None:
            shares.serve_as(slot)
        # What start-up made lives as long as the process: out of the collector's full passes,
        # which otherwise walk it again and again under load.
        gc.freeze()
        loop = asyncio.get_running_loop()
        logger.info(
            "Symbolon serving on http://%s:%d (pid %d, event loop %s)",
            settings.host,
            settings.port,
            os.getpid(),
            type(loop).__module__.partition(".")[0],  # uvloop, or asyncio
        )
        stop = stop or asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        logger.info("stopping")
    finally:
        if server is not None:
            server.stop()
            if shares is not None:
                shares.stopped(slot)
            if runtime.collector is not None:
                # Reports being saved get their answer before their connections are closed.
                with suppress(TimeoutError):
                    await asyncio.wait_for(runtime.collector.idle(), SHUTDOWN_GRACE_SECONDS)
            with suppress(TimeoutError):
                await asyncio.wait_for(server.close_all_connections(), SHUTDOWN_GRACE_SECONDS)
        if republisher is not None:
            republisher.cancel()
            with suppress(asyncio.CancelledError):
                await republisher
        if scheduler is not None:
            scheduler.stop()
        if worker is not None:
            await asyncio.to_thread(worker.stop)
        if broker is not None:
            broker.close()
        await runtime.close()


def bind_slots(settings: Settings, count: int) -> list[list[socket.socket]]:
    """``count`` SO_REUSEPORT listening sockets (each a list: one per address family) on one
    port: PORT, or the one the kernel chose for the first when PORT is 0."""
    first = tornado.netutil.bind_sockets(settings.port, settings.host, reuse_port=True)
    port = first[0].getsockname()[1]
    slots = [first]
    try:
        for _ in range(count - 1):
            slots.append(tornado.netutil.bind_sockets(port, settings.host, reuse_port=True))
    except BaseException:
        for sock in (s for slot in slots for s in slot):
            sock.close()
        raise
    return slots


def serve_processes(settings: Settings) -> None:
    """``WEB_PROCESSES`` web processes, each accepting from a SO_REUSEPORT socket of its own;
    all are bound here, then the processes forked (docs/operations.md).

    The checks (and migrations) run once before forking, so a misconfiguration stops start-up
    here. Only the first process embeds the task worker. A process that dies is replaced, on
    its slot's socket: this process keeps every slot's socket open, so connections queued on a
    dead process's socket wait for its replacement. On SIGINT or SIGTERM every process is told
    to stop and waited for, so that the embedded services (this process's) outlive them.
    """
    loop_factory(settings)  # a missing event loop stops start-up here, not in every child
    slots = bind_slots(settings, settings.web_processes)
    shares = ConnectionShares(settings.web_processes)

    async def check() -> None:
        await (await connect(settings)).close()

    asyncio.run(check())
    children: dict[int, int] = {}
    stopping = False

    def spawn(index: int) -> None:
        # A stop signal is held back until the new process is recorded here (so that it is told
        # to stop too), and in the new process until it has dropped this one's handler.
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            if stopping:  # the sockets are closed
                return
            pid = os.fork()
            if pid == 0:
                run_child(index)
            children[pid] = index
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)

    def run_child(index: int) -> None:
        code = 0
        try:
            for sig in STOP_SIGNALS:
                signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
            for other, sockets in enumerate(slots):
                # Held only here and by their own process: they close when those do.
                if other != index:
                    for sock in sockets:
                        sock.close()
            threads = settings.worker_threads if index == 0 else 0
            main = serve_forever(
                settings,
                sockets=slots[index],
                worker_threads=threads,
                shares=shares,
                slot=index,
            )
            run_loop(settings, main)
        except BaseException:
            logger.exception("web process %d failed", os.getpid())
            code = 1
        finally:
            flush_metrics()  # os._exit skips atexit
            os._exit(code)

    def forward(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        # No process will accept from them again: once the web processes close theirs too,
        # connections still queued are reset at once rather than left waiting for our exit.
        close_all()

    def close_all() -> None:
        for sock in (s for slot in slots for s in slot):
            sock.close()

    # Before the first process exists, so that a stop during start-up reaches every one.
    for sig in STOP_SIGNALS:
        signal.signal(sig, forward)
    for index in range(settings.web_processes):
        spawn(index)
    while children:
        try:
            pid, status = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        slot = children.pop(pid, None)
        if slot is None or stopping:
            continue  # an embedded server's exit, or a process we told to stop
        shares.stopped(slot)
        logger.error("web process %d exited (status %d); starting another", pid, status)
        time.sleep(1)
        spawn(slot)  # unless a stop during the pause has closed the sockets
    close_all()
