"""Processing a received symbol archive: validate, store each member, record it (see
docs/upload.md, "What happens").

Runs in a task actor. Every step can be repeated: a retry after a crash skips what is already
recorded and finishes the rest, without duplicate rows.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
import zipfile
from pathlib import Path
from typing import Any

from symbolon.metrics import metrics
from symbolon.storage.sources import SymbolSource
from symbolon.storage.store import KeyRefused, ObjectInfo
from symbolon.symbols import archive
from symbolon.symbols.native import NativeObject
from symbolon.uploads import by_url
from symbolon.uploads.services import UploadServices

logger = logging.getLogger(__name__)


def limits(rt: UploadServices) -> archive.Limits:
    s = rt.settings
    return archive.Limits(
        max_members=s.upload_max_members,
        max_total_size=s.upload_max_uncompressed_size,
        max_ratio=s.upload_max_compression_ratio,
    )


def inspect_file(rt: UploadServices, path: Path) -> tuple[zipfile.ZipFile, list[archive.Member]]:
    """Open and validate; raises ArchiveError with the client's message."""
    zf = archive.open_archive(path)
    try:
        return zf, archive.inspect(zf, rt.settings.disallowed_symbols_snippets, limits(rt))
    except BaseException:
        zf.close()
        raise


MAX_ATTEMPTS = 5


async def process_upload(rt: UploadServices, upload_id: int) -> None:
    """Process, or on the last of MAX_ATTEMPTS failures mark the upload failed (a 500)."""
    upload = await rt.db.fetchrow(
        """UPDATE uploads SET attempts = attempts + 1
           WHERE id = $1 AND completed_at IS NULL AND failed_at IS NULL RETURNING *""",
        upload_id,
    )
    if upload is None:
        return  # already done (a duplicate delivery) or gone
    try:
        await _process(rt, upload)
    except Exception as exc:
        if upload["attempts"] < MAX_ATTEMPTS:
            raise  # the task queue tries again later
        logger.exception("upload %d failed %d times; giving up", upload_id, MAX_ATTEMPTS)
        await fail(rt, upload_id, f"Storing the symbols failed: {exc}", status=500)


async def _process(rt: UploadServices, upload: Any) -> None:
    if upload["staging_ref"] is None and upload["download_url"]:
        # Fetched again by each attempt: a retry may run on another machine.
        staged = await _download(rt, upload)
        if staged is None:
            return
        temporary = True
    else:
        staged, temporary = await rt.staging.fetch(upload["staging_ref"])
    try:
        await _store_archive(rt, upload, staged)
    finally:
        if temporary:
            await asyncio.to_thread(staged.unlink, missing_ok=True)


async def _store_archive(rt: UploadServices, upload: Any, staged: Path) -> None:
    upload_id = upload["id"]
    destination = SymbolSource.parse(upload["destination_url"], rt.settings.symbol_file_prefix)
    try:
        zf, members = await asyncio.to_thread(inspect_file, rt, staged)
    except archive.ArchiveError as exc:
        await fail(rt, upload_id, str(exc))
        return
    if upload["content_hash"] is None:  # an upload by URL: first seen now
        await rt.db.execute(
            "UPDATE uploads SET content_hash = $2 WHERE id = $1",
            upload_id,
            archive.content_hash(members),
        )
    stored = [m for m in members if not m.ignored]
    # A key the destination cannot hold fails every attempt: the archive is refused, naming it.
    store = rt.stores.at(destination)
    refused = [
        f"{m.name}: {problem}"
        for m in stored
        if not m.candidate and (problem := store.accepts(destination.object_key(m.key))) is not None
    ]
    if refused:
        zf.close()
        await fail(rt, upload_id, "The destination cannot hold " + "; ".join(refused))
        return
    workers = rt.settings.upload_file_upload_max_workers
    try:
        # All or nothing: a corrupt member found while storing would leave the earlier ones
        # stored, so every member is inflated and checked, and native files identified, before
        # the first is stored.
        found = await asyncio.to_thread(
            archive.verify, zf, stored, workers, tmpdir=rt.settings.staging_dir
        )
        natives = archive.native_keys(stored, found)
        refused = [
            f"{name}: {problem}"
            for name, objects in natives.items()
            for obj in objects
            for key in obj.keys
            if (problem := store.accepts(destination.object_key(key))) is not None
        ]
        if refused:
            raise archive.ArchiveError("The destination cannot hold " + "; ".join(refused))
        rows = await rt.db.fetch("SELECT key FROM file_uploads WHERE upload_id = $1", upload_id)
        done = {r["key"] for r in rows}
        gate = asyncio.Semaphore(workers)

        async def one(member: archive.Member) -> list[str]:
            async with gate:
                objects = natives.get(member.name)
                if objects is not None:
                    return await store_native(rt, upload_id, zf, member, objects, destination, done)
                key = await store_member(rt, upload_id, zf, member, destination, done)
                return [] if key is None else [key]

        with metrics.timer("upload_file_upload"):
            results = await asyncio.gather(*(one(m) for m in stored))
    except archive.ArchiveError as exc:  # a lying or corrupt member
        await fail(rt, upload_id, str(exc))
        return
    finally:
        zf.close()
    skipped = [key for keys in results for key in keys]
    ignored = [m.name for m in members if m.ignored]
    await rt.db.execute(
        """UPDATE uploads SET skipped_keys = $2, ignored_keys = $3, completed_at = now(),
                              staging_ref = NULL
           WHERE id = $1""",
        upload_id,
        skipped or None,
        ignored or None,
    )
    tags = [f"try:{upload['try_symbols']}", f"bucket:{destination.bucket}"]
    metrics.incr("upload_uploads", tags=tags)
    if upload["staging_ref"]:
        await rt.staging.delete(upload["staging_ref"])


