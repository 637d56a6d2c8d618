#!/usr/bin/env python
"""Crash collector throughput on 127.0.0.1: ``POST /submit`` with 400 KB dumps, and bare handlers.

Builds one realistic crash report (22 text annotations of a Firefox nightly crash and a 400 KiB
``upload_file_minidump`` of random bytes, ``multipart/form-data``), starts the embedded
PostgreSQL, Redis and S3 in a temporary directory, then for each store (S3 = the embedded moto
server, bucket ``crashes``; fs = a directory) and each number of concurrent clients starts one
``symbolon serve`` process (``WORKER_THREADS=0``) and has ``wrk`` post the report for a fixed
time. In the same run it measures the bare handlers of ``bench/bare_submit.py``, which receive
the same body and write the dump to a file, with one process and with two: the bare handler of
the goal, a plain Tornado application that lets Tornado read and parse the form (``parsed``;
its figures are the ones the goal quotes, 400-530/s with two processes); and a stricter bound,
a streaming handler that finds the dump part crudely, on the standard library's loop and on
uvloop (``uvloop``, the event loop ``symbolon serve`` runs on).

The runs are interleaved by number of connections, so that the runs compared with each other
are close in time. Each store is also run once with ``LOGGING_LEVEL=INFO`` (``--info-at``);
otherwise the server logs at ``WARNING``.

For every run it prints crashes/s (answers carrying a CrashID, per second), p50 and p99
latency, errors (socket errors, non-200 answers and 200 answers without a CrashID), whether
the store holds every crash answered with a CrashID (raw crash and dump), the server's peak RSS
and CPU time per crash, and the CPU (in cores) used by the server, the S3 server, Redis, the
client and everything else on the machine. The client runs on the same cores as the server.
With several web processes, each run also prints the CPU seconds each one spent and the least
busy one's over the busiest one's (wrk's keep-alive connections spread unevenly show there).
Each run gets a fresh server process, so the peak RSS is that run's. Everything it starts and
writes is removed on exit, also after an error, Ctrl-C or SIGTERM (files are truncated
between runs and deleted at the end, see ``empty_files``). About 14 minutes.

    .venv/bin/python bench/crashes.py [--duration 10] [--connections 1,8,32] [--stores s3,fs]

Needs ``wrk`` (Debian package ``wrk``).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import WebProcessCPU, free_port, load_average, proc_status_mb, wait_port  # noqa: E402

from symbolon.conf import load_settings  # noqa: E402
from symbolon.server.embedded import EmbeddedStack  # noqa: E402

BUCKET = "crashes"  # the embedded crash bucket's name
SYMBOLS_BUCKET = "bench-symbols"
KEY, SECRET = "bench", "bench-secret"
TICKS = os.sysconf("SC_CLK_TCK")
REFERENCE = (130, 180)  # the reference collector, 2 workers, filesystem storage, this machine
# A bare handler with 2 processes, as measured on the reference's machine (docs/benchmarks.md).
BARE_REFERENCE = (400, 530)
SETTLE_SECONDS = 2.0

# -- the report ----------------------------------------------------------------------------------


def annotations(now: datetime, rng: random.Random) -> list[tuple[str, str]]:
    """A Firefox nightly crash as an older Breakpad client sends it: one text field each."""
    environment = {
        "build": {"applicationName": "Firefox", "version": "147.0a1", "architecture": "x86-64"},
        "partner": {"distributionId": None, "partnerNames": []},
        "system": {
            "memoryMB": 16384,
            "cpu": {"count": 8, "cores": 4, "vendor": "GenuineIntel", "family": 6, "model": 142},
            "os": {"name": "Windows_NT", "version": "10.0", "windowsBuildNumber": 22631},
            "gfx": {
                "adapters": [{"vendorID": "0x10de", "deviceID": "0x1c82", "driverVersion": "31"}],
                "features": {"compositor": "webrender", "d3d11": {"status": "available"}},
            },
        },
        "addons": {
            "activeAddons": {
                f"addon{i}@example.com": {"version": f"{i}.0", "type": "extension"}
                for i in range(12)
            }
        },
    }
    return [
        ("ProductName", "Firefox"),
        ("Version", "147.0a1"),
        ("ReleaseChannel", "nightly"),  # accepted by the default rules (is_nightly)
        ("BuildID", (now - timedelta(days=3)).strftime("%Y%m%d") + "094512"),
        ("ProductID", "{ec8030f7-c20a-464f-9b0e-13a3a9e97384}"),
        ("Vendor", "Mozilla"),
        ("CrashTime", str(int(now.timestamp()))),
        ("InstallTime", str(int(now.timestamp()) - 3 * 86400)),
        ("StartupTime", str(int(now.timestamp()) - 5123)),
        ("UptimeTS", "5123.44186"),
        ("SecondsSinceLastCrash", "86213"),
        ("useragent_locale", "en-US"),
        ("AvailablePhysicalMemory", "6442450944"),
        ("TotalPhysicalMemory", "17179869184"),
        ("AvailableVirtualMemory", "140717812367360"),
        ("SystemMemoryUsePercentage", "61"),
        ("AdapterVendorID", "0x10de"),
        ("AdapterDeviceID", "0x1c82"),
        ("ContentSandboxLevel", "6"),
        ("MozCrashReason", "MOZ_RELEASE_ASSERT(mIsAlive) (Deleted twice)"),
        ("Notes", "FP(D00-L1000-W00000000-T000) WR? WR+ D2D1.1+ DWrite+ " + rng.randbytes(8).hex()),
        ("TelemetryEnvironment", json.dumps(environment)),
    ]


def make_report(path: Path, dump_bytes: int, seed: int) -> tuple[int, int]:
    """Writes the multipart body; returns (number of annotations, body size)."""
    rng = random.Random(seed)
    boundary = f"------------------------{rng.randbytes(8).hex()}"
    fields = annotations(datetime.now(UTC), rng)
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields
    ]
    parts.append(
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="upload_file_minidump"; '
        f'filename="{uuid.UUID(int=rng.getrandbits(128))}.dmp"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode()
        + b"MDMP"
        + rng.randbytes(dump_bytes - 4)
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    body = b"".join(parts)
    path.write_bytes(body)
    return len(fields), len(body)


def post_once(port: int, body: bytes) -> tuple[int, str]:
    boundary = body[2 : body.index(b"\r\n")].decode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(
            "POST",
            "/submit",
            body=body,
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        response = conn.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        conn.close()


# -- measuring -----------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (all its threads); 0 once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent on anything but idle and I/O wait since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / TICKS


def wait_quiet(limit: float = 0.15, longest: float = 30.0) -> None:
    """Wait until the machine uses less than ``limit`` of a core (a started server's own start-up
    work, PostgreSQL's after the migrations), at most ``longest`` seconds: else the first run
    measures it too."""
    deadline = time.monotonic() + longest
    while time.monotonic() < deadline:
        before = machine_busy_seconds()
        time.sleep(0.5)
        if machine_busy_seconds() - before < limit * 0.5:
            return


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def server_pids(proc: subprocess.Popen, processes: int) -> list[int]:
    """A server's pid, and its forked web processes' once they are all there."""
    pids = [proc.pid]
    deadline = time.monotonic() + 30
    while processes > 1 and len(pids) < processes + 1 and time.monotonic() < deadline:
        time.sleep(0.1)
        pids = [proc.pid, *child_pids(proc.pid)]
    return pids


def child_pids(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(stat[1]) == pid:
                    found.append(int(entry.name))
    return found


@dataclass
class Server:
    proc: subprocess.Popen
    pids: list[int]  # the server's, then its web processes' (with several)
    port: int
    store: str
    fs_root: Path


@dataclass
class Run:
    name: str
    connections: int
    crashes_s: float = 0.0
    p50: float = 0.0
    p99: float = 0.0
    accepted: int = 0  # CrashID answers seen by the client
    discarded: int = 0  # 200 without a CrashID
    failed: int = 0  # any other status
    socket_errors: dict[str, int] = field(default_factory=dict)
    stored: int = 0  # raw crashes in the store
    expected: int = 0  # accepted, plus the warm-up request
    without_dump: int = 0  # raw crashes whose dump is missing: must be 0
    partial: int = 0  # dumps without a raw crash: saves cut short, never answered with an id
    peak_rss: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)  # cores, by who
    server_cpu_per_crash: float = 0.0  # seconds
    web: str = ""  # each web process's CPU, with several

    @property
    def errors(self) -> int:
        return self.discarded + self.failed + sum(self.socket_errors.values())

    def storage_check(self) -> str:
        """``ok`` when every CrashID answer is stored; requests still in flight when the client
        stopped may be stored without their answer being counted (at most one per connection)."""
        extra = self.stored - self.expected
        if self.without_dump:
            verdict = f"NO DUMP {self.without_dump}"
        elif extra < 0:
            verdict = f"LOST {-extra}"
        elif extra == 0:
            verdict = "ok"
        elif extra <= self.connections:
            verdict = f"ok +{extra} late"
        else:
            verdict = f"EXTRA {extra}"
        return verdict + (f", {self.partial} partial" if self.partial else "")


UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def wrk(port: int, connections: int, duration: int, body: Path, run: Run) -> None:
    threads = min(2, connections)
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration}s",
        "--timeout",
        "30s",
        "--latency",
        "-s",
        str(ROOT / "bench" / "submit.lua"),
        f"http://127.0.0.1:{port}/submit",
    ]
    env = {**os.environ, "SUBMIT_BODY": str(body)}
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    out = done.stdout
    if done.returncode or "answers:" not in out:
        raise SystemExit(f"wrk failed ({done.returncode}):\n{out}{done.stderr}")
    _, seconds, unit = re.search(r"(\d+) requests in ([\d.]+)(\w+),", out).groups()
    runtime = float(seconds) * UNITS[unit] / 1000
    answers = re.search(r"answers: crash id (\d+), discarded (\d+), failed (\d+)", out)
    run.accepted, run.discarded, run.failed = (int(v) for v in answers.groups())
    run.crashes_s = run.accepted / runtime
    for pct in ("50", "99"):
        found = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
        setattr(run, f"p{pct}", float(found.group(1)) * UNITS[found.group(2)] if found else 0.0)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if errors:
        names = ("connect", "read", "write", "timeout")
        run.socket_errors = {
            n: int(v) for n, v in zip(names, errors.groups(), strict=True) if int(v)
        }


def measure(
    port: int,
    groups: dict[str, list[int]],
    args: argparse.Namespace,
    body: Path,
    run: Run,
    web: WebProcessCPU | None = None,
) -> None:
    """One wrk run, with the CPU each party spent during it, in cores: ``groups`` names the
    processes of the server, the S3 server and Redis; the client is wrk, the rest is the machine's
    busy time spent by anyone else (PostgreSQL, the kernel's softirqs, other users)."""

    def used() -> dict[str, float]:
        return {name: sum(map(cpu_seconds, pids)) for name, pids in groups.items()}

    before = used()
    if web is not None:
        web.start()
    client0, machine0, wall0 = children_cpu_seconds(), machine_busy_seconds(), time.monotonic()
    wrk(port, run.connections, args.duration, body, run)
    wall = time.monotonic() - wall0
    after = used()
    if web is not None:
        web.stop()
        run.web = web.describe()
    run.cpu = {name: (after[name] - before[name]) / wall for name in groups}
    run.cpu["client"] = (children_cpu_seconds() - client0) / wall
    machine = (machine_busy_seconds() - machine0) / wall
    run.cpu["rest"] = max(machine - sum(run.cpu.values()), 0.0)
    run.server_cpu_per_crash = (after["server"] - before["server"]) / max(run.accepted, 1)
    time.sleep(SETTLE_SECONDS)  # requests the client left in flight finish before the stop


# -- the servers ---------------------------------------------------------------------------------


def stop(proc: subprocess.Popen, sig: int = signal.SIGINT, group: bool = False) -> None:
    if proc.poll() is None:
        if group:  # the process and the children it forked: its own session, started here
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        if group:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
        proc.wait()


def tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def symbolon_command() -> list[str]:
    script = Path(sys.executable).parent / "symbolon"
    if script.exists():
        return [str(script), "serve"]
    return [sys.executable, "-m", "symbolon.admin_cli.main", "serve"]


def count_s3(s3) -> tuple[set[str], set[str]]:
    """(crash ids with a raw crash, crash ids with a main dump); then empties the bucket."""
    raw, dumps, keys = set(), set(), []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for item in page.get("Contents", []):
            key = item["Key"]
            keys.append(key)
            if key.startswith("v1/raw_crash/"):
                raw.add(key.rsplit("/", 1)[1])
            elif key.startswith("v1/dump/"):
                dumps.add(key.rsplit("/", 1)[1])
    for i in range(0, len(keys), 1000):
        s3.delete_objects(
            Bucket=BUCKET, Delete={"Objects": [{"Key": k} for k in keys[i : i + 1000]]}
        )
    return raw, dumps


def count_fs(root: Path) -> tuple[set[str], set[str]]:
    raw = {p.name.removesuffix(".json") for p in root.glob("*/raw_crash/*.json")}
    dumps = {p.name for p in root.glob("*/upload_file_minidump/*") if not p.name.startswith(".")}
    return raw, dumps


# The bare handlers: streaming on the standard library's loop, the same on uvloop (Symbolon's
# loop), and the plain Tornado handler that lets Tornado parse the form (the goal's).
BARE_VARIANTS = ("", "uvloop", "parsed")


def bare_name(processes: int, variant: str = "") -> str:
    return f"bare Tornado{' ' + variant if variant else ''}, {processes} proc"


def empty_files(root: Path) -> None:
    """Truncate a run's files instead of deleting them (they are deleted at the end): ext4 skips
    inodes deleted in the last minutes one by one when it allocates new ones, so deleting a
    run's tens of thousands of files would make the next runs' file creation several times
    dearer, more so for a store that creates three files a crash than for one that creates
    one. A crash store is not emptied while it takes crashes."""
    for directory, _, names in os.walk(root):
        for name in names:
            os.truncate(os.path.join(directory, name), 0)


def check_store(run: Run, raw: set[str], dumps: set[str]) -> None:
    run.stored = len(raw)
    run.without_dump = len(raw - dumps)
    run.partial = len(dumps - raw)


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path, body: Path):
        self.args = args
        self.work = work
        self.body = body
        self.body_bytes = body.read_bytes()
        self.stack: EmbeddedStack | None = None
        self.runs = 0

    def start_services(self) -> None:
        data_dir = self.work / "services"
        self.stack = EmbeddedStack(data_dir)
        self.live = self.stack.start(
            # The S3 emulator: the crash store and the symbols' bucket are in it.
            load_settings(
                {"SYMBOLON_DATA_DIR": str(data_dir), "EMBEDDED_STORAGE": "s3"}, dotenv_path=None
            )
        )
        self.endpoint = self.live.symbol_urls[0].rsplit("/", 1)[0]
        self.s3 = boto3.client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id=KEY, aws_secret_access_key=SECRET,
        )  # fmt: skip
        for bucket in (BUCKET, SYMBOLS_BUCKET):
            self.s3.create_bucket(Bucket=bucket)
        moto = self.stack.s3.owned_pid if self.stack.s3 else None
        redis = self.stack.redis[0].owned_pid if self.stack.redis else None  # the task queue
        assert moto and redis, "the embedded S3 and Redis servers were started by this process"
        self.services = {"s3": [moto], "redis": [redis]}

    def stop_services(self) -> None:
        if self.stack is not None:
            self.stack.stop()

    def start_symbolon(self, store: str, level: str, processes: int = 1) -> Server:
        """``symbolon serve`` on a free port, warmed up: a crash store of its own (a directory, or
        the embedded S3 bucket) and the shared services."""
        self.runs += 1
        port = free_port()
        env = {
            **os.environ,
            "SYMBOLON_DATA_DIR": str(self.work / f"server-{self.runs}"),
            "DATABASE_URL": self.live.database_url,
            "REDIS_URL": self.live.redis_url,
            "REDIS_STORE_URL": self.live.redis_store_url,
            "SYMBOL_URLS": f"{self.endpoint}/{SYMBOLS_BUCKET}",
            "UPLOAD_DEFAULT_URL": f"{self.endpoint}/{SYMBOLS_BUCKET}",
            "AWS_ACCESS_KEY_ID": KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET,
            "SECRET_KEY": "bench",
            "PORT": str(port),
            "WORKER_THREADS": "0",
            "WEB_PROCESSES": str(processes),
            "LOGGING_LEVEL": level,
        }
        fs_root = self.work / f"fs-{self.runs}"
        if store == "fs":
            env["CRASHMOVER_CRASHSTORAGE_CLASS"] = "fs"
            env["CRASHMOVER_CRASHSTORAGE_FS_ROOT"] = str(fs_root)
        else:
            env["CRASHMOVER_CRASHSTORAGE_CLASS"] = "s3"
            env["CRASHMOVER_CRASHSTORAGE_BUCKET_NAME"] = BUCKET
            env["CRASHMOVER_CRASHSTORAGE_ENDPOINT_URL"] = self.endpoint
            env["CRASHMOVER_CRASHSTORAGE_REGION"] = "us-east-1"
        log = self.work / f"server-{self.runs}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                symbolon_command(), env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT
            )
        try:
            try:
                wait_port(port, proc)
            except SystemExit as exc:
                raise SystemExit(f"{exc}\n{tail(log)}") from None
            pids = server_pids(proc, processes)  # they fork after the start-up checks
            self.warm_up(port, log)
        except BaseException:
            stop(proc)
            raise
        return Server(proc, pids, port, store, fs_root)

    def symbolon(self, store: str, connections: int, level: str, processes: int = 1) -> Run:
        name = f"symbolon {store}" + (f" {processes} proc" if processes > 1 else "")
        name += f" ({level})" if level != self.args.logging_level else ""
        run = Run(name, connections)
        server = self.start_symbolon(store, level, processes)
        try:
            pids = server.pids
            web = WebProcessCPU(pids[1:], server.port) if processes > 1 else None
            measure(server.port, {"server": pids, **self.services}, self.args, self.body, run, web)
            # One process: its peak. Several: the sum of each one's peak (the parent included).
            run.peak_rss = sum(proc_status_mb(pid, "VmHWM") for pid in pids)
        finally:
            stop(server.proc)  # in-flight saves finish first: count after the stop
        run.expected = run.accepted + 1
        self.check(server, run)
        return run

    def check(self, server: Server, run: Run) -> None:
        """Whether the stopped server stored every crash it answered (``run.expected``)."""
        if server.store == "fs":
            check_store(run, *count_fs(server.fs_root))
            empty_files(server.fs_root)
        else:
            check_store(run, *count_s3(self.s3))

    def bare(self, processes: int, connections: int, variant: str = "") -> Run:
        self.runs += 1
        run = Run(bare_name(processes, variant), connections)
        port = free_port()
        directory = self.work / f"bare-{self.runs}"
        directory.mkdir()
        log = self.work / f"bare-{self.runs}.log"
        script = ROOT / "bench" / "bare_submit.py"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, str(script), str(port), str(directory), str(processes)]
                + ([variant] if variant else []),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            try:
                wait_port(port, proc)
            except SystemExit as exc:
                raise SystemExit(f"{exc}\n{tail(log)}") from None
            pids = server_pids(proc, processes)
            self.warm_up(port, log)
            web = WebProcessCPU(pids[1:], port) if processes > 1 else None
            measure(port, {"server": pids, **self.services}, self.args, self.body, run, web)
            # One process: its peak. Several: the sum of each one's peak (the parent included).
            run.peak_rss = sum(proc_status_mb(pid, "VmHWM") for pid in pids)
        finally:
            stop(proc, signal.SIGTERM, group=True)
        run.expected = run.accepted + 1
        run.stored = sum(1 for _ in directory.iterdir())
        empty_files(directory)
        return run

    def warm_up(self, port: int, log: Path) -> None:
        """One request first: a wrong answer stops the benchmark before it measures anything."""
        status, text = post_once(port, self.body_bytes)
        if status != 200 or not text.startswith("CrashID=bp-"):
            raise SystemExit(f"the warm-up request got {status} {text!r}\n{tail(log)}")
        wait_quiet()


