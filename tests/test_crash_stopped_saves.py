"""A request stopped in the middle of saving its crash (its process killed after the dumps, before
the raw crash) leaves nothing behind once the re-publishing loop finds its stale mark, on either
crash store; what a request still at work, or a crash saved after all, wrote stays."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from symbolon.crashes.crashid import create_crash_id
from symbolon.crashes.stores.directory import FSCrashStorage
from symbolon.crashes.stores.s3 import S3CrashStorage, dump_key, dump_names_key, raw_crash_key
from symbolon.storage.s3 import S3Clients
from tests.conftest import s3_client, served
from tests.crashes import unique_queue

DUMPS = {"upload_file_minidump": b"MDMP\x93\xa7", "upload_file_minidump_browser": b"MDMP2"}
RAW = b'{"ProductName": "X"}'


class Killed(Exception):
    """Stands for the process dying between the dumps and the raw crash."""


def an_id() -> str:
    return create_crash_id(datetime(2024, 2, 29, 23, 59, tzinfo=UTC), 0)


@asynccontextmanager
async def a_store(kind: str, settings: Any, tmp_path: Path) -> AsyncIterator[Any]:
    if kind == "directory":
        store: Any = FSCrashStorage(tmp_path)
        try:
            yield store
        finally:
            await store.close()
        return
    s3 = S3Clients(settings)
    try:
        yield S3CrashStorage(settings, s3)
    finally:
        await s3.close()


async def stop_in_the_middle(kind: str, store: Any, crash_id: str) -> None:
    """Mark the crash and save it up to its raw crash, as a request killed there would."""
    await store.mark_publishing(crash_id)
    if kind == "directory":

        def raw_crash() -> bytes:  # rendered once the dumps are written
            raise Killed

        with pytest.raises(Killed):
            await store.save(crash_id, raw_crash, DUMPS)
        return
    put = store._put

    async def stopping(key: str, data: Any) -> None:
        if key == raw_crash_key(crash_id):
            raise Killed
        await put(key, data)

    store._put = stopping
    try:
        with pytest.raises(Killed):
            await store.save(crash_id, RAW, DUMPS)
    finally:
        store._put = put


def left(kind: str, settings: Any, tmp_path: Path, crash_id: str) -> list[str]:
    """The crash's files, or objects, in the store (its publishing mark aside)."""
    if kind == "directory":
        return sorted(
            str(p.relative_to(tmp_path))
            for p in tmp_path.rglob(f"*{crash_id}*")
            if "publishing" not in p.parts
        )
    keys = [dump_names_key(crash_id), raw_crash_key(crash_id)]
    keys += [dump_key(crash_id, name) for name in DUMPS]
    client = s3_client(settings.crash_endpoint_url)
    found = []
    for key in keys:
        listing = client.list_objects_v2(Bucket=settings.crash_bucket_name, Prefix=key)
        found += [o["Key"] for o in listing.get("Contents", ())]
    return sorted(found)


STORES = ["directory", "s3"]


@pytest.mark.parametrize("kind", STORES)
@pytest.mark.gen_test(timeout=60)
async def test_a_save_stopped_after_its_dumps_leaves_nothing_once_its_mark_is_stale(
    live_settings, tmp_path, kind
):
    crash_id = an_id()
    async with a_store(kind, live_settings, tmp_path) as store:
        await stop_in_the_middle(kind, store, crash_id)
        assert len(left(kind, live_settings, tmp_path, crash_id)) == 3  # names and two dumps
        # The re-publishing loop found no raw crash, and the mark older than the grace period
        # (here: everything counts as older).
        await store.clear_publishing(crash_id, unsaved_before=time.time() + 2)
        assert left(kind, live_settings, tmp_path, crash_id) == []
        assert await store.publishing(older_than=-60) == []


@pytest.mark.parametrize("kind", STORES)
@pytest.mark.gen_test(timeout=60)
async def test_what_was_written_since_the_mark_went_stale_stays(live_settings, tmp_path, kind):
    """A resend of the same id at work wrote the files after the time the loop asks about."""
    crash_id = an_id()
    async with a_store(kind, live_settings, tmp_path) as store:
        await stop_in_the_middle(kind, store, crash_id)
        written = left(kind, live_settings, tmp_path, crash_id)
        await store.clear_publishing(crash_id, unsaved_before=time.time() - 60)
        assert left(kind, live_settings, tmp_path, crash_id) == written


@pytest.mark.parametrize("kind", STORES)
@pytest.mark.gen_test(timeout=60)
async def test_a_crash_saved_after_all_keeps_its_dumps(live_settings, tmp_path, kind):
    crash_id = an_id()
    async with a_store(kind, live_settings, tmp_path) as store:
        await store.mark_publishing(crash_id)
        await store.save(crash_id, RAW, DUMPS)
        await store.clear_publishing(crash_id, unsaved_before=time.time() + 2)
        assert await store.load_raw_crash(crash_id) == RAW
        for name, data in DUMPS.items():
            assert await store.load_dump(crash_id, name) == data


@pytest.mark.gen_test(timeout=60)
async def test_the_republishing_loop_removes_a_save_stopped_after_its_dumps(
    live_settings, tmp_path
):
    root = tmp_path / "crashes"
    settings = live_settings.replace(
        crash_storage="fs", crash_fs_root=root, crashpublish_queue_name=unique_queue()
    )
    server = served(settings)
    async with server:
        collector = server.runtime.collector
        assert collector is not None
        crash_id = an_id()
        await stop_in_the_middle("directory", collector.storage, crash_id)
        assert left("directory", settings, root, crash_id) != []
        collector.publish_grace_seconds = 0
        assert await collector.republish_pending() == 0  # nothing to publish: never stored
        assert left("directory", settings, root, crash_id) == []
        assert await collector.storage.publishing(older_than=-60) == []
