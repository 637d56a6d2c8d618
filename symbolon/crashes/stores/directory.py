"""Crashes in a local directory, date first (docs/crashes.md, "Where crashes are kept"), for
small single-machine installations."""

from __future__ import annotations

import asyncio
import errno
import fcntl
import glob
import json
import logging
import mmap
import os
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from functools import partial
from pathlib import Path

from symbolon.crashes.crashid import crash_date
from symbolon.crashes.payload import is_dump_name
from symbolon.crashes.store import (
    PUBLISHING_PREFIX,
    UNPUBLISHED_PREFIX,
    Dump,
    RawCrash,
    StorageError,
    dump_names_json,
)

logger = logging.getLogger("symbolon.crashes")

# Threads writing dumps, per process.
DUMP_WRITERS = 2

# Dumps are written with O_DIRECT, past the page cache: copying them into fresh page-cache pages
# was most of a crash's system time, and a dump is read once, later, by the processor. Offsets,
# lengths and the buffer are aligned to 4096, a multiple of any common logical block size; the
# unaligned tail is written through the page cache.
O_DIRECT: int = getattr(os, "O_DIRECT", 0)
DIRECT_ALIGNMENT = 4096
DIRECT_CHUNK = 1 << 20  # each writer thread's aligned buffer: larger dumps go through in chunks


def stored_dump_names(data: bytes) -> list[str]:
    """The dump names a ``dump_names`` file holds, leaving out anything that is not one (it
    names files to remove)."""
    try:
        names = json.loads(data) if data else []
    except (ValueError, RecursionError):
        return []
    if not isinstance(names, list):
        return []
    return [n for n in names if isinstance(n, str) and is_dump_name(n)]


def _close(files: list[tuple[int, Dump, bool]]) -> None:
    for fd, _, _ in files:
        os.close(fd)


def fs_dump_dir(name: str) -> str:
    """The directory of a dump: here the main minidump keeps its name."""
    return name or "dump"


CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
MARK_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC
# Read and write: NFS makes flock() byte-range locks, which need both for either kind.
LOCK_FLAGS = os.O_RDWR | os.O_CLOEXEC


