"""Crash processing's core: minidump parsing and stack walking driven by Breakpad CFI.

Pure functions and dataclasses over bytes and text (no Tornado, database or runtime), so that they
run in a process pool: ``stackwalk(dump_bytes, cfi_for)`` in walker.py, ``Minidump.parse`` in
minidump.py, ``CfiIndex`` in cfi.py. docs/processing.md describes the walk.
"""

from symbolon.processing.cfi import CfiFormatError, CfiIndex
from symbolon.processing.minidump import Minidump, MinidumpError
from symbolon.processing.walker import StackwalkResult, stackwalk

__all__ = [
    "CfiFormatError",
    "CfiIndex",
    "Minidump",
    "MinidumpError",
    "StackwalkResult",
    "stackwalk",
]