# -- output --------------------------------------------------------------------------------------

HEADER = (
    f"{'scenario':<28} {'conns':>5} {'crashes/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6}  "
    f"{'stored/answered':<25} {'RSS MB':>6} {'CPU ms':>6}   "
    "cores: server S3 Redis client rest"
)


def row(run: Run) -> str:
    errors = str(run.errors)
    details = [f"{k} {v}" for k, v in run.socket_errors.items()]
    if run.failed:
        details.append(f"{run.failed} non-200")
    if run.discarded:
        details.append(f"{run.discarded} discarded")
    cpu = run.cpu
    stored = f"{run.stored}/{run.expected} {run.storage_check()}"
    line = (
        f"{run.name:<28} {run.connections:>5} {run.crashes_s:>9.1f} {run.p50:>7.1f} "
        f"{run.p99:>7.1f} {errors:>6}  {stored:<25} {run.peak_rss:>6.0f} "
        f"{1000 * run.server_cpu_per_crash:>6.2f}   "
        f"{cpu['server']:>13.2f} {cpu['s3']:>4.2f} {cpu['redis']:>5.2f} {cpu['client']:>6.2f} "
        f"{cpu['rest']:>4.2f}"
    )
    line += f"  ({', '.join(details)})" if details else ""
    return line + (f"\n{'':<28} {run.web}" if run.web else "")


