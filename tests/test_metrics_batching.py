"""Metrics reach statsd several lines to a datagram, from any thread or process, and at exit."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from symbolon import metrics as metrics_module
from symbolon.conf import Settings
from symbolon.metrics import (
    FLUSH_SECONDS,
    MAX_DATAGRAM,
    configure_metrics,
    flush_metrics,
    metrics,
)
from tests.cli import env_for
from tests.conftest import free_port, repo_root
from tests.serving import heartbeat, stop

MISSING = "nothing.pdb/44E4EC8C2F41492B9369D6B9A059577C2/nothing.sym"


class Listener:
    """A statsd stand-in: a bound UDP socket, read datagram by datagram."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]

    def datagrams(self, lines: int, timeout: float = 30.0) -> list[bytes]:
        """Datagrams until they hold ``lines`` lines (or the timeout), then any straggler."""
        received: list[bytes] = []
        deadline = time.monotonic() + timeout
        while sum(len(d.split(b"\n")) for d in received) < lines:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.sock.settimeout(left)
            try:
                received.append(self.sock.recv(65536))
            except TimeoutError:
                break
        self.sock.settimeout(0.05)  # nothing more should come
        with contextlib.suppress(TimeoutError):
            received.append(self.sock.recv(65536))
        return received


def lines_of(datagrams: list[bytes]) -> list[str]:
    return [line.decode() for d in datagrams for line in d.split(b"\n")]


@pytest.fixture
def listener() -> Iterator[Listener]:
    listener = Listener()
    configure_metrics(
        Settings(statsd_host="127.0.0.1", statsd_port=listener.port, statsd_namespace="ns")
    )
    try:
        yield listener
    finally:
        configure_metrics(Settings())
        listener.sock.close()


def test_lines_are_unchanged_and_batched(listener: Listener) -> None:
    count = 300
    for i in range(count):
        metrics.incr("download.hit", value=i)
        metrics.timing("download.time", value=1.5)
        metrics.histogram("crash.size", value=2048)
        metrics.gauge("queue", value=-3 if i == 0 else i)
    flush_metrics()
    datagrams = listener.datagrams(count * 4 + 1)
    expected = []
    for i in range(count):
        expected += [
            f"ns.symbolon.download.hit:{i}|c",
            "ns.symbolon.download.time:1.500000|ms",
            "ns.symbolon.crash.size:2048.000000|ms",
        ]
        # statsd sets a negative gauge as 0 then the value.
        expected += (
            ["ns.symbolon.queue:0|g", "ns.symbolon.queue:-3|g"]
            if i == 0
            else [f"ns.symbolon.queue:{i}|g"]
        )
    assert lines_of(datagrams) == expected
    assert all(len(d) <= MAX_DATAGRAM for d in datagrams)
    # Datagrams filled to within a line (~40 bytes) of the limit; the timer may cut one short.
    assert len(datagrams) <= sum(len(d) + 1 for d in datagrams) // (MAX_DATAGRAM - 50) + 2


def test_idle_lines_are_sent_within_the_interval(listener: Listener) -> None:
    started = time.monotonic()
    for _ in range(3):
        metrics.incr("idle")
    datagrams = listener.datagrams(3)
    assert datagrams == [b"ns.symbolon.idle:1|c\n" * 2 + b"ns.symbolon.idle:1|c"]
    # One interval, and a generous allowance for a busy machine.
    assert time.monotonic() - started < FLUSH_SECONDS + 5


