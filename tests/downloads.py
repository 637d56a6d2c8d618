"""Asking for a symbol file as a debugger does, for the tests that look at the answer itself."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import tornado.httpclient
from tornado.testing import bind_unused_port

from symbolon.runtime import Runtime
from symbolon.server.app import make_app, make_server


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


@contextmanager
def behind_a_proxy(runtime: Runtime) -> Iterator[str]:
    """The app on a port of its own, served as ``serve`` serves it: believing the proxy's
    ``X-Forwarded-Proto``. Yields its base URL."""
    sock, port = bind_unused_port()
    server = make_server(make_app(runtime))
    server.add_sockets([sock])
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


# What a proxy in front of the server says about the request it forwarded.
PROXY_HEADERS = {"Host": "symbols.example.com", "X-Forwarded-Proto": "https"}
