"""Parsing sym files into symcache entries, in a pool of processes bounded by memory.

Parsing a large sym file takes seconds of CPU and several times the file's size in memory, so it
never runs on the event loop, and the pool admits a job only while the memory it is expected to
need fits the budget (one job always runs, however large).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

# Peak RSS of a parse process, measured: about 2.9 times the sym file (340 MB for 119 MB: the
# bytes, the parser's tables, the symcache); the estimate leaves headroom.
MEMORY_PER_SYM_BYTE = 4
MEMORY_BASE = 100 * 1024**2
# Processes are replaced now and then: the allocator keeps what a huge parse made it take.
TASKS_PER_PROCESS = 32

logger = logging.getLogger(__name__)
T = TypeVar("T")
# Something else made from the same sym file in the same job (the processor's CFI index,
# docs/processing.md): a module-level function, given the sym file's bytes and where to write.
Companion = tuple[Callable[[bytes, str], Any], str]


@dataclass(frozen=True)
class Parsed:
    ok: bool
    seconds: float
    module_filename: str = ""
    size: int = 0  # bytes of the entry written
    reason: str = ""  # for the parse_sym_file.error metric when not ok
    error: str = ""
    companion_ok: bool = False  # the companion's file was written


def module_filename(data: bytes, debug_filename: str) -> str:
    """The PE name of a Windows module from ``INFO CODE_ID <id> <name>``, else the debug name."""
    start = 0
    while start < len(data):
        end = data.find(b"\n", start)
        if end < 0:
            end = len(data)
        line = data[start:end]
        if line.startswith(b"INFO"):
            parts = line.split(b" ")
            if len(parts) == 4:
                return parts[3].decode("utf-8", "replace").strip()
            return debug_filename
        if line.startswith((b"FILE", b"PUBLIC", b"FUNC")):
            return debug_filename
        start = end + 1
    return debug_filename


def build_entry(
    sym_path: str,
    debug_filename: str,
    debug_id: str,
    out_path: str,
    compressed: bool = False,
    companion: Companion | None = None,
) -> Parsed:
    """In a pool process: parse the sym file (inflated first if ``compressed``) and write the
    cache entry to ``out_path``, then the companion's file from the same bytes."""
    # From the submodules: the package's own namespace is filled at run time, so untyped.
    from symbolic import exceptions
    from symbolic.debuginfo import Archive, normalize_debug_id

    from symbolon.symbolication.inflate import DecodeError, inflate
    from symbolon.symbolication.table import write_trailer

    started = time.perf_counter()

    def failed(reason: str, error: str) -> Parsed:
        return Parsed(False, time.perf_counter() - started, reason=reason, error=error)

    try:
        normalized = normalize_debug_id(debug_id)
    except (exceptions.ParseDebugIdError, ValueError) as exc:
        return failed("bad_debug_id", str(exc))
    data = Path(sym_path).read_bytes()
    if compressed:
        try:
            data = inflate(data)
        except DecodeError as exc:
            return failed("sym_malformed", f"the compressed body does not inflate: {exc}")
    name = module_filename(data, debug_filename)
    try:
        # Archive.from_bytes does not keep its buffer: ``data`` must outlive make_symcache().
        archive = Archive.from_bytes(data)
        try:
            obj = archive.get_object(debug_id=normalized)
        except LookupError as exc:
            return failed("sym_debug_id_lookup_error", str(exc))
        symcache = obj.make_symcache()
        companion_ok = companion is not None and _build_companion(companion, data)
    except exceptions.SymbolicError as exc:
        return failed("sym_malformed", f"{type(exc).__name__}: {exc}")
    finally:
        del data
    with open(out_path, "wb") as out:
        symcache.dump_into(out)
        write_trailer(out, name)
        size = out.tell()
    return Parsed(
        True,
        time.perf_counter() - started,
        module_filename=name,
        size=size,
        companion_ok=companion_ok,
    )


def _build_companion(companion: Companion, data: bytes) -> bool:
    """The symcache does not depend on it: a companion that fails is only logged."""
    build, out = companion
    try:
        build(data, out)
        return True
    except Exception:
        logger.exception("building %s from a sym file failed", getattr(build, "__name__", build))
        return False


def _die_with_parent(parent: int) -> None:
    """Pool processes end when the server process does, even if it was killed: left behind,
    they would wait for work forever, holding its stdout and their memory."""
    try:
        import ctypes
        import signal

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux
        pass
    if os.getppid() != parent:  # it died while this process was starting
        os._exit(0)


def _warm_up() -> int:
    import symbolic  # noqa: F401

    import symbolon.symbolication.table  # noqa: F401

    return os.getpid()


def physical_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 4 * 1024**3


class ParsePool:
    """A process pool whose admissions are bounded by an estimate of the memory each job needs."""

    def __init__(self, workers: int, memory_budget: int):
        self.workers = max(1, workers)
        self.memory_budget = memory_budget
        self._executor: ProcessPoolExecutor | None = None
        self._reserved = 0
        self._running = 0
        self._changed: asyncio.Condition | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            self._executor = ProcessPoolExecutor(
                max_workers=self.workers,
                # Not fork: the server has threads and an event loop that children must not copy.
                mp_context=multiprocessing.get_context("spawn"),
                max_tasks_per_child=TASKS_PER_PROCESS,
                initializer=_die_with_parent,
                initargs=(os.getpid(),),
            )
        return self._executor

    def start(self) -> None:
        """Start the processes now, so that the first parse does not pay for their start."""
        pool = self._pool()
        for _ in range(self.workers):
            pool.submit(_warm_up)

    @staticmethod
    def estimate(sym_size: int) -> int:
        return MEMORY_BASE + MEMORY_PER_SYM_BYTE * sym_size

    async def build(
        self,
        sym_path: Path,
        sym_size: int,
        debug_filename: str,
        debug_id: str,
        out: Path,
        compressed: bool = False,
        companion: Companion | None = None,
    ) -> Parsed:
        died = Parsed(False, 0.0, reason="sym_malformed", error="parser process died twice")
        return await self.run(
            self.estimate(sym_size),
            died,
            build_entry,
            str(sym_path),
            debug_filename,
            debug_id,
            str(out),
            compressed,
            companion,
        )

    async def run(self, need: int, died: T, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a pool process once ``need`` bytes fit the budget; ``died`` when its
        process died twice."""
        loop = asyncio.get_running_loop()
        if self._changed is None or self._loop is not loop:
            self._changed, self._loop = asyncio.Condition(), loop
        async with self._changed:
            await self._changed.wait_for(
                lambda: self._running == 0 or self._reserved + need <= self.memory_budget
            )
            self._reserved += need
            self._running += 1
        try:
            # A process died (out of memory, killed), which fails every job of its pool: this
            # one may only have been beside the culprit, so it gets one more go on a new pool.
            for _ in range(2):
                pool = self._pool()
                try:
                    return await loop.run_in_executor(pool, fn, *args)
                except BrokenProcessPool:
                    # Only this broken pool is dropped: a job may already run on its successor.
                    self._discard_pool(pool)
            return died
        finally:
            async with self._changed:
                self._reserved -= need
                self._running -= 1
                self._changed.notify_all()

    def _discard_pool(self, pool: ProcessPoolExecutor) -> None:
        pool.shutdown(wait=False, cancel_futures=True)
        if self._executor is pool:
            self._executor = None

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
