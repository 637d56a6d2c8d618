"""CFI indexes of modules, kept like symcaches (docs/processing.md, "CFI indexes in the symbol
caches").

A module's index is built from its ``.sym`` in the same parse job that builds its symcache (the
symbolication service's companion), and kept beside the symcaches: on disk in the same cache
directory and byte budget (L1) and in the Redis LRU store (L2), under a namespace of its own. So a
crash whose modules were seen before reads no ``.sym`` at all. A module whose symcache was made
before (by symbolication, or before this cache existed) gets its index from one more fetch and a
job of its own in the parse pool.

A module without a ``.sym`` but with a native file gets its index from that file: symbolic's CFI
cache of the object is Breakpad ``STACK CFI`` text, read like a ``.sym``'s, with ``FUNC`` ranges
from its symcache. A split debug file holds no unwind information (its ``.eh_frame`` stays in the
binary), so then the module's binary (``D/<ID>/D``) is read for the index.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from symbolon.processing.cfi import MAGIC, CfiFormatError, CfiIndex
from symbolon.symbolication.parse import Companion
from symbolon.symbolication.request import ModuleKey
from symbolon.symbolication.service import Symbolication
from symbolon.symbolication.sym_fetch import ALL_KINDS, NATIVE, native_debug_filename
from symbolon.symbolication.symcaches import DiskCache, SymcacheStore

logger = logging.getLogger(__name__)

# Entries of another format of the index are other keys.
FORMAT = MAGIC.decode("ascii", "replace").lower()
# The records an index is made of (STACK, FUNC, PUBLIC); the line records, most of a sym file,
# are skipped by the regular expression's scan instead of becoming objects.
INDEXED_LINE = re.compile(rb"^[SFP][^\n]*", re.MULTILINE)
# Memory a CFI-only job may need per byte of sym file, and at least.
MEMORY_PER_SYM_BYTE = 2
MEMORY_BASE = 100 * 1024**2
# A module whose index could not be built is not tried again for this long.
FAILURE_TTL_SECONDS = 600.0


def sym_lines(data: bytes) -> Iterator[bytes]:
    """The lines of a sym file an index reads."""
    for match in INDEXED_LINE.finditer(data):
        yield match.group()


def build_cfi_file(data: bytes, out: str) -> None:
    """In a parse process: the CFI index of a sym file's bytes, written to ``out``."""
    index = CfiIndex.from_sym_lines(sym_lines(data))
    with open(out, "wb") as f:
        f.write(index.to_bytes())


NO_UNWIND = "no unwind information"


