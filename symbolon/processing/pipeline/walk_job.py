"""What a walking process runs for one dump (see sandbox.py): the stack walk, with each module's
CFI index asked of the parent and read from the disk cache, rendered as JSON-ready data."""

from __future__ import annotations

import logging
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


def load_index(path: str) -> CfiIndex | None:
    try:
        return CfiIndex.from_bytes(Path(path).read_bytes())
    except (OSError, CfiFormatError) as exc:
        # Evicted since the parent found it, or damaged: walked without it.
        logger.warning("cannot read the CFI index %s: %r", path, exc)
        return None


def walk(dump: bytes, ask: Ask) -> dict[str, Any]:
    """The walk's JSON (``StackwalkResult.to_json``), plus ``module_index`` in each frame."""

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
    rendered["warnings"] = list(result.warnings)
    return rendered
