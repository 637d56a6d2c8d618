"""Copy a symbol store to another location (docs/operations.md, "Moving symbols to another
store"): every object under the source location, with its content type, encoding and metadata,
and those of its try location to the destination's try location.

Objects stream through a temporary file, so memory stays small whatever their size. An object
the destination already holds with the same size (and the same MD5, when both sides know it) is
skipped, so a run that was interrupted continues where it stopped. A directory lists a file placed
in it by hand without an MD5 (it would have to read it): such a file is compared by size only.
Each copy is checked in the destination after writing; a mismatch is a failure, not a copy.

Keys keep their names below the location: a key under the source's prefix gets the destination's
prefix instead (the same key when both prefixes agree, as they usually do). A try location is a
location of its own even where it lies inside the other (``try/`` of a whole bucket, the ``try``
subdirectory of a directory), so its objects go to the destination's try location, where that
backend keeps them, with their descriptions.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import IO

from symbolon.storage.sources import SymbolSource, derive_try_url
from symbolon.storage.store import ObjectInfo, ObjectMissing, SymbolStore

MD5_HEX = re.compile(r"^[0-9a-f]{32}$")
# Failures kept in the result for the summary; each is also reported as it happens.
KEPT_FAILURES = 100


class CopyRefused(Exception):
    """The copy cannot start (same location, overlapping locations); the message says why."""


class Outcome(Enum):
    COPIED = "copied"
    SKIPPED = "skipped"  # already in the destination, same size (and MD5)
    WOULD_COPY = "would copy"  # dry run
    GONE = "gone"  # deleted from the source after it was listed
    FAILED = "failed"


@dataclass(frozen=True)
class CopyOptions:
    prefix: str = ""  # below each source location: only keys starting with it
    jobs: int = 4
    dry_run: bool = False
    tmp_dir: Path | None = None
    progress_interval: float = 1.0  # seconds between progress reports


@dataclass(frozen=True)
class ObjectDone:
    outcome: Outcome
    key: str  # in the source
    destination_key: str
    size: int
    location: str  # the source location's URL
    message: str = ""  # why it failed

    @property
    def where(self) -> str:
        """The key, and where it goes if that differs."""
        if self.key == self.destination_key:
            return self.key
        return f"{self.key} -> {self.destination_key}"


@dataclass
class Totals:
    """Counts so far; ``listed`` grows while the source is still being listed."""

    listed: int = 0
    listing_done: bool = False
    copied: int = 0
    skipped: int = 0
    would_copy: int = 0
    gone: int = 0
    failed: int = 0
    bytes_copied: int = 0  # of objects copied (or, in a dry run, to copy)
    bytes_skipped: int = 0
    bytes_moved: int = 0  # streamed so far, objects in progress and failed ones included
    seconds: float = 0.0

    @property
    def done(self) -> int:
        return self.copied + self.skipped + self.would_copy + self.gone + self.failed

    @property
    def rate(self) -> float:
        """Bytes streamed per second."""
        return self.bytes_moved / self.seconds if self.seconds > 0 else 0.0


@dataclass
class CopyResult:
    totals: Totals
    failures: list[ObjectDone] = field(default_factory=list)  # the first KEPT_FAILURES


class CopyMismatch(Exception):
    """What was read or written is not what the source listed."""


def location_root(source: SymbolSource) -> str:
    """The key prefix of everything under a location: ``pfx/``, or nothing for a whole bucket."""
    return f"{source.prefix}/" if source.prefix else ""


def _place(source: SymbolSource) -> tuple[str, str]:
    """Where a location's keys live, as (container, path below it): one location is inside
    another when their containers agree and one path starts with the other."""
    if source.scheme == "file":
        return "file", os.path.realpath(source.bucket) + "/"
    # AWS bucket names are global, so any AWS host names the same bucket.
    host = source.endpoint_url.lower() if source.endpoint_url else "aws"
    return f"s3 {host} {source.bucket}", location_root(source)


def refuse_overlap(src: SymbolSource, dst: SymbolSource) -> None:
    """Raise :class:`CopyRefused` if the locations are the same, or one lies inside the other
    (a copy would list what it writes)."""
    (here, a), (there, b) = _place(src), _place(dst)
    if here != there:
        return
    if a == b:
        raise CopyRefused(f"{src.url} and {dst.url} are the same location")
    if a.startswith(b) or b.startswith(a):
        raise CopyRefused(f"{src.url} and {dst.url} overlap: one is inside the other")


def _inside(inner: SymbolSource, outer: SymbolSource) -> str | None:
    """The key prefix, below ``outer``, of the location ``inner`` when it lies inside it."""
    (here, a), (there, b) = _place(inner), _place(outer)
    if here == there and a != b and a.startswith(b):
        return a[len(b) :] if outer.scheme == "file" else a
    return None


@dataclass(frozen=True)
class Route:
    """One location copied to another; source keys starting with one of ``exclude`` belong to
    another route."""

    src: SymbolSource
    dst: SymbolSource
    exclude: tuple[str, ...] = ()


def routes(src: SymbolSource, dst: SymbolSource, file_prefix: str) -> list[Route]:
    """The location to the other, and its try location to the other's; raises
    :class:`CopyRefused` if a source location overlaps a destination one."""
    src_try = SymbolSource.parse(derive_try_url(src.url), file_prefix)
    dst_try = SymbolSource.parse(derive_try_url(dst.url), file_prefix)
    refuse_overlap(src, dst)
    for a in (src, src_try):
        for b in (dst, dst_try):
            refuse_overlap(a, b)
    nested = _inside(src_try, src)
    return [Route(src, dst, (nested,) if nested else ()), Route(src_try, dst_try)]


def single_part_md5(etag: str) -> str | None:
    """The MD5 an etag stands for, or None (multipart uploads, backends without one)."""
    etag = etag.strip('"').lower()
    return etag if MD5_HEX.match(etag) else None


def same_object(src: ObjectInfo, dst: ObjectInfo) -> bool:
    if src.size != dst.size:
        return False
    a, b = single_part_md5(src.etag), single_part_md5(dst.etag)
    return a is None or b is None or a == b


def _write(fh: IO[bytes], digest: hashlib._Hash, chunk: bytes) -> None:
    fh.write(chunk)
    digest.update(chunk)


@dataclass(frozen=True)
class StorePair:
    """A source store, the store its objects go to, and the source keys left to another pair."""

    src: SymbolStore
    dst: SymbolStore
    exclude: tuple[str, ...] = ()

    def destination_key(self, key: str) -> str:
        return location_root(self.dst.source) + key[len(location_root(self.src.source)) :]


class _Copier:
    def __init__(
        self,
        pairs: Sequence[StorePair],
        options: CopyOptions,
        on_object: Callable[[ObjectDone], None] | None,
        on_progress: Callable[[Totals], None] | None,
    ):
        self.pairs, self.options = pairs, options
        self.on_object, self.on_progress = on_object, on_progress
        self.totals = Totals()
        self.failures: list[ObjectDone] = []
        self.started = time.monotonic()

    def snapshot(self) -> Totals:
        self.totals.seconds = time.monotonic() - self.started
        return replace(self.totals)

    async def run(self) -> CopyResult:
        jobs = max(1, self.options.jobs)
        queue: asyncio.Queue[tuple[StorePair, ObjectInfo] | None] = asyncio.Queue(jobs * 4)
        tasks = [asyncio.create_task(self.lister(queue, jobs))]
        tasks += [asyncio.create_task(self.worker(queue)) for _ in range(jobs)]
        if self.on_progress:
            tasks.append(asyncio.create_task(self.tick()))
        try:
            # The first failure (a listing that breaks) ends them all.
            await asyncio.gather(*tasks[: jobs + 1])
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        totals = self.snapshot()
        if self.on_progress:
            self.on_progress(totals)
        return CopyResult(totals, self.failures)

    async def lister(
        self, queue: asyncio.Queue[tuple[StorePair, ObjectInfo] | None], jobs: int
    ) -> None:
        for pair in self.pairs:
            prefix = location_root(pair.src.source) + self.options.prefix
            async for info in pair.src.list(prefix):
                if pair.exclude and info.key.startswith(pair.exclude):
                    continue
                self.totals.listed += 1
                await queue.put((pair, info))
        self.totals.listing_done = True
        for _ in range(jobs):
            await queue.put(None)

    async def tick(self) -> None:
        assert self.on_progress is not None
        while True:
            await asyncio.sleep(self.options.progress_interval)
            self.on_progress(self.snapshot())

    async def worker(self, queue: asyncio.Queue[tuple[StorePair, ObjectInfo] | None]) -> None:
        while (item := await queue.get()) is not None:
            done = await self.one(*item)
            t = self.totals
            if done.outcome is Outcome.COPIED:
                t.copied += 1
                t.bytes_copied += done.size
            elif done.outcome is Outcome.WOULD_COPY:
                t.would_copy += 1
                t.bytes_copied += done.size
            elif done.outcome is Outcome.SKIPPED:
                t.skipped += 1
                t.bytes_skipped += done.size
            elif done.outcome is Outcome.GONE:
                t.gone += 1
            else:
                t.failed += 1
                if len(self.failures) < KEPT_FAILURES:
                    self.failures.append(done)
            if self.on_object:
                self.on_object(done)

    async def one(self, pair: StorePair, info: ObjectInfo) -> ObjectDone:
        target = pair.destination_key(info.key)

        def done(outcome: Outcome, message: str = "") -> ObjectDone:
            return ObjectDone(outcome, info.key, target, info.size, pair.src.source.url, message)

        try:
            existing = await pair.dst.head(target)
            if existing is not None and same_object(info, existing):
                return done(Outcome.SKIPPED)
            if self.options.dry_run:
                return done(Outcome.WOULD_COPY)
            await self.copy(pair, info.key, target)
        except ObjectMissing:
            return done(Outcome.GONE, "deleted from the source since it was listed")
        except CopyMismatch as exc:
            return done(Outcome.FAILED, str(exc))
        except Exception as exc:
            # One object's trouble does not stop the others; the rerun retries it.
            return done(Outcome.FAILED, f"{type(exc).__name__}: {exc}")
        return done(Outcome.COPIED)

    async def copy(self, pair: StorePair, key: str, target: str) -> None:
        fd, name = tempfile.mkstemp(prefix="symbolon-copy-", dir=self.options.tmp_dir)
        path = Path(name)
        try:
            digest = hashlib.md5(usedforsecurity=False)
            size = 0
            with os.fdopen(fd, "wb") as fh:
                async with pair.src.open(key) as opened:
                    async for chunk in opened.chunks:
                        await asyncio.to_thread(_write, fh, digest, chunk)
                        size += len(chunk)
                        self.totals.bytes_moved += len(chunk)
                info = opened.info
            md5 = digest.hexdigest()
            if size != info.size:
                raise CopyMismatch(f"read {size} bytes of the source's {info.size}")
            expected = single_part_md5(info.etag)
            if expected is not None and expected != md5:
                raise CopyMismatch("the bytes read do not match the source's MD5")
            await pair.dst.put_file(
                target,
                path,
                content_type=info.content_type,
                content_encoding=info.content_encoding,
                metadata=info.metadata,
            )
        finally:
            # Not awaited: a cancelled copy (Ctrl-C) may not get to run an await before it ends.
            path.unlink(missing_ok=True)  # noqa: ASYNC240
        written = await pair.dst.head(target)
        if written is None:
            raise CopyMismatch("not in the destination after writing")
        if written.size != size:
            raise CopyMismatch(f"{written.size} bytes in the destination after writing, not {size}")
        stored = single_part_md5(written.etag)
        if stored is not None and stored != md5:
            raise CopyMismatch("the destination's MD5 differs from the bytes written")


async def copy_pairs(
    pairs: Sequence[StorePair],
    options: CopyOptions | None = None,
    *,
    on_object: Callable[[ObjectDone], None] | None = None,
    on_progress: Callable[[Totals], None] | None = None,
) -> CopyResult:
    """Copy every object under each pair's source location (narrowed by ``options.prefix``) to
    its destination, one pair after the other, a few objects at a time.

    ``on_object`` hears of each object as it is done with; ``on_progress`` gets the totals every
    ``options.progress_interval`` seconds and once at the end. Raises :class:`CopyRefused` for
    overlapping locations, and what listing a source raises (it cannot go on without it)."""
    for pair in pairs:
        refuse_overlap(pair.src.source, pair.dst.source)
    return await _Copier(pairs, options or CopyOptions(), on_object, on_progress).run()


async def copy_store(
    src: SymbolStore,
    dst: SymbolStore,
    options: CopyOptions | None = None,
    *,
    on_object: Callable[[ObjectDone], None] | None = None,
    on_progress: Callable[[Totals], None] | None = None,
) -> CopyResult:
    """Copy every object under ``src``'s location to ``dst``'s (see :func:`copy_pairs`)."""
    pair = StorePair(src, dst)
    return await copy_pairs([pair], options, on_object=on_object, on_progress=on_progress)
