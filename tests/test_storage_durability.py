"""``symbolon serve`` on its default directory storage (docs/embedded.md, "Symbol storage"),
killed with ``kill -9`` while clients upload: after a restart on the same data dir, every upload
it acknowledged is there byte for byte, and nothing but whole objects is visible."""

from __future__ import annotations

import ctypes
import gzip
import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urlsplit

import psutil
import pytest

from symbolon.storage.sources import SymbolSource
from symbolon.storage.store import ObjectInfo, SymbolStore
from symbolon.storage.stores.directory import META, STALE_TMP_SECONDS, TMP, DirectoryStore
from tests.conftest import free_port, run_isolated
from tests.serving import (
    REQUEST_WITHIN,
    START_WITHIN,
    download,
    embedded_env,
    embedded_pids,
    heartbeat,
    make_token,
    request,
    start,
    stop,
    upload_zip,
)

V1_CLIENTS = 3
MEMBERS = 3  # files in each v1 archive
SYM_BYTES = 200_000
V2_BYTES = 100_000
PARTIAL_BYTES = 8 * 1024 * 1024  # the PUT cut off in the middle
# What has to have happened before the kill: acknowledged uploads of both kinds.
ACKNOWLEDGED_V1 = 3
ACKNOWLEDGED_V2 = 1
GONE_WITHIN = 60
PR_SET_CHILD_SUBREAPER = 36  # prctl(2)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def debug_id() -> str:
    return uuid.uuid4().hex.upper() + "1"


def sym_file(ident: str, name: str, size: int) -> bytes:
    """A sym file of random records: it compresses about as little as text can."""
    header = f"MODULE linux x86_64 {ident} {name}\nINFO CODE_ID {ident[:16]}\n".encode()
    lines = []
    remaining = size - len(header)
    while remaining > 0:
        line = f"PUBLIC {os.urandom(4).hex()} 0 f_{os.urandom(24).hex()}\n".encode()
        lines.append(line)
        remaining -= len(line)
    return header + b"".join(lines)


@dataclass
class Traffic:
    """What the clients did: the uploads the server acknowledged, each as {path: content}."""

    token: str
    port: int
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    acknowledged: list[tuple[str, dict[str, bytes]]] = field(default_factory=list)
    in_flight: int = 0
    partial_key: str | None = None

    def count(self, kind: str) -> int:
        with self.lock:
            return sum(1 for k, _ in self.acknowledged if k == kind)

    def acknowledge(self, kind: str, members: dict[str, bytes]) -> None:
        with self.lock:
            self.acknowledged.append((kind, members))


# The server went away mid-request.
LOST = (OSError, http.client.HTTPException, ValueError)


def v1_client(traffic: Traffic, label: str) -> None:
    n = 0
    while not traffic.stop.is_set():
        members = {}
        for m in range(MEMBERS):
            name, ident = f"{label}-{n}-{m}", debug_id()
            members[f"{name}.pdb/{ident}/{name}.sym"] = sym_file(ident, f"{name}.pdb", SYM_BYTES)
        with traffic.lock:
            traffic.in_flight += 1
        try:
            status, answer = upload_zip(traffic.port, traffic.token, members)
        except LOST:
            return
        finally:
            with traffic.lock:
                traffic.in_flight -= 1
        # Acknowledged: the 201 says the upload completed.
        if status == 201 and answer["upload"]["completed_at"]:
            traffic.acknowledge("v1", members)
        n += 1


def plan(traffic: Traffic, members: dict[str, bytes]) -> dict[str, Any]:
    files = [{"key": k, "size": len(c), "md5_hash": md5(c)} for k, c in members.items()]
    status, _, body = request(
        traffic.port,
        "POST",
        "/upload/v2/",
        json.dumps({"files": files}).encode(),
        {"Auth-Token": traffic.token, "Content-Type": "application/json"},
    )
    assert status == 201, body
    planned: dict[str, Any] = json.loads(body)
    return planned


def put(action: dict[str, Any], content: bytes) -> int:
    url = urlsplit(action["url"])
    assert url.port is not None
    data = gzip.compress(content) if action["content_encoding"] == "gzip" else content
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=REQUEST_WITHIN)
    try:
        conn.request("PUT", f"{url.path}?{url.query}", body=data, headers=action["headers"])
        response = conn.getresponse()
        response.read()
        return int(response.status)
    finally:
        conn.close()


def v2_client(traffic: Traffic) -> None:
    n = 0
    while not traffic.stop.is_set():
        members = {}
        for m in range(2):
            name, ident = f"v2-{n}-{m}", debug_id()
            members[f"{name}.pdb/{ident}/{name}.sym"] = sym_file(ident, f"{name}.pdb", V2_BYTES)
        try:
            planned = plan(traffic, members)
            for entry, content in zip(planned["files"], members.values(), strict=True):
                if put(entry["action"], content) != 200:
                    return
            status, _, _ = request(
                traffic.port,
                "POST",
                planned["complete_url"],
                b"{}",
                {"Auth-Token": traffic.token, "Content-Type": "application/json"},
            )
        except LOST:
            return
        if status == 201:
            traffic.acknowledge("v2", members)
        n += 1


