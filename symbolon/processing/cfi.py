"""Per-module unwind information from a Breakpad ``.sym`` file, and the rules' evaluator.

``CfiIndex.from_sym_lines(lines)`` reads a ``.sym`` in one pass and keeps only what a stack walk
needs, compactly: ``STACK CFI INIT`` ranges and ``STACK CFI`` deltas (DWARF call frame
information, as dump_syms writes it for ELF and Mach-O), ``STACK WIN`` records of types 4
(FrameData, with a program string) and 0 (FPO) for 32-bit Windows, ``FUNC`` ranges with their
parameter sizes and ``PUBLIC`` addresses (which tell the stack scanner whether an address is in a
function). Rule texts are stored once each, in one UTF-8 blob; addresses in typed arrays, looked up
by bisection. ``to_bytes``/``from_bytes`` round-trip an index for a cache.

Lookups answer as Breakpad's ``BasicSourceLineResolver`` does: the ``STACK CFI INIT`` record
whose range holds the address, then every delta from its start up to the address; the innermost
``STACK WIN`` range, FrameData before FPO. Rules are evaluated by ``evaluate``: postfix
expressions over registers, ``.cfa``, ``.ra`` and literals, with ``+ - * / % @`` and ``^`` (read
memory), in the address width of the architecture. A malformed rule or a failed read yields None,
never an exception.
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

__all__ = [
    "CfiFormatError",
    "CfiIndex",
    "CfiRules",
    "WinFrameInfo",
    "evaluate",
    "evaluate_program",
    "parse_rule_set",
]

Memory = Callable[[int], int | None]
"""Reads one word of the crashed process's memory at an address, or None."""


class CfiFormatError(ValueError):
    """Serialised index bytes that cannot be read back."""


# -- the postfix evaluator ------------------------------------------------------------------------

_BINARY = frozenset("+-*/%@")


def _literal(token: str) -> int | None:
    body = token[1:] if token.startswith("-") else token
    if not body.isdigit() or not body.isascii():
        return None
    value = int(body)
    return -value if token.startswith("-") else value


def evaluate(
    expression: str, registers: Mapping[str, int], memory: Memory, mask: int
) -> int | None:
    """The value of a postfix ``expression`` (a CFI rule), or None if it is malformed, names a
    register it is not given, divides by zero or reads memory the dump lacks."""
    stack: list[int | str] = []

    def pop() -> int | None:
        if not stack:
            return None
        item = stack.pop()
        if isinstance(item, int):
            return item
        return registers.get(item)

    for token in expression.split():
        if token in _BINARY and len(token) == 1:
            right, left = pop(), pop()
            if left is None or right is None:
                return None
            value = _apply(token, left, right, mask)
            if value is None:
                return None
            stack.append(value)
        elif token == "^":
            address = pop()
            if address is None:
                return None
            word = memory(address & mask)
            if word is None:
                return None
            stack.append(word)
        else:
            literal = _literal(token)
            stack.append(literal & mask if literal is not None else token)
        if len(stack) > 64:  # a rule deeper than any compiler writes
            return None
    if len(stack) != 1:
        return None
    return pop()


def _apply(operator: str, left: int, right: int, mask: int) -> int | None:
    if operator == "+":
        return (left + right) & mask
    if operator == "-":
        return (left - right) & mask
    if operator == "*":
        return (left * right) & mask
    if operator == "/":
        return left // right if right else None
    if operator == "%":
        return left % right if right else None
    # "@": align down to a power of two.
    return left & (mask ^ ((right - 1) & mask))


