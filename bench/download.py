#!/usr/bin/env python
"""Download throughput on 127.0.0.1: cached hits, uncached misses, and the framework's limit.

Starts the embedded PostgreSQL and Redis (and the S3 emulator when buckets are measured) in a
temporary directory, and a bare Tornado app that answers every request with a constant 302. For
each backend (``--backend``: three private directories, three private buckets on the S3
emulator, or both, one after the other) it runs one ``symbolon serve`` process reading the three
locations, the file in the second, and runs ``wrk`` against it; then against the bare app. It
prints requests/s, latency percentiles and the server's CPU time per answer side by side, and
each server's peak RSS. With ``--processes N`` serve runs N web processes (WEB_PROCESSES), and
each scenario also prints the CPU seconds each web process spent and the least busy one's over
the busiest one's: wrk's keep-alive connections spread unevenly show there.

    .venv/bin/python bench/download.py [--duration 10] [--connections 32] [--backend both]
        [--processes 1] [--logging-level ERROR]

The server inherits the environment: ``STATSD_HOST=127.0.0.1`` (and a listener) measures the
metrics sent to statsd too.

Needs ``wrk`` (Debian package ``wrk``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import boto3

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import (  # noqa: E402
    WebProcessCPU,
    free_port,
    load_average,
    proc_status_mb,
    stop_servers,
    wait_port,
    web_pids,
)

from symbolon.conf import Settings, load_settings  # noqa: E402
from symbolon.server.embedded import EmbeddedStack  # noqa: E402
from symbolon.storage.sources import SymbolSource  # noqa: E402
from symbolon.storage.stores.directory import DirectoryStore  # noqa: E402

BUCKETS = ("bench-one", "bench-two", "bench-three")
DIRECTORIES = BUCKETS
DEBUG_ID = "44E4EC8C2F41492B9369D6B9A059577C2"
HIT_KEY = f"xul.pdb/{DEBUG_ID}/xul.sym"
SECRET_KEY = "bench"  # signs the directories' URLs
HIT = "(a) cached hit, private location (signed 302)"
UNCACHED_MISS = "(b) uncached miss through 3 locations (404)"
CACHED_MISS = "(b') cached miss through 3 locations (404)"
BARE = "(c) bare Tornado constant 302"


def found(pattern: str, text: str, flags: int = 0) -> re.Match[str]:
    match = re.search(pattern, text, flags)
    if match is None:
        raise SystemExit(f"wrk said something else:\n{text}")
    return match


def wrk(url: str, args: argparse.Namespace, script: Path | None = None) -> dict[str, Any]:
    command = [
        "wrk",
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{args.duration}s",
        "--latency",
    ]
    if script:
        command += ["-s", str(script)]
    out = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    result: dict[str, Any] = {"rps": float(found(r"Requests/sec:\s+([\d.]+)", out).group(1))}
    for pct in ("50", "99"):
        value, unit = found(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
        result[f"p{pct}"] = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["non_2xx_3xx"] = int(non_2xx.group(1)) if non_2xx else 0
    errors = re.search(r"Socket errors: (.*)", out)
    result["socket_errors"] = errors.group(1) if errors else "none"
    return result


def directory_locations(base: Path) -> list[str]:
    """Three private directories, the hit in the second, written as uploads write."""
    urls = []
    for name in DIRECTORIES:
        source = SymbolSource.parse((base / name).as_uri())
        store = DirectoryStore(source, SECRET_KEY)
        asyncio.run(store.ensure())
        if name == "bench-two":
            asyncio.run(store.put_bytes(source.object_key(HIT_KEY), b"MODULE"))
        urls.append(source.url)
    return urls


def bucket_locations(endpoint: str) -> list[str]:
    """Three private buckets on the embedded S3 emulator, the hit in the second."""
    s3 = boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id="k", aws_secret_access_key="s",
    )  # fmt: skip
    for bucket in BUCKETS:
        s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket="bench-two", Key=f"v1/{HIT_KEY}", Body=b"MODULE")
    return [f"{endpoint}/{b}" for b in BUCKETS]


def measure(
    live: Settings, urls: list[str], args: argparse.Namespace
) -> tuple[dict[str, dict[str, Any]], float]:
    """One serve reading ``urls``: each scenario's figures, and its peak RSS (its first web
    process's with several)."""
    port = free_port()
    env: dict[str, str] = {
        **os.environ,
        "DATABASE_URL": str(live.database_url),
        "REDIS_URL": str(live.redis_url),  # both set by the embedded stack
        "REDIS_STORE_URL": str(live.redis_store_url),
        "SYMBOL_URLS": ",".join(urls),
        "UPLOAD_DEFAULT_URL": urls[0],
        "ENABLE_CRASH_COLLECTOR": "false",  # not what this measures
        "AWS_ACCESS_KEY_ID": "k",
        "AWS_SECRET_ACCESS_KEY": "s",
        "SECRET_KEY": SECRET_KEY,
        "PORT": str(port),
        "WORKER_THREADS": "0",
        "WEB_PROCESSES": str(args.processes),
        "LOGGING_LEVEL": args.logging_level,
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "symbolon.admin_cli.main", "serve"], env=env, cwd=ROOT
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_port(port, server)
        web = WebProcessCPU(web_pids(server.pid, args.processes), port)
        hit = f"{base}/{HIT_KEY}"
        miss = f"{base}/xul.pdb/{'0' * 32}1/xul.sym"
        for url in (hit, miss):  # warm the caches: steady state is what is measured
            with contextlib.suppress(urllib.error.HTTPError):
                urllib.request.urlopen(urllib.request.Request(url, method="HEAD"))
        scenarios = {
            HIT: (hit, None),
            UNCACHED_MISS: (f"{base}/", ROOT / "bench" / "random_miss.lua"),
            CACHED_MISS: (miss, None),
        }
        results = {}
        for name, (url, script) in scenarios.items():
            web.start()
            results[name] = wrk(url, args, script)
            web.stop()
            # The server's own CPU per answer: what the machine's other load does not change.
            results[name]["cpu_us"] = web.total / (results[name]["rps"] * args.duration) * 1e6
            results[name]["web"] = web.describe()
        return results, proc_status_mb(web.pids[0], "VmHWM")
    finally:
        stop_servers(server)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per scenario")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument(
        "--processes", type=int, default=1, help="web processes of symbolon serve (WEB_PROCESSES)"
    )
    parser.add_argument(
        "--backend",
        choices=("directory", "s3", "both"),
        default="both",
        help="where the three locations are: directories, buckets on the S3 emulator, or each",
    )
    parser.add_argument(
        "--logging-level", default="ERROR", help="INFO writes the access log, a line an answer"
    )
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed: apt-get install wrk")
    backends = ("directory", "s3") if args.backend == "both" else (args.backend,)

    data_dir = Path(tempfile.mkdtemp(prefix="symbolon-bench-"))
    stack = EmbeddedStack(data_dir)
    # The S3 emulator only when buckets are measured.
    storage = "s3" if "s3" in backends else "directory"
    live = stack.start(
        load_settings(
            {"SYMBOLON_DATA_DIR": str(data_dir), "EMBEDDED_STORAGE": storage}, dotenv_path=None
        )
    )
    bare: subprocess.Popen | None = None
    results: dict[str, dict[str, dict[str, Any]]] = {}
    rss: dict[str, float] = {}
    try:
        bare_port = free_port()
        bare = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "bare_redirect.py"), str(bare_port)]
        )
        wait_port(bare_port, bare)
        for backend in backends:
            if backend == "s3":
                urls = bucket_locations(live.symbol_urls[0].rsplit("/", 1)[0])
            else:
                urls = directory_locations(data_dir / "directories")
            results[backend], rss[backend] = measure(live, urls, args)
        bare_result = wrk(f"http://127.0.0.1:{bare_port}/x", args)
    finally:
        stop_servers(bare)
        stack.stop()
        shutil.rmtree(data_dir, ignore_errors=True)

    print(
        f"\nwrk -t{args.threads} -c{args.connections} -d{args.duration}s, "
        f"{args.processes} web process(es), {os.cpu_count()} cores; "
        f"load average at the end {load_average()}"
    )
    header = "".join(
        f" {b + ' req/s':>15} {'p50 ms':>7} {'p99 ms':>7} {'CPU us':>7}" for b in backends
    )
    print(f"{'scenario':<46}{header}  errors")
    for scenario in (HIT, UNCACHED_MISS, CACHED_MISS):
        row = "".join(
            f" {results[b][scenario]['rps']:>15.0f} {results[b][scenario]['p50']:>7.2f}"
            f" {results[b][scenario]['p99']:>7.2f} {results[b][scenario]['cpu_us']:>7.0f}"
            for b in backends
        )
        errors = ", ".join(str(results[b][scenario]["socket_errors"]) for b in backends)
        print(f"{scenario:<46}{row}  {errors}")
        if args.processes > 1:
            for b in backends:
                print(f"{'':<46} {b}: {results[b][scenario]['web']}")
    r = bare_result
    print(f"{BARE:<46} {r['rps']:>15.0f} {r['p50']:>7.2f} {r['p99']:>7.2f}  {r['socket_errors']}")
    print()
    for b in backends:
        hit, uncached = results[b][HIT]["rps"], results[b][UNCACHED_MISS]["rps"]
        print(
            f"{b}: cached hit / bare Tornado {hit / r['rps']:.0%} (goal: at least 70%); "
            f"uncached miss / cached hit {uncached / hit:.0%}; server peak RSS {rss[b]:.0f} MB"
        )


if __name__ == "__main__":
    main()
