#!/usr/bin/env python
"""Symbolication speed on 127.0.0.1, with real .sym files of real binaries.

    .venv/bin/python bench/symbolicate.py [--seconds 20] [--processes 1] [--clients 1]

Builds (once, cached in .data/bench-syms) a .sym file of over 100 MB and a set of ten modules
(bench/make_syms.py), starts the embedded PostgreSQL, Redis and S3 in a temporary directory, stores
every module in S3 gzip-compressed as uploads do, and one ``symbolon serve`` process, then
measures:

  (a) one cold request needing the big module (download from S3, inflate, parse in the pool,
      write the cache, look up), against symbolic alone parsing the same file in memory;
  (b) warm v5 requests of a profiler's size (10 jobs, one module each, 2,000 addresses each),
      requests/s and addresses/s, against a bare loop of symbolic lookups of the same addresses,
      and the first (cold) request of that payload;
  (c) 20 concurrent cold requests for one big module: parses counted from the server's own
      metrics (a statsd listener), wall time against (a).

With ``--processes N`` serve runs N web processes (WEB_PROCESSES), and (b) also prints the CPU
seconds each one spent in the warm run and the least busy one's over the busiest one's; the
warm run then keeps ``--clients`` keep-alive connections busy at once.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import json
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

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
from make_syms import make_big, module_set  # noqa: E402

from symbolon.conf import load_settings  # noqa: E402
from symbolon.server.embedded import EmbeddedStack  # noqa: E402
from symbolon.symbolication.symcaches import entry_name  # noqa: E402

ADDRESSES_PER_MODULE = 2000
MODULES = 10
CONCURRENT = 20
COLD_RUNS = 3
REFERENCE = 39_000  # addresses/s of the reference service, 1 worker, measured on this machine
BUCKET = "bench-symbols"
MODULE_LINE = re.compile(rb"^MODULE (\S+) (\S+) ([0-9A-Fa-f]+) (.+?)\r?$", re.M)

PARSE_ALONE = """
import sys, time, symbolic
data = open(sys.argv[1], "rb").read()
ident = symbolic.normalize_debug_id(sys.argv[2])
started = time.perf_counter()
archive = symbolic.Archive.from_bytes(data)
symcache = archive.get_object(debug_id=ident).make_symcache()
print(time.perf_counter() - started)
"""


def header(data: bytes) -> tuple[str, str]:
    """(debug file, debug id) from the MODULE line."""
    match = MODULE_LINE.search(data[:4096])
    assert match, "not a Breakpad sym file"
    return match.group(4).decode(), match.group(3).decode()


def with_new_id(data: bytes, ident: str) -> bytes:
    match = MODULE_LINE.search(data[:4096])
    start, end = match.span(3)
    return data[:start] + ident.encode() + data[end:]


def function_addresses(data: bytes, count: int, seed: int) -> list[int]:
    """Addresses inside FUNC records, as a sampling profiler would find them."""
    funcs = [
        (int(m.group(1), 16), int(m.group(2), 16))
        for m in re.finditer(rb"^FUNC (?:m )?([0-9a-f]+) ([0-9a-f]+) ", data, re.M)
    ]
    rng = random.Random(seed)
    picked = []
    for _ in range(count):
        start, size = rng.choice(funcs)
        picked.append(start + rng.randrange(max(size, 1)))
    return picked


class StatsdListener:
    """Counts the metrics the server sends: the number of parses is read from here."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.lines: list[str] = []
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            data = self.sock.recv(65536)
            self.lines += data.decode(errors="replace").splitlines()

    def count(self, stat: str) -> int:
        return sum(1 for line in self.lines if line.startswith(stat + ":"))


def post(
    port: int, body: bytes, conn: http.client.HTTPConnection | None = None, debug: bool = False
) -> bytes:
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    headers = {"Content-Type": "application/json", **({"Debug": "1"} if debug else {})}
    conn.request("POST", "/symbolicate/v5", body, headers)
    response = conn.getresponse()
    data = response.read()
    if own:
        conn.close()
    if response.status != 200:
        raise SystemExit(f"server answered {response.status}: {data[:200]!r}")
    return data