async def _download(rt: UploadServices, upload: Any) -> Path | None:
    """Fetch an upload-by-URL archive into staging; None when that failed (and was recorded)."""
    settings = rt.settings
    settings.staging_dir.mkdir(parents=True, exist_ok=True)
    staged = settings.staging_dir / f"upload-{upload['id']}-{uuid.uuid4().hex}.zip"
    policy = by_url.FetchPolicy.from_settings(settings)
    try:
        with metrics.timer("upload_download_by_url"):
            got = await by_url.fetch_to_file(
                upload["download_url"], staged, policy, settings.upload_max_size
            )
        await rt.db.execute(
            "UPDATE uploads SET size = $2, redirect_urls = $3 WHERE id = $1",
            upload["id"],
            got.size,
            got.redirect_urls or None,
        )
    except by_url.FetchError as exc:
        await asyncio.to_thread(staged.unlink, missing_ok=True)
        await fail(rt, upload["id"], exc.message, status=exc.status)
        return None
    except BaseException:
        # The task is retried from the URL: this attempt's file is of no further use.
        await asyncio.to_thread(staged.unlink, missing_ok=True)
        raise
    return staged


async def fail(rt: UploadServices, upload_id: int, message: str, status: int = 400) -> None:
    staged = await rt.db.fetchval("SELECT staging_ref FROM uploads WHERE id = $1", upload_id)
    await rt.db.execute(
        """UPDATE uploads SET error = $2, error_status = $3, failed_at = now(), staging_ref = NULL
           WHERE id = $1 AND completed_at IS NULL AND failed_at IS NULL""",
        upload_id,
        message,
        status,
    )
    if staged:
        await rt.staging.delete(staged)


async def store_member(
    rt: UploadServices,
    upload_id: int,
    zf: zipfile.ZipFile,
    member: archive.Member,
    destination: SymbolSource,
    done: set[str],
) -> str | None:
    """Store one member unless an identical object is there; returns its key when skipped."""
    object_key = destination.object_key(member.key)
    if object_key in done:
        return None  # stored by an earlier attempt of this upload
    settings = rt.settings
    prepared = await asyncio.to_thread(
        archive.prepare, zf, member, settings.compress_extensions, settings.staging_dir
    )
    try:
        store = rt.stores.at(destination)
        existing = await store.head(object_key, patient=True)  # a task: it may wait
        if existing is not None and identical(existing, prepared):
            metrics.incr("upload_file_upload_skip")
            return object_key
        metadata = None
        if prepared.compressed:
            metadata = {
                "original_size": str(prepared.original_size),
                "original_md5_hash": prepared.original_md5,
            }
        extension = member.key.rsplit(".", 1)[-1].lower() if "." in member.key else ""
        with metrics.timer("upload_put_object"):
            try:
                await store.put_file(
                    object_key,
                    prepared.path,
                    content_type=settings.mime_overrides.get(extension),
                    content_encoding="gzip" if prepared.compressed else None,
                    metadata=metadata,
                )
            except KeyRefused as exc:  # as for every attempt: the upload's error, not a retry
                raise archive.ArchiveError(f"{member.name} cannot be stored: {exc}") from exc
        header = prepared.header
        await rt.db.execute(
            """INSERT INTO file_uploads
                 (upload_id, bucket_name, key, update, compressed, size, completed_at,
                  debug_filename, debug_id, code_file, code_id, generator, file_format)
               VALUES ($1, $2, $3, $4, $5, $6, now(), $7, $8, $9, $10, $11, $12)
               ON CONFLICT (upload_id, key) WHERE upload_id IS NOT NULL DO NOTHING""",
            upload_id,
            destination.bucket,
            object_key,
            existing is not None,
            prepared.compressed,
            prepared.size,
            header.debug_filename if header else None,
            header.debug_id if header else None,
            header.code_file if header else None,
            header.code_id if header else None,
            header.generator if header else None,
            "breakpad" if header and header.debug_id else None,
        )
        metrics.incr("upload_file_upload_upload")
        await rt.lookup.invalidate([member.key])
        await rt.symbolication.forget_misses([member.key])
        return None
    finally:
        await asyncio.to_thread(os.unlink, prepared.path)