def partial_put(traffic: Traffic) -> None:
    """A v2 PUT that sends half its body, then waits: the server dies with it half written."""
    ident = debug_id()
    content = os.urandom(PARTIAL_BYTES)
    try:
        planned = plan(traffic, {f"part.pdb/{ident}/part.pd_": content})
    except LOST:
        return
    action = planned["files"][0]["action"]
    url = urlsplit(action["url"])
    assert url.hostname is not None and url.port is not None
    head = [f"PUT {url.path}?{url.query} HTTP/1.1", f"Host: {url.netloc}"]
    head += [f"{name}: {value}" for name, value in action["headers"].items()]
    head += [f"Content-Length: {len(content)}", "", ""]
    with socket.create_connection((url.hostname, url.port), timeout=REQUEST_WITHIN) as sock:
        sock.sendall("\r\n".join(head).encode() + content[: len(content) // 2])
        with traffic.lock:
            # /storage/<location id>/<pending key>
            traffic.partial_key = unquote(url.path.split("/", 3)[3])
        traffic.stop.wait()


def largest_tmp(root: Path) -> int:
    try:
        return max((e.stat().st_size for e in os.scandir(root / TMP) if e.is_file()), default=0)
    except FileNotFoundError:
        return 0


def wait_for(check: Any, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.01)
    raise AssertionError(f"{what}: not within {seconds:.0f}s")


def gone(pids: list[int]) -> bool:
    """Whether every process of ``pids`` has exited and been reaped (a zombie still holds its
    pid, and embedded PostgreSQL takes a postmaster.pid naming a zombie for a running server)."""
    for pid in pids:
        with suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # an orphan of ours (see reaping_orphans)
        if psutil.pid_exists(pid):
            return False
    return True


@contextmanager
def reaping_orphans() -> Iterator[None]:
    """Make this process the reaper of orphans started below it, as an init is (this machine's
    PID 1 reaps none): what serve started lives on in other sessions, and once killed it must
    leave no zombie behind."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        pytest.skip(f"cannot become a child subreaper: {os.strerror(ctypes.get_errno())}")
    try:
        yield
    finally:
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
        for child in psutil.Process().children():
            with suppress(psutil.Error, ChildProcessError):
                if child.status() == psutil.STATUS_ZOMBIE:
                    os.waitpid(child.pid, os.WNOHANG)


def with_descendants(pids: list[int]) -> list[int]:
    found = []
    for pid in pids:
        try:
            process = psutil.Process(pid)
            found += [pid, *(c.pid for c in process.children(recursive=True))]
        except psutil.NoSuchProcess:
            continue
    return found


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """serve's data dir (not under pytest's temp dir: see tests/test_serve.py); whatever
    embedded server a killed serve left running is stopped at the end."""
    parent = Path(tempfile.mkdtemp(prefix="symbolon-durability-"))
    with reaping_orphans():
        yield parent / "data"
        stop_embedded(parent / "data")
    shutil.rmtree(parent, ignore_errors=True)


def stop_embedded(data_dir: Path) -> None:
    """Stop the embedded servers still running on ``data_dir``: a fast shutdown of PostgreSQL,
    a SIGTERM to each Redis; SIGKILL for what does not stop."""
    servers = embedded_pids(data_dir)
    leftovers = with_descendants(servers)
    for pid in servers:
        with suppress(psutil.Error):
            server = psutil.Process(pid)
            server.send_signal(signal.SIGINT if "postgres" in server.name() else signal.SIGTERM)
    deadline = time.monotonic() + GONE_WITHIN
    while time.monotonic() < deadline and not gone(leftovers):
        time.sleep(0.1)
    for pid in leftovers:
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + GONE_WITHIN
    while time.monotonic() < deadline and not gone(leftovers):
        time.sleep(0.1)


async def listed(store: SymbolStore) -> list[ObjectInfo]:
    return [info async for info in store.list("")]


def files_under(root: Path) -> set[str]:
    """Every file below ``root`` that is not the store's own (``.tmp``, ``.meta``)."""
    found = set()
    for directory, subdirectories, names in os.walk(root):
        subdirectories[:] = [d for d in subdirectories if d not in (TMP, META)]
        for name in names:
            found.add(os.path.relpath(os.path.join(directory, name), root))
    return found


def read_log(log: IO[str]) -> str:
    log.flush()
    log.seek(0)
    return log.read()


def answering(port: int, proc: Any, log: IO[str]) -> None:
    """Until serve answers its heartbeat with 200; its log in the failure if it does not."""
    try:
        answer = heartbeat(port, proc, START_WITHIN)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{read_log(log)}") from None
    assert answer["code"] == 200, (answer, read_log(log))


@pytest.mark.parametrize("kill", ["serve", "everything"])
def test_acknowledged_uploads_survive_a_kill_9_and_nothing_half_written_shows(data_dir, kill):
    """``serve``: the serve process alone (its embedded servers live on and the restart attaches
    to them). ``everything``: serve's process group and every embedded server with its children
    (they run in sessions of their own), as a power cut would leave them, the page cache aside."""
    port = free_port()
    env = embedded_env(data_dir, port, UPLOAD_WAIT_SECONDS="120", LOGGING_LEVEL="WARNING")
    root = data_dir / "symbols"
    with tempfile.TemporaryFile("w+") as log:
        proc = start(env, output=log, own_session=True)
        try:
            answering(port, proc, log)
            traffic = Traffic(token=make_token(env, "ci@example.com"), port=port)
            clients = [
                threading.Thread(target=v1_client, args=(traffic, f"c{i}"))
                for i in range(V1_CLIENTS)
            ]
            clients += [
                threading.Thread(target=v2_client, args=(traffic,)),
                threading.Thread(target=partial_put, args=(traffic,)),
            ]
            for client in clients:
                client.start()

            def in_the_middle() -> bool:
                with traffic.lock:
                    busy = traffic.in_flight > 0 and traffic.partial_key is not None
                return (
                    busy
                    and traffic.count("v1") >= ACKNOWLEDGED_V1
                    and traffic.count("v2") >= ACKNOWLEDGED_V2
                    and largest_tmp(root) >= PARTIAL_BYTES // 2
                )

            try:
                wait_for(in_the_middle, 4 * REQUEST_WITHIN, "uploads acknowledged and in flight")
            except AssertionError:
                raise AssertionError(read_log(log)) from None
            if kill == "serve":
                victims = [proc.pid]
                os.kill(proc.pid, signal.SIGKILL)
            else:
                victims = with_descendants([proc.pid, *embedded_pids(data_dir)])
                os.killpg(proc.pid, signal.SIGKILL)
                for pid in victims:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        continue
            proc.wait(timeout=GONE_WITHIN)
            wait_for(lambda: gone(victims), GONE_WITHIN, "the killed processes gone")
        finally:
            traffic.stop.set()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for client in clients:
            client.join(timeout=REQUEST_WITHIN)
            assert not client.is_alive()
        with traffic.lock:
            acknowledged = list(traffic.acknowledged)
            partial_key = traffic.partial_key
        assert partial_key is not None

        # The PUT cut off left its temporary file, and nothing else of it.
        leftovers = [e.path for e in os.scandir(root / TMP)]
        assert leftovers, "the kill left no temporary file: it hit no write"
        assert not (root / partial_key).exists()
        # Leftovers are swept at start once as old as a dead writer's can be (a younger one may
        # be a live writer's in another process); an hour passes.
        aged = time.time() - STALE_TMP_SECONDS - 60
        for path in leftovers:
            if os.stat(path).st_nlink > 1:
                # A copy's leftover is a hard link to the object copied: aging it would age
                # the object too, which its description names by modification time.
                shutil.copyfile(path, f"{path}.own")
                os.replace(f"{path}.own", path)
            os.utime(path, (aged, aged))

        port = free_port()
        env["PORT"] = str(port)
        proc = start(env, output=log, own_session=True)
        try:
            answering(port, proc, log)
            assert not any(os.path.exists(path) for path in leftovers)

            # Every acknowledged upload, whole, through the restarted server.
            for _, members in acknowledged:
                for path, content in members.items():
                    status, body, headers = download(port, f"/{path}")
                    assert status == 302, path
                    assert headers["Content-Encoding"] == "gzip", path
                    assert gzip.decompress(body) == content, path

            # Downloads agree with the listing. Files under v1/ are only ever added (or
            # replaced by the same bytes): the upload the kill interrupted may be processed
            # again meanwhile, its task delivered again.
            secret = (data_dir / "secret_key").read_text().strip()
            store = DirectoryStore(SymbolSource.parse(root.as_uri()), secret)
            try_store = DirectoryStore(SymbolSource.parse((root / "try").as_uri()), secret)
            published = [i for i in run_isolated(listed(store)) if i.key.startswith("v1/")]
            assert len(published) >= sum(len(members) for _, members in acknowledged)
            for info in published:
                status, body, _ = download(port, "/" + info.key.removeprefix("v1/"))
                assert status == 302 and info.etag and md5(body) == info.etag, info.key
        finally:
            stop(proc)  # and with it the work it took up again: what is on disk stays

        # Nothing but whole objects: the store lists exactly the files on disk, each as its
        # description says.
        objects = run_isolated(listed(store))
        try_objects = run_isolated(listed(try_store))
        keys = {i.key for i in objects} | {f"try/{i.key}" for i in try_objects}
        assert files_under(root) == keys
        assert partial_key not in keys
        for info in objects:
            data = (root / info.key).read_bytes()
            assert (len(data), md5(data)) == (info.size, info.etag), info.key
            # Every file here is a gzipped sym file: described (a file its sidecar does not
            # describe has no encoding) and whole (a cut gzip stream does not inflate).
            assert info.content_encoding == "gzip", info.key
            inflated = gzip.decompress(data)
            assert md5(inflated) == info.metadata["original_md5_hash"], info.key
        output = read_log(log)
    assert "Traceback" not in output, output
