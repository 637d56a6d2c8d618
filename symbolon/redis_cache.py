"""The Redis caches: the general cache (``REDIS_URL``) and the LRU store (``REDIS_STORE_URL``).

Both exist only to make things faster, so by default every error is logged and swallowed: a Redis
that is down, or paused with ``CLIENT PAUSE``, makes requests slower, never failed
(docs/decisions.md). ``REDIS_IGNORE_EXCEPTIONS=false`` lets the errors through.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from symbolon.conf import Settings
from symbolon.metrics import metrics

logger = logging.getLogger(__name__)
T = TypeVar("T")
CACHE_ERRORS = (RedisError, OSError, asyncio.TimeoutError)


def redis_client(url: str, settings: Settings) -> aioredis.Redis:
    """A client with short socket timeouts (1 s connect, 2 s read by default)."""
    return aioredis.Redis.from_url(
        url,
        socket_connect_timeout=settings.redis_socket_connect_timeout,
        socket_timeout=settings.redis_socket_timeout,
        # No retries: a paused Redis would otherwise hold a request for several timeouts
        # instead of one. Idle connections are pinged before reuse, so a connection the server
        # dropped is noticed without a failed command.
        retry=Retry(NoBackoff(), 0),
        health_check_interval=30,
    )


class Cache:
    """A thin, error-swallowing layer over one Redis client.

    After an error the cache is skipped for ``backoff`` seconds: a paused Redis then costs one
    request one timeout, instead of costing every request a timeout.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        name: str,
        ignore_exceptions: bool = True,
        backoff: float = 5.0,
    ):
        self.client = client
        self.name = name
        self.ignore_exceptions = ignore_exceptions
        self.backoff = backoff
        self._skip_until = 0.0

    @property
    def available(self) -> bool:
        return not self.ignore_exceptions or time.monotonic() >= self._skip_until

    async def _guard(self, op: str, default: T, call: Callable[[], Awaitable[T]]) -> T:
        if not self.available:
            return default
        try:
            return await call()
        except CACHE_ERRORS as exc:
            if not self.ignore_exceptions:
                raise
            self._skip_until = time.monotonic() + self.backoff
            logger.warning(
                "redis %s: %s failed, carrying on without it for %.0fs: %r",
                self.name,
                op,
                self.backoff,
                exc,
            )
            metrics.incr("redis.error", tags=[f"cache:{self.name}", f"op:{op}"])
            return default

    # redis-py types replies as bytes | str; these clients do not decode them, so they are bytes.
    async def get(self, key: str) -> bytes | None:
        def call() -> Awaitable[bytes | None]:
            return cast("Awaitable[bytes | None]", self.client.get(key))

        return await self._guard("get", None, call)

    async def get_many(self, keys: list[str]) -> list[bytes | None]:
        if not keys:
            return []

        def call() -> Awaitable[list[bytes | None]]:
            return cast("Awaitable[list[bytes | None]]", self.client.mget(keys))

        return await self._guard("mget", [None] * len(keys), call)

    async def set(self, key: str, value: Any, ttl: float | None = None) -> bool:
        px = int(ttl * 1000) if ttl else None

        async def call() -> bool:
            return bool(await self.client.set(key, value, px=px))

        return await self._guard("set", False, call)

    async def set_many(self, mapping: dict[str, Any], ttl: float | None = None) -> bool:
        if not mapping:
            return True
        px = int(ttl * 1000) if ttl else None

        async def call() -> bool:
            async with self.client.pipeline(transaction=False) as pipe:
                for key, value in mapping.items():
                    pipe.set(key, value, px=px)
                await pipe.execute()
            return True

        return await self._guard("set_many", False, call)

    async def add(self, key: str, value: Any, ttl: float) -> bool | None:
        """Set only if absent: True if set, False if present, None if Redis did not answer."""

        async def call() -> bool:
            return bool(await self.client.set(key, value, px=int(ttl * 1000), nx=True))

        return await self._guard("add", None, call)

    async def publish(self, channel: str, message: str) -> int:
        return await self._guard("publish", 0, lambda: self.client.publish(channel, message))

    async def delete(self, *keys: str) -> int:
        if not keys:
            return 0
        return await self._guard("delete", 0, lambda: self.client.delete(*keys))

    async def incr(self, key: str, ttl: float | None = None) -> int | None:
        async def call() -> int:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.incr(key)
                if ttl:
                    pipe.pexpire(key, int(ttl * 1000))
                result = await pipe.execute()
            return int(result[0])

        return await self._guard("incr", None, call)

    async def ping(self) -> None:
        """For health checks: raises instead of swallowing."""
        await self.client.ping()

    async def close(self) -> None:
        await self.client.aclose()
