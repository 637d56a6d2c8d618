"""The Runtime that actors use: one per worker event loop, closed when the worker stops.

Actors run on the event loop of dramatiq's AsyncIO middleware, not the web server's, so they
cannot share the web process's pools; they get their own, made on first use.
"""

from __future__ import annotations

import asyncio
from contextlib import suppress

import dramatiq

from symbolon.conf import Settings
from symbolon.runtime import Runtime

_settings: Settings | None = None
_runtimes: dict[asyncio.AbstractEventLoop, Runtime] = {}
_locks: dict[asyncio.AbstractEventLoop, asyncio.Lock] = {}


def configure(settings: Settings) -> None:
    global _settings
    _settings = settings


def configured_settings() -> Settings | None:
    """The settings setup_broker gave the actors (None before it ran)."""
    return _settings


async def worker_runtime() -> Runtime:
    loop = asyncio.get_running_loop()
    runtime = _runtimes.get(loop)
    if runtime is None:
        # Actors starting together on a new loop make one runtime, not one each.
        async with _locks.setdefault(loop, asyncio.Lock()):
            runtime = _runtimes.get(loop)
            if runtime is None:
                assert _settings is not None, "setup_broker() configures the actors' settings"
                runtime = await Runtime.create(_settings, apply_migrations=False)
                _runtimes[loop] = runtime
    return runtime


class CloseRuntimes(dramatiq.Middleware):
    """Closes the actors' runtimes on the loop that made them, once the actors in flight are
    done and before that loop stops (added after AsyncIO, so its "after" hook runs first)."""

    def after_worker_shutdown(self, broker: dramatiq.Broker, worker: dramatiq.Worker) -> None:
        for loop, runtime in list(_runtimes.items()):
            if loop.is_running():
                future = asyncio.run_coroutine_threadsafe(runtime.close(), loop)
                with suppress(Exception):
                    future.result(timeout=10)
            _runtimes.pop(loop, None)
            _locks.pop(loop, None)
