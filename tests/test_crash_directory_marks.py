"""A request stopped between the directory crash store's publishing mark, which makes the crash's
``dump_names`` file empty, and its raw crash leaves nothing behind once the re-publishing loop
cleared its mark; a save at work on the same id keeps everything (docs/crashes.md)."""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from symbolon.crashes.crashid import create_crash_id
from symbolon.crashes.store import CrashStorage, StorageError
from symbolon.crashes.stores.directory import FSCrashStorage, stored_dump_names
from tests.conftest import served
from tests.crashes import unique_queue

MINIDUMP = {"upload_file_minidump": b"MDMP\x93\xa7"}
DUMPS = {"upload_file_minidump": b"MDMP" * 3000, "memory_report": b"{}" * 10}
RAW_CRASH = b'{"ProductName": "X"}'


def an_id() -> str:
    return create_crash_id(datetime(2024, 2, 29, 23, 59, tzinfo=UTC), 0)


def files(root: Path, crash_id: str) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob(f"*{crash_id}*"))


def dump_names_path(root: Path, crash_id: str) -> Path:
    return root / ("20" + crash_id[-6:]) / "dump_names" / f"{crash_id}.json"


def stop_before_the_raw_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    """Injected: the request stops once its dumps are written, before its raw crash is."""
    real = os.replace

    def stopped(source, target, *args, **kwargs):
        if "/raw_crash/" in str(target):
            raise OSError(errno.EIO, "injected: the process stopped here")
        return real(source, target, *args, **kwargs)

    monkeypatch.setattr(os, "replace", stopped)


async def a_stopped_save(store: CrashStorage, crash_id: str) -> None:
    """What a request that stopped after its dumps, before its raw crash, leaves."""
    await store.mark_publishing(crash_id)
    with pytest.MonkeyPatch.context() as m:
        stop_before_the_raw_crash(m)
        with pytest.raises(StorageError):
            await store.save(crash_id, RAW_CRASH, DUMPS)


async def assert_stored_whole(store: FSCrashStorage, crash_id: str) -> None:
    assert await store.load_dump_names(crash_id) == ["memory_report", "upload_file_minidump"]
    for name, data in DUMPS.items():
        assert await store.load_dump(crash_id, name) == data


