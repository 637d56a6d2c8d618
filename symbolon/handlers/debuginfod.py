"""debuginfod: ``GET|HEAD /buildid/<build id>/debuginfo|executable|section/<name>``
(docs/download.md, "Debuggers"), for gdb, elfutils and everything built on libdebuginfod.

Whole files are answered as downloads are, with a redirect to where the bytes live; a section is
cut from the stored file here and sent itself.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from tornado.iostream import StreamClosedError

from symbolon.handlers.base import RETRY_AFTER_SECONDS, BaseHandler
from symbolon.metrics import metrics
from symbolon.storage.lookup import StorageUnavailable
from symbolon.storage.store import StoreUnavailable
from symbolon.symbols.debuginfod import (
    SectionFound,
    SectionsBusy,
    build_id_problem,
    buildid_key,
    section_of,
)

CHUNK = 1024 * 1024
PLAIN = "text/plain; charset=utf-8"
UNAVAILABLE = "Symbol storage is unavailable; try again later."
BUSY = "Too many section requests are being answered; try again shortly."
# A section is sent while its request holds a slot (docs/download.md, "Debuggers"): a client
# that reads slower than this is cut off, so clients that never read cannot keep the slots.
FLUSH_SECONDS = 30.0  # the longest wait for one chunk to be taken by the client
SEND_BASE_SECONDS = 60.0
SEND_BYTES_PER_SECOND = 256 * 1024


def send_seconds(size: int) -> float:
    """The longest a section of ``size`` bytes may take to send, generous for a slow link."""
    return SEND_BASE_SECONDS + size / SEND_BYTES_PER_SECOND


def _read(path: Path, offset: int, size: int) -> bytes:
    with path.open("rb") as f:
        f.seek(offset)
        return f.read(size)


class DebuginfodHandler(BaseHandler):
    uses_session = False  # anyone may download, as symbol files

    def _plain(self, status: int, message: str) -> None:
        self.set_status(status)
        self.set_header("Content-Type", PLAIN)
        self.finish(message + "\n")

    def _checked(self, build_id: str) -> bool:
        problem = build_id_problem(build_id)
        if problem is not None:
            self._plain(400, f"Invalid build id {build_id!r}: {problem}.")
            return False
        return True


class ArtifactHandler(DebuginfodHandler):
    """The debuginfo or executable: a redirect to the stored file, as a download answers."""

    async def get(self, build_id: str, artifact: str) -> None:
        await self._answer(build_id, artifact, head=False)

    async def head(self, build_id: str, artifact: str) -> None:
        await self._answer(build_id, artifact, head=True)

    async def _answer(self, build_id: str, artifact: str, head: bool) -> None:
        if not self._checked(build_id):
            return
        key = buildid_key(build_id, artifact)
        refresh = "_refresh" in self.request.query_arguments
        with metrics.timer("debuginfod_lookup"):
            try:
                found = await self.runtime.lookup.find(key, include_try=False, refresh=refresh)
            except StorageUnavailable:
                self.set_header("Retry-After", str(RETRY_AFTER_SECONDS))
                return self._plain(503, UNAVAILABLE)
        if found is None:
            metrics.incr("debuginfod_missing", tags=[f"artifact:{artifact}"])
            return self._plain(404, f"No {artifact} with build id {build_id} is stored.")
        if head:
            self.set_status(200)
            self.finish()
            return
        expires = self.runtime.settings.download_presigned_url_expiry_seconds
        # Relative for a directory location, as a download's redirect (docs/download.md).
        location = await self.runtime.lookup.download_url(found.source, key, expires)
        self.set_status(302)
        self.set_header("Location", location)
        self.finish()


class SectionHandler(DebuginfodHandler):
    """One section's bytes, from the debuginfo, else the executable."""

    async def get(self, build_id: str, name: str) -> None:
        await self._answer(build_id, name, head=False)

    async def head(self, build_id: str, name: str) -> None:
        await self._answer(build_id, name, head=True)

    async def _answer(self, build_id: str, name: str, head: bool) -> None:
        if not self._checked(build_id):
            return
        runtime = self.runtime
        with metrics.timer("debuginfod_section"):
            try:
                async with (
                    runtime.sections.slot(),
                    section_of(runtime.lookup, runtime.stores, build_id, name) as got,
                ):
                    if not isinstance(got, SectionFound):
                        return self._plain(404, got.reason)
                    await self._send(got, head)
            except SectionsBusy:
                metrics.incr("debuginfod_section_busy")
                self.set_header("Retry-After", str(RETRY_AFTER_SECONDS))
                return self._plain(503, BUSY)
            except (StorageUnavailable, StoreUnavailable):
                if self._headers_written:
                    raise
                self.set_header("Retry-After", str(RETRY_AFTER_SECONDS))
                return self._plain(503, UNAVAILABLE)

    async def _send(self, got: SectionFound, head: bool) -> None:
        self.set_status(200)
        self.set_header("Content-Type", "application/octet-stream")
        self.set_header("Content-Length", str(got.size))
        self.set_header("X-DEBUGINFOD-SIZE", str(got.size))  # libdebuginfod's progress total
        if head:
            self.finish()
            return
        # Timers that close the connection rather than wait_for: the bytes, the clean-up and
        # the metrics keep their order.
        loop = asyncio.get_running_loop()
        overall = loop.call_later(send_seconds(got.size), self._cut_off)
        offset, left = got.offset, got.size
        try:
            while left:
                chunk = await asyncio.to_thread(_read, got.path, offset, min(CHUNK, left))
                if not chunk:
                    raise OSError("the section's file ended early")
                offset, left = offset + len(chunk), left - len(chunk)
                self.write(chunk)
                stalled = loop.call_later(FLUSH_SECONDS, self._cut_off)
                try:
                    await self.flush()
                finally:
                    stalled.cancel()
                if self.request.connection.stream.closed():  # type: ignore[union-attr]
                    return  # cut off
        except StreamClosedError:
            return  # the client went away, or was cut off
        finally:
            overall.cancel()
        self.finish()

    def _cut_off(self) -> None:
        """A client that does not read holds a slot and a temporary file: it is cut off."""
        metrics.incr("debuginfod_section_too_slow")
        # The stream itself: closing the HTTP connection would leave the pending flush unresolved.
        stream = getattr(self.request.connection, "stream", None)
        if stream is not None:
            stream.close()


class SourceHandler(DebuginfodHandler):
    """Sources are not kept: a plain 404 a client takes as "not here", sooner than a JSON one."""

    def get(self, build_id: str) -> None:
        if self._checked(build_id):
            self._plain(404, "This server keeps no source files.")

    head = get


ROUTES = [
    (r"/buildid/([^/]+)/(debuginfo|executable)", ArtifactHandler),
    (r"/buildid/([^/]+)/section/([^/]+)", SectionHandler),
    (r"/buildid/([^/]+)/source/.*", SourceHandler),
]
