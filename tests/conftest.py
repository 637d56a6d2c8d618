"""Fixtures: the embedded real services start once per test session; apps start per test."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg
import pytest
import tornado.ioloop
import uvloop

from symbolon.conf import Settings, load_settings
from symbolon.runtime import Runtime
from symbolon.server.app import make_app
from symbolon.server.embedded import EmbeddedStack
from symbolon.symbolication.parse import ParsePool
from tests.environment import OPERATOR_CONFIGURATION

if TYPE_CHECKING:
    from tests.symbolication_support import Upstream


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt  # so that a killed run still stops the servers it started


signal.signal(signal.SIGTERM, _interrupt)
# Tests run on the event loop that `serve` runs on by default (EVENT_LOOP).
asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

# Tests must not pick up the developer's own configuration.
for _name in list(os.environ):
    if _name.startswith(OPERATOR_CONFIGURATION):
        del os.environ[_name]


def run_isolated(coro: Any) -> Any:
    """Run a coroutine on a private loop. Unlike asyncio.run, this leaves the current event
    loop alone, which pytest-tornado's io_loop fixture may already have set."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


@pytest.fixture(scope="session")
def stack() -> Iterator[EmbeddedStack]:
    # Not under pytest's own temp dir: pytest makes that private (0700) at every start, and the
    # embedded PostgreSQL runs as another user when tests run as root.
    data_dir = Path(tempfile.mkdtemp(prefix="symbolon-test-"))
    stack = EmbeddedStack(data_dir)
    yield stack
    stack.stop()
    shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def live_settings(stack: EmbeddedStack) -> Settings:
    """Settings pointing at the session's embedded PostgreSQL, Redis and S3, migrated."""
    base = load_settings(
        {"SYMBOLON_DATA_DIR": str(stack.data_dir), "EMBEDDED_STORAGE": "s3"}, dotenv_path=None
    )
    settings = stack.start(base.replace(worker_threads=0))

    async def prepare() -> None:
        runtime = await Runtime.create(settings)
        try:
            await runtime.stores.ensure(runtime.storage)
            if runtime.collector is not None:
                await runtime.collector.storage.start_up_check(create=True)
        finally:
            await runtime.close()

    run_isolated(prepare())
    return settings


@pytest.fixture
def settings(live_settings: Settings) -> Settings:
    return live_settings


@pytest.fixture
def runtime(settings: Settings, io_loop: tornado.ioloop.IOLoop) -> Iterator[Runtime]:
    rt = io_loop.run_sync(lambda: Runtime.create(settings))
    yield rt
    io_loop.run_sync(rt.close)


@pytest.fixture
def app(runtime: Runtime):
    return make_app(runtime)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[str]:
    """A Redis of the test's own, so pausing it disturbs no other test; returns its URL."""
    from symbolon.server.embedded import EmbeddedRedis

    server = EmbeddedRedis(tmp_path, "own", {"save": ""})
    url = server.start()
    yield url
    server.stop()


@pytest.fixture
def fresh_database(live_settings: Settings) -> Iterator[str]:
    """A new, empty database on the embedded server; returns its URL."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = live_settings.database_url.replace("/symbolon?", "/postgres?")

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(admin)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    run_isolated(run(f'CREATE DATABASE "{name}"'))
    yield live_settings.database_url.replace("/symbolon?", f"/{name}?")
    run_isolated(run(f'DROP DATABASE "{name}" WITH (FORCE)'))


@contextmanager
def running_worker(settings: Settings) -> Iterator[Any]:
    """A task worker on the real broker, as ``serve`` embeds it."""
    from symbolon.tasks.broker import setup_broker, start_worker

    broker = setup_broker(settings)
    worker = start_worker(broker, threads=2)
    try:
        yield worker
    finally:
        worker.stop()
        broker.close()


class served:
    """The app on a port of its own, for settings (or routes) that differ from the fixtures'.

    ``async with served(settings) as (client, base_url): ...``; ``.runtime`` is its Runtime.
    """

    def __init__(self, settings: Settings, extra_routes: list[Any] | None = None, **create: Any):
        self.settings = settings
        self.extra_routes = extra_routes
        self.create = create

    async def __aenter__(self) -> tuple[Any, str]:
        import tornado.httpclient
        import tornado.httpserver
        from tornado.testing import bind_unused_port

        self.runtime = await Runtime.create(self.settings, **self.create)
        sock, port = bind_unused_port()
        self.server = tornado.httpserver.HTTPServer(make_app(self.runtime, self.extra_routes))
        self.server.add_sockets([sock])
        return tornado.httpclient.AsyncHTTPClient(), f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc: object) -> None:
        self.server.stop()
        await self.runtime.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def wait_until(predicate: Any, seconds: float = 3.0) -> bool:
    """Whether ``predicate()`` became true within ``seconds``, asked every 10 ms."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.01)
    return False


