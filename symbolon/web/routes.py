"""Every route of the web UI (docs/web.md), included by ``server/app.py`` before the download
routes. Page paths never take the shape of a download (``/<file>/<hex id>/<file>``) nor live
under the JSON API's prefixes; tests/test_web_foundation.py checks both."""

from __future__ import annotations

from typing import Any

import tornado.web

from symbolon.web.page import STATIC
from symbolon.web.pages import (
    crashes,
    help_page,
    home,
    missing,
    not_found,
    status,
    symbolication,
    tokens,
    upload_now,
    uploads,
    users,
)


class StaticHandler(tornado.web.StaticFileHandler):
    """``/static/<file>``: a versioned URL (``?v=``, what ``static_url`` makes) is cached for
    years, a bare one for an hour."""

    def get_cache_time(self, path: str, modified: Any, mime_type: str) -> int:
        if "v" in self.request.arguments:
            return self.CACHE_MAX_AGE
        return 3600


ROUTES: list[Any] = [
    *home.ROUTES,
    *help_page.ROUTES,
    *tokens.ROUTES,
    *missing.ROUTES,
    *uploads.ROUTES,
    *upload_now.ROUTES,
    *symbolication.ROUTES,
    *crashes.ROUTES,
    *users.ROUTES,
    *status.ROUTES,
    (r"/static/([^/]+)", StaticHandler, {"path": str(STATIC)}),
    *not_found.ROUTES,  # last: what no page above takes
]

# The patterns of the pages, for the API description's list of routes it leaves out.
PAGE_PATTERNS = tuple(route[0] for route in ROUTES)
