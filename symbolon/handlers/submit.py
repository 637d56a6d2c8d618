"""``POST /submit``: crash reports from Breakpad, Crashpad and Firefox clients (docs/crashes.md).

The size limit and the header checks are decided before the body is read. The body streams in
(``Content-Length`` or chunked, plain or gzip) with bounded memory; a report refused early is
still read to its end, so that a client busy sending it receives the answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable
from typing import Any, cast

import tornado.web
from tornado.http1connection import HTTP1Connection

from symbolon.crashes.body import BodyTooLarge, ReceivedBody, SpoolFull
from symbolon.crashes.collector import (
    RETRY_AFTER_SECONDS,
    Answer,
    Collector,
    Submission,
    discarded,
    metrics,
)
from symbolon.crashes.payload import Malformed, Payload, boundary_of, parse
from symbolon.server.body_buffer import read_body_into
from symbolon.server.keepalive import times_own_body

logger = logging.getLogger("symbolon.crashes")
# Above this, the parse runs in a thread, off the event loop (the checksums always do).
PARSE_IN_THREAD_BYTES = 2 * 1024 * 1024
# Tornado's own limit is lifted (it would answer 400 first); ours answers 413.
UNLIMITED_BODY = 2**62
# How much of a refused body is read and dropped, as a multiple of the limit.
DRAIN_FACTOR = 2


def content_length(value: str | None) -> int | None:
    """The declared length (0 when absent), or None when Tornado would refuse it: digits only,
    and a repeated value (``5, 5``) only when every copy agrees."""
    if value is None or value.strip() == "":
        return 0
    copies = {v.strip() for v in value.split(",")}
    if len(copies) != 1:
        return None
    (single,) = copies
    return int(single) if single.isascii() and single.isdigit() else None


@tornado.web.stream_request_body
class SubmitHandler(tornado.web.RequestHandler):
    SUPPORTED_METHODS = ("GET", "HEAD", "POST", "DELETE", "PATCH", "PUT", "OPTIONS")

    body: ReceivedBody | None = None
    refusal: Answer | None = None
    wire_bytes = 0
    declared = 0
    chunked = False
    _posting = False
    _last_data = 0.0
    _watchdog: Any = None

    @property
    def collector(self) -> Collector:
        return self.application.settings["collector"]

    def prepare(self) -> None:
        self._started = time.perf_counter()
        if self.request.method != "POST":
            return
        settings = self.collector.settings
        headers = self.request.headers
        self.chunked = "chunked" in headers.get("Transfer-Encoding", "").lower()
        declared = content_length(headers.get("Content-Length"))
        if declared is None:
            # Tornado will not read such a body: answer now (it then closes the connection).
            self.answer(discarded("malformed_no_content_length"))
            return
        self.declared = declared
        # Tornado's HTTP/1 server serves it: its connection lets a handler raise the limit.
        cast(HTTP1Connection, self.request.connection).set_max_body_size(UNLIMITED_BODY)
        self._arm_watchdog(settings.collector_body_timeout)
        times_own_body(self.request)  # answered 408 by the watchdog, however long it is set
        if declared > settings.collector_max_body_size:
            return self.too_large(now=declared > DRAIN_FACTOR * settings.collector_max_body_size)
        try:
            self.boundary = boundary_of(headers.get("Content-Type"))
            if declared <= 0 and not self.chunked:
                raise Malformed("no_content_length")
        except Malformed as exc:
            self.refusal = self.malformed(exc.reason)
            return
        gzipped = headers.get("Content-Encoding") == "gzip"
        if gzipped:
            metrics.incr("breakpad_resource.gzipped_crash")
        self.body = ReceivedBody(
            gzipped, settings.collector_max_decompressed_size, budget=self.collector.spool_budget
        )
        if not self.chunked:
            buffer = self.body.place(declared, self.collector.placed_budget)
            if buffer is not None:
                read_body_into(self.request, buffer)

    def data_received(self, chunk: bytes) -> None:
        if self._finished:
            return
        self._last_data = time.monotonic()
        self.wire_bytes += len(chunk)
        limit = self.collector.settings.collector_max_body_size
        if self.wire_bytes > limit:
            self.too_large(now=self.wire_bytes > DRAIN_FACTOR * limit)
            return
        if self.refusal is not None or self.body is None:
            return  # refused: read on and drop, the answer comes at the end
        try:
            self.body.feed(chunk)
        except Malformed as exc:
            self.refusal = self.malformed(exc.reason)
            self.inflated(self.body, "fail")
            self.body.close()  # nothing more is kept: the rest is read and dropped
            self.body = None
        except BodyTooLarge:
            self.too_large(now=False)
        except SpoolFull as exc:
            # Other reports hold the temporary disk this one needs: the client sends it later.
            logger.warning("report refused for now: %s (COLLECTOR_SPOOL_BUDGET)", exc)
            self.refusal = Answer(503, "", {"Retry-After": str(RETRY_AFTER_SECONDS)})
            self.body.close()  # the rest is read and dropped
            self.body = None

    async def post(self) -> None:
        # The body is in: from here the client waits on us (a save may retry for seconds).
        self._disarm_watchdog()
        self._posting = True
        self.answer(await self._submit())

    async def _submit(self) -> Answer:
        if self.refusal is not None:
            return self.refusal
        assert self.body is not None
        body = self.body
        payload: Payload | None = None
        try:
            try:
                buffer = body.finish()
            except Malformed:
                self.inflated(body, "fail")
                raise
            if body.gzipped:
                self.inflated(body, "success")
            kind = "compressed" if body.gzipped else "uncompressed"
            metrics.histogram("breakpad_resource.crash_size", body.size, tags=[f"payload:{kind}"])
            if body.size > PARSE_IN_THREAD_BYTES:
                payload = await asyncio.to_thread(self._parse, buffer)
            else:
                payload = self._parse(buffer)
            request = Submission(
                user_agent=self.request.headers.get("User-Agent"),
                payload_size=self.wire_bytes if self.chunked else self.declared,
                compressed=body.gzipped,
                authorization=self.request.headers.get("Authorization"),
            )
            return await self.collector.submit(payload, request)
        except Malformed as exc:
            if exc.reason == "invalid_payload_structure":
                # The one malformed case the reference logs (docs/crashes.md, "Logs").
                logger.error("extract payload exception: %s", exc)
            return self.malformed(exc.reason)
        finally:
            if payload is not None:
                for view in payload.dumps.values():
                    view.release()
                payload.dumps.clear()
            body.close()

    def _parse(self, buffer: Any) -> Payload:
        query = {}
        for name, values in self.request.query_arguments.items():
            try:
                # Tornado decodes names as Latin-1; both are UTF-8 as sent. The last one wins.
                query[name.encode("latin-1").decode("utf-8")] = values[-1].decode("utf-8")
            except UnicodeError:
                continue
        return parse(buffer, self.boundary, query)

    def inflated(self, body: ReceivedBody, result: str) -> None:
        metrics.timing(
            "breakpad_resource.gzipped_crash_decompress",
            1000 * body.inflate_seconds,
            tags=[f"result:{result}"],
        )

    def malformed(self, reason: str) -> Answer:
        metrics.incr("breakpad_resource.malformed", tags=[f"reason:{reason}"])
        return discarded(f"malformed_{reason}")

    def answer(self, answer: Answer) -> Awaitable[None]:
        self.set_status(answer.status)
        self.set_header("Content-Type", "text/plain")
        for name, value in answer.headers.items():
            self.set_header(name, value)
        return self.finish(answer.body)

    def too_large(self, now: bool) -> None:
        """A 413. Normally the rest of the body is read and dropped first, so that a client
        still sending gets to read the answer; past a bound, it is sent at once (and Tornado
        closes the connection, since the body was not read)."""
        if self.refusal is None or self.refusal.status != 413:
            self.refusal = discarded("too_large", 413)
        if self.body is not None:
            self.body.close()
            self.body = None
        if now:
            self.set_header("Connection", "close")
            self.answer(self.refusal)

    def on_finish(self) -> None:
        self._disarm_watchdog()
        if self.body is not None and not self._posting:  # answered early (a 408): give its
            self.body.close()  # spool back now
        metrics.timing(
            "breakpad_resource.on_post.time", 1000 * (time.perf_counter() - self._started)
        )

    def on_connection_close(self) -> None:
        super().on_connection_close()  # ends the request: Tornado waits on it otherwise
        self._disarm_watchdog()
        if self.body is not None and not self._posting:  # else post() closes it when done
            self.body.close()

    # An idle client must not hold a connection and its spool forever (nginx's
    # client_body_timeout in front of the reference). One timer per request, re-armed lazily.
    def _arm_watchdog(self, timeout: float) -> None:
        self._last_data = time.monotonic()
        loop = asyncio.get_running_loop()

        def check() -> None:
            idle = time.monotonic() - self._last_data
            if self._finished:
                return
            if idle >= timeout:
                self.set_status(408)
                self.set_header("Connection", "close")
                self.set_header("Content-Type", "text/plain")
                self.finish("Discarded=timeout")  # Tornado then closes: the body is unread
                return
            self._watchdog = loop.call_later(timeout - idle, check)

        self._watchdog = loop.call_later(timeout, check)

    def _disarm_watchdog(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    def options(self) -> None:
        self.set_header("Allow", "POST, OPTIONS")
        self.set_status(200)
        self.finish()

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        if status_code == 405:
            self.set_header("Allow", "POST, OPTIONS")
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"title": f"{status_code} {self._reason}"}))


ROUTES = [(r"/submit", SubmitHandler)]
