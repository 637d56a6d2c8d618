"""debuginfod's view of stored ELF files (docs/download.md, "Debuggers"): build ids, the keys
``buildid/<build id>/debuginfo|executable``, and one section of such a file.

A section is cut from a copy of the whole object: it is streamed (inflated when stored gzipped)
to a temporary file, so memory stays small whatever the file's size, and the caller sends the
section's bytes from that file and removes it.
"""

from __future__ import annotations

import asyncio
import os
import re
import tempfile
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from symbolon.storage.lookup import SymbolLookup
from symbolon.storage.store import ObjectMissing
from symbolon.storage.stores import Stores
from symbolon.symbols.elf_sections import NotElf, Section, find_section

HEX = re.compile(r"[0-9a-fA-F]*")
# As debuginfod's own client: a build id is at most 64 bytes (GNU ld's are 20 or 16).
MAX_BUILD_ID_BYTES = 64
DEBUGINFO, EXECUTABLE = "debuginfo", "executable"
ARTIFACTS = (DEBUGINFO, EXECUTABLE)
GZIP_ENCODINGS = frozenset({"gzip", "x-gzip"})


def build_id_problem(build_id: str) -> str | None:
    """Why ``build_id`` cannot be one (None when it can): hex digits, two per byte."""
    if not build_id or not HEX.fullmatch(build_id):
        return "a build id is hexadecimal digits"
    if len(build_id) % 2:
        return "a build id has an even number of hexadecimal digits (two per byte)"
    if len(build_id) > 2 * MAX_BUILD_ID_BYTES:
        return f"a build id is at most {MAX_BUILD_ID_BYTES} bytes ({2 * MAX_BUILD_ID_BYTES} digits)"
    return None


def buildid_key(build_id: str, artifact: str) -> str:
    """The storage key: build ids are stored lower-cased, as ELF tools print them."""
    return f"buildid/{build_id.lower()}/{artifact}"


# Each section request copies a whole stored file to disk: a few at once per web process, a few
# more waiting, and the rest answered 503 at once, so anonymous requests cannot pile up work.
SECTION_SLOTS = 2
SECTION_WAITING = 8


class SectionsBusy(Exception):
    """Every slot is taken and the queue is full: the client is asked to come back."""


class SectionGate:
    """Bounds the sections being cut at once in this process, and the requests waiting."""

    def __init__(self, slots: int = SECTION_SLOTS, waiting: int = SECTION_WAITING):
        self.slots, self.most_waiting = slots, waiting
        self.waiting = 0
        self._semaphore: asyncio.Semaphore | None = None

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self._semaphore is None:  # made on the loop that uses it
            self._semaphore = asyncio.Semaphore(self.slots)
        semaphore = self._semaphore
        if semaphore.locked() and self.waiting >= self.most_waiting:
            raise SectionsBusy
        self.waiting += 1
        try:
            await semaphore.acquire()
        finally:
            self.waiting -= 1
        try:
            yield
        finally:
            semaphore.release()


@dataclass(frozen=True)
class SectionFound:
    """The section's bytes are ``size`` bytes at ``offset`` of ``path`` (a temporary file)."""

    path: Path
    offset: int
    size: int
    artifact: str


@dataclass(frozen=True)
class SectionMissing:
    reason: str  # for a person or a debuginfod client's user


INFLATE_STEP = 16 << 20  # the most inflated bytes held at once


class _Inflater:
    """Writes an object's stored bytes to a file, inflating them if they were stored gzipped."""

    def __init__(self, path: Path, gzipped: bool):
        self.out: BinaryIO = path.open("wb")
        self.inflater = zlib.decompressobj(16 + zlib.MAX_WBITS) if gzipped else None

    def write(self, chunk: bytes) -> None:
        if self.inflater is None:
            self.out.write(chunk)
            return
        try:
            # Bounded output per call: a chunk of zeros inflates a thousandfold.
            while chunk:
                self.out.write(self.inflater.decompress(chunk, INFLATE_STEP))
                chunk = self.inflater.unconsumed_tail
        except zlib.error as exc:
            raise NotElf(f"stored gzipped but does not inflate: {exc}") from None

    def finish(self) -> None:
        if self.inflater is not None:
            self.out.write(self.inflater.flush())
            if not self.inflater.eof:
                raise NotElf("stored gzipped but truncated")
        self.out.close()

    def close(self) -> None:
        self.out.close()


def _locate(path: Path, name: str) -> Section | None:
    with path.open("rb") as f:
        return find_section(f, name)


@asynccontextmanager
async def section_of(
    lookup: SymbolLookup,
    stores: Stores,
    build_id: str,
    name: str,
    tmp_dir: Path | None = None,
) -> AsyncIterator[SectionFound | SectionMissing]:
    """The section ``name`` of the debuginfo of ``build_id``, else of its executable (as
    debuginfod answers); the temporary file is removed on leaving. Raises the lookup's
    StorageUnavailable and the store's StoreUnavailable."""
    fd, tmp = tempfile.mkstemp(prefix="debuginfod-section-", dir=tmp_dir)
    os.close(fd)
    path = Path(tmp)
    try:
        reasons: list[str] = []
        for artifact in ARTIFACTS:
            hit = await lookup.find(buildid_key(build_id, artifact), include_try=False)
            if hit is None:
                continue
            source = hit.source
            store = stores.at(source)
            try:
                async with store.open(source.object_key(buildid_key(build_id, artifact))) as got:
                    encoding = (got.info.content_encoding or "").strip().lower()
                    gzipped = encoding in GZIP_ENCODINGS
                    sink = await asyncio.to_thread(_Inflater, path, gzipped)
                    try:
                        async for chunk in got.chunks:
                            await asyncio.to_thread(sink.write, chunk)
                        await asyncio.to_thread(sink.finish)
                    finally:
                        sink.close()
                section = await asyncio.to_thread(_locate, path, name)
            except ObjectMissing:
                continue  # deleted since the lookup remembered it
            except NotElf as exc:
                reasons.append(f"its {artifact} is not a readable ELF file ({exc})")
                continue
            if section is None:
                reasons.append(f"its {artifact} has no section {name}")
            elif not section.has_bytes:
                reasons.append(f"its {artifact} holds no bytes of section {name} (SHT_NOBITS)")
            else:
                yield SectionFound(path, section.offset, section.size, artifact)
                return
        if not reasons:
            yield SectionMissing(f"No debuginfo or executable with build id {build_id} is stored.")
        else:
            yield SectionMissing(f"Build id {build_id}: {'; '.join(reasons)}.")
    finally:
        # Not awaited: a cancelled request may end before an awaited clean-up ran.
        path.unlink(missing_ok=True)  # noqa: ASYNC240
