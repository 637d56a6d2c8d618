"""Reading the test database directly, to see what a command or request left there."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from symbolon.conf import Settings


def query(settings: Settings, sql: str, *args: Any) -> list[asyncpg.Record]:
    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(settings.database_url)
        try:
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()

    return asyncio.run(run())