def no_hard_links(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise PermissionError("injected: no hard links here")

    monkeypatch.setattr(os, "link", refuse)


@pytest.mark.parametrize("hard_links", [True, False])
@pytest.mark.gen_test(timeout=30)
async def test_a_request_stopped_after_its_dumps_leaves_nothing_once_its_mark_is_cleared(
    tmp_path, monkeypatch, hard_links
):
    if not hard_links:
        no_hard_links(monkeypatch)
    store = FSCrashStorage(tmp_path)
    stopped, saved = an_id(), an_id()
    await a_stopped_save(store, stopped)
    left = files(tmp_path, stopped)
    assert [f for f in left if "/dump/" in f or "/memory_report/" in f] != []
    assert [f for f in left if "raw_crash" in f] == []
    # Stopped while writing the raw crash, the process leaves it under a temporary name.
    raw_crashes = tmp_path / ("20" + stopped[-6:]) / "raw_crash"
    (raw_crashes / f".{stopped}.json.0123456789abcdef.tmp").write_bytes(b'{"Prod')
    await store.mark_publishing(saved)
    await store.save(saved, RAW_CRASH, DUMPS)

    await store.clear_publishing(stopped, unsaved_before=time.time() + 1)
    assert files(tmp_path, stopped) == []
    assert await store.publishing(older_than=-60) == [saved]
    assert await store.load_dump(saved, "memory_report") == DUMPS["memory_report"]
    await store.close()


def clean_up_elsewhere(root: Path, crash_id: str) -> None:
    """Another process's re-publishing loop, clearing the mark as stale, now (from a thread of
    its own: the caller may hold the event loop)."""

    def clean_up() -> None:
        other = FSCrashStorage(root)
        asyncio.run(other.clear_publishing(crash_id, unsaved_before=time.time() + 1))

    thread = threading.Thread(target=clean_up)
    thread.start()
    thread.join(10)
    assert not thread.is_alive()


@pytest.mark.parametrize("fsync", [False, True])
@pytest.mark.parametrize("hard_links", [True, False])
@pytest.mark.gen_test(timeout=30)
async def test_a_save_at_work_keeps_its_crash_and_its_mark_when_the_clean_up_comes(
    tmp_path, monkeypatch, fsync, hard_links
):
    """The clean-up of an old mark meets a resend of the same id writing its dumps: it removes
    nothing, and the mark stays the resend's."""
    if not hard_links:
        no_hard_links(monkeypatch)
    store = FSCrashStorage(tmp_path, fsync=fsync)
    crash_id = an_id()
    writing, go_on = threading.Event(), threading.Event()
    write_dumps = store._write_dumps

    def slow_write(*args):
        writing.set()
        assert go_on.wait(10)
        return write_dumps(*args)

    monkeypatch.setattr(store, "_write_dumps", slow_write)
    await store.mark_publishing(crash_id)
    saving = asyncio.ensure_future(store.save(crash_id, RAW_CRASH, DUMPS))
    assert await asyncio.to_thread(writing.wait, 10)
    await store.clear_publishing(crash_id, unsaved_before=time.time() + 1)
    assert await store.publishing(older_than=-60) == [crash_id]
    go_on.set()
    await saving
    await assert_stored_whole(store, crash_id)
    await store.close()


@pytest.mark.parametrize("fsync", [False, True])
@pytest.mark.gen_test(timeout=30)
async def test_the_save_holds_its_crash_until_the_raw_crash_is_in_place(
    tmp_path, monkeypatch, fsync
):
    store = FSCrashStorage(tmp_path, fsync=fsync)
    crash_id = an_id()
    real = os.replace

    def clean_up_first(source, target, *args, **kwargs):
        if "/raw_crash/" in str(target):
            clean_up_elsewhere(tmp_path, crash_id)
        return real(source, target, *args, **kwargs)

    monkeypatch.setattr(os, "replace", clean_up_first)
    await store.mark_publishing(crash_id)
    await store.save(crash_id, RAW_CRASH, DUMPS)
    assert await store.publishing(older_than=-60) == [crash_id]
    await assert_stored_whole(store, crash_id)
    await store.close()


@pytest.mark.gen_test(timeout=30)
async def test_a_clean_up_keeps_a_resends_new_dump_names_made_after_another_clean_up(
    tmp_path, monkeypatch
):
    """Two clean-ups of the same stale mark (two processes): the first removed the files, a
    resend made new ones; the second, which opened the old file, removes nothing."""
    store = FSCrashStorage(tmp_path)
    crash_id = an_id()
    await a_stopped_save(store, crash_id)
    names = dump_names_path(tmp_path, crash_id)
    minidump = tmp_path / ("20" + crash_id[-6:]) / "upload_file_minidump" / crash_id
    real = fcntl.flock

    def replaced_first(fd, operation):
        if operation & fcntl.LOCK_EX:
            # Injected, between this clean-up's open and its lock: another clean-up removed the
            # files, and a resend wrote its own (not yet its mark).
            names.unlink()
            minidump.unlink()
            names.write_bytes(b'["upload_file_minidump"]')
            minidump.write_bytes(b"MDMP resent")
        return real(fd, operation)

    monkeypatch.setattr(fcntl, "flock", replaced_first)
    await store.clear_publishing(crash_id, unsaved_before=time.time() + 1)
    assert names.read_bytes() == b'["upload_file_minidump"]'
    assert minidump.read_bytes() == b"MDMP resent"
    await store.close()


@pytest.mark.gen_test(timeout=30)
async def test_without_hard_links_a_renewed_mark_keeps_the_files_and_itself(tmp_path, monkeypatch):
    """Without hard links the mark is a file of its own, renewed apart from ``dump_names``."""
    no_hard_links(monkeypatch)
    store = FSCrashStorage(tmp_path)
    crash_id = an_id()
    await a_stopped_save(store, crash_id)
    long_ago = time.time() - 3600
    for path in tmp_path.rglob(f"*{crash_id}*"):
        os.utime(path, (long_ago, long_ago))
    await store.mark_publishing(crash_id)  # a resend, at work
    await store.clear_publishing(crash_id, unsaved_before=time.time() - 60)
    assert await store.publishing(older_than=-60) == [crash_id]
    assert await store.load_dump(crash_id, "memory_report") == DUMPS["memory_report"]
    await store.close()


@pytest.mark.gen_test(timeout=30)
async def test_a_dump_names_file_written_since_is_kept_though_the_mark_is_old(tmp_path):
    """A save made ``dump_names`` anew (a clean-up had removed it) while the mark stayed on the
    old file: the new one is a request's at work."""
    store = FSCrashStorage(tmp_path)
    crash_id = an_id()
    await store.mark_publishing(crash_id)
    long_ago = time.time() - 3600
    os.utime(tmp_path / "symbolon" / "publishing" / crash_id, (long_ago, long_ago))
    names = dump_names_path(tmp_path, crash_id)
    names.unlink()
    names.write_bytes(b"")  # what the save's open made, just now
    await store.clear_publishing(crash_id, unsaved_before=time.time() - 60)
    assert names.exists()
    assert await store.publishing(older_than=-60) == [crash_id]
    await store.close()


@pytest.mark.gen_test(timeout=30)
async def test_a_resend_with_fewer_dumps_stores_only_their_names(tmp_path):
    store = FSCrashStorage(tmp_path)
    crash_id = an_id()
    await store.save(crash_id, RAW_CRASH, DUMPS)
    await store.save(crash_id, RAW_CRASH, MINIDUMP)
    assert await store.load_dump_names(crash_id) == ["upload_file_minidump"]
    await store.close()


@pytest.mark.gen_test(timeout=30)
async def test_a_clean_up_at_work_fails_a_save_attempt_and_the_next_one_saves(tmp_path):
    store = FSCrashStorage(tmp_path)
    crash_id = an_id()
    await store.mark_publishing(crash_id)
    cleaning = os.open(dump_names_path(tmp_path, crash_id), os.O_RDONLY)
    fcntl.flock(cleaning, fcntl.LOCK_EX)  # as the clean-up holds it
    with pytest.raises(StorageError):
        await store.save(crash_id, RAW_CRASH, DUMPS)
    os.close(cleaning)
    await store.save(crash_id, RAW_CRASH, DUMPS)
    assert await store.load_dump(crash_id, "upload_file_minidump") == DUMPS["upload_file_minidump"]
    await store.close()


@pytest.mark.gen_test(timeout=30)
async def test_dump_names_removed_while_a_save_locks_it_fails_that_attempt(tmp_path, monkeypatch):
    store = FSCrashStorage(tmp_path)
    crash_id = an_id()
    names = dump_names_path(tmp_path, crash_id)
    real = fcntl.flock

    def removed_first(fd, operation):
        if operation & fcntl.LOCK_SH:
            names.unlink()  # injected: a clean-up removed it between the open and the lock
        return real(fd, operation)

    await store.mark_publishing(crash_id)
    with monkeypatch.context() as m:
        m.setattr(fcntl, "flock", removed_first)
        with pytest.raises(StorageError):
            await store.save(crash_id, RAW_CRASH, DUMPS)
    await store.mark_publishing(crash_id)  # what the collector's next attempt does
    await store.save(crash_id, RAW_CRASH, DUMPS)
    assert await store.load_dump_names(crash_id) == ["memory_report", "upload_file_minidump"]
    await store.close()


@pytest.mark.gen_test(timeout=30)
async def test_a_crash_stored_after_all_keeps_its_files_and_its_mark(tmp_path):
    """The re-publishing loop saw no raw crash; by the time it clears the mark, a resend stored
    the crash: it is published from the mark, not removed."""
    store = FSCrashStorage(tmp_path)
    crash_id = an_id()
    await store.mark_publishing(crash_id)
    await store.save(crash_id, RAW_CRASH, DUMPS)
    await store.clear_publishing(crash_id, unsaved_before=time.time() + 1)
    assert await store.publishing(older_than=-60) == [crash_id]
    assert await store.load_raw_crash(crash_id) == RAW_CRASH
    assert await store.load_dump(crash_id, "memory_report") == DUMPS["memory_report"]
    await store.close()


def test_only_dump_names_are_taken_from_a_dump_names_file():
    stored = b'["dump", "../../x", "raw_crash", 5, "", "memory_report", "a/b"]'
    assert stored_dump_names(stored) == ["dump", "", "memory_report"]
    for broken in (b"", b"not json", b'{"dump": 1}', b"[1, 2]"):
        assert stored_dump_names(broken) == []


@pytest.mark.parametrize("hard_links", [True, False])
@pytest.mark.gen_test(timeout=30)
async def test_clearing_the_mark_of_a_crash_never_saved_leaves_no_dump_names(
    tmp_path, monkeypatch, hard_links
):
    if not hard_links:
        no_hard_links(monkeypatch)
    store = FSCrashStorage(tmp_path)
    stopped, saved = an_id(), an_id()
    for crash_id in (stopped, saved):
        await store.mark_publishing(crash_id)
    await store.save(saved, b'{"ProductName": "X"}', MINIDUMP)
    assert await store.publishing(older_than=-60) == sorted([stopped, saved])
    names = dump_names_path(tmp_path, stopped)
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
        no_hard_links(monkeypatch)
    store = FSCrashStorage(tmp_path)
    crash_id = an_id()
    names = dump_names_path(tmp_path, crash_id)
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
        stopped, stopped_later = an_id(), an_id()
        await collector.storage.mark_publishing(stopped)  # then the process was killed
        await a_stopped_save(collector.storage, stopped_later)  # killed after its dumps
        assert files(root, stopped) != []
        left = files(root, stopped_later)
        assert [f.split("/")[1] for f in left if f.startswith("20")] == [
            "dump_names",
            "memory_report",
            "upload_file_minidump",
        ]
        collector.publish_grace_seconds = 0
        assert await collector.republish_pending() == 0
        assert files(root, stopped) == []
        assert files(root, stopped_later) == []


@pytest.mark.gen_test
async def test_dump_names_is_truncated_only_when_it_holds_an_earlier_list(tmp_path, monkeypatch):
    """ext4 writes a file truncated to nothing out to the disk when it is closed: a fresh crash's
    empty ``dump_names`` is not truncated, one holding a longer list from before is."""
    store = FSCrashStorage(tmp_path)
    truncated: list[int] = []
    real = os.ftruncate

    def ftruncate(fd: int, length: int) -> None:
        truncated.append(length)
        real(fd, length)

    monkeypatch.setattr(os, "ftruncate", ftruncate)
    crash_id = an_id()
    await store.mark_publishing(crash_id)
    await store.save(crash_id, RAW_CRASH, DUMPS)
    assert truncated == []
    assert await store.load_dump_names(crash_id) == sorted(DUMPS)

    await store.mark_publishing(crash_id)  # sent again with fewer dumps: the shorter list
    await store.save(crash_id, RAW_CRASH, MINIDUMP)
    assert truncated == [0]
    assert dump_names_path(tmp_path, crash_id).read_bytes() == b'["upload_file_minidump"]'
    await store.close()
