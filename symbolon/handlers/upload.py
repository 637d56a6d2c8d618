"""``POST /upload/``: a symbol archive, streamed to staging, processed by a task actor (spec §5).

Authentication, permission and size are decided from the headers, before the body is read.
"""

from __future__ import annotations

import asyncio
import time
import urllib.parse
import uuid
from contextlib import suppress
from pathlib import Path
from typing import Any

import tornado.web

from symbolon.handlers.base import ApiError, BaseHandler
from symbolon.jsonutil import timestamp
from symbolon.metrics import metrics
from symbolon.symbols import archive
from symbolon.tasks.broker import enqueue
from symbolon.uploads import by_url, process
from symbolon.uploads.multipart import MAX_FIELDS_BYTES, FormError, UploadForm

UPLOAD_PERMISSIONS = ("upload.upload_symbols", "upload.upload_try_symbols")
POLL_SECONDS = 0.1


def upload_json(row: Any, email: str) -> dict[str, Any]:
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


async def wait_for_upload(handler: BaseHandler, upload_id: int, email: str) -> None:
    """Answer with the outcome of the upload's task: 201, its error, or 202 when it takes long."""
    rt = handler.runtime
    if "respond-async" not in handler.request.headers.get("Prefer", ""):
        deadline = time.monotonic() + rt.settings.upload_wait_seconds
        while time.monotonic() < deadline:
            row = await rt.db.fetchrow("SELECT * FROM uploads WHERE id = $1", upload_id)
            if row["completed_at"] is not None:
                return handler.write_json({"upload": upload_json(row, email)}, status=201)
            if row["failed_at"] is not None:
                return handler.write_json(
                    {"error": row["error"]}, status=row["error_status"] or 400
                )
            await asyncio.sleep(POLL_SECONDS)
    location = f"/api/uploads/upload/{upload_id}"
    handler.set_header("Location", location)
    handler.set_header("Preference-Applied", "respond-async")
    handler.write_json({"upload": {"id": upload_id}, "status_url": location}, status=202)


