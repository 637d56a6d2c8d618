"""The directory crash store writes dumps with O_DIRECT, past the page cache, and falls back to
buffered writes where the file system refuses it (docs/crashes.md)."""

from __future__ import annotations

import asyncio
import ctypes
import errno
import fcntl
import json
import logging
import mmap
import os
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from symbolon.crashes.crashid import create_crash_id
from symbolon.crashes.stores.directory import DIRECT_ALIGNMENT, O_DIRECT, FSCrashStorage

SIZES = [0, 1, 4095, 4096, 4097, (1 << 20) + 3, (5 << 20) + 17]
REFUSED = "refuses O_DIRECT"

pytestmark = pytest.mark.skipif(O_DIRECT == 0, reason="no O_DIRECT on this system")


def an_id() -> str:
    return create_crash_id(datetime(2024, 2, 29, 23, 59, tzinfo=UTC), 0)


def dumps_of(sizes: list[int]) -> dict[str, bytes]:
    return {f"dump_{size}": os.urandom(size) for size in sizes}


def is_direct(fd: int) -> bool:
    return bool(fcntl.fcntl(fd, fcntl.F_GETFL) & O_DIRECT)


def under(fd: int, root: Path) -> bool:
    try:
        return os.readlink(f"/proc/self/fd/{fd}").startswith(str(root))
    except OSError:
        return False


async def assert_stored_whole(store: FSCrashStorage, crash_id: str, dumps: dict[str, bytes]):
    assert json.loads(await store.load_raw_crash(crash_id) or b"") == {"ProductName": "X"}
    assert sorted(await store.load_dump_names(crash_id)) == sorted(dumps)
    for name, data in dumps.items():
        assert await store.load_dump(crash_id, name) == data, name


def cached_pages(path: Path) -> list[bool]:
    """Which pages of a file are in the page cache (mincore(2) over a mapping of it)."""
    libc = ctypes.CDLL(None, use_errno=True)
    pages = (path.stat().st_size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
    if not pages:
        return []
    with path.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_COPY) as mapped:
        vector = (ctypes.c_ubyte * pages)()
        address = ctypes.addressof(ctypes.c_char.from_buffer(mapped))
        try:
            if libc.mincore(ctypes.c_void_p(address), ctypes.c_size_t(len(mapped)), vector):
                raise OSError(ctypes.get_errno(), "mincore")
        finally:
            del address  # the mapping can close
    return [bool(v & 1) for v in vector]


def bypasses_page_cache(directory: Path) -> bool:
    """Whether this file system takes O_DIRECT and keeps such writes out of the page cache
    (tmpfs since Linux 6.6 takes it but caches them; older kernels refuse it)."""
    probe = directory / ".direct-probe"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o644)
    except OSError:
        return False
    try:
        with mmap.mmap(-1, DIRECT_ALIGNMENT) as buffer:
            buffer.write(b"x" * DIRECT_ALIGNMENT)
            os.write(fd, buffer)
    except OSError:
        return False
    finally:
        os.close(fd)
    try:
        return not any(cached_pages(probe))
    finally:
        probe.unlink()


