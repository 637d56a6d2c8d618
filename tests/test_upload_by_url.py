"""Upload by download (docs/upload.md, "Upload by URL"), with every redirect hop and address checked."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import uuid
from pathlib import Path

import pytest
import tornado.httpserver
import tornado.web
from tornado.testing import bind_unused_port

from symbolon.uploads.by_url import FetchError, FetchPolicy, fetch_to_file
from tests.conftest import running_worker
from tests.downloads import get
from tests.uploads import UPLOAD, make_zip, multipart, post, token_for

IDENT = uuid.uuid4().hex.upper() + "1"
ARCHIVE = make_zip(
    {f"u.pdb/{IDENT}/u.sym": b"MODULE windows x86_64 " + IDENT.encode() + b" u.pdb\n"}
)


class Files(tornado.web.RequestHandler):
    """A build system's artifact server, misbehaving on request."""

    def get(self, path: str) -> None:
        self._answer(path, with_body=True)

    def head(self, path: str) -> None:
        self._answer(path, with_body=False)

    def _answer(self, path: str, with_body: bool) -> None:
        port = self.request.host.rsplit(":", 1)[-1]
        if path == "good.zip":
            self.set_header("Content-Type", "application/zip")
            if with_body:
                self.write(ARCHIVE)
            else:
                self.set_header("Content-Length", str(len(ARCHIVE)))
        elif path == "hop/good.zip":
            self.redirect("/files/good.zip")
        elif path == "elsewhere/good.zip":
            self.redirect(f"http://127.0.0.2:{port}/files/good.zip")
        elif path.startswith("loop/"):
            n = int(path.split("/")[1].split(".")[0])
            self.redirect(f"/files/loop/{n + 1}.zip")
        elif path == "broken.zip":
            self.set_status(500)
        else:
            self.set_status(404)


class Dribble(tornado.web.RequestHandler):
    """A server that sends a byte every 0.1 s: the read timeout alone would never end it."""

    async def get(self) -> None:
        self.set_header("Content-Type", "application/zip")
        for n in range(len(ARCHIVE)):
            self.write(ARCHIVE[n : n + 1])
            await self.flush()
            await asyncio.sleep(0.1)

    def head(self) -> None:
        self.set_header("Content-Type", "application/zip")


@pytest.fixture
def artifacts(io_loop):
    sock, port = bind_unused_port()
    server = tornado.httpserver.HTTPServer(
        tornado.web.Application([(r"/files/slow.zip", Dribble), (r"/files/(.*)", Files)])
    )
    server.add_sockets([sock])
    yield f"http://localhost:{port}/files"
    server.stop()


@pytest.fixture(scope="module")
def url_settings(upload_settings_for_url):
    return upload_settings_for_url


@pytest.fixture(scope="module")
def upload_settings_for_url(live_settings):
    # Development mode: any scheme, any domain, private addresses allowed (tests are on loopback).
    return live_settings.replace(allow_upload_by_any_domain=True, upload_wait_seconds=30.0)


@pytest.fixture
def settings(url_settings):
    return url_settings


@pytest.fixture(scope="module")
def worker(url_settings):
    with running_worker(url_settings) as running:
        yield running


def form(url: str, **extra: str) -> tuple[bytes, str]:
    from urllib.parse import urlencode

    return urlencode({"url": url, **extra}).encode(), "application/x-www-form-urlencoded"


@pytest.mark.gen_test(timeout=60)
async def test_upload_by_url_follows_redirects_and_records_them(
    http_client, base_url, runtime, worker, artifacts
):
    token, _ = await token_for(runtime, UPLOAD)
    url = f"{artifacts}/hop/good.zip"
    response = await post(http_client, base_url, *form(url), token)
    assert response.code == 201, response.body
    upload = json.loads(response.body)["upload"]
    assert upload["download_url"] == url
    assert upload["redirect_urls"] == [f"{artifacts}/good.zip"]
    assert upload["filename"] == "good.zip"
    assert upload["size"] == len(ARCHIVE)
    row = await runtime.db.fetchrow("SELECT content_hash FROM uploads WHERE id = $1", upload["id"])
    assert row["content_hash"]
    assert (await get(http_client, base_url, f"/u.pdb/{IDENT}/u.sym")).code == 302


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("missing.zip", 400, "{url} can't be found (404)"),
        ("broken.zip", 500, "{url} errored (500)"),
        ("loop/0.zip", 400, "Too many redirects trying to open {url}"),
    ],
)
@pytest.mark.gen_test(timeout=60)
async def test_remote_failures(
    http_client, base_url, runtime, worker, artifacts, path, status, message
):
    token, _ = await token_for(runtime, UPLOAD)
    url = f"{artifacts}/{path}"
    response = await post(http_client, base_url, *form(url), token)
    assert response.code == status, response.body
    assert json.loads(response.body) == {"error": message.format(url=url)}


@pytest.mark.gen_test(timeout=60)
async def test_a_multipart_form_with_only_a_url_works_too(
    http_client, base_url, runtime, worker, artifacts
):
    token, _ = await token_for(runtime, UPLOAD)
    body, content_type = multipart({}, {"url": f"{artifacts}/good.zip"})
    response = await post(http_client, base_url, body, content_type, token)
    assert response.code == 201, response.body


