"""dramatiq on the Redis broker (the general Redis, ``REDIS_URL``).

dramatiq binds actors to the global broker when their module is imported, so the broker must be
set up first: ``setup_broker`` sets it and only then imports the actor modules.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import sys
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware.asyncio import AsyncIO

from symbolon.conf import Settings

logger = logging.getLogger(__name__)
ACTOR_MODULES = ("symbolon.tasks.actors",)
NAMESPACE = "symbolon-tasks"


def setup_broker(settings: Settings) -> RedisBroker:
    assert settings.redis_url, "the broker needs REDIS_URL (or the embedded Redis)"
    from symbolon.tasks import runtime

    broker = RedisBroker(url=settings.redis_url, namespace=NAMESPACE)
    # Lets actors be coroutines, run on an event loop of the worker's own.
    broker.add_middleware(AsyncIO())
    broker.add_middleware(runtime.CloseRuntimes())
    runtime.configure(settings)
    dramatiq.set_broker(broker)
    for module in ACTOR_MODULES:
        if module in sys.modules:  # declared on an earlier broker: declare again on this one
            importlib.reload(sys.modules[module])
        else:
            importlib.import_module(module)
    return broker


def start_worker(broker: dramatiq.Broker, threads: int) -> dramatiq.Worker:
    worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=250)
    worker.start()
    logger.info("task worker started with %d thread(s)", threads)
    return worker


async def enqueue(actor: dramatiq.Actor, *args: Any, **kwargs: Any) -> dramatiq.Message:
    """Send from async code without blocking the event loop on the broker's socket."""
    return await asyncio.to_thread(actor.send, *args, **kwargs)
