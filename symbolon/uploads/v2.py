"""Upload v2: clients PUT each file straight to storage (see docs/upload.md, "Upload v2").

``POST /upload/v2/`` answers, per file, skip (an identical object is stored), error, or upload: a
presigned ``PUT`` URL with the headers the client must send (protocol ``s3-presigned-put``). The
URL points at a pending key (``pending/<token>/<object key>``, same bucket), which downloads never
read. What Tecken's v2 lacks, a completion call (``POST /upload/v2/<id>/complete``) has a task
read every pending object back, check its size and MD5 against what the client declared, then
publish it (copy to its final key, delete the pending one) and record the file rows (with the
``.sym`` header fields). Pending objects of uploads never completed are expired by a periodic task.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import secrets
import tempfile
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

from symbolon.storage.lookup import StorageUnavailable
from symbolon.storage.sources import SymbolSource
from symbolon.storage.store import ObjectMissing, StoreUnavailable, SymbolStore
from symbolon.symbols import archive, native
from symbolon.symbols.keys import has_invalid_characters
from symbolon.uploads.process import fail, put_native
from symbolon.uploads.services import UploadServices

PROTOCOL = "s3-presigned-put"
MAX_FILES = 1024
KEY = re.compile(r"^([^/]+)/([0-9A-Fa-f]+)/([^/]+)$")
MD5 = re.compile(r"^[0-9a-f]{32}$")
HEADER_BYTES = 64 * 1024
# Bytes read from storage, and at most inflated, per step of a verification.
READ_CHUNK = 256 * 1024
PENDING_PREFIX = "pending/"
# Stale pending objects deleted together while the listing goes on.
EXPIRY_BATCH = 1000
MAX_ID = 2**63 - 1  # uploads.id is a bigint

T = TypeVar("T")


class MalformedRequest(ValueError):
    pass


def parse_files(body: bytes, max_size: int) -> list[dict[str, Any]]:
    """The request's files; MalformedRequest says what is wrong with it."""
    try:
        data = json.loads(body)
    except RecursionError:
        raise MalformedRequest("JSON request body nested too deeply") from None
    except ValueError as exc:
        raise MalformedRequest("malformed JSON request body") from exc
    try:
        files = data["files"]
        if not isinstance(files, list):
            raise TypeError
        if len(files) > MAX_FILES:
            raise MalformedRequest("too many files")
        for f in files:
            if not (
                isinstance(f, dict)
                and isinstance(f["key"], str)
                and isinstance(f["size"], int)
                and not isinstance(f["size"], bool)
                and f["size"] >= 0
                and isinstance(f["md5_hash"], str)
            ):
                raise TypeError
    except (KeyError, TypeError) as exc:
        raise MalformedRequest("malformed JSON request body") from exc
    for i, f in enumerate(files):
        if f["size"] > max_size:
            raise MalformedRequest(
                f"files[{i}].size {f['size']} is larger than a file may be ({max_size} bytes)"
            )
        for name in ("key", "md5_hash"):
            try:
                f[name].encode()
            except UnicodeEncodeError:
                raise MalformedRequest(
                    f"files[{i}].{name} is not valid Unicode text (it holds a lone surrogate)"
                ) from None
    return files


def parse_upload_id(text: str) -> int | None:
    """The id in a completion URL, or None for one no upload can have."""
    if len(text) > len(str(MAX_ID)):  # also spares int() a number of thousands of digits
        return None
    upload_id = int(text)
    return upload_id if upload_id <= MAX_ID else None


def normalized_key(key: str) -> str | None:
    match = KEY.match(key)
    if not match or has_invalid_characters(match.group(1), match.group(3)):
        return None
    if ".." in (match.group(1), match.group(3)):
        return None
    return f"{match.group(1)}/{match.group(2).upper()}/{match.group(3)}"


def candidate_key(key: str) -> str | None:
    """A path outside ``<module>/<hex>/<file>`` (``libfoo.so``, ``lib/libfoo.so.debug``): a file
    stored only if its content is a native debug file, under the keys that gives."""
    segments = key.split("/")
    if not key or "\\" in key or any(s in ("", ".", "..") for s in segments):
        return None
    if key.lower().endswith(".sym"):
        return None  # a Breakpad file, which has its place: <module>/<hex>/<file>
    return None if has_invalid_characters(*segments) else key


