"""The ``crashes`` table: one row per crash the processor has seen (docs/processing.md, "The
crash index"), and the modules processed crashes had no symbols for.

A row is ``pending`` from the moment processing starts, then ``processed`` or ``failed`` (with the
reason). Lists, filters and top signatures read it; the crashes themselves stay in the crash store.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import asyncpg

from symbolon.crashes.crashid import crash_date
from symbolon.filters import FilterError, Query, date_filter, page_number
from symbolon.jsonutil import timestamp

CRASHES_BATCH = 100
SIGNATURES_LIMIT = 100
DEFAULT_WINDOW_DAYS = 7
MAX_WINDOW_DAYS = 3650
STATES = ("pending", "processed", "failed")
# Index columns keep this much of a text: enough to tell products, versions and modules apart,
# and short enough for PostgreSQL's indexes (a B-tree entry holds about 2,700 bytes).
MAX_TEXT = 255
MAX_REASON = 1000
# Missing-module rows one crash keeps: a dump naming thousands of modules stores no more.
MAX_MISSING_MODULES = 500
# Signatures are cut at 255 characters (signature.py); this only guards the column's index.
MAX_SIGNATURE = 255

# Annotation names of each indexed field, in order of preference. The raw crash's own
# "version" is the collector's schema number, so a version comes from Breakpad's "Version" or
# Crashpad's usual "ver".
PRODUCT_NAMES = ("ProductName", "product", "prod")
VERSION_NAMES = ("Version", "ver")
CHANNEL_NAMES = ("ReleaseChannel", "release_channel", "channel")


@dataclass(frozen=True)
class CrashMeta:
    """What the index keeps of a raw crash."""

    product: str
    version: str
    release_channel: str
    date: datetime


# JSON allows lone UTF-16 surrogates ("\\ud800"), which are not UTF-8: PostgreSQL refuses them.
SURROGATE = re.compile("[\ud800-\udfff]")


def clean(text: str, limit: int) -> str:
    """Text PostgreSQL takes (valid UTF-8 without NUL), at most ``limit`` characters."""
    return SURROGATE.sub("\ufffd", text.replace("\x00", ""))[:limit]


def _first_text(raw_crash: Mapping[str, Any], names: Iterable[str]) -> str:
    for name in names:
        value = raw_crash.get(name)
        if isinstance(value, str) and value.strip():
            return clean(value.strip(), MAX_TEXT)
    return ""


def received_at(raw_crash: Mapping[str, Any], crash_id: str | None) -> datetime:
    """When the collector received the crash: ``submitted_timestamp``, else the id's day (now,
    for a dump that is not stored)."""
    stamp = raw_crash.get("submitted_timestamp")
    if isinstance(stamp, str):
        try:
            parsed = datetime.fromisoformat(stamp)
        except ValueError:
            parsed = None
        if parsed is not None:
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    if crash_id is None:
        return datetime.now(UTC)
    day = crash_date(crash_id)
    try:
        return datetime.combine(date(int(day[:4]), int(day[4:6]), int(day[6:])), time(), UTC)
    except ValueError:  # the id's date digits are not checked as a calendar date
        return datetime.now(UTC)


def meta_of(raw_crash: Mapping[str, Any], crash_id: str | None) -> CrashMeta:
    return CrashMeta(
        product=_first_text(raw_crash, PRODUCT_NAMES),
        version=_first_text(raw_crash, VERSION_NAMES),
        release_channel=_first_text(raw_crash, CHANNEL_NAMES),
        date=received_at(raw_crash, crash_id),
    )


async def start(db: asyncpg.Pool, crash_id: str, meta: CrashMeta) -> None:
    """Processing starts: the row is made, or set back to ``pending`` (its last signature kept
    until the new one is known)."""
    await db.execute(
        """INSERT INTO crashes (crash_id, product, version, release_channel, date, state)
           VALUES ($1, $2, $3, $4, $5, 'pending')
           ON CONFLICT (crash_id) DO UPDATE
           SET product = $2, version = $3, release_channel = $4, date = $5, state = 'pending',
               reason = NULL, updated_at = now()""",
        crash_id,
        meta.product,
        meta.version,
        meta.release_channel,
        meta.date,
    )


async def finish(
    db: asyncpg.Pool,
    crash_id: str,
    meta: CrashMeta,
    signature: str | None,
    missing: Iterable[tuple[str, str]] = (),
    reason: str | None = None,
) -> None:
    """Processing ended: ``processed``, or ``failed`` when there is a ``reason``. ``missing``
    are the ``(debug_file, debug_id)`` of modules it had no symbols for."""
    modules = sorted({(clean(name, MAX_TEXT), clean(i.upper(), MAX_TEXT)) for name, i in missing})
    modules = modules[:MAX_MISSING_MODULES]
    async with db.acquire() as conn, conn.transaction():
        await conn.execute(
            """INSERT INTO crashes (crash_id, product, version, release_channel, date, signature,
                                    state, reason, processed_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now())
               ON CONFLICT (crash_id) DO UPDATE
               SET product = $2, version = $3, release_channel = $4, date = $5, signature = $6,
                   state = $7, reason = $8, processed_at = now(), updated_at = now()""",
            crash_id,
            meta.product,
            meta.version,
            meta.release_channel,
            meta.date,
            clean(signature, MAX_SIGNATURE) if signature is not None else None,
            "failed" if reason is not None else "processed",
            clean(reason, MAX_REASON) if reason is not None else None,
        )
        await conn.execute("DELETE FROM crash_missing_modules WHERE crash_id = $1", crash_id)
        if modules:
            await conn.executemany(
                """INSERT INTO crash_missing_modules (debug_file, debug_id, crash_id, date)
                   VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING""",
                [(name, debug_id, crash_id, meta.date) for name, debug_id in modules],
            )


async def claim_stale_pending(db: asyncpg.Pool, older_than: float, limit: int) -> list[str]:
    """Crashes ``pending`` for more than ``older_than`` seconds (their processing died, or its
    task went to the dead-letter queue), the oldest first, at most ``limit``; each is marked
    as just touched, so the next run leaves it to the processing it is queued for."""
    rows = await db.fetch(
        """UPDATE crashes SET updated_at = now()
           WHERE crash_id IN (
               SELECT crash_id FROM crashes
               WHERE state = 'pending' AND updated_at < now() - make_interval(secs => $1)
               ORDER BY updated_at LIMIT $2 FOR UPDATE SKIP LOCKED)
           RETURNING crash_id""",
        float(older_than),
        limit,
    )
    return sorted(row["crash_id"] for row in rows)


async def find(db: asyncpg.Pool | asyncpg.Connection, crash_id: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await db.fetchrow(
        "SELECT * FROM crashes WHERE crash_id = $1", crash_id
    )
    return row


async def unindexed(db: asyncpg.Pool, crash_ids: Iterable[str]) -> list[str]:
    """Those of ``crash_ids`` without a row (stored crashes processing has not reached), in
    the order given."""
    wanted = list(crash_ids)
    rows = await db.fetch("SELECT crash_id FROM crashes WHERE crash_id = ANY($1::text[])", wanted)
    known = {row["crash_id"] for row in rows}
    return [crash_id for crash_id in wanted if crash_id not in known]


async def missing_module_crashes(
    db: asyncpg.Pool, debug_file: str, debug_id: str, limit: int
) -> list[str]:
    """Crashes that had no symbols for the module, most recent first."""
    rows = await db.fetch(
        """SELECT crash_id FROM crash_missing_modules WHERE debug_file = $1 AND debug_id = $2
           ORDER BY date DESC, crash_id LIMIT $3""",
        debug_file,
        debug_id.upper(),
        limit,
    )
    return [row["crash_id"] for row in rows]


def summary(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "crash_id": row["crash_id"],
        "product": row["product"],
        "version": row["version"],
        "release_channel": row["release_channel"],
        "date": timestamp(row["date"]),
        "signature": row["signature"],
        "state": row["state"],
        "reason": row["reason"],
        "processed_at": timestamp(row["processed_at"]),
    }


def _filters(query: Query, params: Mapping[str, str]) -> None:
    for name in ("product", "version", "release_channel", "signature"):
        value = params.get(name)
        if value is not None and value != "":
            query.add(f"{name} = {{}}", value)
    state = params.get("state", "")
    if state:
        if state not in STATES:
            raise FilterError("state", f"Invalid state '{state}' (pending, processed or failed)")
        query.add("state = {}", state)
    if params.get("date", "").strip():
        date_filter(query, "date", "date", params["date"])


async def list_crashes(db: asyncpg.Pool, params: Mapping[str, str]) -> dict[str, Any]:
    """``GET /api/crashes/``: newest first, ``CRASHES_BATCH`` a page."""
    query = Query()
    _filters(query, params)
    page = page_number(params.get("page"))
    rows = await db.fetch(
        f"""SELECT * FROM crashes WHERE {query.where} ORDER BY date DESC, crash_id DESC
            LIMIT {CRASHES_BATCH + 1} OFFSET {(page - 1) * CRASHES_BATCH}""",
        *query.args,
    )
    total = await db.fetchval(f"SELECT count(*) FROM crashes WHERE {query.where}", *query.args)
    return {
        "crashes": [summary(row) for row in rows[:CRASHES_BATCH]],
        "batch_size": CRASHES_BATCH,
        "page": page,
        "has_next": len(rows) > CRASHES_BATCH,
        "total": total,
    }


def _window(params: Mapping[str, str]) -> int:
    raw = params.get("days", "").strip()
    if not raw:
        return DEFAULT_WINDOW_DAYS
    if not raw.isdigit() or len(raw) > 5 or not 1 <= int(raw) <= MAX_WINDOW_DAYS:
        raise FilterError("days", f"'{raw}' is not a number of days from 1 to {MAX_WINDOW_DAYS}")
    return int(raw)


async def top_signatures(
    db: asyncpg.Pool, params: Mapping[str, str], now: datetime | None = None
) -> dict[str, Any]:
    """``GET /api/crashes/signatures/``: the processed crashes' signatures over the window (the
    last ``days`` days, or the ``date`` filter), most frequent first."""
    now = now or datetime.now(UTC)
    query = Query()
    _filters(query, {**params, "state": "processed"})
    window: dict[str, Any] = {}
    if not params.get("date", "").strip():
        days = _window(params)
        since = now - timedelta(days=days)
        query.add("date >= {}", since)
        window = {"days": days, "since": timestamp(since)}
    elif params.get("days", "").strip():
        raise FilterError("days", "give either days or date, not both")
    rows = await db.fetch(
        f"""SELECT signature, count(*) AS count, max(date) AS last_date
            FROM crashes WHERE {query.where} AND signature IS NOT NULL
            GROUP BY signature ORDER BY count DESC, signature LIMIT {SIGNATURES_LIMIT}""",
        *query.args,
    )
    total = await db.fetchval(f"SELECT count(*) FROM crashes WHERE {query.where}", *query.args)
    return {
        "signatures": [
            {
                "signature": row["signature"],
                "count": row["count"],
                "last_date": timestamp(row["last_date"]),
            }
            for row in rows
        ],
        "total": total,
        **window,
    }
