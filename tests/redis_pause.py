"""A Redis that stops answering: what the tests of "Redis is down" use, on a Redis of their own."""

from __future__ import annotations

from symbolon.conf import Settings
from symbolon.redis_cache import redis_client

PAUSE_MS = 10_000  # longer than any test waits on it


async def pause(url: str, settings: Settings) -> None:
    """Make the Redis at ``url`` hold every client's commands, without closing connections."""
    admin = redis_client(url, settings)
    await admin.execute_command("CLIENT", "PAUSE", PAUSE_MS, "ALL")
    await admin.aclose()
