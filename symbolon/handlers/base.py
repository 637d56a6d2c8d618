"""What every handler shares: JSON errors in the reference's shapes (docs/accounts.md,
"Conventions")."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import tornado.web
from tornado import httputil

from symbolon.accounts import admin, csrf
from symbolon.accounts.auth import AuthError, Principal, authenticate_session, authenticate_token
from symbolon.accounts.blocked import BLOCKED_MESSAGE, BlockedCheckError
from symbolon.accounts.permissions import Permission
from symbolon.accounts.sessions import SESSION_COOKIE
from symbolon.conf import Settings
from symbolon.handlers.dates import CachedDate
from symbolon.runtime import Runtime

# How long a client is asked to wait when storage or the task queue is away.
RETRY_AFTER_SECONDS = 30

logger = logging.getLogger(__name__)


class ApiError(tornado.web.HTTPError):
    """A 4xx whose message is shown to the client as ``{"error": message}``."""

    def __init__(self, status_code: int, message: str):
        super().__init__(status_code)
        self.message = message


@dataclass(frozen=True)
class Answer:
    """A redirect or a refusal given without a handler (``BaseHandler.answer_from_memory``): its
    status, the headers the handler would set besides Tornado's own (``Server``,
    ``Content-Type`` and ``Date``, which these may override, and ``Content-Length``), and its
    body."""

    status: int
    headers: dict[str, str]
    body: bytes = b""

    def __post_init__(self) -> None:
        # Tornado gives a 200 an ``Etag`` and a 304 no ``Content-Length``: neither is written
        # here.
        if not 300 <= self.status < 500 or self.status == 304:
            raise ValueError(f"neither a redirect nor a refusal: {self.status}")

    def is_valid(self) -> bool:
        """Whether every header value is one Tornado's ``set_header`` would take (its own
        pattern: a value it refuses goes to the handler to refuse)."""
        valid = tornado.web.RequestHandler._VALID_HEADER_CHARS
        return all(valid.fullmatch(value) for value in self.headers.values())


class BaseHandler(CachedDate):
    @property
    def runtime(self) -> Runtime:
        return self.application.settings["runtime"]

    principal: Principal | None = None
    # Handlers that never ask who is calling skip the session lookup (downloads: the hot path).
    uses_session = True
    # A session cookie came with a state-changing request but without its CSRF token.
    csrf_failed = False

    @classmethod
    def answer_from_memory(
        cls,
        runtime: Runtime,
        request: httputil.HTTPServerRequest,
        path_args: list[bytes],
        kwargs: dict[str, object],
    ) -> Answer | None:
        """The redirect or refusal this route would answer ``request`` with, when the process
        holds all it needs to decide it without awaiting anything; None to run the handler.
        Asked only for a ``GET`` without a body, an ``Auth-Token`` or (for a handler that reads
        sessions) a session cookie, since ``prepare`` does not run. ``path_args`` are the
        route's groups, percent-decoded; ``kwargs`` its ``initialize`` arguments. Written
        without a handler (server/immediate.py), so it must be the answer the handler would
        write, header for header and byte for byte, with the handler's side effects."""
        return None

    @classmethod
    def max_body_size(cls, settings: Settings) -> int:
        """The largest body this route reads, checked before it is read (server/app.py).
        Routes that stream their bodies set their own limits instead."""
        return settings.request_max_body_size

    def prepare(self) -> Awaitable[None] | None:
        """An ``Auth-Token`` header is checked on every path (docs/accounts.md): a bad one is a 403,
        even on a download. Without it the session cookie decides. With neither nothing is
        awaited: downloads are the hot path."""
        presented = self.request.headers.get("Auth-Token")
        if presented is not None:
            return self._authenticate(presented)
        if self.uses_session:
            cookie = self.get_cookie(SESSION_COOKIE)
            if cookie:
                return self._authenticate_session(cookie)
        return None

    async def _authenticate(self, presented: str) -> None:
        self.set_header("Vary", "Auth-Token")
        try:
            principal = await authenticate_token(self.runtime.db, presented)
        except AuthError as exc:
            raise ApiError(403, str(exc)) from None
        await self._refuse_blocked(principal)
        self.principal = principal

    async def _authenticate_session(self, cookie: str) -> None:
        principal = await authenticate_session(self.runtime.db, self.runtime.sessions, cookie)
        if principal is None:
            return  # anonymous, as if there were no cookie
        assert principal.session is not None
        if csrf.needs_check(self.request.method or "GET"):
            presented = self.request.headers.get(csrf.HEADER)
            if presented is None:
                values = self.request.body_arguments.get(csrf.FIELD)
                presented = values[0].decode("utf-8", "replace") if values else None
            if not csrf.verify(principal.session.csrf_token, presented):
                # Not authenticated, then: whatever needs someone says why (see authorize),
                # and endpoints open to anyone (crash reports...) work as for anyone.
                self.csrf_failed = True
                return
        await self._refuse_blocked(principal)
        self.principal = principal

    async def _refuse_blocked(self, principal: Principal) -> None:
        """The blocked-user check (docs/accounts.md, "Blocked users (Auth0)"), when it is on."""
        guard = self.runtime.blocked
        if guard is None:
            return
        try:
            blocked = await guard.is_blocked(principal.user)
        except BlockedCheckError as exc:
            logger.error("blocked check for %s failed: %s", principal.user.email, exc)
            raise ApiError(
                503,
                "Could not check with the identity provider whether this account is "
                "blocked; try again later",
            ) from None
        if blocked:
            await self.runtime.sessions.delete_for_user(principal.user.id)
            async with self.runtime.db.acquire() as conn:
                await admin.mark_blocked(conn, principal.user)
            raise ApiError(403, BLOCKED_MESSAGE)

    def authorize(self, *any_of: Permission) -> Principal:
        """The ``Auth-Token`` caller, holding one of ``any_of`` if given; else a 403."""
        principal = self.principal
        if principal is None:
            if self.csrf_failed:
                raise ApiError(403, csrf.FAILURE)
            raise ApiError(403, "This requires an Auth-Token to authenticate the request")
        if any_of and not any(principal.has(p) for p in any_of):
            raise ApiError(403, "Forbidden")
        return principal

    def absolute_url(self, url: str) -> str:
        """A store's URL as a client can follow it: a path on this server (``/…``) is joined to
        the scheme and host the request came in on (a proxy's: the server trusts X-Forwarded-*
        headers); any other URL is returned as it is."""
        if url.startswith("/") and not url.startswith("//"):
            return f"{self.request.protocol}://{self.request.host}{url}"
        return url

    def write_json(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data))

    def allowed_methods(self) -> list[str]:
        base = tornado.web.RequestHandler
        return [
            m
            for m in self.SUPPORTED_METHODS
            if getattr(type(self), m.lower(), None) is not getattr(base, m.lower(), None)
        ]

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if status_code == 405:
            self.set_header("Allow", ", ".join(self.allowed_methods()))
            message = f"Method Not Allowed ({self.request.method}): {self.request.path}"
        elif isinstance(exc, ApiError):
            message = exc.message
        elif status_code >= 500:
            message = "Internal Server Error"
        else:
            try:
                message = HTTPStatus(status_code).phrase
            except ValueError:
                message = self._reason
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error": message}))


