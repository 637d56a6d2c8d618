"""``/uploads/``: uploads and the files they stored, as ``/api/uploads/…`` shows them to the same
caller (handlers/api_uploads.py): your own uploads, everyone's with ``upload.view_all_uploads``;
every file (``/uploads/files/``) with that permission only; an upload or a file of yours, or
anyone's with it. ``/uploads/upload`` uploads from the browser, through ``POST /upload/``'s own
handler (``upload_now.py``)."""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from typing import Any

from symbolon.accounts.auth import Principal
from symbolon.accounts.permissions import Permission
from symbolon.filters import FilterError, page_number
from symbolon.handlers.base import object_id
from symbolon.jsonutil import timestamp
from symbolon.stats import human_size
from symbolon.uploads import listing, records
from symbolon.web.page import PageError, PageHandler
from symbolon.web.pages.shown import duration, query_of, shown_time, sorted_url
from symbolon.web.parts import Code, Column, Link, Pager, Table

UPLOADS = "/uploads/"
FILES = "/uploads/files/"
UPLOAD_NOW = "/uploads/upload"
UPLOAD_PERMISSIONS = (Permission.UPLOAD_SYMBOLS, Permission.UPLOAD_TRY_SYMBOLS)

# (name, label, example or choices): the API's filters, as the filter forms offer them.
UPLOAD_FILTERS: tuple[tuple[str, str, Any], ...] = (
    ("user", "Uploader", "alice@example.com, !ci@"),
    ("size", "Size", ">=10mb"),
    ("created_at", "Uploaded", ">=2025-01-31, today"),
    ("completed_at", "Completed", "<yesterday"),
)
FILE_FILTERS: tuple[tuple[str, str, Any], ...] = (
    ("key", "Key", "xul.pdb, libxul"),
    ("size", "Size", ">1kb"),
    ("created_at", "Stored", ">=2025-01-31"),
    ("completed_at", "Completed", "<today"),
    ("bucket_name", "Bucket", "symbols, !try"),
    ("upload_type", "Kind", (("", "Any"), ("regular", "Regular"), ("try", "Try"))),
)
UPLOAD_COLUMNS = (
    Column("id", "Upload"),
    Column("user", "Uploader"),
    Column("filename", "Archive"),
    Column("size", "Size", sort="size", numeric=True),
    Column("files", "Files", numeric=True),
    Column("kind", "Kind"),
    Column("created_at", "Uploaded", sort="created_at", time=True),
    Column("completed_at", "Completed", time=True),
)
FILE_COLUMNS = (
    Column("key", "Key", wrap=True),
    Column("size", "Size", numeric=True),
    Column("bucket", "Bucket"),
    Column("kind", "Kind"),
    Column("user", "Uploader"),
    Column("upload", "Upload"),
    Column("created_at", "Stored", time=True),
    Column("completed_at", "Completed", time=True),
)


def upload_link(upload_id: int) -> Link:
    return Link(f"#{upload_id}", f"{UPLOADS}upload/{upload_id}")


def file_link(file_id: int, text: str) -> Link:
    return Link(text, f"{FILES}file/{file_id}")


def kind(try_symbols: bool | None) -> str:
    return "try" if try_symbols else "regular"


def filter_error(exc: FilterError, filters: tuple[tuple[str, str, Any], ...]) -> str:
    labels = {name: label for name, label, _ in filters}
    return f"{labels.get(exc.field, exc.field.replace('_', ' ').capitalize())}: {exc.message}"


def api_path(path: str, params: Mapping[str, str]) -> str:
    query = urllib.parse.urlencode(params)
    return f"{path}?{query}" if query else path


def can_upload(principal: Principal) -> bool:
    return any(principal.has(p) for p in UPLOAD_PERMISSIONS)


