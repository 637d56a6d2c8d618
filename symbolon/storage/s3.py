"""S3 access: one aiobotocore session per process, one client per endpoint and purpose, reused."""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack
from typing import Any, Literal

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from symbolon.conf import Settings
from symbolon.storage.sources import StorageConfig, SymbolSource

logger = logging.getLogger(__name__)

# lookup: existence checks (short timeouts, one retry); put: symbol writes (patient);
# crash: crash reports (write timeouts, one retry: the crash mover retries whole saves).
Purpose = Literal["lookup", "put", "crash"]
NOT_FOUND_CODES = {"404", "NoSuchBucket", "NotFound"}
FORBIDDEN_CODES = {"403", "AccessDenied", "Forbidden"}


# S3 deletes at most this many keys in one request.
DELETE_BATCH = 1000


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


async def delete_keys(client: Any, bucket: str, keys: list[str]) -> None:
    """Delete ``keys`` from ``bucket`` in as many requests as S3's batch limit needs."""
    for start in range(0, len(keys), DELETE_BATCH):
        batch = keys[start : start + DELETE_BATCH]
        await client.delete_objects(
            Bucket=bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}
        )


class S3Clients:
    """Hands out long-lived clients; lookups and writes get different timeouts."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._session = get_session()
        self._stack = AsyncExitStack()
        self._clients: dict[tuple[Any, ...], Any] = {}
        self._lock = asyncio.Lock()

    def _config(self, endpoint_url: str | None, purpose: Purpose) -> AioConfig:
        s = self.settings
        if purpose == "lookup":
            timeouts = (s.s3_lookup_connect_timeout, s.s3_lookup_read_timeout)
        else:
            timeouts = (s.s3_put_connect_timeout, s.s3_put_read_timeout)
        return AioConfig(
            connect_timeout=timeouts[0],
            read_timeout=timeouts[1],
            # A download waits on lookups, a crash mover retries on its own: one retry. Symbol
            # writes are worth more patience.
            retries={"max_attempts": 5 if purpose == "put" else 2, "mode": "standard"},
            signature_version="s3v4",
            # S3-compatible servers (MinIO, the embedded one) want bucket names in the path.
            s3={"addressing_style": "path" if endpoint_url else "auto"},
            max_pool_connections=64,
        )

    async def client(self, source: SymbolSource, purpose: Purpose = "lookup") -> Any:
        return await self.client_for(source.endpoint_url, source.region, purpose)

    async def client_for(
        self,
        endpoint_url: str | None,
        region: str | None,
        purpose: Purpose,
        credentials: tuple[str | None, str | None] | None = None,
    ) -> Any:
        """A client for one endpoint, region and purpose; ``credentials`` (key, secret)
        override the AWS ones of the settings (the crash bucket may have its own)."""
        s = self.settings
        key, secret = credentials or (s.aws_access_key_id, s.aws_secret_access_key)
        ident = (endpoint_url, region, purpose, key)
        client = self._clients.get(ident)
        if client is not None:
            return client
        async with self._lock:
            client = self._clients.get(ident)
            if client is None:
                creator = self._session.create_client(
                    "s3",
                    region_name=region or s.aws_default_region or "us-east-1",
                    endpoint_url=endpoint_url,
                    aws_access_key_id=key,
                    aws_secret_access_key=secret,
                    config=self._config(endpoint_url, purpose),
                )
                client = await self._stack.enter_async_context(creator)
                self._clients[ident] = client
        return client

    async def close(self) -> None:
        await self._stack.aclose()
        self._clients.clear()

    async def bucket_problem(
        self, source: SymbolSource, read_only_public: bool = False
    ) -> str | None:
        """None if the bucket answers, else the message ``/__heartbeat__`` shows."""
        where = f"Unable to connect to {source.url} (bucket={source.bucket!r})"
        try:
            client = await self.client(source)
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

    async def check_buckets(self, config: StorageConfig) -> dict[str, str]:
        """Check every configured bucket concurrently; returns {url: problem} for failures."""
        buckets = config.all_buckets()
        problems = await asyncio.gather(
            *(
                self.bucket_problem(b, read_only_public=b.public and not config.writes_to(b))
                for b in buckets
            )
        )
        return {b.url: p for b, p in zip(buckets, problems, strict=True) if p}

    async def ensure_buckets(self, config: StorageConfig) -> None:
        """Create missing buckets: only ever called for the embedded development server."""
        for source in config.all_buckets():
            client = await self.client(source, "put")
            try:
                await client.head_bucket(Bucket=source.bucket)
            except ClientError as exc:
                if error_code(exc) not in NOT_FOUND_CODES:
                    raise
                logger.info("creating bucket %s at %s", source.bucket, source.endpoint_url)
                await client.create_bucket(Bucket=source.bucket)
