"""Symcache caching: single flight, the disk budget, the Redis store (L2), remembered misses."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import pytest
from markus.testing import MetricsMock

from symbolon.runtime import Runtime
from symbolon.symbolication.symcaches import DiskCache, entry_name
from tests.conftest import running_worker
from tests.symbolication_support import new_id, sym, with_debug_id
from tests.uploads import UPLOAD, make_zip, multipart, token_for
from tests.uploads import post as post_upload


@pytest.fixture
def settings(symbolication_settings):
    """The app of these tests has an upstream and a symcache directory of its own."""
    return symbolication_settings


DEMO = "examples/libdemo.so.sym"


async def symbolicate(http_client, base_url, name, ident, offset=4104):
    body = {"memoryMap": [[name, ident]], "stacks": [[[0, offset]]]}
    response = await http_client.fetch(
        base_url + "/symbolicate/v5", method="POST", body=json.dumps(body), request_timeout=60
    )
    return json.loads(response.body)["results"][0]


def parses(mm: MetricsMock) -> int:
    return len(mm.filter_records("timing", stat="eliot.symbolicate.parse_sym_file.parse"))


# -- single flight -----------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=60)
async def test_concurrent_requests_share_one_download_and_parse(
    http_client, base_url, upstream, symbolication
):
    ident = new_id()
    path = upstream.put("libdemo.so", ident, with_debug_id(sym(DEMO), ident))
    upstream.script[path] = [("sleep", 0.3)]  # keep the first download in flight
    with MetricsMock() as mm:
        results = await asyncio.gather(
            *(symbolicate(http_client, base_url, "libdemo.so", ident) for _ in range(20))
        )
    assert all(r["stacks"][0][0]["function"] == "process_request" for r in results)
    assert upstream.hits == [path]
    assert parses(mm) == 1


@pytest.mark.gen_test(timeout=60)
async def test_processes_wait_for_the_lock_holder_instead_of_parsing(
    settings, upstream, runtime, symbolication
):
    """Two services sharing the cache directory and Redis, as two server processes do."""
    ident = new_id()
    path = upstream.put("libdemo.so", ident, with_debug_id(sym(DEMO), ident))
    upstream.script[path] = [("sleep", 0.5)]
    other = await Runtime.create(settings, apply_migrations=False)
    own_pool, other.symbolication.pool = other.symbolication.pool, symbolication.pool
    try:
        other.symbolication.lock_poll = 0.02
        with MetricsMock() as mm:
            first, second = await asyncio.gather(
                symbolication.module(("libdemo.so", ident)),
                other.symbolication.module(("libdemo.so", ident)),
            )
        assert first.table is not None and second.table is not None
        assert upstream.hits == [path]
        assert parses(mm) == 1
        assert first.downloaded != second.downloaded  # one built it, the other waited
    finally:
        other.symbolication.pool = own_pool
        await other.close()


@pytest.mark.gen_test(timeout=60)
async def test_a_lock_whose_holder_died_expires(upstream, runtime, symbolication):
    ident = new_id()
    path = upstream.put("libdemo.so", ident, with_debug_id(sym(DEMO), ident))
    symbolication.lock_poll = 0.02
    lock = symbolication._lock_key(("libdemo.so", ident))
    await runtime.cache.set(lock, b"a crashed process", ttl=0.5)
    outcome = await symbolication.module(("libdemo.so", ident))
    assert outcome.table is not None and outcome.downloaded  # built once the lock expired
    assert upstream.hits == [path]
    await symbolication.drain()
    assert await runtime.cache.get(lock) is None  # released after the build


# -- the disk cache (L1) -------------------------------------------------------------------------


def write_entry(cache: DiskCache, key, size: int, age: float) -> Path:
    tmp = cache.tmp_path()
    tmp.write_bytes(b"x" * size)
    path = cache.adopt(tmp, key)
    old = time.time() - age
    os.utime(path, (old, old))
    return path


def test_eviction_keeps_the_cache_under_its_budget_least_recently_used_first(cache_dir):
    cache = DiskCache(cache_dir, max_size=3000, namespace="abcde")
    cache.prepare()
    with MetricsMock() as mm:
        a = write_entry(cache, ("a.so", "A"), 1000, age=300)
        b = write_entry(cache, ("b.so", "B"), 1000, age=200)
        c = write_entry(cache, ("c.so", "C"), 1000, age=100)
        cache._touched.clear()
        cache.touch(a)  # a read: a is now the most recently used
        d = write_entry(cache, ("d.so", "D"), 1000, age=0)
    assert a.exists() and not b.exists() and c.exists() and d.exists()
    assert len(mm.filter_records("incr", stat="eliot.diskcache.evict")) == 1
    usage = mm.filter_records("gauge", stat="eliot.diskcache.usage")
    assert usage[-1].value == 3000
    # One entry larger than the whole budget evicts everything else and stays.
    huge = write_entry(cache, ("huge.so", "H"), 5000, age=0)
    assert huge.exists() and not any(p.exists() for p in (a, c, d))


def test_temp_files_of_crashed_writers_are_removed_at_start(cache_dir):
    cache = DiskCache(cache_dir, max_size=10_000, namespace="abcde")
    cache.prepare()
    stale, fresh = cache.tmp_path(), cache.tmp_path()
    stale.write_bytes(b"half")
    fresh.write_bytes(b"being written")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    cache.prepare()
    assert not stale.exists() and fresh.exists()


def test_entry_names_are_distinct_and_stay_inside_the_cache():
    assert entry_name(("xul.pdb", "44e4ec8c2f41492b9369d6b9a059577c2")) == (
        "xul.pdb/44E4EC8C2F41492B9369D6B9A059577C2.symc"
    )
    assert entry_name(("a+b.so", "A")) != entry_name(("a b.so", "A"))
    assert entry_name(("", "A")) != entry_name(("_", "A"))
    for name in ("..", ".", "<unknown>", "a/../b", ""):
        first = entry_name((name, "A")).split("/")[0]
        assert first not in (".", "..") and "/" not in first


@pytest.mark.gen_test(timeout=60)
async def test_the_service_evicts_under_the_size_bound(settings, upstream, runtime, symbolication):
    first, second = new_id(), new_id()
    upstream.put("libdemo.so", first, with_debug_id(sym(DEMO), first))
    upstream.put("libdemo.so", second, with_debug_id(sym(DEMO), second))
    outcome = await symbolication.module(("libdemo.so", first))
    symbolication.disk.max_size = outcome.table.size + 10  # room for one entry
    os.utime(symbolication.disk.path(("libdemo.so", first)), (1, 1))
    await symbolication.module(("libdemo.so", second))
    assert not symbolication.disk.path(("libdemo.so", first)).exists()
    assert symbolication.disk.path(("libdemo.so", second)).exists()
    # An evicted module still open in memory keeps answering.
    assert (await symbolication.module(("libdemo.so", first))).table is outcome.table


@pytest.mark.gen_test(timeout=60)
async def test_a_damaged_entry_is_a_miss_and_is_rebuilt(upstream, runtime, symbolication):
    ident = new_id()
    path = upstream.put("libdemo.so", ident, with_debug_id(sym(DEMO), ident))
    entry = symbolication.disk.path(("libdemo.so", ident))
    entry.parent.mkdir(parents=True, exist_ok=True)
    entry.write_bytes(b"SYMC\x09\x00\x00\x00 truncated")
    with MetricsMock() as mm:
        outcome = await symbolication.module(("libdemo.so", ident))
    assert outcome.table is not None
    assert upstream.hits == [path]
    results = [r.tags for r in mm.filter_records("histogram", stat="eliot.diskcache.get")]
    assert ["result:error"] in results
    assert [r.tags for r in mm.filter_records("histogram", stat="eliot.diskcache.set")] == [
        ["result:success"]
    ]


@pytest.mark.gen_test(timeout=60)
async def test_a_restarted_process_finds_its_disk_cache(settings, upstream, runtime, symbolication):
    ident = new_id()
    upstream.put("libdemo.so", ident, with_debug_id(sym(DEMO), ident))
    await symbolication.module(("libdemo.so", ident))
    again = await Runtime.create(settings.replace(symbolication_store_symcaches=False))
    try:
        with MetricsMock() as mm:
            outcome = await again.symbolication.module(("libdemo.so", ident.lower()))
        assert (
            outcome.cache_hit and outcome.table.lookup_many([4104])[0][0].name == "process_request"
        )
        assert [r.tags for r in mm.filter_records("histogram", stat="eliot.diskcache.get")] == [
            ["result:hit"]
        ]
        assert len(upstream.hits) == 1
    finally:
        await again.close()


def test_long_names_fit_in_a_file_name_and_stay_distinct():
    long_a = "lib" + "\u00e9" * 300 + "a.so"
    long_b = "lib" + "\u00e9" * 300 + "b.so"
    names = {entry_name((n, "A" * 128)) for n in (long_a, long_b)}
    assert len(names) == 2
    for name in names:
        assert all(len(segment.encode()) <= 255 for segment in name.split("/"))
    crafted = entry_name((long_a, "A")).split("/")[0]  # a short name spelled like a long one's
    assert entry_name((crafted, "A")) != entry_name((long_a, "A"))


@pytest.mark.gen_test(timeout=60)
async def test_a_module_with_a_long_name_is_cached_on_disk(
    settings, upstream, runtime, symbolication
):
    name, ident = "lib" + "x" * 300 + ".so", new_id()  # more than a file name can hold
    upstream.put(name, ident, with_debug_id(sym(DEMO), ident))
    assert (await symbolication.module((name, ident))).table is not None
    again = await Runtime.create(settings.replace(symbolication_store_symcaches=False))
    try:
        outcome = await again.symbolication.module((name, ident))
        assert outcome.cache_hit and outcome.table is not None
        assert len(upstream.hits) == 1
    finally:
        await again.close()


# -- the Redis store (L2) --------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=60)
async def test_another_node_reuses_the_symcache_through_the_store(
    settings, upstream, runtime, symbolication, tmp_path_factory
):
    ident = new_id()
    upstream.put("libdemo.so", ident, with_debug_id(sym(DEMO), ident))
    symbolication.store.CHUNK = 100  # entries move in chunks: several, here
    await symbolication.module(("libdemo.so", ident))
    await symbolication.drain()
    key = symbolication.store.key(("libdemo.so", ident))
    assert key.startswith(f"symbolication:symcache:{symbolication.namespace}:")
    assert await runtime.store.client.strlen(key) > 300
    other_dir = Path(str(settings.symbols_cache_dir) + "-other-node")
    node = await Runtime.create(settings.replace(symbols_cache_dir=other_dir))
    try:
        node.symbolication.store.CHUNK = 100
        outcome = await node.symbolication.module(("libdemo.so", ident))
        assert outcome.cache_hit
        assert outcome.table.lookup_many([4104])[0][0].name == "process_request"
        assert len(upstream.hits) == 1  # no second download, no second parse
        assert node.symbolication.disk.path(("libdemo.so", ident)).exists()  # now in its L1
    finally:
        await node.close()


@pytest.mark.gen_test(timeout=60)
async def test_the_store_is_namespaced_by_the_source_configuration(settings, runtime):
    other = await Runtime.create(
        settings.replace(symbolication_symbol_urls=("http://127.0.0.1:9/elsewhere/",))
    )
    try:
        assert other.symbolication.namespace != runtime.symbolication.namespace
    finally:
        await other.close()


# -- remembered misses -----------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=60)
async def test_misses_are_remembered_briefly(http_client, base_url, upstream, symbolication):
    ident = new_id()
    for _ in range(3):
        result = await symbolicate(http_client, base_url, "libgone.so", ident)
        assert result["found_modules"] == {f"libgone.so/{ident}": False}
    assert len(upstream.hits) == 1
    symbolication.misses.ttl = 0  # remembering off: every request asks again
    await symbolicate(http_client, base_url, "libgone.so", ident)
    assert len(upstream.hits) == 2


@pytest.mark.gen_test(timeout=60)
async def test_misses_expire(http_client, base_url, upstream, symbolication):
    ident = new_id()
    symbolication.misses.ttl = 0.3
    await symbolicate(http_client, base_url, "libgone.so", ident)
    upstream.put("libgone.so", ident, with_debug_id(sym(DEMO), ident))
    await asyncio.sleep(0.4)
    result = await symbolicate(http_client, base_url, "libgone.so", ident)
    assert result["found_modules"] == {f"libgone.so/{ident}": True}


@pytest.mark.gen_test(timeout=90)
async def test_an_upload_clears_the_remembered_miss(
    http_client, base_url, settings, runtime, upstream, symbolication
):
    ident = new_id()
    lower = ident.lower()
    for spelled in (ident, lower):
        result = await symbolicate(http_client, base_url, "libdemo.so", spelled)
        assert result["found_modules"] == {f"libdemo.so/{spelled}": False}
    token, _ = await token_for(runtime, UPLOAD)
    archive = make_zip({f"libdemo.so/{lower}/libdemo.so.sym": with_debug_id(sym(DEMO), ident)})
    body, content_type = multipart({"symbols.zip": archive})
    with running_worker(settings):
        response = await post_upload(http_client, base_url, body, content_type, token)
    assert response.code == 201, response.body
    for spelled in (ident, lower):
        result = await symbolicate(http_client, base_url, "libdemo.so", spelled)
        assert result["found_modules"] == {f"libdemo.so/{spelled}": True}
        assert result["stacks"][0][0]["function"] == "process_request"
    assert len(upstream.hits) == 2  # the two first misses; then own storage had it


@pytest.mark.gen_test(timeout=60)
async def test_a_damaged_store_entry_is_a_miss(upstream, runtime, symbolication):
    ident = new_id()
    path = upstream.put("libdemo.so", ident, with_debug_id(sym(DEMO), ident))
    await runtime.store.set(symbolication.store.key(("libdemo.so", ident)), b"SYMC half of it")
    outcome = await symbolication.module(("libdemo.so", ident))
    assert outcome.table is not None and outcome.downloaded
    assert upstream.hits == [path]
