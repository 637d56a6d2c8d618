"""The Tornado application: routes and the settings handlers share."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, cast

import tornado.web
from tornado import httputil
from tornado.http1connection import HTTP1Connection

from symbolon.conf import Settings
from symbolon.handlers import api_crashes, api_stats, api_tokens, api_uploads, api_users, upload_v2
from symbolon.handlers import auth as auth_handlers
from symbolon.handlers import debuginfod as debuginfod_handlers
from symbolon.handlers import download as download_handlers
from symbolon.handlers import health as health_handlers
from symbolon.handlers import missing as missing_handlers
from symbolon.handlers import openapi as openapi_handlers
from symbolon.handlers import storage_files as storage_file_handlers
from symbolon.handlers import submit as submit_handlers
from symbolon.handlers import symbolicate as symbolicate_handlers
from symbolon.handlers import upload as upload_handlers
from symbolon.handlers.base import (
    Answer,
    BaseHandler,
    BodyRefusal,
    NotFoundHandler,
    declared_length,
)
from symbolon.health import version_info
from symbolon.runtime import Runtime
from symbolon.server.balance import BalancingHTTPServer, ConnectionShares
from symbolon.server.immediate import ImmediateAnswer
from symbolon.server.keepalive import KeepAliveHTTPServer
from symbolon.server.proxy import believe_proxy_headers
from symbolon.server.routing import IndexedRouter
from symbolon.web import routes as web_routes

logger = logging.getLogger(__name__)
access_log = logging.getLogger("symbolon.access")
# Tornado's own limit, for the routes that stream their bodies and raise it themselves (uploads,
# crash reports); every other route has a smaller one of its own (BoundedBody).
SERVER_MAX_BODY_SIZE = 100 * 1024 * 1024
# A keep-alive connection idle this long is closed (Tornado's default is an hour): with several
# web processes, the connections a process holds are its share of the load. Longer than the
# idle timeouts of common proxies (60 s), so that they close first and never reuse a connection
# as it closes.
IDLE_CONNECTION_SECONDS = 75.0
# A request with neither has no body (RFC 9112, 6.3). As HTTPHeaders spells them.
BODY_HEADERS = frozenset({"Content-Length", "Transfer-Encoding"})
# Lifted while a refusal is answered, so that Tornado does not answer the unread body itself.
UNLIMITED_BODY = 2**62
# A body up to this many times the limit is read and dropped before the 413, so that a client
# still sending it reads the answer rather than a reset connection; a larger one is answered at
# once, unread.
DRAIN_FACTOR = 2


def log_request(handler: tornado.web.RequestHandler) -> None:
    log_answer(handler.request, handler.get_status())


def log_answer(request: httputil.HTTPServerRequest, status: int) -> None:
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    if request.path == "/__lbheartbeat__" and status == 200:
        level = logging.DEBUG  # the load balancer asks every few seconds
    # A sign-in callback's query holds a one-time code and the state, a storage URL's its
    # signature: not for the logs.
    path = request.path
    uri = path if path.startswith(("/oidc/", "/storage/")) else request.uri
    access_log.log(
        level, "%s %s %d %.1fms", request.method, uri, status, 1000.0 * request.request_time()
    )


def nothing_to_prepare(request: httputil.HTTPServerRequest, handler: type[BaseHandler]) -> bool:
    """Whether ``BaseHandler.prepare`` would let ``request`` through unchecked: a ``GET`` with
    no ``Auth-Token`` (checked on every path) and, for a handler that reads sessions, no cookie.
    Only then may an answer skip the handler."""
    if request.method != "GET" or "Auth-Token" in request.headers:
        return False
    return not handler.uses_session or "Cookie" not in request.headers


def with_slash_redirects(routes: list[Any]) -> list[Any]:
    """Paths listed with a trailing slash answer 301 to it without one, as the reference did."""
    redirects = [
        (route[0][:-1], tornado.web.RedirectHandler, {"url": route[0], "permanent": True})
        for route in routes
        if route[0].endswith("/") and len(route[0]) > 1
    ]
    return [*routes, *redirects]


class BoundedBody(httputil.HTTPMessageDelegate):
    """A route that reads its body whole gets at most its handler's ``max_body_size``. A larger
    declared ``Content-Length`` is refused from the headers, a chunked body once it passes the
    limit; the 413 comes from ``refusal`` (the route's handler with BodyRefusal in front), once
    the body is dropped (DRAIN_FACTOR) or at once."""

    def __init__(
        self,
        delegate: httputil.HTTPMessageDelegate,
        request: httputil.HTTPServerRequest,
        limit: int,
        refusal: Callable[[str], httputil.HTTPMessageDelegate],
    ):
        self.delegate = delegate
        self.request = request
        self.limit = limit
        self.refusal = refusal
        self.received = 0
        self.draining: str | None = None  # the refusal's message, while the body is dropped
        self.refused = False

    def headers_received(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
    ) -> Awaitable[None] | None:
        self.start_line, self.headers = start_line, headers
        declared = declared_length(headers.get("Content-Length", "0"))
        if declared is not None and declared > self.limit:
            message = f"Request body too large: {declared} bytes, the limit is {self.limit} bytes"
            if declared > DRAIN_FACTOR * self.limit:
                return self.refuse(message)
            self.drain(message)  # the route never sees this request
            return None
        return self.delegate.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        if self.refused:
            return None
        self.received += len(chunk)
        if self.draining is None and self.received > self.limit:
            self.delegate.on_connection_close()  # drops what it holds
            self.drain(f"Request body too large: the limit is {self.limit} bytes")
        if self.draining is None:
            return self.delegate.data_received(chunk)
        if self.received > DRAIN_FACTOR * self.limit:
            return self.refuse(self.draining)
        return None

    def drain(self, message: str) -> None:
        self.draining = message
        # Counted here instead: Tornado's own limit would answer a bare 400.
        cast(HTTP1Connection, self.request.connection).set_max_body_size(UNLIMITED_BODY)

    def refuse(self, message: str) -> Awaitable[None] | None:
        self.refused = True
        # Served by Tornado's HTTP/1 server, whose connection lets the limit be changed.
        cast(HTTP1Connection, self.request.connection).set_max_body_size(UNLIMITED_BODY)
        self.delegate = self.refusal(message)
        return self.delegate.headers_received(self.start_line, self.headers)

    def finish(self) -> None:
        if self.draining is not None and not self.refused:
            self.refuse(self.draining)  # the body is all dropped: answer now
        self.delegate.finish()

    def on_connection_close(self) -> None:
        if self.draining is None or self.refused:
            self.delegate.on_connection_close()


def _refusing(handler_class: type[tornado.web.RequestHandler]) -> type[BodyRefusal]:
    """``handler_class`` answering 413 at once; any other handler's refusal is a plain one."""
    if not issubclass(handler_class, BaseHandler):
        return BodyRefusal
    refusing = _REFUSING.get(handler_class)
    if refusing is None:
        made = type(f"{handler_class.__name__}BodyRefusal", (BodyRefusal, handler_class), {})
        refusing = _REFUSING[handler_class] = tornado.web.stream_request_body(made)
    return refusing


_REFUSING: dict[type[tornado.web.RequestHandler], type[BodyRefusal]] = {}
tornado.web.stream_request_body(BodyRefusal)


class Application(tornado.web.Application):
    # Set by make_server: the proxy in front's word on the client and scheme is believed.
    behind_proxy = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Tornado's default router has one rule, to the router of every route (wildcard_router),
        # which tries them in order; IndexedRouter gives the same answers trying only those that
        # can match the path. It becomes that rule's target rather than replacing the routers,
        # so that add_handlers (host rules go in front) and default_handler_class still apply.
        for rule in self.default_router.rules:
            if rule.target is self.wildcard_router:
                rule.target = IndexedRouter(self.wildcard_router)

    def find_handler(  # type: ignore[override]
        self, request: httputil.HTTPServerRequest, **kwargs: Any
    ) -> httputil.HTTPMessageDelegate:
        if self.behind_proxy:  # before the handler, its transforms or the access log see it
            believe_proxy_headers(request)
        return super().find_handler(request, **kwargs)

    # Tornado types the answer as its own delegate class; its router takes any delegate.
    def get_handler_delegate(  # type: ignore[override]
        self,
        request: httputil.HTTPServerRequest,
        target_class: type[tornado.web.RequestHandler],
        target_kwargs: dict[str, Any] | None = None,
        path_args: list[bytes] | None = None,
        path_kwargs: dict[str, bytes] | None = None,
    ) -> httputil.HTTPMessageDelegate:
        bodiless = BODY_HEADERS.isdisjoint(request.headers)
        if (
            bodiless
            and issubclass(target_class, BaseHandler)
            and nothing_to_prepare(request, target_class)
        ):
            answer = self._answer_from_memory(request, target_class, target_kwargs, path_args)
            if answer is not None:
                return ImmediateAnswer(request, answer, self.transforms, log_answer)
        delegate = super().get_handler_delegate(
            request, target_class, target_kwargs, path_args, path_kwargs
        )
        if getattr(target_class, "_stream_request_body", False):
            return delegate  # reads its body as it comes, within limits of its own
        if bodiless:
            return delegate  # no body can follow: nothing to bound
        settings: Settings = self.settings["runtime"].settings
        if issubclass(target_class, BaseHandler):
            limit = target_class.max_body_size(settings)
        else:
            limit = settings.request_max_body_size
        refusing = _refusing(target_class)

        def refusal(message: str) -> httputil.HTTPMessageDelegate:
            kwargs = target_kwargs if refusing is not BodyRefusal else None
            return super(Application, self).get_handler_delegate(
                request, refusing, {**(kwargs or {}), "refusal": message}, path_args, path_kwargs
            )

        return BoundedBody(delegate, request, limit, refusal)

    def _answer_from_memory(
        self,
        request: httputil.HTTPServerRequest,
        target_class: type[BaseHandler],
        target_kwargs: dict[str, Any] | None,
        path_args: list[bytes] | None,
    ) -> Answer | None:
        try:
            answer = target_class.answer_from_memory(
                self.settings["runtime"], request, path_args or [], target_kwargs or {}
            )
        except Exception:
            # The handler then answers, as it would have: a 500 in the route's own shape.
            logger.exception("%s could not answer from memory", target_class.__name__)
            return None
        # A header value the handler's set_header would refuse: its 500, not a broken answer.
        return answer if answer is not None and answer.is_valid() else None


def security_headers(settings: Settings) -> type[tornado.web.OutputTransform]:
    """Adds the headers browsers need to protect users (docs/configuration.md) to every
    response, errors and redirects included, unless the handler set them itself."""
    always: dict[str, str] = {}
    if settings.secure_content_type_nosniff:
        always["X-Content-Type-Options"] = "nosniff"
    if settings.x_frame_options != "OFF":
        always["X-Frame-Options"] = settings.x_frame_options
        ancestors = "'none'" if settings.x_frame_options == "DENY" else "'self'"
        always["Content-Security-Policy"] = f"frame-ancestors {ancestors}"
    hsts = f"max-age={settings.secure_hsts_seconds}" if settings.secure_hsts_seconds else None

    class SecurityHeaders(tornado.web.OutputTransform):
        def __init__(self, request: httputil.HTTPServerRequest):
            # Behind a proxy (make_server), the protocol is the one the proxy in front was asked.
            self.https = request.protocol == "https"

        def transform_first_chunk(
            self, status_code: int, headers: httputil.HTTPHeaders, chunk: bytes, finishing: bool
        ) -> tuple[int, httputil.HTTPHeaders, bytes]:
            for name, value in always.items():
                headers.setdefault(name, value)
            if hsts is not None and self.https:
                headers.setdefault("Strict-Transport-Security", hsts)
            return status_code, headers, chunk

    return SecurityHeaders


def make_server(
    app: tornado.web.Application, shares: ConnectionShares | None = None
) -> KeepAliveHTTPServer:
    """The HTTP server ``serve`` runs: behind a proxy, whose ``X-Forwarded-For`` and
    ``X-Forwarded-Proto`` are believed (server/proxy.py), its keep-alive connections closed
    when idle (server/keepalive.py). With ``shares`` (one of several web processes), it gives
    up keep-alive connections beyond its share (server/balance.py)."""
    settings: Settings = app.settings["runtime"].settings
    limit = max(
        SERVER_MAX_BODY_SIZE, settings.request_max_body_size, settings.symbolication_max_body_size
    )
    if isinstance(app, Application):
        app.behind_proxy = True
    options: dict[str, Any] = {
        "max_body_size": limit,
        "idle_connection_timeout": IDLE_CONNECTION_SECONDS,
        # Read 256 KiB at a time, not 64: a crash's 400 KB body reaches its handler in two
        # pieces rather than seven, each a turn of Tornado's read loop (docs/benchmarks.md).
        "chunk_size": 256 * 1024,
    }
    if shares is not None:
        return BalancingHTTPServer(app, shares=shares, **options)
    return KeepAliveHTTPServer(app, **options)


def make_app(runtime: Runtime, extra_routes: list[Any] | None = None) -> tornado.web.Application:
    routes: list[Any] = with_slash_redirects(
        [
            *health_handlers.ROUTES,
            *missing_handlers.ROUTES,
            *upload_handlers.ROUTES,
            *upload_v2.ROUTES,
            *api_uploads.ROUTES,
            *auth_handlers.ROUTES,
            *api_tokens.ROUTES,
            *api_users.ROUTES,
            *api_stats.ROUTES,
            *api_crashes.ROUTES,
            *symbolicate_handlers.ROUTES,
            *openapi_handlers.ROUTES,
            *web_routes.ROUTES,
            *(extra_routes or []),
        ]
    )
    if runtime.collector is not None:
        routes = submit_handlers.ROUTES + routes
    routes += storage_file_handlers.ROUTES  # rules by method, with no trailing-slash twins
    # The download routes match almost any three-segment path, so they come last.
    routes += debuginfod_handlers.ROUTES + download_handlers.ROUTES
    app = Application(
        routes,
        runtime=runtime,
        collector=runtime.collector,
        version_info=version_info(runtime.settings.base_dir),
        default_handler_class=NotFoundHandler,
        log_function=log_request,
        debug=False,
    )
    app.add_transform(security_headers(runtime.settings))
    return app
