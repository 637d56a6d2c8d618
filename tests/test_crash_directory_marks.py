"""A request stopped between the directory crash store's publishing mark, which makes the crash's
``dump_names`` file empty, and its save leaves no empty ``dump_names`` behind (docs/crashes.md)."""

from __future__ import annotations

import os
import time
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

    # The re-publishing loop found no raw crash for it, its mark older than the grace period.
    await store.clear_publishing(stopped, unsaved_before=time.time() + 1)
    await store.clear_publishing(saved)
    assert files(tmp_path, stopped) == []
    assert await store.load_dump_names(saved) == ["upload_file_minidump"]  # a saved crash's stays
    assert await store.load_dump(saved, "upload_file_minidump") == MINIDUMP["upload_file_minidump"]
    assert await store.publishing(older_than=-60) == []
    await store.clear_publishing(stopped, unsaved_before=time.time() + 1)  # twice: nothing to do
    await store.close()


@pytest.mark.parametrize("hard_links", [True, False])
@pytest.mark.gen_test(timeout=30)
async def test_a_resend_at_work_keeps_its_dump_names_when_an_earlier_mark_is_cleared(
    tmp_path, monkeypatch, hard_links
):
    """A resend under the same crash id marks it again (an empty ``dump_names``) while the first
    request publishes, or the re-publishing loop clears the first, stale, mark: the file the
    resend is about to fill stays."""
    if not hard_links:

        def refuse(*args, **kwargs):
            raise PermissionError("injected: no hard links here")

        monkeypatch.setattr(os, "link", refuse)
    store = FSCrashStorage(tmp_path)
    crash_id = an_id()
    names = tmp_path / ("20" + crash_id[-6:]) / "dump_names" / f"{crash_id}.json"
    stale = time.time() - 60
    await store.mark_publishing(crash_id)  # the resend, at work
    await store.clear_publishing(crash_id)  # the first request published
    assert names.exists()
    await store.mark_publishing(crash_id)
    await store.clear_publishing(crash_id, unsaved_before=stale)  # a mark renewed since then
    assert names.exists()
    await store.save(crash_id, b'{"ProductName": "X"}', MINIDUMP)
    assert await store.load_dump_names(crash_id) == ["upload_file_minidump"]
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
