"""What upload processing uses, declared here so that the uploads package needs no composition
root: the runtime provides all of it, and a test may provide less."""

from __future__ import annotations

from typing import Protocol

import asyncpg

from symbolon.conf import Settings
from symbolon.storage.lookup import SymbolLookup
from symbolon.storage.sources import StorageConfig
from symbolon.storage.stores import Stores
from symbolon.uploads.staging import Staging


class MissForgetter(Protocol):
    async def forget_misses(self, symbol_keys: list[str]) -> None: ...


class UploadServices(Protocol):
    @property
    def settings(self) -> Settings: ...
    @property
    def storage(self) -> StorageConfig: ...
    @property
    def db(self) -> asyncpg.Pool: ...
    @property
    def stores(self) -> Stores: ...
    @property
    def staging(self) -> Staging: ...
    @property
    def lookup(self) -> SymbolLookup: ...
    @property
    def symbolication(self) -> MissForgetter: ...
