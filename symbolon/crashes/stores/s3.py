"""Crashes in an S3 bucket, in the reference's v1 layout (docs/crashes.md, "Where crashes are
kept"), so that existing processors read them unchanged."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Coroutine, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from botocore.exceptions import BotoCoreError, ClientError

from symbolon.conf import Settings
from symbolon.crashes.crashid import crash_date
from symbolon.crashes.payload import dump_key_segment
from symbolon.crashes.store import (
    PUBLISHING_PREFIX,
    UNPUBLISHED_PREFIX,
    Dump,
    RawCrash,
    StorageError,
    dump_names_json,
)
from symbolon.storage.s3 import NOT_FOUND_CODES, S3Clients, error_code

logger = logging.getLogger("symbolon.crashes")
PARALLEL_DUMP_PUTS = 4


def raw_crash_key(crash_id: str) -> str:
    return f"v1/raw_crash/{crash_date(crash_id)}/{crash_id}"


def dump_names_key(crash_id: str) -> str:
    return f"v1/dump_names/{crash_id}"


def dump_key(crash_id: str, name: str) -> str:
    return f"v1/{dump_key_segment(name)}/{crash_id}"


def processed_crash_key(crash_id: str) -> str:
    """Where Socorro's processor keeps processed crashes, so that its readers find them."""
    return f"v1/processed_crash/{crash_id}"


async def write_all(writes: list[Coroutine[Any, Any, None]]) -> None:
    """Run the writes at once; a failure cancels the others and is raised once they have
    stopped. Not a TaskGroup: on Python 3.11 and 3.12, a child failing while the group waits
    leaves the waiting task marked as cancelling, and aiohttp then turns a later early
    answer from S3 into a CancelledError that no retry or cleanup sees."""
    tasks = [asyncio.ensure_future(write) for write in writes]
    if not tasks:
        return
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in tasks:
            task.cancel()  # only those still running: a failure, or this save cancelled
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            raise cast(BaseException, task.exception())