def _put_fields(rt: UploadServices, key: str, size: int, md5: str) -> tuple[dict[str, Any], bool]:
    """What the upload URL fixes (content type, encoding, metadata: the client must send them),
    and whether the body must be gzipped."""
    extension = key.rsplit(".", 1)[-1].lower() if "." in key else ""
    fields: dict[str, Any] = {}
    compressed = extension in rt.settings.compress_extensions
    if compressed:
        fields["content_encoding"] = "gzip"
        fields["metadata"] = {"original_size": str(size), "original_md5_hash": md5}
    if extension in rt.settings.mime_overrides:
        fields["content_type"] = rt.settings.mime_overrides[extension]
    return fields, compressed


async def _stored_identically(
    rt: UploadServices, source: SymbolSource, key: str, size: int, md5: str
) -> bool:
    existing = await rt.stores.at(source).head(source.object_key(key))
    if existing is None:
        return False
    metadata = existing.metadata
    if metadata:
        return (
            metadata.get("original_size") == str(size) and metadata.get("original_md5_hash") == md5
        )
    # Stored as is, in one piece: the ETag is the MD5 of the bytes.
    return existing.size == size and existing.etag == md5


async def _all(coros: Iterable[Awaitable[T]]) -> list[T]:
    """gather, but the first failure cancels the rest rather than leaving them running."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def plan(
    rt: UploadServices, files: list[dict[str, Any]], destination: SymbolSource, try_symbols: bool
):
    """The action for each file, in request order, and the files the client will PUT.

    StorageUnavailable when storage does not answer the existence checks. An upload URL may be
    a path on this server, for the handler to make absolute.
    """
    expires = rt.settings.download_presigned_url_expiry_seconds
    store = rt.stores.at(destination)
    token = secrets.token_hex(8)
    pending: list[dict[str, Any]] = []
    # 1,024 HEADs at once would queue on the connection pool until connect timeouts fire.
    lookups = asyncio.Semaphore(rt.settings.upload_v2_plan_concurrency)

    async def one(f: dict[str, Any]) -> dict[str, Any]:
        key = normalized_key(f["key"])
        candidate = key is None and (key := candidate_key(f["key"])) is not None
        if key is None:
            return {"key": f["key"], "action": {"type": "error", "msg": "invalid key"}}
        if not MD5.match(f["md5_hash"]):
            return {"key": f["key"], "action": {"type": "error", "msg": "invalid MD5 hex digest"}}
        pending_key = f"{PENDING_PREFIX}{token}/{destination.object_key(key)}"
        # A key the destination cannot hold would be planned, then fail every PUT.
        refused = store.accepts(pending_key) or store.accepts(destination.object_key(key))
        if refused is not None:
            return {"key": f["key"], "action": {"type": "error", "msg": refused}}
        places = [rt.storage.upload_default, destination] if try_symbols else [destination]
        async with lookups:
            # A candidate's keys depend on its content: nothing to look for before it is read.
            for place in [] if candidate else places:
                try:
                    stored = await _stored_identically(rt, place, key, f["size"], f["md5_hash"])
                except StoreUnavailable as exc:
                    raise StorageUnavailable(place.url) from exc
                if stored:
                    return {"key": f["key"], "action": {"type": "skip"}}
        fields, compressed = _put_fields(rt, key, f["size"], f["md5_hash"])
        if candidate:  # sent gzipped, as the native file it should be is stored
            compressed = True
            fields["content_encoding"] = "gzip"
            fields["metadata"] = {
                "original_size": str(f["size"]),
                "original_md5_hash": f["md5_hash"],
            }
        url, headers = await store.upload_url(pending_key, expires, **fields)
        entry = {
            "key": key,
            "size": f["size"],
            "md5": f["md5_hash"],
            "gzip": compressed,
            "pending_key": pending_key,
        }
        if candidate:
            entry["candidate"] = True
        pending.append(entry)
        return {
            "key": f["key"],
            "action": {
                "type": "upload",
                "url": url,
                "content_encoding": "gzip" if compressed else None,
                "headers": headers,
            },
        }

    actions = await _all(one(f) for f in files)
    return list(actions), pending


@dataclass
class Verified:
    """What reading one stored object back found."""

    size: int = 0  # bytes inflated; reading stops once past the declared size
    stored: int = 0  # bytes read from storage
    md5: Any = field(default_factory=hashlib.md5)
    head: bytearray = field(default_factory=bytearray)
    whole: bool = True  # False for a truncated or corrupt gzip stream
    sink: Callable[[bytes], Any] | None = None  # also given every inflated byte

    def add(self, data: bytes) -> None:
        if self.sink is not None:
            self.sink(data)
        self.md5.update(data)
        self.size += len(data)
        if len(self.head) < HEADER_BYTES:
            self.head += data[: HEADER_BYTES - len(self.head)]


async def read_verified(
    stream: Any,
    declared_size: int,
    gzipped: bool,
    chunk: int = READ_CHUNK,
    sink: Callable[[bytes], Any] | None = None,
) -> Verified:
    """Read ``stream`` chunk by chunk, inflating and hashing as it goes.

    At most ``chunk`` bytes are read or inflated per step, and reading stops as soon as more than
    ``declared_size`` bytes came out: a gzip bomb costs ``declared_size + chunk`` bytes of
    inflation, never its full size, and no more than a few chunks of memory.
    """
    result = Verified(sink=sink)
    inflater = zlib.decompressobj(wbits=31) if gzipped else None

    def step(data: bytes) -> None:
        if inflater is None:
            result.add(data)
            return
        while not inflater.eof and result.size <= declared_size:
            out = inflater.decompress(data, chunk)
            data = inflater.unconsumed_tail
            result.add(out)
            if not data and len(out) < chunk:
                break  # a full output may leave more inside the inflater: ask again

    while result.size <= declared_size:
        data = await stream.read(chunk)
        if not data:
            break
        result.stored += len(data)
        try:
            # Inflating and hashing hold the GIL little: a thread keeps the task loop answering.
            await asyncio.to_thread(step, data)
        except zlib.error:
            result.whole = False
            break
        if inflater is not None and inflater.eof:
            # Bytes after the end of the gzip stream would be stored and served with it.
            if inflater.unused_data or await stream.read(1):
                result.whole = False
            break
    if inflater is not None and not inflater.eof and result.size <= declared_size:
        result.whole = False
    return result


class ChunkReader:
    """A stored object's chunks as the stream :func:`read_verified` reads: no read returns more
    than it asks for, whatever size the store's chunks are."""

    def __init__(self, chunks: AsyncIterator[bytes]):
        self._chunks = chunks
        self._rest = memoryview(b"")

    async def read(self, size: int) -> bytes:
        while not self._rest:
            try:
                self._rest = memoryview(await anext(self._chunks))
            except StopAsyncIteration:
                return b""
        piece, self._rest = self._rest[:size], self._rest[size:]
        return bytes(piece)