@tornado.web.stream_request_body
class UploadHandler(BaseHandler):
    form: UploadForm | None = None
    urlencoded: bytearray | None = None
    rejection: tuple[int, str] | None = None
    staged: Path | None = None

    async def prepare(self) -> None:
        if self.request.method != "POST":
            raise tornado.web.HTTPError(405)
        settings = self.runtime.settings
        try:
            authenticating = super().prepare()
            if authenticating is not None:
                await authenticating
            self.authorize(*UPLOAD_PERMISSIONS)
        except ApiError as exc:
            # Read and drop the body, so that a client streaming it receives the 403.
            self.rejection = (exc.status_code, exc.message)
            self.request.connection.set_max_body_size(settings.upload_max_size)
            return
        length = int(self.request.headers.get("Content-Length", "0") or 0)
        if length > settings.upload_max_size:
            self.write_json(
                {
                    "error": f"Upload too large: {length} bytes, the limit is "
                    f"{settings.upload_max_size} bytes. Split the archive and upload the parts."
                },
                status=413,
            )
            return
        self.request.connection.set_max_body_size(settings.upload_max_size)
        settings.staging_dir.mkdir(parents=True, exist_ok=True)
        self.staged = settings.staging_dir / f"upload-{uuid.uuid4().hex}.zip"
        content_type = self.request.headers.get("Content-Type", "")
        if content_type.startswith("application/x-www-form-urlencoded"):
            self.urlencoded = bytearray()  # upload by download: a few small fields
            return
        try:
            self.form = UploadForm(content_type, self.staged)
        except FormError as exc:
            self.rejection = (400, str(exc))

    def data_received(self, chunk: bytes) -> None:
        if self.rejection is not None:
            return
        if self.urlencoded is not None:
            self.urlencoded += chunk
            if len(self.urlencoded) > MAX_FIELDS_BYTES:
                self.rejection = (400, "Form fields are too large")
            return
        if self.form is None:
            return
        try:
            self.form.feed(chunk)
        except FormError as exc:
            self.rejection = (400, str(exc))

    async def post(self) -> None:
        try:
            await self._post()
        finally:
            if self.form is not None:
                with suppress(FormError):
                    self.form.close()  # also after a rejection: the staging file is open
            if self.staged is not None and self.staged.exists() and not self._handed_over:
                self.staged.unlink()

    _handed_over = False

    async def _post(self) -> None:
        if self.form is not None and self.rejection is None:
            try:
                self.form.close()
            except FormError as exc:
                self.rejection = (400, str(exc))
        if self.rejection is not None:
            status, message = self.rejection
            return self.write_json({"error": message}, status=status)
        assert self.principal is not None and self.staged is not None
        if self.urlencoded is not None:
            parsed = urllib.parse.parse_qs(self.urlencoded.decode("utf-8", "replace"))
            fields = {k: v[0] for k, v in parsed.items()}
            file_field = None
        else:
            assert self.form is not None
            fields, file_field = self.form.fields, self.form.file_field
        url = fields.get("url", "").strip()
        if file_field is None and not url:
            return self.write_json(
                {"error": "Must be multipart form data with at least one file"}, status=400
            )
        rt = self.runtime
        if file_field is None:
            try:
                by_url.FetchPolicy.from_settings(rt.settings).check_url(url)
            except by_url.FetchError as exc:
                return self.write_json({"error": exc.message}, status=exc.status)
        name = file_field if file_field is not None else by_url.archive_name(url)
        if not name.lower().endswith(".zip"):
            extension = "." + name.rsplit(".", 1)[-1] if "." in name else ""
            return self.write_json(
                {"error": f'Unrecognized archive file extension "{extension}"'}, status=400
            )
        principal = self.principal
        # A token that may only upload try symbols always uploads into try storage (§0.1).
        if not principal.has("upload.upload_symbols"):
            try_symbols = True
        else:
            try_symbols = bool(fields.get("try", ""))
        content_hash = None
        if file_field is not None:
            try:
                zf, members = await asyncio.to_thread(process.inspect_file, rt, self.staged)
                zf.close()
            except archive.ArchiveError as exc:
                return self.write_json({"error": str(exc)}, status=400)
            content_hash = archive.content_hash(members)
        destination = rt.storage.upload_destination(principal.user.email, try_symbols)
        if fields.get("bucket_name") and not try_symbols:
            # The web UI's choice among the locations this user may upload to (§5.5). Try
            # symbols always go to the try location: the choice is for regular uploads.
            possible = rt.storage.possible_upload_sources(
                principal.user.email, principal.user.is_superuser
            )
            chosen = [p for p in possible if fields["bucket_name"] in p.url]
            if not chosen:
                return self.write_json({"error": "No valid bucket"}, status=403)
            destination = chosen[0]
        staging_ref = None
        if file_field is not None:
            staging_ref = await rt.staging.put(self.staged)
            # When staging copied it elsewhere, the local file is removed below as usual.
            self._handed_over = not rt.staging.moves_files
        upload_id = await rt.db.fetchval(
            """INSERT INTO uploads (user_id, filename, bucket_name, bucket_region,
                                    bucket_endpoint_url, size, content_hash, try_symbols,
                                    staging_ref, destination_url, download_url)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id""",
            principal.user.id,
            name[:100],
            destination.bucket,
            destination.region,
            destination.endpoint_url,
            self.form.file_size if file_field is not None and self.form else 0,
            content_hash,
            try_symbols,
            staging_ref,
            destination.url,
            None if file_field is not None else url,
        )
        import symbolon.tasks.actors as actors

        await enqueue(actors.process_upload, upload_id)
        metrics.incr("upload_archive")
        await wait_for_upload(self, upload_id, principal.user.email)

    def allowed_methods(self) -> list[str]:
        return ["POST"]


ROUTES = [(r"/upload/", UploadHandler)]