def build_cfi_from_path(sym_path: str, compressed: bool, out: str, debug_id: str = "") -> str:
    """In a parse process: ``build_cfi_file`` of a fetched symbol file (a ``.sym``, or the
    object ``debug_id`` of a native file); "" or what went wrong (NO_UNWIND for a native file
    without unwind information, whose index then holds its functions only)."""
    from symbolic.exceptions import SymbolicError

    from symbolon.symbolication.inflate import DecodeError, inflate
    from symbolon.symbolication.parse import is_native, read_head

    try:
        if is_native(read_head(sym_path, compressed)):
            return _build_native_cfi(sym_path, compressed, out, debug_id)
        data = Path(sym_path).read_bytes()
        if compressed:
            data = inflate(data)
        build_cfi_file(data, out)
    except (OSError, DecodeError, ValueError, LookupError, SymbolicError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return ""


def _build_native_cfi(path: str, compressed: bool, out: str, debug_id: str) -> str:
    from symbolic.debuginfo import normalize_debug_id

    from symbolon.symbolication.parse import native_cfi_text, native_object
    from symbolon.symbolication.table import write_trailer

    symcache_path = out + ".symc"
    try:
        with native_object(path, compressed, normalize_debug_id(debug_id)) as obj:
            # The FUNC ranges come from a symcache, written beside the index for the while.
            with open(symcache_path, "wb") as symcache:
                obj.make_symcache().dump_into(symcache)
                write_trailer(symcache, "")
            build_cfi_file(native_cfi_text(obj, symcache_path), out)
            return "" if "unwind" in obj.features else NO_UNWIND
    finally:
        with contextlib.suppress(OSError):
            os.unlink(symcache_path)


@dataclass
class CfiStats:
    """What obtaining indexes cost, for the benchmark and the logs."""

    hits: int = 0
    built_with_symcache: int = 0
    built_alone: int = 0
    missing: int = 0


class CfiCache:
    """Paths of modules' CFI index files in the disk cache, made on demand."""

    def __init__(self, symbolication: Symbolication):
        self.symbolication = symbolication
        namespace = f"{FORMAT}.{symbolication.namespace}"
        disk = symbolication.disk
        # Same directory and byte budget as the symcaches: evicted by the same rule.
        self.disk = DiskCache(disk.root, disk.max_size, namespace)
        store = symbolication.store
        self.store = SymcacheStore(store.store, namespace) if store is not None else None
        self.stats = CfiStats()
        self._flights: dict[ModuleKey, asyncio.Future[Path | None]] = {}
        self._failed: dict[ModuleKey, float] = {}
        self._checked: dict[Path, tuple[int, int, int]] = {}
        self._prepared = False
        symbolication.companion = self

    async def prepare(self) -> None:
        """The cache's directories, before the first lookup."""
        if not self._prepared:
            await asyncio.to_thread(self.disk.prepare)
            self._prepared = True

    # -- the symbolication service's companion ---------------------------------------------------

    def companion(self) -> Companion:
        return (build_cfi_file, str(self.disk.tmp_path(".cfi")))

    async def adopt(self, key: ModuleKey, path: Path) -> None:
        placed = await asyncio.to_thread(self.disk.adopt, path, key)
        self.stats.built_with_symcache += 1
        if self.store is not None:
            await self.store.put_file(key, placed)

    # -- lookups ----------------------------------------------------------------------------------

    async def path(self, key: ModuleKey) -> Path | None:
        """The index file of ``(debug_file, debug_id)``, or None when the module has no symbols
        anywhere (or its index cannot be built)."""
        ident = (key[0], key[1].upper())
        found = await self._cached(ident)
        if found is not None:
            self.stats.hits += 1
            return found
        flight = self._flights.get(ident)
        if flight is None:
            flight = asyncio.get_running_loop().create_future()
            self._flights[ident] = flight
            task = asyncio.ensure_future(self._obtain(key, ident, flight))
            task.add_done_callback(lambda _: self._flights.pop(ident, None))
        return await asyncio.shield(flight)

    async def cached(self, key: ModuleKey) -> Path | None:
        """The index file of ``key`` if a cache holds it; nothing is fetched or built."""
        found = await self._cached((key[0], key[1].upper()))
        if found is not None:
            self.stats.hits += 1
        return found

    async def _cached(self, ident: ModuleKey) -> Path | None:
        path = self.disk.path(ident)
        if await asyncio.to_thread(path.is_file):
            if await self._sound(path, ident, "disk"):
                self.disk.touch(path)
                return path
            with contextlib.suppress(OSError):
                await asyncio.to_thread(path.unlink, True)
        if self.store is None:
            return None
        tmp = self.disk.tmp_path(".cfi")
        try:
            if await self.store.get_file(ident, tmp):
                if await self._sound(tmp, ident, "store"):
                    return await asyncio.to_thread(self.disk.adopt, tmp, ident)
                await self._drop_stored(ident)
        except OSError as exc:
            logger.warning("unusable CFI index from the store for %s: %r", ident, exc)
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        return None

    async def _sound(self, path: Path, ident: ModuleKey, where: str) -> bool:
        """Whether a cached index file is whole: a damaged one is rebuilt, never walked with.
        A file checked before (same inode, size and time) is not read again."""
        try:
            st = await asyncio.to_thread(path.stat)
            mark = (st.st_ino, st.st_size, st.st_mtime_ns)
            if self._checked.get(path) == mark:
                return True
            await asyncio.to_thread(CfiIndex.check_file, path)
        except CfiFormatError as exc:
            logger.warning("damaged CFI index of %s/%s in the %s cache: %s", *ident, where, exc)
            return False
        except OSError:
            return False
        if len(self._checked) > 100_000:
            self._checked.clear()
        self._checked[path] = mark
        return True

    async def _drop_stored(self, ident: ModuleKey) -> None:
        store = self.store
        if store is None or not store.store.available:
            return
        try:
            await store.store.client.delete(store.key(ident))
        except Exception as exc:
            logger.warning("cannot delete the CFI index of %s/%s from the store: %r", *ident, exc)

    async def _obtain(
        self, key: ModuleKey, ident: ModuleKey, flight: asyncio.Future[Path | None]
    ) -> None:
        try:
            result = await self._build(key, ident)
        except Exception:
            logger.exception("obtaining the CFI index of %s/%s failed", *key)
            result = None
        except BaseException:
            flight.cancel()
            raise
        flight.set_result(result)

    async def _build(self, key: ModuleKey, ident: ModuleKey) -> Path | None:
        # The symcache's parse makes the index too: a cold module is parsed once.
        outcome = await self.symbolication.module(key, unwind=True)
        found = await self._cached(ident)
        if found is not None:
            return found
        if outcome.table is None:
            self.stats.missing += 1
            return None
        failed_at = self._failed.get(ident)
        if failed_at is not None and time.monotonic() - failed_at < FAILURE_TTL_SECONDS:
            return None
        # The symcache was there already, or made from a file without unwind information: a
        # symbol file is read once more, for the index alone.
        if outcome.table.symbol_file == native_debug_filename(key[0]):
            # A split debug file's unwind information is in its binary.
            path = await self._build_alone(key, ident, (NATIVE,), fallback=False)
            if path is None:
                path = await self._build_alone(key, ident)
        else:
            path = await self._build_alone(key, ident)
        if path is None:
            self._failed[ident] = time.monotonic()
        return path

    async def _build_alone(
        self,
        key: ModuleKey,
        ident: ModuleKey,
        kinds: tuple[str, ...] = ALL_KINDS,
        fallback: bool = True,
    ) -> Path | None:
        """The index from the first symbol file of ``kinds``; one from a native file without
        unwind information (its functions only) is kept only as a ``fallback``."""
        service = self.symbolication
        sym_tmp = self.disk.tmp_path(".sym")
        out_tmp = self.disk.tmp_path(".cfi")
        try:
            fetched = await service.fetcher.fetch(key, sym_tmp, kinds)
            if not fetched.found or fetched.body is None:
                return None
            body = fetched.body
            error = await service.pool.run(
                MEMORY_BASE + MEMORY_PER_SYM_BYTE * body.inflated_size,
                "the parse process died twice",
                build_cfi_from_path,
                str(sym_tmp),
                body.compressed,
                str(out_tmp),
                key[1],
            )
            if error == NO_UNWIND and fallback:
                logger.info("%s/%s has no unwind information: walked without CFI", *key)
            elif error:
                logger.error("cannot build the CFI index of %s/%s: %s", *key, error)
                return None
            self.stats.built_alone += 1
            placed = await asyncio.to_thread(self.disk.adopt, out_tmp, ident)
            if self.store is not None:
                await self.store.put_file(ident, placed)
            return placed
        finally:
            for tmp in (sym_tmp, out_tmp):
                with contextlib.suppress(OSError):
                    await asyncio.to_thread(os.unlink, tmp)
