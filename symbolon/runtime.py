"""The composition root: settings checked as a whole, and the per-process resources every
handler and actor needs, created once and closed once. Domain modules never import this one;
they declare what they use and receive it from here."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from symbolon.accounts.blocked import BlockedGuard, make_guard
from symbolon.accounts.oidc import OIDCClient
from symbolon.accounts.sessions import SessionStore
from symbolon.conf import Settings, SettingsError, read_settings
from symbolon.crashes.collector import Collector
from symbolon.crashes.publish import Publisher
from symbolon.crashes.stores import make_crash_storage
from symbolon.crashes.throttling.presets import load_throttler
from symbolon.db import migrate
from symbolon.processing.pipeline.processor import CrashProcessor
from symbolon.redis_cache import Cache, redis_client
from symbolon.storage.lookup import SymbolLookup
from symbolon.storage.s3 import S3Clients
from symbolon.storage.sources import StorageConfig, SymbolSource
from symbolon.storage.stores import Stores
from symbolon.symbolication.service import Symbolication
from symbolon.symbols.debuginfod import SectionGate
from symbolon.symbols.missing import MissingRecorder
from symbolon.uploads.staging import Staging, make_staging

logger = logging.getLogger(__name__)


def check_settings(settings: Settings) -> list[str]:
    """The problems only the domain modules can see: symbol locations and throttling rules."""
    problems: list[str] = []
    if settings.symbol_urls:
        try:
            StorageConfig.from_settings(settings)
        except SettingsError as exc:
            problems.extend(exc.problems)
    if settings.enable_crash_collector:
        try:
            load_throttler(
                settings.breakpad_throttler_rules,
                settings.breakpad_throttler_products,
                settings.breakpad_throttler_product_packagenames,
            )
        except (ValueError, OSError) as exc:
            problems.append(str(exc))  # names the setting itself
    return problems


def load_checked_settings(
    environ: Mapping[str, str] | None = None, dotenv_path: str | Path | None = ".env"
) -> Settings:
    """Settings from the environment, or SettingsError naming every problem at once."""
    settings, problems = read_settings(environ, dotenv_path)
    problems.extend(check_settings(settings))
    if problems:
        raise SettingsError(problems)
    return settings


def locations(storage: StorageConfig) -> list[SymbolSource]:
    """Every location symbols are read from or written to, each once (by URL). Symbolication
    reads the same ones; its upstream servers are plain HTTP, not locations."""
    candidates = [*storage.sources, storage.upload_default, storage.upload_try]
    candidates += [source for _, source in storage.upload_exceptions]
    return list({source.url: source for source in candidates}.values())


@dataclass
class Runtime:
    settings: Settings
    storage: StorageConfig
    db: asyncpg.Pool
    cache: Cache
    store: Cache
    s3: S3Clients
    # One store per symbol location; lookups, uploads, expiry and symbolication go through it.
    stores: Stores
    lookup: SymbolLookup
    missing: MissingRecorder
    staging: Staging
    # Accounts: browser sessions, OIDC sign-in, the blocked-user check (None when off).
    sessions: SessionStore
    oidc: OIDCClient
    blocked: BlockedGuard | None
    symbolication: Symbolication
    # Crash processing (docs/processing.md): its walking processes start on first use.
    processor: CrashProcessor
    collector: Collector | None = None
    # debuginfod's section requests: each copies a stored file to disk, so a few at once.
    sections: SectionGate = field(default_factory=SectionGate)

    @classmethod
    async def create(cls, settings: Settings, apply_migrations: bool = True) -> Runtime:
        """Connect to everything; settings must already point at real services."""
        assert settings.database_url and settings.redis_url and settings.redis_store_url
        storage = StorageConfig.from_settings(settings)
        s3 = S3Clients(settings)
        # Before connecting: a location no backend serves stops the start here.
        stores = Stores(settings, s3, locations(storage))
        db = await asyncpg.create_pool(
            settings.database_url, min_size=1, max_size=settings.database_pool_max
        )
        try:
            if apply_migrations:
                async with db.acquire() as conn:
                    for migration in await migrate.migrate(conn):
                        logger.info("applied migration %04d_%s", migration.version, migration.name)
        except BaseException:
            await db.close()
            raise
        ignore = settings.redis_ignore_exceptions
        cache = Cache(redis_client(settings.redis_url, settings), "cache", ignore)
        lookup = SymbolLookup(
            storage,
            stores,
            cache,
            ttl=settings.symboldownload_exists_ttl_seconds,
            local_size=settings.download_local_cache_size,
        )
        await lookup.start()
        store = Cache(redis_client(settings.redis_store_url, settings), "store", ignore)
        collector = None
        if settings.enable_crash_collector:
            collector = Collector(settings, make_crash_storage(settings, s3), Publisher(settings))
        # Its caches and parse processes start on first use, or with start() when serving.
        symbolication = Symbolication(settings, lookup, stores, cache, store)
        processor = CrashProcessor(
            settings,
            db,
            symbolication,
            collector.storage if collector is not None else make_crash_storage(settings, s3),
            collector.publisher if collector is not None else None,
        )
        return cls(
            settings=settings,
            storage=storage,
            db=db,
            cache=cache,
            store=store,
            s3=s3,
            stores=stores,
            lookup=lookup,
            missing=MissingRecorder(db, cache, settings.memoize_log_missing_symbols_seconds),
            staging=make_staging(settings, s3),
            sessions=SessionStore(db, cache, settings.secret_key, settings.session_cookie_age),
            oidc=OIDCClient(settings),
            blocked=make_guard(settings, cache),
            collector=collector,
            symbolication=symbolication,
            processor=processor,
        )

    async def close(self) -> None:
        await self.processor.close()
        await self.symbolication.close()
        if self.collector is None:
            await self.processor.storage.close()
        else:
            await self.collector.storage.close()
            await self.collector.publisher.close()
        await self.lookup.close()
        await self.stores.close()
        await self.s3.close()
        await self.cache.close()
        await self.store.close()
        await self.db.close()
