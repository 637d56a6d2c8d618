"""Objects of directory locations, served by this server: ``GET|HEAD|PUT
/storage/<location_id>/<key>`` (docs/download.md, "Directory locations").

Downloads of a directory location redirect here, as those of a bucket redirect to S3; a private
location's URLs are signed (storage/signing.py), and so is every ``PUT``. Answers are plain text,
as S3's would not be JSON either.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from datetime import UTC, datetime
from http import HTTPStatus
from types import TracebackType
from typing import Any, cast

import tornado.web
from tornado import httputil, iostream
from tornado.http1connection import HTTP1Connection
from tornado.log import app_log, gen_log
from tornado.routing import PathMatches, Rule

from symbolon.handlers.base import RETRY_AFTER_SECONDS, ApiError, BaseHandler, declared_length
from symbolon.storage.signing import PutTerms, SignatureInvalid
from symbolon.storage.store import KeyRefused, ObjectInfo, ObjectMissing, StoreUnavailable
from symbolon.storage.stores.directory import (
    DEFAULT_CONTENT_TYPE,
    ROUTE_PREFIX,
    DirectoryStore,
    OpenFile,
    PendingWrite,
    check_key,
)

PATTERN = rf"{ROUTE_PREFIX}/([0-9a-f]{{16}})/(.+)"
# The handler counts a body itself: Tornado's own limit would answer a bare 400.
UNLIMITED = 1 << 62
UNSATISFIABLE = "unsatisfiable"
# Aborted writes still removing their files when their request is gone.
_ABORTING: set[asyncio.Task[None]] = set()


class StorageHandler(BaseHandler):
    uses_session = False  # signatures decide, not sessions

    def directory(self, location_id: str) -> DirectoryStore:
        store = self.runtime.stores.directory(location_id)
        if not isinstance(store, DirectoryStore):
            raise ApiError(404, "Not Found")
        return store

    def allowed_methods(self) -> list[str]:
        return ["GET", "HEAD", "PUT"]

    def answer(self, status: int, message: str) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(message)

    def log_exception(
        self,
        typ: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """As Tornado logs an uncaught exception, with the path only: the query holds the
        URL's signature, valid until it expires."""
        request = self.request
        summary = f"{request.method} {request.path} ({request.remote_ip})"
        if isinstance(value, tornado.web.HTTPError):
            if message := value.get_message():
                gen_log.warning("%d %s: %s", value.status_code, summary, message)
            return
        app_log.error("Uncaught exception %s", summary, exc_info=value)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if status_code == 405:
            self.set_header("Allow", ", ".join(self.allowed_methods()))
        if isinstance(exc, ApiError):
            message = exc.message
        elif status_code >= 500:
            message = "Internal Server Error"
        else:
            message = HTTPStatus(status_code).phrase
        self.answer(status_code, message)


