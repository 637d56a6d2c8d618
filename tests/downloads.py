"""Asking for a symbol file as a debugger does, for the tests that look at the answer itself."""

from __future__ import annotations

from typing import Any

import tornado.httpclient


async def get(
    http_client: tornado.httpclient.AsyncHTTPClient,
    base_url: str,
    path: str,
    method: str = "GET",
    **kw: Any,
) -> tornado.httpclient.HTTPResponse:
    """The answer as sent: a redirect is not followed, an error status is not raised."""
    return await http_client.fetch(
        base_url + path,
        method=method,
        follow_redirects=False,
        raise_error=False,
        allow_nonstandard_methods=True,
        **kw,
    )
