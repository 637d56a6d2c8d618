"""Rules about symbol keys ``<debug_file>/<debug_id>/<symbol_file>`` (docs/download.md)."""

from __future__ import annotations

import re
from collections.abc import Iterable

NULL_DEBUG_ID = "0" * 33
# Control characters, U+0080-U+00FF and characters that never occur in real symbol names.
# The tilde is allowed: Debian package names contain it (libfoo-1.2-1~bpo12.so).
INVALID_CHARACTERS = re.compile(r"[\x00-\x1f\x80-\xff\\^`<>{}\[\]#%\"'|]")
IGNORED_FILES = frozenset({"file.ptr"})  # Microsoft debuggers always probe for it
NATIVE_DEBUG_SUFFIX = ".debug"  # a split ELF or Mach-O debug file beside its binary's name


def make_key(debug_file: str, debug_id: str, symbol_file: str) -> str:
    """The logical key; debug ids are always stored and looked up upper-cased."""
    return f"{debug_file}/{debug_id.upper()}/{symbol_file}"


def key_spellings(debug_file: str, debug_id: str, symbol_file: str) -> list[str]:
    """The keys a file may be stored under, in the order to look: the upper-cased id, then the
    lower-cased one, which uploads that kept the archive's spelling left in older buckets."""
    keys = [make_key(debug_file, debug_id, symbol_file)]
    if debug_id.lower() != debug_id.upper():
        keys.append(f"{debug_file}/{debug_id.lower()}/{symbol_file}")
    return keys


def is_native_file(debug_file: str, symbol_file: str) -> bool:
    """Whether the request names a native debug file or binary rather than a derived one: the
    file is the debug file itself (``foo.pdb/<ID>/foo.pdb``, ``foo.dll/<CODE ID>/foo.dll``,
    ``libfoo.so/<ID>/libfoo.so``) or its split debug info (``libfoo.so/<ID>/libfoo.so.debug``).
    Such names are looked up whatever their ending."""
    return symbol_file in (debug_file, debug_file + NATIVE_DEBUG_SUFFIX)


def is_ignorable(
    debug_file: str, debug_id: str, symbol_file: str, allowed_endings: Iterable[str]
) -> bool:
    """Requests known never to find anything: answered 404 without touching storage."""
    if symbol_file in IGNORED_FILES or debug_id == NULL_DEBUG_ID:
        return True
    if is_native_file(debug_file, symbol_file):
        return False
    return not symbol_file.endswith(tuple(allowed_endings))


def has_invalid_characters(*names: str) -> bool:
    return any(INVALID_CHARACTERS.search(name) for name in names)
