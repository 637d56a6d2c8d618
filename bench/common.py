"""What the benchmark scripts share: ports, waiting for a server, reading /proc, the CPU of a
server's web processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil


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


def start_serve(
    env: dict[str, str], log: Path, cwd: Path, seconds: float = 60
) -> tuple[subprocess.Popen, int]:
    """``symbolon serve`` of the source tree ``cwd`` on a free port, its output written to
    ``log``; once it accepts connections."""
    port = free_port()
    with open(log, "a") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "symbolon.admin_cli.main", "serve"],
            env={**env, "PORT": str(port)},
            cwd=cwd,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    wait_port(port, server, seconds)
    return server, port


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


def web_pids(pid: int, processes: int, seconds: float = 60) -> list[int]:
    """The web processes of ``symbolon serve`` running as ``pid``: itself with one, else the
    ``processes`` it forked (their command line is its own; parse pools are their children)."""
    if processes <= 1:
        return [pid]
    serve = psutil.Process(pid)
    deadline = time.monotonic() + seconds
    while True:
        found = []
        for child in serve.children():
            try:
                if child.cmdline() == serve.cmdline():
                    found.append(child.pid)
            except psutil.Error:
                continue
        if len(found) >= processes or time.monotonic() > deadline:
            return sorted(found)
        time.sleep(0.1)


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of one process so far (its threads, not its children); 0 once gone."""
    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return 0.0
    return times.user + times.system


def established(pid: int, port: int) -> int:
    """The connections to ``port`` that process ``pid`` holds open."""
    try:
        found = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.Error:
        return 0
    return sum(1 for c in found if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port)


class WebProcessCPU:
    """CPU seconds each web process spends between ``start`` and ``stop``: with several, an
    uneven spread of the clients' connections shows as a min/max ratio well under 1. With
    ``port``, also the connections each one held, sampled twice a second: the machine's other
    load can make the CPU uneven too, the connections it cannot."""

    def __init__(self, pids: list[int], port: int | None = None) -> None:
        self.pids = pids
        self.port = port
        self.seconds: dict[int, float] = {}
        self.samples: list[list[int]] = []
        self._done = threading.Event()
        self._sampler: threading.Thread | None = None

    def start(self) -> None:
        self.seconds = {pid: process_cpu_seconds(pid) for pid in self.pids}
        self.samples = []
        if self.port is not None and len(self.pids) > 1:
            self._done.clear()
            self._sampler = threading.Thread(target=self._sample, daemon=True)
            self._sampler.start()

    def _sample(self) -> None:
        assert self.port is not None
        while not self._done.wait(0.5):
            self.samples.append([established(pid, self.port) for pid in self.pids])

    def stop(self) -> dict[int, float]:
        self.seconds = {pid: process_cpu_seconds(pid) - s for pid, s in self.seconds.items()}
        if self._sampler is not None:
            self._done.set()
            self._sampler.join()
            self._sampler = None
        return self.seconds

    @property
    def total(self) -> float:
        return sum(self.seconds.values())

    @property
    def ratio(self) -> float:
        """The least busy process's CPU over the busiest's (1.0 with one process)."""
        most = max(self.seconds.values(), default=0.0)
        return min(self.seconds.values()) / most if most > 0 else 1.0

    def describe(self) -> str:
        each = " / ".join(f"{s:.1f}" for s in self.seconds.values())
        text = f"web processes CPU s {each} (min/max {self.ratio:.2f})"
        if self.samples:
            means = [sum(column) / len(self.samples) for column in zip(*self.samples, strict=True)]
            text += "; connections held, mean " + " / ".join(f"{m:.1f}" for m in means)
        return text


def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())
