"""Symbols for processing: a crash whose module has no symbols is processed without them, and
queued again when an upload brings them (at most PROCESSOR_REPROCESS_PER_UPLOAD crashes per
upload); CFI indexes are built in the symcache's parse and kept on disk and in the Redis store,
so that a warm crash reads no .sym at all."""

from __future__ import annotations

import json
from typing import Any

import pytest

from symbolon.processing.cfi import CfiIndex
from symbolon.runtime import Runtime
from tests.conftest import running_worker, served
from tests.crashpad_support import WITHIN, crashpad_handler  # noqa: F401 (a fixture)
from tests.processing_support import (
    CRASHING_FUNCTION,
    crashing_frames,
    fresh_crash,
    processing_settings,
    program,  # noqa: F401 (a fixture)
    program_dump,  # noqa: F401 (a fixture)
    submit,
    wait_for_state,
)
from tests.symbolication_support import put_own
from tests.uploads import UPLOAD, make_zip, multipart, post, token_for


def mid_frames(processed: dict[str, Any]) -> list[dict[str, Any]]:
    return [f for f in crashing_frames(processed) if f["module"] == "libmid.so"]


async def processed_crash(runtime: Runtime, crash_id: str) -> dict[str, Any]:
    data = await runtime.processor.storage.load_processed(crash_id)
    assert data is not None
    parsed: dict[str, Any] = json.loads(data)
    return parsed


@pytest.mark.gen_test(timeout=4 * WITHIN)
async def test_a_crash_lacking_a_modules_symbols_is_processed_again_when_they_are_uploaded(
    program, program_dump, live_settings, cache_dir
):
    # Two crashes lack libmid's symbols; an upload queues at most one of them again.
    settings = processing_settings(live_settings, cache_dir, processor_reprocess_per_upload=1)
    put_own(settings, program.app.key, program.app.data)  # libmid.so's are withheld
    libmid = (program.libmid.debug_file, program.libmid.debug_id)
    server = served(settings)
    with running_worker(settings):
        async with server as (http_client, base_url):
            runtime = server.runtime
            older = await submit(http_client, base_url, program_dump)
            await wait_for_state(runtime, older)
            newer = await submit(http_client, base_url, program_dump)
            first = await wait_for_state(runtime, newer)

            # Processed all the same: the signature comes from the program's own frames, and
            # libmid's frames are there (walked by frame pointers) without names.
            assert (first["state"], first["signature"]) == ("processed", CRASHING_FUNCTION)
            processed = await processed_crash(runtime, newer)
            frames = mid_frames(processed)
            assert len(frames) == 2
            assert [f["function"] for f in frames] == [None, None]
            assert crashing_frames(processed)[6]["function"] == "recurse"  # and on past it
            modules = {m["filename"]: m for m in processed["json_dump"]["modules"]}
            assert modules["libmid.so"]["missing_symbols"] is True
            assert modules["stackwalk_app"]["missing_symbols"] is False
            note = f"libmid.so/{program.libmid.debug_id}"
            assert note in processed["processor_notes"]
            missing = await runtime.db.fetch(
                """SELECT crash_id FROM crash_missing_modules
                   WHERE debug_file = $1 AND debug_id = $2 ORDER BY crash_id""",
                *libmid,
            )
            assert sorted(r["crash_id"] for r in missing) == sorted([older, newer])
            older_row = await wait_for_state(runtime, older)

            # The module is uploaded: the most recent crash that lacked it is processed again.
            token, _ = await token_for(runtime, UPLOAD)
            body, content_type = multipart(
                {"symbols.zip": make_zip({program.libmid.key: program.libmid.data})}
            )
            response = await post(http_client, base_url, body, content_type, token)
            assert response.code in (201, 202), response.body
            again = await wait_for_state(runtime, newer, after=first["processed_at"])
            assert (again["state"], again["signature"]) == ("processed", CRASHING_FUNCTION)
            processed = await processed_crash(runtime, newer)
            assert [f["function"] for f in mid_frames(processed)] == ["mid_inner", "mid_call"]
            assert mid_frames(processed)[0]["file"].endswith("tests/processing/libmid.c")
            modules = {m["filename"]: m for m in processed["json_dump"]["modules"]}
            assert modules["libmid.so"]["missing_symbols"] is False
            assert note not in processed["processor_notes"]
            rows = await runtime.db.fetch(
                "SELECT crash_id FROM crash_missing_modules WHERE debug_file = $1", libmid[0]
            )
            assert [r["crash_id"] for r in rows if r["crash_id"] in (older, newer)] == [older]
            # The older one was left alone: one crash per upload here.
            assert (await wait_for_state(runtime, older))["processed_at"] == older_row[
                "processed_at"
            ]
            older_processed = await processed_crash(runtime, older)
            assert [f["function"] for f in mid_frames(older_processed)] == [None, None]


