"""The embedded S3 server: moto on 127.0.0.1, every write it acknowledges already on disk.

moto keeps objects in memory only. So that no acknowledged write is lost, not even when the process
is killed outright, each write is stored under ``<dir>/objects`` before it is answered: once moto
has applied it, the object is read back from moto in-process and written as a blob and a small
metadata file (temporary file, fsync, rename, fsync of the directory), under a lock for its key
held from moto's apply to the last fsync. A write that cannot be stored is answered 500. On start
those files are loaded back into moto (an old ``manifest.json`` mirror is converted first), and
writes are refused (503) until they are. On SIGTERM it refuses new writes, waits for those in
flight and exits. Run as ``python -m symbolon.server.embedded_s3 DIR``; ``EmbeddedS3`` in
``embedded.py`` starts and stops it.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit
from xml.etree import ElementTree
from xml.sax.saxutils import escape

RESTORE_THREADS = 8
# How long stopping waits for writes in flight (a large upload still arriving).
DRAIN_SECONDS = 20.0
WRITE_METHODS = frozenset({"PUT", "POST", "DELETE", "PATCH"})
TEMP_SUFFIX = ".tmp"
META_PREFIX = "x-amz-meta-"
# Read-backs are signed for S3 so that moto routes them there whatever the bucket is called; moto
# does not check signatures.
READ_BACK_AUTHORIZATION = (
    "AWS4-HMAC-SHA256 Credential=symbolon/20240101/us-east-1/s3/aws4_request, "
    "SignedHeaders=host, Signature=0"
)

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]
Answer = tuple[str, list[tuple[str, str]], list[bytes]]


class PersistError(RuntimeError):
    """A write moto applied could not be stored on disk."""


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


def _log(message: str) -> None:
    print(f"embedded S3: {message}", file=sys.stderr, flush=True)


def _error(status: str, code: str, message: str, *extra: tuple[str, str]) -> Answer:
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
        f"<Message>{escape(message)}</Message></Error>"
    ).encode()
    headers = [("Content-Type", "application/xml"), ("Content-Length", str(len(body))), *extra]
    return status, headers, [body]


def _call(app: WSGIApp, environ: dict[str, Any]) -> Answer:
    """Run ``app`` to the end and hold its answer, so that it can be released later."""
    answer: list[Any] = []
    written: list[bytes] = []

    def hold(status: str, headers: list[Any], exc_info: Any = None) -> Callable[[bytes], None]:
        answer[:] = [status, headers]
        return written.append

    result = app(environ, hold)
    try:
        body = written + list(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return answer[0], list(answer[1]), body


def _release(answer: Answer, start_response: StartResponse) -> list[bytes]:
    status, headers, body = answer
    start_response(status, headers)
    return body


# -- on disk -----------------------------------------------------------------------------------


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, chunks: Iterable[bytes], durably: bool = True) -> None:
    """Replace ``path`` whole: a reader (or a restart) finds the old content or the new one."""
    tmp = path.with_name(f"{path.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
    try:
        with open(tmp, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
            if durably:
                out.flush()
                os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durably:
        _fsync_dir(path.parent)


def _remove_file(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    _fsync_dir(path.parent)
    return True


def _make_dir(path: Path) -> None:
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True)
        _fsync_dir(path.parent)


@dataclass
class StoredObject:
    bucket: str
    key: str
    blob: Path
    content_type: str | None = None
    content_encoding: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


@dataclass
class Contents:
    buckets: set[str]
    objects: list[StoredObject]


class ObjectStore:
    """Buckets and objects on disk, one file or two each, so a write touches only its own.

    ``buckets/<sha256(bucket)>.json`` names a bucket (so an empty one is kept);
    ``meta/<sha256(bucket NUL key)>.json`` holds an object's key, headers and blob name, and
    ``blobs/<sha256(bucket NUL key)>.<random>`` its bytes. A new blob gets a new name and is on disk
    before the metadata naming it replaces the old, so a kill at any point leaves the old object
    or the new one, never a mix; what it leaves behind (temporary files, unnamed blobs) is removed
    by ``load``.
    """

    def __init__(self, directory: Path):
        self.directory = directory
        self.bucket_dir = directory / "buckets"
        self.meta_dir = directory / "meta"
        self.blob_dir = directory / "blobs"
        for path in (directory, self.bucket_dir, self.meta_dir, self.blob_dir):
            _make_dir(path)

    def _bucket_file(self, bucket: str) -> Path:
        return self.bucket_dir / f"{_digest(bucket)}.json"

    def _meta_file(self, bucket: str, key: str) -> Path:
        name = _digest(f"{bucket}\0{key}")
        return self.meta_dir / f"{name}.json"

    def _blob_named_by(self, meta: Path) -> str | None:
        try:
            blob = json.loads(meta.read_bytes()).get("blob")
        except (OSError, ValueError, AttributeError):
            return None
        return blob if isinstance(blob, str) else None

    def save_bucket(self, bucket: str) -> None:
        path = self._bucket_file(bucket)
        if not path.exists():  # written whole and durably, or not at all
            _write_file(path, [json.dumps({"bucket": bucket}).encode()])

    def remove_bucket(self, bucket: str) -> None:
        _remove_file(self._bucket_file(bucket))

    def save_object(
        self, bucket: str, key: str, chunks: Iterable[bytes], info: dict[str, Any]
    ) -> None:
        meta = self._meta_file(bucket, key)
        old = self._blob_named_by(meta)
        blob = self.blob_dir / f"{meta.stem}.{secrets.token_hex(8)}"
        _write_file(blob, chunks)
        _write_file(
            meta, [json.dumps({"bucket": bucket, "key": key, "blob": blob.name, **info}).encode()]
        )
        if old is not None and old != blob.name:
            (self.blob_dir / old).unlink(missing_ok=True)

    def remove_object(self, bucket: str, key: str) -> None:
        meta = self._meta_file(bucket, key)
        old = self._blob_named_by(meta)
        if _remove_file(meta) and old is not None:
            (self.blob_dir / old).unlink(missing_ok=True)

    def load(self) -> Contents:
        """What is stored, after converting an old mirror and removing what a kill left."""
        self._convert_manifest()
        for directory in (self.bucket_dir, self.meta_dir, self.blob_dir):
            for path in directory.iterdir():
                if path.name.endswith(TEMP_SUFFIX):
                    path.unlink(missing_ok=True)
        buckets: set[str] = set()
        for path in self.bucket_dir.glob("*.json"):
            try:
                buckets.add(json.loads(path.read_bytes())["bucket"])
            except (OSError, ValueError, KeyError) as exc:
                _log(f"ignoring unreadable {path}: {exc}")
        objects: list[StoredObject] = []
        for path in self.meta_dir.glob("*.json"):
            try:
                meta = json.loads(path.read_bytes())
                stored = StoredObject(
                    meta["bucket"],
                    meta["key"],
                    self.blob_dir / meta["blob"],
                    meta.get("ContentType"),
                    meta.get("ContentEncoding"),
                    meta.get("Metadata") or {},
                )
            except (OSError, ValueError, KeyError, TypeError) as exc:
                _log(f"ignoring unreadable {path}: {exc}")
                continue
            if not stored.blob.exists():
                _log(f"ignoring {stored.bucket}/{stored.key}: its blob {stored.blob} is missing")
                continue
            objects.append(stored)
        named = {stored.blob.name for stored in objects}
        for path in self.blob_dir.iterdir():
            if path.name not in named:
                path.unlink(missing_ok=True)
        return Contents(buckets | {stored.bucket for stored in objects}, objects)

    def _convert_manifest(self) -> None:
        """Turn the single ``manifest.json`` that older versions wrote into files of this kind.

        Their blobs are already at ``blobs/<sha256(bucket NUL key)>``: only the metadata files are
        written, then flushed to disk together before the manifest goes, so a kill during the
        conversion leaves the manifest to convert again.
        """
        manifest = self.directory / "manifest.json"
        if not manifest.exists():
            return
        old: dict[str, dict[str, dict[str, Any]]] = json.loads(manifest.read_bytes())
        for bucket, objects in old.items():
            _write_file(self._bucket_file(bucket), [json.dumps({"bucket": bucket}).encode()], False)
            for key, meta in objects.items():
                path = self._meta_file(bucket, key)
                if not (self.blob_dir / path.stem).exists():
                    _log(f"not converting {bucket}/{key}: its blob is missing")
                    continue
                info = {k: meta.get(k) for k in ("ContentType", "ContentEncoding", "Metadata")}
                entry = {"bucket": bucket, "key": key, "blob": path.stem, **info}
                _write_file(path, [json.dumps(entry).encode()], False)
        os.sync()  # one flush for them all: one fsync each would take minutes for large mirrors
        _remove_file(manifest)
        _log(f"converted {manifest} to one metadata file per object")


# -- the write path ----------------------------------------------------------------------------


class KeyLocks:
    """One lock per name, made when first wanted and dropped when no one wants it any more."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[tuple[str, str], tuple[threading.Lock, list[int]]] = {}

    def wanting(self, name: tuple[str, str]) -> int:
        """How many hold or wait for ``name``'s lock."""
        with self._guard:
            entry = self._locks.get(name)
            return entry[1][0] if entry is not None else 0

    @contextmanager
    def holding(self, names: Iterable[tuple[str, str]]) -> Iterator[None]:
        ordered = sorted(set(names))  # always in one order, so two holders cannot deadlock
        with self._guard:
            entries = [self._locks.setdefault(name, (threading.Lock(), [0])) for name in ordered]
            for _, users in entries:
                users[0] += 1
        taken: list[threading.Lock] = []
        try:
            for lock, _ in entries:
                lock.acquire()
                taken.append(lock)
            yield
        finally:
            for lock in reversed(taken):
                lock.release()
            with self._guard:
                for name, (_, users) in zip(ordered, entries, strict=True):
                    users[0] -= 1
                    if users[0] == 0:
                        del self._locks[name]


