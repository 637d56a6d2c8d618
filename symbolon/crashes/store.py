"""What every crash store does, and the bytes they are given (docs/crashes.md, "Where crashes
are kept"). The stores themselves are in :mod:`symbolon.crashes.stores`.

A store writes ``dump_names``, then the dumps, then the raw crash last: once the raw crash
exists, the rest of the crash does too. Crash ids whose publishing failed are marked under
``symbolon/unpublished/`` beside the crashes, so that any node can publish them later, even
after a restart. Before a crash is saved its id is marked under ``symbolon/publishing/`` until
it is published: a process that dies in between leaves the mark, and the crash is published
from it later.

The processed crash (docs/processing.md) is kept beside the raw crash, as JSON; processing it
again replaces it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

UNPUBLISHED_PREFIX = "symbolon/unpublished/"
PUBLISHING_PREFIX = "symbolon/publishing/"

# A dump's bytes: a view into the received body, or plain bytes.
Dump = bytes | memoryview
# The raw crash's bytes, or a function that makes them: rendering hashes the dumps, so a store
# calls it off the event loop.
RawCrash = bytes | Callable[[], bytes]


class StorageError(Exception):
    """The crash store could not do what was asked; the message names the store."""


def raw_crash_json(raw_crash: Mapping[str, Any]) -> bytes:
    """The raw crash as stored: sorted keys, default separators, ASCII only (non-ASCII
    escaped), byte for byte as docs/crashes.md describes it."""
    return json.dumps(raw_crash, sort_keys=True).encode("ascii")


def dump_names_json(dumps: Mapping[str, Dump]) -> bytes:
    """The ``dump_names`` file: the dumps' names, sorted."""
    return json.dumps(sorted(dumps)).encode("ascii")


class CrashStorage(Protocol):
    """A crash store; ``description`` names it in logs and errors. Failures raise
    :class:`StorageError`."""

    description: str

    async def save(self, crash_id: str, raw_crash: RawCrash, dumps: Mapping[str, Dump]) -> None: ...
    async def discard(self, crash_id: str, dump_names: Iterable[str]) -> None: ...
    async def load_raw_crash(self, crash_id: str) -> bytes | None: ...
    async def load_dump_names(self, crash_id: str) -> list[str]: ...
    async def load_dump(self, crash_id: str, name: str) -> bytes | None: ...
    async def list_crash_ids(self, date: str) -> list[str]: ...
    async def save_processed(self, crash_id: str, processed_crash: bytes) -> None:
        """Write (or replace) the processed crash: JSON bytes, whole or not at all for readers."""
        ...

    async def load_processed(self, crash_id: str) -> bytes | None: ...
    async def mark_unpublished(self, crash_id: str) -> None: ...
    async def unpublished(self, limit: int = 1000) -> list[str]: ...
    async def clear_unpublished(self, crash_id: str) -> None: ...
    async def mark_publishing(self, crash_id: str) -> None: ...
    async def publishing(self, older_than: float, limit: int = 1000) -> list[str]:
        """The ids marked publishing at least ``older_than`` seconds ago."""
        ...

    async def clear_publishing(self, crash_id: str, unsaved_before: float | None = None) -> None:
        """Remove the mark; with ``unsaved_before`` (a time), the crash was never stored, and
        what its request left that nothing touched since then may go too (the mark stays if a
        request is at work on the id)."""
        ...

    async def check(self) -> str | None: ...
    async def start_up_check(self, create: bool = False) -> None: ...
    async def close(self) -> None: ...
