"""What the symbolication tests share: real sym files, a scriptable upstream symbol server and
own storage (their fixtures are in conftest.py)."""

from __future__ import annotations

import asyncio
import gzip
import re
import uuid
from typing import Any

import tornado.httpserver
import tornado.web
from tornado.testing import bind_unused_port

from symbolon.conf import Settings
from tests.conftest import repo_root, s3_client, s3_endpoint

DATA = repo_root() / "tests" / "data"
MODULE_LINE = re.compile(rb"^(MODULE \S+ \S+ )([0-9A-Fa-f]+)( .*)$", re.M)


def sym(name: str) -> bytes:
    return (DATA / name).read_bytes()


def new_id() -> str:
    return uuid.uuid4().hex.upper() + "0"


def with_debug_id(data: bytes, debug_id: str) -> bytes:
    """The same sym file under another debug id, so that tests never share a module."""
    return MODULE_LINE.sub(lambda m: m.group(1) + debug_id.encode() + m.group(3), data, count=1)


class Upstream:
    """A real HTTP symbol server on 127.0.0.1 whose answers a test scripts, path by path.

    ``files[path]`` is served with 200; ``script[path]`` is a list of answers used one per
    request before falling back to ``files``: a status code, ``("sleep", seconds)``,
    ``("gzip", body)`` (a gzip body with Content-Encoding), ``("raw-gzip", body)`` (gzip bytes
    without the header), ``("bad-gzip", body)`` (the header on a body that is not gzip),
    ``("cut-gzip", body)`` (a gzip body that stops short), ``("trickle", seconds)`` (the file,
    sent in ten pieces over that many seconds).
    """

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.script: dict[str, list[Any]] = {}
        self.hits: list[str] = []
        self.headers: list[dict[str, str]] = []
        upstream = self

        class Handler(tornado.web.RequestHandler):
            async def get(self, _: str) -> None:
                path = self.request.path
                upstream.hits.append(path)
                upstream.headers.append(dict(self.request.headers))
                steps = upstream.script.get(path)
                step = steps.pop(0) if steps else None
                if isinstance(step, int):
                    self.set_status(step)
                    return self.finish(f"answer {step}")
                if isinstance(step, tuple):
                    kind, value = step
                    if kind == "sleep":
                        await asyncio.sleep(value)
                        step = None
                    elif kind == "trickle":
                        data = upstream.files[path]
                        piece = len(data) // 10 + 1
                        for start in range(0, len(data), piece):
                            self.write(data[start : start + piece])
                            await self.flush()
                            await asyncio.sleep(value / 10)
                        return self.finish()
                    elif kind in ("gzip", "bad-gzip", "cut-gzip"):
                        self.set_header("Content-Encoding", "gzip")
                        body = {
                            "gzip": gzip.compress(value),
                            "bad-gzip": value,
                            "cut-gzip": gzip.compress(value)[:-12],
                        }[kind]
                        return self.finish(body)
                    elif kind == "raw-gzip":
                        return self.finish(gzip.compress(value))
                body = upstream.files.get(path)
                if body is None:
                    self.set_status(404)
                    return self.finish("Not Found")
                self.finish(body)

        self.app = tornado.web.Application([(r"/(.*)", Handler)])

    def start(self) -> None:
        sock, port = bind_unused_port()
        self.server = tornado.httpserver.HTTPServer(self.app)
        self.server.add_sockets([sock])
        self.url = f"http://127.0.0.1:{port}/symbols/"

    def stop(self) -> None:
        self.server.stop()

    def put(self, filename: str, debug_id: str, data: bytes) -> str:
        """Serve a sym file at the path the service asks for; returns that path."""
        symbol = filename[:-4] + ".sym" if filename.endswith(".pdb") else filename + ".sym"
        path = f"/symbols/{filename}/{debug_id}/{symbol}"
        self.files[path] = data
        return path


def put_own(settings: Settings, key: str, data: bytes, try_symbols: bool = False) -> None:
    """Store a sym file in this server's own storage, gzip-compressed as uploads store it."""
    bucket = settings.symbol_urls[0].rstrip("/").rsplit("/", 1)[1]
    prefix = f"try/{settings.symbol_file_prefix}" if try_symbols else settings.symbol_file_prefix
    s3_client(s3_endpoint(settings)).put_object(
        Bucket=bucket,
        Key=f"{prefix}/{key}",
        Body=gzip.compress(data),
        ContentEncoding="gzip",
        ContentType="text/plain",
    )