class S3CrashStorage:
    """One bucket; keys as the reference wrote them (v1 layout, no leading slash)."""

    def __init__(self, settings: Settings, s3: S3Clients) -> None:
        self.bucket = settings.crash_bucket_name or ""
        self.region = settings.crash_region
        self.endpoint_url = settings.crash_endpoint_url
        self.description = (
            f"bucket {self.bucket!r} (region {self.region}, endpoint {self.endpoint_url or 'AWS'})"
        )
        self._s3 = s3
        self._credentials: tuple[str | None, str | None] | None = None
        if settings.crash_access_key or settings.crash_secret_access_key:
            self._credentials = (settings.crash_access_key, settings.crash_secret_access_key)

    async def client(self) -> Any:
        return await self._s3.client_for(self.endpoint_url, self.region, "crash", self._credentials)

    async def _put(self, key: str, body: Dump) -> None:
        client = await self.client()
        try:
            await client.put_object(Bucket=self.bucket, Key=key, Body=bytes(body))
        except (ClientError, BotoCoreError, OSError) as exc:
            raise StorageError(f"cannot write {key} to {self.description}: {exc}") from exc

    async def _get(self, key: str) -> bytes | None:
        client = await self.client()
        try:
            response = await client.get_object(Bucket=self.bucket, Key=key)
            async with response["Body"] as stream:
                data: bytes = await stream.read()
                return data
        except ClientError as exc:
            if error_code(exc) in NOT_FOUND_CODES | {"NoSuchKey"}:
                return None
            raise StorageError(f"cannot read {key} from {self.description}: {exc}") from exc
        except (BotoCoreError, OSError) as exc:
            raise StorageError(f"cannot read {key} from {self.description}: {exc}") from exc

    async def _delete(self, key: str) -> None:
        client = await self.client()
        try:
            await client.delete_object(Bucket=self.bucket, Key=key)
        except (ClientError, BotoCoreError, OSError) as exc:
            raise StorageError(f"cannot delete {key} from {self.description}: {exc}") from exc

    async def _list(
        self, prefix: str, limit: int | None = None, before: datetime | None = None
    ) -> list[str]:
        """Keys under ``prefix``; with ``before``, only those last written before it."""
        client = await self.client()
        keys: list[str] = []
        try:
            paginator = client.get_paginator("list_objects_v2")
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                keys += [
                    item["Key"]
                    for item in page.get("Contents", ())
                    if before is None or item["LastModified"] < before
                ]
                if limit is not None and len(keys) >= limit:
                    return keys[:limit]
        except (ClientError, BotoCoreError, OSError) as exc:
            raise StorageError(f"cannot list {prefix} in {self.description}: {exc}") from exc
        return keys

    async def save(self, crash_id: str, raw_crash: RawCrash, dumps: Mapping[str, Dump]) -> None:
        if callable(raw_crash):
            raw_crash = await asyncio.to_thread(raw_crash)
        await self._put(dump_names_key(crash_id), dump_names_json(dumps))
        # A few dumps at a time (each is copied for its PUT); one failure cancels the rest.
        slots = asyncio.Semaphore(PARALLEL_DUMP_PUTS)

        async def put_dump(name: str, data: Dump) -> None:
            async with slots:
                await self._put(dump_key(crash_id, name), data)

        await write_all([put_dump(name, data) for name, data in dumps.items()])
        await self._put(raw_crash_key(crash_id), raw_crash)

    async def discard(self, crash_id: str, dump_names: Iterable[str]) -> None:
        keys = [raw_crash_key(crash_id)]
        keys += [dump_key(crash_id, n) for n in dump_names]
        keys.append(dump_names_key(crash_id))
        for key in keys:
            await self._delete(key)

    async def load_raw_crash(self, crash_id: str) -> bytes | None:
        return await self._get(raw_crash_key(crash_id))

    async def load_dump_names(self, crash_id: str) -> list[str]:
        data = await self._get(dump_names_key(crash_id))
        names: list[str] = json.loads(data) if data else []
        return names

    async def load_dump(self, crash_id: str, name: str) -> bytes | None:
        return await self._get(dump_key(crash_id, name))

    async def save_processed(self, crash_id: str, processed_crash: bytes) -> None:
        await self._put(processed_crash_key(crash_id), processed_crash)

    async def load_processed(self, crash_id: str) -> bytes | None:
        return await self._get(processed_crash_key(crash_id))

    async def list_crash_ids(self, date: str) -> list[str]:
        prefix = f"v1/raw_crash/{date}/"
        return sorted(key[len(prefix) :] for key in await self._list(prefix))

    async def mark_unpublished(self, crash_id: str) -> None:
        await self._put(UNPUBLISHED_PREFIX + crash_id, b"")

    async def unpublished(self, limit: int = 1000) -> list[str]:
        keys = await self._list(UNPUBLISHED_PREFIX, limit)
        return [key[len(UNPUBLISHED_PREFIX) :] for key in keys]

    async def clear_unpublished(self, crash_id: str) -> None:
        await self._delete(UNPUBLISHED_PREFIX + crash_id)

    async def mark_publishing(self, crash_id: str) -> None:
        await self._put(PUBLISHING_PREFIX + crash_id, b"")

    async def publishing(self, older_than: float, limit: int = 1000) -> list[str]:
        before = datetime.now(UTC) - timedelta(seconds=older_than)
        keys = await self._list(PUBLISHING_PREFIX, limit, before)
        return [key[len(PUBLISHING_PREFIX) :] for key in keys]

    async def clear_publishing(self, crash_id: str, unsaved_before: float | None = None) -> None:
        # The mark alone goes. Dumps a stopped save left are not removed: without a lock, they
        # cannot be told from those of a resend of the same id at work, and readers start from
        # the raw crash, which they lack.
        await self._delete(PUBLISHING_PREFIX + crash_id)

    async def check(self) -> str | None:
        """None if HeadBucket answers, else what is wrong."""
        try:
            client = await self.client()
            await client.head_bucket(Bucket=self.bucket)
        except (ClientError, BotoCoreError, OSError) as exc:
            return f"HeadBucket on {self.description} failed: {exc}"
        return None

    async def start_up_check(self, create: bool = False) -> None:
        """HeadBucket (creating the bucket if ``create``: the embedded server only), then write
        and delete a test object, since HeadBucket does not prove write access."""
        client = await self.client()
        try:
            await client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if not (create and error_code(exc) in NOT_FOUND_CODES):
                raise StorageError(f"HeadBucket on {self.description} failed: {exc}") from exc
            await self._create_bucket(client)
        except (BotoCoreError, OSError) as exc:
            raise StorageError(f"HeadBucket on {self.description} failed: {exc}") from exc
        key = f"test/testfile-{uuid.uuid4()}.txt"
        await self._put(key, b"test")
        try:
            await self._delete(key)
        except StorageError as exc:
            logger.warning("could not delete the start-up probe object: %s", exc)

    async def _create_bucket(self, client: Any) -> None:
        logger.info("creating crash bucket %s at %s", self.bucket, self.endpoint_url)
        extra: dict[str, Any] = {}
        if self.region != "us-east-1":
            extra["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        try:
            await client.create_bucket(Bucket=self.bucket, **extra)
        except (ClientError, BotoCoreError, OSError) as exc:
            raise StorageError(f"cannot create {self.description}: {exc}") from exc

    async def close(self) -> None:
        pass  # the clients belong to the S3Clients they came from
