"""Upload v2: clients PUT each file straight to storage (see docs/upload.md, "Upload v2").

``POST /upload/v2/`` answers, per file, skip (an identical object is stored), error, or upload: a
presigned ``PUT`` URL with the headers the client must send (protocol ``s3-presigned-put``). What
Tecken's v2 lacks, a completion call (``POST /upload/v2/<id>/complete``) has a task read every
uploaded object back, check its size and MD5 against what the client declared, record the file
rows (with the ``.sym`` header fields) and make the files visible to downloads at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import zlib
from typing import Any

from symbolon.storage.sources import SymbolSource
from symbolon.symbols import archive
from symbolon.symbols.keys import has_invalid_characters
from symbolon.uploads.process import head
from symbolon.uploads.services import UploadServices

PROTOCOL = "s3-presigned-put"
MAX_FILES = 1024
KEY = re.compile(r"^([^/]+)/([0-9A-Fa-f]+)/([^/]+)$")
MD5 = re.compile(r"^[0-9a-f]{32}$")
HEADER_BYTES = 64 * 1024


class MalformedRequest(ValueError):
    pass


def parse_files(body: bytes) -> list[dict[str, Any]]:
    try:
        data = json.loads(body)
        files = data["files"]
        if not isinstance(files, list):
            raise TypeError
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
    except (ValueError, KeyError, TypeError) as exc:
        raise MalformedRequest("malformed JSON request body") from exc
    if len(files) > MAX_FILES:
        raise MalformedRequest("too many files")
    return files


def normalized_key(key: str) -> str | None:
    match = KEY.match(key)
    if not match or has_invalid_characters(match.group(1), match.group(3)):
        return None
    if ".." in (match.group(1), match.group(3)):
        return None
    return f"{match.group(1)}/{match.group(2).upper()}/{match.group(3)}"


def _headers(rt: UploadServices, key: str, size: int, md5: str) -> tuple[dict[str, Any], bool]:
    """PutObject parameters the presigned URL fixes, and whether the body must be gzipped."""
    extension = key.rsplit(".", 1)[-1].lower() if "." in key else ""
    params: dict[str, Any] = {}
    compressed = extension in rt.settings.compress_extensions
    if compressed:
        params["ContentEncoding"] = "gzip"
        params["Metadata"] = {"original_size": str(size), "original_md5_hash": md5}
    if extension in rt.settings.mime_overrides:
        params["ContentType"] = rt.settings.mime_overrides[extension]
    return params, compressed


def _client_headers(params: dict[str, Any]) -> dict[str, str]:
    headers = {}
    if "ContentEncoding" in params:
        headers["Content-Encoding"] = params["ContentEncoding"]
    if "ContentType" in params:
        headers["Content-Type"] = params["ContentType"]
    for name, value in params.get("Metadata", {}).items():
        headers[f"x-amz-meta-{name}"] = value
    return headers


async def _stored_identically(
    rt: UploadServices, source: SymbolSource, key: str, size: int, md5: str
) -> bool:
    client = await rt.s3.client(source)
    existing = await head(client, source.bucket, source.object_key(key))
    if existing is None:
        return False
    metadata = existing.get("Metadata") or {}
    if metadata:
        return (
            metadata.get("original_size") == str(size) and metadata.get("original_md5_hash") == md5
        )
    # Stored as is, in one piece: the ETag is the MD5 of the bytes.
    return existing.get("ContentLength") == size and existing.get("ETag", "").strip('"') == md5


async def plan(
    rt: UploadServices, files: list[dict[str, Any]], destination: SymbolSource, try_symbols: bool
):
    """The action for each file, in request order, and the files the client will PUT."""
    expires = rt.settings.download_presigned_url_expiry_seconds
    pending: list[dict[str, Any]] = []

    async def one(f: dict[str, Any]) -> dict[str, Any]:
        key = normalized_key(f["key"])
        if key is None:
            return {"key": f["key"], "action": {"type": "error", "msg": "invalid key"}}
        if not MD5.match(f["md5_hash"]):
            return {"key": f["key"], "action": {"type": "error", "msg": "invalid MD5 hex digest"}}
        places = [rt.storage.upload_default, destination] if try_symbols else [destination]
        for place in places:
            if await _stored_identically(rt, place, key, f["size"], f["md5_hash"]):
                return {"key": f["key"], "action": {"type": "skip"}}
        params, compressed = _headers(rt, key, f["size"], f["md5_hash"])
        client = await rt.s3.client(destination, "put")
        url = await client.generate_presigned_url(
            "put_object",
            Params={"Bucket": destination.bucket, "Key": destination.object_key(key), **params},
            ExpiresIn=expires,
        )
        pending.append({"key": key, "size": f["size"], "md5": f["md5_hash"], "gzip": compressed})
        return {
            "key": f["key"],
            "action": {
                "type": "upload",
                "url": url,
                "content_encoding": "gzip" if compressed else None,
                "headers": _client_headers(params),
            },
        }

    actions = await asyncio.gather(*(one(f) for f in files))
    return list(actions), pending


async def complete(rt: UploadServices, upload_id: int) -> None:
    """Verify what the client PUT, record it, and finish the upload (run by a task)."""
    upload = await rt.db.fetchrow(
        "SELECT * FROM uploads WHERE id = $1 AND completed_at IS NULL AND failed_at IS NULL",
        upload_id,
    )
    if upload is None:
        return
    destination = SymbolSource.parse(upload["destination_url"], rt.settings.symbol_file_prefix)
    pending = json.loads(upload["pending_files"] or "[]")
    problems = await asyncio.gather(*(_verify(rt, upload_id, destination, f) for f in pending))
    errors = [p for p in problems if p]
    if errors:
        from symbolon.uploads.process import fail

        await fail(rt, upload_id, "Verification failed: " + "; ".join(errors), status=400)
        return
    await rt.db.execute("UPDATE uploads SET completed_at = now() WHERE id = $1", upload_id)


async def _verify(
    rt: UploadServices, upload_id: int, destination: SymbolSource, f: dict[str, Any]
) -> str | None:
    object_key = destination.object_key(f["key"])
    done = await rt.db.fetchval(
        "SELECT 1 FROM file_uploads WHERE upload_id = $1 AND key = $2", upload_id, object_key
    )
    if done:
        return None
    client = await rt.s3.client(destination, "put")
    try:
        response = await client.get_object(Bucket=destination.bucket, Key=object_key)
    except Exception:
        return f"{f['key']} was not uploaded"
    md5, size, head_bytes = hashlib.md5(), 0, bytearray()
    stored = 0
    inflater = zlib.decompressobj(wbits=31) if f["gzip"] else None
    async with response["Body"] as stream:
        while chunk := await stream.read(1 << 20):
            stored += len(chunk)
            data = inflater.decompress(chunk) if inflater else chunk
            md5.update(data)
            size += len(data)
            if len(head_bytes) < HEADER_BYTES:
                head_bytes += data[: HEADER_BYTES - len(head_bytes)]
            if size > f["size"]:
                break
    if inflater is not None and not inflater.eof and size <= f["size"]:
        size = -1  # a truncated gzip stream
    if size != f["size"] or md5.hexdigest() != f["md5"]:
        await client.delete_object(Bucket=destination.bucket, Key=object_key)
        return f"{f['key']} does not match its declared size and MD5 (deleted)"
    header = archive.parse_sym_header(bytes(head_bytes)) if f["key"].endswith(".sym") else None
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
        stored,
        header.debug_filename if header else None,
        header.debug_id if header else None,
        header.code_file if header else None,
        header.code_id if header else None,
        header.generator if header else None,
    )
    await rt.lookup.invalidate([f["key"]])
    await rt.symbolication.forget_misses([f["key"]])
    return None
