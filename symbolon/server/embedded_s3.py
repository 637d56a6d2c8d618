"""The embedded S3 server: moto on 127.0.0.1, with its objects persisted to a directory.

moto keeps objects in memory only. So that a second ``make run`` finds its symbols again, this
process mirrors every bucket and object to ``<dir>/objects`` every few seconds and once more on
SIGTERM, and loads the mirror back when it starts. On SIGTERM it first refuses new writes (503)
and waits for those in flight, so every write it acknowledged is in that last snapshot. Run as
``python -m symbolon.server.embedded_s3 DIR``; ``EmbeddedS3`` in ``embedded.py`` starts and stops
it.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

SYNC_INTERVAL_SECONDS = 5.0
RESTORE_THREADS = 8
# How long stopping waits for writes in flight (a large upload still arriving) before the last
# snapshot; one that ends later is answered 503, since the snapshot may not hold it.
DRAIN_SECONDS = 20.0
WRITE_METHODS = frozenset({"PUT", "POST", "DELETE", "PATCH"})
STOPPING_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>ServiceUnavailable</Code>'
    b"<Message>The embedded S3 server is stopping and takes no more writes; retry once it has "
    b"started again.</Message></Error>"
)

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


class WriteGate:
    """WSGI middleware that can stop writes: ``close()`` refuses new ones with 503, then waits
    for those in flight, so a snapshot taken after it holds every write that was acknowledged.

    A write still running when the wait gives up is answered 503 too, whatever moto did with it:
    the client must not count on an object the snapshot may lack. Reads are always served.
    """

    def __init__(self, app: WSGIApp):
        self.app = app
        self._changed = threading.Condition()
        self._closed = False
        self._sealed = False  # the snapshot may have begun: no write may be acknowledged now
        self._in_flight = 0

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if str(environ.get("REQUEST_METHOD", "GET")).upper() not in WRITE_METHODS:
            return self.app(environ, start_response)
        with self._changed:
            if self._closed:
                return self._refuse(start_response)
            self._in_flight += 1
        answer: list[Any] = []
        written: list[bytes] = []

        def hold(status: str, headers: list[Any], exc_info: Any = None) -> Callable[[bytes], None]:
            answer[:] = [status, headers]
            return written.append

        try:
            # moto answers from memory: once its body is read, the write has been applied.
            result = self.app(environ, hold)
            try:
                body = written + list(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        finally:
            with self._changed:
                self._in_flight -= 1
                late = self._sealed
                self._changed.notify_all()
        if late:
            return self._refuse(start_response)
        start_response(*answer)
        return body

    @staticmethod
    def _refuse(start_response: StartResponse) -> list[bytes]:
        start_response(
            "503 Service Unavailable",
            [
                ("Content-Type", "application/xml"),
                ("Content-Length", str(len(STOPPING_BODY))),
                ("Retry-After", "10"),
            ],
        )
        return [STOPPING_BODY]

    def close(self, timeout: float = DRAIN_SECONDS) -> None:
        """Refuse writes from now on; return once none is in flight (or after ``timeout``)."""
        with self._changed:
            self._closed = True
            self._changed.wait_for(lambda: self._in_flight == 0, timeout)
            self._sealed = True


class S3Server:
    """moto's S3 API on 127.0.0.1 behind a ``WriteGate``, served by threads."""

    def __init__(self, port: int = 0):
        from moto.moto_server.werkzeug_app import (
            DomainDispatcherApplication,
            MotoRequestHandler,
            create_backend_app,
        )
        from werkzeug.serving import make_server

        self.gate = WriteGate(DomainDispatcherApplication(create_backend_app))
        self._server = make_server(
            "127.0.0.1", port, self.gate, threaded=True, request_handler=MotoRequestHandler
        )
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join()
        self._server.server_close()


def client_for(port: int) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name="us-east-1",
        aws_access_key_id="symbolon",
        aws_secret_access_key="symbolon-embedded-secret",
    )


