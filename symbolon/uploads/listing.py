"""The upload and file listings of the JSON API (spec/symbols.md §7.7 and §7.8).

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

UPLOADS_BATCH = 20
FILES_BATCH = 40
UNCOUNTED_TOTAL = 1_000_000
UPLOAD_TYPES = {"try": "u.try_symbols", "regular": "NOT u.try_symbols"}


def upload_summary(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"],
        "user": {"email": row["email"]},
        "filename": row["filename"],
        "size": row["size"],
        "bucket_name": row["bucket_name"],
        "bucket_region": row["bucket_region"],
        "bucket_endpoint_url": row["bucket_endpoint_url"],
        "skipped_keys": list(row["skipped_keys"] or []),
        "ignored_keys": list(row["ignored_keys"] or []),
        "try_symbols": row["try_symbols"],
        "download_url": row["download_url"],
        "redirect_urls": list(row["redirect_urls"] or []),
        "completed_at": timestamp(row["completed_at"]),
        "created_at": timestamp(row["created_at"]),
    }


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
        f"""SELECT u.*, s.email FROM uploads u JOIN users s ON s.id = u.user_id
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
        upload = upload_summary(row)
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
        "upload": upload,
    }


def download_path(key: str, try_symbols: bool) -> str:
    """The site-relative download URL of a stored key: its last three segments."""
    path = "/" + "/".join(key.split("/")[-3:])
    return path + "?try" if try_symbols else path


async def file_detail(db: asyncpg.Pool, file_id: int) -> tuple[dict[str, Any], int | None] | None:
    """``GET /api/uploads/files/file/<id>``'s body and the owner's id, or None if not found."""
    row = await db.fetchrow(
        """SELECT f.*, u.filename, u.user_id, u.size AS upload_size,
                  u.bucket_name AS upload_bucket_name, u.bucket_region, u.bucket_endpoint_url,
                  u.skipped_keys, u.ignored_keys, u.download_url, u.redirect_urls,
                  u.try_symbols, u.created_at AS upload_created_at,
                  u.completed_at AS upload_completed_at, s.email
           FROM file_uploads f
           LEFT JOIN uploads u ON u.id = f.upload_id
           LEFT JOIN users s ON s.id = u.user_id
           WHERE f.id = $1""",
        file_id,
    )
    if row is None:
        return None
    upload = None
    if row["upload_id"] is not None:
        upload = {
            "id": row["upload_id"],
            "filename": row["filename"],
            "user": {"id": row["user_id"], "email": row["email"]},
            "size": row["upload_size"],
            "bucket_name": row["upload_bucket_name"],
            "bucket_region": row["bucket_region"],
            "bucket_endpoint_url": row["bucket_endpoint_url"],
            "skipped_keys": list(row["skipped_keys"] or []),
            "ignored_keys": list(row["ignored_keys"] or []),
            "download_url": row["download_url"],
            "redirect_urls": list(row["redirect_urls"] or []),
            "try_symbols": row["try_symbols"],
            "created_at": timestamp(row["upload_created_at"]),
            "completed_at": timestamp(row["upload_completed_at"]),
        }
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
        "debug_filename": row["debug_filename"],
        "debug_id": row["debug_id"],
        "code_file": row["code_file"],
        "code_id": row["code_id"],
        "generator": row["generator"],
        "upload": upload,
    }
    return body, row["user_id"]
