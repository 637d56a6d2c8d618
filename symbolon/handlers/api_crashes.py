"""``/api/crashes/…``: processed crashes, their lists and top signatures; ``POST /minidump``: a
dump walked and symbolicated on the spot (docs/processing.md, "The JSON API").

Annotations and dumps can hold personal data: a raw or processed crash is shown only to callers
holding ``crashes.view_crashes``; the lists need only sign-in or a token.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from symbolon.accounts.permissions import Permission
from symbolon.conf import Settings
from symbolon.crashes.store import StorageError
from symbolon.filters import FilterError
from symbolon.handlers.base import RETRY_AFTER_SECONDS, ApiError, BaseHandler, ReadHandler
from symbolon.processing.pipeline import records
from symbolon.processing.pipeline.sandbox import WalkUnavailable

logger = logging.getLogger("symbolon.processing")
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
            self.set_header("Retry-After", str(RETRY_AFTER_SECONDS))
            raise ApiError(503, f"The crash store cannot be read: {exc}") from None
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


class MinidumpHandler(BaseHandler):
    """``POST /minidump``: a multipart ``upload_file_minidump`` (and annotations as other fields)
    walked, symbolicated and answered as a processed crash; nothing is stored."""

    @classmethod
    def max_body_size(cls, settings: Settings) -> int:
        return settings.collector_max_body_size

    async def post(self) -> None:
        self.authorize()
        files = self.request.files.get(MINIDUMP_FIELD)
        if not files:
            raise ApiError(400, f"The form has no {MINIDUMP_FIELD} file")
        annotations: dict[str, Any] = {
            name: values[-1].decode("utf-8", "replace")
            for name, values in self.request.body_arguments.items()
            if values and name != "csrf_token"
        }
        meta = records.meta_of(annotations, None)
        try:
            processed = await self.runtime.processor.process_dump(files[0]["body"], None, meta)
        except WalkUnavailable as exc:
            logger.warning("POST /minidump: no walk could be had: %s", exc)
            # Written here: an error page would drop the Retry-After header.
            self.set_header("Retry-After", str(RETRY_AFTER_SECONDS))
            return self.write_json({"error": "The dump cannot be walked now; try again later"}, 503)
        if processed.failure is not None:
            raise ApiError(400, f"The minidump cannot be processed: {processed.failure}")
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(processed.document))


ROUTES = [
    (r"/api/crashes/", CrashesHandler),
    (r"/api/crashes/signatures/", SignaturesHandler),
    (rf"/api/crashes/{CRASH_ID}", CrashHandler),
    (r"/minidump", MinidumpHandler),
]