def _raw_path(environ: dict[str, Any]) -> str:
    """The request's path still percent-encoded, as moto reads it."""
    raw = str(environ.get("RAW_URI") or environ.get("REQUEST_URI") or "")
    if not raw:
        path = (
            str(environ.get("PATH_INFO", ""))
            .encode("latin-1", "replace")
            .decode("utf-8", "replace")
        )
        return quote(path, safe="/~")
    path = urlsplit(raw).path if "://" in raw.split("?", 1)[0] else raw.split("?", 1)[0]
    return path if path.startswith("/") else f"/{path}"


def _path_style(environ: dict[str, Any]) -> bool:
    """Whether moto reads the bucket from the path (not the host), as ``_target`` does."""
    host = str(environ.get("HTTP_HOST") or environ.get("SERVER_NAME") or "")
    if host.startswith("["):
        return True  # an IPv6 address
    name = host.rsplit(":", 1)[0]
    return (
        not name
        or name.startswith("localhost")
        or "." not in name
        or all(part.isdigit() for part in name.split("."))
    )


def _target(environ: dict[str, Any]) -> tuple[str, str]:
    """The bucket and key a path-style request names (key ``""`` for the bucket itself)."""
    raw = _raw_path(environ)
    bucket = raw.lstrip("/").split("/")[0]
    key = "/".join(unquote(raw).split("/")[2:])
    return bucket, key


