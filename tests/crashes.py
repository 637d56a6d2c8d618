"""Helpers for crash collector tests: report bodies as real clients encode them, raw requests."""

from __future__ import annotations

import asyncio
import gzip
import json
import re
import uuid
from collections.abc import Iterable
from typing import Any

import dramatiq
import redis

from symbolon.queues import NAMESPACE
from tests.conftest import s3_client

BOUNDARY = "XyZzY-test-boundary"


def part(
    name: str | None,
    value: bytes | str,
    content_type: str | None = None,
    filename: str | None = None,
    disposition: str = "form-data",
    extra_headers: Iterable[str] = (),
) -> bytes:
    """One multipart part, headers exactly as given (no defaults added)."""
    params = f'; name="{name}"' if name is not None else ""
    if filename is not None:
        params += f'; filename="{filename}"'
    lines = [f"Content-Disposition: {disposition}{params}"]
    if content_type is not None:
        lines.append(f"Content-Type: {content_type}")
    lines += list(extra_headers)
    data = value.encode() if isinstance(value, str) else value
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


def body_of(parts: Iterable[bytes], boundary: str = BOUNDARY, closing: bool = True) -> bytes:
    delimiter = f"--{boundary}".encode()
    out = b"".join(delimiter + b"\r\n" + p + b"\r\n" for p in parts)
    if closing:
        out += delimiter + b"--\r\n"
    return out


def report(
    annotations: dict[str, str] | None = None,
    dumps: dict[str, bytes] | None = None,
    extra: dict[str, Any] | None = None,
) -> bytes:
    """A report as a Breakpad client encodes it: text fields, then octet-stream dumps."""
    parts = []
    if extra is not None:
        parts.append(part("extra", json.dumps(extra), "application/json", "extra.json"))
    for key, value in (annotations or {}).items():
        parts.append(part(key, value))
    for name, data in (dumps or {}).items():
        parts.append(part(name, data, "application/octet-stream", f"{name}.dmp"))
    return body_of(parts)


def headers_for(boundary: str = BOUNDARY, **extra: str) -> dict[str, str]:
    return {"Content-Type": f"multipart/form-data; boundary={boundary}", **extra}


def gzipped(data: bytes) -> bytes:
    return gzip.compress(data)


async def raw_request(port: int, head: bytes, body_parts: Iterable[bytes] = (), pause=0.0):
    """Send bytes as they are (headers too) and read the answer: (status, headers, body).

    For what an HTTP client library will not send: no Content-Length, lying lengths, idle
    bodies. Returns status 0 when the server closed without answering."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        for chunk in body_parts:
            writer.write(chunk)
            try:
                await writer.drain()
            except ConnectionError:
                break
            if pause:
                await asyncio.sleep(pause)
        try:
            response = await asyncio.wait_for(reader.read(), 30)
        except ConnectionError:
            response = b""
    finally:
        writer.close()
    if not response:
        return 0, {}, b""
    head_blob, _, content = response.partition(b"\r\n\r\n")
    lines = head_blob.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return status, headers, content


def unique_queue() -> str:
    return f"crashes-{uuid.uuid4().hex[:8]}"


CRASH_ID = re.compile(r"^CrashID=bp-([a-f0-9-]{36})\n$")


async def post(http_client, base_url, body, headers=None, path="/submit"):
    return await http_client.fetch(
        base_url + path,
        method="POST",
        body=body,
        headers=headers if headers is not None else headers_for(),
        raise_error=False,
    )


async def send_raw(base_url, body: bytes, headers: dict[str, str], chunks=None, pause=0.0):
    """The request exactly as given: no header is added (no User-Agent, no length)."""
    port = int(base_url.rsplit(":", 1)[1])
    head = "POST /submit HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    return await raw_request(port, head.encode(), chunks if chunks is not None else [body], pause)


def chunked(data: bytes, size: int = 1000) -> list[bytes]:
    """``data`` in Transfer-Encoding: chunked framing."""
    pieces = [data[i : i + size] for i in range(0, len(data), size)]
    return [b"%x\r\n%s\r\n" % (len(p), p) for p in pieces] + [b"0\r\n\r\n"]


def crash_id_of(response) -> str:
    match = CRASH_ID.match(response.body.decode())
    assert match, (response.code, response.body)
    return match.group(1)


def published(settings) -> list[str]:
    client = redis.Redis.from_url(settings.redis_url)
    try:
        raw = client.hvals(f"{NAMESPACE}:{settings.crashpublish_queue_name}.msgs")
    finally:
        client.close()
    messages = [dramatiq.Message.decode(m) for m in raw]
    assert all(m.actor_name == settings.crashpublish_actor_name for m in messages)
    return sorted(m.args[0] for m in messages)


def crash_keys(settings, crash_id: str) -> list[str]:
    client = s3_client(settings.crash_endpoint_url)
    listing = client.list_objects_v2(Bucket=settings.crash_bucket_name, Prefix="v1/")
    return sorted(o["Key"] for o in listing.get("Contents", ()) if o["Key"].endswith(crash_id))


async def raw_crash(runtime, crash_id: str) -> dict:
    data = await runtime.collector.storage.load_raw_crash(crash_id)
    assert data is not None, f"no raw crash stored for {crash_id}"
    return json.loads(data)


SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)


class EarlyAnsweringS3:
    """An S3 endpoint that sheds load as S3 does: every request is answered ``503 SlowDown`` as
    soon as its headers are in, before its body is read."""

    def __init__(self) -> None:
        self.requests = 0
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._answer, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            self.requests += 1
            writer.write(
                b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n%b" % (len(SLOW_DOWN), SLOW_DOWN)
            )
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
