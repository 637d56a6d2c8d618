"""What every handler shares: JSON errors in the reference's shapes (spec/symbols.md §2)."""

from __future__ import annotations

import json
from collections.abc import Awaitable
from http import HTTPStatus
from typing import Any

import tornado.web

from symbolon.accounts.auth import AuthError, Principal, authenticate_token
from symbolon.server.runtime import Runtime


class ApiError(tornado.web.HTTPError):
    """A 4xx whose message is shown to the client as ``{"error": message}``."""

    def __init__(self, status_code: int, message: str):
        super().__init__(status_code)
        self.message = message


class BaseHandler(tornado.web.RequestHandler):
    @property
    def runtime(self) -> Runtime:
        return self.application.settings["runtime"]

    principal: Principal | None = None

    def prepare(self) -> Awaitable[None] | None:
        """An ``Auth-Token`` header is checked on every path (spec §8.3): a bad one is a 403,
        even on a download. Without the header nothing is awaited: downloads are the hot path."""
        presented = self.request.headers.get("Auth-Token")
        if presented is None:
            return None
        return self._authenticate(presented)

    async def _authenticate(self, presented: str) -> None:
        self.set_header("Vary", "Auth-Token")
        try:
            self.principal = await authenticate_token(self.runtime.db, presented)
        except AuthError as exc:
            raise ApiError(403, str(exc)) from None

    def authorize(self, *any_of: str) -> Principal:
        """The ``Auth-Token`` caller, holding one of ``any_of`` if given; else a 403."""
        principal = self.principal
        if principal is None:
            raise ApiError(403, "This requires an Auth-Token to authenticate the request")
        if any_of and not any(principal.has(p) for p in any_of):
            raise ApiError(403, "Forbidden")
        return principal

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
    """Unknown paths: ``404 {"error": "Not Found", "path": ...}``."""

    def prepare(self) -> None:
        self.write_json({"error": "Not Found", "path": self.request.path}, status=404)
