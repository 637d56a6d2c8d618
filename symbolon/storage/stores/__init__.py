"""The symbol stores behind :class:`symbolon.storage.store.SymbolStore`, one per location: S3
buckets (:mod:`.s3`) and directories on this machine (:mod:`.directory`)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable
from pathlib import PurePath

from symbolon.conf import Settings
from symbolon.storage.s3 import S3Clients
from symbolon.storage.sources import StorageConfig, SymbolSource
from symbolon.storage.store import SymbolStore
from symbolon.storage.stores.directory import DirectoryStore
from symbolon.storage.stores.s3 import S3Store


class Stores:
    """Every location's store, made once: buckets kept by URL, directories by location id.

    The directories of ``sources`` (the configured locations) are the ones the file route
    serves, each with its configured access. A URL naming one of them with another ``access=``
    (an upload's destination recorded before the configuration changed) gets the configured
    store; a directory not configured gets a store of its own that the route never serves.
    """

    def __init__(
        self, settings: Settings, s3: S3Clients, sources: Iterable[SymbolSource] = ()
    ) -> None:
        self._settings = settings
        self._s3 = s3
        self._stores: dict[str, SymbolStore] = {}
        self._served: dict[str, DirectoryStore] = {}
        for source in sources:
            store = self.at(source)
            if isinstance(store, DirectoryStore):
                self._served.setdefault(source.location_id, store)

    def at(self, source: SymbolSource) -> SymbolStore:
        """The store of a location; ValueError for a kind of location no backend serves."""
        # A directory is one place whatever its URL's query says: the first store made decides.
        name = source.location_id if source.is_directory else source.url
        store = self._stores.get(name)
        if store is None:
            store = self._stores[name] = self._make(source)
        return store

    def _make(self, source: SymbolSource) -> SymbolStore:
        # The one place a location's kind chooses its backend.
        if source.is_directory:
            return DirectoryStore(
                source,
                self._settings.secret_key,
                # A direct upload's single file is never larger than a whole upload may unpack to.
                max_put_size=self._settings.upload_max_uncompressed_size,
            )
        if source.scheme in ("http", "https"):
            return S3Store(source, self._s3)
        raise ValueError(f"{source.url!r}: no symbol store serves {source.scheme!r} locations")

    def directory(self, location_id: str) -> DirectoryStore | None:
        """The configured directory location with this id (the file route's ``/storage/<id>/``)."""
        return self._served.get(location_id)

    async def problems(self, storage: StorageConfig) -> dict[str, str]:
        """Ask every configured location at once whether it answers; {url: problem} for those
        that do not. A public bucket only read from may refuse HeadBucket."""
        locations = storage.all_buckets()
        answers = await asyncio.gather(
            *(
                self.at(s).problem(read_only_public=s.public and not storage.writes_to(s))
                for s in locations
            )
        )
        return {s.url: p for s, p in zip(locations, answers, strict=True) if p}

    async def ensure(self, storage: StorageConfig) -> None:
        """Create the configured locations that are missing (the embedded server's only)."""
        for source in storage.all_buckets():
            await self.at(source).ensure()

    async def prepare_directories(self, storage: StorageConfig) -> None:
        """Ready the directories uploads write to and clear what writers killed mid-write left,
        at every start. A missing one is made only inside another configured directory (the
        derived try location, a subdirectory as a prefix in a bucket would be); any other is left
        for the start-up check to name, so a mistyped path is not quietly made anew."""
        directories = [s for s in storage.all_buckets() if s.is_directory]
        roots = {PurePath(s.bucket) for s in directories}
        for source in directories:
            path = PurePath(source.bucket)
            if not storage.writes_to(source):
                continue
            isdir = os.path.isdir
            inside = path.parent in roots and await asyncio.to_thread(isdir, path.parent)
            if inside or await asyncio.to_thread(isdir, path):
                await self.at(source).ensure()

    async def close(self) -> None:
        stores, self._stores, self._served = list(self._stores.values()), {}, {}
        for store in stores:
            await store.close()
