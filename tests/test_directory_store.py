"""Symbols in a directory (symbolon/storage/stores/directory.py): plain files with sidecars,
written so that no reader sees half an object, keys that never leave the directory, and the
signed URLs its route checks."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import os
import shutil
import time
from contextlib import suppress
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from symbolon.storage import signing
from symbolon.storage.signing import PutTerms, SignatureInvalid, UrlSigner
from symbolon.storage.sources import SymbolSource
from symbolon.storage.store import KeyRefused, ObjectInfo, ObjectMissing, StoreUnavailable
from symbolon.storage.stores import directory as directory_module
from symbolon.storage.stores.directory import CHUNK, DirectoryStore

SECRET = "s" * 32
KEY = "v1/xul.pdb/44E4EC8C2F41492B9369D6B9A059577C2/xul.sym"


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def make_store(root: Path, public: bool = False, secret: str | None = SECRET) -> DirectoryStore:
    query = "?access=public" if public else ""
    return DirectoryStore(SymbolSource.parse(f"file://{root}{query}"), secret)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "symbols"


@pytest.fixture
def store(root: Path, io_loop: Any) -> DirectoryStore:
    made = make_store(root)
    io_loop.run_sync(made.ensure)
    return made


async def read(store: DirectoryStore, key: str) -> tuple[ObjectInfo, bytes]:
    async with store.open(key) as opened:
        return opened.info, b"".join([chunk async for chunk in opened.chunks])


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if not p.is_dir())


# -- objects are plain files, described by sidecars


@pytest.mark.gen_test
async def test_an_object_is_a_plain_file_with_a_sidecar(store, root):
    await store.put_bytes(KEY, b"MODULE x", content_type="text/plain")
    assert (root / KEY).read_bytes() == b"MODULE x"
    sidecar = json.loads((root / ".meta" / f"{KEY}.json").read_text())
    assert sidecar["etag"] == md5(b"MODULE x")
    assert sidecar["content_type"] == "text/plain"
    info = await store.head(KEY)
    assert info is not None
    assert (info.key, info.size, info.etag, info.content_type) == (
        KEY,
        8,
        md5(b"MODULE x"),
        "text/plain",
    )
    assert info.content_encoding is None and info.metadata == {}
    assert abs(info.last_modified.timestamp() - (root / KEY).stat().st_mtime) < 1
    assert await store.exists(KEY)
    assert await read(store, KEY) == (info, b"MODULE x")
    assert files_under(root / ".tmp") == []


@pytest.mark.gen_test
async def test_a_file_is_stored_with_its_encoding_and_metadata_and_read_in_chunks(store, tmp_path):
    data = os.urandom(2 * CHUNK + 17)
    source = tmp_path / "upload.gz"
    source.write_bytes(data)
    meta = {"original_size": "123", "original_md5_hash": "ab" * 16}
    await store.put_file(KEY, source, content_encoding="gzip", metadata=meta)
    info, body = await read(store, KEY)
    assert body == data and info.etag == md5(data) and info.size == len(data)
    assert (info.content_encoding, info.content_type, dict(info.metadata)) == ("gzip", None, meta)
    async with store.open_file(KEY) as opened:
        chunks = [c async for c in opened.chunks(CHUNK - 5, 2 * CHUNK + 3)]
    assert b"".join(chunks) == data[CHUNK - 5 : 2 * CHUNK + 3]
    assert max(len(c) for c in chunks) <= CHUNK


@pytest.mark.gen_test
async def test_a_missing_object_is_none_false_and_object_missing(store):
    assert await store.head(KEY) is None
    assert not await store.exists(KEY)
    with pytest.raises(ObjectMissing):
        await read(store, KEY)
    with pytest.raises(ObjectMissing):
        await store.copy(KEY, "v1/other")
    await store.put_bytes("v1/a/b", b"x")
    assert await store.head("v1/a") is None  # a directory is no object
    assert not await store.exists("v1/a")


@pytest.mark.gen_test
async def test_a_file_placed_by_hand_is_an_object_with_a_computed_etag(store, root):
    (root / "v1" / "hand").mkdir(parents=True)
    (root / "v1" / "hand" / "a.sym").write_bytes(b"by hand")
    info = await store.head("v1/hand/a.sym")
    assert info is not None
    assert info.etag == md5(b"by hand")
    assert (info.content_type, info.content_encoding, info.metadata) == (None, None, {})
    assert await read(store, "v1/hand/a.sym") == (info, b"by hand")
    assert [i.key for i in [i async for i in store.list("v1/")]] == ["v1/hand/a.sym"]


@pytest.mark.gen_test
async def test_a_file_edited_by_hand_is_no_longer_described_by_its_sidecar(store, root):
    await store.put_bytes(KEY, b"gzipped bytes", content_type="text/plain")
    path = root / KEY
    path.write_bytes(b"edited by hand, longer")
    info = await store.head(KEY)
    assert info is not None
    assert (info.etag, info.content_type) == (md5(b"edited by hand, longer"), None)


@pytest.mark.gen_test
async def test_a_damaged_sidecar_counts_as_none(store, root):
    await store.put_bytes(KEY, b"data", content_type="text/plain")
    (root / ".meta" / f"{KEY}.json").write_text("{not json")
    info = await store.head(KEY)
    assert info is not None and (info.etag, info.content_type) == (md5(b"data"), None)


@pytest.mark.gen_test
async def test_a_write_never_makes_the_directory_only_its_own_inside_it(root):
    """A directory gone (a volume not mounted) stays gone: writes fail naming it, rather than
    landing on the disk beneath while the heartbeat says all is well."""
    fresh = make_store(root)
    with pytest.raises(StoreUnavailable, match=f"{root}.* does not exist"):
        await fresh.put_bytes(KEY, b"x")
    with pytest.raises(StoreUnavailable, match="does not exist"):
        await fresh.begin_write()
    assert not root.exists()
    root.mkdir()  # there, never ensured: the first write makes .tmp and .meta
    await fresh.put_bytes(KEY, b"x")
    assert (root / KEY).read_bytes() == b"x"
    assert (root / ".tmp").is_dir() and (root / ".meta").is_dir()
    shutil.rmtree(root)  # unmounted while running
    with pytest.raises(StoreUnavailable, match="does not exist"):
        await fresh.put_bytes(KEY, b"y")
    assert not root.exists()
    assert "does not exist" in (await fresh.problem() or "")


# -- keys never lead out of the directory


BAD_KEYS = [
    "",
    "/v1/abs",
    "v1//double",
    "v1/./dot",
    "v1/../up",
    "..",
    "v1/trailing/",
    "v1/back\\slash",
    "v1/nul\x00byte",
    ".tmp/x",
    "v1/.meta/x",
]


@pytest.mark.parametrize("key", BAD_KEYS)
@pytest.mark.gen_test
async def test_a_key_that_could_leave_the_directory_is_a_value_error(store, root, key):
    """Written or named, it is refused; looked up, as S3 would hold it, it is simply not there."""
    for call in (
        lambda: store.put_bytes(key, b"x"),
        lambda: store.copy(KEY, key),
        lambda: store.delete([key]),
        lambda: store.download_url(key, 60),
        lambda: store.upload_url(key, 60),
    ):
        with pytest.raises(ValueError):
            await call()
    assert store.accepts(key) is not None
    assert await store.head(key) is None
    assert not await store.exists(key)
    with pytest.raises(ObjectMissing):
        async with store.open(key):
            pass
    assert files_under(root) == []


@pytest.mark.gen_test
async def test_a_name_longer_than_a_directory_holds_is_refused_and_never_there(store, root):
    await store.put_bytes(KEY, b"x")  # v1/ exists: a lookup below it reaches the long name
    longest = "f" * (directory_module.NAME_MAX - len(".json"))
    for key in (f"v1/{'d' * 256}/{KEY}", f"v1/{longest}x"):
        assert "key too long" in (store.accepts(key) or "")
        assert await store.head(key) is None
        assert not await store.exists(key)
        with pytest.raises(ObjectMissing):
            await read(store, key)
    with pytest.raises(KeyRefused, match="longer than a directory holds"):
        await store.put_bytes(f"v1/{longest}x", b"x")  # its sidecar's name is too long
    assert store.accepts(f"v1/{longest}") is None
    await store.put_bytes(f"v1/{longest}", b"x")
    assert (
        store.accepts(f"v1/{'d/' * 2100}x")
        == "key too long: a path in a directory is at most 4095 bytes"
    )
    assert [f for f in files_under(root) if f.startswith(".tmp")] == []


@pytest.mark.gen_test
async def test_a_key_whose_place_another_object_holds_is_refused(store):
    await store.put_bytes("v1/a/b", b"x")
    with pytest.raises(KeyRefused, match="names a directory"):
        await store.put_bytes("v1/a", b"y")
    with pytest.raises(KeyRefused, match="another object is where"):
        await store.put_bytes("v1/a/b/c", b"y")
    assert await read(store, "v1/a/b") == (await store.head("v1/a/b"), b"x")


@pytest.mark.gen_test
async def test_no_link_below_the_directory_is_followed(store, root, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"not a symbol")
    (root / "v1").mkdir()
    (root / "v1" / "linked").symlink_to(outside)
    (root / "v1" / "file-link").symlink_to(outside / "secret")

    for key in ("v1/linked/secret", "v1/file-link"):
        assert not await store.exists(key)
        assert await store.head(key) is None
        with pytest.raises(ObjectMissing):
            await read(store, key)
    with pytest.raises(ValueError):
        await store.put_bytes("v1/linked/new", b"x")
    await store.delete(["v1/linked/secret"])
    assert [i.key async for i in store.list("")] == []
    assert sorted(p.name for p in outside.iterdir()) == ["secret"]
    assert (outside / "secret").read_bytes() == b"not a symbol"


@pytest.mark.gen_test
async def test_the_directory_itself_may_be_a_link(tmp_path):
    real = tmp_path / "disk" / "symbols"
    real.mkdir(parents=True)
    (tmp_path / "link").symlink_to(real)
    linked = make_store(tmp_path / "link")
    await linked.put_bytes(KEY, b"through the link")
    assert (real / KEY).read_bytes() == b"through the link"
    assert await linked.exists(KEY)


# -- listing, copying, deleting


@pytest.mark.gen_test
async def test_list_walks_in_key_order_and_skips_the_stores_own_files(store, root):
    keys = ["v1/a/x", "v1/a-b", "v1/a.c/y", "v1/b", "v10/c", "pending/t/v1/k"]
    for key in keys:
        await store.put_bytes(key, key.encode())
    (root / "v1" / "a" / "link").symlink_to(root / "v1" / "b")
    listed = [i async for i in store.list("")]
    assert [i.key for i in listed] == sorted(keys)  # "v1/a-b" < "v1/a.c/y" < "v1/a/x"
    assert all(i.etag == md5(i.key.encode()) for i in listed)
    assert [i.key async for i in store.list("v1/")] == ["v1/a-b", "v1/a.c/y", "v1/a/x", "v1/b"]
    assert [i.key async for i in store.list("v1/a")] == ["v1/a-b", "v1/a.c/y", "v1/a/x"]
    assert [i.key async for i in store.list("v1/a/")] == ["v1/a/x"]
    assert [i.key async for i in store.list("v1")] == [k for k in sorted(keys) if k[:2] == "v1"]
    assert [i.key async for i in store.list("nothing/")] == []
    assert [i.key async for i in store.list("v1//")] == []


@pytest.mark.gen_test
async def test_list_reads_no_files_and_gives_the_sidecars_etags(store, root, monkeypatch):
    """A file placed by hand is listed without an ETag ("") rather than hashed: its MD5 would
    cost reading it whole. Its description, when asked for, has one."""
    await store.put_bytes("v1/a/written", b"written")
    (root / "v1" / "b").mkdir()
    (root / "v1" / "b" / "by-hand").write_bytes(b"by hand")
    hashed: list[str] = []
    real = store._computed_etag

    def computed(key: str, st: os.stat_result, fd: int | None) -> str:
        hashed.append(key)
        return real(key, st, fd)

    monkeypatch.setattr(store, "_computed_etag", computed)
    listed = [(i.key, i.etag, i.size) async for i in store.list("v1/")]
    assert listed == [("v1/a/written", md5(b"written"), 7), ("v1/b/by-hand", "", 7)]
    assert hashed == []
    info = await store.head("v1/b/by-hand")
    assert info is not None and info.etag == md5(b"by hand")


@pytest.mark.gen_test
async def test_list_walks_as_it_is_read(store, monkeypatch):
    """A directory is read when the listing reaches it, not all of them before the first."""
    monkeypatch.setattr(directory_module, "LIST_BATCH", 1, raising=False)
    for key in ("v1/a/1", "v1/b/2"):
        await store.put_bytes(key, b"x")
    listing = store.list("v1/")
    assert (await anext(listing)).key == "v1/a/1"
    await store.put_bytes("v1/b/3", b"x")  # in a directory the walk has not read yet
    assert [i.key async for i in listing] == ["v1/b/2", "v1/b/3"]


@pytest.mark.gen_test
async def test_list_leaves_out_the_try_directory_a_location_of_its_own(store, root):
    try_store = DirectoryStore(SymbolSource.parse(f"file://{root}/try"), SECRET)
    await try_store.ensure()
    await try_store.put_bytes(KEY, b"try")
    await store.put_bytes(KEY, b"regular")
    assert [i.key async for i in store.list("")] == [KEY]
    assert [i.key async for i in try_store.list("")] == [KEY]
    assert (root / "try" / KEY).read_bytes() == b"try"


@pytest.mark.gen_test
async def test_no_object_of_a_location_inside_this_one_is_this_ones(root):
    """The try directory of a public directory is a private location of its own: its files are
    not the public one's, to read, copy, replace or delete."""
    public = make_store(root, public=True)
    await public.ensure()
    inner = DirectoryStore(SymbolSource.parse(f"file://{root}/try"), SECRET)
    await inner.ensure()
    await inner.put_bytes(KEY, b"private")
    crossing = f"try/{KEY}"
    assert await public.head(crossing) is None
    assert not await public.exists(crossing)
    with pytest.raises(ObjectMissing):
        await read(public, crossing)
    with pytest.raises(ObjectMissing):
        await public.copy(crossing, "v1/copied")
    with pytest.raises(ValueError):
        await public.put_bytes(crossing, b"replaced")
    await public.delete([crossing])
    assert (root / "try" / KEY).read_bytes() == b"private"
    assert await read(inner, KEY) == (await inner.head(KEY), b"private")
    # A subdirectory without a .meta of its own is this location's.
    await public.put_bytes(f"tryout/{KEY}", b"public")
    assert await public.exists(f"tryout/{KEY}")


