"""Where received archives wait for the task that processes them.

With workers in the same process or on the same machine, a local directory will do. With
``symbolon worker`` on other machines, a task must not depend on the disk of the process that
received the upload: ``UPLOAD_STAGING_URL`` names an S3 location the archive is copied to, and the
task copies it back to its own disk.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

import asyncpg

from symbolon.conf import Settings
from symbolon.storage.s3 import S3Clients
from symbolon.storage.sources import SymbolSource
from symbolon.uploads.records import unfinished_staging_refs

S3_SCHEME = "s3://"
CHUNK = 1 << 20
# What POST /upload/ and the tasks name the archives they stage and fetch.
STAGED_PATTERNS = ("upload-*.zip", "staged-*.zip")
logger = logging.getLogger(__name__)


class Staging:
    """Local staging: the received file is the staged file."""

    def __init__(self, settings: Settings):
        self.directory = settings.staging_dir

    async def put(self, local: Path) -> str:
        return str(local)

    async def fetch(self, ref: str) -> tuple[Path, bool]:
        """A local path to the archive, and whether it is a copy to delete after use."""
        return Path(ref), False

    async def delete(self, ref: str) -> None:
        await asyncio.to_thread(Path(ref).unlink, missing_ok=True)

    @property
    def moves_files(self) -> bool:
        """True when ``put`` copies the file elsewhere, so the local one can go."""
        return False

    async def older_than(self, seconds: float) -> list[str]:
        """Refs of the staged archives last written more than ``seconds`` ago."""

        def old_files() -> list[str]:
            cutoff = time.time() - seconds
            found = []
            for pattern in STAGED_PATTERNS:
                for path in self.directory.glob(pattern):
                    try:
                        if path.stat().st_mtime < cutoff:
                            found.append(str(path))
                    except FileNotFoundError:
                        pass  # removed meanwhile
            return found

        return await asyncio.to_thread(old_files)


class S3Staging(Staging):
    def __init__(self, settings: Settings, s3: S3Clients, url: str):
        super().__init__(settings)
        self.source = SymbolSource.parse(url)
        self.s3 = s3

    @property
    def moves_files(self) -> bool:
        return True

    def _key(self, name: str) -> str:
        return f"{self.source.prefix}/{name}" if self.source.prefix else name

    async def put(self, local: Path) -> str:
        key = self._key(f"upload-{uuid.uuid4().hex}.zip")
        client = await self.s3.client(self.source, "put")
        size = (await asyncio.to_thread(local.stat)).st_size
        with open(local, "rb") as body:  # noqa: ASYNC230 - read in chunks as it is sent
            await client.put_object(
                Bucket=self.source.bucket, Key=key, Body=body, ContentLength=size
            )
        return f"{S3_SCHEME}{self.source.bucket}/{key}"

    async def fetch(self, ref: str) -> tuple[Path, bool]:
        if not ref.startswith(S3_SCHEME):
            return await super().fetch(ref)
        bucket, key = ref[len(S3_SCHEME) :].split("/", 1)
        client = await self.s3.client(self.source, "put")
        response = await client.get_object(Bucket=bucket, Key=key)
        self.directory.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix="staged-", suffix=".zip", dir=self.directory)
        path = Path(name)
        async with response["Body"] as stream:
            with open(handle, "wb") as out:  # noqa: ASYNC230 - written chunk by chunk
                while chunk := await stream.read(CHUNK):
                    out.write(chunk)
        return path, True

    async def delete(self, ref: str) -> None:
        if not ref.startswith(S3_SCHEME):
            return await super().delete(ref)
        bucket, key = ref[len(S3_SCHEME) :].split("/", 1)
        client = await self.s3.client(self.source, "put")
        await client.delete_object(Bucket=bucket, Key=key)

    async def older_than(self, seconds: float) -> list[str]:
        found = await super().older_than(seconds)  # fetched copies left on this disk
        cutoff = datetime.now(UTC) - timedelta(seconds=seconds)
        client = await self.s3.client(self.source, "put")
        prefix = self._key("upload-")
        paginator = client.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self.source.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                if item["LastModified"] < cutoff:
                    found.append(f"{S3_SCHEME}{self.source.bucket}/{item['Key']}")
        return found


class SweepServices(Protocol):
    @property
    def db(self) -> asyncpg.Pool: ...
    @property
    def staging(self) -> Staging: ...


async def sweep(services: SweepServices, seconds: float) -> int:
    """Delete staged archives older than ``seconds`` that no unfinished upload refers to: left by
    a process killed mid-request or mid-task. Returns how many were deleted."""
    candidates = await services.staging.older_than(seconds)
    if not candidates:
        return 0
    # Read after listing: an upload recorded meanwhile refers to a file too new to be listed.
    kept = await unfinished_staging_refs(services.db)
    deleted = 0
    for ref in candidates:
        if ref not in kept:
            await services.staging.delete(ref)
            deleted += 1
    if deleted:
        logger.info("deleted %d orphaned staged archive(s)", deleted)
    return deleted


def make_staging(settings: Settings, s3: S3Clients) -> Staging:
    if settings.upload_staging_url:
        return S3Staging(settings, s3, settings.upload_staging_url)
    return Staging(settings)
