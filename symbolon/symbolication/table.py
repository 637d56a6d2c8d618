"""Open symcaches and the fast path for looking up many addresses at once.

A cache entry is the symcache exactly as ``symbolic`` wrote it, followed by a small trailer with
what the symcache cannot hold (the module filename). The symcache itself is a sorted table of
range starts, one source location per range, each pointing at the location it was inlined into:
for the format version ``symbolic`` writes today (9) that table is read straight from the
memory-mapped file and searched with numpy for all addresses of a request in one call, with
results identical to ``SymCache.lookup``. Names are decoded once per function; file paths, which
``symbolic`` builds by joining and cleaning several strings, are taken from one binding lookup per
file. Any other format version falls back to the binding, one call per address.
"""

from __future__ import annotations

import json
import logging
import mmap
import re
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from symbolic.exceptions import SymbolicError
from symbolic.symcache import SymCache

from symbolon.symbolication.demangle import demangle

logger = logging.getLogger(__name__)

TRAILER_MAGIC = b"SYMBOLON"
TRAILER = struct.Struct("<I8s")  # length of the JSON metadata, magic
U32_MAX = 0xFFFFFFFF
NO_LOCATION = (U32_MAX, U32_MAX, U32_MAX, U32_MAX)
MAX_INLINE_DEPTH = 256
MEMO_LIMIT = 500_000  # resolved ranges kept per module before its memo starts over
FAST_VERSION = 9

Inline = tuple[str, str | None, int]  # (function, file, line) of an inlined call


class Symbol:
    """What covers an address: the outer function's name and entry address, its file and line,
    and the inlined calls (innermost first).

    One object serves every address of a range for as long as the module is open, so ``shaped``
    lets callers keep what they derive from it (an encoded form) instead of redoing it per address.
    """

    __slots__ = ("entry_pc", "inlines", "line", "name", "path", "shaped")

    def __init__(
        self, name: str, entry_pc: int, path: str | None, line: int, inlines: tuple[Inline, ...]
    ):
        self.name = name
        self.entry_pc = entry_pc
        self.path = path
        self.line = line
        self.inlines = inlines
        self.shaped: Any = None

    def as_tuple(self) -> tuple[str, int, str | None, int, tuple[Inline, ...]]:
        return (self.name, self.entry_pc, self.path, self.line, self.inlines)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Symbol) and self.as_tuple() == other.as_tuple()

    def __hash__(self) -> int:
        return hash(self.as_tuple())

    def __repr__(self) -> str:
        return f"Symbol{self.as_tuple()!r}"


# A lookup's answer: the symbol and the offset of the address from the function's start.
Hit = tuple[Symbol, int]


class EntryError(Exception):
    """The file is not a cache entry this version can read: treat it as a miss."""


def write_trailer(
    out: BinaryIO, module_filename: str, symbol_file: str = "", mangled: bool = False
) -> None:
    """``symbol_file``: the name of the file the symcache was made from (``xul.sym``,
    ``libfoo.so.debug``), for the Debug block; ``mangled``: its names are linkage names (a
    native file's), demangled when read."""
    fields: dict[str, Any] = {"module": module_filename}
    if symbol_file:
        fields["file"] = symbol_file
    if mangled:
        fields["mangled"] = True
    meta = json.dumps(fields).encode()
    out.write(meta)
    out.write(TRAILER.pack(len(meta), TRAILER_MAGIC))


def read_trailer(buf: Any) -> tuple[int, dict[str, Any]]:
    """(length of the symcache, metadata) of an entry's bytes."""
    if len(buf) < TRAILER.size:
        raise EntryError("too short")
    meta_len, magic = TRAILER.unpack_from(buf, len(buf) - TRAILER.size)
    symcache_len = len(buf) - TRAILER.size - meta_len
    if magic != TRAILER_MAGIC or symcache_len < 8:
        raise EntryError("no trailer")
    try:
        meta = json.loads(bytes(buf[symcache_len : symcache_len + meta_len]))
    except ValueError as exc:
        raise EntryError("bad trailer") from exc
    if not isinstance(meta, dict) or not isinstance(meta.get("module"), str):
        raise EntryError("bad trailer")
    return symcache_len, meta


def _align8(offset: int) -> int:
    return (offset + 7) & ~7


