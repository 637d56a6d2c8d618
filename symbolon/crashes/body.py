"""Receiving a report's body with bounded memory: gzip inflated as it arrives, both the wire size
and the inflated size capped, and anything past a few MB spooled to a file (docs/crashes.md).
The spool files of all the bodies a process receives share one budget of temporary disk.
"""

from __future__ import annotations

import mmap
import tempfile
import time
import zlib
from contextlib import suppress
from pathlib import Path
from typing import Any

from symbolon.crashes.payload import Malformed

SPOOL_AFTER_BYTES = 4 * 1024 * 1024
INFLATE_STEP = 1024 * 1024  # inflate in bounded steps, so a bomb is stopped at the cap
# A plain body of declared length up to SPOOL_AFTER_BYTES is received in one buffer of that length,
# made before its bytes come. The buffers of one process hold at most this much memory together,
# until their reports are stored; past it, bodies are kept piece by piece as they come.
PLACED_BUDGET = 64 * 1024 * 1024


class BodyTooLarge(Exception):
    """Past the wire limit, or (for gzip) past the inflated limit."""

    def __init__(self, inflated: bool):
        super().__init__("inflated body too large" if inflated else "body too large")
        self.inflated = inflated


class SpoolFull(Exception):
    """The temporary disk the bodies being received share is taken: the client tries later."""


class SpoolBudget:
    """Bytes of temporary disk that the spooled bodies of one process may hold together, so
    that a burst of large (or inflating) reports cannot fill the disk."""

    def __init__(self, total: int):
        self.total = total
        self.used = 0

    def take(self, held: int, wanted: int, inflated: bool) -> None:
        """Reserve ``wanted`` more bytes for a body already holding ``held``. Raises
        BodyTooLarge for a body that could never fit, SpoolFull while others hold too much."""
        if held + wanted > self.total:
            raise BodyTooLarge(inflated)
        if self.used + wanted > self.total:
            raise SpoolFull(f"{self.used} of {self.total} bytes of spool space in use")
        self.used += wanted

    def give_back(self, amount: int) -> None:
        self.used -= amount


class ByteBudget:
    """Bytes that requests being received may hold together in one process."""

    def __init__(self, total: int):
        self.total = total
        self.used = 0

    def take(self, amount: int) -> bool:
        if self.used + amount > self.total:
            return False
        self.used += amount
        return True

    def give_back(self, amount: int) -> None:
        self.used -= amount


class ReceivedBody:
    def __init__(
        self,
        gzipped: bool,
        max_inflated: int,
        spool_dir: Path | None = None,
        spool_after: int = SPOOL_AFTER_BYTES,
        budget: SpoolBudget | None = None,
    ):
        self.gzipped = gzipped
        self.budget = budget
        self.spooled = 0  # bytes of the budget this body holds
        self.max_inflated = max_inflated
        self.spool_dir = spool_dir
        self.spool_after = spool_after
        self.size = 0  # bytes kept (inflated when gzipped)
        self._chunks: list[bytes] = []  # joined once at the end: cheaper than growing a buffer
        self._placed: bytearray | None = None  # the body's buffer, when made beforehand
        self._placed_budget: ByteBudget | None = None
        self._file: Any = None
        self._map: mmap.mmap | None = None
        self._inflater = zlib.decompressobj(16 + zlib.MAX_WBITS) if gzipped else None
        self.inflate_seconds = 0.0

    def place(self, length: int, budget: ByteBudget) -> memoryview | None:
        """A buffer of ``length`` bytes for a plain body of that declared length, for the
        connection to read it into; None when the body is kept as it comes (too large for one
        buffer, gzipped, or the budget taken)."""
        if self._inflater is not None or not 0 < length <= self.spool_after:
            return None
        if not budget.take(length):
            return None
        self._placed, self._placed_budget = bytearray(length), budget
        return memoryview(self._placed)

    def feed(self, chunk: bytes | memoryview) -> None:
        """Add bytes as received; raises Malformed("bad_gzip") or BodyTooLarge."""
        inflater = self._inflater
        if inflater is None:
            placed = self._placed
            if placed is not None and self.size + len(chunk) <= len(placed):
                # Read into the buffer by the connection already, or else copied there.
                if not (isinstance(chunk, memoryview) and chunk.obj is placed):
                    placed[self.size : self.size + len(chunk)] = chunk
                self.size += len(chunk)
                return
            self._unplace()
            self._keep(bytes(chunk))
            return
        data: bytes | memoryview = chunk
        started = time.perf_counter()
        try:
            while data and not inflater.eof:  # bytes after the first gzip member are ignored
                try:
                    out = inflater.decompress(data, INFLATE_STEP)
                except zlib.error:
                    raise Malformed("bad_gzip") from None
                self._keep(out)
                data = inflater.unconsumed_tail
        finally:
            self.inflate_seconds += time.perf_counter() - started

    def _keep(self, data: bytes) -> None:
        self.size += len(data)
        if self.gzipped and self.size > self.max_inflated:
            raise BodyTooLarge(inflated=True)
        if self._file is not None:
            self._reserve(len(data))
            self._file.write(data)
            return
        self._chunks.append(data)
        if self.size > self.spool_after:
            self._reserve(self.size)
            # Closed in close(): the spool lives as long as the request.
            self._file = tempfile.TemporaryFile(prefix="crash-", dir=self.spool_dir)  # noqa: SIM115
            self._file.writelines(self._chunks)
            self._chunks = []

    def _reserve(self, amount: int) -> None:
        if self.budget is not None:
            self.budget.take(self.spooled, amount, self.gzipped)
            self.spooled += amount

    def _unplace(self) -> None:
        """Keep what the buffer holds as a piece (more came than declared): the rest as usual."""
        if self._placed is not None:
            if self.size:
                self._chunks.append(bytes(memoryview(self._placed)[: self.size]))
            self._release_placed()

    def _release_placed(self) -> None:
        if self._placed is not None and self._placed_budget is not None:
            self._placed_budget.give_back(len(self._placed))
        self._placed = self._placed_budget = None

    def finish(self) -> Any:
        """The whole (inflated) body: bytes-like, with ``find``."""
        if self._inflater is not None and not self._inflater.eof:
            raise Malformed("bad_gzip")  # truncated, or not gzip at all
        if self._placed is not None:
            if self.size == len(self._placed):
                return self._placed
            return bytes(memoryview(self._placed)[: self.size])
        if self._file is None:
            body = b"".join(self._chunks)
            self._chunks = [body]
            return body
        self._file.flush()
        self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        return self._map

    def close(self) -> None:
        """Release the spool; views into the body must be released first."""
        self._chunks = []
        self._release_placed()
        if self._map is not None:
            with suppress(BufferError):  # a view is still alive: unmapped when collected
                self._map.close()
            self._map = None
        if self._file is not None:
            self._file.close()
            self._file = None
        if self.budget is not None and self.spooled:
            self.budget.give_back(self.spooled)
        self.spooled = 0
