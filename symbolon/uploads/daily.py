"""Daily upload figures: ``/api/uploads/created/`` and its backfill report (see docs/upload.md,
"Uploads in the JSON API", and docs/decisions.md).

The reference kept one row per UTC day in a table that a job filled in. Symbolon computes the
same rows from ``uploads`` and ``file_uploads`` when asked, so they are never stale and there is
nothing to backfill. A day without uploads has no row (the reference's backfill wrote zeros).

Each row: ``count`` uploads created that UTC day, ``files`` the file rows of those uploads,
``skipped``/``ignored`` the lengths of their ``skipped_keys``/``ignored_keys`` added up, ``size``
their bytes, ``size_avg`` bytes per upload (whole bytes), ``created_at`` when the row was computed
(now), and ``id`` the date as the number ``YYYYMMDD``, which stays the same from one request to
the next. The ``aggregates`` add up every matching row, as the reference's did: ``size_avg`` there
is the mean of the rows' ``size`` (bytes per day), and all of them are null when no row matches.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import asyncpg

from symbolon.filters import Query, count_filter, date_filter, ordering, page_number, size_filter
from symbolon.jsonutil import timestamp

BATCH_SIZE = 20
# The UTC day an upload was created on, as midnight UTC: date filters compare against it.
UPLOAD_DAY = "(date_trunc('day', u.created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')"
SORT_COLUMNS = {"date": "d.day", "size": "d.size"}

# File rows per upload. With a date filter, few uploads are looked up one by one in the index on
# ``upload_id``; without one, every upload's are counted in one pass over that index, which for
# the whole history is about twice as fast as a million lookups.
FILES_OF_FEW = """LEFT JOIN LATERAL (SELECT count(*) AS n FROM file_uploads f
                                      WHERE f.upload_id = u.id) f ON TRUE"""
FILES_OF_ALL = """LEFT JOIN (SELECT upload_id, count(*) AS n FROM file_uploads
                             WHERE upload_id IS NOT NULL GROUP BY upload_id) f
                  ON f.upload_id = u.id"""

DAYS = f"""
    WITH days AS MATERIALIZED (
        SELECT {UPLOAD_DAY} AS day,
               count(*) AS count,
               coalesce(sum(f.n), 0)::bigint AS files,
               coalesce(sum(cardinality(u.skipped_keys)), 0)::bigint AS skipped,
               coalesce(sum(cardinality(u.ignored_keys)), 0)::bigint AS ignored,
               sum(u.size)::bigint AS size,
               floor(avg(u.size))::bigint AS size_avg
        FROM uploads u {{files}}
        WHERE {{days_where}}
        GROUP BY 1
    ),
    matching AS MATERIALIZED (SELECT * FROM days d WHERE {{matching_where}})
"""


def row_id(day: datetime) -> int:
    """The stable id of a day's row: its date as ``YYYYMMDD``."""
    return day.year * 10_000 + day.month * 100 + day.day


async def uploads_created(db: asyncpg.Pool, params: dict[str, str]) -> dict[str, Any]:
    """``GET /api/uploads/created/``: filters ``date``, ``size``, ``count``; ``sort`` by ``date``
    (the default, newest first) or ``size``; ``page`` of 20. FilterError for a bad filter."""
    query = Query()
    if params.get("date"):
        date_filter(query, UPLOAD_DAY, "date", params["date"])
    days_where = query.where
    files = FILES_OF_FEW if query.conditions else FILES_OF_ALL
    first_matching = len(query.conditions)
    if params.get("size"):
        size_filter(query, "d.size", "size", params["size"])
    if params.get("count"):
        count_filter(query, "d.count", "count", params["count"])
    matching_where = " AND ".join(query.conditions[first_matching:]) or "TRUE"
    sort, reverse = ordering(params.get("sort"), params.get("reverse"), ("size", "date"), "date")
    page = page_number(params.get("page"))
    direction = "DESC" if reverse else "ASC"
    offset = min((page - 1) * BATCH_SIZE, 2**62)  # far past the last page, still a bigint
    # One row per day of the page, each carrying the totals; a single row of totals (and NULL
    # day columns) when the page is empty.
    rows = await db.fetch(
        DAYS.format(files=files, days_where=days_where, matching_where=matching_where)
        + f"""
        SELECT page.*, totals.*
        FROM (SELECT count(*) AS total,
                     sum(count)::bigint AS total_count,
                     sum(files)::bigint AS total_files,
                     sum(size)::bigint AS total_size,
                     avg(size)::float8 AS total_size_avg,
                     sum(skipped)::bigint AS total_skipped,
                     sum(ignored)::bigint AS total_ignored
              FROM matching) totals
        LEFT JOIN LATERAL (
            SELECT d.* FROM matching d
            ORDER BY {SORT_COLUMNS[sort]} {direction}, d.day {direction}
            LIMIT {BATCH_SIZE} OFFSET {offset}
        ) page ON TRUE""",
        *query.args,
    )
    computed_at = timestamp(datetime.now(UTC))
    days = []
    for row in rows:
        if row["day"] is None:
            continue
        day = row["day"].astimezone(UTC)
        days.append(
            {
                "id": row_id(day),
                "date": day.date().isoformat(),
                "count": row["count"],
                "files": row["files"],
                "skipped": row["skipped"],
                "ignored": row["ignored"],
                "size": row["size"],
                "size_avg": row["size_avg"],
                "created_at": computed_at,
            }
        )
    totals = rows[0]
    return {
        "uploads_created": days,
        "aggregates": {
            "uploads_created": {
                name: totals[f"total_{name}"]
                for name in ("count", "files", "size", "size_avg", "skipped", "ignored")
            }
        },
        "total": totals["total"],
        "batch_size": BATCH_SIZE,
        "order_by": {"sort": sort, "reverse": reverse},
    }


async def backfill_report(db: asyncpg.Pool, now: datetime | None = None) -> dict[str, Any]:
    """``/api/uploads/created/backfilled/``: ``uploads_created_count`` is the number of days with
    uploads (the rows ``/api/uploads/created/`` has), ``days_till_today`` the whole days since
    the first upload (null when there is none), and ``backfilled`` is always true: every row is
    computed when it is asked for."""
    now = now or datetime.now(UTC)
    row = await db.fetchrow(
        f"SELECT count(DISTINCT {UPLOAD_DAY}) AS days, min(u.created_at) AS first FROM uploads u"
    )
    return {
        "uploads_created_count": row["days"],
        "days_till_today": None if row["first"] is None else (now - row["first"]).days,
        "backfilled": True,
    }