class Mirror:
    """Copies the server's content to disk and back, by the S3 API (stable across moto versions)."""

    def __init__(self, directory: Path, client: Any):
        self.directory = directory
        self.blobs = directory / "blobs"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.manifest_path = directory / "manifest.json"
        self.client = client
        self.manifest: dict[str, dict[str, dict[str, Any]]] = {}
        if self.manifest_path.exists():
            self.manifest = json.loads(self.manifest_path.read_text())

    def _blob(self, bucket: str, key: str) -> Path:
        return self.blobs / hashlib.sha256(f"{bucket}\0{key}".encode()).hexdigest()

    def restore(self, progress: Callable[[int, int], None] | None = None) -> None:
        """Load the mirror into the server; ``progress(done, total)`` about once a second."""
        for bucket in self.manifest:
            self.client.create_bucket(Bucket=bucket)
        items = [
            (b, key, meta) for b, objects in self.manifest.items() for key, meta in objects.items()
        ]
        told = time.monotonic()
        # Several at a time: one by one, tens of thousands of objects take minutes.
        with ThreadPoolExecutor(RESTORE_THREADS) as pool:
            for done, _ in enumerate(pool.map(lambda item: self._put(*item), items), 1):
                if progress is not None and time.monotonic() - told >= 1.0:
                    progress(done, len(items))
                    told = time.monotonic()

    def _put(self, bucket: str, key: str, meta: dict[str, Any]) -> None:
        extra = {k: meta[k] for k in ("ContentType", "ContentEncoding") if meta.get(k)}
        with open(self._blob(bucket, key), "rb") as body:
            put = self.client.put_object(
                Bucket=bucket, Key=key, Body=body, Metadata=meta["Metadata"], **extra
            )
        # A multipart object comes back as a single part, with another ETag.
        meta["ETag"] = put["ETag"]

    def sync(self) -> None:
        current: dict[str, dict[str, dict[str, Any]]] = {}
        for bucket in self.client.list_buckets().get("Buckets", []):
            name = bucket["Name"]
            known = self.manifest.get(name, {})
            objects: dict[str, dict[str, Any]] = {}
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=name):
                for item in page.get("Contents", []):
                    key = item["Key"]
                    if key in known and known[key]["ETag"] == item["ETag"]:
                        objects[key] = known[key]
                    else:
                        objects[key] = self._save(name, key)
            current[name] = objects
        for bucket, objects in self.manifest.items():
            for key in objects.keys() - current.get(bucket, {}).keys():
                self._blob(bucket, key).unlink(missing_ok=True)
        if current != self.manifest:
            self.manifest = current
            _write_json(self.manifest_path, current)

    def _save(self, bucket: str, key: str) -> dict[str, Any]:
        response = self.client.get_object(Bucket=bucket, Key=key)
        tmp = self._blob(bucket, key).with_suffix(".tmp")
        with open(tmp, "wb") as out:
            for chunk in response["Body"].iter_chunks(1 << 20):
                out.write(chunk)
        os.replace(tmp, self._blob(bucket, key))
        return {
            "ETag": response["ETag"],
            "ContentType": response.get("ContentType"),
            "ContentEncoding": response.get("ContentEncoding"),
            "Metadata": response.get("Metadata", {}),
        }


def final_snapshot(server: S3Server, mirror: Mirror) -> None:
    """Stop taking writes, then snapshot: everything acknowledged is on disk afterwards."""
    server.gate.close()
    mirror.sync()


def main(directory: Path) -> None:
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    directory.mkdir(parents=True, exist_ok=True)
    state_file = directory / "server.json"
    port = 0
    if state_file.exists():
        remembered = json.loads(state_file.read_text()).get("port", 0)
        # Keep the same port across restarts, so SYMBOL_URLS (and cache keys) stay the same.
        if remembered and _port_is_free(remembered):
            port = remembered
    server = S3Server(port)
    server.start()
    mirror = Mirror(directory / "objects", client_for(server.port))

    def restoring(done: int, total: int) -> None:
        # EmbeddedS3.start waits as long as this keeps moving.
        state = {"pid": os.getpid(), "port": server.port, "ready": False, "restored": done}
        _write_json(state_file, {**state, "total": total})

    restoring(0, sum(len(objects) for objects in mirror.manifest.values()))
    mirror.restore(restoring)
    _write_json(state_file, {"pid": os.getpid(), "port": server.port, "ready": True})

    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    while not stopping.wait(SYNC_INTERVAL_SECONDS):
        try:
            mirror.sync()
        except Exception as exc:  # keep serving; the next round tries again
            print(f"embedded S3: snapshot failed: {exc}", file=sys.stderr)
    _write_json(state_file, {"pid": os.getpid(), "port": server.port, "ready": False})
    final_snapshot(server, mirror)
    server.stop()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