class UploadsPage(PageHandler):
    """``GET /uploads/[?mine]``: your uploads, or everyone's with view-all; 20 a page."""

    title = "Uploads"
    nav = UPLOADS

    async def get(self) -> None:
        principal = self.require_signin()
        view_all = principal.has(Permission.VIEW_ALL_UPLOADS)
        mine = not view_all or "mine" in self.request.query_arguments
        # Only everyone's uploads are filtered by uploader.
        filtered = (n for n, _, _ in UPLOAD_FILTERS if not (mine and n == "user"))
        names = (*filtered, "sort", "reverse", "page")
        error = None
        db, user_id = self.runtime.db, principal.user.id
        try:
            params = query_of(self.request.query_arguments, names)
            body = await listing.list_uploads(db, params, user_id, not mine)
        except FilterError as exc:
            error = filter_error(exc, UPLOAD_FILTERS)
            params = {}
            body = await listing.list_uploads(db, params, user_id, not mine)
        sort, reverse = body["order_by"]["sort"], body["order_by"]["reverse"]
        rows = [
            {
                "id": upload_link(u["id"]),
                "user": u["user"]["email"],
                "filename": Code(u["filename"]) if u["filename"] else None,
                "size": human_size(u["size"]),
                "files": f"{u['files_count']:,}"
                + (
                    f" (+{u['files_incomplete_count']:,} unfinished)"
                    if u["files_incomplete_count"]
                    else ""
                ),
                "kind": kind(u["try_symbols"]),
                "created_at": shown_time(u["created_at"]),
                "completed_at": shown_time(u["completed_at"]) or "not yet",
            }
            for u in body["uploads"]
        ]
        filters = {k: v for k, v in params.items() if k not in ("sort", "reverse", "page")}
        kept = {**filters, **({"mine": "1"} if mine and view_all else {})}
        ordered = {k: v for k, v in params.items() if k in ("sort", "reverse")}
        page = page_number(params.get("page"))
        pager = Pager(page, body["batch_size"], body["total"], UPLOADS, {**kept, **ordered})
        table = Table(
            columns=UPLOAD_COLUMNS if not mine else [c for c in UPLOAD_COLUMNS if c.key != "user"],
            rows=rows,
            caption="Your uploads" if mine else "Everyone's uploads",
            empty=pager.empty("No uploads match." if filters else "No uploads yet."),
            sort=sort,
            reverse=reverse,
            sort_url=sorted_url(UPLOADS, kept),
        )
        self.curl(
            api_path("/api/uploads/", params),
            "Your uploads (everyone's with “View all uploads”), 20 a page:",
            auth=True,
        )
        self.page(
            "uploads.html",
            status=400 if error else 200,
            error=error,
            mine=mine,
            view_all=view_all,
            can_upload=can_upload(principal),
            filters=[f for f in UPLOAD_FILTERS if not (mine and f[0] == "user")],
            values=filters,
            sort=sort,
            reverse=reverse,
            table=table,
            counted=body["total"] != listing.UNCOUNTED_TOTAL,
            pager=pager,
            has_next=body["has_next"],
        )


class FilesPage(PageHandler):
    """``GET /uploads/files/``: every stored file, newest first; ``upload.view_all_uploads``."""

    title = "Uploaded files"
    nav = UPLOADS

    async def get(self) -> None:
        principal = self.require(Permission.VIEW_ALL_UPLOADS)
        names = (*(n for n, _, _ in FILE_FILTERS), "page")
        error = None
        try:
            params = query_of(self.request.query_arguments, names)
            body = await listing.list_files(self.runtime.db, params)
        except FilterError as exc:
            error = filter_error(exc, FILE_FILTERS)
            params = {}
            body = await listing.list_files(self.runtime.db, params)
        rows = []
        for f in body["files"]:
            upload = f["upload"]
            rows.append(
                {
                    "key": file_link(f["id"], f["key"]),
                    "size": human_size(f["size"]),
                    "bucket": f["bucket_name"],
                    "kind": kind(upload["try_symbols"]) if upload else None,
                    "user": upload["user"]["email"] if upload else None,
                    "upload": upload_link(upload["id"]) if upload else None,
                    "created_at": shown_time(f["created_at"]),
                    "completed_at": shown_time(f["completed_at"]) or "not yet",
                }
            )
        filters = {k: v for k, v in params.items() if k != "page"}
        pager = Pager(
            page_number(params.get("page")), body["batch_size"], body["total"], FILES, filters
        )
        self.curl(
            api_path("/api/uploads/files/", params), "Every stored file, 40 a page:", auth=True
        )
        self.page(
            "files.html",
            status=400 if error else 200,
            error=error,
            can_upload=can_upload(principal),
            filters=FILE_FILTERS,
            values=filters,
            table=Table(
                columns=FILE_COLUMNS,
                rows=rows,
                caption="Stored files",
                empty=pager.empty("No files match." if filters else "No files stored yet."),
            ),
            counted=body["total"] != listing.UNCOUNTED_TOTAL,
            pager=pager,
            has_next=body["has_next"],
        )


