"""Where received archives wait for the task that processes them.

With workers in the same process or on the same machine, a local directory will do. With
``symbolon worker`` on other machines, a task must not depend on the disk of the process that
received the upload: ``UPLOAD_STAGING_URL`` names an S3 location the archive is copied to, and the
task copies it back to its own disk.
"""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from pathlib import Path

from symbolon.conf import Settings
from symbolon.storage.s3 import S3Clients
from symbolon.storage.sources import SymbolSource

S3_SCHEME = "s3://"
CHUNK = 1 << 20


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


def make_staging(settings: Settings, s3: S3Clients) -> Staging:
    if settings.upload_staging_url:
        return S3Staging(settings, s3, settings.upload_staging_url)
    return Staging(settings)