class StorageFileHandler(StorageHandler):
    """``GET`` and ``HEAD``: the stored bytes, with what S3 would send with them."""

    async def get(self, location_id: str, key: str) -> None:
        await self._serve(location_id, key, with_body=True)

    async def head(self, location_id: str, key: str) -> None:
        await self._serve(location_id, key, with_body=False)

    async def _serve(self, location_id: str, key: str, with_body: bool) -> None:
        store = self.directory(location_id)
        if not store.source.public:
            if store.signer is None:
                raise ApiError(403, "This location's URLs cannot be checked: no SECRET_KEY")
            try:
                store.signer.verify_get(location_id, key, self.request.query, time.time())
            except SignatureInvalid as exc:
                raise ApiError(403, str(exc)) from None
        try:
            check_key(key)
        except ValueError:
            raise ApiError(404, "Not Found") from None
        try:
            if not with_body:
                info = await store.head(key)
                if info is None:
                    raise ApiError(404, "Not Found")
                self._headers_for(info)
                if not self._finished:  # a 416 is answered already
                    self.finish()
                return
            async with store.open_file(key) as opened:
                sent = self._headers_for(opened.info)
                if sent is not None:
                    await self._stream(opened, *sent)
        except ObjectMissing:
            raise ApiError(404, "Not Found") from None
        except StoreUnavailable:
            self.set_header("Retry-After", str(RETRY_AFTER_SECONDS))
            raise ApiError(503, "Symbol storage is unavailable; try again later.") from None

    def _headers_for(self, info: ObjectInfo) -> tuple[int, int] | None:
        """Status and headers; the bytes to send (start, end exclusive), or None when the
        answer has no body (304, 416)."""
        self.set_header("ETag", f'"{info.etag}"')
        self.set_header("Last-Modified", info.last_modified)
        if self._not_modified(info):
            self.set_status(304)
            return None
        self.set_header("Accept-Ranges", "bytes")
        requested = self._range(info)
        if requested == UNSATISFIABLE:
            self.set_header("Content-Range", f"bytes */{info.size}")
            self.answer(416, "Range Not Satisfiable")
            return None
        start, end = requested if isinstance(requested, tuple) else (0, info.size)
        if requested is not None:
            self.set_status(206)
            self.set_header("Content-Range", f"bytes {start}-{end - 1}/{info.size}")
        # As S3 sends them: the stored bytes, described as stored, and no cache headers.
        self.set_header("Content-Type", info.content_type or DEFAULT_CONTENT_TYPE)
        if info.content_encoding:
            self.set_header("Content-Encoding", info.content_encoding)
        self.set_header("Content-Length", end - start)
        return start, end

    async def _stream(self, opened: OpenFile, start: int, end: int) -> None:
        async for chunk in opened.chunks(start, end):
            self.write(chunk)
            try:
                await self.flush()  # one chunk in memory at a time
            except iostream.StreamClosedError:
                return

    def _not_modified(self, info: ObjectInfo) -> bool:
        """The conditional GET: If-None-Match first, else If-Modified-Since."""
        if self.request.headers.get("If-None-Match"):
            return self.check_etag_header()
        since = _http_date(self.request.headers.get("If-Modified-Since"))
        return since is not None and info.last_modified <= since

    def _range(self, info: ObjectInfo) -> tuple[int, int] | str | None:
        header = self.request.headers.get("Range")
        if header is None:
            return None
        if_range = self.request.headers.get("If-Range")
        if if_range is not None:
            if if_range.startswith(('"', "W/")):
                if if_range != f'"{info.etag}"':
                    return None  # changed since: the whole object
            elif _http_date(if_range) != info.last_modified:
                return None
        return byte_range(header, info.size)


def _number(text: str) -> bool:
    return text.isascii() and text.isdigit()


def byte_range(header: str, size: int) -> tuple[int, int] | str | None:
    """One ``bytes=`` range as (start, end exclusive); None to send everything (a header that
    is not one range, which a server may ignore); UNSATISFIABLE for none of the bytes."""
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = (part.strip() for part in spec.partition("-"))
    if not dash or not (first or last):
        return None
    if (first and not _number(first)) or (last and not _number(last)):
        return None
    if not first:  # the last ``last`` bytes
        suffix = int(last)
        if suffix == 0 or size == 0:
            return UNSATISFIABLE
        return max(0, size - suffix), size
    start = int(first)
    if last and int(last) < start:
        return None  # not a range
    if start >= size:
        return UNSATISFIABLE
    return start, size if not last else min(int(last) + 1, size)


def _http_date(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, OverflowError):  # a year past datetime's: no date at all
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


