"""The upload and file listings of the JSON API (see docs/upload.md, "Uploads in the JSON API").

``total`` is exact when anything narrows the listing (seeing only your own uploads counts); an
unfiltered listing reports the reference's placeholder instead of counting every row.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from symbolon.filters import (
    FilterError,
    Query,
    date_filter,
    like_pattern,
    ordering,
    page_number,
    size_filter,
)
from symbolon.jsonutil import timestamp
from symbolon.uploads import records

UPLOADS_BATCH = 20
FILES_BATCH = 40
UNCOUNTED_TOTAL = 1_000_000
UPLOAD_TYPES = {"try": "u.try_symbols", "regular": "NOT u.try_symbols"}


async def list_uploads(
    db: asyncpg.Pool, params: dict[str, str], user_id: int, can_view_all: bool
) -> dict[str, Any]:
    """``GET /api/uploads/``: everyone's uploads with view-all, else the caller's own."""
    query = Query()
    if not can_view_all:
        query.add("u.user_id = {}", user_id)
    elif params.get("user", "").strip():
        term = params["user"].strip()
        negate = term.startswith("!")
        term = term[1:].strip() if negate else term
        if term:
            query.add(
                f"u.user_id {'NOT IN' if negate else 'IN'} "
                "(SELECT id FROM users WHERE email ILIKE {})",
                like_pattern(term),
            )
    _common_filters(query, params, "u")
    sort, reverse = ordering(
        params.get("sort"), params.get("reverse"), ("size", "created_at"), "created_at"
    )
    page = page_number(params.get("page"))
    direction = "DESC" if reverse else "ASC"
    rows = await db.fetch(
        f"""{records.WITH_EMAIL}
            WHERE {query.where} ORDER BY u.{sort} {direction}, u.id {direction}
            LIMIT {UPLOADS_BATCH + 1} OFFSET {(page - 1) * UPLOADS_BATCH}""",
        *query.args,
    )
    has_next = len(rows) > UPLOADS_BATCH
    rows = rows[:UPLOADS_BATCH]
    counts = {
        r["upload_id"]: r
        for r in await db.fetch(
            """SELECT upload_id,
                      count(*) FILTER (WHERE completed_at IS NOT NULL) AS complete,
                      count(*) FILTER (WHERE completed_at IS NULL) AS incomplete
               FROM file_uploads WHERE upload_id = ANY($1::bigint[]) GROUP BY upload_id""",
            [r["id"] for r in rows],
        )
    }
    uploads = []
    for row in rows:
        upload = records.summary(row)
        count = counts.get(row["id"])
        upload["files_count"] = count["complete"] if count else 0
        upload["files_incomplete_count"] = count["incomplete"] if count else 0
        uploads.append(upload)
    return {
        "can_view_all": can_view_all,
        "uploads": uploads,
        "batch_size": UPLOADS_BATCH,
        "order_by": {"sort": sort, "reverse": reverse},
        "has_next": has_next,
        "total": await _total(db, "uploads u", query),
    }


async def list_files(db: asyncpg.Pool, params: dict[str, str]) -> dict[str, Any]:
    """``GET /api/uploads/files/``: every stored file, newest first."""
    query = Query()
    for term in params.get("key", "").split(","):
        if term.strip():
            query.add("f.key ILIKE {}", like_pattern(term.strip()))
    _common_filters(query, params, "f")
    names = [n.strip() for n in params.get("bucket_name", "").split(",") if n.strip()]
    excluded = [n[1:].strip() for n in names if n.startswith("!")]
    included = [n for n in names if not n.startswith("!")]
    if included:
        query.add("f.bucket_name = ANY({}::text[])", included)
    if excluded:
        query.add("NOT (f.bucket_name = ANY({}::text[]))", excluded)
    upload_type = params.get("upload_type", "").strip()
    if upload_type:
        if upload_type not in UPLOAD_TYPES:
            raise FilterError("upload_type", f"Invalid upload type '{upload_type}'")
        query.add(UPLOAD_TYPES[upload_type])
    page = page_number(params.get("page"))
    rows = await db.fetch(
        f"""SELECT f.*, u.try_symbols, u.user_id, u.created_at AS upload_created_at, s.email
            FROM file_uploads f
            LEFT JOIN uploads u ON u.id = f.upload_id
            LEFT JOIN users s ON s.id = u.user_id
            WHERE {query.where} ORDER BY f.created_at DESC, f.id DESC
            LIMIT {FILES_BATCH + 1} OFFSET {(page - 1) * FILES_BATCH}""",
        *query.args,
    )
    return {
        "files": [_file_summary(r) for r in rows[:FILES_BATCH]],
        "has_next": len(rows) > FILES_BATCH,
        "batch_size": FILES_BATCH,
        "total": await _total(
            db, "file_uploads f LEFT JOIN uploads u ON u.id = f.upload_id", query
        ),
    }


def _common_filters(query: Query, params: dict[str, str], table: str) -> None:
    if params.get("size"):
        size_filter(query, f"{table}.size", "size", params["size"])
    for name in ("created_at", "completed_at"):
        if params.get(name):
            date_filter(query, f"{table}.{name}", name, params[name])


async def _total(db: asyncpg.Pool, tables: str, query: Query) -> int:
    if not query.conditions:
        return UNCOUNTED_TOTAL
    return await db.fetchval(f"SELECT count(*) FROM {tables} WHERE {query.where}", *query.args)


def _file_summary(row: asyncpg.Record) -> dict[str, Any]:
    upload = None
    if row["upload_id"] is not None:
        upload = {
            "id": row["upload_id"],
            "try_symbols": row["try_symbols"],
            "upload_type": "try" if row["try_symbols"] else "regular",
            "user": {"id": row["user_id"], "email": row["email"]},
            "created_at": timestamp(row["upload_created_at"]),
        }
    return {
        "id": row["id"],
        "key": row["key"],
        "update": row["update"],
        "compressed": row["compressed"],
        "size": row["size"],
        "bucket_name": row["bucket_name"],
        "completed_at": timestamp(row["completed_at"]),
        "created_at": timestamp(row["created_at"]),
        **records.file_fields(row),
        "upload": upload,
    }


def download_path(key: str, try_symbols: bool) -> str:
    """The site-relative download URL of a stored key: its last three segments."""
    path = "/" + "/".join(key.split("/")[-3:])
    return path + "?try" if try_symbols else path


async def file_detail(db: asyncpg.Pool, file_id: int) -> tuple[dict[str, Any], int | None] | None:
    """``GET /api/uploads/files/file/<id>``'s body and the owner's id, or None if not found."""
    row = await db.fetchrow(
        """SELECT f.*, u.user_id, u.try_symbols
           FROM file_uploads f LEFT JOIN uploads u ON u.id = f.upload_id
           WHERE f.id = $1""",
        file_id,
    )
    if row is None:
        return None
    upload = None
    if row["upload_id"] is not None:
        upload_row = await records.find(db, row["upload_id"])
        if upload_row is not None:  # unless expired since
            upload = records.summary(upload_row, uploader_id=True)
    body = {
        "id": row["id"],
        "bucket_name": row["bucket_name"],
        "key": row["key"],
        "update": row["update"],
        "compressed": row["compressed"],
        "size": row["size"],
        "url": download_path(row["key"], bool(row["try_symbols"])),
        "completed_at": timestamp(row["completed_at"]),
        "created_at": timestamp(row["created_at"]),
        **records.file_fields(row),
        "generator": row["generator"],
        "upload": upload,
    }
    return body, row["user_id"]
