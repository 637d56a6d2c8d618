"""Paths under the pages' prefixes that no page route takes (``/uploads/foo``): a 404 page in the
layout for a browser, the JSON API's 404 for any other client (handlers/base.py's
``NotFoundHandler``, docs/decisions.md). Download-shaped paths are left to the download routes."""

from __future__ import annotations

from typing import Any

from symbolon.handlers.base import BaseHandler
from symbolon.web.page import PageError, PageHandler

# The first segments of the pages' paths ("/" and /static/ aside).
PREFIXES = ("uploads", "downloads/missing", "symbolication", "crashes", "tokens", "users", "status",
            "help")  # fmt: skip
# Below a prefix, but never the shape of a download (``/<file>/<hex id>/<file>``), which the
# download routes after the pages answer.
PATTERN = r"/(?![^/]+/[0-9A-Fa-f]+/[^/]+$)(?:" + "|".join(PREFIXES) + r")/.*"


def accepts_html(accept: str) -> bool:
    """Whether an ``Accept`` header takes ``text/html`` (as browsers ask for pages)."""
    for media_range in accept.split(","):
        media, *params = (part.strip().lower() for part in media_range.split(";"))
        if media != "text/html":
            continue
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    return float(value) > 0
                except ValueError:
                    return False
        return True
    return False


class PageNotFound(PageHandler):
    """Any method: after the ``Auth-Token`` check every path makes, a 404."""

    def for_browser(self) -> bool:
        return accepts_html(self.request.headers.get("Accept", ""))

    async def prepare(self) -> None:
        await super().prepare()
        if self.for_browser():
            raise PageError(404, f"There is no page at {self.request.path}.")
        self.write_json({"error": "Not Found", "path": self.request.path}, status=404)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        if self.for_browser():
            super().write_error(status_code, **kwargs)
        else:  # a bad token's 403, as the JSON API words it
            BaseHandler.write_error(self, status_code, **kwargs)


ROUTES = [(PATTERN, PageNotFound)]