@dataclass
class Checked:
    problem: str | None = None
    published: bool = False  # by an earlier run of this completion
    stored: int = 0
    header: archive.SymHeader | None = None
    # A native file: its objects with their keys, and its bytes on this disk until published.
    natives: list[native.NativeObject] | None = None
    spooled: Path | None = None


@asynccontextmanager
async def claimed(db: asyncpg.Pool, upload_id: int) -> AsyncIterator[bool]:
    """Whether this process holds the upload's completion, for as long as the block runs.

    A completion call may be repeated while the first is still at work, and the expiry may come
    at any time: both leave an upload alone while another holds it. Advisory lock keys: the
    migrations use a positive one, completions the negated upload id.
    """
    async with db.acquire() as conn:
        held = await conn.fetchval("SELECT pg_try_advisory_lock($1)", -upload_id)
        try:
            yield bool(held)
        finally:
            if held:
                await conn.execute("SELECT pg_advisory_unlock($1)", -upload_id)


async def complete(rt: UploadServices, upload_id: int) -> None:
    """Verify what the client PUT, publish and record it, and finish the upload (run by a task).

    Nothing is published unless every file verifies; a failed upload's pending objects are
    deleted, and what was stored under the final keys before stays as it was.
    """
    async with claimed(rt.db, upload_id) as mine:
        if mine:  # else another run is at it, and finishes the upload
            await _complete(rt, upload_id)


