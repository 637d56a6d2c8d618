#!/usr/bin/env python
"""Server CPU per crash of ``POST /submit`` with the default settings, code against code.

``bench/crashes.py`` measures throughput with ``LOGGING_LEVEL=WARNING``; this one runs ``symbolon
serve`` as an operator would (``INFO`` logging, metrics to the log, publishing to the embedded
Redis), storing to a directory (``CRASHMOVER_CRASHSTORAGE_CLASS=fs``), with ``WORKER_THREADS=0``
so that no crash processing shares the process. Each ``--code`` is a source tree (a ``git
worktree`` of another commit, say) put first on ``PYTHONPATH`` of the server; the runs of the
trees are interleaved, ``--repeat`` times, and the median of each is printed with the load
average.

    .venv/bin/python bench/crash_cpu.py --code before=/tmp/old --code after=. --repeat 3

``--profile DIR`` also records each server with ``py-spy`` (which costs CPU itself: profile runs
are for finding where the time goes, not for the figures).

``--alternate CYCLES`` starts every tree's server at once and, for each cell, runs the load
against one after the other for ``--duration`` seconds, CYCLES times, in the reverse order every
other cycle. The runs of one cycle share the host's speed of the moment, which changes by tens of
percent within minutes here: the paired ratio against the first tree is the figure to read.

    .venv/bin/python bench/crash_cpu.py --code before=/tmp/old --code after=. --alternate 10 \
        --duration 3 --connections 8 --processes 2
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import crashes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--code", action="append", default=[], help="name=source tree")
    parser.add_argument("--duration", type=int, default=12)
    parser.add_argument("--connections", default="8,32")
    parser.add_argument("--processes", default="1")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--logging-level", default="INFO")
    parser.add_argument("--profile", type=Path, help="py-spy recordings go here")
    parser.add_argument("--alternate", type=int, metavar="CYCLES", help="servers up together")
    args = parser.parse_args()
    # A SIGTERM (or a timeout's kill) must still stop the services it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    codes = [c.split("=", 1) for c in (args.code or ["current=."])]
    work = Path(tempfile.mkdtemp(prefix="symbolon-bench-crash-cpu-"))
    bench: crashes.Bench | None = None
    results: dict[tuple[str, int, int], list[crashes.Run]] = {}
    loads: list[float] = []
    try:
        body = work / "report.multipart"
        crashes.make_report(body, 400 * 1024, 1)
        bench = crashes.Bench(args, work, body)
        bench.start_services()
        cells = [
            (int(conns), int(processes))
            for conns in args.connections.split(",")
            for processes in args.processes.split(",")
        ]
        if args.alternate:
            for conns, processes in cells:
                alternate(args, bench, codes, conns, processes)
            return
        for attempt in range(args.repeat):
            for conns, processes in cells:
                for name, tree in codes:
                    os.environ["PYTHONPATH"] = str(Path(tree).resolve())
                    loads.append(os.getloadavg()[0])
                    spy = start_profile(args, f"{name}-c{conns}-p{processes}-{attempt}")
                    run = bench.symbolon("fs", conns, args.logging_level, processes)
                    if spy is not None:
                        spy.join()
                    run.name = f"{name} {processes}p"
                    results.setdefault((name, conns, processes), []).append(run)
                    print(crashes.row(run), f" load {loads[-1]:.2f}", flush=True)
    finally:
        if bench is not None:
            bench.stop_services()
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nmedians of {args.repeat} (load average 1 min: {min(loads):.2f} to {max(loads):.2f})")
    print(
        f"{'code':<10} {'procs':>5} {'conns':>5} {'CPU ms/crash':>12} {'crashes/s':>9} "
        f"{'p99 ms':>7}"
    )
    for (name, conns, processes), runs in results.items():
        cpu = statistics.median(1000 * r.server_cpu_per_crash for r in runs)
        rate = statistics.median(r.crashes_s for r in runs)
        p99 = statistics.median(r.p99 for r in runs)
        print(f"{name:<10} {processes:>5} {conns:>5} {cpu:>12.2f} {rate:>9.0f} {p99:>7.1f}")


def alternate(
    args: argparse.Namespace,
    bench: crashes.Bench,
    codes: list[list[str]],
    conns: int,
    processes: int,
) -> None:
    """Every tree's server up at once, runs alternating between them (see ``--alternate``)."""
    servers: dict[str, crashes.Server] = {}
    runs: dict[str, list[crashes.Run]] = {}
    try:
        for name, tree in codes:
            os.environ["PYTHONPATH"] = str(Path(tree).resolve())
            servers[name] = bench.start_symbolon("fs", args.logging_level, processes)
            runs[name] = []
        for cycle in range(args.alternate):
            order = list(servers) if cycle % 2 == 0 else list(servers)[::-1]
            for name in order:
                server = servers[name]
                run = crashes.Run(f"{name} {processes}p", conns)
                groups = {"server": server.pids, **bench.services}
                crashes.measure(server.port, groups, args, bench.body, run)
                runs[name].append(run)
                print(crashes.row(run), flush=True)
    finally:
        for server in servers.values():
            crashes.stop(server.proc)
    print(f"\n{processes} processes, {conns} connections, {args.alternate} cycles of "
          f"{args.duration} s a server (medians)")  # fmt: skip
    print(f"{'code':<10} {'CPU ms/crash':>12} {'crashes/s':>9} {'p99 ms':>7}  stored")
    first = next(iter(runs))
    for name, done in runs.items():
        # Each run may leave one late crash per connection stored without its answer counted.
        total = crashes.Run(name, conns * len(done))
        total.accepted = sum(r.accepted for r in done)
        total.expected = total.accepted + 1  # the warm-up
        bench.check(servers[name], total)
        cpu = statistics.median(1000 * r.server_cpu_per_crash for r in done)
        rate = statistics.median(r.crashes_s for r in done)
        p99 = statistics.median(r.p99 for r in done)
        print(f"{name:<10} {cpu:>12.2f} {rate:>9.0f} {p99:>7.1f}  {total.storage_check()}")
    for name, done in runs.items():
        if name == first:
            continue
        ratios = sorted(
            r.server_cpu_per_crash / f.server_cpu_per_crash
            for r, f in zip(done, runs[first], strict=True)
        )
        shown = ", ".join(f"{v:.2f}" for v in ratios)
        print(f"CPU a crash, {name} / {first}, cycle by cycle: median "
              f"{statistics.median(ratios):.3f} ({shown})")  # fmt: skip


def start_profile(args: argparse.Namespace, label: str) -> threading.Thread | None:
    """py-spy on the first server process that appears listening, during the run."""
    if args.profile is None:
        return None
    args.profile.mkdir(parents=True, exist_ok=True)
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    before = set(os.listdir("/proc"))

    def record() -> None:
        import time

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for pid in set(os.listdir("/proc")) - before:
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                except OSError:
                    continue
                if b"serve" in cmd and b"symbolon" in cmd:
                    while not crashes.child_pids(os.getpid()) or all(  # until wrk runs
                        Path(f"/proc/{c}/comm").read_text().strip() != "wrk"
                        for c in crashes.child_pids(os.getpid())
                    ):
                        time.sleep(0.1)
                    out = args.profile / f"{label}.txt"
                    subprocess.run(
                        [spy, "record", "-p", pid, "-d", str(args.duration), "-r", "200",
                         "-f", "raw", "-o", str(out), "--nonblocking"],
                        capture_output=True,
                    )  # fmt: skip
                    return
            time.sleep(0.1)

    thread = threading.Thread(target=record, daemon=True)
    thread.start()
    return thread


if __name__ == "__main__":
    main()