def test_no_line_is_lost_between_threads(listener: Listener) -> None:
    threads, each = 8, 500

    def emit(n: int) -> None:
        for i in range(each):
            metrics.incr(f"t{n}", value=i)

    workers = [threading.Thread(target=emit, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    datagrams = listener.datagrams(threads * each)
    received = lines_of(datagrams)
    assert sorted(received) == sorted(
        f"ns.symbolon.t{n}:{i}|c" for n in range(threads) for i in range(each)
    )
    for n in range(threads):  # each thread's lines in its order
        mine = [line for line in received if line.startswith(f"ns.symbolon.t{n}:")]
        assert mine == [f"ns.symbolon.t{n}:{i}|c" for i in range(each)]
    assert len(datagrams) < threads * each / 10
    assert all(len(d) <= MAX_DATAGRAM for d in datagrams)


def test_a_forked_process_sends_its_own(listener: Listener) -> None:
    metrics.incr("before")  # buffered in the parent at the fork: the child must not send it
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            for _ in range(3):
                metrics.incr("child")
            # The flushing thread of this process sends them, with no exit to help.
            time.sleep(60)
        finally:
            os._exit(code)
    try:
        datagrams = listener.datagrams(4)
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    assert sorted(datagrams) == [
        b"ns.symbolon.before:1|c",
        b"ns.symbolon.child:1|c\n" * 2 + b"ns.symbolon.child:1|c",
    ]


def test_a_child_forked_while_the_flusher_waited_still_flushes(listener: Listener) -> None:
    metrics.incr("before")
    metrics_module.flush_metrics()
    assert listener.datagrams(1) == [b"ns.symbolon.before:1|c"]
    (client,) = list(metrics_module._clients)
    # The parent's flusher inside Event.wait() at the fork: its lock is held in the child.
    with client._closed._cond:  # type: ignore[attr-defined]
        pid = os.fork()
        if pid == 0:
            try:
                metrics.incr("child")
                time.sleep(60)  # only the child's flusher can send it
            finally:
                os._exit(1)
    try:
        datagrams = listener.datagrams(1)
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
    assert datagrams == [b"ns.symbolon.child:1|c"]


def test_the_first_lines_after_statsd_comes_back_are_sent() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    configure_metrics(Settings(statsd_host="127.0.0.1", statsd_port=port))
    listener = Listener.__new__(Listener)
    try:
        metrics.incr("while.away")
        flush_metrics()  # refused: the connected socket holds the error for the next send
        listener.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        listener.sock.bind(("127.0.0.1", port))
        listener.port = port
        metrics.incr("back")
        flush_metrics()
        assert listener.datagrams(1, timeout=10) == [b"symbolon.back:1|c"]
    finally:
        configure_metrics(Settings())
        if hasattr(listener, "sock"):
            listener.sock.close()


def test_what_is_buffered_is_sent_at_exit() -> None:
    listener = Listener()
    script = f"""
import time
from symbolon.conf import Settings
from symbolon.metrics import configure_metrics, metrics
configure_metrics(Settings(statsd_host="127.0.0.1", statsd_port={listener.port}))
time.sleep(0.1)
for i in range(5):
    metrics.incr("exit", value=i)
"""
    try:
        subprocess.run([sys.executable, "-c", script], cwd=repo_root(), check=True, timeout=60)
        datagrams = listener.datagrams(5)
    finally:
        listener.sock.close()
    assert datagrams == [b"\n".join(b"symbolon.exit:%d|c" % i for i in range(5))]


def test_no_listener_does_not_raise() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens: the kernel answers ECONNREFUSED on the connected socket
    configure_metrics(Settings(statsd_host="127.0.0.1", statsd_port=port))
    try:
        for _ in range(2000):
            metrics.incr("nobody.listens")
            metrics.timing("nobody.listens", value=1.0)
        flush_metrics()
        flush_metrics()
    finally:
        configure_metrics(Settings())


def test_web_processes_send_what_they_hold_when_they_stop(live_settings: Settings) -> None:
    """serve's web processes end with os._exit, which skips atexit: they send before it."""
    listener = Listener()
    port = free_port()
    env = env_for(
        live_settings,
        PORT=str(port),
        WEB_PROCESSES="2",
        WORKER_THREADS="0",
        STATSD_HOST="127.0.0.1",
        STATSD_PORT=str(listener.port),
    )
    # Flushed by the hour: what arrives was sent as the processes stopped.
    script = "import sys, symbolon.metrics as m; m.FLUSH_SECONDS = 3600; sys.argv[1:] = ['serve'];"
    script += " from symbolon.admin_cli.main import main; main()"
    proc = subprocess.Popen(
        [sys.executable, "-c", script],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert heartbeat(port, proc)["code"] == 200
        for _ in range(3):
            with contextlib.suppress(urllib.error.HTTPError):
                urllib.request.urlopen(f"http://127.0.0.1:{port}/{MISSING}", timeout=30)
    finally:
        output = stop(proc)
    try:
        received = lines_of(listener.datagrams(3, timeout=10))
    finally:
        listener.sock.close()
    assert len([line for line in received if "download_symbol:" in line]) == 3, (
        received,
        output,
    )
