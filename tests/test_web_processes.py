"""``symbolon serve`` with several web processes: each on a listening socket of its own, kept
for its replacement, and keep-alive connections spread evenly over them."""

from __future__ import annotations

import asyncio
import http.client
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import psutil
import pytest
import tornado.netutil
import tornado.web

from symbolon.server import app as server_app
from symbolon.server import balance
from symbolon.server.app import make_app, make_server
from symbolon.server.balance import NOT_SERVING, BalancingHTTPServer, ConnectionShares
from tests.cli import env_for
from tests.conftest import free_port, run_isolated, wait_until
from tests.serving import REQUEST_WITHIN, START_WITHIN, heartbeat, start, stop

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


def children_of(pid: int) -> list[int]:
    """The processes ``pid`` forked: serve's web processes (its services run elsewhere here)."""
    try:
        return sorted(child.pid for child in psutil.Process(pid).children())
    except psutil.NoSuchProcess:
        return []


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


def test_a_process_gives_up_one_connection_at_a_time_until_the_client_comes_back():
    shares = ConnectionShares(2)
    shares.serve_as(0)
    assert not shares.over_share()  # the other process is not serving
    shares.open[1] = 1
    shares.set_open(2, accepted=True)
    assert not shares.over_share()  # one more than the least-loaded is a fair share
    shares.set_open(3, accepted=True)
    assert shares.over_share()
    shares.gave_up()
    assert not shares.over_share()  # the first client has not come back yet
    shares.accepted[1] += 1  # it did, elsewhere
    assert shares.over_share()
    shares.stopped(0)
    shares.set_open(5)  # a stopping process's closes change nothing
    assert shares.open[0] == NOT_SERVING and not shares.over_share()


class Answer(tornado.web.RequestHandler):
    def get(self) -> None:
        self.write("ok")


async def answers(reader: asyncio.StreamReader, count: int) -> list[bytes]:
    """The header blocks of ``count`` answers of two bytes each."""
    found = []
    for _ in range(count):
        found.append(await reader.readuntil(b"\r\n\r\n"))
        assert await reader.readexactly(2) == b"ok"
    return found


async def over_share_server_answers() -> tuple[bytes, bytes, list[bytes]]:
    """A process holding three connections while the other holds none: what a client asking
    one request is answered, what it reads after that answer, and what a client that
    pipelines two requests is answered then."""
    shares = ConnectionShares(2)
    shares.serve_as(0)
    shares.open[1] = 0
    server = BalancingHTTPServer(tornado.web.Application([("/", Answer)]), shares=shares)
    [sock] = tornado.netutil.bind_sockets(0, "127.0.0.1")
    server.add_socket(sock)
    port = sock.getsockname()[1]
    streams = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
    try:
        assert await wait_until(lambda: shares.open[0] == 3, 30)
        request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
        (single, single_writer), (reader, writer) = streams[0], streams[1]
        single_writer.write(request)
        [alone] = await asyncio.wait_for(answers(single, 1), 30)
        after = await asyncio.wait_for(single.read(), 30)
        assert await wait_until(lambda: shares.open[0] == 2, 30)
        shares.accepted[1] += 1  # that client came back, to the other process
        writer.write(request * 2)
        pipelined = await asyncio.wait_for(answers(reader, 2), 30)
        return alone, after, pipelined
    finally:
        for _, stream_writer in streams:
            stream_writer.close()
        server.stop()
        await server.close_all_connections()


def test_a_process_over_its_share_closes_after_a_complete_answer_and_never_drops_pipelined():
    alone, after, pipelined = run_isolated(over_share_server_answers())
    assert b"Connection: close" in alone
    assert after == b""  # closed once the answer was sent
    # Still over its share, but closing after the first answer would drop the second request,
    # which the client has sent already; the second answer may close.
    assert b"Connection: close" not in pipelined[0]


def test_connections_marked_to_close_count_as_gone_to_the_least_loaded():
    shares = ConnectionShares(2)
    shares.serve_as(0)
    shares.open[1] = 3
    shares.set_open(7, accepted=True)
    assert shares.over_share()
    shares.set_closing(1)  # its client will come back: 6 here against 4 is still over
    shares.accepted[1] += 1
    assert shares.over_share()
    shares.set_closing(2)  # 5 against 5
    shares.accepted[1] += 1
    assert not shares.over_share()
    shares.stopped(0)
    shares.serve_as(0)  # a replacement starts with nothing marked
    assert shares.closing[0] == 0


