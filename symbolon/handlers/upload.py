"""``POST /upload/``: a symbol archive, streamed to staging, processed by a task actor.

Authentication, permission and size are decided from the headers, before the body is read; what
the body holds is checked by ``uploads.intake`` and recorded by ``uploads.records`` (see
docs/upload.md).
"""

from __future__ import annotations

import urllib.parse
import uuid
from contextlib import suppress
from pathlib import Path
from typing import cast

import tornado.web
from tornado.http1connection import HTTP1Connection

from symbolon.accounts.permissions import Permission
from symbolon.handlers.base import RETRY_AFTER_SECONDS, ApiError, BaseHandler, declared_length
from symbolon.metrics import metrics
from symbolon.tasks.broker import QueueUnavailable, send_within
from symbolon.uploads import intake, records
from symbolon.uploads.multipart import MAX_FIELDS_BYTES, FormError, UploadForm

UPLOAD_PERMISSIONS = (Permission.UPLOAD_SYMBOLS, Permission.UPLOAD_TRY_SYMBOLS)
# How long a request tries to queue its task before it gives up and answers 503.
ENQUEUE_SECONDS = 5.0
# Tornado's own body limit answers a bare 400 and closes; the handler counts instead, to answer
# the JSON 413 (and remove what it staged) as soon as a chunked body passes UPLOAD_MAX_SIZE.
UNLIMITED = 1 << 62


async def wait_for_upload(handler: BaseHandler, upload_id: int, email: str) -> None:
    """Answer with the outcome of the upload's task: 201, its error, or 202 when it takes long."""
    rt = handler.runtime
    if "respond-async" not in handler.request.headers.get("Prefer", ""):
        outcome = await records.wait_for_outcome(
            rt.db, upload_id, email, rt.settings.upload_wait_seconds
        )
        if outcome is not None and outcome.upload is not None:
            return handler.write_json({"upload": outcome.upload}, status=201)
        if outcome is not None:  # failed
            return handler.write_json({"error": outcome.error}, status=outcome.error_status)
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
    received = 0
    body_complete = False

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
            # Read and drop the body, so that a client streaming it receives the 403; one
            # declared past the limit is answered at once (Tornado would answer a bare 400).
            self.rejection = (exc.status_code, exc.message)
            self._allow_body(UNLIMITED)
            if (declared_length(self.request.headers.get("Content-Length", "0")) or 0) > (
                settings.upload_max_size
            ):
                self.write_json({"error": exc.message}, status=exc.status_code)
            return
        length = declared_length(self.request.headers.get("Content-Length", "0")) or 0
        if length > settings.upload_max_size:
            self._allow_body(UNLIMITED)  # the answer alone, not Tornado's bare 400 after it
            self.write_json(
                {
                    "error": f"Upload too large: {length} bytes, the limit is "
                    f"{settings.upload_max_size} bytes. Split the archive and upload the parts."
                },
                status=413,
            )
            return
        self._allow_body(UNLIMITED)
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

    def _allow_body(self, size: int) -> None:
        # Served by Tornado's HTTP/1 server, whose connection lets a handler raise the limit.
        cast(HTTP1Connection, self.request.connection).set_max_body_size(size)

    def data_received(self, chunk: bytes) -> None:
        self.received += len(chunk)
        limit = self.runtime.settings.upload_max_size
        if self.received > limit and not self._finished:
            self._discard()
            # The first problem found is the answer (a 403 stays a 403); Tornado then closes
            # the connection, so the rest of the body is not read.
            status, message = self.rejection or (
                413,
                f"Upload too large: the body passed the limit of {limit} bytes. "
                "Split the archive and upload the parts.",
            )
            self.rejection = (status, message)
            self.write_json({"error": message}, status=status)
            return
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

    def on_connection_close(self) -> None:
        super().on_connection_close()
        if not self.body_complete:  # the client went away mid-body: post() will not run
            self._discard()

    def _discard(self) -> None:
        """Close and remove the staging file, unless a queued task now owns it."""
        if self.form is not None:
            with suppress(Exception):
                self.form.close()  # also after a rejection: the staging file is open
        if self.staged is not None and not self._handed_over:
            self.staged.unlink(missing_ok=True)

    async def post(self) -> None:
        self.body_complete = True
        if self._finished:
            return  # answered while the body arrived (413)
        try:
            await self._post()
        finally:
            self._discard()

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
        rt, principal = self.runtime, self.principal
        try:
            accepted = await intake.accept(rt, principal, fields, file_field, self.staged)
        except intake.Refused as exc:
            return self.write_json({"error": exc.message}, status=exc.status)
        staging_ref = None
        try:
            if file_field is not None:
                staging_ref = await rt.staging.put(self.staged)
            upload_id = await records.create_archive_upload(
                rt.db,
                principal.user.id,
                accepted.place,
                filename=accepted.filename,
                size=self.form.file_size if file_field is not None and self.form else 0,
                content_hash=accepted.content_hash,
                staging_ref=staging_ref,
                download_url=accepted.download_url,
            )
        except BaseException:
            if staging_ref is not None and rt.staging.moves_files:
                await rt.staging.delete(staging_ref)  # a local file goes in post()
            raise
        import symbolon.tasks.actors as actors

        actor = actors.fetch_upload if accepted.download_url else actors.process_upload
        try:
            await send_within(actor, upload_id, seconds=ENQUEUE_SECONDS)
        except QueueUnavailable:
            message = "The task queue is unavailable: the upload was not processed. Try again."
            if await records.fail_unstarted(rt.db, upload_id, message, 503):
                if staging_ref is not None:
                    await rt.staging.delete(staging_ref)
                self.set_header("Retry-After", str(RETRY_AFTER_SECONDS))
                return self.write_json({"error": message}, status=503)
            # A task started it after all (the message arrived late): its outcome decides.
        # When staging copied it elsewhere, the local file is removed in post() as usual.
        self._handed_over = staging_ref is not None and not rt.staging.moves_files
        metrics.incr("upload_archive")
        await wait_for_upload(self, upload_id, principal.user.email)

    def allowed_methods(self) -> list[str]:
        return ["POST"]


ROUTES = [(r"/upload/", UploadHandler)]
