#!/usr/bin/env python
"""Memory of ``symbolon serve`` by workload: idle, after a burst of crash reports, after a burst
of downloads, after symbolication.

Starts the embedded PostgreSQL and both Redis servers in a temporary directory, then for each
``--processes`` count and each workload starts a fresh ``symbolon serve`` (``WEB_PROCESSES``,
default settings otherwise: two worker threads in the first web process, the crash processor on;
symbols and crashes in directories) on a symbol location of its own holding the ``.sym`` files of
``tests/data`` (and any ``--sym`` file), so that every run starts cold, and measures its process
tree:

- idle: answering ``/__heartbeat__``, settled;
- crashes: ``--crashes`` ``POST /submit`` (16 annotations, a small synthetic minidump whose stack
  runs through the stored modules), 8 at a time, until the embedded worker has processed them
  all (walking and parse processes start in its runtime), then settled;
- downloads: ``--downloads`` symbol ``GET``s, half stored (302), half missing (404), 8 at a time;
- symbolication: one cold ``POST /symbolicate/v5`` of every module (its time printed: the
  first one starts the parse processes), then ``--symbolications`` warm ones, 8 at a time,
  each on a new connection so that every web process gets some.

"Settled" is the tree's total RSS changing by less than 1% over two seconds. For each state it
prints the sum of RSS and of PSS (shared pages counted once, shared out) over serve's process
tree, and each process: its role, RSS and PSS in MiB. The embedded servers are not in serve's
tree; their RSS is printed once, apart. About 5 minutes.

    .venv/bin/python bench/memory.py [--processes 1,2] [--workloads crashes,symbolication]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import random
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import start_serve, stop_servers  # noqa: E402

from symbolon.conf import load_settings  # noqa: E402
from symbolon.server.embedded import EmbeddedStack  # noqa: E402
from symbolon.storage.sources import SymbolSource  # noqa: E402
from symbolon.storage.stores.directory import DirectoryStore  # noqa: E402

MiB = 1024 * 1024
CLIENTS = 8
SETTLE_WITHIN = 120.0
MODULE_LINE = re.compile(rb"^MODULE (\S+) (\S+) ([0-9A-Fa-f]+) (.+?)\r?$", re.M)
CODE_ID_LINE = re.compile(rb"^INFO CODE_ID ([0-9A-Fa-f]+)", re.M)
FUNC_LINE = re.compile(rb"^FUNC (?:m )?([0-9a-f]+) ([0-9a-f]+) ", re.M)
ANNOTATIONS = {
    "ProductName": "Firefox",
    "Version": "120.0a1",
    "ReleaseChannel": "nightly",
    "BuildID": "20231010094615",
    "Vendor": "Mozilla",
    "CrashTime": "1697000000",
    "StartupTime": "1696990000",
    "InstallTime": "1696000000",
    "Hang": "0",
    "AvailablePageFile": "10641903616",
    "AvailablePhysicalMemory": "2187096064",
    "TotalPhysicalMemory": "17096790016",
    "SystemMemoryUsePercentage": "87",
    "URL": "https://example.com/",
    "useragent_locale": "en-US",
    "Notes": "bench",
}


@dataclass(frozen=True)
class Module:
    debug_file: str
    debug_id: str
    build_id: bytes  # INFO CODE_ID: what a Linux dump names the module by
    addresses: list[int]

    @property
    def key(self) -> str:
        name = self.debug_file
        symbol = name[:-4] + ".sym" if name.endswith(".pdb") else name + ".sym"
        return f"{name}/{self.debug_id}/{symbol}"


@dataclass(frozen=True)
class Proc:
    pid: int
    role: str
    rss: float
    pss: float


def module_of(data: bytes) -> Module:
    match = MODULE_LINE.search(data[:4096])
    if match is None:
        raise SystemExit("not a Breakpad .sym file")
    rng = random.Random(0)
    funcs = [(int(m.group(1), 16), int(m.group(2), 16)) for m in FUNC_LINE.finditer(data)]
    addresses = [start + rng.randrange(max(size, 1)) for start, size in rng.choices(funcs, k=200)]
    code_id = CODE_ID_LINE.search(data[:4096])
    build_id = bytes.fromhex(code_id.group(1).decode()) if code_id else b""
    return Module(match.group(4).decode(), match.group(3).decode().upper(), build_id, addresses)


def store_symbols(base: Path, files: list[Path]) -> tuple[str, list[Module]]:
    """A directory symbol location holding ``files`` under their upload keys."""
    source = SymbolSource.parse(base.as_uri())
    store = DirectoryStore(source, "bench")
    asyncio.run(store.ensure())
    modules = []
    for path in files:
        data = path.read_bytes()
        module = module_of(data)
        asyncio.run(store.put_bytes(source.object_key(module.key), data))
        modules.append(module)
    return source.url, modules


def role(process: psutil.Process, server: int) -> str:
    cmdline = " ".join(process.cmdline())
    if "resource_tracker" in cmdline:
        return "resource tracker"
    if "spawn_main" in cmdline:
        # A walking process limits its address space (PROCESSOR_WALK_MEMORY); a parse process
        # does not.
        limit = process.rlimit(psutil.RLIMIT_AS)[0]
        return "parse process" if limit == psutil.RLIM_INFINITY else "walking process"
    if process.pid == server:
        return "serve"
    return "web process"


def tree(server: int) -> list[Proc]:
    top = psutil.Process(server)
    found = []
    for process in [top, *top.children(recursive=True)]:
        try:
            info = process.memory_full_info()
            found.append(Proc(process.pid, role(process, server), info.rss / MiB, info.pss / MiB))
        except (psutil.NoSuchProcess, FileNotFoundError):
            continue
    return found


def settled(server: int) -> list[Proc]:
    """The tree once its total RSS holds still (within 1%) over two seconds."""
    deadline = time.monotonic() + SETTLE_WITHIN
    last = tree(server)
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = tree(server)
        before, after = sum(p.rss for p in last), sum(p.rss for p in now)
        if len(now) == len(last) and abs(after - before) <= 0.01 * before:
            time.sleep(1.0)
            again = tree(server)
            if len(again) == len(now) and abs(sum(p.rss for p in again) - after) <= 0.01 * after:
                return again
            now = again
        last = now
    return last


def request(
    port: int, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        conn.request(method, path, body=body or None, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def burst(count: int, one: Callable[[int], None]) -> None:
    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(one, range(count)))


def minidump(modules: list[Module]) -> bytes:
    """A small amd64 Linux dump (tests/processing/synth.py) whose crashing thread is in the first
    module and returns into the others: walking it asks for their CFI and symbols."""
    from tests.processing.synth import Synth, SynthModule, SynthThread, cv_elf

    base = 0x7F0000000000
    synth_modules = [
        SynthModule(base + i * 0x100000, 0x100000, f"/usr/lib/{m.debug_file}", cv_elf(m.build_id))
        for i, m in enumerate(modules)
    ]
    stack = b"".join(
        struct.pack("<Q", base + i * 0x100000 + m.addresses[0]) for i, m in enumerate(modules)
    )
    start = 0x7FFD00000000
    registers = {"rip": base + modules[0].addresses[1], "rsp": start, "rbp": 0}
    thread = SynthThread(1, start, stack, registers)
    crashed = (1, 11, 0, base, (), registers)  # SIGSEGV
    return Synth(modules=synth_modules, threads=[thread], exception=crashed).build()


def crash_report(modules: list[Module]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [
        f'Content-Disposition: form-data; name="{k}"\r\n\r\n{v}'.encode()
        for k, v in ANNOTATIONS.items()
    ]
    parts.append(
        b'Content-Disposition: form-data; name="upload_file_minidump"; filename="a.dmp"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n" + minidump(modules)
    )
    delimiter = f"--{boundary}".encode()
    body = b"".join(delimiter + b"\r\n" + p + b"\r\n" for p in parts) + delimiter + b"--\r\n"
    return body, f"multipart/form-data; boundary={boundary}"


def crashes(port: int, modules: list[Module], count: int, database_url: str) -> None:
    """The burst, then until the embedded worker has processed (or failed) every crash."""
    body, content_type = crash_report(modules)
    ids: list[str] = []

    def one(_: int) -> None:
        status, answer = request(port, "POST", "/submit", body, {"Content-Type": content_type})
        if status != 200 or not answer.startswith(b"CrashID="):
            raise SystemExit(f"POST /submit answered {status}: {answer[:200]!r}")
        ids.append(answer.decode().strip().removeprefix("CrashID=").removeprefix("bp-"))

    burst(count, one)
    states = asyncio.run(processed(database_url, ids))
    print(f"  crashes: {states}")


async def processed(database_url: str, ids: list[str]) -> dict[str, int]:
    """Once no crash of ``ids`` is pending: how many ended in each state."""
    import asyncpg

    conn = await asyncpg.connect(database_url)
    try:
        deadline = time.monotonic() + SETTLE_WITHIN
        query = "SELECT count(*) FROM crashes WHERE crash_id = ANY($1) AND state <> 'pending'"
        while await conn.fetchval(query, ids) < len(ids):
            if time.monotonic() > deadline:
                raise SystemExit("the crashes were not processed in time")
            await asyncio.sleep(0.5)
        rows = await conn.fetch(
            "SELECT state, count(*) FROM crashes WHERE crash_id = ANY($1) GROUP BY state", ids
        )
        return {row[0]: row[1] for row in rows}
    finally:
        await conn.close()


def downloads(port: int, modules: list[Module], count: int, database_url: str) -> None:
    def one(i: int) -> None:
        if i % 2:
            path = "/" + modules[i % len(modules)].key
            expected = 302
        else:
            path = f"/xul.pdb/{uuid.uuid4().hex.upper()}0/xul.sym"
            expected = 404
        status, _ = request(port, "GET", path)
        if status != expected:
            raise SystemExit(f"GET {path} answered {status}, not {expected}")

    burst(count, one)


def symbolicate(port: int, module: Module) -> None:
    job = {
        "memoryMap": [[module.debug_file, module.debug_id]],
        "stacks": [[[0, a] for a in module.addresses]],
    }
    status, answer = request(
        port, "POST", "/symbolicate/v5", json.dumps(job).encode(), {"Content-Type": "text/json"}
    )
    found = status == 200 and all(json.loads(answer)["results"][0]["found_modules"].values())
    if not found:
        raise SystemExit(f"/symbolicate/v5 answered {status}: {answer[:300]!r}")


def symbolication(port: int, modules: list[Module], count: int, database_url: str) -> None:
    for module in modules:  # cold: each fetched and parsed once
        started = time.perf_counter()
        symbolicate(port, module)
        print(f"  cold {module.debug_file}: {time.perf_counter() - started:.2f} s")
    burst(count, lambda i: symbolicate(port, modules[i % len(modules)]))


WORKLOADS = {"crashes": crashes, "downloads": downloads, "symbolication": symbolication}
COUNTS = {"crashes": "crashes", "downloads": "downloads", "symbolication": "symbolications"}


def serve(env: dict[str, str], processes: int, log: Path) -> tuple[subprocess.Popen, int]:
    """A fresh serve, its output (access lines included) written to ``log``."""
    server, port = start_serve({**env, "WEB_PROCESSES": str(processes)}, log, ROOT, seconds=120)
    deadline = time.monotonic() + 120
    while request(port, "GET", "/__heartbeat__")[0] != 200:
        if time.monotonic() > deadline:
            raise SystemExit("serve is not healthy")
        time.sleep(0.5)
    return server, port


def show(title: str, procs: list[Proc]) -> None:
    rss, pss = sum(p.rss for p in procs), sum(p.pss for p in procs)
    print(f"  {title:<28} total RSS {rss:6.0f} MiB, PSS {pss:6.0f} MiB, {len(procs)} processes")
    for p in sorted(procs, key=lambda p: p.pid):
        print(f"      {p.role:<18} pid {p.pid:<8} RSS {p.rss:6.1f}  PSS {p.pss:6.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--processes", default="1,2", help="WEB_PROCESSES values, comma-separated")
    parser.add_argument("--crashes", type=int, default=300)
    parser.add_argument("--downloads", type=int, default=3000)
    parser.add_argument("--symbolications", type=int, default=300)
    parser.add_argument("--sym", type=Path, action="append", default=[], help="another .sym")
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    args = parser.parse_args()
    files = sorted((ROOT / "tests" / "data").glob("*.sym")) + args.sym

    data_dir = Path(tempfile.mkdtemp(prefix="symbolon-bench-memory-"))
    stack = EmbeddedStack(data_dir / "stack")
    live = stack.start(load_settings({"SYMBOLON_DATA_DIR": str(data_dir)}, dotenv_path=None))
    server: subprocess.Popen | None = None
    try:
        modules = [module_of(path.read_bytes()) for path in files]
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("SYMBOL", "WEB_"))},
            "SYMBOLON_DATA_DIR": str(data_dir / "serve"),
            "DATABASE_URL": str(live.database_url),
            "REDIS_URL": str(live.redis_url),
            "REDIS_STORE_URL": str(live.redis_store_url),
            "SECRET_KEY": "bench",
            "CRASHMOVER_CRASHSTORAGE_CLASS": "fs",
            "CRASHMOVER_CRASHSTORAGE_FS_ROOT": str(data_dir / "crashes"),
            "LOGGING_LEVEL": "WARNING",
        }
        embedded = [psutil.Process(p.pid) for p in psutil.process_iter() if _embedded(p, data_dir)]
        print(f"{os.cpu_count()} cores; modules: " + ", ".join(m.debug_file for m in modules))
        print("embedded servers (not in serve's tree): " + ", ".join(
            f"{p.name()} {p.memory_info().rss / MiB:.0f} MiB" for p in embedded
        ))  # fmt: skip
        for processes in [int(n) for n in args.processes.split(",")]:
            print(f"\nWEB_PROCESSES={processes}")
            for name in args.workloads.split(","):
                # A location of its own: the symcaches (disk, Redis store) and remembered
                # misses of a run are namespaced by its locations, so every run starts cold.
                url, _ = store_symbols(data_dir / f"symbols-{processes}-{name}", files)
                urls = {"SYMBOL_URLS": url, "UPLOAD_DEFAULT_URL": url}
                server, port = serve({**env, **urls}, processes, data_dir / "serve.log")
                show(f"idle (before {name})", settled(server.pid))
                count = getattr(args, COUNTS[name])
                WORKLOADS[name](port, modules, count, str(live.database_url))
                show(f"after {count} {name}", settled(server.pid))
                stop_servers(server, timeout=60)
                server = None
    except BaseException:
        log = data_dir / "serve.log"
        if log.exists():
            print("serve's last lines:\n" + "\n".join(log.read_text().splitlines()[-30:]))
        raise
    finally:
        stop_servers(server)
        stack.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def _embedded(process: psutil.Process, data_dir: Path) -> bool:
    try:
        return str(data_dir) in " ".join(process.cmdline()) or any(
            str(data_dir) in f.path for f in process.open_files()
        )
    except psutil.Error:
        return False


if __name__ == "__main__":
    main()