class SymbolTable:
    """One module's symcache, open for lookups; cheap to keep (the bytes are memory-mapped)."""

    def __init__(self, path: Path | str):
        path = str(path)
        with open(path, "rb") as f:
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self.size = len(self._map)
        symcache_len, meta = read_trailer(self._map)
        self.module_filename: str = meta["module"]
        file = meta.get("file")
        # Entries written before the file was recorded say nothing.
        self.symbol_file: str = file if isinstance(file, str) else ""
        self.mangled = meta.get("mangled") is True
        try:
            # Maps the same file again (the trailer after the symcache is ignored by symbolic).
            self._symcache = SymCache.open(path)
        except SymbolicError as exc:
            raise EntryError(f"symbolic cannot load it: {exc}") from exc
        self.version: int = self._symcache.version
        self._functions: dict[int, tuple[str, int]] = {}
        self._files: dict[int, str | None] = {}
        self._memo: dict[int, Symbol | None] = {}
        self.fast = self.version == FAST_VERSION and self._map_tables(symcache_len)

    def _map_tables(self, symcache_len: int) -> bool:
        buf = self._map
        magic, version = struct.unpack_from("<4sI", buf, 0)
        if magic != b"SYMC" or version != FAST_VERSION:
            return False
        files, functions, locations, ranges, string_bytes = struct.unpack_from("<5I", buf, 44)
        offset = _align8(80) + files * 24
        functions_at = _align8(offset)
        locations_at = _align8(functions_at + functions * 16)
        ranges_at = _align8(locations_at + locations * 16)
        strings_at = _align8(ranges_at + ranges * 4)
        if strings_at + string_bytes > symcache_len or ranges > locations:
            logger.warning("symcache tables do not add up; using symbolic's lookups")
            return False
        self._ranges = np.frombuffer(buf, dtype="<u4", count=ranges, offset=ranges_at)
        # The binary search below equals symbolic's only over strictly increasing starts.
        if ranges > 1 and not bool(np.all(self._ranges[1:] > self._ranges[:-1])):
            return False
        self._locations = np.frombuffer(buf, dtype="<u4", count=locations * 4, offset=locations_at)
        self._function_rows = np.frombuffer(
            buf, dtype="<u4", count=functions * 4, offset=functions_at
        )
        self._strings = memoryview(buf)[strings_at : strings_at + string_bytes]
        self._num_locations = locations
        self._num_functions = functions
        self._num_files = files
        self._first_location = locations - ranges
        return True

    # -- lookups ---------------------------------------------------------------------------------

    def lookup_many(self, addresses: Sequence[int]) -> list[Hit | None]:
        """Resolve each address (all >= 0); addresses symbolic cannot take find nothing."""
        if not self.fast:
            return [self._lookup_binding(a) for a in addresses]
        if not addresses:
            return []
        # Same dtype as the table: numpy would otherwise convert the whole table on each call.
        # Addresses past 32 bits find nothing (checked below), whatever row they get here.
        wanted = np.fromiter(
            (a if a <= U32_MAX else U32_MAX for a in addresses),
            dtype=self._ranges.dtype,
            count=len(addresses),
        )
        rows = (np.searchsorted(self._ranges, wanted, side="right") - 1).tolist()
        try:
            return self._resolve_rows(addresses, rows)
        except _Disagreement:
            return [self._lookup_binding(a) for a in addresses]

    def function_ranges(self) -> list[tuple[int, int]]:
        """(start, size) of each run of ranges in one outer function: what the symcache knows
        is code. Empty for formats read through the binding."""
        if not self.fast or not len(self._ranges):
            return []
        out: list[tuple[int, int]] = []
        current: tuple[int, int] | None = None  # (start, outer function)
        starts = self._ranges.tolist()
        for row, start in enumerate(starts):
            outer = self._outer_function(row)
            if current is not None and outer != current[1]:
                out.append((current[0], start - current[0]))
                current = None
            if current is None and outer is not None:
                current = (start, outer)
        return out  # a run open at the end has no known end: left out

    def _outer_function(self, row: int) -> int | None:
        index = self._first_location + row
        locations = self._locations
        outer: int | None = None
        for _ in range(MAX_INLINE_DEPTH):
            if index == U32_MAX or index >= self._num_locations:
                break
            base = index * 4
            function_idx, parent = int(locations[base + 2]), int(locations[base + 3])
            if function_idx == U32_MAX:
                break
            outer = function_idx
            index = parent
        return outer

    def _resolve_rows(self, addresses: Sequence[int], rows: list[int]) -> list[Hit | None]:
        memo = self._memo
        if len(memo) > MEMO_LIMIT:  # a module in use for long: start over rather than grow
            memo.clear()
        resolve = self._resolve
        out: list[Hit | None] = []
        append = out.append
        for address, row in zip(addresses, rows, strict=True):
            if row < 0 or address > U32_MAX:
                append(None)
                continue
            try:
                found = memo[row]
            except KeyError:
                found = memo[row] = resolve(row)
            append(None if found is None else (found, address - found.entry_pc))
        return out

    def _resolve(self, row: int) -> Symbol | None:
        """The source locations of one range, as (name, entry pc, file, line, inlines)."""
        index = self._first_location + row
        locations = self._locations
        chain: list[tuple[int, int, int]] = []
        while index != U32_MAX and index < self._num_locations and len(chain) < MAX_INLINE_DEPTH:
            base = index * 4
            file_idx, line, function_idx, parent = locations[base : base + 4].tolist()
            if not chain and (file_idx, line, function_idx, parent) == NO_LOCATION:
                return None
            chain.append((file_idx, line, function_idx))
            index = parent
        if not chain:
            return None
        if any(f < self._num_files and f not in self._files for f, _, _ in chain):
            self._learn_files(row, chain)
        names = [self._function(function_idx) for _, _, function_idx in chain]
        paths = [self._files.get(file_idx) for file_idx, _, _ in chain]
        inlines = tuple((names[i][0], paths[i], chain[i][1]) for i in range(len(chain) - 1))
        name, entry_pc = names[-1]
        return Symbol(name, entry_pc, paths[-1], chain[-1][1], inlines)

    def _learn_files(self, row: int, chain: list[tuple[int, int, int]]) -> None:
        """File paths from the binding: symbolic joins and cleans them, we copy its answer."""
        start = int(self._ranges[row])
        answer = self._symcache.lookup(start)
        if len(answer) != len(chain):
            logger.error("symcache table and symbolic disagree at %#x; using symbolic", start)
            self.fast = False
            raise _Disagreement
        for (file_idx, _, _), location in zip(chain, answer, strict=True):
            if file_idx < self._num_files:
                self._files[file_idx] = location.full_path

    def _function(self, index: int) -> tuple[str, int]:
        known = self._functions.get(index)
        if known is not None:
            return known
        if index >= self._num_functions:
            return ("?", U32_MAX)
        base = index * 4
        name_offset, _, entry_pc, _ = self._function_rows[base : base + 4].tolist()
        name = self._string(name_offset) or "?"
        known = (demangle_outer(name) if self.mangled else name, entry_pc)
        self._functions[index] = known
        return known

    def _string(self, offset: int) -> str | None:
        """A LEB128-length-prefixed UTF-8 string of the string table."""
        strings = self._strings
        length = shift = 0
        while True:
            if offset >= len(strings):
                return None
            byte = strings[offset]
            offset += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        if offset + length > len(strings):
            return None
        try:
            return bytes(strings[offset : offset + length]).decode("utf-8")
        except UnicodeDecodeError:
            return None

    def _lookup_binding(self, address: int) -> Hit | None:
        if address >= 1 << 64:
            return None
        locations = self._symcache.lookup(address)
        if not locations:
            return None
        name = demangle_outer if self.mangled else str
        outer = locations[-1]
        inlines = tuple((name(loc.symbol), loc.full_path, loc.line) for loc in locations[:-1])
        symbol = Symbol(name(outer.symbol), outer.sym_addr, outer.full_path, outer.line, inlines)
        return (symbol, address - outer.sym_addr)


# Symbols GCC adds for parts of a function, not clones of it: they take the function's name.
PART_SUFFIX = re.compile(r"\.(cold|localalias)(\.\d+)?$")


def demangle_outer(name: str) -> str:
    """A native file's function name, demangled. symbolic names a function after the symbol at
    its lowest address: GCC's hot/cold splitting puts a ``.cold`` part below the function's
    entry, and ``-fno-semantic-interposition`` builds give it a ``.localalias``. The suffix goes,
    so every part keeps the function's own name."""
    return demangle(PART_SUFFIX.sub("", name))


class _Disagreement(Exception):
    pass