async def _complete(rt: UploadServices, upload_id: int) -> None:
    upload = await rt.db.fetchrow(
        "SELECT * FROM uploads WHERE id = $1 AND completed_at IS NULL AND failed_at IS NULL",
        upload_id,
    )
    if upload is None:
        return
    destination = SymbolSource.parse(upload["destination_url"], rt.settings.symbol_file_prefix)
    pending = json.loads(upload["pending_files"] or "[]")
    store = rt.stores.at(destination)
    # Each read holds a few chunks: the bound keeps a completion's memory small.
    reads = asyncio.Semaphore(rt.settings.upload_v2_verify_concurrency)

    made: list[Checked] = []  # each one's temp file goes, whatever happens

    async def check(f: dict[str, Any]) -> Checked:
        async with reads:
            checked = await _verify(rt, store, upload_id, destination, f)
            made.append(checked)
            return checked

    try:
        checks = await _all(check(f) for f in pending)
        errors = [c.problem for c in checks if c.problem]
        errors += _shared_keys(pending, checks)
        if errors:
            await store.delete([f["pending_key"] for f in pending if "pending_key" in f])
            await fail(rt, upload_id, "Verification failed: " + "; ".join(errors), status=400)
            return

        async def publish(f: dict[str, Any], checked: Checked) -> None:
            async with reads:
                await _publish(rt, store, upload_id, destination, f, checked)

        await _all(publish(f, c) for f, c in zip(pending, checks, strict=True))
        # Native files' pending objects go last: until then a repeated completion reads them
        # again (their rows are under keys known only from their content).
        await store.delete(
            [
                f["pending_key"]
                for f, c in zip(pending, checks, strict=True)
                if c.natives and "pending_key" in f
            ]
        )
    finally:
        for checked in made:
            if checked.spooled is not None:
                await asyncio.to_thread(checked.spooled.unlink, missing_ok=True)
    await rt.db.execute(
        "UPDATE uploads SET completed_at = now() WHERE id = $1 AND failed_at IS NULL", upload_id
    )


async def _verify(
    rt: UploadServices,
    store: SymbolStore,
    upload_id: int,
    destination: SymbolSource,
    f: dict[str, Any],
) -> Checked:
    object_key = destination.object_key(f["key"])
    done = await rt.db.fetchval(
        "SELECT 1 FROM file_uploads WHERE upload_id = $1 AND key = $2", upload_id, object_key
    )
    if done:
        return Checked(published=True)
    # Uploads planned before pending keys existed were PUT to the final key.
    source_key = f.get("pending_key", object_key)
    # Storage trouble (StoreUnavailable) is raised: the task tries again rather than failing.
    try:
        async with store.open(source_key, patient=True) as opened:  # a task: it may wait
            read = await read_verified(ChunkReader(opened.chunks), f["size"], f["gzip"])
    except ObjectMissing:
        return Checked(f"{f['key']} was not uploaded")
    if not read.whole or read.size != f["size"] or read.md5.hexdigest() != f["md5"]:
        if source_key == object_key:
            await store.delete([object_key])
        return Checked(f"{f['key']} does not match its declared size and MD5 (deleted)")
    problem = _ratio_problem(
        f["key"], read.size, read.stored, rt.settings.upload_max_compression_ratio
    )
    if f["gzip"] and problem:
        return Checked(problem)
    if f.get("candidate") or native.looks_native(bytes(read.head[: native.HEAD_BYTES])):
        return await _identify(rt, store, destination, source_key, f, read)
    header = archive.parse_sym_header(bytes(read.head)) if f["key"].endswith(".sym") else None
    return Checked(stored=read.stored, header=header)


