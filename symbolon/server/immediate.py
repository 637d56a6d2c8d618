"""Answers a route gives from what the process holds, written without a request handler.

A cached download hit does little work of its own: most of its cost was Tornado's handler
machinery around it (a RequestHandler, its coroutine, its header bookkeeping), more than twice
what writing the same answer costs. A handler class can offer such answers
(``BaseHandler.answer_from_memory``); the application then writes them with ``ImmediateAnswer``,
byte for byte as the handler would have, and the handler runs for every other request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import tornado.web
from tornado import httputil

from symbolon.handlers.base import Answer
from symbolon.handlers.dates import default_headers


class ImmediateAnswer(httputil.HTTPMessageDelegate):
    """Writes ``answer`` (a redirect or a refusal) to a ``GET`` without a body, as a
    RequestHandler's ``finish`` would: the same headers in the same order, the application's
    output transforms applied, the same access log line. (A 200 would also need Tornado's
    ``Etag``, a 304 no ``Content-Length``: ``Answer`` holds neither.)"""

    def __init__(
        self,
        request: httputil.HTTPServerRequest,
        answer: Answer,
        transforms: Sequence[type[tornado.web.OutputTransform]],
        log: Callable[[httputil.HTTPServerRequest, int], None],
    ) -> None:
        self.request = request
        self.answer = answer
        self.transforms = transforms
        self.log = log

    def headers_received(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
    ) -> Awaitable[None] | None:
        return None

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        return None  # chosen only for requests that declare no body

    def finish(self) -> None:
        status = self.answer.status
        headers = default_headers()
        headers.update(self.answer.headers)
        chunk = self.answer.body
        headers["Content-Length"] = str(len(chunk))
        for transform_class in self.transforms:
            status, headers, chunk = transform_class(self.request).transform_first_chunk(
                status, headers, chunk, True
            )
        connection = self.request.connection
        assert connection is not None
        start_line = httputil.ResponseStartLine(
            "", status, httputil.responses.get(status, "Unknown")
        )
        connection.write_headers(start_line, headers, chunk)
        connection.finish()
        self.log(self.request, status)

    def on_connection_close(self) -> None:
        pass
