"""The audit trail of changes made to users: who did what to whom (docs/accounts.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from symbolon.jsonutil import timestamp


@dataclass(frozen=True)
class Actor:
    """Who made a change: a signed-in user, or a named part of the system."""

    id: int | None
    label: str


COMMAND_LINE = Actor(None, "command line")
BLOCKED_CHECK = Actor(None, "blocked check")
SIGN_IN = Actor(None, "sign-in")


async def record(
    conn: asyncpg.Connection, actor: Actor, user_id: int, action: str, message: str
) -> None:
    await conn.execute(
        """INSERT INTO audit_log (actor_id, actor, user_id, action, message)
           VALUES ($1, $2, $3, $4, $5)""",
        actor.id,
        actor.label,
        user_id,
        action,
        message,
    )


async def entries(conn: asyncpg.Connection, user_id: int, limit: int = 100) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        """SELECT id, actor, action, message, created_at FROM audit_log
           WHERE user_id = $1 ORDER BY id DESC LIMIT $2""",
        user_id,
        limit,
    )
    return [{**dict(r), "created_at": timestamp(r["created_at"])} for r in rows]
