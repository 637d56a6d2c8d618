"""What the benchmark scripts share: ports, waiting for a server, reading /proc."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen | None = None, seconds: float = 60) -> None:
    """Until something accepts connections on the port; stops early if ``proc`` exits."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"the server exited with status {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"nothing answers on port {port}")


def proc_status_mb(pid: int, field: str) -> float:
    """A memory figure of /proc/<pid>/status in MB: VmRSS now, VmHWM the peak."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def stop_servers(*procs: subprocess.Popen | None, timeout: float = 30) -> None:
    """Ctrl-C each server at once (they stop in parallel), then wait; kill what does not stop."""
    running = [p for p in procs if p is not None]
    for proc in running:
        proc.send_signal(signal.SIGINT)
    for proc in running:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
