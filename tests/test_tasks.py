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