def evaluate_program(
    program: str, dictionary: dict[str, int], memory: Memory, mask: int
) -> tuple[bool, set[str]]:
    """Run a ``STACK WIN`` program string: postfix with ``=`` assigning to ``$`` registers in
    ``dictionary``. Returns whether it ran to the end with an empty stack, and the names it
    assigned (also those assigned before a failure, as Breakpad keeps them)."""
    assigned: set[str] = set()
    stack: list[int | str] = []

    def pop() -> int | None:
        if not stack:
            return None
        item = stack.pop()
        if isinstance(item, int):
            return item
        return dictionary.get(item)

    tokens: list[str] = []
    for token in program.split():
        # "=$eip" is "=" then "$eip" (Breakpad accepts the missing space).
        if len(token) > 1 and token[0] == "=":
            tokens += ["=", token[1:]]
        else:
            tokens.append(token)
    for token in tokens:
        if token in _BINARY and len(token) == 1:
            right, left = pop(), pop()
            if left is None or right is None:
                return False, assigned
            value = _apply(token, left, right, mask)
            if value is None:
                return False, assigned
            stack.append(value)
        elif token == "^":
            address = pop()
            word = memory(address & mask) if address is not None else None
            if word is None:
                return False, assigned
            stack.append(word)
        elif token == "=":
            value = pop()
            if value is None or not stack:
                return False, assigned
            name = stack.pop()
            if not isinstance(name, str) or not name.startswith("$"):
                return False, assigned
            dictionary[name] = value
            assigned.add(name)
        else:
            literal = _literal(token)
            stack.append(literal & mask if literal is not None else token)
        if len(stack) > 64:
            return False, assigned
    return not stack, assigned


# -- rule sets ----------------------------------------------------------------------------------


def parse_rule_set(text: str) -> tuple[list[tuple[str, str]], bool]:
    """``".cfa: $rsp 16 + .ra: .cfa -8 + ^"`` as ``[(".cfa", "$rsp 16 +"), (".ra", ...)]``, and
    whether all of it parsed (the rules before a malformed one still count, as in Breakpad)."""
    rules: list[tuple[str, str]] = []
    name = ""
    expression: list[str] = []
    for token in text.split():
        if token.endswith(":"):
            if len(token) < 2:
                return rules, False
            if name or expression:
                if not name or not expression:
                    return rules, False
                rules.append((name, " ".join(expression)))
            name, expression = token[:-1], []
        else:
            expression.append(token)
    if not name or not expression:
        return rules, False
    rules.append((name, " ".join(expression)))
    return rules, True


@dataclass
class CfiRules:
    """The rules in effect at one address: how to find the caller's registers."""

    cfa: str | None = None
    ra: str | None = None
    registers: dict[str, str] | None = None

    def apply(self, text: str) -> bool:
        rules, ok = parse_rule_set(text)
        for name, expression in rules:
            if name == ".cfa":
                self.cfa = expression
            elif name == ".ra":
                self.ra = expression
            else:
                if self.registers is None:
                    self.registers = {}
                self.registers[name] = expression
        return ok

    def caller_registers(
        self, callee: Mapping[str, int], memory: Memory, mask: int
    ) -> dict[str, int] | None:
        """The caller's registers these rules recover from the callee's (named as in the rules,
        with ``.cfa`` and ``.ra``), or None when the CFA or return address cannot be found.
        A register whose own rule fails is left out (Breakpad's CFIFrameInfo::FindCallerRegs)."""
        if not self.cfa or not self.ra:
            return None
        cfa = evaluate(self.cfa, callee, memory, mask)
        if cfa is None:
            return None
        working = dict(callee)
        working[".cfa"] = cfa
        ra = evaluate(self.ra, working, memory, mask)
        if ra is None:
            return None
        found: dict[str, int] = {}
        for name, expression in (self.registers or {}).items():
            value = evaluate(expression, working, memory, mask)
            if value is not None:
                found[name] = value
        found[".ra"] = ra
        found[".cfa"] = cfa
        return found


@dataclass(frozen=True)
class WinFrameInfo:
    """A ``STACK WIN`` record (types 0 and 4), or a FUNC's parameter size alone (``valid_all``
    false), as Breakpad's WindowsFrameInfo."""

    type: int
    prolog_size: int
    epilog_size: int
    parameter_size: int
    saved_register_size: int
    local_size: int
    max_stack_size: int
    allocates_base_pointer: bool
    program_string: str
    valid_all: bool = True


STACK_WIN_FPO = 0
STACK_WIN_FRAME_DATA = 4


