"""Getting a module's symbol file: this server's own storage first, then upstream symbol servers.

The file is, in this order (docs/symbolication.md, "Where symbols come from"): a native file with
debug info (``D/<ID>/D.debug``, or ``D/<ID>/D`` for a ``.pdb``) in own storage, the Breakpad
``.sym`` in own storage then upstream, and last a bare native binary (``D/<ID>/D``) in own storage.
Upstream servers are asked for ``.sym`` files only: a native debug file of a large module is
gigabytes where its ``.sym`` is a tenth of that.

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
from symbolon.storage.lookup import Found, StorageUnavailable, SymbolLookup
from symbolon.storage.store import ObjectMissing, StoreUnavailable
from symbolon.storage.stores import Stores
from symbolon.symbolication import inflate
from symbolon.symbolication.request import ModuleKey
from symbolon.symbols.keys import NATIVE_DEBUG_SUFFIX, has_invalid_characters, key_spellings

logger = logging.getLogger(__name__)

USER_AGENT = "symbolon-symbolication/1.0"
CHUNK = 1024 * 1024
RETRY_STATUSES = frozenset({429, 500, 503, 504})


def sym_filename(debug_filename: str) -> str:
    """``xul.pdb`` → ``xul.sym``; anything else gets ``.sym`` appended."""
    if debug_filename.endswith(".pdb"):
        return debug_filename[:-4] + ".sym"
    return debug_filename + ".sym"


def native_debug_filename(debug_filename: str) -> str:
    """The stored name of a module's native file with debug info: a PDB is its own name."""
    if debug_filename.endswith(".pdb"):
        return debug_filename
    return debug_filename + NATIVE_DEBUG_SUFFIX


# Which files a fetch may find, in the order they are preferred.
NATIVE_DEBUG = "native-debug"
SYM = "sym"
NATIVE = "native"
ALL_KINDS = (NATIVE_DEBUG, SYM, NATIVE)


def kind_files(debug_filename: str, kinds: tuple[str, ...]) -> list[tuple[str, str]]:
    """(kind, file name) to look for in own storage, in order; a PDB has no bare native file
    apart from itself."""
    names = {
        NATIVE_DEBUG: native_debug_filename(debug_filename),
        SYM: sym_filename(debug_filename),
        NATIVE: debug_filename,
    }
    out: list[tuple[str, str]] = []
    for kind in kinds:
        if kind == NATIVE and debug_filename.endswith(".pdb"):
            continue
        out.append((kind, names[kind]))
    return out


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
    file: str = ""  # the name of the file found: ``xul.sym``, ``libfoo.so.debug``, ...
    kind: str = ""  # NATIVE_DEBUG, SYM or NATIVE


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

    async def fetch(
        self, key: ModuleKey, dest: Path, kinds: tuple[str, ...] = ALL_KINDS
    ) -> Fetched:
        """The first file of ``kinds`` some source has, written to ``dest``."""
        started = time.perf_counter()
        result = Fetched(found=False)
        files = kind_files(key[0], kinds)
        # Own storage is asked for the native debug file and the .sym in one go (the first
        # key it has wins), then upstream for the .sym, then own storage for a bare binary.
        first = [kf for kf in files if kf[0] != NATIVE]
        attempts: list[tuple[str, Any]] = []
        if first:
            attempts.append(("own storage", partial(self._from_storage, first)))
        if SYM in kinds:
            attempts += [(url, partial(self._from_upstream, url)) for url in self.upstream_urls]
        last = [kf for kf in files if kf[0] == NATIVE]
        if last:
            attempts.append(("own storage", partial(self._from_storage, last)))
        for name, attempt in attempts:
            tried = time.perf_counter()
            try:
                async with asyncio.timeout(self.deadline):
                    where, body, found = await attempt(key, dest)
            except _SourceError as exc:
                result.errors.append(str(exc))
                where, body, found = None, None, None
            except TimeoutError:  # a source that trickles must not hold the module forever
                message = f"{name}: no whole answer within {self.deadline:g} s"
                logger.warning("%s (SYMBOLICATION_FETCH_DEADLINE)", message)
                result.errors.append(message)
                where, body, found = None, None, None
            elapsed_ms = 1000.0 * (time.perf_counter() - tried)
            if where is _SKIPPED:
                continue
            tag = "success" if where else "fail"
            metrics.histogram("downloader.download", elapsed_ms, tags=[f"response:{tag}"])
            if where:
                assert found is not None
                result.found, result.body, result.source = True, body, where
                result.kind, result.file = found
                break
        result.seconds = time.perf_counter() - started
        return result

    # -- own storage -----------------------------------------------------------------------------

    async def _from_storage(
        self, files: list[tuple[str, str]], key: ModuleKey, dest: Path
    ) -> tuple[Any, Body | None, tuple[str, str] | None]:
        """The first of ``files`` (kind, name) own storage has; lookups are the download
        route's, whose existence answers are cached, so a miss costs no trip once known."""
        filename, debug_id = key
        names = [name for _, name in files]
        if has_invalid_characters(filename, *names) or "/" in filename or "\n" in filename:
            return _SKIPPED, None, None
        spellings: list[str] = []
        kind_of: dict[str, tuple[str, str]] = {}
        for kind, name in files:
            for spelling in key_spellings(filename, debug_id, name):
                spellings.append(spelling)
                kind_of[spelling] = (kind, name)
        hit = await self._first_stored(spellings)
        if hit is None:
            return None, None, None
        found, storage_key = hit
        source = found.source
        which = kind_of[storage_key]
        try:
            if source.public and source.scheme in ("http", "https"):
                url = f"{source.base_url}/{quote(source.object_key(storage_key))}"
                received = await self._http_once(url, dest)
                return (source.url if received is not None else None), received, which
            store = self.stores.at(source)
            async with store.open(source.object_key(storage_key)) as opened:
                received = await stream_to_file(
                    opened.chunks, dest, opened.info.content_encoding, self.max_size
                )
            return source.url, received, which
        except ObjectMissing:
            return None, None, None  # deleted since the lookup remembered it
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

    async def _first_stored(self, keys: list[str]) -> tuple[Found, str] | None:
        """The first of ``keys`` some location has. All are looked up at once: a cold module
        that has none (most of a crash's system libraries) costs one round trip, not one per
        key; the answers are remembered as downloads remember them."""
        answers = await asyncio.gather(
            *(self.lookup.find(key, self.include_try) for key in keys), return_exceptions=True
        )
        for key, answer in zip(keys, answers, strict=True):
            if isinstance(answer, StorageUnavailable):
                # An earlier key may be there: what comes after it cannot be taken for it.
                raise _SourceError(f"storage unavailable: {answer}")
            if isinstance(answer, BaseException):
                raise answer
            if answer is not None:
                return answer, key
        return None

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
    ) -> tuple[Any, Body | None, tuple[str, str] | None]:
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
                        received = await stream_to_file(chunks, dest, encoding, self.max_size)
                        return base, received, (SYM, sym_filename(key[0]))
                    if status == 404:
                        return None, None, None
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
