"""The numbers on the web UI's home page: ``/api/stats/`` and ``/api/stats/uploads``.

Upload and file counts cover everyone's uploads only for callers holding
``upload.view_all_uploads``, else the caller's own. Days are UTC days (see docs/accounts.md,
"JSON API").
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any

import asyncpg


def _periods(now: datetime) -> dict[str, tuple[datetime, datetime]]:
    today = datetime.combine(now.date(), time(), tzinfo=UTC)
    return {
        "today": (today, now + timedelta(days=1)),
        "yesterday": (today - timedelta(days=1), today),
        "last_30_days": (now - timedelta(days=30), now + timedelta(days=1)),
    }


def _period_sql(column: str, first: int) -> str:
    """count/sum columns per period, with $first.. as the period bounds."""
    parts = []
    for i, name in enumerate(("today", "yesterday", "last_30_days")):
        low, high = f"${first + 2 * i}", f"${first + 2 * i + 1}"
        parts.append(f"count(*) FILTER (WHERE {column} >= {low} AND {column} < {high}) AS {name}")
    return ", ".join(parts)


async def home_stats(
    db: asyncpg.Pool,
    user_id: int,
    all_uploads: bool,
    is_superuser: bool,
    now: datetime | None = None,
) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    periods = _periods(now)
    bounds = [b for pair in periods.values() for b in pair]
    mine = "TRUE" if all_uploads else "u.user_id = $7"
    extra = [] if all_uploads else [user_id]
    size_sums = ", ".join(
        f"coalesce(sum(size) FILTER (WHERE created_at >= ${1 + 2 * i} "
        f"AND created_at < ${2 + 2 * i}), 0)::bigint AS {name}_size"
        for i, name in enumerate(periods)
    )
    uploads = await db.fetchrow(
        f"""SELECT {_period_sql("created_at", 1)}, {size_sums}
            FROM uploads u WHERE {mine}""",
        *bounds,
        *extra,
    )
    files_from = (
        "file_uploads f" if all_uploads else "file_uploads f JOIN uploads u ON u.id = f.upload_id"
    )
    files = await db.fetchrow(
        f"SELECT {_period_sql('f.created_at', 1)} FROM {files_from} WHERE {mine}",
        *bounds,
        *extra,
    )
    # The reference counts 29 whole days before today, plus today, for missing symbols.
    today_start = periods["today"][0]
    missing_bounds = [*bounds[:4], today_start - timedelta(days=29), now + timedelta(days=1)]
    missing = await db.fetchrow(
        f"SELECT {_period_sql('modified_at', 1)} FROM missing_symbols", *missing_bounds
    )
    tokens = await db.fetchrow(
        """SELECT count(*) AS total, count(*) FILTER (WHERE expires_at <= now()) AS expired
           FROM tokens WHERE user_id = $1""",
        user_id,
    )
    stats: dict[str, Any] = {
        "uploads": {
            "all_uploads": all_uploads,
            **{
                name: {"count": uploads[name], "total_size": uploads[f"{name}_size"]}
                for name in periods
            },
        },
        "files": {name: {"count": files[name]} for name in periods},
        "downloads": {"missing": {name: {"count": missing[name]} for name in periods}},
        "tokens": {"total": tokens["total"], "expired": tokens["expired"]},
    }
    if is_superuser:
        users = await db.fetchrow(
            """SELECT count(*) AS total, count(*) FILTER (WHERE is_superuser) AS superusers,
                      count(*) FILTER (WHERE is_active) AS active,
                      count(*) FILTER (WHERE NOT is_active) AS not_active
               FROM users"""
        )
        stats["users"] = dict(users)
    return {"stats": stats}


def human_size(size: int) -> str:
    """Like the reference's: ``0 bytes``, ``1 byte``, ``1023 bytes``, ``117.7 MB``."""
    if size == 1:
        return "1 byte"
    if size < 1024:
        return f"{size} bytes"
    value = float(size)
    for unit in ("KB", "MB", "GB", "TB"):
        value /= 1024
        if value < 1024 or unit == "TB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


async def upload_stats(
    db: asyncpg.Pool, user_id: int, all_uploads: bool, now: datetime | None = None
) -> dict[str, Any]:
    """``/api/stats/uploads``: today, yesterday and this month, computed from the uploads."""
    now = now or datetime.now(UTC)
    today = datetime.combine(now.date(), time(), tzinfo=UTC)
    periods = {
        "today": (today, now + timedelta(days=1)),
        "yesterday": (today - timedelta(days=1), today),
        "this_month": (today.replace(day=1), now + timedelta(days=1)),
    }
    result = {}
    for name, (low, high) in periods.items():
        row = await db.fetchrow(
            f"""SELECT count(*) AS count, coalesce(sum(u.size), 0)::bigint AS total_size,
                       coalesce(sum((SELECT count(*) FROM file_uploads f
                                     WHERE f.upload_id = u.id)), 0)::bigint AS files
                FROM uploads u WHERE u.created_at >= $1 AND u.created_at < $2
                  AND {"TRUE" if all_uploads else "u.user_id = $3"}""",
            low,
            high,
            *([] if all_uploads else [user_id]),
        )
        result[name] = {
            "count": row["count"],
            "total_size": row["total_size"],
            "total_size_human": human_size(row["total_size"]),
            "files": row["files"],
        }
    return {"uploads": result}
