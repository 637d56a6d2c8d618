"""``symbolon storage copy``: a symbol store moved to another location, on the real backends."""

from __future__ import annotations

import asyncio
import gzip
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import pytest

from symbolon.conf import Settings
from symbolon.storage.copy import (
    CopyOptions,
    CopyRefused,
    ObjectDone,
    Outcome,
    StorePair,
    Totals,
    copy_pairs,
    copy_store,
    refuse_overlap,
    routes,
)
from symbolon.storage.s3 import S3Clients
from symbolon.storage.sources import SymbolSource
from symbolon.storage.store import StoreUnavailable, SymbolStore
from symbolon.storage.stores import Stores
from tests.cli import env_for, invoke
from tests.conftest import s3_client, s3_endpoint

BIG = 3 * 1024 * 1024 + 17  # several of the S3 store's read chunks


def new_bucket(settings: Settings) -> str:
    name = f"copy-{uuid.uuid4().hex[:12]}"
    s3_client(s3_endpoint(settings)).create_bucket(Bucket=name)
    return name


def bucket_url(settings: Settings, bucket: str, prefix: str = "") -> str:
    return f"{s3_endpoint(settings)}/{bucket}" + (f"/{prefix}" if prefix else "")


def put(settings: Settings, bucket: str, key: str, body: bytes, **extra: Any) -> None:
    s3_client(s3_endpoint(settings)).put_object(Bucket=bucket, Key=key, Body=body, **extra)


def read(settings: Settings, bucket: str, key: str) -> dict[str, Any]:
    got = s3_client(s3_endpoint(settings)).get_object(Bucket=bucket, Key=key)
    return {
        "body": got["Body"].read(),
        "type": got.get("ContentType"),
        "encoding": got.get("ContentEncoding"),
        "metadata": got.get("Metadata"),
    }


def keys_of(settings: Settings, bucket: str) -> list[str]:
    listed = s3_client(s3_endpoint(settings)).list_objects_v2(Bucket=bucket)
    return [item["Key"] for item in listed.get("Contents", [])]


def symbol_key(name: str) -> str:
    return f"{name}.pdb/{uuid.uuid4().hex.upper()}1/{name}.sym"


def fill(settings: Settings, bucket: str) -> dict[str, dict[str, Any]]:
    """A store as uploads leave it: gzipped symbols with metadata, try and pending objects, a
    large file; returns what each key holds."""
    sym = gzip.compress(b"MODULE windows x86 ABC xul.pdb\n" * 100)
    objects: dict[str, dict[str, Any]] = {
        f"v1/{symbol_key('xul')}": {
            "body": sym,
            "type": "text/plain",
            "encoding": "gzip",
            "metadata": {"original_size": "3100", "original_md5_hash": "abc"},
        },
        f"v1/{symbol_key('big')}": {
            "body": os.urandom(BIG),
            "type": "application/octet-stream",
            "encoding": None,
            "metadata": {},
        },
        f"try/v1/{symbol_key('trial')}": {
            "body": b"MODULE try",
            "type": "text/plain",
            "encoding": None,
            "metadata": {"upload": "7"},
        },
        f"pending/tok123/v1/{symbol_key('later')}": {
            "body": b"MODULE pending",
            "type": "text/plain",
            "encoding": None,
            "metadata": {},
        },
    }
    for key, o in objects.items():
        extra: dict[str, Any] = {"ContentType": o["type"], "Metadata": o["metadata"]}
        if o["encoding"]:
            extra["ContentEncoding"] = o["encoding"]
        put(settings, bucket, key, o["body"], **extra)
    return objects


@asynccontextmanager
async def opened_stores(settings: Settings) -> AsyncIterator[Stores]:
    s3 = S3Clients(settings)
    stores = Stores(settings, s3)
    try:
        yield stores
    finally:
        await stores.close()
        await s3.close()


def location(settings: Settings, url: str) -> SymbolSource:
    return SymbolSource.parse(url, settings.symbol_file_prefix)


class Faulty:
    """A real store with one fault injected into its writes; everything else passes through."""

    def __init__(self, store: SymbolStore, fault: Any):
        self._store = store
        self._fault = fault
        self.source = store.source
        self.puts = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def put_file(self, key: str, path: Path, **kwargs: Any) -> None:
        self.puts += 1
        await self._fault(self._store, self.puts, key, path, **kwargs)


def faulty(store: SymbolStore, fault: Any) -> SymbolStore:
    return cast(SymbolStore, Faulty(store, fault))


