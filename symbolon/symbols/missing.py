"""Missing symbols: every GET that ends in 404 is remembered (docs/download.md).

Stack walkers ask for the same missing files over and over; a Redis guard lets one tuple reach
the database at most once per ``MEMOIZE_LOG_MISSING_SYMBOLS_SECONDS``. The CSV of recent misses is
what release engineers use to find and upload the symbols that crash processing lacks.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from symbolon.filters import (
    INTEGER_MAX,
    FilterError,
    Query,
    count_filter,
    date_filter,
    ordering,
    page_number,
)
from symbolon.jsonutil import timestamp
from symbolon.redis_cache import Cache

logger = logging.getLogger(__name__)
MAX_LENGTH = 150
COLUMNS = "id, symbol, debugid, filename, code_file, code_id, count, modified_at, created_at"


def missing_hash(values: list[str | None]) -> str:
    joined = ":".join(v for v in values if v)
    return hashlib.md5(joined.encode(), usedforsecurity=False).hexdigest()


@dataclass(frozen=True)
class Miss:
    """A download answered 404, as the table counts it."""

    symbol: str
    debugid: str
    filename: str
    code_file: str | None = None
    code_id: str | None = None

    def counted_as(self) -> tuple[list[str | None], str] | None:
        """Its values as the table keeps them, and its row's hash; None when a value is too
        long to keep."""
        values = [
            self.symbol,
            self.debugid,
            self.filename,
            self.code_file or None,
            self.code_id or None,
        ]
        if any(v and len(v) > MAX_LENGTH for v in values):
            return None
        return values, missing_hash(values)


class MissingRecorder:
    """Counts misses; remembers recent ones locally too, so a repeated 404 costs no I/O."""

    def __init__(
        self, db: asyncpg.Pool, cache: Cache, guard_seconds: int, local_size: int = 50_000
    ):
        self.db = db
        self.cache = cache
        self.guard_seconds = guard_seconds
        self.local_size = local_size
        self._recent: OrderedDict[str, float] = OrderedDict()

    async def record(self, miss: Miss) -> bool:
        """Count one miss; returns True if the database was written. Never raises."""
        counted = miss.counted_as()
        if counted is None:
            return False
        values, digest = counted
        now = time.monotonic()
        if self._remembered(digest, now):
            return False
        guard = await self.cache.add(f"download:missing:{digest}", b"1", ttl=self.guard_seconds)
        self._remember(digest, now)
        if guard is False:
            return False  # recorded recently; when Redis does not answer, record anyway
        try:
            await self.db.execute(
                """INSERT INTO missing_symbols (hash, symbol, debugid, filename, code_file, code_id)
                   VALUES ($1, $2, $3, $4, $5, $6)
                   ON CONFLICT (hash) DO UPDATE
                   SET count = missing_symbols.count + 1, modified_at = now()""",
                digest,
                *values,
            )
        except (asyncpg.PostgresError, OSError) as exc:
            logger.error(
                "could not record missing symbol %s/%s/%s: %r",
                miss.symbol,
                miss.debugid,
                miss.filename,
                exc,
            )
            return False
        return True

    def remembers(self, miss: Miss) -> bool:
        """Whether :meth:`record` would leave this miss uncounted now, without any I/O: it
        was counted here recently, or it has a value too long to keep."""
        counted = miss.counted_as()
        return counted is None or self._remembered(counted[1], time.monotonic())

    def _remembered(self, digest: str, now: float) -> bool:
        return self._recent.get(digest, 0.0) > now

    def _remember(self, digest: str, now: float) -> None:
        if self.local_size <= 0:
            return
        self._recent[digest] = now + self.guard_seconds
        self._recent.move_to_end(digest)
        while len(self._recent) > self.local_size:
            self._recent.popitem(last=False)

    def forget_local(self) -> None:
        self._recent.clear()


async def csv_report(db: asyncpg.Pool, today: bool, now: datetime | None = None) -> tuple[str, str]:
    """(filename, CSV text) of recent misses of Windows symbols: .pdb debug files, .sym files."""
    now = now or datetime.now(UTC)
    if today:
        since = datetime.combine(now.date(), datetime.min.time(), tzinfo=UTC)
    else:
        since = now - timedelta(days=1)
    rows = await db.fetch(
        """SELECT symbol, debugid, code_file, code_id FROM missing_symbols
           WHERE modified_at >= $1 AND lower(symbol) LIKE '%.pdb' AND lower(filename) LIKE '%.sym'
           ORDER BY modified_at""",
        since,
    )
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["debug_file", "debug_id", "code_file", "code_id"])
    for r in rows:
        writer.writerow([r["symbol"], r["debugid"], r["code_file"] or "", r["code_id"] or ""])
    day = (now - timedelta(days=1)).date() if not today else now.date()
    return f"missing-symbols-{day.isoformat()}.csv", out.getvalue()


def _filters(params: dict[str, str], date_fields: tuple[str, ...], with_count: bool) -> Query:
    query = Query()
    for name in ("symbol", "debugid", "filename"):
        if params.get(name):
            # Substring match, case-sensitive; LIKE wildcards in the input are taken literally.
            escaped = params[name].replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            query.add(f"{name} LIKE {{}}", f"%{escaped}%")
    for name in date_fields:
        if params.get(name):
            date_filter(query, name, name, params[name])
    if with_count and params.get("count"):
        count_filter(query, "count", "count", params["count"], maximum=INTEGER_MAX)
    return query


def _record(row: asyncpg.Record) -> dict[str, Any]:
    data = dict(row)
    data["modified_at"] = timestamp(row["modified_at"])
    data["created_at"] = timestamp(row["created_at"])
    return data


async def listing(db: asyncpg.Pool, params: dict[str, str]) -> dict[str, Any]:
    """``GET /missingsymbols/``: filtered, sorted, 100 a page."""
    batch = 100
    query = _filters(params, ("modified_at",), with_count=False)
    sort, reverse = ordering(
        params.get("sort"), params.get("reverse"), ("modified_at", "created_at"), "modified_at"
    )
    page = page_number(params.get("page"))
    total = await db.fetchval(
        f"SELECT count(*) FROM missing_symbols WHERE {query.where}", *query.args
    )
    rows = await db.fetch(
        f"""SELECT {COLUMNS} FROM missing_symbols WHERE {query.where}
            ORDER BY {sort} {"DESC" if reverse else "ASC"}, id
            LIMIT {batch} OFFSET {(page - 1) * batch}""",
        *query.args,
    )
    return {
        "order_by": {"sort": sort, "reverse": reverse},
        "batch_size": batch,
        "page": page,
        "total_count": total,
        "records": [_record(r) for r in rows],
    }


async def api_listing(db: asyncpg.Pool, params: dict[str, str]) -> dict[str, Any]:
    """``GET /api/downloads/missing/`` as the web UI uses it: 20 a page, with aggregates."""
    batch = 20
    query = _filters(params, ("modified_at", "created_at"), with_count=True)
    sort, reverse = ordering(
        params.get("sort"),
        params.get("reverse"),
        ("modified_at", "count", "created_at"),
        "modified_at",
    )
    page = page_number(params.get("page"))
    aggregates = await db.fetchrow(
        f"""SELECT count(*) AS total,
                   count(*) FILTER (WHERE modified_at > now() - interval '1 day') AS last_1_days,
                   count(*) FILTER (WHERE modified_at > now() - interval '30 days') AS last_30_days
            FROM missing_symbols WHERE {query.where}""",
        *query.args,
    )
    rows = await db.fetch(
        f"""SELECT {COLUMNS} FROM missing_symbols WHERE {query.where}
            ORDER BY {sort} {"DESC" if reverse else "ASC"}, id
            LIMIT {batch} OFFSET {(page - 1) * batch}""",
        *query.args,
    )
    return {
        "batch_size": batch,
        "aggregates": {"missing": dict(aggregates)},
        "total": aggregates["total"],
        "missing": [_record(r) for r in rows],
        "order_by": {"sort": sort, "reverse": reverse},
    }


__all__ = ["FilterError", "MissingRecorder", "api_listing", "csv_report", "listing"]
