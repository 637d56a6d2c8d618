"""``serve`` believes the proxy in front of it about the client's address and the scheme, by the
rules of Tornado's ``xheaders`` option (server/proxy.py), without that option's per-request
cost: every answer here is compared with a Tornado server that has the option on."""

from __future__ import annotations

import json

import pytest
import tornado.httpserver
import tornado.web
from tornado.iostream import IOStream
from tornado.tcpclient import TCPClient
from tornado.testing import bind_unused_port

from symbolon.server.app import make_app, make_server


class Echo(tornado.web.RequestHandler):
    def get(self) -> None:
        self.finish({"remote_ip": self.request.remote_ip, "protocol": self.request.protocol})


CASES = [
    [],
    ["X-Forwarded-For: 203.0.113.7"],
    ["X-Forwarded-For: 198.51.100.1, 203.0.113.7"],
    ["X-Forwarded-For: 203.0.113.7, unknown"],
    ["X-Forwarded-For: 203.0.113.7:8080"],
    ["X-Forwarded-For: "],
    ["X-Forwarded-For: 2001:db8::1"],
    ["X-Forwarded-For: 198.51.100.1", "X-Real-Ip: 192.0.2.9"],
    ["X-Forwarded-For: 198.51.100.1", "X-Real-Ip: garbage"],
    ["X-Real-Ip: 192.0.2.9"],
    ['X-Real-Ip: ::1%" 200 GET admin (10.0.0.1'],  # a scope of any text, into the logs
    ["X-Forwarded-For: fe80::1%" + "x" * 5000],
    ["X-Forwarded-For: ::ffff:255.255.255.255"],  # the longest address there is
    ["X-Forwarded-Proto: https"],
    ["X-Forwarded-Proto: http, https"],
    ["X-Forwarded-Proto: https, ftp"],
    ["X-Forwarded-Proto: HTTPS"],
    ["X-Scheme: https", "X-Forwarded-Proto: http"],
    ["X-Scheme: ", "X-Forwarded-Proto: https"],
    ["X-Forwarded-For: 203.0.113.7", "X-Forwarded-Proto: https"],
    # Spelled as clients do: the names are found whatever their case.
    ["x-real-ip: 192.0.2.9", "x-forwarded-proto: https"],
    ["X-REAL-IP: 192.0.2.9", "X-SCHEME: https"],
    ["X-Forwarded-FOR: 198.51.100.1"],
]


async def ask(stream: IOStream, *headers: str) -> dict[str, str]:
    lines = ["GET /__echo__ HTTP/1.1", "Host: localhost", *headers]
    await stream.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = (await stream.read_until(b"\r\n\r\n")).decode("latin-1")
    assert head.startswith("HTTP/1.1 200"), head
    length = next(
        int(line.split(":", 1)[1])
        for line in head.split("\r\n")
        if line.lower().startswith("content-length:")
    )
    return json.loads(await stream.read_bytes(length))


@pytest.fixture
def ports(runtime, io_loop):
    """serve's server and, for comparison, a plain Tornado one with ``xheaders`` on."""
    ours = make_server(make_app(runtime, [(r"/__echo__", Echo)]))
    tornados = tornado.httpserver.HTTPServer(
        tornado.web.Application([(r"/__echo__", Echo)]), xheaders=True
    )
    found = []
    for server in (ours, tornados):
        sock, port = bind_unused_port()
        server.add_sockets([sock])
        found.append(port)
    yield found
    for server in (ours, tornados):
        server.stop()
        io_loop.run_sync(server.close_all_connections)


@pytest.mark.gen_test
async def test_the_proxy_is_believed_as_tornado_believes_it(ports):
    ours, tornados = ports
    seen = []
    for headers in CASES:
        answers = []
        for port in (ours, tornados):
            stream = await TCPClient().connect("127.0.0.1", port)
            try:
                answers.append(await ask(stream, *headers))
            finally:
                stream.close()
        assert answers[0] == answers[1], headers
        seen.append(answers[0])
    # The cases do reach both outcomes of each header.
    assert {"203.0.113.7", "192.0.2.9", "2001:db8::1", "127.0.0.1"} <= {
        a["remote_ip"] for a in seen
    }
    assert {"http", "https"} == {a["protocol"] for a in seen}


@pytest.mark.gen_test
async def test_a_keep_alive_connection_forgets_the_last_requests_proxy_headers(ports):
    stream = await TCPClient().connect("127.0.0.1", ports[0])
    try:
        first = await ask(stream, "X-Forwarded-For: 203.0.113.7", "X-Forwarded-Proto: https")
        second = await ask(stream)
    finally:
        stream.close()
    assert first == {"remote_ip": "203.0.113.7", "protocol": "https"}
    assert second == {"remote_ip": "127.0.0.1", "protocol": "http"}


@pytest.mark.gen_test
async def test_only_the_server_serve_runs_believes_the_proxy(runtime, io_loop):
    server = tornado.httpserver.HTTPServer(make_app(runtime, [(r"/__echo__", Echo)]))
    sock, port = bind_unused_port()
    server.add_sockets([sock])
    stream = await TCPClient().connect("127.0.0.1", port)
    try:
        answer = await ask(stream, "X-Forwarded-For: 203.0.113.7", "X-Forwarded-Proto: https")
    finally:
        stream.close()
        server.stop()
    assert answer == {"remote_ip": "127.0.0.1", "protocol": "http"}