# -- S3 to S3 ---------------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=120)
async def test_every_object_is_copied_with_its_type_encoding_and_metadata(live_settings):
    src_bucket, dst_bucket = new_bucket(live_settings), new_bucket(live_settings)
    objects = fill(live_settings, src_bucket)
    reports: list[Totals] = []
    async with opened_stores(live_settings) as stores:
        src = stores.at(location(live_settings, bucket_url(live_settings, src_bucket)))
        dst = stores.at(location(live_settings, bucket_url(live_settings, dst_bucket)))
        result = await copy_store(
            src, dst, CopyOptions(jobs=2, progress_interval=0.001), on_progress=reports.append
        )

    assert sorted(keys_of(live_settings, dst_bucket)) == sorted(objects)
    for key, wanted in objects.items():
        assert read(live_settings, dst_bucket, key) == wanted, key
    t = result.totals
    assert (t.copied, t.skipped, t.failed, t.listed) == (4, 0, 0, 4)
    assert t.bytes_copied == sum(len(o["body"]) for o in objects.values())
    # Reports while it works, not only at the end.
    assert any(r.done < 4 for r in reports)
    assert reports[-1].done == 4 and reports[-1].listing_done


@pytest.mark.gen_test(timeout=120)
async def test_a_rerun_skips_what_is_there_and_copies_an_object_that_differs(live_settings):
    src_bucket, dst_bucket = new_bucket(live_settings), new_bucket(live_settings)
    objects = fill(live_settings, src_bucket)
    changed = next(k for k in objects if k.startswith("try/"))
    async with opened_stores(live_settings) as stores:
        src = stores.at(location(live_settings, bucket_url(live_settings, src_bucket)))
        dst = stores.at(location(live_settings, bucket_url(live_settings, dst_bucket)))
        await copy_store(src, dst)
        # Same size, other bytes: only the MD5 tells them apart.
        body = objects[changed]["body"]
        put(live_settings, dst_bucket, changed, bytes(reversed(body)))
        again = await copy_store(src, dst)

    assert (again.totals.copied, again.totals.skipped, again.totals.failed) == (1, 3, 0)
    assert read(live_settings, dst_bucket, changed)["body"] == body


@pytest.mark.gen_test(timeout=120)
async def test_an_interrupted_copy_goes_on_where_it_stopped(live_settings):
    src_bucket, dst_bucket = new_bucket(live_settings), new_bucket(live_settings)
    objects = {f"v1/{symbol_key(f'm{i}')}": f"MODULE {i}".encode() * 50 for i in range(6)}
    for key, body in objects.items():
        put(live_settings, src_bucket, key, body)

    async def outage_after_two(store: SymbolStore, n: int, key: str, path: Path, **kw: Any):
        if n > 2:
            raise StoreUnavailable(f"{store.source.url}: connection reset")
        await store.put_file(key, path, **kw)

    failed: list[ObjectDone] = []
    async with opened_stores(live_settings) as stores:
        src = stores.at(location(live_settings, bucket_url(live_settings, src_bucket)))
        dst = stores.at(location(live_settings, bucket_url(live_settings, dst_bucket)))
        first = await copy_store(
            src,
            faulty(dst, outage_after_two),
            CopyOptions(jobs=1),
            on_object=lambda d: failed.append(d) if d.outcome is Outcome.FAILED else None,
        )
        assert (first.totals.copied, first.totals.failed) == (2, 4)
        assert {d.key for d in failed} == set(objects) - set(keys_of(live_settings, dst_bucket))
        assert all("connection reset" in d.message for d in failed)

        second = await copy_store(src, dst, CopyOptions(jobs=1))

    assert (second.totals.copied, second.totals.skipped, second.totals.failed) == (4, 2, 0)
    for key, body in objects.items():
        assert read(live_settings, dst_bucket, key)["body"] == body


@pytest.mark.gen_test(timeout=120)
async def test_a_cancelled_copy_leaves_no_temporary_file_and_resumes(live_settings, tmp_path):
    src_bucket, dst_bucket = new_bucket(live_settings), new_bucket(live_settings)
    objects = {f"v1/{symbol_key(f'c{i}')}": os.urandom(200_000) for i in range(8)}
    for key, body in objects.items():
        put(live_settings, src_bucket, key, body)
    tmp = tmp_path / "through"
    tmp.mkdir()
    options = CopyOptions(jobs=2, tmp_dir=tmp)

    async with opened_stores(live_settings) as stores:
        src = stores.at(location(live_settings, bucket_url(live_settings, src_bucket)))
        dst = stores.at(location(live_settings, bucket_url(live_settings, dst_bucket)))
        done: list[ObjectDone] = []

        def interrupt_after_three(d: ObjectDone) -> None:
            done.append(d)
            if len(done) == 3:
                task.cancel()  # as Ctrl-C stops the command

        task = asyncio.ensure_future(copy_store(src, dst, options, on_object=interrupt_after_three))
        with pytest.raises(asyncio.CancelledError):
            await task
        assert list(tmp.iterdir()) == []
        there = len(keys_of(live_settings, dst_bucket))
        assert 3 <= there < len(objects)

        rest = await copy_store(src, dst, options)

    assert rest.totals.skipped == there and rest.totals.copied == len(objects) - there
    assert sorted(keys_of(live_settings, dst_bucket)) == sorted(objects)