def unique_email(label: str = "user") -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}@example.com"


def s3_endpoint(settings: Settings) -> str:
    return settings.symbol_urls[0].rsplit("/", 1)[0]


def s3_client(endpoint: str, config: Any = None) -> Any:
    """A plain boto3 client for the embedded S3 server, to arrange and inspect objects."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="k",
        aws_secret_access_key="s",
        config=config,
    )


def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def oidc_provider() -> Iterator[Any]:
    """A real OpenID Connect provider (Node's oidc-provider) on 127.0.0.1, for sign-in tests."""
    from tests.oidc_provider import running_provider

    with running_provider() as provider:
        yield provider


# -- uploads: module-scoped, so each module gets its own worker; a module uses them by naming
# them, and its own ``settings`` fixture returns ``upload_settings`` for its app.


@pytest.fixture(scope="module")
def upload_settings(live_settings: Settings) -> Settings:
    """Settings with a partner bucket for ``*@partner.example`` and longer upload waits."""
    from tests.uploads import PARTNER_BUCKET  # here: tests.uploads imports this module

    endpoint = s3_endpoint(live_settings)
    s3_client(endpoint).create_bucket(Bucket=PARTNER_BUCKET)
    return live_settings.replace(
        upload_url_exceptions={"*@partner.example": f"{endpoint}/{PARTNER_BUCKET}"},
        upload_wait_seconds=30.0,
    )


@pytest.fixture(scope="module")
def worker(upload_settings: Settings) -> Iterator[Any]:
    """A task worker with the upload settings; modules with settings of their own override it."""
    with running_worker(upload_settings) as running:
        yield running


@pytest.fixture(scope="module")
def s3(upload_settings: Settings) -> Any:
    return s3_client(s3_endpoint(upload_settings))


# -- symbolication: each test gets its own symcache directory and upstream symbol server; a
# module uses them through its own ``settings`` fixture returning ``symbolication_settings``.


@pytest.fixture
def upstream(io_loop: tornado.ioloop.IOLoop) -> Iterator[Upstream]:
    from tests.symbolication_support import Upstream  # here: it imports this module

    server = Upstream()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def cache_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="symbolon-symcache-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def symbolication_settings(
    live_settings: Settings, upstream: Upstream, cache_dir: Path
) -> Settings:
    return live_settings.replace(
        symbols_cache_dir=cache_dir,
        symbolication_symbol_urls=(upstream.url,),
        symbolication_parse_workers=1,
    )


@pytest.fixture(scope="module")
def parse_pool() -> Iterator[ParsePool]:
    """One parse process for a whole test module: starting one costs about a second."""
    pool = ParsePool(workers=1, memory_budget=4 * 1024**3)
    yield pool
    pool.close()


@pytest.fixture
def symbolication(runtime: Runtime, parse_pool: ParsePool) -> Iterator[Any]:
    service = runtime.symbolication
    own_pool, service.pool = service.pool, parse_pool
    service.fetcher.backoff = 0.01  # retries keep their number, not their waits
    yield service
    service.pool = own_pool
