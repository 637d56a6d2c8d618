"""Symcaches on demand: memory, disk (L1), Redis store (L2), then download and parse, once.

Every module is obtained through one *flight* per process: concurrent requests for it wait for
the same work. Across processes and nodes a Redis lock (with a timeout, renewed while the work
runs) makes the others wait for the holder's result in L1 or L2 instead of parsing again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from symbolon.conf import Settings
from symbolon.metrics import symbolication_metrics as metrics
from symbolon.redis_cache import CACHE_ERRORS, Cache
from symbolon.storage.lookup import SymbolLookup
from symbolon.storage.sources import config_hash
from symbolon.storage.stores import Stores
from symbolon.symbolication.parse import Companion, ParsePool, physical_memory
from symbolon.symbolication.request import ModuleKey
from symbolon.symbolication.sym_fetch import ALL_KINDS, Fetcher
from symbolon.symbolication.symcaches import DiskCache, MissMemory, SymcacheStore, entry_name
from symbolon.symbolication.table import EntryError, SymbolTable

logger = logging.getLogger(__name__)

LOCK_TTL_SECONDS = 30.0
LOCK_POLL_SECONDS = 0.1
RENEW_LOCK = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
return 0
"""
RELEASE_LOCK = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


class CompanionBuilder(Protocol):
    """Something else a module's parse makes from the same sym file, in the same job, when the
    crash processor asked for the module (its CFI index, docs/processing.md)."""

    def companion(self) -> Companion:
        """The pool function and the temporary file it writes."""
        ...

    async def adopt(self, key: ModuleKey, path: Path) -> None:
        """Take the written file; called before the symcache is stored, so that whoever finds
        the symcache finds this too."""
        ...


# Told the ``<debug_file>/<debug_id>/<file>`` keys an upload stored.
UploadListener = Callable[[list[str]], Awaitable[None]]


@dataclass
class Outcome:
    """How one module was obtained: what the Debug block and the metrics report."""

    table: SymbolTable | None = None
    cache_seconds: float = 0.0
    cache_hit: bool = False
    downloaded: bool = False
    download_found: bool = False
    download_seconds: float = 0.0
    download_size: int = 0
    parsed: bool = False
    parse_ok: bool = False
    parse_seconds: float = 0.0
    save_seconds: float = 0.0


@dataclass
class _Flight:
    future: asyncio.Future
    outcome: Outcome = field(default_factory=Outcome)