class Held(tornado.web.RequestHandler):
    """Answers once the test lets it, counting the requests waiting."""

    waiting = 0
    release: asyncio.Event

    async def get(self) -> None:
        type(self).waiting += 1
        await type(self).release.wait()
        self.write("ok")


async def slow_answers_closed(held: int, others: int) -> int:
    """A process holding ``held`` connections, the other ``others``: each connection asks one
    request, each arriving after a client came back elsewhere, and all are answered only once
    every one has been read. How many answers say ``Connection: close``."""
    Held.waiting, Held.release = 0, asyncio.Event()
    shares = ConnectionShares(2)
    shares.serve_as(0)
    shares.open[1] = others
    server = BalancingHTTPServer(tornado.web.Application([("/", Held)]), shares=shares)
    [sock] = tornado.netutil.bind_sockets(0, "127.0.0.1")
    server.add_socket(sock)
    port = sock.getsockname()[1]
    streams = [await asyncio.open_connection("127.0.0.1", port) for _ in range(held)]
    try:
        assert await wait_until(lambda: shares.open[0] == held, 30)
        for number, (_, writer) in enumerate(streams, 1):
            shares.accepted[1] += 1  # no waiting for a client to come back
            writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert await wait_until(lambda n=number: Held.waiting == n, 30)
        Held.release.set()
        closed = 0
        for reader, _ in streams:
            [head] = await asyncio.wait_for(answers(reader, 1), 30)
            closed += b"Connection: close" in head
        assert await wait_until(lambda: shares.closing[0] == 0, 30)
        return closed
    finally:
        for _, stream_writer in streams:
            stream_writer.close()
        server.stop()
        await server.close_all_connections()


def test_answers_slower_than_reconnections_close_only_what_moves_to_the_least_loaded():
    """7 against 3 needs two connections moved (5 and 5), however long the answers take."""
    assert run_isolated(slow_answers_closed(7, 3)) == 2
    assert run_isolated(slow_answers_closed(6, 2)) == 2  # 4 and 4, not 2 and 6


