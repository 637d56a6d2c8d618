"""Where does a symbol file live? Existence checks across sources, with two cache layers.

Each source's answer for a key (found / not found) is kept in Redis for
``SYMBOLDOWNLOAD_EXISTS_TTL_SECONDS`` (docs/download.md), and in a per-process memo in front
of Redis. The memo is only trusted while this process is subscribed to the invalidation channel:
an upload (in any process) deletes the Redis entries of the keys it stored and publishes them, and
every subscriber drops them from its memo, so a new upload is visible at once everywhere.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections import OrderedDict
from contextlib import suppress
from dataclasses import dataclass

from symbolon.metrics import metrics
from symbolon.redis_cache import Cache
from symbolon.storage.sources import StorageConfig, SymbolSource
from symbolon.storage.stores import Stores

logger = logging.getLogger(__name__)

FOUND, MISSING = b"1", b"0"
# Download URLs kept for reuse, per process.
SIGNED_URL_MEMO_SIZE = 10_000


class Unknown(enum.Enum):
    """A memo's answer when it does not hold the source's answer."""

    UNKNOWN = enum.auto()


UNKNOWN = Unknown.UNKNOWN


class StorageUnavailable(Exception):
    """A source could not say whether it has a file, and no earlier source had it."""


@dataclass(frozen=True)
class Found:
    source: SymbolSource
    index: int


class LocalMemo:
    """A bounded, expiring dict, trusted only while invalidations reach this process."""

    def __init__(self, maxsize: int, ttl: float):
        self.maxsize = maxsize
        self.ttl = ttl
        self.active = False
        # Bumped by every invalidation: an answer read before one must not be remembered after.
        self.generation = 0
        self._data: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    def get(self, key: str) -> bytes | None:
        if not self.active:
            return None
        entry = self._data.get(key)
        if entry is None:
            return None
        if entry[0] < time.monotonic():
            self._data.pop(key, None)
            return None
        return entry[1]

    def put(self, key: str, value: bytes, generation: int) -> None:
        if not self.active or self.maxsize <= 0 or generation != self.generation:
            return
        self._data[key] = (time.monotonic() + self.ttl, value)
        self._data.move_to_end(key)
        while len(self._data) > self.maxsize:
            self._data.popitem(last=False)

    def discard(self, keys: list[str]) -> None:
        self.generation += 1
        for key in keys:
            self._data.pop(key, None)

    def deactivate(self) -> None:
        self.active = False
        self.generation += 1
        self._data.clear()


class SymbolLookup:
    def __init__(
        self,
        storage: StorageConfig,
        stores: Stores,
        cache: Cache,
        ttl: float,
        local_size: int,
    ):
        self.storage = storage
        self.stores = stores
        self.cache = cache
        self.ttl = ttl
        self.memo = LocalMemo(local_size, ttl)
        self.channel = f"symbolon:download:invalidate:{storage.hash}"
        self.regular = storage.sources
        self.with_try = (*storage.sources, storage.upload_try)
        self._listener: asyncio.Task | None = None
        self._stopping = asyncio.Event()
        self._inflight: dict[tuple[str, bool, bool], asyncio.Future] = {}
        self._signed: OrderedDict[tuple[str, str, int], tuple[float, str]] = OrderedDict()

    # -- the cache keys ----------------------------------------------------------------------

    def cache_key(self, source: SymbolSource, key: str) -> str:
        # The configuration hash makes a changed SYMBOL_URLS start from an empty cache.
        if source.public:
            where = source.public_url(key)
        else:
            where = f"{source.endpoint_url}/{source.bucket}:{source.object_key(key)}"
        return f"download:exists:{self.storage.hash}:{where}"

    def cache_keys_for(self, key: str) -> list[str]:
        return [self.cache_key(s, key) for s in self.with_try]

    # -- lookups -----------------------------------------------------------------------------

    def remembered(self, key: str, include_try: bool) -> Found | Unknown | None:
        """What :meth:`find` would answer, from this process's memo alone: ``UNKNOWN`` when
        a source's answer is not there (or the memo is off)."""
        if not self.memo.active:
            return UNKNOWN
        sources = self.with_try if include_try else self.regular
        known = [self.memo.get(self.cache_key(s, key)) for s in sources]
        hit = _first_found(known)
        if hit is not None:
            return Found(sources[hit], hit)
        return UNKNOWN if None in known else None

    def remembered_any(
        self, keys: list[str], include_try: bool
    ) -> tuple[Found, str] | Unknown | None:
        """What :meth:`find_any` would answer, from this process's memo alone: ``UNKNOWN``
        when the memo does not tell it."""
        for key in keys:
            found = self.remembered(key, include_try)
            if found is UNKNOWN:
                return UNKNOWN
            if found is not None:
                return found, key
        return None

    async def find(self, key: str, include_try: bool, refresh: bool = False) -> Found | None:
        """The first source, in configured order, that has the key; try sources come last.

        Concurrent lookups of the same key in this process share one: a burst of requests for
        a file nobody asked for yet costs one trip to storage, not one per request.
        """
        if not refresh:  # the hot path: answered without awaiting
            found = self.remembered(key, include_try)
            if found is not UNKNOWN:
                return found
        flight = (key, include_try, refresh)
        shared = self._inflight.get(flight)
        if shared is not None:
            return await asyncio.shield(shared)
        task = asyncio.ensure_future(self._find(key, include_try, refresh))
        self._inflight[flight] = task
        task.add_done_callback(lambda _: self._inflight.pop(flight, None))
        return await asyncio.shield(task)

    async def find_any(
        self, keys: list[str], include_try: bool, refresh: bool = False
    ) -> tuple[Found, str] | None:
        """The first of ``keys`` that some source has, and where; the next key is looked up
        only when no source has the one before."""
        for key in keys:
            found = await self.find(key, include_try, refresh)
            if found is not None:
                return found, key
        return None

    async def _find(self, key: str, include_try: bool, refresh: bool) -> Found | None:
        sources = self.with_try if include_try else self.regular
        cache_keys = [self.cache_key(s, key) for s in sources]
        known: list[bytes | None] = [None] * len(sources)
        generation = self.memo.generation
        if not refresh:
            for i, ck in enumerate(cache_keys):
                known[i] = self.memo.get(ck)
            hit = _first_found(known)
            if hit is not None:
                return Found(sources[hit], hit)
            # A directory answers a stat sooner than Redis would: only other sources' answers
            # are shared there (this process's memo keeps every answer).
            unknown = [i for i, v in enumerate(known) if v is None and not sources[i].is_directory]
            if unknown:
                values = await self.cache.get_many([cache_keys[i] for i in unknown])
                for i, value in zip(unknown, values, strict=True):
                    if value is not None:
                        known[i] = value
                        self.memo.put(cache_keys[i], value, generation)
                hit_or_miss = "hit" if None not in known else "miss"
                metrics.incr(f"symboldownloader_exists_cache_{hit_or_miss}")
        hit = _first_found(known)
        if hit is not None:
            return Found(sources[hit], hit)

        # Ask every source that might still be first, all at once: a miss costs one round trip.
        to_check = [i for i, v in enumerate(known) if v is None]
        with metrics.timer("symboldownloader_exists"):
            answers = await asyncio.gather(
                *(self._exists(sources[i], key) for i in to_check), return_exceptions=True
            )
        fresh: dict[str, bytes] = {}
        shared: dict[str, bytes] = {}
        failed = False
        for i, answer in zip(to_check, answers, strict=True):
            if isinstance(answer, BaseException):
                logger.error("existence check of %s in %s failed: %r", key, sources[i].url, answer)
                failed = True
                continue
            fresh[cache_keys[i]] = known[i] = FOUND if answer else MISSING
            if not sources[i].is_directory:
                shared[cache_keys[i]] = fresh[cache_keys[i]]
        await self.cache.set_many(shared, ttl=self.ttl)
        for ck, value in fresh.items():
            self.memo.put(ck, value, generation)
        if refresh:
            # Other processes may remember the old answer.
            await self.cache.publish(self.channel, "\n".join(fresh))
        hit = _first_found(known)
        if hit is not None:
            return Found(sources[hit], hit)
        if failed:
            raise StorageUnavailable(key)
        return None

    async def _exists(self, source: SymbolSource, key: str) -> bool:
        return await self.stores.at(source).exists(source.object_key(key))

    async def download_url(self, source: SymbolSource, key: str, expires: int) -> str:
        """Where a client GETs the file ``key`` of ``source``, valid ``expires`` seconds: maybe a
        path on this server (see :meth:`symbolon.storage.store.SymbolStore.download_url`).

        Reused for a twelfth of its validity, whatever the store: signing costs more than
        everything else a cached hit does, popular files are asked for over and over, and a
        reused URL still has over 90% of its validity left.
        """
        url = self.remembered_url(source, key, expires)
        if url is not None:
            return url
        signed_at = time.monotonic()
        url = await self.stores.at(source).download_url(source.object_key(key), expires)
        self._signed[(source.url, key, expires)] = (signed_at + expires / 12, url)
        if len(self._signed) > SIGNED_URL_MEMO_SIZE:
            self._signed.popitem(last=False)
        return url

    def remembered_url(self, source: SymbolSource, key: str, expires: int) -> str | None:
        """The URL :meth:`download_url` would answer, if it is still here to reuse."""
        entry = self._signed.get((source.url, key, expires))
        if entry is not None and entry[0] > time.monotonic():
            return entry[1]
        return None

    # -- invalidation ------------------------------------------------------------------------

    async def invalidate(self, keys: list[str]) -> None:
        """Forget what is known about these logical keys, here, in Redis and in every process."""
        cache_keys = [ck for key in keys for ck in self.cache_keys_for(key)]
        self.memo.discard(cache_keys)
        await self.cache.delete(*cache_keys)
        await self.cache.publish(self.channel, "\n".join(cache_keys))

    async def start(self) -> None:
        if self.memo.maxsize > 0 and self._listener is None:
            self._listener = asyncio.create_task(self._listen())

    async def close(self) -> None:
        if self._listener is not None:
            # Asked to stop rather than cancelled: a cancelled read can leave redis-py's
            # subscription connection half-closed and the task unfinished.
            self._stopping.set()
            await asyncio.wait({self._listener}, timeout=3.0)
            if not self._listener.done():
                self._listener.cancel()
            self._listener = None

    async def _listen(self) -> None:
        """Keep the memo in step with invalidations; while not subscribed, do not use it."""
        client = self.cache.client
        while not self._stopping.is_set():
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self.memo.active = True
                last_ping = time.monotonic()
                while not self._stopping.is_set():
                    message = await pubsub.get_message(timeout=0.25)
                    if message is not None and message["type"] == "message":
                        self.memo.discard(message["data"].decode().split("\n"))
                    if time.monotonic() - last_ping > 10:
                        await pubsub.ping()  # notice a dead connection while idle
                        last_ping = time.monotonic()
            except Exception as exc:
                if self.memo.active:
                    logger.warning("download invalidations unavailable, memo off: %r", exc)
                self.memo.deactivate()
                with suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=1.0)
            finally:
                self.memo.deactivate()
                with suppress(Exception):
                    await asyncio.wait_for(pubsub.aclose(), timeout=1.0)


def _first_found(known: list[bytes | None]) -> int | None:
    """Index of the first source that has the file, if no earlier source is still unknown."""
    for i, value in enumerate(known):
        if value is None:
            return None
        if value == FOUND:
            return i
    return None
