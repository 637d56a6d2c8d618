#!/usr/bin/env python
"""Memory while storing gigabytes of symbols: ``symbolon serve`` on the directory default beside
the same run with ``EMBEDDED_STORAGE=s3``.

For each backend it starts ``symbolon serve`` on a fresh data dir with its embedded services (as
``make run`` does), makes an upload token with the CLI, and uploads ``--gigabytes`` of symbols
as ``--archive-mb`` zips of random-record ``.sym`` files (they shrink about 1.7 times under
gzip -9, so nearly all of it is stored), ``--clients`` uploads at a time. Every 0.5 s it samples
the RSS of serve's process tree (serve, its worker threads, both Redis, and the S3 emulator when
there is one; PostgreSQL runs detached and is left out) and prints the peak after the first 10%
of the bytes and at the end.

    .venv/bin/python bench/storage_memory.py [--gigabytes 2] [--backend both]
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import free_port, stop_servers, wait_port  # noqa: E402

MB = 1024 * 1024
EMAIL = "bench@example.com"
MEMBERS = 5  # .sym files per archive
SAMPLE_SECONDS = 0.5


def sym_file(size: int) -> tuple[str, bytes]:
    """A name and a .sym file of ``size`` bytes of random PUBLIC records."""
    debug_id = uuid.uuid4().hex.upper() + "0"
    module = f"m{debug_id[:8].lower()}"
    header = f"MODULE linux x86_64 {debug_id} {module}\nINFO CODE_ID {debug_id[:16]}\n".encode()
    noise = os.urandom((size - len(header)) // 2 + 64).hex()
    # 64-character records: "PUBLIC <8 hex> 0 <45 hex>\n"
    lines = [
        f"PUBLIC {noise[i : i + 8]} 0 {noise[i + 8 : i + 53]}\n" for i in range(0, len(noise), 64)
    ]
    body = header + "".join(lines).encode()
    return f"{module}/{debug_id}/{module}.sym", body[:size]


def archive(size: int) -> bytes:
    """A zip of MEMBERS .sym files, ``size`` bytes in all; stored, not deflated, so that making
    it costs the load generator little (the server gzips each member either way)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        for _ in range(MEMBERS):
            name, data = sym_file(size // MEMBERS)
            zf.writestr(name, data)
    return buffer.getvalue()


def post(port: int, token: str, body: bytes) -> tuple[int, dict]:
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="s.zip"; filename="s.zip"\r\n'
        "Content-Type: application/zip\r\n\r\n"
    ).encode()
    payload = head + body + f"\r\n--{boundary}--\r\n".encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=3600)
    try:
        conn.request(
            "POST",
            "/upload/",
            body=payload,
            headers={
                "Auth-Token": token,
                "Content-Type": f"multipart/form-data; boundary={boundary}",
            },
        )
        response = conn.getresponse()
        answer = response.read()
    finally:
        conn.close()
    return response.status, json.loads(answer) if answer.startswith(b"{") else {}


def cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "symbolon.admin_cli.main", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode:
        raise SystemExit(f"symbolon {' '.join(args)} failed:\n{done.stderr}{done.stdout}")
    return done.stdout


@dataclass
class Sampler:
    """Peak RSS of a process tree, sampled every SAMPLE_SECONDS on a thread of its own."""

    pid: int
    emulator: int | None
    peak_tree: float = 0.0
    peak_serve: float = 0.0
    peak_emulator: float = 0.0
    last: list[tuple[str, float]] = field(default_factory=list)  # (process, RSS MB)
    stop: threading.Event = field(default_factory=threading.Event)

    def sample(self) -> None:
        try:
            serve = psutil.Process(self.pid)
            tree = [serve, *serve.children(recursive=True)]
        except psutil.NoSuchProcess:
            return
        total = 0
        last = []
        for process in tree:
            try:
                rss = process.memory_info().rss
                name = " ".join(process.cmdline()[:3])[-60:]
            except psutil.Error:
                continue
            total += rss
            last.append((name, rss / MB))
            if process.pid == self.pid:
                self.peak_serve = max(self.peak_serve, rss / MB)
            if process.pid == self.emulator:
                self.peak_emulator = max(self.peak_emulator, rss / MB)
        self.peak_tree = max(self.peak_tree, total / MB)
        self.last = last

    def run(self) -> None:
        while not self.stop.wait(SAMPLE_SECONDS):
            self.sample()

    def snapshot(self) -> tuple[float, float, float]:
        return self.peak_serve, self.peak_tree, self.peak_emulator


@dataclass
class Result:
    backend: str
    stored_mb: float
    seconds: float
    early: tuple[float, float, float]
    end: tuple[float, float, float]
    disk_mb: float
    tree: list[tuple[str, float]]


