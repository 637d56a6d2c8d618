"""The cache makes things faster and must never make them fail: tested with a real paused Redis."""

import asyncio
import time

import pytest
import redis.exceptions

from symbolon.handlers.base import BaseHandler
from symbolon.redis_cache import Cache, redis_client
from tests.conftest import served
from tests.redis_pause import pause


@pytest.mark.gen_test(timeout=30)
async def test_cache_works_normally(own_redis, settings):
    cache = Cache(redis_client(own_redis, settings), "cache")
    assert await cache.set("k", b"v", ttl=60) is True
    assert await cache.get("k") == b"v"
    assert await cache.get_many(["k", "missing"]) == [b"v", None]
    assert await cache.incr("n", ttl=60) == 1
    assert await cache.delete("k") == 1
    await cache.close()


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize("connected_before_pause", [True, False])
async def test_paused_redis_errors_are_swallowed_after_one_timeout(
    own_redis, settings, connected_before_pause
):
    cache = Cache(redis_client(own_redis, settings), "cache")
    if connected_before_pause:
        await cache.set("k", b"v")
    await pause(own_redis, settings)
    started = time.monotonic()
    assert await cache.get("k") is None
    elapsed = time.monotonic() - started
    # One read timeout (2 s), not one per retry.
    assert elapsed < settings.redis_socket_timeout * 1.9
    # After a failure the cache steps aside for a while: no second timeout.
    started = time.monotonic()
    assert await cache.set("k", b"w") is False
    assert time.monotonic() - started < 0.2
    await cache.close()


@pytest.mark.gen_test(timeout=30)
async def test_errors_surface_when_not_ignored(own_redis, settings):
    cache = Cache(redis_client(own_redis, settings), "cache", ignore_exceptions=False)
    await pause(own_redis, settings)
    with pytest.raises(redis.exceptions.RedisError):
        await cache.get("k")
    with pytest.raises(redis.exceptions.RedisError):  # and every time, no stepping aside
        await cache.get("k")
    await cache.close()


@pytest.mark.gen_test(timeout=30)
async def test_cache_comes_back_after_its_backoff(tmp_path, settings, own_redis):
    cache = Cache(redis_client(f"unix://{tmp_path}/gone.sock", settings), "cache", backoff=0.2)
    assert await cache.set("k", b"v") is False
    assert not cache.available
    cache.client = redis_client(own_redis, settings)  # the server is back
    await asyncio.sleep(0.25)
    assert cache.available
    assert await cache.set("k", b"v") is True
    await cache.close()


@pytest.mark.gen_test(timeout=30)
async def test_redis_that_is_gone_is_swallowed(tmp_path, settings):
    cache = Cache(redis_client(f"unix://{tmp_path}/gone.sock", settings), "cache")
    assert await cache.get("k") is None
    assert await cache.set("k", b"v") is False
    assert await cache.delete("k") == 0
    await cache.close()


class CachedCounter(BaseHandler):
    """A handler that leans on the cache, as download and session handlers will."""

    async def get(self) -> None:
        hits = await self.runtime.cache.incr("counter", ttl=60)
        self.write_json({"hits": hits})


@pytest.mark.gen_test(timeout=30)
async def test_requests_succeed_while_redis_is_paused(own_redis, settings):
    async with served(settings.replace(redis_url=own_redis), [(r"/counter", CachedCounter)]) as (
        client,
        base,
    ):
        first = await client.fetch(f"{base}/counter")
        assert first.body == b'{"hits": 1}'
        await pause(own_redis, settings)
        paused = await client.fetch(f"{base}/counter", raise_error=False, request_timeout=20)
        assert paused.code == 200
        assert paused.body == b'{"hits": null}'
