"""``symbolon serve`` end to end, as ``make run`` starts it: embedded services, then Ctrl-C."""

import asyncio
import gzip
import inspect
import os
import shutil
import signal
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvloop

from symbolon.server.lifecycle import StartupError, run_loop
from tests.cli import env_for, symbolon
from tests.conftest import free_port, run_isolated, wait_until
from tests.serving import (
    START_WITHIN,
    STOP_WITHIN,
    described,
    download,
    embedded_env,
    embedded_pids,
    embedded_s3,
    heartbeat,
    make_token,
    pid_alive,
    start,
    stop,
    upload_zip,
)
from tests.uploads import sym_text


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A data dir for serve's own embedded services.

    Not under pytest's temp dir: every pytest start (any run on the machine) makes that private
    (0700) again, and the embedded PostgreSQL runs as another user when tests run as root, so
    pg_ctl could then no longer reach it, not even to stop it."""
    parent = Path(tempfile.mkdtemp(prefix="symbolon-serve-test-"))
    yield parent / "data"
    shutil.rmtree(parent, ignore_errors=True)


@pytest.mark.parametrize("storage", ["directory", "s3"])
def test_serve_runs_on_embedded_services_and_keeps_its_data_across_restarts(data_dir, storage):
    """Symbols go to ``<data>/symbols`` by default, to the embedded S3 emulator with
    ``EMBEDDED_STORAGE=s3``; either way an upload is downloaded again after a restart."""
    port = free_port()
    env = embedded_env(data_dir, port)
    if storage == "s3":
        env["EMBEDDED_STORAGE"] = "s3"
    proc = start(env)
    try:
        body = heartbeat(port, proc)
        assert body["code"] == 200 and body["status"] == "ok", body
        pids = embedded_pids(data_dir)
        assert all(pid_alive(p) for p in pids)
        # Both Redis and PostgreSQL; the S3 emulator only when asked for.
        assert len(pids) == (4 if storage == "s3" else 3), described(pids)
        assert (data_dir / "s3").exists() == (storage == "s3")

        # A command on the same data dir attaches to the running services.
        token = make_token(env, "ops@example.com")
        assert all(pid_alive(p) for p in pids), "the command stopped servers it did not start"

        ident = uuid.uuid4().hex.upper() + "1"
        path = f"/a.pdb/{ident}/a.sym"
        content = sym_text(ident, "a")
        status, answer = upload_zip(port, token, {path[1:]: content})
        assert status == 201, answer
        stored = data_dir / "symbols" / f"v1{path}"
        if storage == "directory":
            assert gzip.decompress(stored.read_bytes()) == content
        else:
            assert not stored.exists()
            obj = embedded_s3(data_dir).get_object(Bucket="symbols", Key=f"v1{path}")
            assert gzip.decompress(obj["Body"].read()) == content
        assert heartbeat(port, proc)["code"] == 200
    finally:
        output = stop(proc)
    assert "Traceback" not in output, output
    assert "event loop uvloop" in output, output  # EVENT_LOOP's default
    # serve waited for each server it stopped, but one it had to kill may take a moment to go.
    gone = run_isolated(wait_until(lambda: not any(pid_alive(p) for p in pids), STOP_WITHIN))
    assert gone, f"Ctrl-C left embedded servers running: {described(pids)}\n{output}"

    # A second start finds the user and the stored symbol again; on the standard library's loop.
    proc = start({**env, "EVENT_LOOP": "asyncio"})
    try:
        assert heartbeat(port, proc)["code"] == 200
        again = symbolon("superuser", "ops@example.com", env=env)
        assert "already a superuser" in again.stdout
        status, data, headers = download(port, path)
        assert status == 302
        assert headers["Content-Encoding"] == "gzip" and gzip.decompress(data) == content
    finally:
        output = stop(proc)
    assert "event loop asyncio" in output, output


def test_serve_refuses_to_start_when_a_configured_bucket_is_missing(live_settings):
    endpoint = live_settings.symbol_urls[0].rsplit("/", 1)[0]
    url = f"{endpoint}/no-such-bucket"
    env = env_for(live_settings, SYMBOL_URLS=url, UPLOAD_DEFAULT_URL=url, PORT=str(free_port()))
    proc = start(env)
    output = proc.communicate(timeout=60)[0]
    assert proc.returncode == 1
    assert "refusing to start" in output
    assert (
        f"Unable to connect to {url} (bucket='no-such-bucket'), because bucket not found" in output
    )


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return sorted(found)


def test_serve_runs_several_web_processes_and_replaces_one_that_dies(live_settings):
    port = free_port()
    env = env_for(live_settings, PORT=str(port), WEB_PROCESSES="2", WORKER_THREADS="0")
    proc = start(env)
    try:
        assert heartbeat(port, proc)["code"] == 200
        run_isolated(wait_until(lambda: len(children_of(proc.pid)) >= 2, START_WITHIN))
        first = children_of(proc.pid)
        assert len(first) == 2, first

        os.kill(first[0], signal.SIGKILL)

        def replaced() -> bool:
            now = children_of(proc.pid)
            return len(now) == 2 and first[0] not in now

        run_isolated(wait_until(replaced, START_WITHIN))
        now = children_of(proc.pid)
        assert len(now) == 2 and first[0] not in now, now
        assert heartbeat(port, proc)["code"] == 200
    finally:
        output = stop(proc)
    assert "exited (status 9); starting another" in output, output
    assert not any(pid_alive(p) for p in now), "a web process outlived serve"


async def running_loop_type() -> type:
    return type(asyncio.get_running_loop())


def test_event_loop_names_the_loop_serve_runs_on(live_settings):
    assert run_loop(live_settings.replace(event_loop="uvloop"), running_loop_type()) is uvloop.Loop
    policy = asyncio.get_event_loop_policy()  # the suite's is uvloop's (conftest)
    asyncio.set_event_loop_policy(None)
    try:
        standard = run_loop(live_settings.replace(event_loop="asyncio"), running_loop_type())
    finally:
        asyncio.set_event_loop_policy(policy)
    assert issubclass(standard, asyncio.BaseEventLoop) and not issubclass(standard, uvloop.Loop)


def test_serve_refuses_to_start_when_uvloop_is_missing(live_settings, monkeypatch):
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop then raises ImportError
    main = running_loop_type()
    with pytest.raises(StartupError, match="EVENT_LOOP=asyncio"):
        run_loop(live_settings.replace(event_loop="uvloop"), main)
    # Closed: no "never awaited" warning.
    assert inspect.getcoroutinestate(main) == inspect.CORO_CLOSED