class FetchCounter:
    """Counts the sym files the symbolication service fetches."""

    def __init__(self, runtime: Runtime):
        fetcher = runtime.symbolication.fetcher
        self.keys: list[tuple[str, str]] = []
        original = fetcher.fetch

        async def fetch(key: tuple[str, str], dest: Any, *kinds: Any) -> Any:
            self.keys.append(key)
            return await original(key, dest, *kinds)

        fetcher.fetch = fetch  # type: ignore[method-assign]


def stored_crash(
    handler: Any, directory: Any, live_settings: Any, cache_dir: Any, **changes: Any
) -> tuple[Any, bytes, Any]:
    """A fresh crash of the test program, and processing settings whose own storage holds both
    of its modules' symbols."""
    program, dump = fresh_crash(handler, directory)
    settings = processing_settings(live_settings, cache_dir, **changes)
    put_own(settings, program.app.key, program.app.data)
    put_own(settings, program.libmid.key, program.libmid.data)
    return program, dump, settings


@pytest.mark.gen_test(timeout=4 * WITHIN)
async def test_cfi_is_built_with_the_symcache_and_a_warm_crash_reads_no_sym_file(
    crashpad_handler, live_settings, cache_dir, tmp_path
):
    program, program_dump, settings = stored_crash(
        crashpad_handler, tmp_path, live_settings, cache_dir
    )
    ours = {(program.app.debug_file, program.app.debug_id), libmid_key(program)}

    runtime = await Runtime.create(settings)
    try:
        fetched = FetchCounter(runtime)
        processor = runtime.processor
        cold = await processor.process_dump(program_dump)
        assert cold.signature == CRASHING_FUNCTION
        assert crashing_frames(cold.document)[4]["function"] == "mid_inner"
        # One fetch and one parse per module: the parse made the symcache and the CFI index.
        assert ours <= set(fetched.keys)
        assert len(fetched.keys) == len(set(fetched.keys))
        assert processor.cfi.stats.built_with_symcache == 2
        assert processor.cfi.stats.built_alone == 0
        await runtime.symbolication.drain()  # the Redis store has them too

        # Warm: nothing is fetched again.
        before = len(fetched.keys)
        warm = await processor.process_dump(program_dump)
        assert warm.document["json_dump"]["threads"] == cold.document["json_dump"]["threads"]
        assert fetched.keys[before:] == []  # modules found nowhere are remembered too
    finally:
        await runtime.close()

    # Another machine (another disk cache) gets both from the Redis store.
    other = await Runtime.create(settings.replace(symbols_cache_dir=tmp_path / "other"))
    try:
        fetched = FetchCounter(other)
        again = await other.processor.process_dump(program_dump)
        assert again.document["json_dump"]["threads"] == cold.document["json_dump"]["threads"]
        assert fetched.keys == []
        assert other.processor.cfi.stats.hits >= 2
    finally:
        await other.close()