def entry_alone(path: Path, name: str, ident: str, out: Path) -> float:
    """What a parse process does for a cold request (inflate, parse, write), in a new process."""
    code = (
        "import sys, time\n"
        "from symbolon.symbolication.parse import build_entry\n"
        "started = time.perf_counter()\n"
        "assert build_entry(*sys.argv[1:5], compressed=True).ok\n"
        "print(time.perf_counter() - started)\n"
    )
    out_text = subprocess.run(
        [sys.executable, "-c", code, str(path), name, ident, str(out)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    ).stdout
    return float(out_text.strip())


def parse_alone(path: Path, ident: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", PARSE_ALONE, str(path), ident],
        capture_output=True,
        text=True,
        check=True,
    )
    return float(out.stdout.strip())


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found += [int(c) for c in text]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the warm run")
    parser.add_argument("--syms", type=Path, default=ROOT / ".data" / "bench-syms")
    parser.add_argument(
        "--processes", type=int, default=1, help="web processes of symbolon serve (WEB_PROCESSES)"
    )
    parser.add_argument("--clients", type=int, default=1, help="keep-alive connections, warm run")
    args = parser.parse_args()

    big = make_big(args.syms, 100)
    big_data = big.read_bytes()
    big_name, _ = header(big_data)
    modules = [big, *module_set(args.syms, MODULES - 1)]
    print(f"big module: {big.name}, {len(big_data) / 1e6:.1f} MB", file=sys.stderr)

    tmp = Path(tempfile.mkdtemp(prefix="symbolon-bench-sym-"))
    # Copies of the big module under new debug ids: each is cold once.
    cold_ids = [uuid_id() for _ in range(COLD_RUNS)]
    cold_c = uuid_id()
    copy_a = tmp / "a.sym"
    copy_a.write_bytes(with_new_id(big_data, cold_ids[0]))
    copy_gz = tmp / "a.sym.gz"
    copy_gz.write_bytes(gzip.compress(copy_a.read_bytes(), 6))

    stack = EmbeddedStack(tmp / "stack")
    live = stack.start(  # the modules are in a bucket of the S3 emulator
        load_settings(
            {"SYMBOLON_DATA_DIR": str(tmp / "stack"), "EMBEDDED_STORAGE": "s3"}, dotenv_path=None
        )
    )
    endpoint = live.symbol_urls[0].rsplit("/", 1)[0]
    statsd = StatsdListener()
    server: subprocess.Popen | None = None
    try:
        s3 = boto3.client(
            "s3", endpoint_url=endpoint, region_name="us-east-1",
            aws_access_key_id="k", aws_secret_access_key="s",
        )  # fmt: skip
        s3.create_bucket(Bucket=BUCKET)

        def store(data: bytes) -> tuple[str, str]:
            name, ident = header(data)
            symbol = name[:-4] + ".sym" if name.endswith(".pdb") else name + ".sym"
            s3.put_object(
                Bucket=BUCKET,
                Key=f"v1/{name}/{ident.upper()}/{symbol}",
                Body=gzip.compress(data, 6),
                ContentEncoding="gzip",
            )
            return name, ident

        print("storing the modules in S3...", file=sys.stderr)
        with ThreadPoolExecutor(2) as pool:
            module_keys = list(pool.map(store, (m.read_bytes() for m in modules)))
            copies = [with_new_id(big_data, ident) for ident in [*cold_ids, cold_c]]
            list(pool.map(store, copies))
            del copies

        port = free_port()
        url = f"{endpoint}/{BUCKET}"
        env = {
            **os.environ,
            "DATABASE_URL": live.database_url,
            "REDIS_URL": live.redis_url,
            "REDIS_STORE_URL": live.redis_store_url,
            "SYMBOL_URLS": url,
            "UPLOAD_DEFAULT_URL": url,
            "AWS_ACCESS_KEY_ID": "k",
            "AWS_SECRET_ACCESS_KEY": "s",
            "SECRET_KEY": "bench",
            "PORT": str(port),
            "WORKER_THREADS": "0",
            "WEB_PROCESSES": str(args.processes),
            "ENABLE_CRASH_COLLECTOR": "false",  # not measured here
            "LOGGING_LEVEL": "ERROR",
            "STATSD_HOST": "127.0.0.1",
            "STATSD_PORT": str(statsd.port),
            "SYMBOLS_CACHE_DIR": str(tmp / "symcache"),
            "SYMBOLS_CACHE_MAX_SIZE": str(4 * 1024**3),
        }
        server = subprocess.Popen(
            [sys.executable, "-m", "symbolon.admin_cli.main", "serve"], env=env, cwd=ROOT
        )
        wait_port(port, server)
        web = WebProcessCPU(web_pids(server.pid, args.processes), port)
        time.sleep(3)  # the parse processes start with the server

        # (a) one cold request for the big module, each run right after symbolic alone and the
        # parse process's work alone: the machine is shared, and its load drifts.
        cold_runs, alone_runs, work_runs, debugs = [], [], [], []
        for ident in cold_ids:
            alone_runs.append(parse_alone(copy_a, cold_ids[0]))
            work_runs.append(entry_alone(copy_gz, big_name, cold_ids[0], tmp / "entry.symc"))
            one = json.dumps({"memoryMap": [[big_name, ident]], "stacks": [[[0, 0x2000]]]})
            started = time.perf_counter()
            debugs.append(json.loads(post(port, one.encode(), debug=True))["debug"])
            cold_runs.append(time.perf_counter() - started)
            time.sleep(3)  # let the symcache reach the Redis store before the next request
        parses_a = statsd.count("eliot.symbolicate.parse_sym_file.parse")
        cold = statistics.median(cold_runs)
        debug = debugs[cold_runs.index(cold)] if cold in cold_runs else debugs[0]

        # (c) 20 concurrent cold requests for another big module.
        many = one.replace(cold_ids[-1], cold_c).encode()
        started = time.perf_counter()
        with ThreadPoolExecutor(CONCURRENT) as pool:
            list(pool.map(lambda _: post(port, many), range(CONCURRENT)))
        concurrent = time.perf_counter() - started
        parses_c = statsd.count("eliot.symbolicate.parse_sym_file.parse") - parses_a

        # (b) a profiler's payload: first request (modules cold), then warm for a while.
        jobs = []
        per_module: list[list[int]] = []
        for i, (path, (name, ident)) in enumerate(zip(modules, module_keys, strict=True)):
            addresses = function_addresses(path.read_bytes(), ADDRESSES_PER_MODULE, seed=i)
            per_module.append(addresses)
            jobs.append({"memoryMap": [[name, ident]], "stacks": [[[0, a] for a in addresses]]})
        payload = json.dumps({"jobs": jobs}).encode()
        started = time.perf_counter()
        answer = json.loads(post(port, payload))
        first = time.perf_counter() - started
        found = [all(r["found_modules"].values()) for r in answer["results"]]
        assert all(found), f"modules not found: {found}"

        def client() -> int:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
            done = 0
            while time.perf_counter() - started < args.seconds:
                post(port, payload, conn)
                done += 1
            conn.close()
            return done

        web.start()
        started = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            requests = sum(pool.map(lambda _: client(), range(args.clients)))
        warm = time.perf_counter() - started
        web.stop()
        addresses_per_request = MODULES * ADDRESSES_PER_MODULE

        # The first web process's figures (serve itself with one).
        rss = proc_status_mb(web.pids[0], "VmHWM")
        rss_now = {f: proc_status_mb(web.pids[0], f) for f in ("RssAnon", "RssFile")}
        pool_rss = [proc_status_mb(pid, "VmHWM") for pid in children(web.pids[0])]

        # The bare loop: symbolic's lookups of the same addresses, symcaches already open.
        import symbolic

        caches = [
            symbolic.SymCache.open(str(cache_entry(tmp, entry_name((n, i)))))
            for n, i in module_keys
        ]
        started = time.perf_counter()
        looked_up = 0
        for cache, addresses in zip(caches, per_module, strict=True):
            for address in addresses:
                cache.lookup(address)
                looked_up += 1
        bare = looked_up / (time.perf_counter() - started)
        identical = check_identical(port, caches, per_module, module_keys)
    finally:
        stop_servers(server)
        stack.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    alone = statistics.median(alone_runs)
    work = statistics.median(work_runs)
    rps = requests / warm
    served = rps * addresses_per_request
    pool_peaks = ", ".join(f"{r:.0f}" for r in pool_rss)
    lines = [
        f"{args.processes} web process(es), {os.cpu_count()} cores; big module "
        f"{len(big_data) / 1e6:.0f} MB; load average at the end {load_average()}",
        f"(a) cold request, big module (median of {COLD_RUNS}): {cold:6.2f} s"
        f"   runs {', '.join(f'{r:.2f}' for r in cold_runs)}",
        f"    symbolic alone parsing it (median):  {alone:6.2f} s"
        f"   runs {', '.join(f'{r:.2f}' for r in alone_runs)}",
        f"    ratio {cold / alone:.2f}x (medians), {min(cold_runs) / min(alone_runs):.2f}x (best),"
        f" per run {', '.join(f'{c / a:.2f}' for c, a in zip(cold_runs, alone_runs, strict=True))}",
        f"    the parse process's work alone (inflate, parse, write the entry): "
        f"{work:.2f} s   runs {', '.join(f'{r:.2f}' for r in work_runs)}",
        f"    parses: {parses_a}; download and inflate {debug['downloads']['time']:.2f} s, "
        f"parse (in the pool, file read and symcache written) {debug['parse_sym']['time']:.2f} s, "
        f"cache write {debug['save_symcache']['time']:.3f} s",
        f"(b) first request, 10 modules cold:     {first:7.2f} s",
        f"    warm: {rps:.1f} requests/s, {served:,.0f} addresses/s ({requests} requests, "
        f"{args.clients} keep-alive connection(s)); {web.describe()}",
        f"    bare loop of symbolic lookups:      {bare:,.0f} addresses/s"
        f"   ratio {served / bare:.2f}x",
        f"    reference service (1 worker):       {REFERENCE:,} addresses/s"
        f"   ratio {served / REFERENCE:.2f}x",
        f"    answers identical to symbolic's: {identical}",
        f"(c) {CONCURRENT} concurrent cold requests:       {concurrent:7.2f} s"
        f"   ratio to (a) {concurrent / cold:.2f}x",
        f"    parses: {parses_c}",
        f"server peak RSS {rss:.0f} MB (at the end: {rss_now['RssAnon']:.0f} MB anonymous, "
        f"{rss_now['RssFile']:.0f} MB mapped files); parse processes' peak RSS {pool_peaks} MB",
    ]
    print("\n" + "\n".join(lines))


def uuid_id() -> str:
    import uuid

    return uuid.uuid4().hex.upper() + "0"


def cache_entry(tmp: Path, name: str) -> Path:
    """The server's symcache entry ``name``, in whichever namespace directory holds it."""
    found = sorted((tmp / "symcache" / "cache").glob(f"*/{name}"))
    if not found:
        raise SystemExit(f"no symcache entry {name} in the server's cache")
    return found[0]


def check_identical(
    port: int, caches: list, per_module: list[list[int]], module_keys: list[tuple[str, str]]
) -> bool:
    """The server's frames against what the reference computed from symbolic's lookups."""
    jobs = [
        {"memoryMap": [[n, i]], "stacks": [[[0, a] for a in addresses[:300]]]}
        for (n, i), addresses in zip(module_keys, per_module, strict=True)
    ]
    answer = json.loads(post(port, json.dumps({"jobs": jobs}).encode()))
    for result, cache, addresses in zip(answer["results"], caches, per_module, strict=True):
        for frame, address in zip(result["stacks"][0], addresses[:300], strict=True):
            locations = cache.lookup(address)
            if not locations:
                if "function" in frame:
                    return False
                continue
            outer = locations[-1]
            expected = {
                "function": outer.symbol,
                "function_offset": hex(address - outer.sym_addr),
            }
            if outer.full_path:
                expected["file"] = outer.full_path
                if outer.line:
                    expected["line"] = outer.line
            got = {
                k: frame[k] for k in ("function", "function_offset", "file", "line") if k in frame
            }
            if got != expected or len(frame.get("inlines", [])) != len(locations) - 1:
                return False
    return True


if __name__ == "__main__":
    main()
