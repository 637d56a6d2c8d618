"""Parsing symbol files into symcache entries, in a pool of processes bounded by memory.

A symbol file is a Breakpad ``.sym`` (text starting ``MODULE``) or a native file (ELF, Mach-O,
PDB, PE: anything else), told apart by its content. A native file is never read into memory: a
compressed one is inflated to a file beside it, and symbolic maps it.

Parsing a large sym file takes seconds of CPU and several times the file's size in memory, so it
never runs on the event loop, and the pool admits a job only while the memory it is expected to
need fits the budget (one job always runs, however large).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import re
import time
from collections.abc import Callable, Iterator
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


SYM_MAGIC = b"MODULE "
CFI_INIT = re.compile(rb"^STACK CFI INIT ([0-9a-fA-F]+) ([0-9a-fA-F]+)", re.MULTILINE)


def is_native(head: bytes) -> bool:
    """Whether a symbol file's first bytes are a native file's rather than a ``.sym``'s."""
    return not head.startswith(SYM_MAGIC)


def build_entry(
    sym_path: str,
    debug_filename: str,
    debug_id: str,
    out_path: str,
    compressed: bool = False,
    companion: Companion | None = None,
    symbol_file: str = "",
) -> Parsed:
    """In a pool process: parse the symbol file (inflated first if ``compressed``) and write
    the cache entry to ``out_path``, then the companion's file (what it reads is Breakpad text:
    the ``.sym`` itself, or the native file's unwind information as ``STACK CFI`` records).
    ``symbol_file`` (the name the file was found under) is kept in the entry."""
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
    try:
        native = is_native(read_head(sym_path, compressed))
    except DecodeError as exc:
        return failed("sym_malformed", f"the compressed body does not inflate: {exc}")
    if native:
        return _build_native_entry(
            sym_path, debug_filename, normalized, out_path, compressed, companion, symbol_file
        )
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
        write_trailer(out, name, symbol_file)
        size = out.tell()
    return Parsed(
        True,
        time.perf_counter() - started,
        module_filename=name,
        size=size,
        companion_ok=companion_ok,
    )


def read_head(path: str, compressed: bool, size: int = 64) -> bytes:
    """The first bytes of a symbol file, inflated if need be."""
    from symbolon.symbolication.inflate import inflate_head

    with open(path, "rb") as f:
        if not compressed:
            return f.read(size)
        return inflate_head(f, size)


def _build_native_entry(
    path: str,
    debug_filename: str,
    normalized_id: str,
    out_path: str,
    compressed: bool,
    companion: Companion | None,
    symbol_file: str,
) -> Parsed:
    from symbolic import exceptions

    from symbolon.symbolication.inflate import DecodeError
    from symbolon.symbolication.table import write_trailer

    started = time.perf_counter()

    def failed(reason: str, error: str) -> Parsed:
        return Parsed(False, time.perf_counter() - started, reason=reason, error=error)

    try:
        with native_object(path, compressed, normalized_id) as obj:
            symcache = obj.make_symcache()
            with open(out_path, "wb") as out:
                symcache.dump_into(out)
                # A PDB does not name its PE: the module keeps its debug file name.
                write_trailer(out, debug_filename, symbol_file, mangled=True)
                size = out.tell()
            del symcache
            companion_ok = False
            if companion is not None and "unwind" in obj.features:
                try:
                    text = native_cfi_text(obj, out_path)
                except Exception:  # the symcache is still good
                    logger.exception("reading the unwind information of %s failed", symbol_file)
                else:
                    companion_ok = _build_companion(companion, text)
    except DecodeError as exc:
        return failed("sym_malformed", f"the compressed body does not inflate: {exc}")
    except LookupError as exc:
        return failed("sym_debug_id_lookup_error", str(exc))
    except exceptions.SymbolicError as exc:
        return failed("sym_malformed", f"{type(exc).__name__}: {exc}")
    return Parsed(
        True,
        time.perf_counter() - started,
        module_filename=debug_filename,
        size=size,
        companion_ok=companion_ok,
    )


@contextlib.contextmanager
def native_object(path: str, compressed: bool, normalized_id: str) -> Iterator[Any]:
    """The object of a native file with this debug id, mapped from disk (a compressed file is
    inflated to a file beside it first, removed afterwards). LookupError when it holds none."""
    from symbolic.debuginfo import Archive

    from symbolon.symbolication.inflate import inflate_file

    inflated = path + ".inflated"
    try:
        if compressed:
            inflate_file(path, inflated)
            path = inflated
        archive = Archive.open(path)
        yield archive.get_object(debug_id=normalized_id)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(inflated)


def native_cfi_text(obj: Any, symcache_entry: str) -> bytes:
    """What a ``.sym`` says for a stack walk, from a native object: its unwind information as
    ``STACK CFI``/``STACK WIN`` records (symbolic's CFI cache is that text), and ``FUNC``
    records of the functions the symcache entry covers, which tell the stack scanner what is
    code."""
    from symbolon.symbolication.table import SymbolTable

    cficache = obj.make_cficache()
    text = cficache.open_stream().read()
    if text and not text.endswith(b"\n"):
        text += b"\n"
    lines = [text]
    ranges = SymbolTable(symcache_entry).function_ranges()
    if not ranges:
        # An index with CFI but no functions would make the scanner refuse every address of
        # the module: the unwind ranges, each a function's code, stand in.
        ranges = [(int(m[1], 16), int(m[2], 16)) for m in CFI_INIT.finditer(text)]
    for start, size in ranges:
        lines.append(b"FUNC %x %x 0 f\n" % (start, size))
    return b"".join(lines)


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
        symbol_file: str = "",
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
            symbol_file,
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