class Symbolication:
    """The long-lived part of symbolication: caches, the parse pool, the fetcher."""

    def __init__(
        self,
        settings: Settings,
        lookup: SymbolLookup,
        stores: Stores,
        cache: Cache,
        store: Cache,
    ):
        self.settings = settings
        self.cache = cache
        urls = settings.symbolication_symbol_urls
        self.namespace = config_hash([*settings.symbol_urls, "|", *urls])
        root = settings.symbols_cache_dir or settings.data_dir / "symcache"
        max_size = settings.symbols_cache_max_size
        self.disk = DiskCache(Path(root).absolute(), max_size, self.namespace)
        self.store = (
            SymcacheStore(store, self.namespace) if settings.symbolication_store_symcaches else None
        )
        self.misses = MissMemory(cache, self.namespace, settings.symbolication_miss_ttl_seconds)
        self.fetcher = Fetcher(
            lookup,
            stores,
            urls,
            include_try=settings.symbolication_include_try_symbols,
            max_size=settings.symbolication_max_sym_size,
            deadline=settings.symbolication_fetch_deadline_seconds,
        )
        # The budgets are the machine's: WEB_PROCESSES processes each get their share.
        processes = max(1, settings.web_processes)
        budget = (settings.symbolication_parse_memory or physical_memory() // 2) // processes
        workers = settings.symbolication_parse_workers or max(1, _cpus() // processes)
        self.pool = ParsePool(workers, budget)
        self.open_limit = settings.symbolication_open_symcaches
        self._open: OrderedDict[ModuleKey, SymbolTable] = OrderedDict()
        self._flights: dict[ModuleKey, _Flight] = {}
        self._background: set[asyncio.Task] = set()
        self._prepared = False
        self.lock_ttl = LOCK_TTL_SECONDS
        self.lock_poll = LOCK_POLL_SECONDS
        self.companion: CompanionBuilder | None = None
        self.upload_listeners: list[UploadListener] = []

    async def start(self) -> None:
        """For the web server: the disk cache ready before requests. The parse processes are
        not started here but by the first parse (the pool is made in one step on the event
        loop, so concurrent first parses share it): a process that only takes crashes or
        answers downloads never holds them, nor multiprocessing's resource tracker."""
        await self._prepare()

    async def _prepare(self) -> None:
        if not self._prepared:
            await asyncio.to_thread(self.disk.prepare)
            self._prepared = True

    async def drain(self) -> None:
        """Wait for the background work (L2 writes) started so far."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    async def close(self) -> None:
        await self.drain()
        await self.fetcher.close()
        await asyncio.to_thread(self.pool.close)
        self._open.clear()

    # -- the one entry point -----------------------------------------------------------------

    async def module(self, key: ModuleKey, unwind: bool = False) -> Outcome:
        """The symcache of ``(debug_filename, debug_id)``, or an Outcome without a table.

        With ``unwind`` (the crash processor's walk is asking), a parse this call starts makes
        the companion's file too, from the same sym file. A symbolication request does not wait
        for that: building a big module's CFI index takes longer than its symcache."""
        started = time.perf_counter()
        ident = _identity(key)
        table = self._open.get(ident)
        if table is not None:
            self._open.move_to_end(ident)
            self.disk.touch(self.disk.path(ident))
            elapsed = time.perf_counter() - started
            metrics.histogram("diskcache.get", 1000.0 * elapsed, tags=["result:hit"])
            return Outcome(table=table, cache_seconds=elapsed, cache_hit=True)
        flight = self._flights.get(key)
        if flight is None:
            flight = _Flight(asyncio.get_running_loop().create_future())
            self._flights[key] = flight
            task = asyncio.ensure_future(self._fly(key, flight, unwind))
            task.add_done_callback(lambda _: self._flights.pop(key, None))
        return await asyncio.shield(flight.future)

    async def _fly(self, key: ModuleKey, flight: _Flight, unwind: bool) -> None:
        try:
            outcome = await self._obtain(key, flight.outcome, unwind)
        except Exception:
            # A module that cannot be had is "not found" for the client, not a 500.
            logger.exception("obtaining the symcache of %s/%s failed", *key)
            outcome = flight.outcome
            outcome.table = None
        except BaseException:
            flight.future.cancel()
            raise
        if outcome.table is not None:
            self._remember(_identity(key), outcome.table)
        flight.future.set_result(outcome)

    def _remember(self, ident: ModuleKey, table: SymbolTable) -> None:
        self._open[ident] = table
        self._open.move_to_end(ident)
        while len(self._open) > self.open_limit:
            self._open.popitem(last=False)

    async def _obtain(self, key: ModuleKey, outcome: Outcome, unwind: bool) -> Outcome:
        await self._prepare()
        ident = _identity(key)
        started = time.perf_counter()
        table = await self._read_disk(ident)
        if table is None and self.store is not None:
            table = await self._read_store(ident)
        outcome.cache_seconds = time.perf_counter() - started
        if table is not None:
            outcome.table, outcome.cache_hit = table, True
            return outcome
        if await self.misses.known_missing(key):
            return outcome
        return await self._build_once(key, outcome, unwind)

    # -- L1 and L2 -----------------------------------------------------------------------------

    async def _read_disk(self, ident: ModuleKey, count: bool = True) -> SymbolTable | None:
        started = time.perf_counter()
        path = self.disk.path(ident)
        result = "miss"
        table = None
        try:
            table = await asyncio.to_thread(_open_table, path)
            if table is not None:
                result = "hit"
                self.disk.touch(path)
        except (OSError, EntryError, ValueError) as exc:
            # A damaged or foreign entry (say, a format symbolic no longer reads): rebuilt.
            logger.warning("unusable symcache entry %s: %r", path, exc)
            result = "error"
            with contextlib.suppress(OSError):
                path.unlink()
        if count:
            elapsed_ms = 1000.0 * (time.perf_counter() - started)
            metrics.histogram("diskcache.get", elapsed_ms, tags=[f"result:{result}"])
        return table

    async def _read_store(self, ident: ModuleKey) -> SymbolTable | None:
        assert self.store is not None
        tmp = self.disk.tmp_path()
        try:
            if not await self.store.get_file(ident, tmp):
                with contextlib.suppress(OSError):
                    tmp.unlink()
                return None
            path = await asyncio.to_thread(self.disk.adopt, tmp, ident)
            return await asyncio.to_thread(_open_table, path)
        except (OSError, EntryError, ValueError) as exc:
            logger.warning("unusable symcache from the store for %s: %r", ident, exc)
            with contextlib.suppress(OSError):
                tmp.unlink()
            with contextlib.suppress(OSError):
                self.disk.path(ident).unlink()
            return None

    # -- building, once across processes ---------------------------------------------------

    def _lock_key(self, ident: ModuleKey) -> str:
        return f"symbolication:lock:{self.namespace}:{entry_name(ident)}"

    async def _build_once(self, key: ModuleKey, outcome: Outcome, unwind: bool) -> Outcome:
        ident = _identity(key)
        lock = self._lock_key(ident)
        token = uuid.uuid4().hex
        while True:
            acquired = await self.cache.add(lock, token, ttl=self.lock_ttl)
            if acquired is not False:  # True, or None when Redis cannot say: go on alone
                break
            # Another process builds it: wait for its result instead of parsing again.
            table = await self._wait_for_holder(key, lock)
            if table is None and self.store is not None:
                table = await self._read_store(ident)
            if table is not None:
                outcome.table, outcome.cache_hit = table, True
                return outcome
            if await self.misses.known_missing(key):
                return outcome
        renewer = asyncio.ensure_future(self._renew(lock, token))
        handed_over = False
        try:
            # The holder before us may have finished between our read and our lock.
            table = await self._read_disk(ident, count=False)
            if table is not None:
                outcome.table, outcome.cache_hit = table, True
                return outcome
            path = await self._build(key, outcome, unwind=unwind)
            if path is not None:
                outcome.table = await asyncio.to_thread(_open_table, path)
                if self.store is not None:
                    # The lock is released once the store has it, so that other nodes waiting
                    # find it there.
                    self._spawn(self._share(ident, path, lock, token, renewer))
                    handed_over = True
            return outcome
        finally:
            if not handed_over:
                renewer.cancel()
                await self._release(lock, token)

    async def _wait_for_holder(self, key: ModuleKey, lock: str) -> SymbolTable | None:
        ident = _identity(key)
        path = self.disk.path(ident)
        while True:
            await asyncio.sleep(self.lock_poll)
            if await asyncio.to_thread(path.is_file):
                return await self._read_disk(ident)
            if await self.cache.get(lock) is None:
                return await self._read_disk(ident)

    async def _renew(self, lock: str, token: str) -> None:
        ttl_ms = int(self.lock_ttl * 1000)
        while True:
            await asyncio.sleep(self.lock_ttl / 3)
            with contextlib.suppress(*CACHE_ERRORS):
                await self.cache.client.eval(RENEW_LOCK, 1, lock, token, ttl_ms)

    async def _release(self, lock: str, token: str) -> None:
        with contextlib.suppress(*CACHE_ERRORS):
            await self.cache.client.eval(RELEASE_LOCK, 1, lock, token)

    async def _share(
        self, ident: ModuleKey, path: Path, lock: str, token: str, renewer: asyncio.Future
    ) -> None:
        try:
            assert self.store is not None
            await self.store.put_file(ident, path)
        except OSError as exc:
            logger.warning("could not share %s through the store: %r", path, exc)
        finally:
            renewer.cancel()
            await self._release(lock, token)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _build(
        self,
        key: ModuleKey,
        outcome: Outcome,
        kinds: tuple[str, ...] = ALL_KINDS,
        unwind: bool = False,
    ) -> Path | None:
        """Download and parse into L1; None (and a remembered miss) when that fails."""
        sym_tmp = self.disk.tmp_path(".sym")
        entry_tmp = self.disk.tmp_path()
        companion = None
        if unwind and self.companion is not None:
            companion = self.companion.companion()
        try:
            outcome.downloaded = True
            fetched = await self.fetcher.fetch(key, sym_tmp, kinds)
            outcome.download_seconds = fetched.seconds
            if not fetched.found:
                if fetched.errors:
                    # A source that could not answer may have it: not a miss to remember.
                    logger.info("%s/%s not found; source errors: %s", *key, fetched.errors)
                else:
                    await self.misses.remember(key)
                return None
            body = fetched.body
            assert body is not None
            outcome.download_found = True
            outcome.download_size = body.size
            outcome.parsed = True
            parsed = await self.pool.build(
                sym_tmp,
                body.inflated_size,
                key[0],
                key[1],
                entry_tmp,
                body.compressed,
                companion,
                fetched.file,
            )
            outcome.parse_seconds = parsed.seconds
            metrics.timing("symbolicate.parse_sym_file.parse", 1000.0 * parsed.seconds)
            if not parsed.ok:
                if parsed.reason:
                    tag = f"reason:{parsed.reason}"
                    metrics.incr("symbolicate.parse_sym_file.error", tags=[tag])
                logger.error("cannot parse %s/%s (%s): %s", *key, parsed.reason, parsed.error)
                if later := kinds[kinds.index(fetched.kind) + 1 :]:
                    # The next kind may serve.
                    return await self._build(key, outcome, later, unwind)
                await self.misses.remember(key)
                return None
            outcome.parse_ok = True
            if parsed.companion_ok and companion is not None and self.companion is not None:
                try:
                    await self.companion.adopt(_identity(key), Path(companion[1]))
                except Exception:  # the symcache is still good
                    logger.exception("keeping what was built beside %s/%s failed", *key)
            started = time.perf_counter()
            try:
                path = await asyncio.to_thread(self.disk.adopt, entry_tmp, _identity(key))
            except OSError as exc:
                elapsed_ms = 1000.0 * (time.perf_counter() - started)
                metrics.histogram("diskcache.set", elapsed_ms, tags=["result:fail"])
                logger.error("cannot write the symcache of %s/%s: %r", *key, exc)
                return None
            outcome.save_seconds = time.perf_counter() - started
            elapsed_ms = 1000.0 * outcome.save_seconds
            metrics.histogram("diskcache.set", elapsed_ms, tags=["result:success"])
            return path
        finally:
            leftovers = [sym_tmp, entry_tmp]
            if companion is not None:
                leftovers.append(Path(companion[1]))
            for tmp in leftovers:
                with contextlib.suppress(OSError):
                    await asyncio.to_thread(tmp.unlink, missing_ok=True)

    async def forget_misses(self, symbol_keys: list[str]) -> None:
        """An upload stored these keys: no longer missing, and the listeners are told."""
        await self.misses.forget_uploaded(symbol_keys)
        for listener in self.upload_listeners:
            try:
                await listener(symbol_keys)
            except Exception:  # the upload itself succeeded
                logger.exception("telling %r of uploaded %s failed", listener, symbol_keys)


def _identity(key: ModuleKey) -> ModuleKey:
    """The cache identity of a module: debug ids compare upper-cased (docs/symbolication.md)."""
    return (key[0], key[1].upper())


def _open_table(path: Path) -> SymbolTable | None:
    try:
        return SymbolTable(path)
    except FileNotFoundError:
        return None


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
