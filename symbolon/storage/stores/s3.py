"""A symbol location in an S3 bucket, on AWS or an S3-compatible server (docs/download.md,
docs/upload.md).

Reads (HEAD, GET, signing download URLs) use the "lookup" clients, with short timeouts; writes,
copies, deletes and listings the patient "put" ones, and so do the reads of the tasks that store
symbols (``patient=True``). A public location is looked up the way anyone
would read it: an anonymous HTTP HEAD of its plain object URL, which is also where downloads go.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import os
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
from botocore.exceptions import BotoCoreError, ClientError

from symbolon.storage.s3 import FORBIDDEN_CODES, NOT_FOUND_CODES, S3Clients, error_code
from symbolon.storage.sources import SymbolSource
from symbolon.storage.store import ObjectInfo, ObjectMissing, Opened, StoreUnavailable

logger = logging.getLogger(__name__)

PUBLIC_HEAD_ATTEMPTS = 5
PUBLIC_HEAD_RETRY_STATUSES = {429, 500, 503}
PUBLIC_HEAD_BACKOFF_SECONDS = 0.2
# S3 deletes at most this many keys in one request.
DELETE_BATCH = 1000
# The most bytes one chunk of an opened object holds.
READ_CHUNK = 1024 * 1024
MAX_KEY_BYTES = 1024  # S3's limit on an object key
MISSING_CODES = NOT_FOUND_CODES | {"NoSuchKey"}
# What a call raises when the service is slow, refuses or is away, as opposed to a missing key.
UNAVAILABLE = (BotoCoreError, ClientError, aiohttp.ClientError, TimeoutError, OSError)


def _info(key: str, response: Mapping[str, Any]) -> ObjectInfo:
    return ObjectInfo(
        key=key,
        size=int(response.get("ContentLength", 0)),
        etag=str(response.get("ETag", "")).strip('"'),
        last_modified=response["LastModified"],
        content_type=response.get("ContentType"),
        content_encoding=response.get("ContentEncoding"),
        metadata=dict(response.get("Metadata") or {}),
    )


def _put_params(
    content_type: str | None, content_encoding: str | None, metadata: Mapping[str, str] | None
) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if content_encoding:
        params["ContentEncoding"] = content_encoding
    if metadata:
        params["Metadata"] = dict(metadata)
    if content_type:
        params["ContentType"] = content_type
    return params


def _client_headers(params: Mapping[str, Any]) -> dict[str, str]:
    """The headers a presigned PUT was signed with, which the client must send as they are."""
    headers = {}
    if "ContentEncoding" in params:
        headers["Content-Encoding"] = params["ContentEncoding"]
    if "ContentType" in params:
        headers["Content-Type"] = params["ContentType"]
    for name, value in params.get("Metadata", {}).items():
        headers[f"x-amz-meta-{name}"] = value
    return headers


class S3Store:
    """One location: a bucket, and the prefix already in the keys it is given."""

    def __init__(self, source: SymbolSource, s3: S3Clients):
        self.source = source
        self._s3 = s3

    def _unavailable(self, exc: BaseException | str) -> StoreUnavailable:
        return StoreUnavailable(f"{self.source.url} (bucket={self.source.bucket!r}): {exc}")

    # -- reads ---------------------------------------------------------------------------------

    async def head(self, key: str, *, patient: bool = False) -> ObjectInfo | None:
        try:
            client = await self._s3.client(self.source, "put" if patient else "lookup")
            response = await client.head_object(Bucket=self.source.bucket, Key=key)
        except ClientError as exc:
            if error_code(exc) in MISSING_CODES:
                return None
            raise self._unavailable(exc) from exc
        except UNAVAILABLE as exc:
            raise self._unavailable(exc) from exc
        return _info(key, response)

    async def exists(self, key: str) -> bool:
        if self.source.public:
            return await self._public_exists(f"{self.source.base_url}/{key}")
        return await self.head(key) is not None

    def accepts(self, key: str) -> str | None:
        return "key too long" if len(key.encode()) > MAX_KEY_BYTES else None

    async def _public_exists(self, url: str) -> bool:
        """An anonymous HTTP HEAD, retried on 429/500/503 (docs/download.md, "Looking up")."""
        session = self._s3.anonymous_http()
        for attempt in range(PUBLIC_HEAD_ATTEMPTS):
            try:
                async with session.head(url, allow_redirects=False) as response:
                    if response.status == 200:
                        return True
                    if response.status not in PUBLIC_HEAD_RETRY_STATUSES:
                        if response.status not in (403, 404):
                            logger.error("HEAD %s answered %d", url, response.status)
                        return False
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise self._unavailable(exc) from exc
            await asyncio.sleep(PUBLIC_HEAD_BACKOFF_SECONDS * (attempt + 1))
        logger.error("HEAD %s kept failing after %d attempts", url, PUBLIC_HEAD_ATTEMPTS)
        raise StoreUnavailable(url)

    @asynccontextmanager
    async def open(self, key: str, *, patient: bool = False) -> AsyncIterator[Opened]:
        try:
            client = await self._s3.client(self.source, "put" if patient else "lookup")
            response = await client.get_object(Bucket=self.source.bucket, Key=key)
        except ClientError as exc:
            if error_code(exc) in MISSING_CODES:
                raise ObjectMissing(key) from None
            raise self._unavailable(exc) from exc
        except UNAVAILABLE as exc:
            raise self._unavailable(exc) from exc
        async with response["Body"] as body:
            chunks = self._chunks(body)
            try:
                yield Opened(_info(key, response), chunks)
            finally:
                await chunks.aclose()

    async def _chunks(self, body: Any) -> AsyncGenerator[bytes, None]:
        try:
            async for chunk in body.iter_chunks(READ_CHUNK):
                yield chunk
        except UNAVAILABLE as exc:
            raise self._unavailable(exc) from exc

    async def list(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        client = await self._s3.client(self.source, "put")
        paginator = client.get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=self.source.bucket, Prefix=prefix)
        try:
            async for page in pages:
                for item in page.get("Contents", ()):
                    yield ObjectInfo(
                        key=item["Key"],
                        size=int(item.get("Size", 0)),
                        etag=str(item.get("ETag", "")).strip('"'),
                        last_modified=item["LastModified"],
                    )
        except (ClientError, BotoCoreError) as exc:
            raise self._unavailable(exc) from exc

    async def download_url(self, key: str, expires: int) -> str:
        """The plain object URL of a public location; else a presigned GET URL."""
        if self.source.public:
            return f"{self.source.base_url}/{quote(key)}"
        client = await self._s3.client(self.source)
        url: str = await client.generate_presigned_url(
            "get_object", Params={"Bucket": self.source.bucket, "Key": key}, ExpiresIn=expires
        )
        return url

    # -- writes --------------------------------------------------------------------------------

    async def put_file(
        self,
        key: str,
        path: Path,
        *,
        content_type: str | None = None,
        content_encoding: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        params = _put_params(content_type, content_encoding, metadata)
        client = await self._s3.client(self.source, "put")
        # Read in chunks by the client as it sends: bounded memory.
        with open(path, "rb") as body:  # noqa: ASYNC230
            await client.put_object(
                Bucket=self.source.bucket,
                Key=key,
                Body=body,
                ContentLength=os.fstat(body.fileno()).st_size,
                **params,
            )

    async def put_bytes(self, key: str, data: bytes, *, content_type: str | None = None) -> None:
        client = await self._s3.client(self.source, "put")
        await client.put_object(
            Bucket=self.source.bucket, Key=key, Body=data, **_put_params(content_type, None, None)
        )

    async def copy(self, source_key: str, key: str) -> None:
        client = await self._s3.client(self.source, "put")
        # CopyObject keeps the content encoding, content type and metadata by default.
        await client.copy_object(
            Bucket=self.source.bucket,
            Key=key,
            CopySource={"Bucket": self.source.bucket, "Key": source_key},
        )

    async def delete(self, keys: builtins.list[str]) -> None:
        """One key by DeleteObject; more by DeleteObjects, whose answer lists the keys it could
        not delete while the request itself succeeds: the first is named."""
        if not keys:
            return
        bucket = self.source.bucket
        try:
            client = await self._s3.client(self.source, "put")
            if len(keys) == 1:
                try:
                    await client.delete_object(Bucket=bucket, Key=keys[0])
                except UNAVAILABLE as exc:
                    raise self._unavailable(f"deleting {keys[0]!r} failed: {exc}") from exc
                return
            for start in range(0, len(keys), DELETE_BATCH):
                batch = keys[start : start + DELETE_BATCH]
                response = await client.delete_objects(
                    Bucket=bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}
                )
                if errors := response.get("Errors"):
                    first = errors[0]
                    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
                    raise self._unavailable(
                        f"deleting {first.get('Key')!r} failed: {first.get('Code')} "
                        f"{first.get('Message')}{more}"
                    )
        except UNAVAILABLE as exc:
            raise self._unavailable(exc) from exc

    async def upload_url(
        self,
        key: str,
        expires: int,
        *,
        content_type: str | None = None,
        content_encoding: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> tuple[str, dict[str, str]]:
        """A presigned PutObject URL; the headers it fixes must be sent with the PUT."""
        params = _put_params(content_type, content_encoding, metadata)
        client = await self._s3.client(self.source, "put")
        url: str = await client.generate_presigned_url(
            "put_object",
            Params={"Bucket": self.source.bucket, "Key": key, **params},
            ExpiresIn=expires,
        )
        return url, _client_headers(params)

    # -- the bucket itself ---------------------------------------------------------------------

    async def problem(self, read_only_public: bool = False) -> str | None:
        source = self.source
        where = f"Unable to connect to {source.url} (bucket={source.bucket!r})"
        try:
            client = await self._s3.client(source)
            await client.head_bucket(Bucket=source.bucket)
        except ClientError as exc:
            code = error_code(exc)
            if code in NOT_FOUND_CODES:
                return f"{where}, because bucket not found"
            # A public bucket of someone else may refuse HeadBucket yet serve its objects.
            if read_only_public and code in FORBIDDEN_CODES:
                return None
            return f"{where}, due to {exc}"
        except (TimeoutError, BotoCoreError, OSError) as exc:
            return f"{where}, due to {exc}"
        return None

    async def ensure(self) -> None:
        """Create the bucket if it is missing: only ever asked for the embedded server's."""
        source = self.source
        client = await self._s3.client(source, "put")
        try:
            await client.head_bucket(Bucket=source.bucket)
        except ClientError as exc:
            if error_code(exc) not in NOT_FOUND_CODES:
                raise
            logger.info("creating bucket %s at %s", source.bucket, source.endpoint_url)
            await client.create_bucket(Bucket=source.bucket)

    async def close(self) -> None:
        # The clients and the HTTP session are the S3Clients', shared by every bucket.
        return None