class FSCrashStorage:
    """A directory, date first, for small single-machine installations.

    The raw crash is written to a temporary name and renamed, so a reader never sees half of one;
    any failure is a save failure (the reference skipped files silently).

    The dumps, the bulk of a crash, are written by threads of the store's own, which do little
    but make the system calls, so they seldom need the GIL the event loop holds; they are written
    with O_DIRECT where the file system takes it (the wait for the disk is the thread's), so the
    kernel copies them into no page cache. The small files are written on the event loop, as
    page-cache writes. With ``fsync`` every file waits for the disk, so all of a save goes to a
    thread.
    """

    def __init__(self, root: Path, fsync: bool = False) -> None:
        self.root = root
        self.fsync = fsync
        self.description = f"directory {str(root)!r}"
        self._made: set[str] = set()  # directories known to exist: one mkdir per day and kind
        self._writers: ThreadPoolExecutor | None = None  # made in the process that saves
        # Until the file system refuses it once (EINVAL: some tmpfs, FUSE or overlay set-ups).
        self._direct = O_DIRECT != 0
        self._direct_lock = threading.Lock()
        self._buffers = threading.local()  # each writing thread's aligned buffer

    def _file(self, crash_id: str, kind: str, name: str) -> tuple[str, str]:
        """A crash file's directory and path, as strings: a save makes several of them."""
        directory = f"{self.root}/{crash_date(crash_id)}/{kind}"
        return directory, f"{directory}/{name}"

    # The layout docs/crashes.md describes, in one place.
    def _raw_crash_file(self, crash_id: str) -> tuple[str, str]:
        return self._file(crash_id, "raw_crash", f"{crash_id}.json")

    def _dump_names_file(self, crash_id: str) -> tuple[str, str]:
        return self._file(crash_id, "dump_names", f"{crash_id}.json")

    def _dump_file(self, crash_id: str, name: str) -> tuple[str, str]:
        return self._file(crash_id, fs_dump_dir(name), crash_id)

    def _processed_file(self, crash_id: str) -> tuple[str, str]:
        return self._file(crash_id, "processed_crash", f"{crash_id}.json")

    def _create(self, directory: str, path: str) -> int:
        return self._open(directory, path, CREATE_FLAGS)

    def _open(self, directory: str, path: str, flags: int) -> int:
        if directory not in self._made:
            os.makedirs(directory, exist_ok=True)
            self._made.add(directory)
        try:
            return os.open(path, flags, 0o666)
        except FileNotFoundError:
            # Removed under us (an emptied marks directory swept by a clean-up): made again.
            os.makedirs(directory, exist_ok=True)
            return os.open(path, flags, 0o666)

    def _write_fd(self, fd: int, data: Dump) -> None:
        with memoryview(data) as whole:
            view = whole
            while view:
                view = view[os.write(fd, view) :]
        if self.fsync:
            os.fsync(fd)

    def _write(self, file: tuple[str, str], data: Dump, atomic: bool = False) -> None:
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

    def _refuse_direct(self, exc: OSError) -> None:
        """Buffered writes from now on for this store, said once."""
        with self._direct_lock:
            if not self._direct:
                return
            self._direct = False
        logger.info("%s refuses O_DIRECT (%s): dumps are written buffered", self.description, exc)

    def _create_dump(self, directory: str, path: str, size: int) -> tuple[int, bool]:
        """A dump file opened for writing, and whether with O_DIRECT (not if nothing of it is
        aligned)."""
        if self._direct and size >= DIRECT_ALIGNMENT:
            try:
                return self._open(directory, path, CREATE_FLAGS | O_DIRECT), True
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                self._refuse_direct(exc)
        return self._create(directory, path), False

    def _buffer(self) -> memoryview:
        """This thread's page-aligned buffer, made once: O_DIRECT needs aligned memory."""
        buffer: memoryview | None = getattr(self._buffers, "view", None)
        if buffer is None:
            buffer = self._buffers.view = memoryview(mmap.mmap(-1, DIRECT_CHUNK))
        return buffer

    def _write_aligned(self, fd: int, whole: memoryview) -> int:
        """Write the aligned prefix of ``whole`` with O_DIRECT; how much was written, less if the
        file system refused O_DIRECT or a short write left the offset unaligned."""
        buffer = self._buffer()
        end = len(whole) - len(whole) % DIRECT_ALIGNMENT
        done = 0
        while done < end:
            size = min(len(buffer), end - done)
            buffer[:size] = whole[done : done + size]
            sent = 0
            while sent < size:
                try:
                    sent += os.write(fd, buffer[sent:size])
                except OSError as exc:
                    if exc.errno != errno.EINVAL:
                        raise
                    self._refuse_direct(exc)
                    return done + sent
                if sent % DIRECT_ALIGNMENT:
                    return done + sent
            done += size
        return done

    def _write_dump(self, fd: int, data: Dump, direct: bool) -> None:
        if not direct:
            self._write_fd(fd, data)
            return
        with memoryview(data) as whole:
            done = self._write_aligned(fd, whole)
            if done < len(whole):  # the tail, or what O_DIRECT could not write, buffered
                flags = fcntl.fcntl(fd, fcntl.F_GETFL)
                fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~O_DIRECT)
            # Also for an aligned dump with ``fsync``: O_DIRECT does not make the size durable.
            self._write_fd(fd, whole[done:])

    def _lock_names(self, crash_id: str) -> tuple[int, int]:
        """The crash's ``dump_names`` file, open and share-locked for the rest of a save (so that
        the clean-up of a stopped request, :meth:`_remove_unsaved`, leaves this crash alone), and
        its size. A clean-up at work, or one that removed the file between its opening and its
        locking, fails this attempt: the collector tries again, marking it anew. (Removed before
        the opening, it is made again, without its mark: the crash is only not re-published,
        should this process stop before publishing it.)"""
        directory, path = self._dump_names_file(crash_id)
        fd = self._open(directory, path, LOCK_FLAGS | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            found = os.fstat(fd)
            if not os.path.samestat(found, os.stat(path)):
                raise FileNotFoundError(errno.ENOENT, "removed while being saved", path)
        except OSError:
            os.close(fd)
            raise
        return fd, found.st_size

    def _open_dumps(
        self, crash_id: str, dumps: Mapping[str, Dump]
    ) -> tuple[int, list[tuple[int, Dump, bool]]]:
        """Write ``dump_names`` and open the dump files (all closed again on failure). The
        ``dump_names`` file stays open and locked until the raw crash is written."""
        names, size = self._lock_names(crash_id)
        files: list[tuple[int, Dump, bool]] = []
        try:
            if size:
                # An earlier attempt's list, or a resend's. An empty file is left alone: ext4
                # writes a file truncated to nothing out to the disk when it is closed.
                os.ftruncate(names, 0)
            self._write_fd(names, dump_names_json(dumps))
            for name, data in dumps.items():
                fd, direct = self._create_dump(*self._dump_file(crash_id, name), len(data))
                files.append((fd, data, direct))
        except BaseException:
            _close(files)
            os.close(names)
            raise
        return names, files

    def _save_sync(self, crash_id: str, raw_crash: RawCrash, dumps: Mapping[str, Dump]) -> None:
        # Only the raw crash, written last, needs to appear whole: readers start from it.
        try:
            names, files = self._open_dumps(crash_id, dumps)
            try:
                rendered = self._write_dumps(files, raw_crash)
                self._write(self._raw_crash_file(crash_id), rendered, atomic=True)
            finally:
                os.close(names)
        except OSError as exc:
            raise self._failed(crash_id, exc) from exc

    def _write_dumps(self, files: list[tuple[int, Dump, bool]], raw_crash: RawCrash) -> bytes:
        """In a writer thread: the dumps' bytes, then the raw crash rendered (it hashes them)."""
        try:
            for fd, data, direct in files:
                self._write_dump(fd, data, direct)
        finally:
            _close(files)
        return raw_crash() if callable(raw_crash) else raw_crash

    def _failed(self, crash_id: str, exc: OSError) -> StorageError:
        self._made.clear()  # a directory may have been removed under us
        return StorageError(f"cannot write crash {crash_id} to {self.description}: {exc}")

    async def save(self, crash_id: str, raw_crash: RawCrash, dumps: Mapping[str, Dump]) -> None:
        if self.fsync:
            await asyncio.to_thread(self._save_sync, crash_id, raw_crash, dumps)
            return
        if self._writers is None:
            self._writers = ThreadPoolExecutor(DUMP_WRITERS, thread_name_prefix="crash-writer")
        try:
            names, files = self._open_dumps(crash_id, dumps)
        except OSError as exc:
            raise self._failed(crash_id, exc) from exc
        try:
            write = partial(self._write_dumps, files, raw_crash)
            try:
                writing = asyncio.get_running_loop().run_in_executor(self._writers, write)
            except BaseException:  # the writers shut down (the store closing)
                _close(files)
                raise
            # Shielded: cancelling a write not yet started would leave its files open.
            rendered = await asyncio.shield(writing)
            self._write(self._raw_crash_file(crash_id), rendered, atomic=True)
        except OSError as exc:
            raise self._failed(crash_id, exc) from exc
        finally:
            os.close(names)

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
        names: list[str] = json.loads(data) if data else []
        return names

    async def load_dump(self, crash_id: str, name: str) -> bytes | None:
        return self._read(Path(self._dump_file(crash_id, name)[1]))

    async def save_processed(self, crash_id: str, processed_crash: bytes) -> None:
        # Renamed into place: a reader sees the previous version or this one, never half.
        try:
            await asyncio.to_thread(
                self._write, self._processed_file(crash_id), processed_crash, True
            )
        except OSError as exc:
            raise self._failed(crash_id, exc) from exc

    async def load_processed(self, crash_id: str) -> bytes | None:
        return await asyncio.to_thread(self._read, Path(self._processed_file(crash_id)[1]))

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

    @property
    def _publishing_dir(self) -> Path:
        return self.root / PUBLISHING_PREFIX

    async def mark_publishing(self, crash_id: str) -> None:
        try:
            if self.fsync:  # waits for the disk: not on the event loop
                await asyncio.to_thread(self._mark_publishing, crash_id)
            else:
                self._mark_publishing(crash_id)
        except OSError as exc:
            raise StorageError(f"cannot mark {crash_id} as being published: {exc}") from exc

    def _mark_publishing(self, crash_id: str) -> None:
        """The mark is a second name of the crash's ``dump_names`` file, made here (empty) before
        the save fills it: a file created and deleted per crash made ext4 (without a journal)
        scan ever more freed inodes at every file creation, the collector's largest cost. Its
        modification time, renewed by each attempt's write of ``dump_names``, is the mark's
        age."""
        directory = str(self._publishing_dir)
        mark = f"{directory}/{crash_id}"
        names = self._dump_names_file(crash_id)
        for again in (True, False):
            if directory not in self._made:
                os.makedirs(directory, exist_ok=True)
                self._made.add(directory)
            os.close(self._open(*names, MARK_FLAGS))  # an existing crash's is kept
            try:
                os.link(names[1], mark)
            except FileExistsError:
                os.utime(mark)  # marked by an earlier attempt: the request is still at work
            except FileNotFoundError:
                # A directory removed under us (an emptied marks directory swept by a clean-up).
                self._made.clear()
                if again:
                    continue
                raise
            except OSError:
                # No hard links on this file system: a mark of its own.
                self._write((directory, mark), b"", atomic=True)
            return

    async def publishing(self, older_than: float, limit: int = 1000) -> list[str]:
        if not self._publishing_dir.is_dir():
            return []
        before = time.time() - older_than
        ids = []
        for path in sorted(self._publishing_dir.iterdir()):
            with suppress(FileNotFoundError):  # cleared meanwhile
                if not path.name.startswith(".") and path.stat().st_mtime < before:
                    ids.append(path.name)
        return ids[:limit]

    async def clear_publishing(self, crash_id: str, unsaved_before: float | None = None) -> None:
        mark = self._publishing_dir / crash_id
        try:
            if unsaved_before is not None and not self._remove_unsaved(
                crash_id, mark, unsaved_before
            ):
                return  # a request is at work on this id: the mark is its own now
            mark.unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot clear the mark of {crash_id}: {exc}") from exc

    def _remove_unsaved(self, crash_id: str, mark: Path, before: float) -> bool:
        """Remove what a request that stopped before writing its raw crash left: its
        ``dump_names`` file, the dumps it names and a temporary raw crash. Only if no save holds
        the file, neither it nor the mark was touched since ``before``, the name still leads to
        it (another clean-up may have removed it, and a resend made a new one) and the raw crash
        is still missing; False, and nothing removed, otherwise."""
        _, path = self._dump_names_file(crash_id)
        try:
            fd = os.open(path, LOCK_FLAGS)
        except FileNotFoundError:
            return not self._renewed(mark, before)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # a save is writing this crash
            found = os.fstat(fd)
            try:
                current = os.stat(path)
            except FileNotFoundError:  # removed meanwhile, by another clean-up
                return not self._renewed(mark, before)
            if (
                not os.path.samestat(found, current)
                or found.st_mtime >= before
                or self._renewed(mark, before)
            ):
                return False  # a request at work: marked, or written, since
            directory, raw_crash = self._raw_crash_file(crash_id)
            if os.path.exists(raw_crash):
                return False  # stored after all: published from its mark
            for name in stored_dump_names(os.pread(fd, found.st_size, 0)):
                with suppress(FileNotFoundError):
                    os.unlink(self._dump_file(crash_id, name)[1])
            # A process stopped while writing the raw crash leaves it under a temporary name.
            for temporary in glob.glob(f"{glob.escape(directory)}/.{crash_id}.json.*.tmp"):
                with suppress(FileNotFoundError):
                    os.unlink(temporary)
            os.unlink(path)
            return True
        finally:
            os.close(fd)

    @staticmethod
    def _renewed(mark: Path, since: float) -> bool:
        """Whether the mark was written since then: a request is at work on its id (a separate
        mark file, without hard links, is renewed apart from ``dump_names``)."""
        try:
            return mark.stat().st_mtime >= since
        except FileNotFoundError:
            return False

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