@pytest.mark.gen_test(timeout=120)
async def test_a_size_that_differs_after_writing_is_a_failure_naming_the_key(live_settings):
    src_bucket, dst_bucket = new_bucket(live_settings), new_bucket(live_settings)
    good, bad = f"v1/{symbol_key('good')}", f"v1/{symbol_key('bad')}"
    put(live_settings, src_bucket, good, b"MODULE good")
    put(live_settings, src_bucket, bad, b"MODULE bad")

    async def truncating(store: SymbolStore, n: int, key: str, path: Path, **kw: Any):
        if key == bad:
            short = path.with_suffix(".short")
            await asyncio.to_thread(lambda: short.write_bytes(path.read_bytes()[:-1]))
            try:
                await store.put_file(key, short, **kw)
            finally:
                await asyncio.to_thread(short.unlink)
            return
        await store.put_file(key, path, **kw)

    async with opened_stores(live_settings) as stores:
        src = stores.at(location(live_settings, bucket_url(live_settings, src_bucket)))
        dst = stores.at(location(live_settings, bucket_url(live_settings, dst_bucket)))
        result = await copy_store(src, faulty(dst, truncating))

    assert (result.totals.copied, result.totals.failed) == (1, 1)
    (failure,) = result.failures
    assert failure.key == bad
    assert "9 bytes in the destination after writing, not 10" in failure.message


@pytest.mark.gen_test(timeout=60)
async def test_keys_move_from_the_source_prefix_to_the_destination_prefix(live_settings):
    src_bucket, dst_bucket = new_bucket(live_settings), new_bucket(live_settings)
    key = symbol_key("moved")
    put(live_settings, src_bucket, f"old/v1/{key}", b"MODULE moved")
    put(live_settings, src_bucket, f"elsewhere/v1/{key}", b"not under the location")
    async with opened_stores(live_settings) as stores:
        src = stores.at(location(live_settings, bucket_url(live_settings, src_bucket, "old")))
        dst = stores.at(location(live_settings, bucket_url(live_settings, dst_bucket, "new")))
        result = await copy_store(src, dst)

    assert result.totals.copied == 1
    assert keys_of(live_settings, dst_bucket) == [f"new/v1/{key}"]


def test_a_location_and_its_try_location_are_copied_each_to_its_counterpart(live_settings):
    def source(url: str) -> SymbolSource:
        return location(live_settings, url)

    def plan(src: str, dst: str) -> list[tuple[str, str, tuple[str, ...]]]:
        return [(r.src.url, r.dst.url, r.exclude) for r in routes(source(src), source(dst), "v1")]

    # The try location inside a whole bucket or a directory is left to its own route.
    assert plan("file:///srv/symbols", "https://s3.us-west-2.amazonaws.com/b") == [
        ("file:///srv/symbols", "https://s3.us-west-2.amazonaws.com/b", ("try/",)),
        ("file:///srv/symbols/try", "https://s3.us-west-2.amazonaws.com/b/try", ()),
    ]
    assert plan("http://127.0.0.1:9000/b", "file:///srv/symbols") == [
        ("http://127.0.0.1:9000/b", "file:///srv/symbols", ("try/",)),
        ("http://127.0.0.1:9000/b/try", "file:///srv/symbols/try", ()),
    ]
    # A prefixed location's try location is beside it, not inside.
    assert plan("http://127.0.0.1:9000/b/old", "http://127.0.0.1:9000/c/new") == [
        ("http://127.0.0.1:9000/b/old", "http://127.0.0.1:9000/c/new", ()),
        ("http://127.0.0.1:9000/b/try/old", "http://127.0.0.1:9000/c/try/new", ()),
    ]
    # Copying symbols into the source's own try location would copy them again from there.
    with pytest.raises(CopyRefused):
        routes(source("http://h:1/b/p"), source("http://h:1/b/try/p"), "v1")