class NotFoundHandler(BaseHandler):
    """Unknown paths: ``404 {"error": "Not Found", "path": ...}`` (docs/decisions.md), after
    the ``Auth-Token`` check every path makes: a bad token is a 403 here too."""

    uses_session = False

    async def prepare(self) -> None:
        authenticating = super().prepare()
        if authenticating is not None:
            await authenticating
        self.write_json({"error": "Not Found", "path": self.request.path}, status=404)


class BodyRefusal(BaseHandler):
    """Mixed in before a route's handler when its body is over the route's limit: answers 413
    in the route's own error shape, without authenticating and without reading the body."""

    def initialize(self, refusal: str = "", **kwargs: Any) -> None:
        self.refusal = refusal
        super().initialize(**kwargs)

    def set_default_headers(self) -> None:
        super().set_default_headers()
        # The rest of the body stays unread, so the connection cannot serve another request.
        self.set_header("Connection", "close")

    def prepare(self) -> None:
        raise ApiError(413, self.refusal)

    def data_received(self, chunk: bytes) -> None:
        pass


class ReadHandler(BaseHandler):
    """A read-only JSON endpoint. Like the reference's, it does not restrict methods: any other
    method behaves like GET, after the same authentication and CSRF checks (docs/decisions.md)."""

    # Typed as Tornado types them: each endpoint's methods take its own route's path arguments.
    get: Callable[..., Awaitable[None]]
    post: Callable[..., Awaitable[None]]

    async def _like_get(self, *args: str) -> None:
        await self.get(*args)

    post = put = patch = delete = _like_get


def declared_length(value: str) -> int | None:
    """A ``Content-Length`` as Tornado reads it (equal repeated copies allowed); None when
    malformed, which Tornado refuses by itself."""
    copies = {v.strip() for v in value.split(",")}
    if len(copies) != 1:
        return None
    (single,) = copies
    return int(single) if single.isascii() and single.isdigit() else None


def object_id(value: str, model: str) -> int:
    """A numeric id from the path; one too large for any row is simply not found."""
    if len(value) > 18:
        raise ApiError(404, f"No {model} matches the given query.")
    return int(value)