def _xml_keys(document: bytes, parent: str) -> list[str]:
    """The ``Key`` of each ``parent`` element: objects to delete, or deleted."""
    try:
        root = ElementTree.fromstring(document)
    except ElementTree.ParseError:
        return []
    keys = []
    for element in root.iter():
        if element.tag.rsplit("}", 1)[-1] == parent:
            for child in element:
                if child.tag.rsplit("}", 1)[-1] == "Key" and child.text is not None:
                    keys.append(child.text)
    return keys


def _read_body(environ: dict[str, Any]) -> bytes:
    """The request body, put back so that moto reads it too."""
    stream = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH")
    if length:
        body = stream.read(int(length))
    elif environ.get("wsgi.input_terminated"):
        body = stream.read()
    else:
        body = b""
    environ["wsgi.input"] = io.BytesIO(body)
    return bytes(body)


def _read_back(method: str, bucket: str, key: str = "") -> dict[str, Any]:
    from werkzeug.test import EnvironBuilder

    path = f"/{bucket}/{quote(key, safe='/~')}" if key else f"/{bucket}"
    builder = EnvironBuilder(
        path=path,
        method=method,
        base_url="http://127.0.0.1/",
        headers=[("Authorization", READ_BACK_AUTHORIZATION)],
    )
    try:
        return builder.get_environ()
    finally:
        builder.close()


def _object_info(headers: list[tuple[str, str]]) -> dict[str, Any]:
    info: dict[str, Any] = {"ContentType": None, "ContentEncoding": None, "Metadata": {}}
    for name, value in headers:
        lower = name.lower()
        if lower == "content-type":
            info["ContentType"] = value
        elif lower == "content-encoding":
            info["ContentEncoding"] = value
        elif lower.startswith(META_PREFIX):
            info["Metadata"][name[len(META_PREFIX) :]] = value
    return info


