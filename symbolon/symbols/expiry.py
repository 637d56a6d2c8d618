"""Try symbols expire: builds from ad-hoc CI runs are not kept for long.

See docs/upload.md, "Try symbols expire".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

import asyncpg

from symbolon.metrics import metrics
from symbolon.storage.lookup import SymbolLookup
from symbolon.storage.sources import StorageConfig
from symbolon.storage.store import SymbolStore
from symbolon.storage.stores import Stores

logger = logging.getLogger(__name__)
# Old objects deleted (and forgotten by the lookup caches) together while the listing goes on.
BATCH = 1000


class ExpiryServices(Protocol):
    """What expiring try symbols uses; the runtime provides it."""

    @property
    def storage(self) -> StorageConfig: ...
    @property
    def stores(self) -> Stores: ...
    @property
    def db(self) -> asyncpg.Pool: ...
    @property
    def lookup(self) -> SymbolLookup: ...


@dataclass
class Expired:
    objects: int = 0
    uploads: int = 0
    files: int = 0


async def expire_try_symbols(rt: ExpiryServices, days: int, now: datetime | None = None) -> Expired:
    """Delete try objects, and try uploads with their file rows, older than ``days``."""
    cutoff = (now or datetime.now(UTC)) - timedelta(days=days)
    location = rt.storage.upload_try
    store = rt.stores.at(location)
    prefix = location.object_prefix + "/"
    result = Expired()
    batch: list[str] = []
    async for item in store.list(prefix):
        if item.last_modified < cutoff:
            batch.append(item.key)
        if len(batch) >= BATCH:
            result.objects += await _delete(rt, store, prefix, batch)
            batch = []
    if batch:
        result.objects += await _delete(rt, store, prefix, batch)
    async with rt.db.acquire() as conn, conn.transaction():
        old = "SELECT id FROM uploads WHERE try_symbols AND created_at < $1"
        result.files = int(
            (
                await conn.execute(f"DELETE FROM file_uploads WHERE upload_id IN ({old})", cutoff)
            ).split()[-1]
        )
        result.uploads = int(
            (
                await conn.execute(
                    "DELETE FROM uploads WHERE try_symbols AND created_at < $1", cutoff
                )
            ).split()[-1]
        )
    metrics.incr("try_symbols_expired", value=result.objects)
    logger.info(
        "expired try symbols older than %s: %d objects, %d uploads, %d file rows",
        cutoff.date(),
        result.objects,
        result.uploads,
        result.files,
    )
    return result


async def _delete(rt: ExpiryServices, store: SymbolStore, prefix: str, keys: list[str]) -> int:
    await store.delete(keys)
    await rt.lookup.invalidate([k[len(prefix) :] for k in keys])
    return len(keys)
