"""A request stopped between the directory crash store's publishing mark, which makes the crash's
``dump_names`` file empty, and its save leaves no empty ``dump_names`` behind (docs/crashes.md)."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from symbolon.crashes.crashid import create_crash_id
from symbolon.crashes.stores.directory import FSCrashStorage
from tests.conftest import served
from tests.crashes import unique_queue

MINIDUMP = {"upload_file_minidump": b"MDMP\x93\xa7"}


def an_id() -> str:
    return create_crash_id(datetime(2024, 2, 29, 23, 59, tzinfo=UTC), 0)


def files(root: Path, crash_id: str) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob(f"*{crash_id}*"))


@pytest.mark.parametrize("hard_links", [True, False])
@pytest.mark.gen_test(timeout=30)
async def test_clearing_the_mark_of_a_crash_never_saved_leaves_no_dump_names(
    tmp_path, monkeypatch, hard_links
):
    if not hard_links:

        def refuse(*args, **kwargs):
            raise PermissionError("injected: no hard links here")

        monkeypatch.setattr(os, "link", refuse)
    store = FSCrashStorage(tmp_path)
    stopped, saved = an_id(), an_id()
    for crash_id in (stopped, saved):
        await store.mark_publishing(crash_id)
    await store.save(saved, b'{"ProductName": "X"}', MINIDUMP)
    assert await store.publishing(older_than=-60) == sorted([stopped, saved])
    names = tmp_path / ("20" + stopped[-6:]) / "dump_names" / f"{stopped}.json"
    assert names.read_bytes() == b""  # what a request stopped here leaves

    await store.clear_publishing(stopped)
    await store.clear_publishing(saved)
    assert files(tmp_path, stopped) == []
    assert await store.load_dump_names(saved) == ["upload_file_minidump"]  # a saved crash's stays
    assert await store.load_dump(saved, "upload_file_minidump") == MINIDUMP["upload_file_minidump"]
    assert await store.publishing(older_than=-60) == []
    await store.clear_publishing(stopped)  # cleared twice: nothing to do
    await store.close()


@pytest.mark.gen_test(timeout=60)
async def test_a_request_stopped_before_its_save_leaves_nothing_once_republishing_ran(
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
        stopped = an_id()
        await collector.storage.mark_publishing(stopped)  # then the process was killed
        assert files(root, stopped) != []
        collector.publish_grace_seconds = 0
        assert await collector.republish_pending() == 0
        assert files(root, stopped) == []
