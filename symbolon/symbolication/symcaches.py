"""Where symcaches are kept between requests: on disk (L1), in the Redis LRU store (L2), and
what is remembered about modules that were found nowhere.

L1 is a directory shared by every process of a node. Entries are written to ``<root>/tmp`` and
renamed into ``<root>/cache``, so readers see whole files only; a read refreshes the entry's
modification time, which is what eviction orders by. The process that writes an entry also
enforces the byte budget, deleting the least recently used entries: no separate cache manager
is needed, and several processes may share the directory. An evicted entry that a process still
has open stays readable by it (the pages live until it lets go).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

from symbolon.metrics import symbolication_metrics as metrics
from symbolon.redis_cache import CACHE_ERRORS, Cache
from symbolon.symbolication.request import ModuleKey

logger = logging.getLogger(__name__)

ENTRY_SUFFIX = ".symc"
# A read touches the entry's mtime at most this often: enough for LRU order, and no write per hit.
TOUCH_INTERVAL_SECONDS = 60.0
STALE_TMP_SECONDS = 3600.0


# File systems allow 255 bytes per name; percent-encoding can triple a 1,024-character one.
MAX_SEGMENT = 200


def _fit(segment: str) -> str:
    """A segment short enough to be a file name: a long one keeps its start and gets the
    SHA-256 of the whole after ``%~``, which quote() never writes, so it cannot collide with a
    name that was short to begin with."""
    if len(segment.encode()) <= MAX_SEGMENT:
        return segment
    return f"{segment[:120]}%~{hashlib.sha256(segment.encode()).hexdigest()}"


def entry_name(key: ModuleKey) -> str:
    """``<debug_filename>/<DEBUG_ID>.symc``, percent-encoded so that distinct names stay
    distinct (the reference mapped ``a+b`` and ``a b`` to one file) and no segment is ``..``."""
    filename, debug_id = key
    name = quote(filename, safe="+@")
    if name.startswith("."):
        name = "%2E" + name[1:]  # never a "." or ".." segment
    # quote() never writes a lone "%": the empty name cannot collide with a real one.
    return f"{_fit(name) or '%'}/{_fit(quote(debug_id.upper(), safe=''))}{ENTRY_SUFFIX}"


@dataclass
class DiskCache:
    root: Path
    max_size: int
    namespace: str  # the source-configuration hash: another configuration, other entries

    def __post_init__(self) -> None:
        self.entries = self.root / "cache"
        self.tmp = self.root / "tmp"
        self._touched: dict[Path, float] = {}

    def prepare(self) -> None:
        """Create the directories, drop temp files of crashed writers, enforce the budget."""
        self.entries.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        cutoff = time.time() - STALE_TMP_SECONDS
        for item in self.tmp.iterdir():
            try:
                if item.stat().st_mtime < cutoff:
                    item.unlink()
            except OSError:
                pass
        self.enforce_budget()

    def path(self, key: ModuleKey) -> Path:
        return self.entries / self.namespace / entry_name(key)

    def tmp_path(self, suffix: str = ENTRY_SUFFIX) -> Path:
        return self.tmp / f"{uuid.uuid4().hex}{suffix}"

    def touch(self, path: Path) -> None:
        """Mark an entry used (its mtime orders eviction across every process)."""
        now = time.time()
        if now - self._touched.get(path, 0.0) < TOUCH_INTERVAL_SECONDS:
            return
        try:
            os.utime(path)
            self._touched[path] = now
        except OSError:
            self._touched.pop(path, None)
        if len(self._touched) > 100_000:
            self._touched.clear()

    def exists(self, key: ModuleKey) -> Path | None:
        path = self.path(key)
        return path if path.is_file() else None

    def adopt(self, tmp: Path, key: ModuleKey) -> Path:
        """Move a finished temp file into place (atomically), then keep within the budget."""
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, path)
        self._touched[path] = time.time()
        self.enforce_budget(keep=path)
        return path

    def enforce_budget(self, keep: Path | None = None) -> int:
        """Delete least recently used entries until the total fits; returns the bytes in use."""
        found: list[tuple[float, int, str]] = []
        total = 0
        for directory, _, names in os.walk(self.entries):
            for name in names:
                if not name.endswith(ENTRY_SUFFIX):
                    continue
                path = os.path.join(directory, name)
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                found.append((st.st_mtime, st.st_size, path))
                total += st.st_size
        if total > self.max_size:
            found.sort()
            keep_path = str(keep) if keep is not None else None
            for _, size, path in found:
                if total <= self.max_size:
                    break
                if path == keep_path:
                    continue
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass  # another process evicted it first
                except OSError as exc:
                    logger.warning("cannot evict %s: %r", path, exc)
                    continue
                total -= size
                self._touched.pop(Path(path), None)
                metrics.incr("diskcache.evict")
        metrics.gauge("diskcache.usage", total)
        return total


class SymcacheStore:
    """L2: whole entries in the Redis LRU store, so that other nodes reuse a parse.

    Entries of tens of megabytes move in chunks, so neither side holds one whole in memory: a
    write appends to a temporary key and renames it into place once complete (readers never see
    half an entry; one evicted half-way is never renamed), a read fetches ranges into a file.
    """

    CHUNK = 8 * 1024 * 1024

    def __init__(self, store: Cache, namespace: str):
        self.store = store
        self.namespace = namespace

    def key(self, key: ModuleKey) -> str:
        return f"symbolication:symcache:{self.namespace}:{entry_name(key)}"

    async def _guarded(self, op: str, call: Any) -> Any:
        if not self.store.available:
            return None
        try:
            return await call()
        except CACHE_ERRORS as exc:
            if not self.store.ignore_exceptions:
                raise
            logger.warning("redis store: symcache %s failed: %r", op, exc)
            metrics.incr("redis.error", tags=["cache:store", f"op:{op}"])
            return None

    async def put_file(self, key: ModuleKey, path: Path) -> bool:
        final = self.key(key)
        partial = f"{final}:partial:{uuid.uuid4().hex}"
        client = self.store.client

        async def call() -> bool:
            size = 0
            with open(path, "rb") as f:  # noqa: ASYNC230 (chunks are read in a thread)
                while chunk := await asyncio.to_thread(f.read, self.CHUNK):
                    await client.append(partial, chunk)
                    size += len(chunk)
            if await client.strlen(partial) != size:  # evicted while being written
                await client.delete(partial)
                return False
            await client.rename(partial, final)
            return True

        return bool(await self._guarded("put", call))

    async def get_file(self, key: ModuleKey, dest: Path) -> bool:
        """Copy the entry into ``dest``; False when the store does not have it (whole)."""
        name = self.key(key)
        client = self.store.client

        async def call() -> bool:
            size = await client.strlen(name)
            if not size:
                return False
            written = 0
            with open(dest, "wb") as f:  # noqa: ASYNC230 (chunks are written in a thread)
                for start in range(0, size, self.CHUNK):
                    # bytes: the store's client does not decode replies
                    chunk = cast(bytes, await client.getrange(name, start, start + self.CHUNK - 1))
                    if not chunk:
                        return False  # evicted while being read
                    written += await asyncio.to_thread(f.write, chunk)
            return written == size

        return bool(await self._guarded("get", call))


class MissMemory:
    """Modules found nowhere, remembered for a short while in the shared cache.

    Keys keep the debug id as sent: sources are asked with it as sent, and an upper-case id
    may exist where a lower-case one does not.
    """

    def __init__(self, cache: Cache, namespace: str, ttl: float):
        self.cache = cache
        self.namespace = namespace
        self.ttl = ttl

    @staticmethod
    def key_for(namespace: str, key: ModuleKey) -> str:
        return f"symbolication:miss:{namespace}:{quote(key[0], safe='')}/{key[1]}"

    async def known_missing(self, key: ModuleKey) -> bool:
        if self.ttl <= 0:
            return False
        return await self.cache.get(self.key_for(self.namespace, key)) is not None

    async def remember(self, key: ModuleKey) -> None:
        if self.ttl > 0:
            await self.cache.set(self.key_for(self.namespace, key), b"1", ttl=self.ttl)

    async def forget_uploaded(self, symbol_keys: list[str]) -> None:
        """Uploaded ``<debug_file>/<debug_id>/<file>`` keys: no longer missing, whatever case
        the id was asked in (uploads store it upper-cased; clients send either)."""
        keys: set[str] = set()
        for symbol_key in symbol_keys:
            parts = symbol_key.split("/")
            if len(parts) != 3:
                continue
            filename, debug_id = parts[0], parts[1]
            for variant in {debug_id, debug_id.upper(), debug_id.lower()}:
                keys.add(self.key_for(self.namespace, (filename, variant)))
        if keys:
            await self.cache.delete(*sorted(keys))