def _ratio_problem(key: str, size: int, stored: int, max_ratio: float) -> str | None:
    """The archive route's limit on a member, for a file sent gzipped: inflating it would cost
    every reader (a debuginfod section, a symbolication) this many times its stored size."""
    if size <= archive.RATIO_FLOOR:
        return None
    ratio = size / max(stored, 1)
    if ratio <= max_ratio:
        return None
    return (
        f"{key} inflates {ratio:.0f} times its gzip-compressed size (the limit is {max_ratio:g}, "
        "UPLOAD_MAX_COMPRESSION_RATIO); it looks like a compression bomb. Check that it is the "
        "file meant, or ask the server's operator to raise the limit"
    )


async def _identify(
    rt: UploadServices,
    store: SymbolStore,
    destination: SymbolSource,
    source_key: str,
    f: dict[str, Any],
    read: Verified,
) -> Checked:
    """Read a file that may be native again, into a temp file symbolic reads; its objects and
    their keys, or the problem of a candidate that is no native file."""
    not_native = (
        f"{f['key']} is neither at <module>/<hex>/<file> nor a native debug file "
        "(ELF, PE, PDB, Mach-O)"
    )
    if not native.looks_native(bytes(read.head[: native.HEAD_BYTES])):
        return Checked(not_native)
    rt.settings.staging_dir.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix="symbolon-native-", dir=rt.settings.staging_dir)
    spooled = Path(name)
    try:
        with os.fdopen(handle, "wb") as out:
            # Read again and checked again: the object may have been PUT anew meanwhile.
            async with store.open(source_key, patient=True) as opened:
                again = await read_verified(
                    ChunkReader(opened.chunks), f["size"], f["gzip"], sink=out.write
                )
        if not again.whole or again.size != f["size"] or again.md5.hexdigest() != f["md5"]:
            raise native.NotNative("it changed while it was read")
        objects = await asyncio.to_thread(native.identify, spooled, f["key"])
    except (native.NotNative, ObjectMissing) as exc:
        await asyncio.to_thread(spooled.unlink, missing_ok=True)
        if f.get("candidate"):
            return Checked(f"{not_native}: {exc}")
        return Checked(stored=read.stored)  # stored as it is, as any other file
    except BaseException:
        await asyncio.to_thread(spooled.unlink, missing_ok=True)
        raise
    if not f.get("candidate") and all(f["key"] not in o.keys for o in objects):
        # Also kept where its uploader put it.
        first = objects[0]
        objects = [
            native.NativeObject(**{**first.__dict__, "keys": (*first.keys, f["key"])}),
            *objects[1:],
        ]
    checked = Checked(stored=read.stored, natives=objects, spooled=spooled)
    # Asked now, as the plan asks of other keys: a key refused once every file is published
    # would leave the others published.
    refused = [
        f"{f['key']} cannot be stored as {key}: {problem}"
        for obj in objects
        for key in obj.keys
        if (problem := store.accepts(destination.object_key(key))) is not None
    ]
    if refused:
        checked.problem = "; ".join(refused)
    return checked


def _shared_keys(pending: list[dict[str, Any]], checks: list[Checked]) -> list[str]:
    """Problems of files that would be stored under one key."""
    owners: dict[str, str] = {}
    problems: list[str] = []
    for f, checked in zip(pending, checks, strict=True):
        if checked.published:
            continue
        keys = (
            [f["key"]] if checked.natives is None else [k for o in checked.natives for k in o.keys]
        )
        for key in dict.fromkeys(keys):
            other = owners.setdefault(key, f["key"])
            if other != f["key"]:
                problems.append(f"{other} and {f['key']} would both be stored as {key}")
    return problems


