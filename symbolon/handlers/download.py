"""Symbol download: ``GET|HEAD /[try/]<debug_file>/<debug_id>/<symbol_file>`` (docs/download.md).

Answers are redirects to where the bytes live, never the bytes themselves.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

from tornado import httputil

from symbolon.conf import Settings
from symbolon.handlers.base import RETRY_AFTER_SECONDS, Answer, BaseHandler
from symbolon.metrics import metrics
from symbolon.runtime import Runtime
from symbolon.storage.lookup import UNKNOWN, StorageUnavailable
from symbolon.storage.sources import SymbolSource
from symbolon.symbols import syminfo
from symbolon.symbols.keys import has_invalid_characters, is_ignorable, key_spellings
from symbolon.symbols.missing import Miss

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET",
    "Access-Control-Allow-Headers": (
        "accept,accept-encoding,authorization,content-type,dnt,origin,user-agent,"
        "x-csrftoken,x-requested-with"
    ),
}
DOWNLOAD_HEADERS = {**CORS_HEADERS, "Content-Type": "text/html; charset=utf-8"}
LEGACY_PRODUCTS = "firefox|seamonkey|sunbird|thunderbird|xulrunner|fennec|b2g"
SEGMENT = r"([^/]+)"
DEBUG_ID = r"([0-9A-Fa-f]+)"
TRUTHY = {"1", "true", "yes"}
NOT_FOUND = b"Symbol Not Found"


def segment(name: str) -> str:
    return quote(name, safe="")


def _refusal(
    settings: Settings, debug_file: str, debug_id: str, symbol_file: str
) -> tuple[int, str] | None:
    """The answer to a request that storage is not asked about, if it is one."""
    if is_ignorable(debug_file, debug_id, symbol_file, settings.download_file_extensions_allowed):
        return 404, "Symbol Not Found (and ignored)"
    if has_invalid_characters(debug_file, symbol_file):
        return 400, "Symbol name lookup contains invalid characters and will never be found."
    return None


def _lookup_terms(request: httputil.HTTPServerRequest, try_route: bool) -> tuple[bool, bool]:
    """Whether try symbols are looked in too, and whether past the caches (``_refresh``)."""
    args = request.query_arguments
    return try_route or "try" in args, "_refresh" in args


def with_cors(handler: BaseHandler) -> None:
    for name, value in CORS_HEADERS.items():
        handler.set_header(name, value)


def _raw_argument(request: httputil.HTTPServerRequest, name: str) -> str | None:
    """A query value as sent: Tornado's own accessors silently drop control characters."""
    values = request.query_arguments.get(name)
    return values[-1].decode("utf-8", "replace") if values else None


def _miss(
    request: httputil.HTTPServerRequest, debug_file: str, debug_id: str, symbol_file: str
) -> Miss | str:
    """The miss to count, with the code file and id the request names; or the 400's message
    when one of those holds a null character."""
    code_file, code_id = _raw_argument(request, "code_file"), _raw_argument(request, "code_id")
    for name, value in (("code_file", code_file), ("code_id", code_id)):
        if value and "\x00" in value:
            return f"{name}: Null characters are not allowed."
    return Miss(debug_file, debug_id, symbol_file, code_file, code_id)


def _remembered_miss(
    runtime: Runtime,
    request: httputil.HTTPServerRequest,
    debug_file: str,
    debug_id: str,
    symbol_file: str,
    elapsed: float,
) -> Answer | None:
    """The 404 of a miss that needs no lookup by code id (it would ask Redis) and no counting
    (counted here recently), as ``get`` would answer it; else None."""
    if syminfo.eligible(debug_id, symbol_file):
        return None
    miss = _miss(request, debug_file, debug_id, symbol_file)
    if isinstance(miss, str):
        return None  # the handler's 400
    counting = runtime.settings.enable_store_missing_symbols
    started = time.perf_counter()
    if counting and not runtime.missing.remembers(miss):
        return None
    counted = time.perf_counter() - started
    metrics.timing("download_symbol", 1000.0 * elapsed)
    if counting:
        metrics.timing("download_store_missing_symbol", 1000.0 * counted)
    return Answer(404, DOWNLOAD_HEADERS, NOT_FOUND)


