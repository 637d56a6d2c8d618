"""``/status/``: how this server is set up and doing, for superusers: every setting (secrets
masked), table row counts, applied migrations, versions, and the health checks of
``/__heartbeat__`` (health.py)."""

from __future__ import annotations

import asyncio

from symbolon import health, status
from symbolon.accounts.auth import Principal
from symbolon.db import migrate
from symbolon.jsonutil import timestamp
from symbolon.runtime import Runtime
from symbolon.web.page import PageHandler
from symbolon.web.pages.shown import shown_time

PATH = "/status/"


class StatusPage(PageHandler):
    title = "Status"
    nav = PATH

    @classmethod
    def admits(cls, principal: Principal | None, runtime: Runtime) -> bool:
        return principal is not None and principal.user.is_superuser

    async def get(self) -> None:
        self.require(superuser=True)
        rt = self.runtime
        healthy, checks = await health.heartbeat(rt)
        async with rt.db.acquire() as conn:
            counts = await status.table_counts(conn)
            applied = await status.applied_migrations(conn)
            pending = await migrate.pending(conn)
            postgres = await status.postgres_version(conn)
        redis_cache, redis_store = await asyncio.gather(
            status.redis_version(rt.cache.client), status.redis_version(rt.store.client)
        )
        versions = {
            **status.software_versions(self.application.settings.get("version_info") or {}),
            "PostgreSQL": postgres,
            "Redis (REDIS_URL)": redis_cache,
            "Redis (REDIS_STORE_URL)": redis_store,
        }
        self.curl("/__heartbeat__", "The health checks (no token needed):")
        self.curl("/__version__", "This server's version:")
        self.page(
            "status.html",
            healthy=healthy,
            checks=checks,
            settings=status.settings_report(rt.settings),
            counts=counts,
            applied=[{**m, "applied_at": shown_time(timestamp(m["applied_at"]))} for m in applied],
            pending=pending,
            versions=versions,
            mask=status.MASK,
        )


ROUTES = [(PATH, StatusPage)]
