"""``/api/crashes/…``: processed crashes, their lists and top signatures; ``POST /minidump``: a
dump walked and symbolicated on the spot (docs/processing.md, "The JSON API").

Annotations and dumps can hold personal data: a raw or processed crash is shown only to callers
holding ``crashes.view_crashes``; the lists need only sign-in or a token.
"""

from __future__ import annotations

import json
import logging
from typing import Any, cast

import tornado.web
from tornado import httputil
from tornado.http1connection import HTTP1Connection

from symbolon.accounts.permissions import Permission
from symbolon.crashes.store import StorageError
from symbolon.filters import FilterError
from symbolon.handlers.base import (
    RETRY_AFTER_SECONDS,
    ApiError,
    BaseHandler,
    ReadHandler,
    declared_length,
)
from symbolon.processing.pipeline import records
from symbolon.processing.pipeline.sandbox import WalkUnavailable

logger = logging.getLogger("symbolon.processing")
UNLIMITED_BODY = 2**62
CRASH_ID = r"([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
MINIDUMP_FIELD = "upload_file_minidump"


class _ListingHandler(ReadHandler):
    def params(self) -> dict[str, str]:
        return {k: self.get_query_argument(k) for k in self.request.query_arguments}


class CrashesHandler(_ListingHandler):
    """``GET /api/crashes/``: the crash index, newest first, filtered."""

    async def get(self) -> None:
        self.authorize()
        try:
            body = await records.list_crashes(self.runtime.db, self.params())
        except FilterError as exc:
            return self.write_json(exc.body(), status=400)
        self.write_json(body)


class SignaturesHandler(_ListingHandler):
    """``GET /api/crashes/signatures/``: the most frequent signatures over a window."""

    async def get(self) -> None:
        self.authorize()
        try:
            body = await records.top_signatures(self.runtime.db, self.params())
        except FilterError as exc:
            return self.write_json(exc.body(), status=400)
        self.write_json(body)


class CrashHandler(ReadHandler):
    """``GET /api/crashes/<crash_id>``: its state, and with ``view_crashes`` the raw and
    processed crash."""

    async def get(self, crash_id: str) -> None:
        principal = self.authorize()
        row = await records.find(self.runtime.db, crash_id)
        processor = self.runtime.processor
        raw_crash = processed_crash = None
        try:
            if principal.has(Permission.VIEW_CRASHES):
                raw_crash, processed_crash = await processor.load(crash_id)
                stored = raw_crash is not None
            else:
                raw = None if row is not None else await processor.storage.load_raw_crash(crash_id)
                stored = row is not None or raw is not None
        except StorageError as exc:
            # The error names paths and buckets: for the logs, not for callers.
            logger.error("%s: the crash store cannot be read: %s", crash_id, exc)
            self.set_header("Retry-After", str(RETRY_AFTER_SECONDS))
            return self.write_json(
                {"error": "The crash store cannot be read; try again later"}, status=503
            )
        if row is None and not stored:
            raise ApiError(404, "No crash matches the given query.")
        self.write_json(
            {
                "crash_id": crash_id,
                # Stored and not yet processed: the processor has not reached it.
                "state": row["state"] if row is not None else "pending",
                "reason": row["reason"] if row is not None else None,
                "signature": row["signature"] if row is not None else None,
                "raw_crash": raw_crash,
                "processed_crash": processed_crash,
            }
        )


