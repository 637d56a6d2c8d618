"""``symbolon serve`` with several web processes: each on a listening socket of its own, kept
for its replacement, and keep-alive connections spread evenly over them."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator

import psutil
import pytest

from tests.cli import env_for
from tests.conftest import free_port, run_isolated, wait_until
from tests.serving import REQUEST_WITHIN, START_WITHIN, heartbeat, start, stop
from tests.test_serve import children_of

CONNECTIONS = 4
ROUNDS = 5
BALANCED_WITHIN = 60


@pytest.fixture
def two_processes(live_settings) -> Iterator[tuple[subprocess.Popen[str], int, list[int]]]:
    """serve with two web processes: the process, its port and its web processes' pids."""
    port = free_port()
    env = env_for(live_settings, PORT=str(port), WEB_PROCESSES="2", WORKER_THREADS="0")
    proc = start(env)
    try:
        assert heartbeat(port, proc)["code"] == 200
        assert run_isolated(wait_until(lambda: len(children_of(proc.pid)) == 2, START_WITHIN))
        yield proc, port, children_of(proc.pid)
    finally:
        output = stop(proc)
        assert "Traceback" not in output, output


def holders(pids: list[int], port: int) -> dict[int, int]:
    """Which of ``pids`` holds each established connection to ``port``, by the client's port."""
    found = {}
    for pid in pids:
        for conn in psutil.Process(pid).net_connections(kind="tcp"):
            if conn.status == psutil.CONN_ESTABLISHED and conn.laddr.port == port and conn.raddr:
                found[conn.raddr.port] = pid
    return found


def listening(pid: int, port: int) -> set[str]:
    """The listening sockets of ``pid`` on ``port``, by their kernel identity."""
    return {
        os.readlink(f"/proc/{pid}/fd/{conn.fd}")
        for conn in psutil.Process(pid).net_connections(kind="tcp")
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port
    }


def ask(conn: http.client.HTTPConnection) -> bool:
    """One keep-alive request; whether the server closed the connection after answering."""
    conn.request("GET", "/__lbheartbeat__")
    response = conn.getresponse()
    response.read()
    assert response.status == 200
    return response.getheader("Connection", "").lower() == "close"


def spread(clients: list[http.client.HTTPConnection], pids: list[int], port: int) -> Counter:
    """How many of the clients' connections each web process holds (0 when a client has none
    open right now)."""
    if any(c.sock is None for c in clients):
        return Counter()
    held = holders(pids, port)
    mine = [held.get(c.sock.getsockname()[1]) for c in clients]
    return Counter(mine) if None not in mine else Counter()


def test_keep_alive_connections_end_up_spread_evenly_over_the_web_processes(two_processes):
    """Four keep-alive connections, asked in turn, end up two on each web process, round after
    round of fresh connections (the kernel's placement alone is even in 6 of 16 cases)."""
    _, port, pids = two_processes
    even = Counter({pid: CONNECTIONS // 2 for pid in pids})
    for _ in range(ROUNDS):
        clients = [
            http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_WITHIN)
            for _ in range(CONNECTIONS)
        ]
        try:
            deadline = time.monotonic() + BALANCED_WITHIN
            while (now := spread(clients, pids, port)) != even:
                assert time.monotonic() < deadline, f"still {now} after {BALANCED_WITHIN}s"
                for client in clients:
                    ask(client)
            # Even is stable: no connection is given up any more.
            for _ in range(10):
                assert not any(ask(client) for client in clients)
            assert spread(clients, pids, port) == even
        finally:
            for client in clients:
                client.close()


def test_a_replaced_web_process_accepts_on_its_slots_socket(two_processes):
    """Each web process listens on a socket of its own; one that dies is replaced on the same
    socket, and connections that queued there meanwhile are answered by the replacement."""
    proc, port, pids = two_processes
    sockets = {pid: listening(pid, port) for pid in pids}
    assert all(len(s) == 1 for s in sockets.values()), sockets
    assert sockets[pids[0]] != sockets[pids[1]], sockets

    os.kill(pids[0], signal.SIGKILL)
    assert run_isolated(wait_until(lambda: not psutil.pid_exists(pids[0]), START_WITHIN))
    # Sent before a replacement exists: about half queue on the dead process's socket.
    clients = [
        http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_WITHIN) for _ in range(16)
    ]
    try:
        for client in clients:
            client.request("GET", "/__lbheartbeat__")
        for client in clients:
            response = client.getresponse()
            response.read()
            assert response.status == 200
        now = children_of(proc.pid)
        assert len(now) == 2 and pids[0] not in now and pids[1] in now, now
        replacement = next(pid for pid in now if pid != pids[1])
        assert listening(replacement, port) == sockets[pids[0]]
        held = holders(now, port)
        served = Counter(held.get(c.sock.getsockname()[1]) for c in clients if c.sock)
        assert served[replacement] > 0, served
    finally:
        for client in clients:
            client.close()
