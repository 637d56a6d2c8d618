"""Crash processing's core: minidump parsing and stack walking driven by Breakpad CFI.

Pure functions and dataclasses over bytes and text (no Tornado, database or runtime), so that they
run in a process pool. docs/processing.md describes the walk.
"""

from symbolon.processing.cfi import CfiFormatError, CfiIndex
from symbolon.processing.minidump import Minidump, MinidumpError

__all__ = ["CfiFormatError", "CfiIndex", "Minidump", "MinidumpError"]