@pytest.fixture
def strict_settings(live_settings):
    return live_settings.replace(allow_upload_by_download_domains=("symbols.example.com",))


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("not a url", "Enter a valid URL."),
        ("http://symbols.example.com/a.zip", "Insecure URL"),
        ("https://example.org/a.zip", "Not an allowed domain ('example.org') to download from."),
        ("https://symbols.example.com/a.rar", 'Unrecognized archive file extension ".rar"'),
    ],
)
@pytest.mark.gen_test(timeout=60)
async def test_urls_are_checked_before_anything_is_recorded(strict_settings, runtime, url, message):
    from tests.conftest import served

    token, _ = await token_for(runtime, UPLOAD)
    async with served(strict_settings) as (client, base):
        response = await post(client, base, *form(url), token)
    assert response.code == 400
    assert json.loads(response.body) == {"error": message}


@pytest.mark.gen_test(timeout=30)
async def test_every_redirect_hop_is_checked_against_the_allowed_domains(artifacts, tmp_path: Path):
    policy = FetchPolicy(
        allowed_domains=frozenset({"localhost"}),
        require_https=False,
        allowed_networks=(ipaddress.ip_network("127.0.0.0/8"),),
    )
    got = await fetch_to_file(f"{artifacts}/hop/good.zip", tmp_path / "a.zip", policy, 10**6)
    assert got.redirect_urls == [f"{artifacts}/good.zip"]
    with pytest.raises(FetchError) as info:
        await fetch_to_file(f"{artifacts}/elsewhere/good.zip", tmp_path / "b.zip", policy, 10**6)
    assert info.value.message == "Not an allowed domain ('127.0.0.2') to download from."


@pytest.mark.gen_test(timeout=30)
async def test_names_resolving_to_private_addresses_are_refused(artifacts, tmp_path: Path):
    policy = FetchPolicy(allowed_domains=None, require_https=False)
    with pytest.raises(FetchError) as info:
        await fetch_to_file(f"{artifacts}/good.zip", tmp_path / "a.zip", policy, 10**6)
    assert info.value.status == 400
    assert "localhost: it resolves to a non-public address (127.0.0.1)" in info.value.message
    port = artifacts.split(":")[2].split("/")[0]
    for literal in ("127.0.0.1", "[::1]", "169.254.169.254", "10.0.0.1"):
        with pytest.raises(FetchError) as info:
            await fetch_to_file(
                f"http://{literal}:{port}/files/good.zip", tmp_path / "c.zip", policy, 10**6
            )
        assert "non-public address" in info.value.message


@pytest.mark.gen_test(timeout=30)
async def test_downloads_larger_than_the_limit_are_refused(artifacts, tmp_path: Path):
    policy = FetchPolicy(allowed_domains=None, require_https=False, allow_private=True)
    with pytest.raises(FetchError) as info:
        await fetch_to_file(f"{artifacts}/good.zip", tmp_path / "a.zip", policy, 10)
    assert "larger than the upload limit" in info.value.message


@pytest.mark.gen_test(timeout=60)
async def test_a_download_has_a_deadline(artifacts, tmp_path: Path):
    policy = FetchPolicy(allowed_domains=None, require_https=False, allow_private=True, deadline=1)
    url = f"{artifacts}/slow.zip"
    with pytest.raises(FetchError) as info:
        await fetch_to_file(url, tmp_path / "a.zip", policy, 10**6)
    assert info.value.status == 504
    assert info.value.message == f"Downloading {url} took longer than the limit of 1 seconds"


@pytest.mark.gen_test(timeout=60)
async def test_a_download_must_keep_a_minimum_rate(artifacts, tmp_path: Path):
    policy = FetchPolicy(
        allowed_domains=None, require_https=False, allow_private=True, min_rate=100, rate_grace=0.5
    )
    url = f"{artifacts}/slow.zip"
    with pytest.raises(FetchError) as info:
        await fetch_to_file(url, tmp_path / "a.zip", policy, 10**6)
    assert info.value.status == 504
    assert info.value.message.startswith(f"Downloading {url} was too slow: ")
    assert info.value.message.endswith("the minimum is 100 bytes per second")


def test_the_deadline_and_rate_come_from_the_settings(url_settings):
    policy = FetchPolicy.from_settings(
        url_settings.replace(upload_by_download_deadline_seconds=7.5, upload_by_download_min_rate=9)
    )
    assert (policy.deadline, policy.min_rate) == (7.5, 9)


@pytest.mark.gen_test
async def test_a_download_that_breaks_unexpectedly_leaves_no_file(tmp_path: Path, monkeypatch):
    from types import SimpleNamespace

    from symbolon.conf import Settings
    from symbolon.uploads import process

    async def breaks(url, path, policy, limit):
        path.write_bytes(b"half an archive")
        raise OSError("the disk went away")

    monkeypatch.setattr(process.by_url, "fetch_to_file", breaks)
    services = SimpleNamespace(settings=Settings(upload_tempdir=tmp_path))
    with pytest.raises(OSError):
        await process._download(services, {"id": 1, "download_url": "https://x.test/a.zip"})
    assert os.listdir(tmp_path) == []


def test_a_url_that_cannot_be_parsed_is_a_400():
    with pytest.raises(FetchError) as info:
        FetchPolicy(allowed_domains=None).check_url("https://[::1/a.zip")
    assert (info.value.status, info.value.message) == (400, "Enter a valid URL.")