async def _publish(
    rt: UploadServices,
    store: SymbolStore,
    upload_id: int,
    destination: SymbolSource,
    f: dict[str, Any],
    checked: Checked,
) -> None:
    object_key = destination.object_key(f["key"])
    source_key = f.get("pending_key", object_key)
    if checked.natives is not None and checked.spooled is not None:
        await _publish_native(rt, store, upload_id, destination, f, checked)
        return
    if not checked.published:
        if source_key != object_key:
            # Copies the content encoding, content type and metadata the PUT set.
            await store.copy(source_key, object_key)
        header = checked.header
        await rt.db.execute(
            """INSERT INTO file_uploads
                 (upload_id, bucket_name, key, compressed, size, completed_at,
                  debug_filename, debug_id, code_file, code_id, generator)
               VALUES ($1, $2, $3, $4, $5, now(), $6, $7, $8, $9, $10)
               ON CONFLICT (upload_id, key) WHERE upload_id IS NOT NULL DO NOTHING""",
            upload_id,
            destination.bucket,
            object_key,
            f["gzip"],
            checked.stored,
            header.debug_filename if header else None,
            header.debug_id if header else None,
            header.code_file if header else None,
            header.code_id if header else None,
            header.generator if header else None,
        )
    if source_key != object_key:
        await store.delete([source_key])
    await rt.lookup.invalidate([f["key"]])
    await rt.symbolication.forget_misses([f["key"]])


async def _publish_native(
    rt: UploadServices,
    store: SymbolStore,
    upload_id: int,
    destination: SymbolSource,
    f: dict[str, Any],
    checked: Checked,
) -> None:
    """Store a native file from its verified bytes under its keys, then drop the pending one."""
    assert checked.natives is not None and checked.spooled is not None
    prepared = await asyncio.to_thread(archive.gzip_file, checked.spooled, rt.settings.staging_dir)
    try:
        skipped = await put_native(rt, upload_id, destination, f["key"], checked.natives, prepared)
    except archive.ArchiveError as exc:
        await fail(rt, upload_id, str(exc))
        return
    finally:
        await asyncio.to_thread(prepared.path.unlink, missing_ok=True)
    if skipped:
        await rt.db.execute(
            """UPDATE uploads SET skipped_keys = coalesce(skipped_keys, '{}') || $2::text[]
               WHERE id = $1""",
            upload_id,
            skipped,
        )


@dataclass
class ExpiredPending:
    objects: int = 0
    uploads: int = 0


async def expire_pending(
    rt: UploadServices, max_age_seconds: int, now: datetime | None = None
) -> ExpiredPending:
    """Fail v2 uploads not completed within ``max_age_seconds`` and delete pending objects as old
    (in every location an upload may go to), so that abandoned PUTs do not stay."""
    cutoff = (now or datetime.now(UTC)) - timedelta(seconds=max_age_seconds)
    result = ExpiredPending()
    old = await rt.db.fetch(
        """SELECT id, pending_files FROM uploads
           WHERE pending_files IS NOT NULL AND completed_at IS NULL AND failed_at IS NULL
             AND created_at < $1""",
        cutoff,
    )
    # The pending objects of an upload whose completion is at work stay, and so does its row.
    busy: set[str] = set()
    for row in old:
        async with claimed(rt.db, row["id"]) as mine:
            if not mine:
                busy.update(
                    f["pending_key"] for f in json.loads(row["pending_files"]) if "pending_key" in f
                )
                continue
            status = await rt.db.execute(
                """UPDATE uploads SET failed_at = now(), error_status = 400, error = $2
                   WHERE id = $1 AND completed_at IS NULL AND failed_at IS NULL""",
                row["id"],
                f"Not completed within {max_age_seconds} seconds; the files PUT for it were "
                "deleted",
            )
            result.uploads += int(status.rsplit(" ", 1)[-1])
    storage = rt.storage
    locations = [storage.upload_default, storage.upload_try]
    locations += [source for _, source in storage.upload_exceptions]
    seen: set[tuple[str | None, str]] = set()
    for location in locations:
        if (location.endpoint_url, location.bucket) in seen:
            continue
        seen.add((location.endpoint_url, location.bucket))
        store = rt.stores.at(location)
        stale: list[str] = []
        async for item in store.list(PENDING_PREFIX):
            if item.last_modified < cutoff and item.key not in busy:
                stale.append(item.key)
            if len(stale) >= EXPIRY_BATCH:
                await store.delete(stale)
                result.objects += len(stale)
                stale = []
        await store.delete(stale)
        result.objects += len(stale)
    return result
