#!/usr/bin/env python
"""Upload throughput on 127.0.0.1: ``POST /upload/`` end to end, and the gzip+store limit.

Generates a zip of Breakpad ``.sym`` files (``<module>/<debug id>/<module>.sym``, a few MB each,
``--size-mb`` uncompressed in all), starts the embedded PostgreSQL and Redis (and the S3 emulator
when a bucket is measured) in a temporary directory, then for each backend (``--backend``: a
directory, a bucket on the S3 emulator, or both, one after the other) one ``symbolon serve``
process with two embedded worker threads storing there, makes an upload token with the CLI, and:

- uploads the archive with a streaming client (the body is read from disk in chunks) and times
  it until the 201, which the server sends once every member is gzipped and stored;
- times the limit: a bare loop reading the same members from the zip, gzipping each at level 9
  and storing it in the same place (a PUT with boto3, or the directory store's write), with the
  server's concurrency (8 threads);

and for reference times gzip -9 alone on part of the members, in memory, one thread per core.

It prints MB/s for each, the ratio server / bare loop, the CPU seconds the server, the S3
emulator and this process spent, and the server's peak RSS (its worker threads included).
Everything it starts and writes is removed on exit, also after an error, Ctrl-C or SIGTERM.

    .venv/bin/python bench/upload.py [--size-mb 500] [--seed 1] [--backend both]

``--size-mb 2048`` checks the memory goal: the server's peak RSS should not grow with the size.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import gzip
import hashlib
import http.client
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import free_port, proc_status_mb, stop_servers, wait_port  # noqa: E402

from symbolon.conf import Settings, load_settings  # noqa: E402
from symbolon.server.embedded import EmbeddedStack  # noqa: E402
from symbolon.storage.sources import SymbolSource  # noqa: E402
from symbolon.storage.stores.directory import DirectoryStore  # noqa: E402

BUCKET = "bench-upload"
EMAIL = "bench@example.com"
MB = 1024 * 1024
CHUNK = 1 << 20  # the client sends the body 1 MiB at a time
BARE_THREADS = 8  # UPLOAD_FILE_UPLOAD_MAX_WORKERS, the server's concurrency per upload
BARE_PREFIX = "bare"

# -- the archive ---------------------------------------------------------------------------------

# fmt: off
NAMESPACES = [
    "mozilla", "mozilla::dom", "mozilla::layers", "mozilla::gfx", "js", "js::jit",
    "mozilla::net", "mozilla::ipc", "webrtc", "skia", "std", "nsTArray_Impl", "mozilla::widget",
    "mozilla::a11y", "mozilla::css", "icu_73",
]
WORDS = [
    "Element", "Node", "Frame", "Layer", "Buffer", "Stream", "Channel", "Request", "Cache",
    "Listener", "Observer", "Document", "Window", "Surface", "Texture", "Compositor", "Parser",
    "Token", "Script", "Runtime", "Context", "Handle", "Value", "Object", "Shape", "Promise",
    "Event", "Target", "Runnable", "Thread", "Monitor", "Mutex", "Atom", "Style", "Rule",
    "Sheet", "Image", "Decoder", "Encoder", "Socket", "Transport", "Session",
]
VERBS = [
    "Get", "Set", "Create", "Destroy", "Init", "Shutdown", "Handle", "Process", "Dispatch",
    "Notify", "Update", "Invalidate", "Compute", "Resolve", "Append", "Remove", "Flush", "Read",
    "Write", "Open", "Close", "Run", "Visit", "Trace", "Measure", "Paint",
]
TYPES = [
    "int", "unsigned int", "bool", "char const*", "void*", "JSContext*", "nsAString const&",
    "nsACString&", "uint32_t", "int64_t", "double", "float", "mozilla::ErrorResult&",
    "JS::Handle<JS::Value>", "nsISupports*", "RefPtr<mozilla::dom::Element> const&",
]
STEPS = [1, 2, 3, 3, 4, 4, 5, 5, 5, 6, 7, 7, 8, 8, 9, 10, 12, 14, 16, 0x18, 0x20]  # bytes
DIRS = [
    "dom/base", "dom/events", "gfx/layers", "gfx/2d", "js/src/jit", "js/src/vm", "layout/base",
    "layout/generic", "netwerk/protocol/http", "ipc/glue", "xpcom/threads", "widget/gtk",
    "media/webrtc", "third_party/rust/wgpu", "toolkit/xre", "image/decoders",
]
# fmt: on


def sym_body(rng: random.Random, size: int) -> bytes:
    """FILE, FUNC, line, PUBLIC and STACK CFI records of a plausible module, ``size`` bytes."""
    out: list[str] = []
    files = [
        f"/builds/worker/checkouts/gecko/{rng.choice(DIRS)}/{rng.choice(WORDS)}"
        f"{rng.choice(WORDS)}.{rng.choice(('cpp', 'cpp', 'h', 'cc', 'rs'))}"
        for _ in range(3000)
    ]
    out += [f"FILE {i} {name}\n" for i, name in enumerate(files)]
    length = sum(map(len, out))
    address = 0x1000
    while length < size:
        ns, cls = rng.choice(NAMESPACES), rng.choice(WORDS) + rng.choice(WORDS)
        args = ", ".join(rng.choice(TYPES) for _ in range(rng.randrange(4)))
        if rng.random() < 0.3:  # templates: long, repetitive names, as in real C++ symbols
            cls += f"<{rng.choice(NAMESPACES)}::{rng.choice(WORDS)}, {rng.choice(TYPES)}>"
        name = f"{ns}::{cls}::{rng.choice(VERBS)}{rng.choice(WORDS)}({args})"
        lines = rng.randrange(2, 30)
        sizes = [rng.choice(STEPS) for _ in range(lines)]
        total = sum(sizes)
        block = [f"FUNC {address:x} {total:x} {rng.choice((0, 0, 8, 0x10, 0x18)):x} {name}\n"]
        file_index, line = rng.randrange(len(files)), rng.randrange(1, 5000)
        at = address
        for step in sizes:
            if rng.random() < 0.03:
                file_index = rng.randrange(len(files))
            line += rng.choice((0, 0, 1, 1, 1, 2, -1, 3))
            block.append(f"{at:x} {step:x} {max(line, 1)} {file_index}\n")
            at += step
        block.append(f"STACK CFI INIT {address:x} {total:x} .cfa: $rsp 8 + .ra: .cfa -8 + ^\n")
        block.append(f"STACK CFI {address + 1:x} .cfa: $rsp 16 + $rbp: .cfa -16 + ^\n")
        block.append(f"STACK CFI {address + 4:x} .cfa: $rbp 16 +\n")
        for reg in rng.sample(("$rbx", "$r12", "$r13", "$r14", "$r15"), rng.randrange(4)):
            block.append(f"STACK CFI {at - 8:x} {reg}: .cfa -{rng.choice((24, 32, 40, 48))} + ^\n")
        if rng.random() < 0.05:
            block.append(f"PUBLIC {at + 0x10:x} 0 {rng.choice(WORDS).lower()}_{at:x}\n")
        address = at + rng.randrange(0, 0x20)
        text = "".join(block)
        out.append(text)
        length += len(text)
    return "".join(out).encode()[:size]


def make_archive(path: Path, size_mb: int, seed: int = 1) -> tuple[list[str], int]:
    """A zip of about ``size_mb`` MiB of .sym files; returns member names and uncompressed bytes.

    The record text is made once (a few MB of Python string work); every file is that text cut
    at a different line and prefixed by its own header, so the members differ but cost nothing.
    """
    rng = random.Random(seed)
    base = sym_body(rng, 6 * MB)
    names: list[str] = []
    total = 0
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:  # level 6, like zip(1)
        i = 0
        while total < size_mb * MB:
            size = min(rng.randrange(2 * MB, 6 * MB), size_mb * MB - total)
            module = f"mod{i:04d}"
            debug_id = f"{rng.getrandbits(128):032X}{rng.randrange(10)}"
            header = (
                f"MODULE windows x86_64 {debug_id} {module}.pdb\n"
                f"INFO CODE_ID {rng.getrandbits(48):012X} {module}.dll\n"
                "INFO GENERATOR mozilla/dump_syms 2.3.3\n"
            ).encode()
            cut = base.index(b"\n", rng.randrange(len(base) - 1)) + 1
            body = (base[cut:] + base[:cut])[: max(size - len(header), 0)]
            name = f"{module}.pdb/{debug_id}/{module}.sym"
            zf.writestr(name, header + body)
            names.append(name)
            total += len(header) + len(body)
            i += 1
    return names, total


# -- processes -----------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "symbolon.admin_cli.main", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode:
        raise SystemExit(f"symbolon {' '.join(args)} failed:\n{done.stderr}{done.stdout}")
    return done.stdout


# -- the two measurements ------------------------------------------------------------------------


def upload(port: int, token: str, archive: Path) -> tuple[int, dict, float, float]:
    """POST the archive as a multipart form, streamed from disk; (status, json, sent s, total s)."""
    boundary = uuid.uuid4().hex
    head = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="{archive.name}"; filename="{archive.name}"\r\n'
        "Content-Type: application/zip\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    length = len(head) + archive.stat().st_size + len(tail)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=3600)
    try:
        start = time.perf_counter()
        conn.putrequest("POST", "/upload/")
        conn.putheader("Auth-Token", token)
        conn.putheader("Content-Type", f"multipart/form-data; boundary={boundary}")
        conn.putheader("Content-Length", str(length))
        conn.endheaders()
        conn.send(head)
        with open(archive, "rb") as body:
            while chunk := body.read(CHUNK):
                conn.send(chunk)
        conn.send(tail)
        sent = time.perf_counter() - start
        response = conn.getresponse()
        payload = response.read()
        total = time.perf_counter() - start
    finally:
        conn.close()
    try:
        answer = json.loads(payload)
    except ValueError:
        answer = {"raw": payload[:500].decode(errors="replace")}
    return response.status, answer, sent, total


def bare_key(name: str) -> str:
    parts = name.split("/")
    return f"{BARE_PREFIX}/{parts[0]}/{parts[1].upper()}/{parts[2]}"


def s3_put(endpoint: str) -> Callable[[str, bytes, dict[str, str]], None]:
    """A PUT of a gzipped member to the bucket, with boto3."""
    s3 = boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id="k", aws_secret_access_key="s",
        config=Config(max_pool_connections=BARE_THREADS, s3={"addressing_style": "path"}),
    )  # fmt: skip

    def put(key: str, body: bytes, metadata: dict[str, str]) -> None:
        s3.put_object(
            Bucket=BUCKET,
            Key=key,
            Body=body,
            ContentEncoding="gzip",
            ContentType="text/plain",
            Metadata=metadata,
        )

    return put


def directory_put(
    store: DirectoryStore, tmp_dir: Path
) -> Callable[[str, bytes, dict[str, str]], None]:
    """A write of a gzipped member to the directory, through a temporary file as the server's
    own (the store copies it to its .tmp, fsyncs and renames it into place)."""

    def put(key: str, body: bytes, metadata: dict[str, str]) -> None:
        path = tmp_dir / uuid.uuid4().hex
        path.write_bytes(body)
        try:
            asyncio.run(
                store.put_file(
                    key,
                    path,
                    content_type="text/plain",
                    content_encoding="gzip",
                    metadata=metadata,
                )
            )
        finally:
            path.unlink()

    return put


def bare_loop(
    put: Callable[[str, bytes, dict[str, str]], None], archive: Path, names: list[str]
) -> float:
    """The limit: inflate, gzip -9 and store every member, 8 at a time; returns seconds."""

    def one(zf: zipfile.ZipFile, name: str) -> None:
        with zf.open(name) as member:
            data = member.read()
        body = gzip.compress(data, compresslevel=9, mtime=0)
        metadata = {
            "original_size": str(len(data)),
            "original_md5_hash": hashlib.md5(data).hexdigest(),
        }
        put(bare_key(name), body, metadata)

    start = time.perf_counter()
    with (
        zipfile.ZipFile(archive) as zf,
        concurrent.futures.ThreadPoolExecutor(BARE_THREADS) as pool,
    ):
        for future in [pool.submit(one, zf, name) for name in names]:
            future.result()
    return time.perf_counter() - start


def gzip_only(archive: Path, names: list[str], budget: int) -> tuple[float, int]:
    """The CPU ceiling: gzip -9 alone, one thread per core, on members already in memory.

    Only the first ``budget`` bytes' worth of members, to keep it short; (seconds, bytes).
    """
    data: list[bytes] = []
    with zipfile.ZipFile(archive) as zf:
        for name in names:
            data.append(zf.read(name))
            if sum(map(len, data)) >= budget:
                break
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        list(pool.map(lambda d: gzip.compress(d, compresslevel=9, mtime=0), data))
    return time.perf_counter() - start, sum(map(len, data))


def count_s3(s3: Any, prefix: str) -> tuple[int, int]:
    count = size = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix + "/"):
        for item in page.get("Contents", []):
            count += 1
            size += item["Size"]
    return count, size


def count_directory(store: DirectoryStore, prefix: str) -> tuple[int, int]:
    async def listed() -> list[Any]:
        return [info async for info in store.list(prefix + "/")]

    infos = asyncio.run(listed())
    return len(infos), sum(info.size for info in infos)


# -- main ----------------------------------------------------------------------------------------


@dataclass
class Run:
    """One backend's figures."""

    backend: str
    server_s: float
    sent_s: float
    bare_s: float
    stored: int
    stored_size: int
    idle_rss: float
    peak_rss: float
    emulator_rss: float | None
    cpu: dict[str, tuple[float, float | None, float]]  # scenario: server, emulator, bench


