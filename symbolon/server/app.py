"""The Tornado application: routes and the settings handlers share."""

from __future__ import annotations

import logging
from typing import Any

import tornado.web

from symbolon.handlers import api_stats, api_tokens, api_uploads, api_users, upload_v2
from symbolon.handlers import auth as auth_handlers
from symbolon.handlers import download as download_handlers
from symbolon.handlers import health as health_handlers
from symbolon.handlers import missing as missing_handlers
from symbolon.handlers import openapi as openapi_handlers
from symbolon.handlers import submit as submit_handlers
from symbolon.handlers import symbolicate as symbolicate_handlers
from symbolon.handlers import upload as upload_handlers
from symbolon.handlers.base import NotFoundHandler
from symbolon.health import version_info
from symbolon.runtime import Runtime

access_log = logging.getLogger("symbolon.access")


def log_request(handler: tornado.web.RequestHandler) -> None:
    status = handler.get_status()
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    if handler.request.path == "/__lbheartbeat__" and status == 200:
        level = logging.DEBUG  # the load balancer asks every few seconds
    # A sign-in callback's query holds a one-time code and the state: not for the logs.
    path = handler.request.path
    uri = path if path.startswith("/oidc/") else handler.request.uri
    access_log.log(
        level,
        "%s %s %d %.1fms",
        handler.request.method,
        uri,
        status,
        1000.0 * handler.request.request_time(),
    )


def with_slash_redirects(routes: list[Any]) -> list[Any]:
    """Paths listed with a trailing slash answer 301 to it without one, as the reference did."""
    redirects = [
        (route[0][:-1], tornado.web.RedirectHandler, {"url": route[0], "permanent": True})
        for route in routes
        if route[0].endswith("/") and len(route[0]) > 1
    ]
    return [*routes, *redirects]


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
            *symbolicate_handlers.ROUTES,
            *openapi_handlers.ROUTES,
            *(extra_routes or []),
        ]
    )
    if runtime.collector is not None:
        routes = submit_handlers.ROUTES + routes
    # The download routes match almost any three-segment path, so they come last.
    routes += download_handlers.ROUTES
    return tornado.web.Application(
        routes,
        runtime=runtime,
        collector=runtime.collector,
        version_info=version_info(runtime.settings.base_dir),
        default_handler_class=NotFoundHandler,
        log_function=log_request,
        debug=False,
    )