class WriteThrough:
    """WSGI middleware over moto that answers a write only once its effect is on disk.

    After moto applies a write, each object or bucket it touched is read back from moto (so the
    disk holds what moto holds, whatever the request was) and stored, or removed, in ``store``.
    Writes to one key are serialised from moto's apply to the last fsync, so two PUTs of a key
    cannot leave the older one on disk. Part uploads and the start or abort of a multipart upload
    change no object and pass straight through.
    """

    def __init__(self, app: WSGIApp, store: ObjectStore):
        self.app = app
        self.store = store
        self.locks = KeyLocks()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = str(environ.get("REQUEST_METHOD", "GET")).upper()
        if method not in WRITE_METHODS:
            return self.app(environ, start_response)
        if not _path_style(environ):
            # The disk copy is kept by path-style bucket and key; this one could not be found.
            return _release(
                _error(
                    "501 Not Implemented",
                    "NotImplemented",
                    "The embedded S3 server takes path-style requests only "
                    "(http://127.0.0.1:PORT/bucket/key).",
                ),
                start_response,
            )
        bucket, key = _target(environ)
        query = parse_qs(str(environ.get("QUERY_STRING", "")), keep_blank_values=True)
        if not bucket or method == "PATCH":
            return self.app(environ, start_response)
        if key:
            # A PUT with an uploadId is a part; a POST without one starts an upload; a DELETE
            # with one aborts it: none changes an object.
            if (method == "POST") != ("uploadId" in query):
                return self.app(environ, start_response)
            answer = self._object_write(environ, bucket, [key], must_exist=method != "DELETE")
        elif method == "POST":
            if "delete" not in query:
                # A browser form upload: its key is in the form, out of reach here.
                answer = _error(
                    "501 Not Implemented",
                    "NotImplemented",
                    "The embedded S3 server does not take form uploads (POST to a bucket).",
                )
            else:
                answer = self._multi_delete(environ, bucket)
        else:
            answer = self._bucket_write(environ, bucket)
        return _release(answer, start_response)

    def _object_write(
        self, environ: dict[str, Any], bucket: str, keys: list[str], must_exist: bool
    ) -> Answer:
        with self.locks.holding((bucket, key) for key in keys):
            answer = _call(self.app, environ)
            if not answer[0].startswith("2"):
                return answer
            try:
                for key in keys:
                    self._sync_object(bucket, key, must_exist)
            except Exception as exc:
                return self._failed(exc)
        return answer

    def _multi_delete(self, environ: dict[str, Any], bucket: str) -> Answer:
        requested = _xml_keys(_read_body(environ), "Object")
        answer = self._object_write(environ, bucket, requested, must_exist=False)
        if not answer[0].startswith("2"):
            return answer
        # Keys moto deleted that the request's body did not show here (it could not be read):
        # stored one by one now. Quiet answers list none, so the request's keys come first.
        unseen = set(_xml_keys(b"".join(answer[2]), "Deleted")) - set(requested)
        try:
            for key in sorted(unseen):
                with self.locks.holding([(bucket, key)]):
                    self._sync_object(bucket, key, must_exist=False)
        except Exception as exc:
            return self._failed(exc)
        return answer

    def _bucket_write(self, environ: dict[str, Any], bucket: str) -> Answer:
        with self.locks.holding([(bucket, "")]):  # no key is "": this names the bucket
            answer = _call(self.app, environ)
            if not answer[0].startswith("2"):
                return answer
            try:
                status = _call(self.app, _read_back("HEAD", bucket))[0]
                if status.startswith("200"):
                    self.store.save_bucket(bucket)
                elif status.startswith("404"):
                    self.store.remove_bucket(bucket)
                else:
                    raise PersistError(f"reading bucket {bucket} back was answered {status}")
            except Exception as exc:
                return self._failed(exc)
        return answer

    def _sync_object(self, bucket: str, key: str, must_exist: bool) -> None:
        status, headers, body = _call(self.app, _read_back("GET", bucket, key))
        if status.startswith("200"):
            self.store.save_object(bucket, key, body, _object_info(headers))
        elif status.startswith("404") and not must_exist:
            self.store.remove_object(bucket, key)
        else:
            raise PersistError(f"reading {bucket}/{key} back was answered {status}")

    @staticmethod
    def _failed(exc: Exception) -> Answer:
        _log(f"a write could not be stored, answered 500: {exc!r}")
        return _error(
            "500 Internal Server Error",
            "InternalError",
            f"The embedded S3 server could not store this write on disk: {exc}",
        )


