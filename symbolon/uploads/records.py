"""The ``uploads`` table: where an upload goes, creating one, its outcome, and its JSON.

Handlers parse, authorise and answer; what an upload row means is decided here, once, for
``POST /upload/``, upload v2 and the ``/api/uploads/`` views alike (see docs/upload.md).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from symbolon.accounts.auth import Principal
from symbolon.accounts.permissions import Permission
from symbolon.jsonutil import timestamp
from symbolon.storage.sources import StorageConfig, SymbolSource

POLL_SECONDS = 0.1
WITH_EMAIL = "SELECT u.*, s.email FROM uploads u JOIN users s ON s.id = u.user_id"


class NoValidBucket(Exception):
    """The bucket the web UI chose is not one this user may upload to."""


@dataclass(frozen=True)
class Placement:
    """Whether an upload holds try symbols, and the location its files are stored in."""

    try_symbols: bool
    destination: SymbolSource


def placement(
    storage: StorageConfig,
    principal: Principal,
    asked_try: bool = False,
    bucket_name: str | None = None,
) -> Placement:
    """Where ``principal``'s upload goes (see docs/upload.md, "Where an upload goes").

    A caller that may only upload try symbols always uploads try symbols. ``bucket_name``, the
    web UI's choice, applies to regular uploads only; NoValidBucket when it matches nothing.
    """
    try_symbols = asked_try or not principal.has(Permission.UPLOAD_SYMBOLS)
    user = principal.user
    destination = storage.upload_destination(user.email, try_symbols)
    if bucket_name and not try_symbols:
        possible = storage.possible_upload_sources(user.email, user.is_superuser)
        chosen = [p for p in possible if bucket_name in p.url]
        if not chosen:
            raise NoValidBucket()
        destination = chosen[0]
    return Placement(try_symbols, destination)


def bucket_choices(storage: StorageConfig, principal: Principal) -> list[dict[str, Any]]:
    """The locations the web UI may offer for ``placement``'s ``bucket_name``, one per bucket."""
    user = principal.user
    choices: list[dict[str, Any]] = []
    seen: set[str] = set()
    for source in storage.possible_upload_sources(user.email, user.is_superuser):
        if source.bucket in seen:
            continue
        seen.add(source.bucket)
        choices.append(
            {
                "url": source.url,
                "bucket_name": source.bucket,
                "private": not source.public,
                "default": source.url == storage.upload_default.url,
            }
        )
    return choices


async def create_archive_upload(
    db: asyncpg.Pool,
    user_id: int,
    place: Placement,
    *,
    filename: str,
    size: int,
    content_hash: str | None,
    staging_ref: str | None,
    download_url: str | None,
) -> int:
    """Record a ``POST /upload/`` archive (received, or to fetch from ``download_url``)."""
    destination = place.destination
    return await db.fetchval(
        """INSERT INTO uploads (user_id, filename, bucket_name, bucket_region,
                                bucket_endpoint_url, size, content_hash, try_symbols,
                                staging_ref, destination_url, download_url)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id""",
        user_id,
        filename[:100],
        destination.bucket,
        destination.region,
        destination.endpoint_url,
        size,
        content_hash,
        place.try_symbols,
        staging_ref,
        destination.url,
        download_url,
    )


async def create_v2_upload(
    db: asyncpg.Pool,
    user_id: int,
    place: Placement,
    *,
    size: int,
    skipped_keys: list[str],
    pending: list[dict[str, Any]],
) -> tuple[int, datetime]:
    """Record an upload v2 whose ``pending`` files the client is to PUT; its id and creation."""
    destination = place.destination
    row = await db.fetchrow(
        """INSERT INTO uploads (user_id, filename, bucket_name, bucket_region,
                                bucket_endpoint_url, size, try_symbols, skipped_keys,
                                destination_url, pending_files)
           VALUES ($1, '', $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id, created_at""",
        user_id,
        destination.bucket,
        destination.region,
        destination.endpoint_url,
        size,
        place.try_symbols,
        skipped_keys or None,
        destination.url,
        json.dumps(pending),
    )
    return row["id"], row["created_at"]


async def awaits_completion(db: asyncpg.Pool, upload_id: int, user_id: int) -> bool:
    """Whether ``upload_id`` is this user's upload v2, which a completion call may finish."""
    row = await db.fetchrow("SELECT user_id, pending_files FROM uploads WHERE id = $1", upload_id)
    return row is not None and row["user_id"] == user_id and row["pending_files"] is not None


async def fail_unstarted(db: asyncpg.Pool, upload_id: int, message: str, status: int) -> bool:
    """Record that an upload failed before any task started it (its task could not be queued);
    False when a task has started it after all, which then decides its outcome."""
    failed = await db.fetchval(
        """UPDATE uploads SET error = $2, error_status = $3, failed_at = now(), staging_ref = NULL
           WHERE id = $1 AND attempts = 0 AND completed_at IS NULL AND failed_at IS NULL
           RETURNING id""",
        upload_id,
        message,
        status,
    )
    return failed is not None


