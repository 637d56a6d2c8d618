#!/usr/bin/env python
"""Server CPU per cached download hit (or, with ``--miss``, remembered miss) with the default
settings, code against code.

``bench/download.py`` measures throughput with ``LOGGING_LEVEL=ERROR``; this one runs ``symbolon
serve`` as an operator would (``INFO`` logging, so an access log line a request) behind a proxy
(every request carries ``X-Forwarded-Proto: https``), one web process per ``--code`` (a source
tree, a ``git worktree`` of another commit say, put first on the server's ``PYTHONPATH``), all
on one embedded PostgreSQL, Redis and S3. The hit is a file in a private bucket (a presigned
redirect); the miss, a file no bucket has, asked before (a 404, its missing symbol counted).
Runs of ``wrk -t1 -c16`` alternate between the servers, ``--repeat`` times each, so that the
host's speed, which moves from minute to minute on a virtual machine, moves for all of them;
each run's server CPU time (user and system, from ``/proc``) per answer is recorded. Printed:
each server's median and minimum, the share of its CPU spent in user space, and the median of
the runs' ratios against the first ``--code``.

    .venv/bin/python bench/hit_cpu.py --code before=/tmp/old --code after=. --repeat 10 [--miss]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import download  # noqa: E402
from common import load_average, start_serve, stop_servers  # noqa: E402

from symbolon.conf import load_settings  # noqa: E402
from symbolon.server.embedded import EmbeddedStack  # noqa: E402

BEHIND_PROXY = 'wrk.headers["X-Forwarded-Proto"] = "https"\n'
MISS_KEY = f"xul.pdb/{'0' * 31}11/xul.sym"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--code", action="append", default=[], help="name=source tree")
    parser.add_argument("--duration", type=int, default=3, help="seconds a run")
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--logging-level", default="INFO")
    parser.add_argument("--miss", action="store_true", help="a remembered miss, not a hit")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed: apt-get install wrk")
    trees = {name: Path(tree).resolve() for name, tree in (c.split("=", 1) for c in args.code)}
    if not trees:
        trees = {"this": ROOT}

    data_dir = Path(tempfile.mkdtemp(prefix="symbolon-bench-"))
    stack = EmbeddedStack(data_dir)
    live = stack.start(
        load_settings({"SYMBOLON_DATA_DIR": str(data_dir), "EMBEDDED_STORAGE": "s3"}, None)
    )
    urls = download.bucket_locations(live.symbol_urls[0].rsplit("/", 1)[0])
    env = {
        **os.environ,
        "DATABASE_URL": str(live.database_url),
        "REDIS_URL": str(live.redis_url),
        "REDIS_STORE_URL": str(live.redis_store_url),
        "SYMBOL_URLS": ",".join(urls),
        "UPLOAD_DEFAULT_URL": urls[0],
        "ENABLE_CRASH_COLLECTOR": "false",
        "AWS_ACCESS_KEY_ID": "k",
        "AWS_SECRET_ACCESS_KEY": "s",
        "SECRET_KEY": download.SECRET_KEY,
        "WORKER_THREADS": "0",
        "WEB_PROCESSES": "1",
        "LOGGING_LEVEL": args.logging_level,
    }
    script = data_dir / "behind_proxy.lua"
    script.write_text(BEHIND_PROXY)
    servers: dict[str, tuple[subprocess.Popen, int]] = {}
    per_hit: dict[str, list[float]] = {name: [] for name in trees}
    user = dict.fromkeys(trees, 0.0)
    system = dict.fromkeys(trees, 0.0)
    try:
        for name, tree in trees.items():
            # Its tree first on the path: ``python -m`` imports from the working directory.
            servers[name] = start_serve(
                {**env, "PYTHONPATH": str(tree)}, log=data_dir / f"{name}.log", cwd=tree
            )
        key = MISS_KEY if args.miss else download.HIT_KEY
        hits = {name: f"http://127.0.0.1:{port}/{key}" for name, (_, port) in servers.items()}
        for url in hits.values():  # remembered (and a miss counted: a GET) from now on
            try:
                urllib.request.urlopen(
                    url if args.miss else urllib.request.Request(url, method="HEAD")
                ).close()
            except urllib.error.HTTPError as exc:
                exc.close()
                if not args.miss or exc.code != 404:
                    raise
        for _ in range(args.repeat):
            for name, (server, _) in servers.items():
                before = psutil.Process(server.pid).cpu_times()
                out = subprocess.run(
                    ["wrk", "-t1", "-c16", f"-d{args.duration}s", "-s", str(script), hits[name]],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                after = psutil.Process(server.pid).cpu_times()
                answers = float(download.found(r"Requests/sec:\s+([\d.]+)", out)[1]) * args.duration
                user[name] += after.user - before.user
                system[name] += after.system - before.system
                spent = after.user + after.system - before.user - before.system
                per_hit[name].append(spent / answers * 1e6)
    finally:
        stop_servers(*(server for server, _ in servers.values()))
        stack.stop()
        shutil.rmtree(data_dir, ignore_errors=True)

    print(
        f"\n{'misses' if args.miss else 'hits'}: wrk -t1 -c16, {args.repeat} runs of "
        f"{args.duration} s a server, LOGGING_LEVEL={args.logging_level}; load average at the "
        f"end {load_average()}"
    )
    first = next(iter(trees))
    print(f"{'code':<12} {'median µs':>10} {'min µs':>8} {'user share':>11} {'vs ' + first:>10}")
    for name, values in per_hit.items():
        ratios = [v / f for v, f in zip(values, per_hit[first], strict=True)]
        share = user[name] / max(user[name] + system[name], 1e-9)
        print(
            f"{name:<12} {statistics.median(values):>10.0f} {min(values):>8.0f} {share:>11.2f}"
            f" {statistics.median(ratios):>10.3f}"
        )


if __name__ == "__main__":
    main()
