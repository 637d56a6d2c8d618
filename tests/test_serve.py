"""``symbolon serve`` end to end, as ``make run`` starts it: embedded services, then Ctrl-C."""

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvloop

from symbolon.server.lifecycle import SHUTDOWN_GRACE_SECONDS, StartupError, run_loop
from tests.cli import env_for, symbolon
from tests.conftest import free_port, run_isolated, s3_client, wait_until

# serve starts its embedded servers one after another, each within its own allowance
# (PostgreSQL's pg_ctl 60 s, each Redis 10 s, S3 30 s), then migrates and checks storage.
START_WITHIN = 60 + 2 * 10 + 30 + 90
# After Ctrl-C it finishes requests in flight, then stops the servers one after another, each
# within its own allowance: S3 60 s (it writes a last snapshot), each Redis 15 s, PostgreSQL's
# pg_ctl 60 s.
STOP_WITHIN = SHUTDOWN_GRACE_SECONDS + 60 + 2 * 15 + 60 + 60


def embedded_env(data_dir: Path, port: int) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATABASE_URL", "REDIS_", "SYMBOL", "UPLOAD_", "DJANGO_", "ELIOT_"))
    }
    env.update(SYMBOLON_DATA_DIR=str(data_dir), PORT=str(port), LOG_FORMAT="text")
    return env


def start(env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "symbolon.admin_cli.main", "serve"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def heartbeat(port: int, proc: subprocess.Popen, seconds: float = START_WITHIN) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited early:\n{proc.stdout.read()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/__heartbeat__", timeout=10) as r:
                return {"code": r.status, **json.loads(r.read())}
        except OSError:
            time.sleep(0.2)
    raise AssertionError("serve did not answer /__heartbeat__ in time")


def stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=STOP_WITHIN)[0]
    assert proc.returncode == 0, output
    return output


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def described(pids: list[int]) -> list[str]:
    """What each live process of ``pids`` is: pid, state, parent and command line."""
    found = []
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        found.append(f"{pid} ({state}, parent {ppid}): {cmdline.strip()}")
    return found


def embedded_pids(data_dir: Path) -> list[int]:
    pids = [int((data_dir / "redis" / f"{n}.pid").read_text()) for n in ("cache", "store")]
    pids.append(json.loads((data_dir / "s3" / "server.json").read_text())["pid"])
    pids.append(int((data_dir / "postgres" / "postmaster.pid").read_text().split()[0]))
    return pids


def embedded_s3(data_dir: Path):
    port = json.loads((data_dir / "s3" / "server.json").read_text())["port"]
    return s3_client(f"http://127.0.0.1:{port}")


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A data dir for serve's own embedded services.

    Not under pytest's temp dir: every pytest start (any run on the machine) makes that private
    (0700) again, and the embedded PostgreSQL runs as another user when tests run as root, so
    pg_ctl could then no longer reach it, not even to stop it."""
    parent = Path(tempfile.mkdtemp(prefix="symbolon-serve-test-"))
    yield parent / "data"
    shutil.rmtree(parent, ignore_errors=True)


def test_serve_runs_on_embedded_services_and_keeps_its_data_across_restarts(data_dir):
    port = free_port()
    env = embedded_env(data_dir, port)
    proc = start(env)
    try:
        body = heartbeat(port, proc)
        assert body["code"] == 200 and body["status"] == "ok", body
        pids = embedded_pids(data_dir)
        assert all(pid_alive(p) for p in pids)

        # A command on the same data dir attaches to the running services.
        made = symbolon("superuser", "ops@example.com", env=env)
        assert made.returncode == 0, made.stderr
        assert "now a superuser" in made.stdout
        assert all(pid_alive(p) for p in pids), "the command stopped servers it did not start"

        s3 = embedded_s3(data_dir)
        s3.put_object(
            Bucket="symbols", Key="v1/a.pdb/ID/a.sym", Body=b"MODULE", Metadata={"m": "1"}
        )
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
        obj = embedded_s3(data_dir).get_object(Bucket="symbols", Key="v1/a.pdb/ID/a.sym")
        assert obj["Body"].read() == b"MODULE" and obj["Metadata"] == {"m": "1"}
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
    assert main.cr_frame is None  # closed: no "never awaited" warning
