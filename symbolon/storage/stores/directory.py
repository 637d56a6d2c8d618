"""Symbols in a directory on this machine (``file:///…`` locations; docs/configuration.md,
"Symbol storage"), for one machine that keeps symbols durably without an S3 server.

An object is a plain file at ``<dir>/<key>``, so ``ls`` and backups see real files. Beside it,
``<dir>/.meta/<key>.json`` (the sidecar) keeps what S3 keeps with an object: the MD5 of the
stored bytes (the ETag), content type, content encoding and metadata. A sidecar describes the
data file of its size, modification time (in nanoseconds) and inode; it also keeps the description
of the file it replaced, so whichever of the two a reader finds, it finds it described, and never
one in the other's description. A backup restored with its modification times keeps its
descriptions. A data file no entry
describes (placed or edited by hand) has no type, encoding or metadata, and its MD5 is computed
when asked, once per process and version of the file.

Writes go to ``<dir>/.tmp/`` first and reach their names by rename (one file system, so renames
are atomic), in this order: data written and fsynced, sidecar written and fsynced, sidecar
renamed and its directory fsynced, data renamed and its directory fsynced. A reader never sees
half an object, the bytes of a visible object are on disk, and a put has made its name durable
when it returns. Renames and deletions hold an exclusive ``flock`` on ``<dir>/.meta/.lock``, so
writers in any process on the machine take turns and a pair of sidecar and data is one writer's.
A write never makes the directory itself, only ``.tmp`` and ``.meta`` inside it: a directory gone
(a volume not mounted) is StoreUnavailable; ``ensure``, at start, is what makes it.

Keys are ``/``-separated; one that could name a path outside the directory is a ValueError, and no
link below the directory is followed: such a file is not an object here. Nor is a file below a
subdirectory holding its own ``.meta``: that is another location's root (the try directory), whose
objects are that location's, read with its access.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import hashlib
import json
import os
import stat
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Generator, Iterator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from symbolon.storage.signing import PutTerms, UrlSigner
from symbolon.storage.sources import SymbolSource
from symbolon.storage.store import (
    KeyRefused,
    ObjectInfo,
    ObjectMissing,
    Opened,
    StoreUnavailable,
)

TMP = ".tmp"
META = ".meta"
SIDECAR_SUFFIX = ".json"
LOCK_NAME = ".lock"
# Names that are the store's own at any depth: never keys, never listed.
RESERVED = frozenset({TMP, META})
# Bytes per read or write: what one object costs in memory at most.
CHUNK = 256 * 1024
# A temporary file untouched this long belongs to a write that died with its process.
STALE_TMP_SECONDS = 3600
# S3's largest single PUT, for signed uploads whose caller names no smaller limit.
DEFAULT_MAX_PUT_SIZE = 5 * 1024**3
# The server route that serves directory locations (handlers/storage_files.py).
ROUTE_PREFIX = "/storage"
# Computed MD5s of files without a sidecar entry, per process.
COMPUTED_ETAGS = 10_000
# Objects a listing reads from the disk at a time, at least (whole directories).
LIST_BATCH = 1000
CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
# S3 answers this for an object stored without a content type (handlers/storage_files.py).
DEFAULT_CONTENT_TYPE = "binary/octet-stream"
# The longest name in a directory, and path, Linux file systems hold (bytes, the path with its NUL).
NAME_MAX = 255
PATH_MAX = 4096
# What a write of a key the directory cannot hold fails with, trying again changes nothing,
# and what the writer is told (never the directory's path).
REFUSALS = {
    errno.ENAMETOOLONG: "a name in the key is longer than a directory holds",
    errno.EISDIR: "the key names a directory of other objects",
    errno.ENOTDIR: "another object is where the key needs a directory",
}


def check_key(key: str) -> str:
    """``key`` if it names a file inside a location, else ValueError."""
    if not key or key.startswith("/") or "\x00" in key or "\\" in key:
        raise ValueError(f"{key!r} is not a storage key")
    for segment in key.split("/"):
        if segment in ("", ".", "..") or segment in RESERVED:
            raise ValueError(f"{key!r} is not a storage key")
    return key


@dataclass(frozen=True)
class Version:
    """A sidecar's description of one version of a data file: the file of this size,
    modification time and inode. Every write makes a new inode, so two versions a sidecar keeps
    are never taken for one another, however alike their sizes and times."""

    size: int
    mtime_ns: int
    inode: int
    etag: str
    content_type: str | None = None
    content_encoding: str | None = None
    metadata: Mapping[str, str] | None = None

    def describes(self, st: os.stat_result) -> bool:
        return (self.size, self.mtime_ns, self.inode) == (st.st_size, st.st_mtime_ns, st.st_ino)

    def restored_as(self, st: os.stat_result) -> bool:
        """Whether ``st`` may be this version copied elsewhere with its times (a backup
        restored), which keeps size and modification time, never the inode."""
        return (self.size, self.mtime_ns) == (st.st_size, st.st_mtime_ns)

    def to_json(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "mtime_ns": self.mtime_ns,
            "inode": self.inode,
            "etag": self.etag,
            "content_type": self.content_type,
            "content_encoding": self.content_encoding,
            "metadata": dict(self.metadata or {}),
        }

    @classmethod
    def from_json(cls, data: Any) -> Version | None:
        if not isinstance(data, dict):
            return None
        try:
            metadata = data.get("metadata") or {}
            return cls(
                size=int(data["size"]),
                mtime_ns=int(data["mtime_ns"]),
                inode=int(data["inode"]),
                etag=str(data["etag"]),
                content_type=data.get("content_type"),
                content_encoding=data.get("content_encoding"),
                metadata={str(k): str(v) for k, v in metadata.items()},
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            return None


def _info(key: str, st: os.stat_result, etag: str, version: Version | None) -> ObjectInfo:
    return ObjectInfo(
        key=key,
        size=st.st_size,
        etag=etag,
        last_modified=datetime.fromtimestamp(int(st.st_mtime), UTC),
        content_type=version.content_type if version else None,
        content_encoding=version.content_encoding if version else None,
        metadata=dict(version.metadata or {}) if version else {},
    )


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _makedirs(path: str, stop: str) -> list[str]:
    """Make ``path`` and its missing parents below ``stop``; the directories made, outermost
    first (their parents need an fsync for the new entries to last)."""
    missing: list[str] = []
    current = path
    while current != stop and not os.path.isdir(current):
        missing.append(current)
        current = os.path.dirname(current)
    made = []
    for directory in reversed(missing):
        try:
            os.mkdir(directory)
            made.append(directory)
        except FileExistsError:
            if not os.path.isdir(directory):
                raise NotADirectoryError(errno.ENOTDIR, "a file is in the way", directory) from None
    return made


class TmpFile:
    """A file being written in the store's ``.tmp``, hashed as it is written (blocking calls:
    run them in a thread)."""

    def __init__(self, tmp_dir: str, link_to: str | None = None):
        self.path = f"{tmp_dir}/{uuid.uuid4().hex}"
        self.md5 = hashlib.md5(usedforsecurity=False)
        self.size = 0
        self.fd: int | None = None
        if link_to is not None:
            os.link(link_to, self.path, follow_symlinks=False)  # a copy that shares the bytes
        else:
            self.fd = os.open(self.path, CREATE_FLAGS, 0o644)

    def write(self, data: bytes | memoryview) -> None:
        assert self.fd is not None
        self.md5.update(data)
        self.size += len(data)
        with memoryview(data) as view:
            while view:
                view = view[os.write(self.fd, view) :]

    def finish(self) -> os.stat_result:
        """Flush to disk and close; the stat of the finished file."""
        assert self.fd is not None
        fd, self.fd = self.fd, None
        try:
            os.fsync(fd)
            return os.fstat(fd)
        finally:
            os.close(fd)

    def discard(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            with suppress(OSError):
                os.close(fd)
        with suppress(OSError):
            os.unlink(self.path)


class PendingWrite:
    """An object being received in pieces (a ``PUT`` to this server): ``write`` each piece,
    then ``commit`` it under its key, or ``abort``. Nothing is visible before the commit."""

    def __init__(self, store: DirectoryStore, tmp: TmpFile):
        self.store = store
        self.tmp = tmp
        self._turn = asyncio.Lock()  # an abort waits for the write under way
        self.closed = False

    @property
    def size(self) -> int:
        return self.tmp.size

    async def write(self, data: bytes) -> None:
        async with self._turn:
            if self.closed:
                return
            try:
                await asyncio.to_thread(self.tmp.write, data)
            except OSError as exc:
                self.closed = True
                await asyncio.to_thread(self.tmp.discard)
                raise self.store.unavailable(exc) from exc

    async def commit(
        self,
        key: str,
        *,
        content_type: str | None = None,
        content_encoding: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        async with self._turn:
            assert not self.closed
            self.closed = True
            return await asyncio.to_thread(
                self.store._store_tmp, key, self.tmp, content_type, content_encoding, metadata
            )

    async def abort(self) -> None:
        async with self._turn:
            if not self.closed:
                self.closed = True
                await asyncio.to_thread(self.tmp.discard)


class DirectoryStore:
    """A :class:`~symbolon.storage.store.SymbolStore` over a directory."""

    def __init__(
        self,
        source: SymbolSource,
        secret_key: str | None,
        *,
        max_put_size: int = DEFAULT_MAX_PUT_SIZE,
    ):
        if not source.is_directory:
            raise ValueError(f"{source.url!r} is not a directory location")
        self.source = source
        self.root = source.bucket
        self.tmp_dir = f"{self.root}/{TMP}"
        self.meta_dir = f"{self.root}/{META}"
        self.signer = UrlSigner(secret_key) if secret_key else None
        self.max_put_size = max_put_size
        self._real_root: str | None = None
        self._computed: OrderedDict[tuple[str, int, int, int], str] = OrderedDict()

    @property
    def description(self) -> str:
        return f"directory {self.root!r}"

    def unavailable(self, exc: OSError) -> StoreUnavailable:
        return StoreUnavailable(f"{self.description}: {exc}")

    # -- paths

    def data_path(self, key: str) -> str:
        return f"{self.root}/{check_key(key)}"

    def sidecar_path(self, key: str) -> str:
        return f"{self.meta_dir}/{check_key(key)}{SIDECAR_SUFFIX}"

    def _inside(self, path: str, key: str) -> bool:
        """Whether ``path`` (the root joined with ``key``) is reached without following a link
        below the root. The root itself may be a link; its target is remembered."""
        real = os.path.realpath(path)
        if self._real_root is not None and real == f"{self._real_root}/{key}":
            return True
        self._real_root = os.path.realpath(self.root)  # moved since, or not known yet
        return real == f"{self._real_root}/{key}"

    def _crosses_location(self, key: str) -> bool:
        """Whether the key's path passes through another location's root: a directory below
        this one holding a ``.meta`` of its own, as listing sees it."""
        directory = self.root
        for segment in key.split("/")[:-1]:
            directory = f"{directory}/{segment}"
            if os.path.lexists(f"{directory}/{META}"):
                return True
        return False

    def _object_stat(self, key: str) -> os.stat_result | None:
        """The stat of the key's data file, or None if it is not an object here (nor can be)."""
        try:
            path = self.data_path(key)
            st = os.stat(path)
        except (ValueError, FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            if exc.errno == errno.ENAMETOOLONG:
                return None
            raise
        if not stat.S_ISREG(st.st_mode) or not self._inside(path, key):
            return None
        if self._crosses_location(key):
            return None
        return st

    # -- sidecars

    def _read_sidecar(self, key: str) -> tuple[Version | None, ...] | None:
        """The versions the key's sidecar describes (current, previous); None without one."""
        try:
            with open(self.sidecar_path(key), "rb") as file:
                data = json.loads(file.read())
        except (FileNotFoundError, NotADirectoryError):
            return None
        except ValueError:
            return ()  # damaged: describes nothing
        except OSError as exc:
            if exc.errno == errno.ENAMETOOLONG:
                return None  # a file placed by hand whose sidecar's name would be too long
            raise
        if not isinstance(data, dict):
            return ()
        return Version.from_json(data), Version.from_json(data.get("previous"))

    def _version(self, key: str, st: os.stat_result) -> tuple[Version | None, bool]:
        """The version describing the data file of stat ``st``, and whether there is a sidecar.

        A file whose inode no version names, still linked (not a replaced file a reader holds
        open), is taken for the one version of its size and modification time to the
        nanosecond, if just one: the file restored from a backup."""
        read = self._read_sidecar(key)
        if read is None:
            return None, False
        versions = [v for v in read if v is not None]
        exact = next((v for v in versions if v.describes(st)), None)
        if exact is not None or st.st_nlink == 0 or any(v.inode == st.st_ino for v in versions):
            return exact, True
        restored = [v for v in versions if v.restored_as(st)]
        return (restored[0] if len(restored) == 1 else None), True

    @contextmanager
    def _locked(self, shared: bool = False) -> Iterator[None]:
        """The store's lock: exclusive for renames and deletions, shared to read a consistent
        pair of data and sidecar."""
        lock = f"{self.meta_dir}/{LOCK_NAME}"
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except FileNotFoundError:
            if shared:
                raise
            self._ready_sync()
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # and the lock with it

    def _describe_sync(self, key: str, st: os.stat_result, fd: int | None = None) -> ObjectInfo:
        st, version = self._described(key, st, fd)
        if version is not None:
            return _info(key, st, version.etag, version)
        return _info(key, st, self._computed_etag(key, st, fd), None)

    def _described(
        self, key: str, st: os.stat_result, fd: int | None = None
    ) -> tuple[os.stat_result, Version | None]:
        """The data file's stat and the version describing it, if one does."""
        version, sidecar = self._version(key, st)
        if version is None and sidecar:
            # Another version's sidecar: a writer may be between its two renames, or two
            # writers were, since the stat. Asked again while none can be.
            with suppress(OSError), self._locked(shared=True):
                again = os.fstat(fd) if fd is not None else self._object_stat(key)
                if again is not None:
                    st = again
                    version, _ = self._version(key, st)
        return st, version

    def _computed_etag(self, key: str, st: os.stat_result, fd: int | None) -> str:
        """The MD5 of a file no sidecar describes, hashed once per version of the file."""
        memo = (key, st.st_ino, st.st_size, st.st_mtime_ns)
        etag = self._computed.get(memo)
        if etag is not None:
            self._computed.move_to_end(memo)
            return etag
        md5 = hashlib.md5(usedforsecurity=False)
        own = fd is None
        if own:
            fd = os.open(self.data_path(key), os.O_RDONLY | os.O_CLOEXEC)
        assert fd is not None
        try:
            offset = 0
            while chunk := os.pread(fd, CHUNK, offset):
                md5.update(chunk)
                offset += len(chunk)
        finally:
            if own:
                os.close(fd)
        etag = self._computed[memo] = md5.hexdigest()
        while len(self._computed) > COMPUTED_ETAGS:
            self._computed.popitem(last=False)
        return etag

    # -- writing

    def _new_tmp(self, link_to: str | None = None) -> TmpFile:
        if not os.path.isdir(self.tmp_dir):
            self._ready_sync()  # the first write to a location not yet ensured
        return TmpFile(self.tmp_dir, link_to)

    def _ready_sync(self) -> None:
        """Make the store's own directories in its directory, which a write never makes: one
        gone (a volume not mounted) is unavailable, not made anew on the disk beneath."""
        if not os.path.isdir(self.root):
            raise StoreUnavailable(f"{self.description} does not exist")
        for directory in (self.tmp_dir, self.meta_dir):
            with suppress(FileExistsError):
                os.mkdir(directory)

    def _write_sidecar_tmp(self, current: Version, previous: Version | None) -> str:
        body = current.to_json()
        if previous is not None:
            body["previous"] = previous.to_json()
        tmp = TmpFile(self.tmp_dir)
        try:
            tmp.write(json.dumps(body, sort_keys=True).encode())
            tmp.finish()
        except BaseException:
            tmp.discard()
            raise
        return tmp.path

    def _rename(self, source: str, target: str) -> None:
        os.replace(source, target)

    def _store_tmp(
        self,
        key: str,
        tmp: TmpFile,
        content_type: str | None,
        content_encoding: str | None,
        metadata: Mapping[str, str] | None,
        etag: str | None = None,
    ) -> ObjectInfo:
        """Finish ``tmp`` and give it ``key``, with a sidecar describing it (blocking)."""
        try:
            try:
                st = tmp.finish() if tmp.fd is not None else os.stat(tmp.path)
                version = Version(
                    size=st.st_size,
                    mtime_ns=st.st_mtime_ns,
                    inode=st.st_ino,
                    etag=etag or tmp.md5.hexdigest(),
                    content_type=content_type,
                    content_encoding=content_encoding,
                    metadata=dict(metadata or {}),
                )
                self._publish(key, tmp.path, version)
            finally:
                tmp.discard()  # gone already once renamed
        except OSError as exc:
            if exc.errno in REFUSALS:
                raise KeyRefused(REFUSALS[exc.errno]) from exc
            raise self.unavailable(exc) from exc
        return _info(key, st, version.etag, version)

    def _publish(self, key: str, data_tmp: str, version: Version) -> None:
        data_path, sidecar_path = self.data_path(key), self.sidecar_path(key)
        if not self._inside(data_path, key):
            raise ValueError(f"{key!r} leads out of {self.description} through a link")
        if self._crosses_location(key):
            raise ValueError(f"{key!r} lies in another location inside {self.description}")
        if os.path.isdir(data_path):
            raise IsADirectoryError(errno.EISDIR, "the key names a directory", data_path)
        with self._locked():
            current = self._object_stat(key)
            previous = self._version(key, current)[0] if current is not None else None
            sidecar_tmp = self._write_sidecar_tmp(version, previous)
            sidecar_renamed = False
            try:
                made = _makedirs(os.path.dirname(sidecar_path), self.meta_dir)
                self._rename(sidecar_tmp, sidecar_path)
                sidecar_renamed = True
                # The sidecar's name must last before the data's can: never data undescribed.
                self._fsync_dirs([os.path.dirname(sidecar_path)], made)
                made = _makedirs(os.path.dirname(data_path), self.root)
                self._rename(data_tmp, data_path)
                self._fsync_dirs([os.path.dirname(data_path), self.tmp_dir], made)
            except BaseException:
                with suppress(OSError):
                    os.unlink(sidecar_tmp)
                if sidecar_renamed and current is None and not os.path.exists(data_path):
                    with suppress(OSError):
                        os.unlink(sidecar_path)  # describes nothing
                raise

    @staticmethod
    def _fsync_dirs(changed: list[str], made: list[str]) -> None:
        """Each directory whose entries changed, and the parent of each one just made."""
        for directory in dict.fromkeys([*changed, *(os.path.dirname(d) for d in made)]):
            _fsync_dir(directory)

    def _put_file_sync(
        self,
        key: str,
        path: Path,
        content_type: str | None,
        content_encoding: str | None,
        metadata: Mapping[str, str] | None,
    ) -> None:
        check_key(key)
        with open(path, "rb") as source:
            tmp = self._new_tmp()
            try:
                while chunk := source.read(CHUNK):
                    tmp.write(chunk)
            except BaseException:
                tmp.discard()
                raise
        self._store_tmp(key, tmp, content_type, content_encoding, metadata)

    def _put_bytes_sync(self, key: str, data: bytes, content_type: str | None) -> None:
        check_key(key)
        tmp = self._new_tmp()
        try:
            with memoryview(data) as view:
                for offset in range(0, len(view), CHUNK):
                    tmp.write(view[offset : offset + CHUNK])
        except BaseException:
            tmp.discard()
            raise
        self._store_tmp(key, tmp, content_type, None, None)

    def _copy_sync(self, source_key: str, key: str) -> None:
        source_path = self.data_path(source_key)
        check_key(key)
        if self._object_stat(source_key) is None:
            raise ObjectMissing(source_key)
        try:
            tmp = self._new_tmp(link_to=source_path)
        except FileNotFoundError:
            raise ObjectMissing(source_key) from None
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                raise
            tmp, described = self._copy_bytes(source_key, source_path)
        else:
            try:
                fd = os.open(tmp.path, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    os.fsync(fd)  # a file placed by hand may not be on disk yet
                    described = self._describe_sync(source_key, os.fstat(fd), fd)
                finally:
                    os.close(fd)
            except BaseException:
                tmp.discard()
                raise
        self._store_tmp(
            key,
            tmp,
            described.content_type,
            described.content_encoding,
            described.metadata,
            etag=described.etag,
        )

    def _copy_bytes(self, source_key: str, source_path: str) -> tuple[TmpFile, ObjectInfo]:
        """A copy made by reading, where the file system links no files."""
        tmp = self._new_tmp()
        try:
            with open(source_path, "rb") as source:
                described = self._describe_sync(source_key, os.fstat(source.fileno()))
                while chunk := source.read(CHUNK):
                    tmp.write(chunk)
        except FileNotFoundError:
            tmp.discard()
            raise ObjectMissing(source_key) from None
        except BaseException:
            tmp.discard()
            raise
        return tmp, described

    def _delete_sync(self, keys: list[str]) -> None:
        paths = [(key, self.data_path(key), self.sidecar_path(key)) for key in keys]
        if not os.path.isdir(self.root):
            return
        with self._locked():
            touched: set[str] = set()
            for key, data_path, sidecar_path in paths:
                if not self._inside(data_path, key) or self._crosses_location(key):
                    continue  # reached through a link, or another location's: not ours
                for path, stop in ((data_path, self.root), (sidecar_path, self.meta_dir)):
                    try:
                        os.unlink(path)
                    except (FileNotFoundError, NotADirectoryError):
                        continue
                    except IsADirectoryError:
                        continue  # a directory is no object
                    touched.add(self._prune(os.path.dirname(path), stop))
            for directory in touched:
                # A directory kept for one key may have gone with a later key's pruning.
                while not os.path.isdir(directory):
                    directory = os.path.dirname(directory)
                _fsync_dir(directory)

    @staticmethod
    def _prune(directory: str, stop: str) -> str:
        """Remove ``directory`` and its parents below ``stop`` while empty; the first kept."""
        while directory != stop and directory.startswith(stop + "/"):
            try:
                os.rmdir(directory)
            except OSError:
                break
            directory = os.path.dirname(directory)
        return directory

    # -- listing

    def _list_sync(self, prefix: str) -> Generator[list[ObjectInfo], None, None]:
        """Objects whose keys start with ``prefix``, in key order, a directory at a time as
        the walk reaches it."""
        base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        if base:
            try:
                check_key(base)
            except ValueError:
                return  # no key can start with it
        yield from self._walk(base, prefix)

    def _walk(self, directory: str, prefix: str) -> Generator[list[ObjectInfo], None, None]:
        path = f"{self.root}/{directory}" if directory else self.root
        if directory and not self._inside(path, directory):
            return
        try:
            with os.scandir(path) as scan:
                entries = list(scan)
        except (FileNotFoundError, NotADirectoryError):
            return
        if directory and any(e.name == META for e in entries):
            return  # a location of its own (the try directory), not objects of this one
        named = []
        for entry in entries:
            if entry.name in RESERVED or entry.name in (".", ".."):
                continue
            try:
                entry.name.encode()
            except UnicodeEncodeError:
                continue  # not UTF-8: no key names it
            key = f"{directory}/{entry.name}" if directory else entry.name
            if entry.is_dir(follow_symlinks=False):
                if (key + "/").startswith(prefix) or prefix.startswith(key + "/"):
                    named.append((key + "/", key, True))  # sorts as its keys do
            elif entry.is_file(follow_symlinks=False) and key.startswith(prefix):
                named.append((key, key, False))
        files: list[ObjectInfo] = []
        for _, key, is_dir in sorted(named):
            if is_dir:
                if files:
                    yield files
                    files = []
                yield from self._walk(key, prefix)
                continue
            try:
                st = os.stat(f"{self.root}/{key}", follow_symlinks=False)
            except FileNotFoundError:
                continue  # deleted meanwhile
            files.append(self._listed(key, st))
        if files:
            yield files

    def _listed(self, key: str, st: os.stat_result) -> ObjectInfo:
        """As listed: the sidecar's ETag, or none (``""``) for a file no sidecar describes,
        whose MD5 would cost reading it whole."""
        st, version = self._described(key, st)
        return _info(key, st, version.etag if version else "", version)

    def _next_listed(self, walk: Iterator[list[ObjectInfo]]) -> list[ObjectInfo]:
        """The walk's next objects, at least LIST_BATCH unless it ends: one thread hop each."""
        found: list[ObjectInfo] = []
        for files in walk:
            found += files
            if len(found) >= LIST_BATCH:
                break
        return found

    # -- the protocol

    async def head(self, key: str, *, patient: bool = False) -> ObjectInfo | None:
        return await asyncio.to_thread(self._head_sync, key)

    def _head_sync(self, key: str) -> ObjectInfo | None:
        try:
            st = self._object_stat(key)
            return self._describe_sync(key, st) if st is not None else None
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self.unavailable(exc) from exc

    async def exists(self, key: str) -> bool:
        # One stat decides a miss; a hit also checks that no link below the root was followed.
        try:
            return await asyncio.to_thread(self._object_stat, key) is not None
        except OSError as exc:
            raise self.unavailable(exc) from exc

    def accepts(self, key: str) -> str | None:
        try:
            check_key(key)
        except ValueError:
            return "not a key a directory holds ('.', '..', '.meta', '.tmp' or an empty name)"
        names = key.split("/")
        longest = NAME_MAX - len(SIDECAR_SUFFIX)  # the file's sidecar is named after it
        if any(len(n.encode()) > NAME_MAX for n in names) or len(names[-1].encode()) > longest:
            return (
                f"key too long: a directory holds names of at most {NAME_MAX} bytes, "
                f"{longest} for the file's"
            )
        if len(self.sidecar_path(key).encode()) >= PATH_MAX:
            return f"key too long: a path in a directory is at most {PATH_MAX - 1} bytes"
        return None

    async def put_file(
        self,
        key: str,
        path: Path,
        *,
        content_type: str | None = None,
        content_encoding: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        try:
            await asyncio.to_thread(
                self._put_file_sync, key, path, content_type, content_encoding, metadata
            )
        except StoreUnavailable:
            raise
        except OSError as exc:
            raise self.unavailable(exc) from exc

    async def put_bytes(self, key: str, data: bytes, *, content_type: str | None = None) -> None:
        try:
            await asyncio.to_thread(self._put_bytes_sync, key, data, content_type)
        except StoreUnavailable:
            raise
        except OSError as exc:
            raise self.unavailable(exc) from exc

    async def begin_write(self) -> PendingWrite:
        """A write whose bytes arrive in pieces (handlers/storage_files.py)."""
        try:
            return PendingWrite(self, await asyncio.to_thread(self._new_tmp))
        except OSError as exc:
            raise self.unavailable(exc) from exc

    def open(self, key: str, *, patient: bool = False) -> AbstractAsyncContextManager[Opened]:
        return self._open_whole(key)

    @asynccontextmanager
    async def _open_whole(self, key: str) -> AsyncIterator[Opened]:
        async with self.open_file(key) as opened:
            yield Opened(opened.info, opened.chunks())

    @asynccontextmanager
    async def open_file(self, key: str) -> AsyncIterator[OpenFile]:
        """The object's description and its bytes, any range of them (ObjectMissing if none)."""
        fd, info = await asyncio.to_thread(self._open_sync, key)
        try:
            yield OpenFile(info, fd)
        finally:
            await asyncio.to_thread(os.close, fd)

    def _open_sync(self, key: str) -> tuple[int, ObjectInfo]:
        try:
            path = self.data_path(key)
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ObjectMissing(key) from None  # not there, nor can be
        except OSError as exc:
            if exc.errno == errno.ENAMETOOLONG:
                raise ObjectMissing(key) from None
            raise self.unavailable(exc) from exc
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or not self._inside(path, key):
                raise ObjectMissing(key)
            if self._crosses_location(key):
                raise ObjectMissing(key)
            st, version = self._described(key, st, fd)
            if version is None and st.st_nlink == 0:
                # Replaced since it was opened, and writers since have dropped its description
                # from the sidecar: the current file, opened while none can rename.
                with self._locked(shared=True):
                    os.close(fd)
                    fd = -1  # never closed twice: the number may be another thread's by then
                    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                    st = os.fstat(fd)
                    version, _ = self._version(key, st)
            if version is not None:
                return fd, _info(key, st, version.etag, version)
            return fd, _info(key, st, self._computed_etag(key, st, fd), None)
        except BaseException as exc:
            if fd >= 0:
                os.close(fd)
            if isinstance(exc, FileNotFoundError):
                raise ObjectMissing(key) from None  # deleted meanwhile
            if isinstance(exc, OSError):
                raise self.unavailable(exc) from exc
            raise

    async def copy(self, source_key: str, key: str) -> None:
        try:
            await asyncio.to_thread(self._copy_sync, source_key, key)
        except StoreUnavailable:
            raise
        except OSError as exc:
            raise self.unavailable(exc) from exc

    async def delete(self, keys: list[str]) -> None:
        try:
            await asyncio.to_thread(self._delete_sync, keys)
        except OSError as exc:
            raise self.unavailable(exc) from exc

    async def list(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        walk = self._list_sync(prefix)
        try:
            while True:
                try:
                    found = await asyncio.to_thread(self._next_listed, walk)
                except OSError as exc:
                    raise self.unavailable(exc) from exc
                if not found:
                    return
                for info in found:
                    yield info
        finally:
            with suppress(ValueError):  # cancelled while its thread still reads: left to end
                walk.close()

    def url_path(self, key: str) -> str:
        return f"{ROUTE_PREFIX}/{self.source.location_id}/{quote(check_key(key))}"

    async def download_url(self, key: str, expires: int) -> str:
        path = self.url_path(key)
        if self.source.public:
            return path
        signer = self._signer()
        query = signer.get_query(self.source.location_id, key, int(time.time()) + expires)
        return f"{path}?{query}"

    async def upload_url(
        self,
        key: str,
        expires: int,
        *,
        content_type: str | None = None,
        content_encoding: str | None = None,
        metadata: Mapping[str, str] | None = None,
        max_size: int | None = None,
    ) -> tuple[str, dict[str, str]]:
        """A signed ``PUT`` to this server. What is stored with the object is in the signed
        query, so the client need send no particular header."""
        terms = PutTerms(
            max_size=self.max_put_size if max_size is None else max_size,
            content_type=content_type,
            content_encoding=content_encoding,
            metadata=dict(metadata or {}),
        )
        expires_at = int(time.time()) + expires
        query = self._signer().put_query(self.source.location_id, key, expires_at, terms)
        return f"{self.url_path(key)}?{query}", {}

    def _signer(self) -> UrlSigner:
        if self.signer is None:
            raise StoreUnavailable(f"{self.description}: no SECRET_KEY to sign its URLs with")
        return self.signer

    async def problem(self, read_only_public: bool = False) -> str | None:
        return await asyncio.to_thread(self._problem_sync, read_only_public)

    def _problem_sync(self, read_only_public: bool) -> str | None:
        if not os.path.exists(self.root):
            return f"{self.description} does not exist"
        if not os.path.isdir(self.root):
            return f"{self.description} is not a directory"
        if not os.access(self.root, os.R_OK | os.X_OK):
            return f"{self.description} cannot be read"
        if not self.source.public and self.signer is None:
            return f"{self.description} is private and there is no SECRET_KEY to sign URLs"
        if read_only_public:
            return None
        for path in (self.root, self.tmp_dir, self.meta_dir):
            if os.path.isdir(path) and not os.access(path, os.W_OK | os.X_OK):
                return f"{self.description}: {path!r} is not writable"
        return None

    async def ensure(self) -> None:
        try:
            await asyncio.to_thread(self._ensure_sync)
        except OSError as exc:
            raise self.unavailable(exc) from exc

    def _ensure_sync(self) -> None:
        """Make the directory and the store's own, and sweep what dead writers left. The only
        place the directory itself is made (at start, for locations that may be made)."""
        os.makedirs(self.root, exist_ok=True)
        for directory in (self.tmp_dir, self.meta_dir):
            with suppress(FileExistsError):
                os.mkdir(directory)
        before = time.time() - STALE_TMP_SECONDS
        with os.scandir(self.tmp_dir) as scan:
            for entry in scan:
                with suppress(FileNotFoundError):
                    if entry.is_file(follow_symlinks=False) and _touched(entry.stat()) < before:
                        os.unlink(entry.path)

    async def close(self) -> None:
        return None


def _touched(st: os.stat_result) -> float:
    """When a temporary file was last worked on. A copy's is a hard link to an object, and keeps
    that object's (maybe old) modification time: its link is told by the inode change time."""
    return max(st.st_mtime, st.st_ctime) if st.st_nlink > 1 else st.st_mtime


class OpenFile:
    """An open object: its description, and its bytes read from the file opened for it, so a
    replacement meanwhile does not mix two versions."""

    def __init__(self, info: ObjectInfo, fd: int):
        self.info = info
        self._fd = fd

    async def chunks(self, start: int = 0, end: int | None = None) -> AsyncIterator[bytes]:
        """The bytes from ``start`` up to ``end`` (exclusive; None: to the end), a chunk at a
        time."""
        stop = self.info.size if end is None else min(end, self.info.size)
        offset = start
        while offset < stop:
            chunk = await asyncio.to_thread(os.pread, self._fd, min(CHUNK, stop - offset), offset)
            if not chunk:
                return  # truncated by hand meanwhile
            offset += len(chunk)
            yield chunk