async def http10_answers() -> tuple[list[bytes], int]:
    """A process over its share answering two HTTP/1.0 keep-alive requests on one connection:
    the answers' headers, and the connections it holds then."""
    shares = ConnectionShares(2)
    shares.serve_as(0)
    shares.open[1] = 0
    server = BalancingHTTPServer(tornado.web.Application([("/", Answer)]), shares=shares)
    [sock] = tornado.netutil.bind_sockets(0, "127.0.0.1")
    server.add_socket(sock)
    port = sock.getsockname()[1]
    streams = [await asyncio.open_connection("127.0.0.1", port) for _ in range(3)]
    try:
        assert await wait_until(lambda: shares.open[0] == 3, 30)
        reader, writer = streams[0]
        heads = []
        for _ in range(2):
            shares.accepted[1] += 1
            writer.write(b"GET / HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
            heads += await asyncio.wait_for(answers(reader, 1), 30)
        return heads, shares.open[0]
    finally:
        for _, stream_writer in streams:
            stream_writer.close()
        server.stop()
        await server.close_all_connections()


def test_http10_keep_alive_connections_are_not_given_up():
    """Tornado tells only HTTP/1.1 clients ``Connection: close``: an HTTP/1.0 keep-alive client
    is told Keep-Alive, so its connection must stay open."""
    heads, held = run_isolated(http10_answers())
    assert all(b"Connection: Keep-Alive" in head for head in heads), heads
    assert held == 3


# serve_processes with three web processes that only wait to be stopped (the checks need no
# services), its forks held until a line arrives on stdin.
FORKING = """
import asyncio, os, sys, types
from symbolon.server import lifecycle

class Runtime:
    async def close(self): pass

async def connect(settings, checks=True):
    return Runtime()

async def serve_forever(settings, sockets=None, worker_threads=None, shares=None, slot=0):
    await asyncio.sleep(3600)

class HeldFork(types.ModuleType):
    def __getattr__(self, name): return getattr(os, name)
    def fork(self):
        pid = os.fork()
        if pid:
            print("forked", pid, flush=True)
            sys.stdin.readline()
        return pid

lifecycle.os = HeldFork("os")
lifecycle.connect = connect
lifecycle.serve_forever = serve_forever
settings = types.SimpleNamespace(
    port=0, host="127.0.0.1", web_processes=3, worker_threads=0, event_loop="asyncio"
)
lifecycle.serve_processes(settings)
"""


def test_a_stop_while_the_web_processes_are_forked_stops_every_one():
    """SIGTERM arriving between one fork and the next: serve still tells the process it forked
    to stop, forks no more, and exits."""
    proc = subprocess.Popen(
        [sys.executable, "-c", FORKING],
        cwd=Path(__file__).resolve().parent.parent,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    forked: list[int] = []
    try:
        assert proc.stdout is not None and proc.stdin is not None
        first = proc.stdout.readline()
        assert first.startswith("forked"), first
        forked.append(int(first.split()[1]))
        proc.send_signal(signal.SIGTERM)
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.wait(START_WITHIN) == 0
        forked += [int(line.split()[1]) for line in proc.stdout if line.startswith("forked")]
        assert len(forked) == 1, forked
        assert run_isolated(wait_until(lambda: not any(map(alive, forked)), START_WITHIN))
    finally:
        for pid in [proc.pid, *forked]:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait()


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.gen_test(timeout=60)
async def test_an_idle_keep_alive_connection_is_closed_and_stops_counting(runtime, monkeypatch):
    """Connections are each process's share of the load: one left idle is closed (after
    IDLE_CONNECTION_SECONDS, shortened here), not held for Tornado's default hour."""
    monkeypatch.setattr(server_app, "IDLE_CONNECTION_SECONDS", 0.5)
    shares = ConnectionShares(2)
    server = make_server(make_app(runtime), shares)
    [sock] = tornado.netutil.bind_sockets(0, "127.0.0.1")
    server.add_socket(sock)
    shares.serve_as(0)
    reader, writer = await asyncio.open_connection("127.0.0.1", sock.getsockname()[1])
    try:
        writer.write(b"GET /__lbheartbeat__ HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        assert head.startswith(b"HTTP/1.1 200"), head
        assert shares.open[0] == 1
        await asyncio.wait_for(reader.read(), 30)  # the body, then the end
        assert await wait_until(lambda: shares.open[0] == 0, 30)
    finally:
        writer.close()
        server.stop()
        await server.close_all_connections()


async def idle_then_active(held: int, others: int) -> tuple[int, int, bytes, int]:
    """A process holding ``held`` connections that never ask, the other ``others``: the load it
    publishes once they are idle, while a new connection's request is in progress (past the
    idle time too), what that request is answered, and the load once all are idle again."""
    Held.waiting, Held.release = 0, asyncio.Event()
    shares = ConnectionShares(2)
    shares.serve_as(0)
    shares.open[1] = others
    server = BalancingHTTPServer(tornado.web.Application([("/", Held)]), shares=shares)
    [sock] = tornado.netutil.bind_sockets(0, "127.0.0.1")
    server.add_socket(sock)
    port = sock.getsockname()[1]
    streams = [await asyncio.open_connection("127.0.0.1", port) for _ in range(held)]
    try:
        assert await wait_until(lambda: shares.accepted[0] == held, 30)
        assert await wait_until(lambda: shares.open[0] == 0, 30)
        idle = shares.open[0]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        streams.append((reader, writer))
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert await wait_until(lambda: Held.waiting == 1, 30)
        began = time.monotonic()
        # Past the idle time, a request still in progress counts.
        assert await wait_until(
            lambda: time.monotonic() - began > 3 * balance.ACTIVE_WITHIN_SECONDS, 30
        )
        busy = shares.open[0]
        Held.release.set()
        [head] = await asyncio.wait_for(answers(reader, 1), 30)
        assert await wait_until(lambda: shares.open[0] == 0, 30)
        return idle, busy, head, shares.open[0]
    finally:
        for _, stream_writer in streams:
            stream_writer.close()
        server.stop()
        await server.close_all_connections()


def test_idle_connections_stop_counting_as_load(monkeypatch):
    """Four connections left idle do not make their process give up an active one."""
    monkeypatch.setattr(balance, "ACTIVE_WITHIN_SECONDS", 0.3)
    monkeypatch.setattr(balance, "AGING_EVERY_SECONDS", 0.05)
    idle, busy, head, after = run_isolated(idle_then_active(4, 2))
    assert (idle, busy, after) == (0, 1, 0)
    assert b"Connection: close" not in head
