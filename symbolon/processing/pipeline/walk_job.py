"""What a walking process runs for one dump (see sandbox.py): the stack walk, with each module's
CFI index asked of the parent and read from the disk cache, rendered as JSON-ready data."""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from symbolon.processing.cfi import CfiFormatError, CfiIndex
from symbolon.processing.minidump import MinidumpError, Module
from symbolon.processing.walker import stackwalk

logger = logging.getLogger(__name__)

# Asks the parent for a module's CFI index file: (debug_file, debug_id) → its path, or None.
Ask = Callable[[tuple[str, str]], str | None]


class NotWalkable(Exception):
    """The dump cannot be walked; the message says why."""


# Indexes read by this walking process, kept for the next walks: reading and checking a large
# module's index is most of a warm crash's cost. Bounded by their files' bytes.
KEPT_INDEX_BYTES = 256 * 1024 * 1024
_kept: OrderedDict[tuple[str, int, int, int], tuple[CfiIndex, int]] = OrderedDict()
_kept_bytes = 0


def load_index(path: str) -> CfiIndex | None:
    global _kept_bytes
    try:
        st = os.stat(path)
        # The file as it is now: one replaced (rebuilt, evicted and made again) is read anew.
        ident = (path, st.st_ino, st.st_size, st.st_mtime_ns)
        kept = _kept.get(ident)
        if kept is not None:
            _kept.move_to_end(ident)
            return kept[0]
        index = CfiIndex.from_bytes(Path(path).read_bytes())
    except (OSError, CfiFormatError) as exc:
        # Evicted since the parent found it, or damaged: walked without it.
        logger.warning("cannot read the CFI index %s: %r", path, exc)
        return None
    if st.st_size <= KEPT_INDEX_BYTES:
        _kept[ident] = (index, st.st_size)
        _kept_bytes += st.st_size
        while _kept_bytes > KEPT_INDEX_BYTES:
            _, (_, size) = _kept.popitem(last=False)
            _kept_bytes -= size
    return index


def walk(dump: bytes, ask: Ask) -> dict[str, Any]:
    """The walk's JSON (``StackwalkResult.to_json``), plus ``module_index`` and
    ``lookup_offset`` in each frame."""

    def cfi_for(module: Module) -> CfiIndex | None:
        if not module.debug_file or not module.debug_id:
            return None
        path = ask((module.debug_file, module.debug_id))
        return load_index(path) if path else None

    try:
        result = stackwalk(dump, cfi_for)
    except MinidumpError as exc:
        raise NotWalkable(f"the minidump cannot be read: {exc}") from None
    rendered = result.to_json()
    for thread, shown in zip(result.threads, rendered["threads"], strict=True):
        for frame, shown_frame in zip(thread.frames, shown["frames"], strict=True):
            shown_frame["module_index"] = frame.module_index
            shown_frame["lookup_offset"] = frame.lookup_offset
    rendered["warnings"] = list(result.warnings)
    return rendered
