"""What every symbol store does (docs/embedded.md, "Symbol storage"): one location, S3 bucket or
directory, seen as keys and objects. The backends are in :mod:`symbolon.storage.stores`.

Keys here are object keys as stored (``v1/xul.pdb/<id>/xul.sym``, ``pending/<token>/v1/…``): a
location's prefix is already in them (``SymbolSource.object_key``). A write is whole or absent: no
reader ever sees half an object, and a write has reached durable storage when it returns.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

from symbolon.storage.sources import SymbolSource


class ObjectMissing(Exception):
    """No object under that key (deleted since it was looked up, or never there)."""


class StoreUnavailable(Exception):
    """The location did not answer (network, permissions, disk); the message names it."""


class KeyRefused(ValueError):
    """The location cannot hold an object under this key (a name too long for a directory, a
    key naming a directory); the message says why. Trying again changes nothing."""


@dataclass(frozen=True)
class ObjectInfo:
    """An object as listed or looked up. ``etag`` is the MD5 hex of the stored bytes for an
    object written in one piece, without quotes, or empty in a listing where the backend would
    have to read the object to know it (a file placed in a directory by hand); ``size`` counts
    stored (maybe gzipped) bytes."""

    key: str
    size: int
    etag: str
    last_modified: datetime
    content_type: str | None = None
    content_encoding: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass
class Opened:
    """An object being read: what it is, and its stored bytes chunk by chunk."""

    info: ObjectInfo
    chunks: AsyncIterator[bytes]


class SymbolStore(Protocol):
    """One location symbols are read from or written to."""

    source: SymbolSource

    async def head(self, key: str, *, patient: bool = False) -> ObjectInfo | None:
        """The object's description, or None if there is none (nor can be: see
        :meth:`accepts`). ``patient``: for a task that stores symbols, which may wait and try
        again longer than a request's lookup (backends that wait for nothing ignore it)."""
        ...

    async def exists(self, key: str) -> bool:
        """Whether the object is there, as cheaply as the backend can tell (download lookups).
        A key the location cannot hold (see :meth:`accepts`) is not there."""
        ...

    def accepts(self, key: str) -> str | None:
        """None if the location can hold an object under ``key``, else why not (the keys of
        one backend may be more than another can hold: S3's up to 1024 bytes, any names; a
        directory's names of a file system). Asked before a write that may be refused."""
        ...

    async def put_file(
        self,
        key: str,
        path: Path,
        *,
        content_type: str | None = None,
        content_encoding: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        """Store the local file ``path`` under ``key``, replacing what was there;
        :class:`KeyRefused` if the location cannot hold it there."""
        ...

    async def put_bytes(
        self, key: str, data: bytes, *, content_type: str | None = None
    ) -> None: ...

    def open(self, key: str, *, patient: bool = False) -> AbstractAsyncContextManager[Opened]:
        """Read an object; entering raises :class:`ObjectMissing` if it is not there (nor can
        be). ``patient`` as for :meth:`head`."""
        ...

    async def copy(self, source_key: str, key: str) -> None:
        """Copy an object within this location, with its content type, encoding and metadata."""
        ...

    async def delete(self, keys: list[str]) -> None:
        """Delete these objects; a key that is not there is not an error."""
        ...

    def list(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        """Every object whose key starts with ``prefix``, in key order, as the backend reads
        them (never all in memory first); an ``etag`` may be empty (see :class:`ObjectInfo`)."""
        ...

    async def download_url(self, key: str, expires: int) -> str:
        """Where a client GETs the object: a public or presigned URL, valid ``expires`` seconds.
        It may be a path on this server (``/storage/…``), which a download redirect sends as
        it is, relative."""
        ...

    async def upload_url(
        self,
        key: str,
        expires: int,
        *,
        content_type: str | None = None,
        content_encoding: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> tuple[str, dict[str, str]]:
        """A URL a client PUTs the object's bytes to directly, and the headers it must send."""
        ...

    async def problem(self, read_only_public: bool = False) -> str | None:
        """None if the location answers, else what ``/__heartbeat__`` says about it."""
        ...

    async def ensure(self) -> None:
        """Create the location if it is missing (embedded servers and directories only)."""
        ...

    async def close(self) -> None: ...
