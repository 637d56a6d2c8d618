#!/usr/bin/env python
"""CPU per answer of a bare Tornado handler (a constant 302), on Tornado's own HTTP server and on
``serve``'s (server/keepalive.py), and with each of its two changes alone.

Each server runs on uvloop, pinned to CPU 0, with wrk pinned to CPU 1, so that the server has a
core of its own and its CPU time per answer does not depend on how the two share the machine.
The servers are interleaved, ``--repeat`` times. Prints requests/s and the server's CPU time per
answer (user + system, from /proc). One server process differs from the next of the same kind by
10 to 15% here, so take five or more repetitions.

    .venv/bin/python bench/keepalive.py [--duration 8] [--connections 16] [--repeat 6]

Needs ``wrk`` and ``taskset`` (Debian packages ``wrk``, ``util-linux``) and two CPUs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import free_port, stop_servers, wait_port  # noqa: E402

MODES = {
    "tornado": "Tornado's HTTPServer (a header timer per request, TCP_NODELAY toggled)",
    "no-timer": "Tornado's, with the sweep instead of the header timer",
    "no-toggle": "Tornado's, with TCP_NODELAY kept set",
    "serve": "serve's KeepAliveHTTPServer (both)",
}
IDLE_SECONDS = 75.0


def serve(port: int, mode: str) -> None:
    import tornado.httpserver
    import tornado.web
    import uvloop

    from symbolon.server.keepalive import KeepAliveHTTPServer, keep_nodelay

    class Redirect(tornado.web.RequestHandler):
        def get(self, *_: str) -> None:
            self.set_status(302)
            self.set_header("Location", "http://127.0.0.1:9/bucket/v1/a.pdb/ID/a.sym")
            self.finish()

    class OnlyNoDelay(tornado.httpserver.HTTPServer):
        def handle_stream(self, stream, address):  # type: ignore[no-untyped-def]
            keep_nodelay(stream)
            super().handle_stream(stream, address)

    class OnlySweep(KeepAliveHTTPServer):
        def handle_stream(self, stream, address):  # type: ignore[no-untyped-def]
            super().handle_stream(stream, address)
            del stream.set_nodelay  # Tornado's own toggles again: only the timer is replaced

    servers = {
        "tornado": tornado.httpserver.HTTPServer,
        "no-timer": OnlySweep,
        "no-toggle": OnlyNoDelay,
        "serve": KeepAliveHTTPServer,
    }

    async def main() -> None:
        app = tornado.web.Application([(r"/.*", Redirect)], log_function=lambda _: None)
        server = servers[mode](app, idle_connection_timeout=IDLE_SECONDS)
        server.listen(port, "127.0.0.1")
        await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):  # stop_servers' SIGINT
        uvloop.run(main())


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def wrk(url: str, seconds: int, connections: int) -> float:
    out = subprocess.run(
        ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if match is None:
        raise SystemExit(f"wrk said something else:\n{out}")
    return float(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    for tool in ("wrk", "taskset"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is needed")
    if (os.cpu_count() or 1) < 2:
        raise SystemExit("two CPUs are needed: the server on one, wrk on the other")
    hz = os.sysconf("SC_CLK_TCK")
    results: dict[str, list[tuple[float, float]]] = {mode: [] for mode in MODES}
    for _ in range(args.repeat):
        for mode in MODES:
            port = free_port()
            proc = subprocess.Popen(
                ["taskset", "-c", "0", sys.executable, __file__, "--serve", str(port), mode]
            )
            try:
                wait_port(port, proc)
                url = f"http://127.0.0.1:{port}/x"
                wrk(url, 2, args.connections)  # warm up
                before = cpu_ticks(proc.pid)
                rps = wrk(url, args.duration, args.connections)
                cpu_s = (cpu_ticks(proc.pid) - before) / hz
                results[mode].append((rps, cpu_s / (rps * args.duration) * 1e6))
                print(f"{mode:<10} {rps:>8.0f} req/s {results[mode][-1][1]:>6.1f} µs", flush=True)
            finally:
                stop_servers(proc)
    print(
        f"\nmedians of {args.repeat}, wrk -c{args.connections} -d{args.duration}s on CPU 1, "
        f"server on CPU 0; load average at the end {os.getloadavg()[0]:.2f}"
    )
    print(f"{'server':<66} {'req/s':>7} {'CPU µs/answer [min-max]':>24}")
    for mode, label in MODES.items():
        rps = statistics.median(r for r, _ in results[mode])
        cpus = [c for _, c in results[mode]]
        spread = f"{statistics.median(cpus):.1f} [{min(cpus):.0f}-{max(cpus):.0f}]"
        print(f"{label:<66} {rps:>7.0f} {spread:>24}")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]), sys.argv[3])
    else:
        main()
