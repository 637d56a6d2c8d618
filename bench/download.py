#!/usr/bin/env python
"""Download throughput on 127.0.0.1: cached hits, uncached misses, and the framework's limit.

Starts the embedded PostgreSQL, Redis and S3 in a temporary directory, one ``symbolon serve``
process configured with three private symbol sources, and a bare Tornado app that answers every
request with a constant 302. Then runs ``wrk`` against each and prints requests/s and latency
percentiles, and the server's peak RSS.

    .venv/bin/python bench/download.py [--duration 10] [--connections 32]

Needs ``wrk`` (Debian package ``wrk``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import boto3

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import free_port, proc_status_mb, stop_servers, wait_port  # noqa: E402

from symbolon.conf import load_settings  # noqa: E402
from symbolon.server.embedded import EmbeddedStack  # noqa: E402

BUCKETS = ("bench-one", "bench-two", "bench-three")
DEBUG_ID = "44E4EC8C2F41492B9369D6B9A059577C2"


def wrk(url: str, args: argparse.Namespace, script: Path | None = None) -> dict[str, float]:
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
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}
    for pct in ("50", "99"):
        value, unit = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
        result[f"p{pct}"] = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["non_2xx_3xx"] = int(non_2xx.group(1)) if non_2xx else 0
    errors = re.search(r"Socket errors: (.*)", out)
    result["socket_errors"] = errors.group(1) if errors else "none"
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per scenario")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed: apt-get install wrk")

    data_dir = Path(tempfile.mkdtemp(prefix="symbolon-bench-"))
    stack = EmbeddedStack(data_dir)
    live = stack.start(load_settings({"SYMBOLON_DATA_DIR": str(data_dir)}, dotenv_path=None))
    endpoint = live.symbol_urls[0].rsplit("/", 1)[0]
    procs: list[subprocess.Popen] = []
    try:
        s3 = boto3.client(
            "s3", endpoint_url=endpoint, region_name="us-east-1",
            aws_access_key_id="k", aws_secret_access_key="s",
        )  # fmt: skip
        for bucket in BUCKETS:
            s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket="bench-two", Key=f"v1/xul.pdb/{DEBUG_ID}/xul.sym", Body=b"MODULE")
        urls = [f"{endpoint}/{b}" for b in BUCKETS]

        port, bare_port = free_port(), free_port()
        env = {
            **os.environ,
            "DATABASE_URL": live.database_url,
            "REDIS_URL": live.redis_url,
            "REDIS_STORE_URL": live.redis_store_url,
            "SYMBOL_URLS": ",".join(urls),
            "UPLOAD_DEFAULT_URL": urls[0],
            "ENABLE_CRASH_COLLECTOR": "false",  # not what this measures
            "AWS_ACCESS_KEY_ID": "k",
            "AWS_SECRET_ACCESS_KEY": "s",
            "SECRET_KEY": "bench",
            "PORT": str(port),
            "WORKER_THREADS": "0",
            "LOGGING_LEVEL": "ERROR",
        }
        server = subprocess.Popen(
            [sys.executable, "-m", "symbolon.admin_cli.main", "serve"], env=env, cwd=ROOT
        )
        bare = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "bare_redirect.py"), str(bare_port)]
        )
        procs += [server, bare]
        base = f"http://127.0.0.1:{port}"
        wait_port(port)
        wait_port(bare_port)
        hit = f"{base}/xul.pdb/{DEBUG_ID}/xul.sym"
        miss = f"{base}/xul.pdb/{'0' * 32}1/xul.sym"
        for url in (hit, miss):  # warm the caches: steady state is what is measured
            with contextlib.suppress(urllib.error.HTTPError):
                urllib.request.urlopen(urllib.request.Request(url, method="HEAD"))

        results = {
            "(a) cached hit, private source (presigned 302)": wrk(hit, args),
            "(b) uncached miss through 3 sources (404)": wrk(
                f"{base}/", args, ROOT / "bench" / "random_miss.lua"
            ),
            "(b') cached miss through 3 sources (404)": wrk(miss, args),
            "(c) bare Tornado constant 302": wrk(f"http://127.0.0.1:{bare_port}/x", args),
        }
        rss = proc_status_mb(server.pid, "VmHWM")
    finally:
        stop_servers(*procs)
        stack.stop()
        shutil.rmtree(data_dir, ignore_errors=True)

    print(
        f"\nwrk -t{args.threads} -c{args.connections} -d{args.duration}s, "
        f"one server process, {os.cpu_count()} cores"
    )
    print(f"{'scenario':<50} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8}  errors")
    for name, r in results.items():
        print(
            f"{name:<50} {r['rps']:>9.0f} {r['p50']:>8.2f} {r['p99']:>8.2f}  {r['socket_errors']}"
        )
    ratio = (
        results["(a) cached hit, private source (presigned 302)"]["rps"]
        / results["(c) bare Tornado constant 302"]["rps"]
    )
    print(f"\ncached hit / bare Tornado: {ratio:.0%} (goal: at least 70%)")
    print(f"server peak RSS: {rss:.0f} MB")


if __name__ == "__main__":
    main()
