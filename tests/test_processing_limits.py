"""A dump cannot hold a worker through the symbols it asks for: the walk, symbol fetching
included, has a wall-clock deadline; one crash fetches symbols for a bounded number of modules;
and one crash stores a bounded number of missing-module rows."""

from __future__ import annotations

import asyncio
import struct
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from symbolon.crashes.crashid import create_crash_id
from symbolon.processing.pipeline import records
from symbolon.processing.pipeline.sandbox import WalkFailed, WalkPool
from symbolon.runtime import Runtime
from tests.crashpad_support import WITHIN
from tests.processing_support import processing_settings


def many_modules_dump(count: int = 300) -> bytes:
    """A stack of return addresses, each into another module without symbols: scanning asks for
    the symbols of every one."""
    from tests.processing.synth import Synth, SynthModule, SynthThread, cv_elf

    base = 0x7F0000000000
    modules = [
        SynthModule(base + i * 0x10000, 0x10000, f"/l/m{i}.so", cv_elf(i.to_bytes(20, "little")))
        for i in range(count)
    ]
    stack = b"".join(struct.pack("<Q", base + i * 0x10000 + 0x100) for i in range(count))
    start = 0x7FFD00000000
    registers = {"rip": base + 0x10, "rsp": start, "rbp": 0}
    return Synth(modules=modules, threads=[SynthThread(1, start, stack, registers)]).build()


@pytest.mark.gen_test(timeout=2 * WITHIN)
async def test_slow_symbol_lookups_count_against_the_walks_deadline():
    pool = WalkPool(processes=1, memory=2 * 1024**3, timeout=60, deadline=1.0)
    asked = 0

    async def slow(key: tuple[str, str]) -> str | None:
        nonlocal asked
        asked += 1
        await asyncio.sleep(0.02)  # an upstream symbol server's miss
        return None

    try:
        started = time.monotonic()
        with pytest.raises(WalkFailed) as failure:
            await pool.walk(many_modules_dump(), slow)
        assert "PROCESSOR_WALK_DEADLINE" in str(failure.value)
        assert time.monotonic() - started < WITHIN
        assert asked < 300
    finally:
        pool.close()


@pytest.mark.gen_test(timeout=4 * WITHIN)
async def test_one_crash_fetches_symbols_for_a_bounded_number_of_modules(live_settings, cache_dir):
    settings = processing_settings(live_settings, cache_dir, processor_walk_symbol_modules=5)
    runtime = await Runtime.create(settings)
    try:
        fetcher = runtime.symbolication.fetcher
        fetched: list[tuple[str, str]] = []
        original = fetcher.fetch

        async def fetch(key: tuple[str, str], dest: Any, *kinds: Any) -> Any:
            fetched.append(key)
            return await original(key, dest, *kinds)

        fetcher.fetch = fetch  # type: ignore[method-assign]
        processed = await runtime.processor.process_dump(many_modules_dump())
        assert len(set(fetched)) <= 5
        assert len(processed.missing) <= 5
        notes = processed.document["processor_notes"]
        assert "PROCESSOR_WALK_SYMBOL_MODULES" in notes
        # The frames are still there, without symbols.
        frames = processed.document["json_dump"]["threads"][0]["frames"]
        assert len(frames) > 5
    finally:
        await runtime.close()


@pytest.mark.gen_test
async def test_one_crash_keeps_a_bounded_number_of_missing_module_rows(runtime):
    crash_id = create_crash_id(datetime.now(UTC), 0)
    meta = records.meta_of({}, crash_id)
    await records.start(runtime.db, crash_id, meta)
    missing = [(f"m{i}.so", f"{i:033X}") for i in range(records.MAX_MISSING_MODULES + 300)]
    await records.finish(runtime.db, crash_id, meta, "s", missing)
    count = await runtime.db.fetchval(
        "SELECT count(*) FROM crash_missing_modules WHERE crash_id = $1", crash_id
    )
    assert count == records.MAX_MISSING_MODULES