def report(runs: list[Run], args: argparse.Namespace, fields: int, size: int) -> None:
    print(
        f"\n{len(runs)} runs; one report: {fields} text annotations and a {args.dump_kb} KiB "
        f"upload_file_minidump, a {size / 1024:.0f} KiB multipart body; wrk -t(1 or 2) "
        f"-d{args.duration}s; symbolon serve with {args.processes} web process(es) "
        f"(WORKER_THREADS=0, LOGGING_LEVEL="
        f"{args.logging_level} unless marked); {os.cpu_count()} cores, shared by the server, the "
        f"S3 server, Redis, the client and anything else running; load average at the end "
        f"{load_average()}"
    )
    print(HEADER)
    order = {name: i for i, name in enumerate(dict.fromkeys(r.name for r in runs))}
    for run in sorted(runs, key=lambda r: (order[r.name], r.connections)):
        print(row(run))

    def find(name: str, connections: int) -> Run | None:
        return next((r for r in runs if r.name == name and r.connections == connections), None)

    low, high = REFERENCE
    print("\nratios of crashes/s, at the same number of connections")
    for run in runs:
        if not run.name.startswith("symbolon") or "(" in run.name:
            continue
        parts = [f"  {run.name:<21} c={run.connections:<3}"]
        for variant in BARE_VARIANTS:
            for processes in (1, 2):
                bare = find(bare_name(processes, variant), run.connections)
                if bare:
                    label = f"{variant or 'bare'} {processes} proc"
                    parts.append(f"/ {label} {run.crashes_s / bare.crashes_s:>4.0%}")
        parts.append(
            f"/ reference {low}-{high}/s {run.crashes_s / high:.1f}-{run.crashes_s / low:.1f}x"
        )
        print("  ".join(parts))

    best: dict[str, float] = {}
    for run in runs:
        best[run.name] = max(best.get(run.name, 0.0), run.crashes_s)
    print("\nbest over the numbers of connections (crashes/s)")
    for name, rate in best.items():
        print(f"  {name:<28} {rate:>7.1f}")
    for processes in (1, 2):
        name = "symbolon fs" + (f" {processes} proc" if processes > 1 else "")
        rate = best.get(name)
        if rate is None:
            continue
        cores = f"{processes} process{'es' if processes > 1 else ''}"
        met = "met" if rate >= 2 * high else "met at the low end" if rate >= 2 * low else "missed"
        print(
            f"goal: at least 2x the reference (2 workers, filesystem: {low}-{high}/s), so "
            f"{2 * low}-{2 * high}/s: {name} ({cores}) {rate:.0f}/s is {rate / high:.1f}-"
            f"{rate / low:.1f}x, {met}"
        )
        parsed = best.get(bare_name(processes, "parsed"))
        if parsed:
            met = "met" if rate >= 0.7 * parsed else "missed"
            print(
                f"goal: at least 70% of the bare handler (plain Tornado, request.files) at "
                f"{cores} ({parsed:.0f}/s): {rate / parsed:.0%}, {met}"
            )
        for variant, label in (
            ("", "streaming handler"),
            ("uvloop", "streaming handler on uvloop"),
        ):
            bare = best.get(bare_name(processes, variant))
            if bare:
                print(f"  beside the {label} at {cores} ({bare:.0f}/s): {rate / bare:.0%}")
    if "symbolon fs" in best:
        print(
            f"(a bare handler with 2 processes was measured at {BARE_REFERENCE[0]}-"
            f"{BARE_REFERENCE[1]}/s on the reference's machine)"
        )
    print(
        "\n'stored/answered': crashes in the store (raw crash and dump) / CrashID answers, plus "
        "the warm-up request; '+n late': requests the server completed after the client stopped "
        "(at most one per connection); 'partial': a dump without its raw crash. 'CPU ms': the "
        "server's CPU time per crash. 'cores': CPU used during the run; the client (wrk) shares "
        "the 2 cores with the server, and 'rest' is everyone else's (PostgreSQL, kernel, other "
        "users): the higher it is, the less the figures are worth."
    )


