"""``symbolon serve`` as an operator starts it, on a data dir of its own with embedded services:
starting, waiting for it, stopping or killing it, and talking to it as clients do."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from email.message import Message
from pathlib import Path
from typing import IO, Any
from urllib.parse import urljoin, urlsplit

from symbolon.server.lifecycle import SHUTDOWN_GRACE_SECONDS
from tests.cli import symbolon
from tests.conftest import s3_client
from tests.uploads import make_zip, multipart

# serve starts its embedded servers one after another, each within its own allowance
# (PostgreSQL's pg_ctl 60 s, each Redis 10 s, S3 30 s), then migrates and checks storage.
START_WITHIN = 60 + 2 * 10 + 30 + 90
# After Ctrl-C it finishes requests in flight, then stops the servers one after another, each
# within its own allowance: S3 60 s (it writes a last snapshot), each Redis 15 s, PostgreSQL's
# pg_ctl 60 s.
STOP_WITHIN = SHUTDOWN_GRACE_SECONDS + 60 + 2 * 15 + 60 + 60
# What one request to a loaded server may take.
REQUEST_WITHIN = 120


def embedded_env(data_dir: Path, port: int, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(
            ("DATABASE_URL", "REDIS_", "SYMBOL", "UPLOAD_", "DJANGO_", "ELIOT_", "EMBEDDED_")
        )
    }
    env.update(SYMBOLON_DATA_DIR=str(data_dir), PORT=str(port), LOG_FORMAT="text", **extra)
    return env


def start(
    env: dict[str, str], output: IO[str] | None = None, own_session: bool = False
) -> subprocess.Popen[str]:
    """serve, its output piped (read it at the end) or written to ``output``; in a session of
    its own when it is to be killed with its whole process group."""
    return subprocess.Popen(
        [sys.executable, "-m", "symbolon.admin_cli.main", "serve"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=output if output is not None else subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=own_session,
    )


def heartbeat(port: int, proc: subprocess.Popen[str], seconds: float = START_WITHIN) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            output = proc.stdout.read() if proc.stdout else "(see its log)"
            raise AssertionError(f"serve exited early:\n{output}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/__heartbeat__", timeout=10) as r:
                return {"code": r.status, **json.loads(r.read())}
        except urllib.error.HTTPError as exc:
            return {"code": exc.code, **json.loads(exc.read())}
        except OSError:
            time.sleep(0.2)
    raise AssertionError("serve did not answer /__heartbeat__ in time")


def stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=STOP_WITHIN)[0] or ""
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
    """The embedded servers running on ``data_dir``: both Redis, PostgreSQL, and S3 if any."""
    pids = []
    for name in ("cache", "store"):
        pidfile = data_dir / "redis" / f"{name}.pid"
        if pidfile.exists():
            pids.append(int(pidfile.read_text()))
    s3_state = data_dir / "s3" / "server.json"
    if s3_state.exists():
        pids.append(json.loads(s3_state.read_text())["pid"])
    postmaster = data_dir / "postgres" / "postmaster.pid"
    if postmaster.exists():
        pids.append(int(postmaster.read_text().split()[0]))
    return [pid for pid in pids if pid_alive(pid)]


def embedded_s3(data_dir: Path) -> Any:
    port = json.loads((data_dir / "s3" / "server.json").read_text())["port"]
    return s3_client(f"http://127.0.0.1:{port}")


def make_token(env: dict[str, str], email: str) -> str:
    """An upload token, made as an operator makes one (the user made a superuser first)."""
    made = symbolon("superuser", email, env=env)
    assert made.returncode == 0, made.stderr
    created = symbolon("token", "create", email, "--permission", "upload_symbols", env=env)
    assert created.returncode == 0, created.stderr
    return created.stdout.strip().splitlines()[-1]


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Message, bytes]:
    """One request, answered as sent: status, headers (any case of a name finds them), body;
    redirects are not followed."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_WITHIN)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def upload_zip(port: int, token: str, members: dict[str, bytes]) -> tuple[int, dict[str, Any]]:
    """``POST /upload/`` of a zip of ``members``: the status and the JSON answer."""
    body, content_type = multipart({"symbols.zip": make_zip(members)})
    status, _, answer = request(
        port, "POST", "/upload/", body, {"Auth-Token": token, "Content-Type": content_type}
    )
    return status, json.loads(answer) if answer.startswith(b"{") else {}


def download(port: int, path: str) -> tuple[int, bytes, Message]:
    """A download as a debugger makes it: ``GET``, then the redirect followed. The status of the
    first answer, and the bytes and headers of the last (as stored: gzip is not inflated)."""
    status, headers, body = request(port, "GET", path)
    if status != 302:
        return status, body, headers
    location = urlsplit(urljoin(f"http://127.0.0.1:{port}{path}", headers["Location"]))
    target = location.path + (f"?{location.query}" if location.query else "")
    # A relative Location (a directory location's) is on the server asked.
    host, at = (location.hostname, location.port) if location.hostname else ("127.0.0.1", port)
    conn = http.client.HTTPConnection(host, at, timeout=REQUEST_WITHIN)
    try:
        conn.request("GET", target)
        response = conn.getresponse()
        assert response.status == 200, (response.status, headers["Location"])
        return status, response.read(), response.headers
    finally:
        conn.close()