def du_mb(path: Path) -> float:
    total = 0
    for directory, _, names in os.walk(path):
        for name in names:
            try:
                total += os.lstat(os.path.join(directory, name)).st_blocks * 512
            except OSError:
                continue
    return total / MB


def run(backend: str, args: argparse.Namespace) -> Result:
    work = Path(tempfile.mkdtemp(prefix=f"symbolon-bench-memory-{backend}-"))
    data_dir = work / "data"
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATABASE_URL", "REDIS_", "SYMBOL", "UPLOAD_", "EMBEDDED_"))
    }
    env.update(
        SYMBOLON_DATA_DIR=str(data_dir),
        PORT=str(port),
        WORKER_THREADS="2",
        UPLOAD_WAIT_SECONDS="3600",
        ENABLE_CRASH_COLLECTOR="false",  # not what this measures
        LOGGING_LEVEL="WARNING",
    )
    if backend == "s3":
        env["EMBEDDED_STORAGE"] = "s3"
    server: subprocess.Popen | None = None
    try:
        server = subprocess.Popen(
            [sys.executable, "-m", "symbolon.admin_cli.main", "serve"], env=env, cwd=ROOT
        )
        wait_port(port, server, seconds=300)
        cli(env, "superuser", EMAIL)
        token = cli(env, "token", "create", EMAIL, "--permission", "upload_symbols")
        token = token.strip().splitlines()[-1]
        emulator = None
        if backend == "s3":
            emulator = json.loads((data_dir / "s3" / "server.json").read_text())["pid"]
        sampler = Sampler(server.pid, emulator)
        sampler.sample()
        thread = threading.Thread(target=sampler.run, daemon=True)
        thread.start()

        size = args.archive_mb * MB
        count = max(1, round(args.gigabytes * 1024 / args.archive_mb))
        early_after = max(1, count // 10)
        done = 0
        early: tuple[float, float, float] | None = None
        lock = threading.Lock()

        def one(_: int) -> None:
            nonlocal done, early
            status, answer = post(port, token, archive(size))
            if status != 201 or not answer.get("upload", {}).get("completed_at"):
                raise SystemExit(f"upload answered {status}: {answer}")
            with lock:
                done += 1
                if done == early_after:
                    sampler.sample()
                    early = sampler.snapshot()
                if done % max(1, count // 20) == 0:
                    print(f"  {backend}: {done}/{count} archives", flush=True)

        start = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            list(pool.map(one, range(count)))
        seconds = time.perf_counter() - start
        sampler.sample()
        sampler.stop.set()
        thread.join()
        assert early is not None
        stored = data_dir / ("symbols" if backend == "directory" else "s3")
        return Result(
            backend,
            count * size / MB,
            seconds,
            early,
            sampler.snapshot(),
            du_mb(stored),
            sampler.last,
        )
    finally:
        stop_servers(server, timeout=300)
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gigabytes", type=float, default=2.0, help="GiB of .sym to upload")
    parser.add_argument("--archive-mb", type=int, default=10, help="MiB per archive")
    parser.add_argument("--clients", type=int, default=2, help="uploads at a time")
    parser.add_argument("--backend", choices=("directory", "s3", "both"), default="both")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up on a kill too

    backends = ("directory", "s3") if args.backend == "both" else (args.backend,)
    results = [run(backend, args) for backend in backends]

    print(
        f"\n{args.gigabytes:g} GiB of .sym in {args.archive_mb} MiB archives, "
        f"{args.clients} uploads at a time, RSS sampled every {SAMPLE_SECONDS}s; "
        f"{os.cpu_count()} cores"
    )
    print(
        f"{'storage':<10} {'MB/s':>6} {'on disk MB':>10}  "
        f"{'peak RSS MB after 10%: serve / tree / S3':>42}  {'at the end: serve / tree / S3':>32}"
    )
    for r in results:

        def figures(peaks: tuple[float, float, float], backend: str) -> str:
            emulator = f"{peaks[2]:.0f}" if backend == "s3" else "-"
            return f"{peaks[0]:.0f} / {peaks[1]:.0f} / {emulator}"

        print(
            f"{r.backend:<10} {r.stored_mb / r.seconds:>6.1f} {r.disk_mb:>10.0f}  "
            f"{figures(r.early, r.backend):>42}  {figures(r.end, r.backend):>32}"
        )
    for r in results:
        print(f"\n{r.backend}: serve's process tree at the last sample (RSS MB)")
        for name, rss in r.tree:
            print(f"  {rss:>7.0f}  {name}")


if __name__ == "__main__":
    main()
