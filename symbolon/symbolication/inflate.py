"""Content encodings of downloaded sym files: gzip (how storage keeps them) and deflate.

Bodies are stored as received and inflated by the parse process, in memory, just before parsing:
writing 119 MB of inflated text to a temp file and reading it back cost as much as inflating.
ISA-L inflates three times faster than zlib (0.11 s instead of 0.33 s for that file); zlib is
the fallback where its wheels do not exist.
"""

from __future__ import annotations

import struct
import zlib
from types import ModuleType
from typing import BinaryIO

# Either module: both have zlib's interface (isal's stub calls its error an instance, not a class).
_inflating: ModuleType
try:
    from isal import isal_zlib as _inflating
except ImportError:
    _inflating = zlib

ENCODINGS = frozenset({"gzip", "x-gzip", "deflate"})
AUTO_HEADER = 32 + zlib.MAX_WBITS  # gzip or zlib header; "deflate" is zlib-wrapped in practice
ERRORS = (zlib.error, _inflating.error)
PROBE = 64 * 1024
CHUNK = 1024 * 1024


class DecodeError(Exception):
    """A body announced as compressed does not inflate."""


def compressed(content_encoding: str | None) -> bool:
    return (content_encoding or "").strip().lower() in ENCODINGS


def probe(head: bytes) -> None:
    """Fail early, while the next source can still be asked, on a body that lies about being
    compressed: its first bytes already do not inflate."""
    try:
        _inflating.decompressobj(AUTO_HEADER).decompress(head[:PROBE])
    except ERRORS as exc:
        raise DecodeError(str(exc)) from exc


def inflate(data: bytes) -> bytes:
    try:
        inflater = _inflating.decompressobj(AUTO_HEADER)
        out = inflater.decompress(data) + inflater.flush()
    except ERRORS as exc:
        raise DecodeError(str(exc)) from exc
    if not inflater.eof:
        raise DecodeError("truncated compressed body")
    return out


def inflate_head(f: BinaryIO, size: int) -> bytes:
    """The first ``size`` inflated bytes of a compressed file (fewer if it is shorter)."""
    inflater = _inflating.decompressobj(AUTO_HEADER)
    out = b""
    try:
        while len(out) < size:
            chunk = f.read(PROBE)
            if not chunk:
                break
            out += inflater.decompress(chunk, size - len(out))
            while len(out) < size and inflater.unconsumed_tail:
                out += inflater.decompress(inflater.unconsumed_tail, size - len(out))
    except ERRORS as exc:
        raise DecodeError(str(exc)) from exc
    return out[:size]


def inflate_file(source: str, dest: str) -> None:
    """Inflate a compressed file into another, a chunk at a time: native debug files are too
    large to hold inflated in memory."""
    inflater = _inflating.decompressobj(AUTO_HEADER)
    try:
        with open(source, "rb") as src, open(dest, "wb") as out:
            while chunk := src.read(CHUNK):
                # Bounded output per call: a chunk of zeros inflates a thousandfold.
                while chunk:
                    out.write(inflater.decompress(chunk, 16 * CHUNK))
                    chunk = inflater.unconsumed_tail
            out.write(inflater.flush())
    except ERRORS as exc:
        raise DecodeError(str(exc)) from exc
    if not inflater.eof:
        raise DecodeError("truncated compressed body")


def inflated_size_hint(tail: bytes, size: int) -> int:
    """The inflated size of a body, from a gzip trailer (modulo 4 GiB), for memory estimates."""
    if len(tail) == 4:
        hint = struct.unpack("<I", tail)[0]
        if hint >= size:
            return hint
    return size * 6
