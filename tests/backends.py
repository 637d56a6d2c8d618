"""The symbol store backends the backend suites run against (test_storage_backends.py, and
the native file uploads' tests): an S3 bucket on the embedded emulator and a ``file://``
directory, each with one runtime and one worker per test module, and the calls those suites
make."""

from __future__ import annotations

import gzip
import hashlib
import json
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import tornado.httpclient
import tornado.ioloop

from symbolon.conf import Settings
from symbolon.runtime import Runtime
from symbolon.storage.store import SymbolStore
from tests.conftest import running_worker, s3_client, s3_endpoint
from tests.uploads import UPLOAD, make_zip, multipart, post, token_for

BACKENDS = ("s3", "directory")
TRY_UPLOAD = ["upload.upload_try_symbols"]


@dataclass(frozen=True)
class Backend:
    kind: str
    url: str  # the location's URL, as SYMBOL_URLS names it
    other: str  # a second location of the other kind, for lookups across both
    missing: str  # a location of this kind that does not exist


def new_bucket(settings: Settings, label: str) -> str:
    endpoint = s3_endpoint(settings)
    bucket = f"{label}-{uuid.uuid4().hex[:8]}"
    s3_client(endpoint).create_bucket(Bucket=bucket)
    return f"{endpoint}/{bucket}"


@pytest.fixture(scope="module", params=BACKENDS)
def backend(
    request: pytest.FixtureRequest,
    live_settings: Settings,
    tmp_path_factory: pytest.TempPathFactory,
) -> Backend:
    here = tmp_path_factory.mktemp(f"backend-{request.param}")
    directory = (here / "symbols").as_uri()
    other_directory = (here / "other").as_uri()
    if request.param == "s3":
        url = new_bucket(live_settings, "backend")
        return Backend("s3", url, other_directory, f"{s3_endpoint(live_settings)}/no-such-bucket")
    gone = (here / "gone").as_uri()
    return Backend("directory", directory, new_bucket(live_settings, "other"), gone)


@pytest.fixture(scope="module")
def backend_settings(
    live_settings: Settings, backend: Backend, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    """The session's services, with the backend's location as the only one; symbolication reads
    that location and nothing upstream."""
    return live_settings.replace(
        symbol_urls=(backend.url,),
        upload_default_url=backend.url,
        upload_wait_seconds=30.0,
        symbols_cache_dir=tmp_path_factory.mktemp("symcache"),
        symbolication_symbol_urls=(),
        symbolication_parse_workers=1,
    )


@pytest.fixture(scope="module")
def io_loop() -> Iterator[tornado.ioloop.IOLoop]:
    """One loop for the module, so that one runtime per backend serves all its tests."""
    loop = tornado.ioloop.IOLoop()
    with warnings.catch_warnings():
        # As pytest-tornado's own: the test server's fixture listens on the current loop.
        warnings.simplefilter("ignore", DeprecationWarning)
        loop.make_current()
    yield loop
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        loop.clear_current()
    loop.close(all_fds=True)


@pytest.fixture(scope="module")
def runtime(backend_settings: Settings, io_loop: tornado.ioloop.IOLoop) -> Iterator[Runtime]:
    rt: Runtime = io_loop.run_sync(lambda: Runtime.create(backend_settings))
    io_loop.run_sync(lambda: rt.stores.ensure(rt.storage))
    yield rt
    io_loop.run_sync(rt.close)


@pytest.fixture
def settings(backend_settings: Settings) -> Settings:
    return backend_settings


@pytest.fixture(scope="module")
def worker(backend_settings: Settings, runtime: Runtime) -> Iterator[Any]:
    with running_worker(backend_settings) as running:
        yield running


@pytest.fixture(scope="module")
def tokens(runtime: Runtime, io_loop: tornado.ioloop.IOLoop) -> dict[str, str]:
    async def make() -> dict[str, str]:
        return {
            "upload": (await token_for(runtime, UPLOAD))[0],
            "try": (await token_for(runtime, TRY_UPLOAD, superuser=False))[0],
        }

    made: dict[str, str] = io_loop.run_sync(make)
    return made


def own(runtime: Runtime) -> SymbolStore:
    return runtime.stores.at(runtime.storage.upload_default)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


async def upload_zip(
    http_client: Any, base_url: str, token: str, members: dict[str, bytes], **fields: str
) -> dict[str, Any]:
    body, content_type = multipart({"symbols.zip": make_zip(members)}, fields)
    response = await post(http_client, base_url, body, content_type, token)
    assert response.code == 201, response.body
    upload: dict[str, Any] = json.loads(response.body)["upload"]
    assert upload["completed_at"]
    return upload


async def follow(base_url: str, path: str) -> tornado.httpclient.HTTPResponse:
    """A download as a debugger makes it: the redirect followed, the bytes as the store sent
    them (not inflated)."""
    return await tornado.httpclient.AsyncHTTPClient().fetch(
        base_url + path, follow_redirects=True, decompress_response=False, raise_error=False
    )


async def v2_call(http_client: Any, base_url: str, path: str, token: str, body: Any) -> Any:
    return await http_client.fetch(
        base_url + path,
        method="POST",
        body=json.dumps(body),
        headers={"Auth-Token": token, "Content-Type": "application/json"},
        raise_error=False,
        request_timeout=60,
    )


async def v2_put(action: dict[str, Any], content: bytes) -> int:
    body = gzip.compress(content) if action["content_encoding"] == "gzip" else content
    response = await tornado.httpclient.AsyncHTTPClient().fetch(
        action["url"], method="PUT", body=body, headers=action["headers"], raise_error=False
    )
    return response.code


def planned(key: str, content: bytes) -> dict[str, Any]:
    return {"key": key, "size": len(content), "md5_hash": md5(content)}
