"""Uploads per UTC day over the last days, everyone's or one user's: the home page's chart
(docs/web.md). Days without uploads are there with zeros, so a chart has one bar per day."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import asyncpg


@dataclass(frozen=True)
class Day:
    day: date
    count: int
    size: int


async def uploads_per_day(
    db: asyncpg.Pool, days: int, user_id: int | None, now: datetime | None = None
) -> list[Day]:
    """The last ``days`` UTC days, today included, oldest first; ``user_id`` None counts
    everyone's uploads (for callers holding ``upload.view_all_uploads``)."""
    now = now or datetime.now(UTC)
    first = now.date() - timedelta(days=days - 1)
    since = datetime.combine(first, time(), tzinfo=UTC)
    rows = await db.fetch(
        """SELECT (created_at AT TIME ZONE 'UTC')::date AS day, count(*) AS count,
                  coalesce(sum(size), 0)::bigint AS size
           FROM uploads
           WHERE created_at >= $1 AND ($2::bigint IS NULL OR user_id = $2)
           GROUP BY 1""",
        since,
        user_id,
    )
    found = {r["day"]: r for r in rows}
    out = []
    for i in range(days):
        day = first + timedelta(days=i)
        row = found.get(day)
        out.append(Day(day, row["count"] if row else 0, row["size"] if row else 0))
    return out