def test_the_same_or_overlapping_locations_are_refused(live_settings):
    def source(url: str) -> SymbolSource:
        return location(live_settings, url)

    refused = [
        ("http://127.0.0.1:9000/b", "http://127.0.0.1:9000/b/"),
        ("http://127.0.0.1:9000/b", "http://127.0.0.1:9000/b?access=public"),
        ("http://127.0.0.1:9000/b", "http://127.0.0.1:9000/b/pfx"),
        ("https://s3-us-west-2.amazonaws.com/b/p", "https://s3.us-east-1.amazonaws.com/b/p/q"),
        ("file:///srv/symbols", "file:///srv/symbols/"),
        ("file:///srv/symbols", "file:///srv/symbols/try"),
    ]
    for a, b in refused:
        for src, dst in ((a, b), (b, a)):
            with pytest.raises(CopyRefused):
                refuse_overlap(source(src), source(dst))
    allowed = [
        ("http://127.0.0.1:9000/b", "http://127.0.0.1:9001/b"),
        ("http://127.0.0.1:9000/b/p", "http://127.0.0.1:9000/b/q"),
        ("http://127.0.0.1:9000/b/p", "http://127.0.0.1:9000/b/pq"),
        ("file:///srv/symbols", "file:///srv/symbols2"),
        ("file:///srv/symbols", "http://127.0.0.1:9000/symbols"),
    ]
    for src, dst in allowed:
        refuse_overlap(source(src), source(dst))


# -- the command ------------------------------------------------------------------------------


def test_the_command_copies_and_reports_progress_and_a_summary(live_settings):
    src_bucket, dst_bucket = new_bucket(live_settings), new_bucket(live_settings)
    objects = fill(live_settings, src_bucket)
    src, dst = bucket_url(live_settings, src_bucket), bucket_url(live_settings, dst_bucket)
    env = env_for(live_settings)

    result = invoke("storage", "copy", src, dst, "--jobs", "2", env=env)
    assert result.returncode == 0, result.stderr
    assert "4/4 objects" in result.stderr and "MB/s" in result.stderr
    assert "copied 4 object(s)" in result.stdout
    assert "skipped 0" in result.stdout and "failed 0" in result.stdout
    assert "MB/s" in result.stdout
    for key, wanted in objects.items():
        assert read(live_settings, dst_bucket, key) == wanted

    again = invoke("storage", "copy", src, dst, env=env)
    assert again.returncode == 0, again.stderr
    assert "copied 0 object(s)" in again.stdout and "skipped 4" in again.stdout


def test_dry_run_lists_and_prefix_narrows(live_settings):
    src_bucket, dst_bucket = new_bucket(live_settings), new_bucket(live_settings)
    objects = fill(live_settings, src_bucket)
    src, dst = bucket_url(live_settings, src_bucket), bucket_url(live_settings, dst_bucket)
    env = env_for(live_settings)

    dry = invoke("storage", "copy", src, dst, "--dry-run", env=env)
    assert dry.returncode == 0, dry.stderr
    listed = {line.split("\t")[0] for line in dry.stdout.splitlines() if "\t" in line}
    assert listed == set(objects)
    assert "would copy 4 object(s)" in dry.stdout
    assert keys_of(live_settings, dst_bucket) == []

    narrowed = invoke("storage", "copy", src, dst, "--prefix", "pending/", env=env)
    assert narrowed.returncode == 0, narrowed.stderr
    assert keys_of(live_settings, dst_bucket) == [k for k in objects if k.startswith("pending/")]


def test_the_command_refuses_the_same_location(live_settings):
    bucket = new_bucket(live_settings)
    put(live_settings, bucket, "v1/a", b"x")
    url = bucket_url(live_settings, bucket)
    result = invoke("storage", "copy", url, url + "/", env=env_for(live_settings))
    assert result.returncode == 2
    assert "same location" in result.stderr


def test_the_command_fails_for_a_missing_source_bucket(live_settings):
    dst = bucket_url(live_settings, new_bucket(live_settings))
    src = bucket_url(live_settings, f"missing-{uuid.uuid4().hex[:8]}")
    result = invoke("storage", "copy", src, dst, env=env_for(live_settings))
    assert result.returncode == 1
    assert "SRC" in result.stderr and "bucket not found" in result.stderr


# -- directories --------------------------------------------------------------------------------


