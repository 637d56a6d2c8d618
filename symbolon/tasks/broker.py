"""dramatiq on the Redis broker (the general Redis, ``REDIS_URL``).

dramatiq binds actors to the global broker when their module is imported, so the broker must be
set up first: ``setup_broker`` sets it and only then imports the actor modules.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import sys
import threading
import time
from concurrent.futures import Future
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware.asyncio import AsyncIO

from symbolon.conf import Settings
from symbolon.queues import NAMESPACE

logger = logging.getLogger(__name__)
ACTOR_MODULES = ("symbolon.tasks.actors",)


def setup_broker(settings: Settings) -> RedisBroker:
    assert settings.redis_url, "the broker needs REDIS_URL (or the embedded Redis)"
    from symbolon.tasks import worker_runtime

    broker = RedisBroker(url=settings.redis_url, namespace=NAMESPACE)
    # Lets actors be coroutines, run on an event loop of the worker's own.
    broker.add_middleware(AsyncIO())
    broker.add_middleware(worker_runtime.CloseRuntimes())
    worker_runtime.configure(settings)
    dramatiq.set_broker(broker)
    for module in ACTOR_MODULES:
        if module in sys.modules:  # declared on an earlier broker: declare again on this one
            importlib.reload(sys.modules[module])
        else:
            importlib.import_module(module)
    return broker


def start_worker(broker: dramatiq.Broker, threads: int) -> dramatiq.Worker:
    import symbolon.tasks.actors as actors

    actors.limit_fetches(threads)
    worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=250)
    worker.start()
    logger.info("task worker started with %d thread(s)", threads)
    return worker


class Scheduler(threading.Thread):
    """Sends periodic tasks. Every worker process runs one; a Redis key lets one send per period."""

    def __init__(self, broker: RedisBroker, period: float = 3600.0):
        super().__init__(name="symbolon-scheduler", daemon=True)
        self.broker = broker
        self.period = period
        self.stopping = threading.Event()

    def tick(self) -> bool:
        """Send the periodic tasks if no process did this period; True if this one did."""
        import symbolon.tasks.actors as actors

        try:
            claimed = self.broker.client.set(
                "symbolon:schedule:expire_try_symbols", "1", nx=True, ex=int(self.period)
            )
            if claimed:
                actors.expire_try_symbols.send()
                actors.sweep_staging.send()
                actors.expire_pending_uploads.send()
                actors.requeue_pending_crashes.send()
            return bool(claimed)
        except Exception:  # Redis away: try again next time
            logger.exception("scheduler could not send periodic tasks")
            return False

    def run(self) -> None:
        while not self.stopping.wait(min(60.0, self.period)):
            self.tick()

    def stop(self) -> None:
        self.stopping.set()


async def enqueue(actor: dramatiq.Actor, *args: Any, **kwargs: Any) -> dramatiq.Message:
    """Send from async code without blocking the event loop on the broker's socket."""
    return await asyncio.to_thread(actor.send, *args, **kwargs)


class QueueUnavailable(Exception):
    """The broker did not take the message in time; it may still arrive later."""


async def send_within(
    actor: dramatiq.Actor, *args: Any, seconds: float, pause: float = 0.5
) -> dramatiq.Message:
    """``enqueue``, retried while the broker refuses, for at most ``seconds``. At most one send
    is in flight: one held by a stalled broker is not repeated (it may still be delivered, so
    the actor must make a late message harmless). QueueUnavailable when time runs out."""
    deadline = time.monotonic() + seconds
    while True:
        sending: Future[dramatiq.Message] = Future()

        def send(sending: Future[dramatiq.Message] = sending) -> None:
            try:
                sending.set_result(actor.send(*args))
            except BaseException as exc:
                sending.set_exception(exc)

        threading.Thread(target=send, name="symbolon-enqueue", daemon=True).start()
        waiting = asyncio.wrap_future(sending)
        # Not wait_for: cancelling would not stop the thread, only hide what it does.
        await asyncio.wait({waiting}, timeout=max(0.0, deadline - time.monotonic()))
        if not waiting.done():
            # What the stalled send ends with is of no interest now; the actor copes with both.
            waiting.add_done_callback(lambda late: late.cancelled() or late.exception())
            raise QueueUnavailable()
        try:
            return waiting.result()
        except Exception as exc:
            if time.monotonic() + pause >= deadline:
                raise QueueUnavailable() from exc
            logger.warning("enqueueing %s failed, trying again: %s", actor.actor_name, exc)
            await asyncio.sleep(pause)