@pytest.mark.gen_test
async def test_copy_links_the_bytes_and_keeps_type_encoding_and_metadata(store, root, tmp_path):
    source = tmp_path / "f"
    source.write_bytes(b"gz")
    await store.put_file(KEY, source, content_encoding="gzip", metadata={"a": "1"})
    await store.copy(KEY, "v1/copy/xul.sym")
    original, copied = await store.head(KEY), await store.head("v1/copy/xul.sym")
    assert original is not None and copied is not None
    assert (copied.etag, copied.content_encoding, dict(copied.metadata)) == (
        original.etag,
        "gzip",
        {"a": "1"},
    )
    assert (root / KEY).stat().st_ino == (root / "v1/copy/xul.sym").stat().st_ino
    # Replacing the original leaves the copy alone.
    await store.put_bytes(KEY, b"new")
    assert (await read(store, "v1/copy/xul.sym"))[1] == b"gz"
    assert files_under(root / ".tmp") == []


@pytest.mark.gen_test
async def test_copy_reads_the_bytes_where_files_cannot_be_linked(store, root, monkeypatch):
    await store.put_bytes(KEY, b"bytes", content_type="text/plain")

    def no_links(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(directory_module.os, "link", no_links)
    await store.copy(KEY, "v1/copy")
    info, body = await read(store, "v1/copy")
    assert (body, info.content_type, info.etag) == (b"bytes", "text/plain", md5(b"bytes"))
    assert (root / KEY).stat().st_ino != (root / "v1/copy").stat().st_ino


@pytest.mark.gen_test
async def test_delete_removes_data_and_sidecar_and_prunes_empty_directories(store, root):
    await store.put_bytes("v1/a/b/c/one", b"1")
    await store.put_bytes("v1/a/two", b"2")
    await store.delete(["v1/a/b/c/one", "v1/never/there"])
    assert files_under(root) == [".meta/.lock", ".meta/v1/a/two.json", "v1/a/two"]
    assert not (root / "v1/a/b").exists() and not (root / ".meta/v1/a/b").exists()
    await store.delete(["v1/a/two"])
    assert sorted(p.name for p in root.iterdir()) == [".meta", ".tmp"]
    assert [p.name for p in (root / ".meta").iterdir()] == [".lock"]
    assert not await store.exists("v1/a/two")


@pytest.mark.gen_test
async def test_deleting_keys_whose_directories_one_another_empties(store, root):
    # The first key's directory is kept for the second key's, which then prunes it.
    await store.put_bytes("pending/t/v1/libfoo.so", b"1")
    await store.put_bytes("pending/t/v1/win/foo.pdb", b"2")
    await store.delete(["pending/t/v1/libfoo.so", "pending/t/v1/win/foo.pdb"])
    assert sorted(p.name for p in root.iterdir()) == [".meta", ".tmp"]
    assert [p.name for p in (root / ".meta").iterdir()] == [".lock"]


@pytest.mark.gen_test
async def test_a_file_placed_by_hand_in_a_directory_never_written_to_can_be_deleted(root):
    (root / "v1").mkdir(parents=True)
    (root / "v1" / "f").write_bytes(b"x")
    await make_store(root).delete(["v1/f"])
    assert not (root / "v1").exists()


# -- whole or absent, and durable when visible


class Recorder:
    """Records the store's renames and fsyncs as they happen; raises at one of them if asked."""

    def __init__(self, monkeypatch: Any, store: DirectoryStore, fail_at: str | None = None):
        self.steps: list[str] = []
        self.fail_at = fail_at
        self.store = store
        real_rename, real_fsync = store._rename, os.fsync

        def rename(source: str, target: str) -> None:
            self.step(f"rename {self.name(target)}")
            real_rename(source, target)

        def fsync(fd: int) -> None:
            path = os.readlink(f"/proc/self/fd/{fd}")
            self.step(f"fsync {'dir ' if os.path.isdir(path) else ''}{self.name(path)}")
            real_fsync(fd)

        monkeypatch.setattr(store, "_rename", rename)
        monkeypatch.setattr(directory_module.os, "fsync", fsync)

    def name(self, path: str) -> str:
        relative = os.path.relpath(path, self.store.root)
        return "tmp" if relative.startswith(".tmp/") else relative

    def step(self, name: str) -> None:
        if name == self.fail_at:
            raise OSError(errno.EIO, f"injected at {name}")
        self.steps.append(name)


@pytest.mark.gen_test
async def test_a_put_writes_data_then_sidecar_then_renames_sidecar_then_data(store, monkeypatch):
    recorder = Recorder(monkeypatch, store)
    await store.put_bytes(KEY, b"x")
    steps = recorder.steps
    sidecar, data = steps.index(f"rename .meta/{KEY}.json"), steps.index(f"rename {KEY}")
    assert steps[:sidecar] == ["fsync tmp", "fsync tmp"]  # the data, then the sidecar
    # The sidecar's name lasts before the data's can: never data without its description. The
    # directories made for it last too.
    assert sorted(steps[sidecar + 1 : data]) == [
        "fsync dir .meta",
        "fsync dir .meta/v1",
        "fsync dir .meta/v1/xul.pdb",
        "fsync dir .meta/v1/xul.pdb/44E4EC8C2F41492B9369D6B9A059577C2",
    ]
    assert sorted(steps[data + 1 :]) == [
        "fsync dir .",
        "fsync dir .tmp",
        "fsync dir v1",
        "fsync dir v1/xul.pdb",
        "fsync dir v1/xul.pdb/44E4EC8C2F41492B9369D6B9A059577C2",
    ]
    # A second object in the same directories needs no more than those two.
    recorder.steps = []
    await store.put_bytes(KEY + ".2", b"y")
    assert recorder.steps[2:] == [
        f"rename .meta/{KEY}.2.json",
        "fsync dir .meta/v1/xul.pdb/44E4EC8C2F41492B9369D6B9A059577C2",
        f"rename {KEY}.2",
        "fsync dir v1/xul.pdb/44E4EC8C2F41492B9369D6B9A059577C2",
        "fsync dir .tmp",
    ]


@pytest.mark.parametrize(
    "fail_at",
    ["fsync tmp", f"rename .meta/{KEY}.json", "fsync dir .meta", f"rename {KEY}", "fsync dir v1"],
)
@pytest.mark.gen_test
async def test_a_failure_at_any_step_of_a_first_put_leaves_no_visible_object(
    store, root, monkeypatch, fail_at
):
    Recorder(monkeypatch, store, fail_at)
    with pytest.raises(StoreUnavailable, match="injected"):
        await store.put_bytes(KEY, b"x")
    monkeypatch.undo()
    if fail_at == "fsync dir v1":  # after the last rename: there, whole, durable once synced
        assert await read(store, KEY) == (await store.head(KEY), b"x")
        return
    assert await store.head(KEY) is None and not await store.exists(KEY)
    assert [f for f in files_under(root) if f != ".meta/.lock"] == []


@pytest.mark.gen_test
async def test_a_put_that_dies_between_its_renames_leaves_the_old_object_described(
    store, root, monkeypatch
):
    await store.put_bytes(KEY, b"old", content_type="text/old")
    Recorder(monkeypatch, store, f"rename {KEY}")
    with pytest.raises(StoreUnavailable):
        await store.put_bytes(KEY, b"newer", content_type="text/new")
    monkeypatch.undo()
    # The new sidecar is in place (as after a crash there), and still describes the old data.
    assert json.loads((root / ".meta" / f"{KEY}.json").read_text())["content_type"] == "text/new"
    info, body = await read(store, KEY)
    assert (body, info.content_type, info.etag) == (b"old", "text/old", md5(b"old"))
    await store.put_bytes(KEY, b"newest", content_type="text/newest")
    info, body = await read(store, KEY)
    assert (body, info.content_type) == (b"newest", "text/newest")


@pytest.fixture
def same_instant(monkeypatch: Any) -> None:
    """Every file the store writes gets one modification time, to the nanosecond: writes of
    one clock tick, which the file system may not tell apart."""
    real_finish = directory_module.TmpFile.finish

    def finish(self: directory_module.TmpFile) -> os.stat_result:
        assert self.fd is not None
        os.utime(self.fd, ns=(1_700_000_000_123_456_789, 1_700_000_000_123_456_789))
        return real_finish(self)

    monkeypatch.setattr(directory_module.TmpFile, "finish", finish)


@pytest.mark.gen_test
async def test_a_same_size_rewrite_dying_between_its_renames_leaves_the_old_bytes_described(
    store, monkeypatch, same_instant
):
    await store.put_bytes(KEY, b"AAAA", content_type="text/old")
    Recorder(monkeypatch, store, f"rename {KEY}")
    with pytest.raises(StoreUnavailable):
        await store.put_bytes(KEY, b"BBBB", content_type="text/new")
    after_restart = make_store(Path(store.root))
    info, body = await read(after_restart, KEY)
    assert (body, info.etag, info.content_type) == (b"AAAA", md5(b"AAAA"), "text/old")


@pytest.mark.parametrize("writes", [1, 2])
@pytest.mark.gen_test
async def test_a_reader_of_a_file_replaced_as_it_opens_it_gets_that_files_description(
    store, monkeypatch, same_instant, writes
):
    """Replaced by same-size files of the same instant between the reader's open and its
    reading the sidecar: the file it holds is described as it is, not as its replacement; once
    two writes have dropped its description, the current file is read, with its own."""
    await store.put_bytes(KEY, b"AAAA", content_type="text/old")
    real_read, raced = store._read_sidecar, list[bool]()

    def replaced_meanwhile(key: str) -> Any:
        if not raced:
            raced.append(True)
            for i in range(writes):
                store._put_bytes_sync(KEY, b"BCDE"[i : i + 1] * 4, "text/new")
        return real_read(key)

    monkeypatch.setattr(store, "_read_sidecar", replaced_meanwhile)
    info, body = await read(store, KEY)
    assert raced
    if writes == 1:
        assert (body, info.etag, info.content_type) == (b"AAAA", md5(b"AAAA"), "text/old")
    else:
        assert (body, info.etag, info.content_type) == (b"CCCC", md5(b"CCCC"), "text/new")


@pytest.mark.gen_test
async def test_a_copy_with_its_times_keeps_its_descriptions_and_an_edited_one_does_not(
    store, root, tmp_path
):
    """A backup restored (new inodes, same times) is still described; a file changed since is
    not, even at its old size."""
    await store.put_bytes(KEY, b"gzipped", content_type="text/plain")
    restored = tmp_path / "restored"
    shutil.copytree(root, restored)  # copies modification times to the nanosecond
    info = await make_store(restored).head(KEY)
    assert info is not None and (info.etag, info.content_type) == (md5(b"gzipped"), "text/plain")
    (restored / KEY).unlink()
    (restored / KEY).write_bytes(b"edited!")
    info = await make_store(restored).head(KEY)
    assert info is not None and (info.etag, info.content_type) == (md5(b"edited!"), None)


@pytest.mark.gen_test
async def test_a_failed_write_leaves_nothing_behind(store, root, tmp_path, monkeypatch):
    source = tmp_path / "big"
    source.write_bytes(os.urandom(3 * CHUNK))
    real_write, writes = os.write, []

    def full_disk(fd: int, data: Any) -> int:
        writes.append(len(data))
        if len(writes) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(directory_module.os, "write", full_disk)
    with pytest.raises(StoreUnavailable, match="No space left"):
        await store.put_file(KEY, source)
    monkeypatch.undo()
    assert files_under(root) == []
    assert max(writes) <= CHUNK  # read and written a chunk at a time


@pytest.mark.gen_test
async def test_a_reader_overtaken_by_two_writers_asks_again_under_the_lock(store, monkeypatch):
    await store.put_bytes(KEY, b"first", content_type="text/first")
    real_read, raced = store._read_sidecar, list[bool]()

    def two_writers_between_stat_and_sidecar(key: str) -> Any:
        if not raced:  # after the reader's stat, before it reads the sidecar
            raced.append(True)
            store._put_bytes_sync(KEY, b"second", "text/second")
            store._put_bytes_sync(KEY, b"third!", "text/third")
        return real_read(key)

    monkeypatch.setattr(store, "_read_sidecar", two_writers_between_stat_and_sidecar)
    info = await store.head(KEY)
    assert info is not None and raced
    assert (info.size, info.etag, info.content_type) == (6, md5(b"third!"), "text/third")


@pytest.mark.gen_test(timeout=60)
async def test_concurrent_puts_of_one_key_end_with_one_whole_object(store, root):
    contents = {f"text/v{i}": os.urandom(CHUNK // 2 + i) for i in range(12)}
    seen: list[tuple[ObjectInfo, bytes]] = []
    writing = True

    async def reader() -> None:
        while writing:
            with suppress(ObjectMissing):
                seen.append(await read(store, KEY))
            await asyncio.sleep(0)

    readers = [asyncio.ensure_future(reader()) for _ in range(3)]
    for _ in range(3):
        await asyncio.gather(
            *(store.put_bytes(KEY, data, content_type=t) for t, data in contents.items())
        )
    writing = False
    await asyncio.gather(*readers)

    info, body = await read(store, KEY)
    assert contents[info.content_type or ""] == body and info.etag == md5(body)
    # Every read saw one writer's bytes with that writer's description.
    assert seen and all(contents[i.content_type or ""] == b and i.etag == md5(b) for i, b in seen)
    assert files_under(root / ".tmp") == []


def test_a_file_replaced_twice_as_it_is_opened_is_read_with_its_own_description(store, monkeypatch):
    """Two writers replacing the key between a reader's open and its look at the sidecar drop
    the opened file's description: the reader then reads the current file instead."""
    versions = {f"text/v{i}": f"version {i} ".encode() * (i + 1) for i in range(3)}
    store._put_bytes_sync(KEY, versions["text/v0"], "text/v0")
    real = DirectoryStore._crosses_location
    replaced: list[bool] = []

    def replacing(self: DirectoryStore, key: str) -> bool:
        if not replaced:  # between the reader's open and its description
            replaced.append(True)
            store._put_bytes_sync(KEY, versions["text/v1"], "text/v1")
            store._put_bytes_sync(KEY, versions["text/v2"], "text/v2")
        return real(self, key)

    monkeypatch.setattr(DirectoryStore, "_crosses_location", replacing)
    fd, info = store._open_sync(KEY)
    try:
        body = os.read(fd, 1 << 16)
    finally:
        os.close(fd)
    assert replaced
    assert info.content_type is not None and versions[info.content_type] == body
    assert info.etag == md5(body)


# -- the location as a whole


@pytest.mark.gen_test
async def test_ensure_makes_the_directory_and_sweeps_stale_temporary_files(root):
    fresh = make_store(root)
    await fresh.ensure()
    assert sorted(p.name for p in root.iterdir()) == [".meta", ".tmp"]
    stale, recent = root / ".tmp" / "stale", root / ".tmp" / "recent"
    stale.write_bytes(b"left by a dead writer")
    recent.write_bytes(b"being written")
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))
    await fresh.ensure()
    assert sorted(p.name for p in (root / ".tmp").iterdir()) == ["recent"]


@pytest.mark.gen_test
async def test_a_copy_under_way_of_an_old_object_is_not_swept(store, root):
    """A copy hard-links its source into .tmp, so the link has the object's old modification
    time; a start meanwhile (another process) must not take it for a dead writer's file."""
    await store.put_bytes("v1/old.sym", b"written long ago")
    two_hours_ago = time.time() - 7200
    os.utime(root / "v1" / "old.sym", (two_hours_ago, two_hours_ago))
    linked = root / ".tmp" / "copy-under-way"
    os.link(root / "v1" / "old.sym", linked)
    await store.ensure()
    assert linked.exists()


@pytest.mark.gen_test
async def test_problem_says_why_the_directory_is_not_usable(root, tmp_path):
    assert "does not exist" in (await make_store(root).problem() or "")
    root.write_bytes(b"a file")
    assert "is not a directory" in (await make_store(root).problem() or "")
    root.unlink()
    root.mkdir()
    assert await make_store(root).problem() is None
    assert "SECRET_KEY" in (await make_store(root, secret=None).problem() or "")
    assert await make_store(root, public=True, secret=None).problem() is None
    if os.geteuid() != 0:  # root writes anywhere
        root.chmod(0o555)
        try:
            assert "not writable" in (await make_store(root).problem() or "")
            assert await make_store(root).problem(read_only_public=True) is None
        finally:
            root.chmod(0o755)


# -- URLs on this server


@pytest.mark.gen_test
async def test_a_public_directory_is_downloaded_from_an_unsigned_path(root):
    public = make_store(root, public=True)
    url = await public.download_url("v1/a b+c/x.sym", 60)
    assert url == f"/storage/{public.source.location_id}/v1/a%20b%2Bc/x.sym"


@pytest.mark.gen_test
async def test_a_private_directory_signs_its_download_urls(store):
    url = urlsplit(await store.download_url(KEY, 60))
    assert url.path == f"/storage/{store.source.location_id}/{KEY}"
    signer, now = UrlSigner(SECRET), time.time()
    signer.verify_get(store.source.location_id, KEY, url.query, now)
    with pytest.raises(SignatureInvalid, match="expired"):
        signer.verify_get(store.source.location_id, KEY, url.query, now + 61)
    with pytest.raises(SignatureInvalid, match="does not match"):
        signer.verify_get(store.source.location_id, "v1/other", url.query, now)
    with pytest.raises(SignatureInvalid, match="does not match"):
        signer.verify_get("0" * 16, KEY, url.query, now)
    with pytest.raises(SignatureInvalid, match="does not match"):
        UrlSigner("another key").verify_get(store.source.location_id, KEY, url.query, now)
    later = url.query.replace("expires=", "expires=1")
    with pytest.raises(SignatureInvalid, match="does not match"):
        signer.verify_get(store.source.location_id, KEY, later, now)
    with pytest.raises(SignatureInvalid, match="not signed"):
        signer.verify_get(store.source.location_id, KEY, "", now)
    with pytest.raises(SignatureInvalid, match="more than once"):
        signer.verify_get(store.source.location_id, KEY, url.query + "&expires=1", now)
    with pytest.raises(StoreUnavailable, match="SECRET_KEY"):
        await make_store(Path(store.root), secret=None).download_url(KEY, 60)


@pytest.mark.gen_test
async def test_an_upload_url_signs_what_is_stored_and_the_largest_body(store):
    meta = {"original_size": "10", "original_md5_hash": "ab" * 16}
    url, headers = await store.upload_url(
        KEY, 60, content_type="text/plain; charset=utf-8", content_encoding="gzip", metadata=meta
    )
    assert headers == {}  # what is stored is in the signed query, not in headers
    parts = urlsplit(url)
    assert parts.path == store.url_path(KEY)
    signer, now, location = UrlSigner(SECRET), time.time(), store.source.location_id
    terms = signer.verify_put(location, KEY, parts.query, now)
    assert terms == PutTerms(store.max_put_size, "text/plain; charset=utf-8", "gzip", meta)
    with pytest.raises(SignatureInvalid):
        signer.verify_get(location, KEY, parts.query, now)  # a PUT URL is no GET URL
    for old, new in [
        ("content_encoding=gzip", "content_encoding=br"),
        ("content_encoding=gzip&", ""),
        ("meta-original_size=10", "meta-original_size=11"),
        (f"max_size={store.max_put_size}", f"max_size={store.max_put_size + 1}"),
        ("text%2Fplain", "text%2Fhtml"),
    ]:
        assert old in parts.query
        with pytest.raises(SignatureInvalid, match="does not match"):
            signer.verify_put(location, KEY, parts.query.replace(old, new), now)
    with pytest.raises(SignatureInvalid, match="does not match"):
        signer.verify_put(location, KEY, parts.query + "&meta-extra=1", now)
    small, _ = await store.upload_url(KEY, 60, max_size=5)
    assert signer.verify_put(location, KEY, urlsplit(small).query, now).max_size == 5
    with pytest.raises(SignatureInvalid, match="expired"):
        signer.verify_put(location, KEY, parts.query, now + 61)
    assert signing.SIGNATURE in parts.query
