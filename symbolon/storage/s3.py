"""S3 access: one aiobotocore session per process, one client per endpoint and purpose, reused;
and one anonymous HTTP session for the objects of public buckets."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack
from typing import Any, Literal

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import ClientError

from symbolon.conf import Settings
from symbolon.storage.sources import SymbolSource

# lookup: existence checks (short timeouts, one retry); put: symbol writes (patient);
# crash: crash reports (write timeouts, one retry: the crash mover retries whole saves).
Purpose = Literal["lookup", "put", "crash"]
NOT_FOUND_CODES = {"404", "NoSuchBucket", "NotFound"}
FORBIDDEN_CODES = {"403", "AccessDenied", "Forbidden"}
USER_AGENT = "symbolon/1.0"


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class S3Clients:
    """Hands out long-lived clients; lookups and writes get different timeouts."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._session = get_session()
        self._stack = AsyncExitStack()
        self._clients: dict[tuple[Any, ...], Any] = {}
        self._lock = asyncio.Lock()
        self._http: aiohttp.ClientSession | None = None

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

    def anonymous_http(self) -> aiohttp.ClientSession:
        """Plain HTTP without credentials, as anyone reads a public bucket; lookup timeouts."""
        if self._http is None:
            s = self.settings
            self._http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(
                    total=s.s3_lookup_connect_timeout + s.s3_lookup_read_timeout
                ),
                headers={"User-Agent": USER_AGENT},
                connector=aiohttp.TCPConnector(limit=100),
            )
        return self._http

    async def close(self) -> None:
        await self._stack.aclose()
        self._clients.clear()
        if self._http is not None:
            await self._http.close()
            self._http = None