@tornado.web.stream_request_body
class MinidumpHandler(BaseHandler):
    """``POST /minidump``: a multipart ``upload_file_minidump`` (and annotations as other fields)
    walked, symbolicated and answered as a processed crash; nothing is stored.

    The caller is authenticated before the body is read, and the body, at most
    PROCESSOR_MINIDUMP_MAX_BODY_SIZE, counts against the bytes all such bodies of the process may
    hold together (PROCESSOR_MINIDUMP_BUDGET)."""

    chunks: list[bytes]
    received = 0
    reserved = 0
    rejection: tuple[int, str] | None = None

    async def prepare(self) -> None:
        self.chunks = []
        if self.request.method != "POST":
            raise tornado.web.HTTPError(405)
        limit = self.runtime.settings.processor_minidump_max_body_size
        declared = declared_length(self.request.headers.get("Content-Length", "0"))
        try:
            authenticating = super().prepare()
            if authenticating is not None:
                await authenticating
            self.authorize()
            if declared is not None and declared > limit:
                raise ApiError(
                    413, f"Request body too large: {declared} bytes, the limit is {limit} bytes"
                )
        except ApiError as exc:
            self._allow_body(UNLIMITED_BODY)  # the answer, not Tornado's bare 400
            if (declared or 0) > limit:
                self.write_json({"error": exc.message}, status=exc.status_code)
            else:  # read and dropped, so that a client still sending reads the answer
                self.rejection = (exc.status_code, exc.message)
            return
        wanted = declared if declared is not None else limit
        if not self.runtime.processor.minidump_bodies.take(wanted):
            self._allow_body(UNLIMITED_BODY)
            self.rejection = (503, "Too many dumps are being received; try again later")
            return
        self.reserved = wanted
        self._allow_body(UNLIMITED_BODY)  # counted in data_received

    def _allow_body(self, size: int) -> None:
        cast(HTTP1Connection, self.request.connection).set_max_body_size(size)

    def data_received(self, chunk: bytes) -> None:
        if self.rejection is not None or self._finished:
            return
        self.received += len(chunk)
        limit = self.runtime.settings.processor_minidump_max_body_size
        if self.received > limit:  # a chunked body: declared no length
            self.chunks = []
            self._release()
            self.write_json(
                {"error": f"Request body too large: the limit is {limit} bytes"}, status=413
            )
            return
        self.chunks.append(chunk)

    async def post(self) -> None:
        if self.rejection is not None:
            status, message = self.rejection
            if status == 503:
                self.set_header("Retry-After", str(RETRY_AFTER_SECONDS))
            return self.write_json({"error": message}, status=status)
        body, self.chunks = b"".join(self.chunks), []
        arguments: dict[str, list[bytes]] = {}
        files: dict[str, list[httputil.HTTPFile]] = {}
        try:
            httputil.parse_body_arguments(
                self.request.headers.get("Content-Type", ""), body, arguments, files
            )
        except httputil.HTTPInputError as exc:
            raise ApiError(400, f"The body is not a form this route reads: {exc}") from None
        del body
        dumps = files.get(MINIDUMP_FIELD)
        if not dumps:
            raise ApiError(400, f"The form has no {MINIDUMP_FIELD} file")
        annotations: dict[str, Any] = {
            name: values[-1].decode("utf-8", "replace")
            for name, values in arguments.items()
            if values and name != "csrf_token"
        }
        meta = records.meta_of(annotations, None)
        try:
            processed = await self.runtime.processor.process_dump(dumps[0]["body"], None, meta)
        except WalkUnavailable as exc:
            logger.warning("POST /minidump: no walk could be had: %s", exc)
            # Written here: an error page would drop the Retry-After header.
            self.set_header("Retry-After", str(RETRY_AFTER_SECONDS))
            return self.write_json({"error": "The dump cannot be walked now; try again later"}, 503)
        if processed.failure is not None:
            raise ApiError(400, f"The minidump cannot be processed: {processed.failure}")
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(processed.document))

    def _release(self) -> None:
        if self.reserved:
            self.runtime.processor.minidump_bodies.give_back(self.reserved)
            self.reserved = 0

    def on_finish(self) -> None:
        self._release()

    def on_connection_close(self) -> None:
        super().on_connection_close()
        self.chunks = []
        self._release()


ROUTES = [
    (r"/api/crashes/", CrashesHandler),
    (r"/api/crashes/signatures/", SignaturesHandler),
    (rf"/api/crashes/{CRASH_ID}", CrashHandler),
    (r"/minidump", MinidumpHandler),
]
