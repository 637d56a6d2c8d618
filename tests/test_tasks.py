import signal
import subprocess
import sys
import time
import uuid

import pytest

from symbolon.tasks import broker as tasks
from tests.cli import env_for


def wait_for_ping(broker, token: str, seconds: float = 15) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if broker.client.get(f"symbolon:ping:{token}") == b"pong":
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def broker(live_settings):
    broker = tasks.setup_broker(live_settings)
    yield broker
    broker.close()


def actors():
    import symbolon.tasks.actors as module

    return module


def test_embedded_worker_runs_queued_tasks(broker):
    worker = tasks.start_worker(broker, threads=1)
    try:
        token = uuid.uuid4().hex
        actors().ping.send(token)
        assert wait_for_ping(broker, token)
    finally:
        worker.stop()


@pytest.mark.gen_test
async def test_enqueue_from_async_code(broker):
    worker = tasks.start_worker(broker, threads=1)
    try:
        token = uuid.uuid4().hex
        message = await tasks.enqueue(actors().ping, token)
        assert message.args == (token,)
        assert wait_for_ping(broker, token)
    finally:
        worker.stop()


def test_worker_command_consumes_the_queue_and_stops_on_sigterm(broker, live_settings):
    token = uuid.uuid4().hex
    actors().ping.send(token)  # queued before any worker exists: nothing is lost
    proc = subprocess.Popen(
        [sys.executable, "-m", "symbolon.admin_cli.main", "worker", "--threads", "1"],
        env=env_for(live_settings),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert wait_for_ping(broker, token, seconds=30)
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=30)[0]
    assert proc.returncode == 0, output


def test_stopping_a_worker_lets_the_task_in_flight_finish(broker, live_settings, monkeypatch):
    """Ctrl-C during an upload: the task completes before the worker's resources are closed."""
    import asyncio
    import io
    import zipfile

    from symbolon.runtime import Runtime
    from symbolon.uploads import process
    from tests.conftest import run_isolated, unique_email

    staged = live_settings.staging_dir / f"upload-{uuid.uuid4().hex}.zip"
    staged.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr(f"slow.pdb/{uuid.uuid4().hex.upper()}1/slow.sym", b"MODULE")
    staged.write_bytes(buffer.getvalue())

    async def arrange() -> int:
        rt = await Runtime.create(live_settings)
        try:
            user = await rt.db.fetchval(
                "INSERT INTO users (email) VALUES ($1) RETURNING id", unique_email()
            )
            return await rt.db.fetchval(
                """INSERT INTO uploads (user_id, filename, bucket_name, staging_ref, destination_url)
                   VALUES ($1, 'slow.zip', 'symbols', $2, $3) RETURNING id""",
                user,
                str(staged),
                rt.storage.upload_default.url,
            )
        finally:
            await rt.close()

    upload_id = run_isolated(arrange())
    real = process.store_member
    started = []

    async def slow(*args):
        started.append(1)
        await asyncio.sleep(0.5)
        return await real(*args)

    monkeypatch.setattr(process, "store_member", slow)
    worker = tasks.start_worker(broker, threads=1)
    actors().process_upload.send(upload_id)
    deadline = time.monotonic() + 10
    while not started and time.monotonic() < deadline:
        time.sleep(0.01)
    worker.stop()  # while the member is being stored

    async def outcome():
        rt = await Runtime.create(live_settings)
        try:
            return await rt.db.fetchrow("SELECT * FROM uploads WHERE id = $1", upload_id)
        finally:
            await rt.close()

    row = run_isolated(outcome())
    assert started
    assert row["completed_at"] is not None, row["error"]
    assert row["attempts"] == 1


def test_the_scheduler_sends_the_staging_sweep(broker, live_settings):
    """An archive a killed process left staged goes with the hourly sweep."""
    import os

    orphan = live_settings.staging_dir / f"upload-{uuid.uuid4().hex}.zip"
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"PK")
    two_days_ago = time.time() - 2 * 86_400
    os.utime(orphan, (two_days_ago, two_days_ago))
    broker.client.delete("symbolon:schedule:expire_try_symbols")  # as if an hour had passed
    worker = tasks.start_worker(broker, threads=1)
    try:
        assert tasks.Scheduler(broker).tick()
        deadline = time.monotonic() + 30
        while orphan.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not orphan.exists()
    finally:
        worker.stop()