def measure(
    backend: str,
    live: Settings,
    work: Path,
    archive: Path,
    names: list[str],
    emulator: int | None,
) -> Run:
    """One serve process storing into ``backend``: the upload, then the bare loop beside it."""
    port = free_port()
    env: dict[str, str] = {
        **os.environ,
        "SYMBOLON_DATA_DIR": str(work / f"server-{backend}"),  # its staging directory
        "DATABASE_URL": str(live.database_url),
        "REDIS_URL": str(live.redis_url),  # both set by the embedded stack
        "REDIS_STORE_URL": str(live.redis_store_url),
        "ENABLE_CRASH_COLLECTOR": "false",  # not what this measures
        "AWS_ACCESS_KEY_ID": "k",
        "AWS_SECRET_ACCESS_KEY": "s",
        "SECRET_KEY": "bench",
        "PORT": str(port),
        "WORKER_THREADS": "2",
        "UPLOAD_WAIT_SECONDS": "3600",
        "LOGGING_LEVEL": "WARNING",
    }
    if backend == "s3":
        endpoint = live.symbol_urls[0].rsplit("/", 1)[0]
        s3 = boto3.client(
            "s3", endpoint_url=endpoint, region_name="us-east-1",
            aws_access_key_id="k", aws_secret_access_key="s",
        )  # fmt: skip
        s3.create_bucket(Bucket=BUCKET)
        url = f"{endpoint}/{BUCKET}"
        put = s3_put(endpoint)

        def count(prefix: str) -> tuple[int, int]:
            return count_s3(s3, prefix)
    else:
        url = (work / "symbols").as_uri()
        store = DirectoryStore(SymbolSource.parse(url), "bench")
        asyncio.run(store.ensure())
        bare_tmp = work / "bare-tmp"
        bare_tmp.mkdir()
        put = directory_put(store, bare_tmp)

        def count(prefix: str) -> tuple[int, int]:
            return count_directory(store, prefix)

    env.update(SYMBOL_URLS=url, UPLOAD_DEFAULT_URL=url)
    server: subprocess.Popen | None = None
    try:
        cli(env, "superuser", EMAIL)
        token = cli(env, "token", "create", EMAIL, "--permission", "upload_symbols")
        token = token.strip().splitlines()[-1]
        server = subprocess.Popen(
            [sys.executable, "-m", "symbolon.admin_cli.main", "serve"], env=env, cwd=ROOT
        )
        wait_port(port, server)
        idle_rss = proc_status_mb(server.pid, "VmRSS")
        me = os.getpid()
        pids = [p for p in (server.pid, emulator, me) if p is not None]

        def cpu() -> dict[int, float]:
            return {pid: cpu_seconds(pid) for pid in pids}

        cpu0 = cpu()
        status, answer, sent, server_s = upload(port, token, archive)
        cpu1 = cpu()
        peak_rss = proc_status_mb(server.pid, "VmHWM")
        if status != 201:
            raise SystemExit(f"{backend}: upload answered {status}: {answer}")
        stored, stored_size = count("v1")
        if stored != len(names):
            raise SystemExit(f"{backend}: the server stored {stored} objects, not {len(names)}")
        print(f"{backend}: 201 after {server_s:.1f}s (body sent after {sent:.1f}s)", flush=True)

        bare_s = bare_loop(put, archive, names)
        cpu2 = cpu()
        bare_stored, _ = count(BARE_PREFIX)
        if bare_stored != len(names):
            raise SystemExit(f"{backend}: the bare loop stored {bare_stored}, not {len(names)}")
        emulator_rss = proc_status_mb(emulator, "VmHWM") if emulator else None
    finally:
        stop_servers(server)

    def used(before: dict[int, float], after: dict[int, float]) -> tuple:
        server_cpu = after[server.pid] - before[server.pid]
        emulator_cpu = after[emulator] - before[emulator] if emulator else None
        return server_cpu, emulator_cpu, after[me] - before[me]

    return Run(
        backend=backend,
        server_s=server_s,
        sent_s=sent,
        bare_s=bare_s,
        stored=stored,
        stored_size=stored_size,
        idle_rss=idle_rss,
        peak_rss=peak_rss,
        emulator_rss=emulator_rss,
        cpu={"(a) POST /upload/": used(cpu0, cpu1), "(b) bare loop": used(cpu1, cpu2)},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=500, help="uncompressed MiB in the zip")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--backend",
        choices=("directory", "s3", "both"),
        default="both",
        help="store into a directory, a bucket on the S3 emulator, or each in turn",
    )
    args = parser.parse_args()
    backends = ("directory", "s3") if args.backend == "both" else (args.backend,)
    # A SIGTERM (or a timeout's kill) must still run the clean-up below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    work = Path(tempfile.mkdtemp(prefix="symbolon-bench-upload-"))
    stack: EmbeddedStack | None = None
    runs: list[Run] = []
    try:
        archive = work / "symbols.zip"
        t0 = time.perf_counter()
        names, uncompressed = make_archive(archive, args.size_mb, args.seed)
        zipped = archive.stat().st_size
        print(
            f"archive: {len(names)} .sym files, {uncompressed / MB:.0f} MiB uncompressed, "
            f"{zipped / MB:.0f} MiB zipped, made in {time.perf_counter() - t0:.0f}s",
            flush=True,
        )

        data_dir = work / "data"
        stack = EmbeddedStack(data_dir)
        # The S3 emulator only when a bucket is measured.
        storage = "s3" if "s3" in backends else "directory"
        live = stack.start(
            load_settings(
                {"SYMBOLON_DATA_DIR": str(data_dir), "EMBEDDED_STORAGE": storage},
                dotenv_path=None,
            )
        )
        emulator = stack.s3.owned_pid if stack.s3 else None
        for backend in backends:
            runs.append(
                measure(backend, live, work, archive, names, emulator if backend == "s3" else None)
            )
        ceiling_s, ceiling_bytes = gzip_only(archive, names, 128 * MB)
    finally:
        if stack is not None:
            stack.stop()
        shutil.rmtree(work, ignore_errors=True)

    def rates(seconds: float) -> str:
        zip_rate, sym_rate = zipped / MB / seconds, uncompressed / MB / seconds
        return f"{zip_rate:>10.1f} {sym_rate:>10.1f} {seconds:>8.1f}"

    ceiling = ceiling_bytes / MB / ceiling_s
    stored_size = runs[0].stored_size
    print(
        f"\n{len(names)} .sym files, {uncompressed / MB:.0f} MiB uncompressed, "
        f"{zipped / MB:.0f} MiB zipped, {stored_size / MB:.0f} MiB stored gzipped "
        f"(gzip -9 ratio {uncompressed / stored_size:.1f}x); {os.cpu_count()} cores"
    )
    print(f"{'scenario':<66} {'zip MB/s':>10} {'sym MB/s':>10} {'seconds':>8}")
    for run in runs:
        where = "a directory" if run.backend == "directory" else "the S3 emulator"
        print(f"{f'(a) POST /upload/ until the 201, into {where}':<66} {rates(run.server_s)}")
        bare = f"(b) bare loop: inflate, gzip -9, store, 8 threads, {where}"
        print(f"{bare:<66} {rates(run.bare_s)}")
    label = f"(c) gzip -9 alone, {os.cpu_count()} threads, in memory"
    print(f"{label:<66} {ceiling * zipped / uncompressed:>10.1f} {ceiling:>10.1f}")
    print("\nCPU seconds spent during each (2 cores: at most twice the wall time)")
    print(f"{'':<32} {'server':>8} {'S3 emu':>8} {'bench':>8}")
    for run in runs:
        for label, (server_cpu, emulator_cpu, bench_cpu) in run.cpu.items():
            emu = f"{emulator_cpu:>8.1f}" if emulator_cpu is not None else f"{'-':>8}"
            print(f"{f'{run.backend}: {label}':<32} {server_cpu:>8.1f} {emu} {bench_cpu:>8.1f}")
    print()
    for run in runs:
        emulator_peak = (
            f"; embedded S3 emulator peak {run.emulator_rss:.0f} MB" if run.emulator_rss else ""
        )
        print(
            f"{run.backend}: server / bare loop {run.bare_s / run.server_s:.0%} (goal: at least "
            f"70%), server / gzip -9 alone {uncompressed / run.server_s / MB / ceiling:.0%}; "
            f"server RSS {run.idle_rss:.0f} MB idle, peak {run.peak_rss:.0f} MB (goal: under "
            f"300 MB){emulator_peak}"
        )


if __name__ == "__main__":
    main()