@tornado.web.stream_request_body
class StorageUploadHandler(StorageHandler):
    """``PUT`` with a signed URL: the body is streamed to the store's temporary file, at most
    the signed size, and stored under the key with what the URL signed."""

    store: DirectoryStore | None = None
    key = ""
    terms: PutTerms | None = None
    pending: PendingWrite | None = None
    refusal: tuple[int, str] | None = None
    received = 0
    body_complete = False

    async def prepare(self) -> None:
        self._allow_body(UNLIMITED)  # every refusal below is answered, never Tornado's 400
        try:
            authenticating = super().prepare()
            if authenticating is not None:
                await authenticating
            location_id, key = self.path_args  # decoded before prepare runs
            self.store = store = self.directory(location_id)
            if store.signer is None:
                raise ApiError(403, "This location's URLs cannot be checked: no SECRET_KEY")
            try:
                query = self.request.query
                self.terms = store.signer.verify_put(location_id, key, query, time.time())
            except SignatureInvalid as exc:
                raise ApiError(403, str(exc)) from None
            self.key = check_key(key)
        except ValueError:
            return self._refuse(400, "This is not a storage key")
        except ApiError as exc:
            return self._refuse(exc.status_code, exc.message)
        refused = store.accepts(key)
        if refused is not None:
            return self._refuse(400, f"This key cannot be stored here: {refused}")
        declared = declared_length(self.request.headers.get("Content-Length", "0")) or 0
        if declared > self.terms.max_size:
            return self.answer(413, self._too_large())
        try:
            self.pending = await store.begin_write()
        except StoreUnavailable:
            self.set_header("Retry-After", str(RETRY_AFTER_SECONDS))
            return self.answer(503, "Symbol storage is unavailable; try again later.")

    def _refuse(self, status: int, message: str) -> None:
        """Answered once the body is read and dropped, so a client still sending it reads the
        answer; a body declared past this route's usual limit is answered at once, unread."""
        self.refusal = (status, message)
        declared = declared_length(self.request.headers.get("Content-Length", "0")) or 0
        if declared > self.runtime.settings.request_max_body_size:
            self.answer(status, message)

    def _allow_body(self, size: int) -> None:
        # Served by Tornado's HTTP/1 server, whose connection lets a handler raise the limit.
        cast(HTTP1Connection, self.request.connection).set_max_body_size(size)

    def _too_large(self) -> str:
        assert self.terms is not None
        return f"Request body too large: the limit is {self.terms.max_size} bytes"

    async def data_received(self, chunk: bytes) -> None:
        if self._finished:
            return
        self.received += len(chunk)
        if self.refusal is not None:
            if self.received > self.runtime.settings.request_max_body_size:
                self.answer(*self.refusal)
            return
        assert self.terms is not None and self.pending is not None
        if self.received > self.terms.max_size:
            await self.pending.abort()
            self.answer(413, self._too_large())
            return
        try:
            await self.pending.write(chunk)
        except StoreUnavailable:
            self.set_header("Retry-After", str(RETRY_AFTER_SECONDS))
            self.answer(503, "Symbol storage is unavailable; try again later.")

    async def put(self, location_id: str, key: str) -> None:
        self.body_complete = True
        if self._finished:
            return
        if self.refusal is not None:
            return self.answer(*self.refusal)
        assert self.store is not None and self.terms is not None and self.pending is not None
        try:
            info = await self.pending.commit(
                self.key,
                content_type=self.terms.content_type,
                content_encoding=self.terms.content_encoding,
                metadata=self.terms.metadata,
            )
        except KeyRefused as exc:
            return self.answer(400, f"This key cannot be stored here: {exc}")
        except ValueError:
            return self.answer(400, "This key leads out of its location")
        except StoreUnavailable:
            self.set_header("Retry-After", str(RETRY_AFTER_SECONDS))
            return self.answer(503, "Symbol storage is unavailable; try again later.")
        self.set_header("ETag", f'"{info.etag}"')  # as S3 answers a PUT
        self.set_status(200)
        self.finish()

    def on_connection_close(self) -> None:
        super().on_connection_close()
        self._abandon()

    def on_finish(self) -> None:
        self._abandon()

    def _abandon(self) -> None:
        """A write not committed (client gone mid-body, or refused) leaves no file."""
        if self.pending is not None and not self.pending.closed:
            task = asyncio.ensure_future(self.pending.abort())
            _ABORTING.add(task)
            task.add_done_callback(_ABORTING.discard)


class MethodMatches(PathMatches):
    """A path matched for some methods only: ``PUT`` streams its body to the store, while the
    other methods keep the body limit every route has (server/app.py, BoundedBody)."""

    def __init__(self, pattern: str, methods: frozenset[str]):
        super().__init__(pattern)
        self.methods = methods

    def match(self, request: httputil.HTTPServerRequest) -> dict[str, Any] | None:
        if request.method not in self.methods:
            return None
        return super().match(request)


ROUTES = [
    Rule(MethodMatches(PATTERN, frozenset({"PUT"})), StorageUploadHandler),
    Rule(PathMatches(PATTERN), StorageFileHandler),
]
