"""``GET /api/uploads/upload/<id>``: an upload, its files, and how its processing went (§7.7)."""

from __future__ import annotations

from typing import Any

import asyncpg

from symbolon.handlers.base import ApiError, BaseHandler
from symbolon.jsonutil import timestamp

UPLOAD_QUERY = """SELECT u.*, s.email FROM uploads u JOIN users s ON s.id = u.user_id"""


def upload_detail(row: asyncpg.Record) -> dict[str, Any]:
    if row["completed_at"] is not None:
        status = "completed"
    elif row["failed_at"] is not None:
        status = "failed"
    else:
        status = "processing"
    return {
        "id": row["id"],
        "filename": row["filename"],
        "user": {"id": row["user_id"], "email": row["email"]},
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
        # Not in the reference: processing happens in a task, so say how it is going.
        "status": status,
        "error": row["error"],
    }


class UploadDetailHandler(BaseHandler):
    async def get(self, upload_id: str) -> None:
        principal = self.authorize()
        db = self.runtime.db
        row = await db.fetchrow(UPLOAD_QUERY + " WHERE u.id = $1", int(upload_id))
        if row is None:
            raise ApiError(404, "No Upload matches the given query.")
        if row["user_id"] != principal.user.id and not principal.has("upload.view_all_uploads"):
            raise ApiError(403, "Insufficient access to view this upload")
        files = await db.fetch(
            """SELECT id, bucket_name, key, update, compressed, size, completed_at, created_at
               FROM file_uploads WHERE upload_id = $1 ORDER BY id""",
            row["id"],
        )
        related = await db.fetch(
            UPLOAD_QUERY
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
        upload = upload_detail(row)
        upload["file_uploads"] = [
            {
                **dict(f),
                "completed_at": timestamp(f["completed_at"]),
                "created_at": timestamp(f["created_at"]),
            }
            for f in files
        ]
        upload["related"] = [upload_detail(r) for r in related]
        self.write_json({"upload": upload})


ROUTES = [(r"/api/uploads/upload/(\d+)", UploadDetailHandler)]