async def store_native(
    rt: UploadServices,
    upload_id: int,
    zf: zipfile.ZipFile,
    member: archive.Member,
    objects: list[NativeObject],
    destination: SymbolSource,
    done: set[str],
) -> list[str]:
    """Store a native member, gzipped, under each of its objects' keys; returns the keys
    skipped (the same content was there)."""
    todo = [o for o in objects if destination.object_key(o.keys[0]) not in done]
    if not todo:
        return []  # recorded by an earlier attempt of this upload
    settings = rt.settings
    prepared = await asyncio.to_thread(
        archive.prepare, zf, member, (), settings.staging_dir, compress=True
    )
    try:
        return await put_native(rt, upload_id, destination, member.name, todo, prepared)
    finally:
        await asyncio.to_thread(os.unlink, prepared.path)


async def put_native(
    rt: UploadServices,
    upload_id: int,
    destination: SymbolSource,
    name: str,
    objects: list[NativeObject],
    prepared: archive.Prepared,
) -> list[str]:
    """Store gzipped native bytes under each object's keys: written once, copied to the others;
    a key holding the same content already is skipped. Records a row per object written, and
    returns the keys skipped. ``name`` is what the uploader called the file."""
    store = rt.stores.at(destination)
    skipped: list[str] = []
    source: str | None = None  # the object key holding these bytes, once one does
    for obj in objects:
        written = replaced = False
        for index, key in enumerate(obj.keys):
            object_key = destination.object_key(key)
            existing = await store.head(object_key, patient=True)
            if existing is not None and identical(existing, prepared):
                metrics.incr("upload_file_upload_skip")
                skipped.append(object_key)
                source = source or object_key
                continue
            try:
                if source is None:
                    with metrics.timer("upload_put_object"):
                        await store.put_file(
                            object_key,
                            prepared.path,
                            content_type=rt.settings.mime_overrides.get(_extension(key)),
                            content_encoding="gzip",
                            metadata={
                                "original_size": str(prepared.original_size),
                                "original_md5_hash": prepared.original_md5,
                            },
                        )
                    source = object_key
                else:
                    await store.copy(source, object_key)
            except KeyRefused as exc:
                raise archive.ArchiveError(f"{name} cannot be stored: {exc}") from exc
            written = True
            # An update: other content was under the object's own key, and is replaced.
            replaced = replaced or (index == 0 and existing is not None)
        if written:
            await record_native(rt, upload_id, destination, obj, replaced, prepared.size)
            metrics.incr("upload_file_upload_upload")
    keys = [key for obj in objects for key in obj.keys]
    await rt.lookup.invalidate(keys)
    await rt.symbolication.forget_misses(keys)
    return skipped


async def record_native(
    rt: UploadServices,
    upload_id: int,
    destination: SymbolSource,
    obj: NativeObject,
    update: bool,
    size: int,
) -> None:
    """A native object's file row, under its primary key, naming the others as aliases."""
    await rt.db.execute(
        """INSERT INTO file_uploads
             (upload_id, bucket_name, key, update, compressed, size, completed_at,
              debug_filename, debug_id, code_file, code_id, file_format, kind, arch, features,
              aliases)
           VALUES ($1, $2, $3, $4, true, $5, now(), $6, $7, $8, $9, $10, $11, $12, $13, $14)
           ON CONFLICT (upload_id, key) WHERE upload_id IS NOT NULL DO NOTHING""",
        upload_id,
        destination.bucket,
        destination.object_key(obj.keys[0]),
        update,
        size,
        obj.debug_file,
        obj.debug_id,
        obj.code_file,
        obj.code_id,
        obj.file_format,
        obj.kind,
        obj.arch,
        list(obj.features),
        [destination.object_key(key) for key in obj.keys[1:]] or None,
    )


def _extension(key: str) -> str:
    name = key.rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[-1].lower() if "." in name else ""


def identical(existing: ObjectInfo, prepared: archive.Prepared) -> bool:
    """Whether a stored object has the same content (see docs/upload.md, "What happens")."""
    metadata = existing.metadata
    size = existing.size
    if not prepared.compressed:
        return size == prepared.size
    if metadata:
        return (
            metadata.get("original_size") == str(prepared.original_size)
            and metadata.get("original_md5_hash") == prepared.original_md5
        )
    return size == prepared.size  # objects stored before metadata was kept