# -- the index ----------------------------------------------------------------------------------

MAGIC = b"SYMBCFI1"
_HEADER = struct.Struct("<8sI")


_HEX = re.compile(rb"[0-9a-fA-F]{1,16}")


def _hex(token: bytes) -> int | None:
    """A .sym number: hex digits only, at most 64 bits."""
    return int(token, 16) if _HEX.fullmatch(token) else None


class _Builder:
    def __init__(self) -> None:
        self.texts: dict[str, int] = {}
        self.init: list[tuple[int, int, int, int]] = []  # start, size, order, text
        self.delta: dict[int, int] = {}  # address -> text (a later record replaces, as Breakpad)
        self.win: list[tuple[int, int, int, int, int]] = []  # type, start, size, order, text
        self.funcs: list[tuple[int, int, int, int]] = []  # start, size, order, parameter size
        self.publics: dict[int, int] = {}  # address -> parameter size (the first one stays)

    def text(self, value: str) -> int:
        found = self.texts.get(value)
        if found is None:
            found = self.texts[value] = len(self.texts)
        return found

    def line(self, raw: bytes, order: int) -> None:
        if raw.startswith(b"STACK "):
            parts = raw[6:].split(None, 1)
            if len(parts) < 2:
                return
            if parts[0] == b"CFI":
                self.cfi(parts[1], order)
            elif parts[0] == b"WIN":
                self.stack_win(parts[1], order)
        elif raw.startswith(b"FUNC "):
            fields = raw[5:].split(None, 4)
            if fields and fields[0] == b"m":
                fields = fields[1:]
            if len(fields) >= 3:
                start, size, parameters = (_hex(value) for value in fields[:3])
                if start is not None and size and parameters is not None:
                    self.funcs.append((start, size, order, parameters))
        elif raw.startswith(b"PUBLIC "):
            fields = raw[7:].split(None, 3)
            if fields and fields[0] == b"m":
                fields = fields[1:]
            if len(fields) >= 2:
                address, parameters = _hex(fields[0]), _hex(fields[1])
                # Address 0 is kept out, as Breakpad does (a few PDBs have such symbols).
                if address and parameters is not None:
                    self.publics.setdefault(address, parameters)

    def cfi(self, rest: bytes, order: int) -> None:
        fields = rest.split(None, 1)
        if not fields:
            return
        if fields[0] == b"INIT":
            parts = rest.split(None, 3)
            if len(parts) < 4:
                return
            start, size = _hex(parts[1]), _hex(parts[2])
            if start is None or not size:
                return
            self.init.append((start, size, order, self.text(parts[3].decode("utf-8", "replace"))))
        elif len(fields) == 2:
            address = _hex(fields[0])
            if address is not None:
                self.delta[address] = self.text(fields[1].decode("utf-8", "replace").strip())

    def stack_win(self, rest: bytes, order: int) -> None:
        parts = rest.split(None, 10)
        if len(parts) < 11:
            return
        numbers = [_hex(part) for part in parts[:10]]
        if any(number is None for number in numbers):
            return
        kind, start, size = numbers[0], numbers[1], numbers[2]
        assert kind is not None and start is not None and size is not None
        if kind not in (STACK_WIN_FPO, STACK_WIN_FRAME_DATA) or not size:
            return
        has_program = numbers[9]
        tail = parts[10].decode("utf-8", "replace").strip()
        # The record as text after type/start/size, parsed again on lookup.
        fields = [f"{number:x}" for number in numbers[3:9]]
        if has_program:
            record = " ".join([*fields, "1", tail])
        else:
            allocates = _hex(parts[10].split()[0]) if parts[10].split() else 0
            record = " ".join([*fields, "0", f"{allocates or 0:x}"])
        self.win.append((kind, start, size, order, self.text(record)))


