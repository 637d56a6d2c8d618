"""Getting a module's sym file: this server's own storage first, then upstream symbol servers.

Own storage is read directly (the same lookup, try rules and invalidation as downloads, then a read
from the location's store, or a plain GET of a public bucket's object), upstream servers over HTTP
with the reference's retry rules (docs/symbolication.md). Bodies are streamed to a temp file as
received (gzip-compressed ones stay compressed: the parse process inflates them, see inflate.py),
so a sym file of a gigabyte never sits in the server's memory.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
from yarl import URL

from symbolon.metrics import symbolication_metrics as metrics
from symbolon.storage.lookup import StorageUnavailable, SymbolLookup
from symbolon.storage.store import ObjectMissing, StoreUnavailable
from symbolon.storage.stores import Stores
from symbolon.symbolication import inflate
from symbolon.symbolication.request import ModuleKey
from symbolon.symbols.keys import has_invalid_characters, key_spellings

logger = logging.getLogger(__name__)

USER_AGENT = "symbolon-symbolication/1.0"
CHUNK = 1024 * 1024
RETRY_STATUSES = frozenset({429, 500, 503, 504})


def sym_filename(debug_filename: str) -> str:
    """``xul.pdb`` → ``xul.sym``; anything else gets ``.sym`` appended."""
    if debug_filename.endswith(".pdb"):
        return debug_filename[:-4] + ".sym"
    return debug_filename + ".sym"


def upstream_url(base: str, key: ModuleKey) -> str:
    filename, debug_id = key
    base = base.rstrip("/") + "/"
    segments = (filename, debug_id, sym_filename(filename))
    return base + "/".join(quote(s, safe="+@") for s in segments)


class TooLarge(Exception):
    """A sym file larger than ``SYMBOLICATION_MAX_SYM_SIZE``."""


class _Sink:
    """Writes a body to a file as received; a compressed one is only probed (see inflate)."""

    def __init__(self, path: Path, is_compressed: bool):
        self.file = open(path, "wb")  # noqa: SIM115 (closed by finish/abort)
        self.probe = is_compressed
        self.size = 0
        self.tail = b""

    def write(self, chunk: bytes) -> None:
        if self.probe:
            self.probe = False
            inflate.probe(chunk)
        self.file.write(chunk)
        self.size += len(chunk)
        self.tail = (self.tail + chunk[-4:])[-4:]

    def finish(self) -> None:
        self.file.close()


@dataclass(frozen=True)
class Body:
    size: int  # bytes as received
    compressed: bool
    inflated_size: int  # known or estimated: what parsing it will take memory for


async def stream_to_file(
    chunks: AsyncIterator[bytes],
    path: Path,
    content_encoding: str | None,
    max_size: int | None = None,
) -> Body:
    """Write the chunks in a thread while the next chunk is being received; past ``max_size``
    bytes received, stop with TooLarge."""
    is_compressed = inflate.compressed(content_encoding)
    sink = _Sink(path, is_compressed)
    pending: asyncio.Future | None = None
    received = 0
    try:
        async for chunk in chunks:
            received += len(chunk)
            if max_size is not None and received > max_size:
                raise TooLarge(f"larger than {max_size} bytes (SYMBOLICATION_MAX_SYM_SIZE)")
            if pending is not None:
                await pending
            pending = asyncio.ensure_future(asyncio.to_thread(sink.write, chunk))
        if pending is not None:
            await pending
    except BaseException:
        if pending is not None and not pending.done():
            pending.cancel()
        raise
    finally:
        sink.finish()
    hint = inflate.inflated_size_hint(sink.tail, sink.size) if is_compressed else sink.size
    return Body(sink.size, is_compressed, hint)


@dataclass
class Fetched:
    """What the sources said about one module."""

    found: bool
    body: Body | None = None
    seconds: float = 0.0
    source: str = ""
    errors: list[str] = field(default_factory=list)


class Fetcher:
    """Tries each source in order; the first that has the file wins."""

    def __init__(
        self,
        lookup: SymbolLookup,
        stores: Stores,
        upstream_urls: tuple[str, ...],
        include_try: bool = True,
        connect_timeout: float = 5.0,
        read_timeout: float = 5.0,
        attempts: int = 5,
        backoff: float = 1.0,
        max_size: int | None = None,
        deadline: float | None = None,
    ):
        self.lookup = lookup
        self.stores = stores
        self.upstream_urls = tuple(u.rstrip("/") + "/" for u in upstream_urls)
        self.include_try = include_try
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.attempts = attempts
        self.backoff = backoff
        self.max_size = max_size
        self.deadline = deadline  # per source, retries included
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=self.connect_timeout, sock_read=self.read_timeout
                ),
                headers={
                    "User-Agent": USER_AGENT,
                    "Accept-Encoding": "gzip, deflate",
                    "Accept": "*/*",
                },
                auto_decompress=False,  # kept compressed: the parse process inflates
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def fetch(self, key: ModuleKey, dest: Path) -> Fetched:
        started = time.perf_counter()
        result = Fetched(found=False)
        attempts = [("own storage", self._from_storage)]
        attempts += [(url, partial(self._from_upstream, url)) for url in self.upstream_urls]
        for name, attempt in attempts:
            tried = time.perf_counter()
            try:
                async with asyncio.timeout(self.deadline):
                    where, body = await attempt(key, dest)
            except _SourceError as exc:
                result.errors.append(str(exc))
                where, body = None, None
            except TimeoutError:  # a source that trickles must not hold the module forever
                message = f"{name}: no whole answer within {self.deadline:g} s"
                logger.warning("%s (SYMBOLICATION_FETCH_DEADLINE)", message)
                result.errors.append(message)
                where, body = None, None
            elapsed_ms = 1000.0 * (time.perf_counter() - tried)
            if where is _SKIPPED:
                continue
            tag = "success" if where else "fail"
            metrics.histogram("downloader.download", elapsed_ms, tags=[f"response:{tag}"])
            if where:
                result.found, result.body, result.source = True, body, where
                break
        result.seconds = time.perf_counter() - started
        return result

    # -- own storage -----------------------------------------------------------------------------

    async def _from_storage(self, key: ModuleKey, dest: Path) -> tuple[Any, Body | None]:
        filename, debug_id = key
        symbol_file = sym_filename(filename)
        if has_invalid_characters(filename, symbol_file) or "/" in filename or "\n" in filename:
            return _SKIPPED, None
        try:
            hit = await self.lookup.find_any(
                key_spellings(filename, debug_id, symbol_file), include_try=self.include_try
            )
        except StorageUnavailable as exc:
            raise _SourceError(f"storage unavailable: {exc}") from None
        if hit is None:
            return None, None
        found, storage_key = hit
        source = found.source
        try:
            if source.public and source.scheme in ("http", "https"):
                url = f"{source.base_url}/{quote(source.object_key(storage_key))}"
                received = await self._http_once(url, dest)
                return (source.url if received is not None else None), received
            store = self.stores.at(source)
            async with store.open(source.object_key(storage_key)) as opened:
                received = await stream_to_file(
                    opened.chunks, dest, opened.info.content_encoding, self.max_size
                )
            return source.url, received
        except ObjectMissing:
            return None, None  # deleted since the lookup remembered it
        except StoreUnavailable as exc:
            raise _SourceError(str(exc)) from None
        except (
            OSError,
            inflate.DecodeError,
            aiohttp.ClientError,
            TimeoutError,
            TooLarge,
        ) as exc:
            raise _SourceError(f"{source.url}: {exc!r}") from None

    async def _http_once(self, url: str, dest: Path) -> Body | None:
        async with self.session().get(URL(url, encoded=True)) as response:
            if response.status != 200:
                return None
            encoding = response.headers.get("Content-Encoding")
            chunks = response.content.iter_chunked(CHUNK)
            return await stream_to_file(chunks, dest, encoding, self.max_size)

    # -- upstream symbol servers -----------------------------------------------------------------

    async def _from_upstream(
        self, base: str, key: ModuleKey, dest: Path
    ) -> tuple[Any, Body | None]:
        """One source, at most ``attempts`` tries: 200 found, 404 not found; 429,
        500, 503, 504 and network errors retried with full-jitter back-off; others final."""
        url = upstream_url(base, key)
        problem = ""
        for attempt in range(self.attempts):
            if attempt:
                await asyncio.sleep(random.uniform(0, self.backoff * 2 ** (attempt - 1)))
            try:
                async with self.session().get(URL(url, encoded=True)) as response:
                    status = response.status
                    if status == 200:
                        encoding = response.headers.get("Content-Encoding")
                        chunks = response.content.iter_chunked(CHUNK)
                        return base, await stream_to_file(chunks, dest, encoding, self.max_size)
                    if status == 404:
                        return None, None
                    problem = f"{url} answered {status}"
                    if status not in RETRY_STATUSES:
                        head = (await response.content.read(100)).decode("utf-8", "replace")
                        logger.error("symbol downloader got %d: %s (%s)", status, head, url)
                        raise _SourceError(problem)
            except inflate.DecodeError as exc:
                raise _SourceError(f"{url}: bad compressed body: {exc}") from None
            except TooLarge as exc:
                logger.error("symbol downloader refused %s: %s", url, exc)
                raise _SourceError(f"{url}: {exc}") from None
            except aiohttp.ClientPayloadError as exc:
                raise _SourceError(f"{url}: broken body: {exc}") from None
            except (aiohttp.ClientConnectionError, TimeoutError) as exc:
                problem = f"{url}: {exc!r}"
            except aiohttp.ClientError as exc:  # redirect loops, bad answers: not worth retrying
                raise _SourceError(f"{url}: {exc!r}") from None
        logger.warning("giving up on %s after %d attempts: %s", url, self.attempts, problem)
        raise _SourceError(problem)


class _SourceError(Exception):
    """This source could not say; the next one is tried."""


_SKIPPED = object()