async def unfinished_staging_refs(db: asyncpg.Pool) -> set[str]:
    """The staged archives that uploads still to be processed refer to."""
    rows = await db.fetch(
        """SELECT staging_ref FROM uploads
           WHERE staging_ref IS NOT NULL AND completed_at IS NULL AND failed_at IS NULL"""
    )
    return {r["staging_ref"] for r in rows}


@dataclass(frozen=True)
class Outcome:
    """A finished upload: the ``POST /upload/`` answer when it completed, else its error."""

    upload: dict[str, Any] | None
    error: str | None = None
    error_status: int = 400


async def wait_for_outcome(
    db: asyncpg.Pool, upload_id: int, email: str, seconds: float
) -> Outcome | None:
    """The outcome of the upload's task, or None while it is still running after ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        row = await db.fetchrow("SELECT * FROM uploads WHERE id = $1", upload_id)
        if row["completed_at"] is not None:
            return Outcome(upload_answer(row, email))
        if row["failed_at"] is not None:
            return Outcome(None, row["error"], row["error_status"] or 400)
        await asyncio.sleep(POLL_SECONDS)
    return None


def upload_answer(row: Any, email: str) -> dict[str, Any]:
    """A completed upload as ``POST /upload/`` answers it: the reference's names, not the API's."""
    return {
        "id": row["id"],
        "size": row["size"],
        "filename": row["filename"],
        "bucket": row["bucket_name"],
        "region": row["bucket_region"],
        "download_url": row["download_url"],
        "try_symbols": row["try_symbols"],
        "redirect_urls": list(row["redirect_urls"] or []),
        "completed_at": timestamp(row["completed_at"]),
        "created_at": timestamp(row["created_at"]),
        "user": email,
        "skipped_keys": list(row["skipped_keys"] or []),
    }


def summary(row: asyncpg.Record, uploader_id: bool = False) -> dict[str, Any]:
    """An upload as the listings show it; ``row`` carries the uploader's ``email``. The upload
    listing leaves out the uploader's id, the detail views show it."""
    user = {"id": row["user_id"], "email": row["email"]} if uploader_id else {"email": row["email"]}
    return {
        "id": row["id"],
        "user": user,
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


def detail(row: asyncpg.Record) -> dict[str, Any]:
    """The summary, with the uploader's id and how processing went."""
    if row["completed_at"] is not None:
        status = "completed"
    elif row["failed_at"] is not None:
        status = "failed"
    else:
        status = "processing"
    return {
        **summary(row, uploader_id=True),
        # Not in the reference: processing happens in a task, so say how it is going.
        "status": status,
        "error": row["error"],
    }


async def find(db: asyncpg.Pool, upload_id: int) -> asyncpg.Record | None:
    """The upload with its uploader's ``email``, for ``full_detail``."""
    return await db.fetchrow(WITH_EMAIL + " WHERE u.id = $1", upload_id)


def file_fields(row: asyncpg.Record) -> dict[str, Any]:
    """What a file row says the file is (see docs/upload.md, "Native debug files"): its ids,
    and for a native file its format, kind, architecture, features and other keys."""
    return {
        "debug_filename": row["debug_filename"],
        "debug_id": row["debug_id"],
        "code_file": row["code_file"],
        "code_id": row["code_id"],
        "file_format": row["file_format"],
        "kind": row["kind"],
        "arch": row["arch"],
        "features": list(row["features"] or []),
        "aliases": list(row["aliases"] or []),
    }


async def full_detail(db: asyncpg.Pool, row: asyncpg.Record) -> dict[str, Any]:
    """``GET /api/uploads/upload/<id>``: the detail, its file rows, and the same user's other
    uploads of the same archive (same size and content hash, or filename when it has none)."""
    files = await db.fetch(
        """SELECT id, bucket_name, key, update, compressed, size, completed_at, created_at,
                  debug_filename, debug_id, code_file, code_id, file_format, kind, arch,
                  features, aliases
           FROM file_uploads WHERE upload_id = $1 ORDER BY id""",
        row["id"],
    )
    related = await db.fetch(
        WITH_EMAIL
        + """ WHERE u.user_id = $1 AND u.id <> $2 AND u.size = $3
              AND (CASE WHEN $4::text IS NULL THEN u.filename = $5
                        ELSE u.content_hash = $4 END)
            ORDER BY u.created_at DESC""",
        row["user_id"],
        row["id"],
        row["size"],
        row["content_hash"],
        row["filename"],
    )
    upload = detail(row)
    upload["file_uploads"] = [
        {
            **dict(f),
            **file_fields(f),
            "completed_at": timestamp(f["completed_at"]),
            "created_at": timestamp(f["created_at"]),
        }
        for f in files
    ]
    upload["related"] = [detail(r) for r in related]
    return upload