def _exclusive(ranges: list[tuple[int, int, int, int]]) -> list[tuple[int, int, int]]:
    """Non-overlapping (start, size, value) from (start, size, order, value): of two records that
    overlap, the one earlier in the file stays (Breakpad's RangeMap refuses the later one)."""
    kept: list[tuple[int, int, int, int]] = []
    for start, size, order, value in sorted(ranges):
        if start + size > 1 << 64:
            continue
        if kept and start < kept[-1][0] + kept[-1][1]:
            if order < kept[-1][2]:
                kept[-1] = (start, size, order, value)
            continue
        kept.append((start, size, order, value))
    return [(start, size, value) for start, size, _order, value in kept]


def _nested(ranges: list[tuple[int, int, int, int]]) -> list[tuple[int, int, int]]:
    """Disjoint segments (start, end, value) from (start, size, order, value) ranges, each
    segment valued by the innermost range covering it (Breakpad's ContainedRangeMap). A range
    that crosses an enclosing range's end, or repeats one, is left out."""
    accepted: list[tuple[int, int, int]] = []
    open_ends: list[int] = []
    for start, negative_end, _order, value in sorted(
        (start, -(start + size), order, value) for start, size, order, value in ranges
    ):
        end = -negative_end
        if end > 1 << 64:
            continue
        while open_ends and open_ends[-1] <= start:
            open_ends.pop()
        if open_ends and end > open_ends[-1]:
            continue
        if accepted and accepted[-1][0] == start and accepted[-1][1] == end:
            continue
        open_ends.append(end)
        accepted.append((start, end, value))

    segments: list[tuple[int, int, int]] = []

    def emit(start: int, end: int, value: int) -> None:
        if start < end:
            if segments and segments[-1][1] == start and segments[-1][2] == value:
                segments[-1] = (segments[-1][0], end, value)
            else:
                segments.append((start, end, value))

    stack: list[tuple[int, int]] = []  # (end, value) of the ranges open at ``position``
    position = 0
    for start, end, value in accepted:
        while stack and stack[-1][0] <= start:
            closing_end, closing_value = stack.pop()
            emit(position, closing_end, closing_value)
            position = closing_end
        if stack:
            emit(position, start, stack[-1][1])
        position = start
        stack.append((end, value))
    while stack:
        closing_end, closing_value = stack.pop()
        emit(position, closing_end, closing_value)
        position = closing_end
    return segments


