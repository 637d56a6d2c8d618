"""The parse processes (and multiprocessing's resource tracker with them) start with the first
parse, not with the server: a web process that only takes crashes or answers downloads holds
neither (docs/benchmarks.md, "Server memory")."""

from __future__ import annotations

import asyncio
import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from symbolon.conf import Settings
from symbolon.symbolication.parse import ParsePool
from tests.cli import env_for
from tests.conftest import free_port, run_isolated, wait_until
from tests.serving import REQUEST_WITHIN, START_WITHIN, heartbeat, request, start, stop
from tests.symbolication_support import new_id, put_own, sym, with_debug_id

# (debug file, sym file, an address with a function): two modules, so that two first requests
# are two parses, not one shared flight.
MODULES = [
    ("libdemo.so", "examples/libdemo.so.sym", 4104),
    ("libinlines.so", "libinlines.so.sym", 0x1130),
]


@pytest.fixture
def settings(symbolication_settings: Settings) -> Settings:
    """An upstream and a symcache directory of this module's own, one parse process."""
    return symbolication_settings


def helpers(pid: int) -> dict[str, list[int]]:
    """The children multiprocessing started for ``pid``: spawned processes and resource
    trackers."""
    found: dict[str, list[int]] = {"spawned": [], "tracker": []}
    for child in psutil.Process(pid).children():
        try:
            cmdline = " ".join(child.cmdline())
        except psutil.Error:  # ended meanwhile
            continue
        if "resource_tracker" in cmdline:
            found["tracker"].append(child.pid)
        elif "spawn_main" in cmdline:
            found["spawned"].append(child.pid)
    return found


def gone(pids: list[int]) -> bool:
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            pass
    return True


def spawned_here() -> set[int]:
    return set(helpers(psutil.Process().pid)["spawned"])


@pytest.mark.gen_test(timeout=REQUEST_WITHIN)
async def test_start_leaves_the_pool_to_the_first_parse_and_close_stops_it(runtime, upstream):
    service = runtime.symbolication
    before = spawned_here()
    await service.start()
    assert service.pool._executor is None, "start() made the parse pool"
    assert spawned_here() == before

    filename, name, _ = MODULES[0]
    ident = new_id()
    upstream.put(filename, ident, with_debug_id(sym(name), ident))
    outcome = await service.module((filename, ident))
    assert outcome.parsed and outcome.table is not None, outcome
    started = spawned_here() - before
    assert len(started) == service.pool.workers == 1, started

    await service.close()
    assert await wait_until(lambda: gone(list(started)), 30), "close() left the parse process"


@pytest.mark.gen_test(timeout=REQUEST_WITHIN)
async def test_concurrent_first_parses_share_one_pool_start(tmp_path):
    """Both reach the pool before either has awaited anything: a start that awaited (a thread,
    say) would let the second make a pool of its own."""
    pool = ParsePool(workers=1, memory_budget=4 * 1024**3)
    before = spawned_here()
    try:
        builds = []
        for i, (filename, name, _) in enumerate(MODULES):
            ident = new_id()
            path = tmp_path / f"{i}.sym"
            path.write_bytes(with_debug_id(sym(name), ident))
            size = path.stat().st_size
            builds.append(pool.build(path, size, filename, ident, tmp_path / f"{i}.symc"))
        parsed = await asyncio.gather(*builds)
        assert all(p.ok for p in parsed), parsed
        started = spawned_here() - before
        assert len(started) == 1, f"{len(started)} parse processes for pools of one"
    finally:
        pool.close()


def symbolicate(port: int, filename: str, ident: str, address: int) -> dict:
    body = {"memoryMap": [[filename, ident]], "stacks": [[[0, address]]]}
    status, _, answer = request(port, "POST", "/symbolicate/v5", json.dumps(body).encode())
    assert status == 200, answer
    result: dict = json.loads(answer)["results"][0]
    return result


def test_a_served_process_starts_its_parse_process_with_its_first_symbolication(
    live_settings: Settings, cache_dir: Path
):
    port = free_port()
    env = env_for(
        live_settings,
        PORT=str(port),
        WORKER_THREADS="0",  # the embedded worker would take the session's crashes
        SYMBOLICATION_PARSE_WORKERS="1",
        SYMBOLS_CACHE_DIR=str(cache_dir),
    )
    proc = start(env)
    try:
        assert heartbeat(port, proc)["code"] == 200
        missing = f"/xul.pdb/{uuid.uuid4().hex.upper()}0/xul.sym"
        assert request(port, "GET", missing)[0] == 404
        assert heartbeat(port, proc)["code"] == 200
        assert helpers(proc.pid) == {"spawned": [], "tracker": []}

        jobs = []
        for filename, name, address in MODULES:
            ident = new_id()
            symbol = filename + ".sym"
            put_own(live_settings, f"{filename}/{ident}/{symbol}", with_debug_id(sym(name), ident))
            jobs.append((port, filename, ident, address))
        with ThreadPoolExecutor(len(jobs)) as pool:
            results = list(pool.map(lambda job: symbolicate(*job), jobs))
        assert all(all(r["found_modules"].values()) for r in results), results

        started = helpers(proc.pid)
        assert len(started["spawned"]) == 1, started
        assert len(started["tracker"]) == 1, started
        # Warm: no further process.
        symbolicate(*jobs[0])
        assert helpers(proc.pid) == started
    finally:
        stop(proc)
    everything = started["spawned"] + started["tracker"]
    assert run_isolated(wait_until(lambda: gone(everything), START_WITHIN)), "left after stop"