class UploadPage(PageHandler):
    """``GET /uploads/upload/<id>``: an upload of yours, or anyone's with view-all."""

    title = "Upload"
    nav = UPLOADS

    async def get(self, upload_id: str) -> None:
        principal = self.require_signin()
        db = self.runtime.db
        ident = object_id(upload_id, "Upload")
        row = await records.find(db, ident)
        if row is None:
            raise PageError(404, f"There is no upload #{ident}.")
        if row["user_id"] != principal.user.id and not principal.has(Permission.VIEW_ALL_UPLOADS):
            raise PageError(
                403,
                "This upload is someone else's: seeing it needs the “View all uploads” permission.",
            )
        upload = await records.full_detail(db, row)
        self.title = f"Upload #{ident}"
        files = Table(
            columns=(
                Column("key", "Key", wrap=True),
                Column("size", "Size", numeric=True),
                Column("compressed", "Compressed"),
                Column("update", "Replaced an earlier file"),
                Column("completed_at", "Stored", time=True),
            ),
            rows=[
                {
                    "key": file_link(f["id"], f["key"]),
                    "size": human_size(f["size"]),
                    "compressed": "yes" if f["compressed"] else "no",
                    "update": "yes" if f["update"] else "no",
                    "completed_at": shown_time(f["completed_at"]) or "not yet",
                }
                for f in upload["file_uploads"]
            ],
            empty="No file stored by this upload.",
        )
        related = Table(
            columns=(
                Column("id", "Upload"),
                Column("status", "Status"),
                Column("kind", "Kind"),
                Column("created_at", "Uploaded", time=True),
            ),
            rows=[
                {
                    "id": upload_link(r["id"]),
                    "status": r["status"],
                    "kind": kind(r["try_symbols"]),
                    "created_at": shown_time(r["created_at"]),
                }
                for r in upload["related"]
            ],
            empty="None.",
        )
        ended = upload["completed_at"] or timestamp(row["failed_at"])
        self.curl(f"/api/uploads/upload/{ident}", "This upload:", auth=True)
        self.page(
            "upload.html",
            upload=upload,
            attempts=row["attempts"],
            failed_at=timestamp(row["failed_at"]),
            took=duration(upload["created_at"], ended),
            files=files,
            related=related,
            shown_time=shown_time,
        )


class FilePage(PageHandler):
    """``GET /uploads/files/file/<id>``: a stored file of yours, or anyone's with view-all."""

    title = "Uploaded file"
    nav = UPLOADS

    async def get(self, file_id: str) -> None:
        principal = self.require_signin()
        ident = object_id(file_id, "FileUpload")
        found = await listing.file_detail(self.runtime.db, ident)
        if found is None:
            raise PageError(404, f"There is no stored file #{ident}.")
        body, owner_id = found
        if owner_id != principal.user.id and not principal.has(Permission.VIEW_ALL_UPLOADS):
            raise PageError(
                403,
                "This file is someone else's: seeing it needs the “View all uploads” permission.",
            )
        self.title = f"File #{ident}"
        self.curl(f"/api/uploads/files/file/{ident}", "This file:", auth=True)
        download = self.absolute_url(body["url"])
        self.curl(
            body["url"], "Whether the file can be downloaded (no token needed):", method="HEAD"
        )
        self.page(
            "file.html",
            file=body,
            download=download,
            shown_time=shown_time,
        )


ROUTES = [
    (UPLOADS, UploadsPage),
    (FILES, FilesPage),
    (r"/uploads/upload/(\d+)", UploadPage),
    (r"/uploads/files/file/(\d+)", FilePage),
]