@pytest.mark.gen_test(timeout=4 * WITHIN)
async def test_a_symcache_made_without_its_cfi_index_gets_one_built_alone(
    crashpad_handler, live_settings, cache_dir, tmp_path
):
    program, program_dump, settings = stored_crash(
        crashpad_handler, tmp_path, live_settings, cache_dir, symbolication_store_symcaches=False
    )
    runtime = await Runtime.create(settings)
    try:
        processor = runtime.processor
        first = await processor.process_dump(program_dump)
        # The indexes are lost (evicted, or made before this cache existed); symcaches stay.
        for entry in processor.cfi.disk.entries.glob(f"{processor.cfi.disk.namespace}/**/*"):
            if entry.is_file():
                entry.unlink()
        fetched = FetchCounter(runtime)
        second = await processor.process_dump(program_dump)
        assert processor.cfi.stats.built_alone == 2
        assert sorted(fetched.keys) == sorted(
            [(program.app.debug_file, program.app.debug_id), libmid_key(program)]
        )
        assert second.document["json_dump"]["threads"] == first.document["json_dump"]["threads"]
    finally:
        await runtime.close()


@pytest.mark.gen_test(timeout=4 * WITHIN)
async def test_a_symbolication_request_does_not_wait_for_the_cfi_index(
    crashpad_handler, live_settings, cache_dir, tmp_path
):
    program, program_dump, settings = stored_crash(
        crashpad_handler, tmp_path, live_settings, cache_dir
    )
    keys = [(program.app.debug_file, program.app.debug_id), libmid_key(program)]
    server = served(settings)
    async with server as (http_client, base_url):
        runtime = server.runtime
        processor = runtime.processor
        body = {"jobs": [{"memoryMap": [list(k) for k in keys], "stacks": [[[0, 0], [1, 0]]]}]}
        response = await http_client.fetch(
            base_url + "/symbolicate/v5", method="POST", body=json.dumps(body)
        )
        found = json.loads(response.body)["results"][0]["found_modules"]
        assert found == {f"{name}/{ident}": True for name, ident in keys}
        # The symcaches are made; their parse made no index.
        assert all(runtime.symbolication.disk.path((n, i.upper())).is_file() for n, i in keys)
        assert not any(processor.cfi.disk.path((n, i.upper())).exists() for n, i in keys)
        assert processor.cfi.stats.built_with_symcache == 0
        # A crash needing them has the indexes built then, each from one more fetch.
        fetched = FetchCounter(runtime)
        processed = await processor.process_dump(program_dump)
        assert processed.signature == CRASHING_FUNCTION
        assert processor.cfi.stats.built_alone == 2
        assert sorted(fetched.keys) == sorted(keys)


def libmid_key(program: Any) -> tuple[str, str]:
    return (program.libmid.debug_file, program.libmid.debug_id)


@pytest.mark.gen_test(timeout=4 * WITHIN)
async def test_a_damaged_cfi_index_is_deleted_and_rebuilt(
    crashpad_handler, live_settings, cache_dir, tmp_path
):
    program, program_dump, settings = stored_crash(
        crashpad_handler, tmp_path, live_settings, cache_dir
    )
    keys = [(program.app.debug_file, program.app.debug_id.upper()), libmid_key(program)]
    runtime = await Runtime.create(settings)
    try:
        processor = runtime.processor
        first = await processor.process_dump(program_dump)
        await runtime.symbolication.drain()
        store = processor.cfi.store
        assert store is not None
        # Both copies of both indexes damaged: a flipped byte on disk, a cut one in Redis.
        for key in keys:
            path = processor.cfi.disk.path(key)
            data = bytearray(path.read_bytes())
            data[-1] ^= 0xFF
            path.write_bytes(bytes(data))
            stored = await store.store.client.get(store.key(key))
            assert stored
            await store.store.client.set(store.key(key), stored[:-10])
        second = await processor.process_dump(program_dump)
        assert processor.cfi.stats.built_alone == 2
        assert second.document["json_dump"]["threads"] == first.document["json_dump"]["threads"]
        for key in keys:
            CfiIndex.from_bytes(processor.cfi.disk.path(key).read_bytes())
            stored = await store.store.client.get(store.key(key))
            CfiIndex.from_bytes(stored)
    finally:
        await runtime.close()