class DownloadHandler(BaseHandler):
    uses_session = False  # anyone may download; a session cookie would only cost a lookup

    def initialize(self, try_route: bool = False) -> None:
        self.try_route = try_route

    def clear(self) -> None:
        super().clear()
        # Every download answer but the 405 carries these; set at once, they are constants.
        self._headers.update(DOWNLOAD_HEADERS)

    async def get(self, debug_file: str, debug_id: str, symbol_file: str) -> None:
        await self._download(debug_file, debug_id, symbol_file, head=False)

    async def head(self, debug_file: str, debug_id: str, symbol_file: str) -> None:
        await self._download(debug_file, debug_id, symbol_file, head=True)

    def _answer(self, status: int, body: str = "", debug_time: float | None = None) -> None:
        if debug_time is not None and self.request.headers.get("Debug", "").lower() in TRUTHY:
            self.set_header("Debug-Time", str(debug_time))
        self.set_status(status)
        self.finish(body)

    @classmethod
    def answer_from_memory(
        cls,
        runtime: Runtime,
        request: httputil.HTTPServerRequest,
        path_args: list[bytes],
        kwargs: dict[str, object],
    ) -> Answer | None:
        """What ``get`` would answer, when this process holds all it takes: a hit whose
        location it remembers, a miss it remembers (and has counted), a name it refuses.
        Stack walkers ask for the same files over and over, found or not, so these skip the
        handler. Anything else is the handler's."""
        if "Debug" in request.headers:
            return None  # timings asked for
        try:
            debug_file, debug_id, symbol_file = (arg.decode("utf-8") for arg in path_args)
        except UnicodeDecodeError:
            return None  # the handler's 400
        debug_id = debug_id.upper()
        settings = runtime.settings
        refused = _refusal(settings, debug_file, debug_id, symbol_file)
        if refused is not None:
            status, message = refused
            return Answer(status, DOWNLOAD_HEADERS, message.encode())
        include_try, refresh = _lookup_terms(request, bool(kwargs.get("try_route")))
        if refresh:
            return None
        keys = key_spellings(debug_file, debug_id, symbol_file)
        started = time.perf_counter()
        hit = runtime.lookup.remembered_any(keys, include_try)
        elapsed = time.perf_counter() - started
        if hit is UNKNOWN:
            return None
        if hit is None:
            return _remembered_miss(runtime, request, debug_file, debug_id, symbol_file, elapsed)
        found, key = hit
        expires = settings.download_presigned_url_expiry_seconds
        location = runtime.lookup.remembered_url(found.source, key, expires)
        if location is None:
            return None
        metrics.timing("download_symbol", 1000.0 * elapsed)
        return Answer(302, {**DOWNLOAD_HEADERS, "Location": location})

    async def _download(self, debug_file: str, debug_id: str, symbol_file: str, head: bool) -> None:
        settings = self.runtime.settings
        debug_id = debug_id.upper()
        refused = _refusal(settings, debug_file, debug_id, symbol_file)
        if refused is not None:
            return self._answer(*refused, debug_time=0)
        include_try, refresh = _lookup_terms(self.request, self.try_route)
        keys = key_spellings(debug_file, debug_id, symbol_file)

        started = time.perf_counter()
        with metrics.timer("download_symbol"):
            try:
                hit = await self.runtime.lookup.find_any(keys, include_try, refresh)
            except StorageUnavailable:
                self.set_header("Retry-After", str(RETRY_AFTER_SECONDS))
                return self._answer(503, "Symbol storage is unavailable; try again later.")
        elapsed = time.perf_counter() - started

        if hit is not None:
            found, key = hit
            if head:
                return self._answer(200, debug_time=elapsed)
            self.set_header("Location", await self._location(found.source, key))
            return self._answer(302, debug_time=elapsed)

        code_redirect = await self._code_id_redirect(debug_file, debug_id, symbol_file, refresh)
        if code_redirect is not None:
            metrics.incr("download_symbol_code_id_lookup")
            self.set_header("Location", code_redirect)
            return self._answer(302, debug_time=elapsed)

        if not head:
            miss = _miss(self.request, debug_file, debug_id, symbol_file)
            if isinstance(miss, str):
                return self._answer(400, miss)
            if settings.enable_store_missing_symbols:
                with metrics.timer("download_store_missing_symbol"):
                    await self.runtime.missing.record(miss)
        return self._answer(404, NOT_FOUND.decode(), debug_time=elapsed)

    async def _location(self, source: SymbolSource, key: str) -> str:
        """The store's URL as it is: a path on this server (a directory's) stays relative, so
        the redirect never names a host the client sent, which a cache keyed by path would
        hand to everyone, and a proxy that rewrites Host still leads to itself."""
        expires = self.runtime.settings.download_presigned_url_expiry_seconds
        return await self.runtime.lookup.download_url(source, key, expires)

    async def _code_id_redirect(
        self, file: str, ident: str, symbol_file: str, refresh: bool
    ) -> str | None:
        if not syminfo.eligible(ident, symbol_file):
            return None
        info = await syminfo.lookup(self.runtime.db, self.runtime.cache, file, ident, refresh)
        if info is None or (info.debug_filename, info.debug_id) == (file, ident):
            return None  # the debug pair itself was just looked up and is not there
        prefix = "/try" if self.try_route else ""
        # Segments are quoted with no safe characters: a name must never become "//host".
        target = f"{prefix}/{segment(info.debug_filename)}/{info.debug_id}/{segment(symbol_file)}"
        query = self.request.query
        return f"{target}?{query}" if query else target

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        for name in DOWNLOAD_HEADERS:
            self.clear_header(name)
        super().write_error(status_code, **kwargs)


class SymInfoHandler(BaseHandler):
    """``GET /api/syminfo/<file>/<id>``: what an uploaded .sym header said about a module."""

    uses_session = False

    async def get(self, file: str, ident: str) -> None:
        with_cors(self)
        ident = ident.upper()
        refresh = "_refresh" in self.request.query_arguments
        info = await syminfo.lookup(self.runtime.db, self.runtime.cache, file, ident, refresh)
        if info is None:
            self.set_status(404)
            self.set_header("Content-Type", "text/plain; charset=utf-8")
            self.finish("Code file / id Not Found")
            return
        prefix = "/try" if info.try_symbols else ""
        name = syminfo.symbol_filename(info.debug_filename)
        path = f"{prefix}/{segment(info.debug_filename)}/{info.debug_id}/{segment(name)}"
        self.write_json(
            {
                "debug_filename": info.debug_filename,
                "debug_id": info.debug_id,
                "code_file": info.code_file,
                "code_id": info.code_id,
                "generator": info.generator,
                "url": f"{self.request.protocol}://{self.request.host}{path}",
            }
        )


ROUTES = [
    (rf"/api/syminfo/{SEGMENT}/{DEBUG_ID}", SymInfoHandler),
    (rf"/try/{SEGMENT}/{DEBUG_ID}/{SEGMENT}", DownloadHandler, {"try_route": True}),
    (rf"/(?:{LEGACY_PRODUCTS})/{SEGMENT}/{DEBUG_ID}/{SEGMENT}", DownloadHandler),
    (rf"/{SEGMENT}/{DEBUG_ID}/{SEGMENT}", DownloadHandler),
]