class WriteGate:
    """WSGI middleware that can refuse writes (503): until ``open()``, and from ``close()``,
    which then waits for the writes in flight. Reads are always served."""

    STARTING = "is starting and takes no writes until its objects are loaded"
    STOPPING = "is stopping and takes no more writes"

    def __init__(self, app: WSGIApp, opened: bool = True):
        self.app = app
        self._changed = threading.Condition()
        self._refusing: str | None = None if opened else self.STARTING
        self._in_flight = 0

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if str(environ.get("REQUEST_METHOD", "GET")).upper() not in WRITE_METHODS:
            return self.app(environ, start_response)
        with self._changed:
            refusing = self._refusing
            if refusing is None:
                self._in_flight += 1
        if refusing is not None:
            message = f"The embedded S3 server {refusing}; retry once it has started again."
            refusal = _error(
                "503 Service Unavailable", "ServiceUnavailable", message, ("Retry-After", "10")
            )
            return _release(refusal, start_response)
        try:
            # Held whole, so that the write is over (in moto and on disk) before it counts out.
            answer = _call(self.app, environ)
        finally:
            with self._changed:
                self._in_flight -= 1
                self._changed.notify_all()
        return _release(answer, start_response)

    def open(self) -> None:
        with self._changed:
            self._refusing = None

    def close(self, timeout: float = DRAIN_SECONDS) -> None:
        """Refuse writes from now on; return once none is in flight (or after ``timeout``)."""
        with self._changed:
            self._refusing = self.STOPPING
            self._changed.wait_for(lambda: self._in_flight == 0, timeout)


# -- the server --------------------------------------------------------------------------------


def _serve(app: WSGIApp, port: int) -> Any:
    from moto.moto_server.werkzeug_app import MotoRequestHandler
    from werkzeug.serving import make_server

    return make_server("127.0.0.1", port, app, threaded=True, request_handler=MotoRequestHandler)


class S3Server:
    """moto's S3 API on 127.0.0.1, served by threads: written through to ``store`` when given,
    behind a ``WriteGate`` (closed until ``gate.open()`` when ``opened`` is false)."""

    def __init__(self, port: int = 0, store: ObjectStore | None = None, opened: bool = True):
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

        self.moto: WSGIApp = DomainDispatcherApplication(create_backend_app)
        self.store = store
        self.write_through = WriteThrough(self.moto, store) if store is not None else None
        self.gate = WriteGate(self.write_through or self.moto, opened)
        self._server = _serve(self.gate, port)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join()
        self._server.server_close()

    def restore(
        self, contents: Contents, progress: Callable[[int, int], None] | None = None
    ) -> None:
        """Load ``contents`` into moto; ``progress(done, total)`` about once a second.

        Through a server of its own on moto alone (moto's store is one per process), since what
        is loaded is on disk already."""
        with _private_server(self.moto) as port:
            client = client_for(port)
            for bucket in sorted(contents.buckets):
                client.create_bucket(Bucket=bucket)
            told = time.monotonic()
            # Several at a time: one by one, tens of thousands of objects take minutes.
            with ThreadPoolExecutor(RESTORE_THREADS) as pool:
                loads = pool.map(lambda stored: _put(client, stored), contents.objects)
                for done, _ in enumerate(loads, 1):
                    if progress is not None and time.monotonic() - told >= 1.0:
                        progress(done, len(contents.objects))
                        told = time.monotonic()


@contextmanager
def _private_server(app: WSGIApp) -> Iterator[int]:
    server = _serve(app, 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


def _put(client: Any, stored: StoredObject) -> None:
    extra = {"ContentType": stored.content_type, "ContentEncoding": stored.content_encoding}
    with open(stored.blob, "rb") as body:
        client.put_object(
            Bucket=stored.bucket,
            Key=stored.key,
            Body=body,
            Metadata=stored.metadata,
            **{name: value for name, value in extra.items() if value},
        )


def client_for(port: int) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name="us-east-1",
        aws_access_key_id="symbolon",
        aws_secret_access_key="symbolon-embedded-secret",
    )


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
    store = ObjectStore(directory / "objects")
    # Writes wait for the load: one taken earlier could be overwritten by an older copy.
    server = S3Server(port, store, opened=False)
    server.start()

    def restoring(done: int, total: int) -> None:
        # EmbeddedS3.start waits as long as this keeps moving.
        state = {"pid": os.getpid(), "port": server.port, "ready": False, "restored": done}
        _write_json(state_file, {**state, "total": total})

    contents = store.load()
    restoring(0, len(contents.objects))
    server.restore(contents, restoring)
    server.gate.open()
    _write_json(state_file, {"pid": os.getpid(), "port": server.port, "ready": True})

    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    while not stopping.wait(1.0):
        pass
    _write_json(state_file, {"pid": os.getpid(), "port": server.port, "ready": False})
    # Every write already answered is on disk: only let those in flight finish.
    server.gate.close()
    server.stop()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
