"""``POST /symbolicate/v5`` and ``/symbolicate/v4`` (docs/symbolication.md).

Errors are ``{"title": ...}`` as the reference's framework wrote them, and CORS is open to any
origin: the Firefox Profiler calls this from the browser.
"""

from __future__ import annotations

import json
import time
from http import HTTPStatus
from typing import Any

from symbolon.conf import Settings
from symbolon.handlers.base import ApiError, BaseHandler
from symbolon.metrics import symbolication_metrics as metrics
from symbolon.symbolication import request
from symbolon.symbolication.symbolicate import debug_block, symbolicate, v4_response, v5_body

EXPOSE_HEADERS = (
    "accept, accept-encoding, authorization, content-type, dnt, origin, user-agent, "
    "x-csrftoken, x-requested-with"
)


class SymbolicateHandler(BaseHandler):
    version = "v5"

    @classmethod
    def max_body_size(cls, settings: Settings) -> int:
        return settings.symbolication_max_body_size

    def set_default_headers(self) -> None:
        # Called again when an error clears the headers: errors carry CORS headers too.
        if "Origin" in self.request.headers:
            self.set_header("Access-Control-Allow-Origin", "*")
            self.set_header("Access-Control-Expose-Headers", EXPOSE_HEADERS)

    def options(self) -> None:
        headers = self.request.headers
        if "Origin" in headers and "Access-Control-Request-Method" in headers:
            self.set_header("Access-Control-Allow-Methods", "POST")
            self.set_header(
                "Access-Control-Allow-Headers", headers.get("Access-Control-Request-Headers", "*")
            )
            self.set_header("Access-Control-Max-Age", "86400")
            self.set_header("Content-Type", "application/json")
        else:
            self.set_header("Allow", "POST")
        self.finish()

    async def post(self) -> None:
        started = time.perf_counter()
        proxied = self.request.headers.get("TeckenProxied", "0")
        metrics.incr("symbolicate.proxied", tags=[f"proxied:{proxied}"])
        try:
            payload = request.parse_json(self.request.body)
            jobs = self.jobs(payload)
        except request.BadRequest as exc:
            if exc.reason:
                metrics.incr("symbolicate.request_error", tags=[f"reason:{exc.reason}"])
            raise ApiError(400, exc.title) from None
        for job in jobs:
            metrics.histogram(
                "symbolicate.stacks_count", len(job.stacks), tags=[f"version:{self.version}"]
            )
        done = await symbolicate(self.runtime.symbolication, jobs)
        body = self.respond(jobs, done, started)
        self.set_header("Content-Type", "application/json")
        self.finish(body)
        elapsed_ms = 1000.0 * (time.perf_counter() - started)
        metrics.timing("symbolicate.api", elapsed_ms, tags=[f"version:{self.version}"])

    def jobs(self, payload: Any) -> list[request.Job]:
        raw = request.v5_jobs(payload)
        metrics.histogram("symbolicate.jobs_count", len(raw), tags=["version:v5"])
        return request.check_size([request.validate_job(i, job) for i, job in enumerate(raw)])

    def respond(self, jobs: list[request.Job], done: Any, started: float) -> str:
        debug = None
        if self.request.headers.get("Debug"):  # any value, "false" and "0" included
            debug = debug_block(jobs, done, time.perf_counter() - started)
        return v5_body(jobs, done, debug)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, ApiError):
            title = exc.message
        else:
            try:
                title = f"{status_code} {HTTPStatus(status_code).phrase}"
            except ValueError:
                title = f"{status_code} {self._reason}"
        if status_code == 405:
            self.set_header("Allow", "POST, OPTIONS")
        self.set_header("Content-Type", "application/json")
        self.set_header("Vary", "Accept")
        self.finish(json.dumps({"title": title}))


class SymbolicateV4Handler(SymbolicateHandler):
    """Deprecated, kept for old clients: one job at the top level, strings for frames."""

    version = "v4"

    def jobs(self, payload: Any) -> list[request.Job]:
        return request.check_size([request.v4_job(payload)])

    def respond(self, jobs: list[request.Job], done: Any, started: float) -> str:
        return json.dumps(v4_response(jobs[0], done))


ROUTES = [
    (r"/symbolicate/v5", SymbolicateHandler),
    (r"/symbolicate/v4", SymbolicateV4Handler),
]