@pytest.mark.parametrize("fsync", [False, True])
@pytest.mark.gen_test(timeout=60)
async def test_dumps_of_every_size_round_trip_written_past_the_page_cache(
    tmp_path, monkeypatch, fsync
):
    if not bypasses_page_cache(tmp_path):
        pytest.skip("this file system keeps O_DIRECT writes in the page cache, or refuses them")
    store = FSCrashStorage(tmp_path, fsync=fsync)
    direct_writes: list[int] = []
    synced: list[str] = []
    write, fsync_ = os.write, os.fsync

    def recording_write(fd: int, data) -> int:
        written = write(fd, data)
        if under(fd, tmp_path) and is_direct(fd):
            direct_writes.append(written)
        return written

    def recording_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        fsync_(fd)

    monkeypatch.setattr(os, "write", recording_write)
    monkeypatch.setattr(os, "fsync", recording_fsync)
    crash_id = an_id()
    dumps = dumps_of(SIZES)
    await store.save(crash_id, b'{"ProductName": "X"}', dumps)
    await store.close()

    # Every aligned byte went with O_DIRECT, no more, and none of them is in the page cache.
    aligned = sum(size - size % DIRECT_ALIGNMENT for size in SIZES)
    assert sum(direct_writes) == aligned
    day = tmp_path / ("20" + crash_id[-6:])
    for size in SIZES:
        pages = cached_pages(day / f"dump_{size}" / crash_id)
        assert not any(pages[: size // mmap.PAGESIZE]), size
    if fsync:  # O_DIRECT makes no file's size durable: each dump is still synced
        for size in SIZES:
            assert str(day / f"dump_{size}" / crash_id) in synced
    await assert_stored_whole(store, crash_id, dumps)


@pytest.mark.parametrize("short", [2 * DIRECT_ALIGNMENT, DIRECT_ALIGNMENT + 100])
@pytest.mark.gen_test(timeout=60)
async def test_short_direct_writes_are_continued(tmp_path, monkeypatch, short):
    if not bypasses_page_cache(tmp_path):
        pytest.skip("this file system does not take O_DIRECT as it is meant")
    store = FSCrashStorage(tmp_path)
    write = os.write
    shortened: list[int] = []

    def short_write(fd: int, data) -> int:
        if not (under(fd, tmp_path) and is_direct(fd)) or len(data) <= short:
            return write(fd, data)
        shortened.append(fd)
        if short % DIRECT_ALIGNMENT == 0:
            return write(fd, memoryview(data)[:short])
        # An unaligned short write (as some file system might make), the rest left to the store.
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~O_DIRECT)
        try:
            return write(fd, memoryview(data)[:short])
        finally:
            fcntl.fcntl(fd, fcntl.F_SETFL, flags)

    monkeypatch.setattr(os, "write", short_write)
    crash_id = an_id()
    dumps = dumps_of([(1 << 20) + 3, (3 << 20) + 5])
    await store.save(crash_id, b'{"ProductName": "X"}', dumps)
    await store.close()
    assert shortened
    await assert_stored_whole(store, crash_id, dumps)


def refusing_open(monkeypatch, root: Path) -> list[int]:
    """os.open refusing O_DIRECT under ``root`` with EINVAL; the flags of each refusal."""
    refused: list[int] = []
    open_ = os.open

    def refusing(path, flags: int, *args, **kwargs) -> int:
        if str(path).startswith(str(root)) and flags & O_DIRECT:
            refused.append(flags)
            raise OSError(errno.EINVAL, "injected: Invalid argument", str(path))
        return open_(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing)
    return refused


def refusing_write(monkeypatch, root: Path) -> list[int]:
    """os.write refusing with EINVAL under ``root`` on a descriptor opened with O_DIRECT."""
    refused: list[int] = []
    write = os.write

    def refusing(fd: int, data) -> int:
        if under(fd, root) and is_direct(fd):
            refused.append(fd)
            raise OSError(errno.EINVAL, "injected: Invalid argument")
        return write(fd, data)

    monkeypatch.setattr(os, "write", refusing)
    return refused


@pytest.mark.parametrize("refuse", ["open", "write"])
@pytest.mark.parametrize("fsync", [False, True])
@pytest.mark.gen_test(timeout=60)
async def test_a_file_system_refusing_o_direct_gets_buffered_writes_tried_once(
    tmp_path, monkeypatch, caplog, refuse, fsync
):
    caplog.set_level(logging.INFO, logger="symbolon.crashes")
    store = FSCrashStorage(tmp_path, fsync=fsync)
    refusals: Callable[[pytest.MonkeyPatch, Path], list[int]]
    refusals = refusing_open if refuse == "open" else refusing_write
    refused = refusals(monkeypatch, tmp_path)
    first = an_id()
    dumps = dumps_of([4096, 400 * 1024 + 7, (5 << 20) + 17])
    await store.save(first, b'{"ProductName": "X"}', dumps)
    await assert_stored_whole(store, first, dumps)
    tried = len(refused)
    assert tried == 1 if refuse == "open" else tried >= 1

    # Later crashes, several at once, go buffered without trying O_DIRECT again.
    later = {an_id(): dumps_of([8192, 400 * 1024 + 1]) for _ in range(6)}
    await asyncio.gather(*(store.save(i, b'{"ProductName": "X"}', d) for i, d in later.items()))
    await store.close()
    for crash_id, crash_dumps in later.items():
        await assert_stored_whole(store, crash_id, crash_dumps)
    assert len(refused) == tried
    assert caplog.text.count(REFUSED) == 1
    assert not [p for p in tmp_path.rglob(".*") if p.is_file()]  # no temporary file left


@pytest.mark.gen_test(timeout=60)
async def test_write_refusals_of_concurrent_writers_are_said_once(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="symbolon.crashes")
    store = FSCrashStorage(tmp_path)
    refused = refusing_write(monkeypatch, tmp_path)
    crashes = {an_id(): dumps_of([(2 << 20) + 1]) for _ in range(8)}
    await asyncio.gather(*(store.save(i, b'{"ProductName": "X"}', d) for i, d in crashes.items()))
    await store.close()
    for crash_id, dumps in crashes.items():
        await assert_stored_whole(store, crash_id, dumps)
    assert refused
    assert caplog.text.count(REFUSED) == 1


@pytest.mark.skipif(not os.access("/dev/shm", os.W_OK), reason="no /dev/shm")
@pytest.mark.gen_test(timeout=60)
async def test_a_tmpfs_directory_takes_crashes_either_way():
    with tempfile.TemporaryDirectory(dir="/dev/shm") as root:
        store = FSCrashStorage(Path(root))
        crash_ids = [an_id() for _ in range(3)]
        dumps = dumps_of(SIZES)
        for crash_id in crash_ids:
            await store.save(crash_id, b'{"ProductName": "X"}', dumps)
        await store.close()
        for crash_id in crash_ids:
            await assert_stored_whole(store, crash_id, dumps)