async def copy_locations(stores: Stores, settings: Settings, src: str, dst: str) -> Totals:
    planned = routes(location(settings, src), location(settings, dst), settings.symbol_file_prefix)
    pairs = [StorePair(stores.at(r.src), stores.at(r.dst), r.exclude) for r in planned]
    for pair in pairs:
        if pair.dst.source.scheme == "file":
            await pair.dst.ensure()
    return (await copy_pairs(pairs, CopyOptions(jobs=3))).totals


async def contents(store: SymbolStore, key: str) -> dict[str, Any]:
    async with store.open(key) as opened:
        body = b"".join([chunk async for chunk in opened.chunks])
    info = opened.info
    return {
        "body": body,
        "type": info.content_type,
        "encoding": info.content_encoding,
        "metadata": dict(info.metadata),
    }


@pytest.mark.gen_test(timeout=120)
async def test_a_bucket_moves_to_a_directory_and_back_byte_for_byte(live_settings, tmp_path):
    first, last = new_bucket(live_settings), new_bucket(live_settings)
    objects = fill(live_settings, first)
    directory = f"file://{tmp_path}/symbols"
    async with opened_stores(live_settings) as stores:
        to_dir = await copy_locations(
            stores, live_settings, bucket_url(live_settings, first), directory
        )
        assert (to_dir.copied, to_dir.failed) == (4, 0)

        # In the directory, each object is where the server reads it, described as in S3.
        main = stores.at(location(live_settings, directory))
        trial = stores.at(location(live_settings, f"{directory}/try"))
        for key, wanted in objects.items():
            store, name = (
                (trial, key.removeprefix("try/")) if key.startswith("try/") else (main, key)
            )
            got = await contents(store, name)
            assert got == wanted, key
        assert [i.key async for i in main.list("")] == sorted(
            k for k in objects if not k.startswith("try/")
        )

        to_bucket = await copy_locations(
            stores, live_settings, directory, bucket_url(live_settings, last)
        )
        assert (to_bucket.copied, to_bucket.failed) == (4, 0)
        again = await copy_locations(
            stores, live_settings, directory, bucket_url(live_settings, last)
        )
        assert (again.copied, again.skipped) == (0, 4)  # the directory's MD5s match S3's

    assert sorted(keys_of(live_settings, last)) == sorted(objects)
    for key in objects:
        assert read(live_settings, last, key) == read(live_settings, first, key), key


@pytest.mark.gen_test(timeout=120)
async def test_directory_to_directory_resumes_after_a_failed_write(live_settings, tmp_path):
    src = f"file://{tmp_path}/a"
    dst = f"file://{tmp_path}/b"
    async with opened_stores(live_settings) as stores:
        source = stores.at(location(live_settings, src))
        await source.ensure()
        keys = [f"v1/{symbol_key(f'd{i}')}" for i in range(5)]
        for key in keys:
            await source.put_bytes(key, key.encode() * 10, content_type="text/plain")
        target = stores.at(location(live_settings, dst))
        await target.ensure()

        async def disk_full_after_one(store: SymbolStore, n: int, key: str, path: Path, **kw: Any):
            if n > 1:
                raise StoreUnavailable(f"{store.source.url}: No space left on device")
            await store.put_file(key, path, **kw)

        first = await copy_store(source, faulty(target, disk_full_after_one), CopyOptions(jobs=1))
        assert (first.totals.copied, first.totals.failed) == (1, 4)
        second = await copy_store(source, target, CopyOptions(jobs=1))
        assert (second.totals.copied, second.totals.skipped) == (4, 1)
        for key in keys:
            assert (await contents(target, key))["body"] == key.encode() * 10


def test_the_command_copies_a_directory_to_a_bucket_and_names_what_failed(live_settings, tmp_path):
    bucket = new_bucket(live_settings)
    fill(live_settings, bucket)
    # A directory cannot hold both a file and a directory of one name: a real failure.
    put(live_settings, bucket, "v1/clash", b"a file")
    put(live_settings, bucket, "v1/clash/inside", b"under a file's name")
    directory = f"file://{tmp_path}/symbols"
    env = env_for(live_settings)

    result = invoke("storage", "copy", bucket_url(live_settings, bucket), directory, env=env)
    assert result.returncode == 1
    assert "failed: v1/clash" in result.stderr
    assert "copied 5 object(s)" in result.stdout and "failed 1" in result.stdout

    back = new_bucket(live_settings)
    result = invoke("storage", "copy", directory, bucket_url(live_settings, back), env=env)
    assert result.returncode == 0, result.stderr
    assert "copied 5 object(s)" in result.stdout
    assert len(keys_of(live_settings, back)) == 5