# -- main ----------------------------------------------------------------------------------------


def plan(args: argparse.Namespace) -> list[tuple[str, str | int, int, str, int]]:
    """The runs, interleaved by number of connections, so that the ones compared with each other
    run close together in time and see the same load from other users of the machine. Each is
    (kind, store or processes, connections, option, processes); the option is the logging level
    of a Symbolon run, the variant of a bare one."""
    connections = [int(c) for c in args.connections.split(",")]
    process_counts = [int(p) for p in args.processes.split(",")]
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    if set(stores) - {"s3", "fs"}:
        raise SystemExit("--stores: s3, fs or both")
    runs: list[tuple[str, str | int, int, str, int]] = []
    for conns in connections:
        for store in stores:
            for processes in process_counts:
                runs.append(("symbolon", store, conns, args.logging_level, processes))
            if conns == args.info_at and args.logging_level != "INFO":
                runs.append(("symbolon", store, conns, "INFO", 1))
        if not args.no_bare:
            for variant in BARE_VARIANTS:
                runs += [("bare", p, conns, variant, p) for p in (1, 2)]
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per run")
    parser.add_argument("--connections", default="1,8,32", help="concurrent clients, a list")
    parser.add_argument("--stores", default="s3,fs", help="s3, fs or both")
    parser.add_argument("--dump-kb", type=int, default=400, help="KiB of minidump")
    parser.add_argument("--logging-level", default="WARNING", help="the server's LOGGING_LEVEL")
    parser.add_argument(
        "--info-at",
        type=int,
        default=8,
        help="also run each store at this many connections with LOGGING_LEVEL=INFO (0: no)",
    )
    parser.add_argument(
        "--processes", default="1,2", help="web processes of symbolon serve (WEB_PROCESSES), a list"
    )
    parser.add_argument("--no-bare", action="store_true", help="skip the bare handler")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed: apt-get install wrk")
    todo = plan(args)
    # A SIGTERM (or a timeout's kill) must still run the clean-up below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    work = Path(tempfile.mkdtemp(prefix="symbolon-bench-crashes-"))
    bench: Bench | None = None
    runs: list[Run] = []
    try:
        body = work / "report.multipart"
        fields, size = make_report(body, args.dump_kb * 1024, args.seed)
        print(f"load average before: {os.getloadavg()[0]:.2f}", flush=True)
        bench = Bench(args, work, body)
        bench.start_services()
        print(HEADER, flush=True)
        for kind, what, conns, option, processes in todo:
            if kind == "symbolon":
                run = bench.symbolon(str(what), conns, option, processes)
            else:
                run = bench.bare(int(what), conns, option)
            runs.append(run)
            print(row(run), flush=True)
    finally:
        if bench is not None:
            bench.stop_services()
        shutil.rmtree(work, ignore_errors=True)
    report(runs, args, fields, size)


if __name__ == "__main__":
    main()
