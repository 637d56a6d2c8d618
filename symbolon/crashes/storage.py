"""Where crashes are kept: an S3 bucket in the reference's v1 layout, or a local directory
(spec/crashes.md §7). Both write ``dump_names``, then the dumps, then the raw crash last: once the
raw crash exists, the rest of the crash does too.

Crash ids whose publishing failed are marked under ``symbolon/unpublished/`` beside the crashes,
so that any node can publish them later, even after a restart.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from symbolon.conf import Settings
from symbolon.crashes.crashid import crash_date
from symbolon.crashes.payload import dump_key_segment
from symbolon.storage.s3 import NOT_FOUND_CODES, S3Clients, error_code

logger = logging.getLogger("symbolon.crashes")
UNPUBLISHED_PREFIX = "symbolon/unpublished/"
PARALLEL_DUMP_PUTS = 4
# Threads writing dumps in directory storage, per process.
DUMP_WRITERS = 2


class StorageError(Exception):
    """The crash store could not do what was asked; the message names the store."""


def raw_crash_key(crash_id: str) -> str:
    return f"v1/raw_crash/{crash_date(crash_id)}/{crash_id}"


def dump_names_key(crash_id: str) -> str:
    return f"v1/dump_names/{crash_id}"


def dump_key(crash_id: str, name: str) -> str:
    return f"v1/{dump_key_segment(name)}/{crash_id}"


def fs_dump_dir(name: str) -> str:
    """The directory of a dump in directory storage: there the main minidump keeps its name."""
    return name or "dump"


# The raw crash's bytes, or a function that makes them (called off the event loop).
RawCrash = bytes | Callable[[], bytes]


def raw_crash_json(raw_crash: Mapping[str, Any]) -> bytes:
    """The byte-exact serialisation of §6: sorted keys, default separators, ASCII only."""
    return json.dumps(raw_crash, sort_keys=True).encode("ascii")


class CrashStorage(Protocol):
    description: str

    async def save(self, crash_id: str, raw_crash: bytes, dumps: Mapping[str, Any]) -> None: ...
    async def discard(self, crash_id: str, dump_names: Iterable[str]) -> None: ...
    async def load_raw_crash(self, crash_id: str) -> bytes | None: ...
    async def load_dump_names(self, crash_id: str) -> list[str]: ...
    async def load_dump(self, crash_id: str, name: str) -> bytes | None: ...
    async def list_crash_ids(self, date: str) -> list[str]: ...
    async def mark_unpublished(self, crash_id: str) -> None: ...
    async def unpublished(self, limit: int = 1000) -> list[str]: ...
    async def clear_unpublished(self, crash_id: str) -> None: ...
    async def check(self) -> str | None: ...
    async def start_up_check(self, create: bool = False) -> None: ...
    async def close(self) -> None: ...


def _dump_names_json(dumps: Mapping[str, Any]) -> bytes:
    return json.dumps(sorted(dumps)).encode("ascii")


class S3CrashStorage:
    """One bucket; keys as the reference wrote them (v1 layout, no leading slash)."""

    def __init__(self, settings: Settings, s3: S3Clients):
        self.bucket = settings.crash_bucket_name or ""
        self.region = settings.crash_region
        self.endpoint_url = settings.crash_endpoint_url
        self.description = (
            f"bucket {self.bucket!r} (region {self.region}, endpoint {self.endpoint_url or 'AWS'})"
        )
        self._s3 = s3
        self._credentials = None
        if settings.crash_access_key or settings.crash_secret_access_key:
            self._credentials = (settings.crash_access_key, settings.crash_secret_access_key)

    async def client(self) -> Any:
        return await self._s3.client_for(self.endpoint_url, self.region, "crash", self._credentials)

    async def _put(self, key: str, body: Any) -> None:
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
                return await stream.read()
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

    async def _list(self, prefix: str, limit: int | None = None) -> list[str]:
        client = await self.client()
        keys: list[str] = []
        try:
            paginator = client.get_paginator("list_objects_v2")
            async for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                keys += [item["Key"] for item in page.get("Contents", ())]
                if limit is not None and len(keys) >= limit:
                    return keys[:limit]
        except (ClientError, BotoCoreError, OSError) as exc:
            raise StorageError(f"cannot list {prefix} in {self.description}: {exc}") from exc
        return keys

    async def save(self, crash_id: str, raw_crash: RawCrash, dumps: Mapping[str, Any]) -> None:
        if callable(raw_crash):
            raw_crash = await asyncio.to_thread(raw_crash)
        await self._put(dump_names_key(crash_id), _dump_names_json(dumps))
        # A few dumps at a time (each is copied for its PUT); one failure cancels the rest.
        slots = asyncio.Semaphore(PARALLEL_DUMP_PUTS)

        async def put_dump(name: str, data: Any) -> None:
            async with slots:
                await self._put(dump_key(crash_id, name), data)

        try:
            async with asyncio.TaskGroup() as group:
                for name, data in dumps.items():
                    group.create_task(put_dump(name, data))
        except BaseExceptionGroup as group_error:
            raise group_error.exceptions[0] from None
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
        return json.loads(data) if data else []

    async def load_dump(self, crash_id: str, name: str) -> bytes | None:
        return await self._get(dump_key(crash_id, name))

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
        extra = {}
        if self.region != "us-east-1":
            extra["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        try:
            await client.create_bucket(Bucket=self.bucket, **extra)
        except (ClientError, BotoCoreError, OSError) as exc:
            raise StorageError(f"cannot create {self.description}: {exc}") from exc

    async def close(self) -> None:
        pass  # the clients belong to the S3Clients they came from


class FSCrashStorage:
    """A directory, date first (§7.2), for small single-machine installations.

    The raw crash is written to a temporary name and renamed, so a reader never sees half of one;
    any failure is a save failure (the reference skipped files silently).

    The dumps, the bulk of a crash, are written by threads of the store's own, which do little
    but make the system calls, so they seldom need the GIL the event loop holds; the small
    files are written on the event loop, as page-cache writes. With ``fsync`` every file waits
    for the disk, so all of a save goes to a thread.
    """

    def __init__(self, root: Path, fsync: bool = False):
        self.root = root
        self.fsync = fsync
        self.description = f"directory {str(root)!r}"
        self._made: set[str] = set()  # directories known to exist: one mkdir per day and kind
        self._writers: ThreadPoolExecutor | None = None  # made in the process that saves

    def _file(self, crash_id: str, kind: str, name: str) -> tuple[str, str]:
        """A crash file's directory and path, as strings: a save makes several of them."""
        directory = f"{self.root}/{crash_date(crash_id)}/{kind}"
        return directory, f"{directory}/{name}"

    # The layout of §7.2, in one place.
    def _raw_crash_file(self, crash_id: str) -> tuple[str, str]:
        return self._file(crash_id, "raw_crash", f"{crash_id}.json")

    def _dump_names_file(self, crash_id: str) -> tuple[str, str]:
        return self._file(crash_id, "dump_names", f"{crash_id}.json")

    def _dump_file(self, crash_id: str, name: str) -> tuple[str, str]:
        return self._file(crash_id, fs_dump_dir(name), crash_id)

    def _create(self, directory: str, path: str) -> int:
        if directory not in self._made:
            os.makedirs(directory, exist_ok=True)
            self._made.add(directory)
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)

    def _write_fd(self, fd: int, data: Any) -> None:
        with memoryview(data) as whole:
            view = whole
            while view:
                view = view[os.write(fd, view) :]
        if self.fsync:
            os.fsync(fd)

    def _write(self, file: tuple[str, str], data: Any, atomic: bool = False) -> None:
        directory, path = file
        target = path
        if atomic:
            target = f"{directory}/.{os.path.basename(path)}.{os.urandom(8).hex()}.tmp"
        fd = self._create(directory, target)
        try:
            try:
                self._write_fd(fd, data)
            finally:
                os.close(fd)
            if atomic:
                os.replace(target, path)
        except OSError:
            if atomic:  # no temporary file left behind
                with suppress(OSError):
                    os.unlink(target)
            raise

    def _open_dumps(self, crash_id: str, dumps: Mapping[str, Any]) -> list[tuple[int, Any]]:
        """Write ``dump_names`` and open the dump files (all closed again on failure)."""
        self._write(self._dump_names_file(crash_id), _dump_names_json(dumps))
        files: list[tuple[int, Any]] = []
        try:
            for name, data in dumps.items():
                files.append((self._create(*self._dump_file(crash_id, name)), data))
        except OSError:
            for fd, _ in files:
                os.close(fd)
            raise
        return files

    def _save_sync(self, crash_id: str, raw_crash: RawCrash, dumps: Mapping[str, Any]) -> None:
        # Only the raw crash, written last, needs to appear whole: readers start from it.
        try:
            rendered = self._write_dumps(self._open_dumps(crash_id, dumps), raw_crash)
            self._write(self._raw_crash_file(crash_id), rendered, atomic=True)
        except OSError as exc:
            raise self._failed(crash_id, exc) from exc

    def _write_dumps(self, files: list[tuple[int, Any]], raw_crash: RawCrash) -> bytes:
        """In a writer thread: the dumps' bytes, then the raw crash rendered (it hashes them)."""
        try:
            for fd, data in files:
                self._write_fd(fd, data)
        finally:
            for fd, _ in files:
                os.close(fd)
        return raw_crash() if callable(raw_crash) else raw_crash

    def _failed(self, crash_id: str, exc: OSError) -> StorageError:
        self._made.clear()  # a directory may have been removed under us
        return StorageError(f"cannot write crash {crash_id} to {self.description}: {exc}")

    async def save(self, crash_id: str, raw_crash: RawCrash, dumps: Mapping[str, Any]) -> None:
        if self.fsync:
            await asyncio.to_thread(self._save_sync, crash_id, raw_crash, dumps)
            return
        if self._writers is None:
            self._writers = ThreadPoolExecutor(DUMP_WRITERS, thread_name_prefix="crash-writer")
        try:
            files = self._open_dumps(crash_id, dumps)
        except OSError as exc:
            raise self._failed(crash_id, exc) from exc
        write = partial(self._write_dumps, files, raw_crash)
        # Shielded: cancelling a write not yet started would leave its files open.
        writing = asyncio.get_running_loop().run_in_executor(self._writers, write)
        try:
            rendered = await asyncio.shield(writing)
            self._write(self._raw_crash_file(crash_id), rendered, atomic=True)
        except OSError as exc:
            raise self._failed(crash_id, exc) from exc

    def _paths(self, crash_id: str, dump_names: Iterable[str]) -> list[Path]:
        files = [self._raw_crash_file(crash_id)]
        files += [self._dump_file(crash_id, n) for n in dump_names]
        files.append(self._dump_names_file(crash_id))
        return [Path(path) for _, path in files]

    async def discard(self, crash_id: str, dump_names: Iterable[str]) -> None:
        for path in self._paths(crash_id, dump_names):
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                raise StorageError(f"cannot delete {path}: {exc}") from exc

    def _read(self, path: Path) -> bytes | None:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"cannot read {path}: {exc}") from exc

    async def load_raw_crash(self, crash_id: str) -> bytes | None:
        return self._read(Path(self._raw_crash_file(crash_id)[1]))

    async def load_dump_names(self, crash_id: str) -> list[str]:
        data = self._read(Path(self._dump_names_file(crash_id)[1]))
        return json.loads(data) if data else []

    async def load_dump(self, crash_id: str, name: str) -> bytes | None:
        return self._read(Path(self._dump_file(crash_id, name)[1]))

    async def list_crash_ids(self, date: str) -> list[str]:
        directory = self.root / date / "raw_crash"
        if not directory.is_dir():
            return []
        return sorted(p.stem for p in directory.glob("*.json"))

    @property
    def _unpublished_dir(self) -> Path:
        return self.root / UNPUBLISHED_PREFIX

    async def mark_unpublished(self, crash_id: str) -> None:
        try:
            directory = str(self._unpublished_dir)
            self._write((directory, f"{directory}/{crash_id}"), b"", atomic=True)
        except OSError as exc:
            raise StorageError(f"cannot mark {crash_id} unpublished: {exc}") from exc

    async def unpublished(self, limit: int = 1000) -> list[str]:
        if not self._unpublished_dir.is_dir():
            return []
        names = sorted(p.name for p in self._unpublished_dir.iterdir())
        return [n for n in names if not n.startswith(".")][:limit]

    async def clear_unpublished(self, crash_id: str) -> None:
        (self._unpublished_dir / crash_id).unlink(missing_ok=True)

    async def check(self) -> str | None:
        if not self.root.is_dir() or not os.access(self.root, os.W_OK):
            return f"{self.description} is not a writable directory"
        return None

    async def start_up_check(self, create: bool = False) -> None:
        """Make the root if missing, and prove it takes files."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".testfile-{uuid.uuid4()}.txt"
            self._write((str(self.root), str(probe)), b"test", atomic=True)
            probe.unlink()
        except OSError as exc:
            raise StorageError(f"cannot write to {self.description}: {exc}") from exc

    async def close(self) -> None:
        if self._writers is not None:
            await asyncio.to_thread(self._writers.shutdown, wait=True)
            self._writers = None


def make_crash_storage(settings: Settings, s3: S3Clients) -> S3CrashStorage | FSCrashStorage:
    if settings.crash_storage == "fs":
        return FSCrashStorage(settings.crash_dir, settings.crash_fs_fsync)
    return S3CrashStorage(settings, s3)