class CfiIndex:
    """Unwind information of one module, by module-relative address."""

    def __init__(
        self,
        texts: list[str],
        init_start: array,
        init_size: array,
        init_text: array,
        delta_address: array,
        delta_text: array,
        win: dict[int, tuple[array, array, array]],
        func_start: array,
        func_size: array,
        func_parameters: array,
        public_address: array,
        public_parameters: array,
    ):
        self._texts = texts
        self._init_start = init_start
        self._init_size = init_size
        self._init_text = init_text
        self._delta_address = delta_address
        self._delta_text = delta_text
        self._win = win
        self._func_start = func_start
        self._func_size = func_size
        self._func_parameters = func_parameters
        self._public_address = public_address
        self._public_parameters = public_parameters

    # -- building -----------------------------------------------------------------------------

    @classmethod
    def from_sym_lines(cls, lines: Iterable[str | bytes]) -> CfiIndex:
        """Read a ``.sym`` file's lines (text or bytes, as a file yields them) in one pass."""
        builder = _Builder()
        for order, line in enumerate(lines):
            raw = line if isinstance(line, bytes) else line.encode("utf-8", "replace")
            if raw[:1] in (b"S", b"F", b"P"):
                builder.line(raw.rstrip(b"\r\n"), order)
        texts = [""] * len(builder.texts)
        for value, number in builder.texts.items():
            texts[number] = value
        init = _exclusive(builder.init)
        deltas = sorted(builder.delta.items())
        win: dict[int, tuple[array, array, array]] = {}
        for kind in (STACK_WIN_FRAME_DATA, STACK_WIN_FPO):
            records = [(s, z, o, t) for k, s, z, o, t in builder.win if k == kind]
            if records:
                segments = _nested(records)
                win[kind] = (
                    array("Q", [s for s, _, _ in segments]),
                    array("Q", [e for _, e, _ in segments]),
                    array("I", [t for _, _, t in segments]),
                )
        funcs = _exclusive(builder.funcs)
        publics = sorted(builder.publics.items())
        return cls(
            texts,
            array("Q", [s for s, _, _ in init]),
            array("Q", [z for _, z, _ in init]),
            array("I", [t for _, _, t in init]),
            array("Q", [a for a, _ in deltas]),
            array("I", [t for _, t in deltas]),
            win,
            array("Q", [s for s, _, _ in funcs]),
            array("Q", [z for _, z, _ in funcs]),
            array("I", [p & 0xFFFFFFFF for _, _, p in funcs]),
            array("Q", [a for a, _ in publics]),
            array("I", [p & 0xFFFFFFFF for _, p in publics]),
        )

    @classmethod
    def from_sym_file(cls, path: str) -> CfiIndex:
        with open(path, "rb") as sym:
            return cls.from_sym_lines(sym)

    # -- lookups ------------------------------------------------------------------------------

    @property
    def has_cfi(self) -> bool:
        return bool(self._init_start)

    def find_cfi(self, address: int) -> CfiRules | None:
        """The CFI rules in effect at a module-relative ``address``, or None."""
        index = bisect_right(self._init_start, address) - 1
        if index < 0:
            return None
        start = self._init_start[index]
        if address - start >= self._init_size[index]:
            return None
        rules = CfiRules()
        if not rules.apply(self._texts[self._init_text[index]]):
            return None
        first = bisect_right(self._delta_address, start - 1) if start else 0
        last = bisect_right(self._delta_address, address)
        for position in range(first, last):
            rules.apply(self._texts[self._delta_text[position]])
        return rules

    def find_win(self, address: int) -> WinFrameInfo | None:
        """The ``STACK WIN`` record covering ``address`` (FrameData before FPO), else a FUNC's
        parameter size alone, else None (Breakpad's FindWindowsFrameInfo)."""
        for kind in (STACK_WIN_FRAME_DATA, STACK_WIN_FPO):
            table = self._win.get(kind)
            if table is None:
                continue
            starts, ends, texts = table
            index = bisect_right(starts, address) - 1
            if index >= 0 and address < ends[index]:
                return _parse_win(kind, self._texts[texts[index]])
        function = self._function_at(address)
        if function is not None:
            parameters = self._func_parameters[function]
            return WinFrameInfo(-1, 0, 0, parameters, 0, 0, 0, False, "", False)
        return None

    def _function_at(self, address: int) -> int | None:
        index = bisect_right(self._func_start, address) - 1
        if index >= 0 and address - self._func_start[index] < self._func_size[index]:
            return index
        return None

    def has_function(self, address: int) -> bool:
        """Whether symbols name a function at ``address``: a FUNC covers it, or a PUBLIC symbol at
        or below it lies after the nearest FUNC below it (Breakpad's LookupAddress)."""
        if self._function_at(address) is not None:
            return True
        public = bisect_right(self._public_address, address) - 1
        if public < 0:
            return False
        function = bisect_right(self._func_start, address) - 1
        return function < 0 or self._public_address[public] > self._func_start[function]

    # -- serialisation ------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        blob = "\n".join(self._texts).encode("utf-8")
        arrays = [
            self._init_start,
            self._init_size,
            self._init_text,
            self._delta_address,
            self._delta_text,
            self._func_start,
            self._func_size,
            self._func_parameters,
            self._public_address,
            self._public_parameters,
        ]
        for kind in (STACK_WIN_FRAME_DATA, STACK_WIN_FPO):
            empty = (array("Q"), array("Q"), array("I"))
            arrays.extend(self._win.get(kind, empty))
        parts = [struct.pack("<II", len(self._texts), len(blob)), blob]
        for values in arrays:
            data = _little(values)
            parts += [struct.pack("<cQ", values.typecode.encode(), len(values)), data]
        body = b"".join(parts)
        return _HEADER.pack(MAGIC, zlib.crc32(body)) + body

    @staticmethod
    def check_file(path: str | os.PathLike[str]) -> None:
        """CfiFormatError unless the file's header and checksum are those of an index (what
        ``from_bytes`` checks first), read in chunks."""
        with open(path, "rb") as f:
            header = f.read(_HEADER.size)
            if len(header) < _HEADER.size:
                raise CfiFormatError("too short for a CFI index")
            magic, checksum = _HEADER.unpack(header)
            if magic != MAGIC:
                raise CfiFormatError("not a CFI index (or another version of one)")
            crc = 0
            while chunk := f.read(1 << 20):
                crc = zlib.crc32(chunk, crc)
        if crc != checksum:
            raise CfiFormatError("the CFI index is damaged (checksum mismatch)")

    @classmethod
    def from_bytes(cls, data: bytes) -> CfiIndex:
        view = memoryview(data)
        if len(view) < _HEADER.size:
            raise CfiFormatError("too short for a CFI index")
        magic, checksum = _HEADER.unpack_from(view)
        if magic != MAGIC:
            raise CfiFormatError("not a CFI index (or another version of one)")
        body = view[_HEADER.size :]
        if zlib.crc32(body) != checksum:
            raise CfiFormatError("the CFI index is damaged (checksum mismatch)")
        try:
            count, blob_size = struct.unpack_from("<II", body)
            offset = 8
            blob = bytes(body[offset : offset + blob_size]).decode("utf-8")
            offset += blob_size
            texts = blob.split("\n") if count else []
            if len(texts) != count:
                raise CfiFormatError("the CFI index's rule table is inconsistent")
            arrays = []
            for _ in range(16):
                code, length = struct.unpack_from("<cQ", body, offset)
                offset += struct.calcsize("<cQ")
                if code not in (b"Q", b"I"):
                    raise CfiFormatError("the CFI index has an array of an unknown kind")
                values = array(code.decode())
                end = offset + length * values.itemsize
                if end > len(body):
                    raise CfiFormatError("the CFI index is truncated")
                values.frombytes(body[offset:end])
                if struct.pack("<H", 1) != struct.pack("=H", 1):
                    values.byteswap()
                offset = end
                arrays.append(values)
        except (struct.error, UnicodeDecodeError, ValueError) as exc:
            if isinstance(exc, CfiFormatError):
                raise
            raise CfiFormatError(f"the CFI index cannot be read: {exc}") from exc
        if offset != len(body):
            raise CfiFormatError("the CFI index has bytes past its end")
        for group in ((0, 1, 2), (3, 4), (5, 6, 7), (8, 9), (10, 11, 12), (13, 14, 15)):
            if len({len(arrays[member]) for member in group}) != 1:
                raise CfiFormatError("the CFI index's tables disagree in length")
        for text_index in (arrays[2], arrays[4], arrays[12], arrays[15]):
            if text_index and max(text_index) >= count:
                raise CfiFormatError("the CFI index refers past its rule table")
        win = {}
        if arrays[10]:
            win[STACK_WIN_FRAME_DATA] = (arrays[10], arrays[11], arrays[12])
        if arrays[13]:
            win[STACK_WIN_FPO] = (arrays[13], arrays[14], arrays[15])
        a = arrays
        return cls(texts, a[0], a[1], a[2], a[3], a[4], win, a[5], a[6], a[7], a[8], a[9])


def _little(values: array) -> bytes:
    if struct.pack("<H", 1) == struct.pack("=H", 1):
        return values.tobytes()
    swapped = array(values.typecode, values)
    swapped.byteswap()
    return swapped.tobytes()


def _parse_win(kind: int, record: str) -> WinFrameInfo | None:
    parts = record.split(None, 7)
    if len(parts) < 8:
        return None
    numbers = [int(part, 16) for part in parts[:7]]
    prolog, epilog, parameters, saved, local, max_stack, has_program = numbers
    if has_program:
        return WinFrameInfo(
            kind, prolog, epilog, parameters, saved, local, max_stack, False, parts[7]
        )
    return WinFrameInfo(
        kind, prolog, epilog, parameters, saved, local, max_stack, int(parts[7], 16) != 0, ""
    )
