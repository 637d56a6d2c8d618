"""``/api/uploads/…``: uploads, the files they stored, and uploads per day (see docs/upload.md,
"Uploads in the JSON API", and docs/accounts.md, "JSON API")."""

from __future__ import annotations

from symbolon.accounts.permissions import Permission
from symbolon.filters import FilterError
from symbolon.handlers.base import ApiError, ReadHandler, object_id
from symbolon.uploads import daily, listing, records


class UploadDetailHandler(ReadHandler):
    """``GET /api/uploads/upload/<id>``: an upload, its files, and how its processing went."""

    async def get(self, upload_id: str) -> None:
        principal = self.authorize()
        db = self.runtime.db
        row = await records.find(db, object_id(upload_id, "Upload"))
        if row is None:
            raise ApiError(404, "No Upload matches the given query.")
        if row["user_id"] != principal.user.id and not principal.has(Permission.VIEW_ALL_UPLOADS):
            raise ApiError(403, "Insufficient access to view this upload")
        upload = await records.full_detail(db, row)
        self.write_json({"upload": upload})


class _ListingHandler(ReadHandler):
    def params(self) -> dict[str, str]:
        return {k: self.get_query_argument(k) for k in self.request.query_arguments}


class UploadsHandler(_ListingHandler):
    """``GET /api/uploads/``: yours, or everyone's with ``upload.view_all_uploads``."""

    async def get(self) -> None:
        principal = self.authorize()
        try:
            body = await listing.list_uploads(
                self.runtime.db,
                self.params(),
                principal.user.id,
                principal.has(Permission.VIEW_ALL_UPLOADS),
            )
        except FilterError as exc:
            return self.write_json(exc.body(), status=400)
        self.write_json(body)


class FilesHandler(_ListingHandler):
    """``GET /api/uploads/files/``: every stored file; ``upload.view_all_uploads`` only."""

    async def get(self) -> None:
        self.authorize(Permission.VIEW_ALL_UPLOADS)
        try:
            body = await listing.list_files(self.runtime.db, self.params())
        except FilterError as exc:
            return self.write_json(exc.body(), status=400)
        self.write_json(body)


class UploadsCreatedHandler(_ListingHandler):
    """``GET /api/uploads/created/``: uploads per UTC day; ``upload.view_all_uploads`` only."""

    async def get(self) -> None:
        self.authorize(Permission.VIEW_ALL_UPLOADS)
        try:
            body = await daily.uploads_created(self.runtime.db, self.params())
        except FilterError as exc:
            return self.write_json(exc.body(), status=400)
        self.write_json(body)


class UploadsCreatedBackfilledHandler(ReadHandler):
    """``GET``/``POST /api/uploads/created/backfilled/``: superusers only. The daily rows are
    computed when asked for, so there is never anything to backfill: a ``POST`` (its ``days``
    and ``force`` are accepted and have nothing to do) updates no row."""

    async def get(self) -> None:
        self.superuser()
        self.write_json(await daily.backfill_report(self.runtime.db))

    async def post(self) -> None:
        self.superuser()
        body = await daily.backfill_report(self.runtime.db)
        self.write_json({**body, "updated": []})

    def superuser(self) -> None:
        """A signed-in superuser, by session or by one of the superuser's tokens (as the
        reference: being a superuser is a property of the account, not a token permission)."""
        if not self.authorize().user.is_superuser:
            raise ApiError(403, "Forbidden")


class FileDetailHandler(ReadHandler):
    """``GET /api/uploads/files/file/<id>``: a file of yours, or any with view-all."""

    async def get(self, file_id: str) -> None:
        principal = self.authorize()
        found = await listing.file_detail(self.runtime.db, object_id(file_id, "FileUpload"))
        if found is None:
            raise ApiError(404, "No FileUpload matches the given query.")
        body, owner_id = found
        if owner_id != principal.user.id and not principal.has(Permission.VIEW_ALL_UPLOADS):
            raise ApiError(403, "Insufficient access to view this file")
        self.write_json({"file": body})


class PossibleUploadUrlsHandler(ReadHandler):
    """``GET /api/uploads/_possible_upload_urls/``: where the UI's upload form may send a file
    (see docs/upload.md, "Where an upload goes"), one entry per bucket."""

    async def get(self) -> None:
        principal = self.authorize()
        self.write_json({"urls": records.bucket_choices(self.runtime.storage, principal)})


ROUTES = [
    (r"/api/uploads/", UploadsHandler),
    (r"/api/uploads/_possible_upload_urls/", PossibleUploadUrlsHandler),
    (r"/api/uploads/upload/(\d+)", UploadDetailHandler),
    (r"/api/uploads/created/", UploadsCreatedHandler),
    (r"/api/uploads/created/backfilled/", UploadsCreatedBackfilledHandler),
    (r"/api/uploads/files/", FilesHandler),
    (r"/api/uploads/files/file/(\d+)", FileDetailHandler),
]
