"""``symbolon upload``: the upload client, against the real server and a scripted local one."""

from __future__ import annotations

import asyncio
import gzip
import http.client
import http.server
import io
import json
import os
import socket
import tempfile
import threading
import urllib.parse
import uuid
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from symbolon.admin_cli import upload as client
from symbolon.admin_cli.commands import cli
from symbolon.uploads.multipart import UploadForm
from tests.cli import Outcome
from tests.cli import invoke as run_symbolon
from tests.uploads import UPLOAD, make_zip, sym_text, token_for


@pytest.fixture
def settings(upload_settings):
    """The app of these tests runs with the upload settings (a partner bucket, longer waits)."""
    return upload_settings


# -- helpers ------------------------------------------------------------------------------------


def new_ident() -> str:
    return uuid.uuid4().hex.upper() + "1"


def run_upload(*args: str, env: dict[str, str] | None = None) -> Outcome:
    """The whole command line, in process (blocking: call it through asyncio.to_thread)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SYMBOLON_")}
    full_env.update(env or {})
    return run_symbolon("upload", *args, env=full_env)


def upload_id_from(stdout: str) -> int:
    for line in stdout.splitlines():
        if line.startswith("upload id: "):
            return int(line.removeprefix("upload id: "))
    raise AssertionError(f"no upload id in {stdout!r}")


def local(base_url: str) -> str:
    return base_url.replace("localhost", "127.0.0.1")


def breakpad_tree(root: Path, idents: list[str]) -> dict[str, bytes]:
    """``<module>/<debug_id>/<file>`` under root, plus a top-level -symbols.txt; name -> bytes."""
    members = {}
    for i, ident in enumerate(idents):
        members[f"m{i}.pdb/{ident}/m{i}.sym"] = sym_text(ident, f"m{i}")
    members["firefox-symbols.txt"] = b"m0.pdb\n"
    for name, data in members.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return members


class FakeServer:
    """A tiny ``POST /upload/`` on 127.0.0.1 that answers from a script, in a thread.

    ``script`` holds ``(status, json_body, headers)`` answers used in turn; once it is empty,
    requests are forwarded to ``forward_to`` (a real Symbolon) when given, else get the last one.
    Every request's headers and body are kept in ``requests``.
    """

    def __init__(self, script, forward_to: str | None = None):
        self.script = list(script)
        self.last = self.script[-1] if self.script else None
        self.forward_to = forward_to
        self.requests: list[tuple[dict[str, str], bytes]] = []
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                fake.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                if fake.script or fake.forward_to is None:
                    status, payload, headers = fake.script.pop(0) if fake.script else fake.last
                    data = json.dumps(payload).encode()
                else:
                    status, headers, data = fake.forward(self.path, self.headers, body)
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def forward(self, path, headers, body):
        target = urllib.parse.urlsplit(self.forward_to)
        conn = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
        try:
            conn.request(
                "POST",
                path,
                body=body,
                headers={k: headers[k] for k in ("Auth-Token", "Content-Type") if k in headers},
            )
            answer = conn.getresponse()
            extra = {"Location": answer.headers["Location"]} if "Location" in answer.headers else {}
            return answer.status, extra, answer.read()
        finally:
            conn.close()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


def invoke(*args: str, env: dict[str, str | None] | None = None):
    """The command in process (for the scripted server only: nothing here runs an IOLoop)."""
    return CliRunner().invoke(
        cli, ["upload", *args], env={"SYMBOLON_URL": None, "SYMBOLON_TOKEN": None, **(env or {})}
    )


@pytest.fixture
def zip_path(tmp_path: Path) -> Path:
    path = tmp_path / "some-symbols.zip"
    ident = new_ident()
    path.write_bytes(make_zip({f"z.pdb/{ident}/z.sym": sym_text(ident, "z")}))
    return path


# -- the real server ----------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=90)
async def test_zip_file_is_stored_and_reported(
    http_server, base_url, runtime, worker, s3, tmp_path
):
    ident = new_ident()
    content = sym_text(ident)
    archive = tmp_path / "firefox-99.0-symbols.zip"
    archive.write_bytes(make_zip({f"xul.pdb/{ident}/xul.sym": content}))
    token, email = await token_for(runtime, UPLOAD)

    done = await asyncio.to_thread(
        run_upload,
        str(archive),
        env={"SYMBOLON_URL": local(base_url), "SYMBOLON_TOKEN": token},
    )

    assert done.returncode == 0, done.stderr
    upload_id = upload_id_from(done.stdout)
    assert "skipped: 0 file(s) already stored" in done.stdout
    assert f"uploaded firefox-99.0-symbols.zip ({archive.stat().st_size} bytes)" in done.stdout
    assert f"to bucket symbols for {email}" in done.stdout
    assert "sent 100%" in done.stderr  # not a terminal: progress as lines
    stored = s3.get_object(Bucket="symbols", Key=f"v1/xul.pdb/{ident}/xul.sym")
    assert gzip.decompress(stored["Body"].read()) == content
    row = await runtime.db.fetchrow("SELECT * FROM uploads WHERE id = $1", upload_id)
    assert row["filename"] == "firefox-99.0-symbols.zip"
    assert row["size"] == archive.stat().st_size
    assert row["try_symbols"] is False

    again = await asyncio.to_thread(
        run_upload, str(archive), "--url", local(base_url), "--token", token
    )
    assert again.returncode == 0, again.stderr
    assert "skipped: 1 file(s) already stored" in again.stdout


@pytest.mark.gen_test(timeout=90)
async def test_directory_is_zipped_stored_and_the_temp_zip_removed(
    http_server, base_url, runtime, worker, s3, tmp_path
):
    idents = [new_ident(), new_ident()]
    tree = tmp_path / "syms"
    members = breakpad_tree(tree, idents)
    temp = tmp_path / "tmp"
    temp.mkdir()
    token, _ = await token_for(runtime, UPLOAD)

    done = await asyncio.to_thread(
        run_upload,
        str(tree),
        "--url",
        local(base_url) + "/",
        "--token",
        token,
        env={"TMPDIR": str(temp)},
    )

    assert done.returncode == 0, done.stderr
    row = await runtime.db.fetchrow(
        "SELECT * FROM uploads WHERE id = $1", upload_id_from(done.stdout)
    )
    assert row["filename"] == "symbols.zip"
    assert row["ignored_keys"] == ["firefox-symbols.txt"]
    for i, ident in enumerate(idents):
        stored = s3.get_object(Bucket="symbols", Key=f"v1/m{i}.pdb/{ident}/m{i}.sym")
        assert gzip.decompress(stored["Body"].read()) == members[f"m{i}.pdb/{ident}/m{i}.sym"]
    assert list(temp.iterdir()) == []  # the temporary archive is gone


@pytest.mark.gen_test(timeout=90)
async def test_directory_goes_through_a_temporary_zip_on_disk(
    http_server, base_url, runtime, worker, tmp_path, monkeypatch
):
    tree = tmp_path / "syms"
    members = breakpad_tree(tree, [new_ident()])
    temp = tmp_path / "tmp"
    temp.mkdir()
    built = []
    real = client.build_archive

    def spy(directory, tmp_dir=None):
        path = real(directory, tmp_dir)
        with zipfile.ZipFile(path) as zf:
            built.append((path, sorted(zf.namelist()), {i.compress_type for i in zf.infolist()}))
        return path

    monkeypatch.setattr(client, "build_archive", spy)
    token, _ = await token_for(runtime, UPLOAD)

    outcome = await asyncio.to_thread(
        client.upload_path, tree, local(base_url), token, tmp_dir=str(temp), retries=0
    )

    assert outcome.response is not None and outcome.response.status == 201
    assert outcome.attempts == 1
    [(path, names, methods)] = built
    assert path.parent == temp and path.name.startswith(client.TEMP_PREFIX)
    assert names == sorted(members)
    assert methods == {zipfile.ZIP_DEFLATED}
    assert not path.exists()
    assert outcome.response.json()["upload"]["size"] > 0


@pytest.mark.gen_test(timeout=90)
async def test_try_flag_uploads_try_symbols(http_server, base_url, runtime, worker, s3, zip_path):
    token, _ = await token_for(runtime, UPLOAD)
    done = await asyncio.to_thread(
        run_upload, str(zip_path), "--try", "--url", local(base_url), "--token", token
    )
    assert done.returncode == 0, done.stderr
    assert "as try symbols" in done.stdout
    row = await runtime.db.fetchrow(
        "SELECT * FROM uploads WHERE id = $1", upload_id_from(done.stdout)
    )
    assert row["try_symbols"] is True
    with zipfile.ZipFile(zip_path) as zf:
        [name] = zf.namelist()
    s3.head_object(Bucket="symbols", Key=f"try/v1/{name}")


@pytest.mark.gen_test(timeout=90)
async def test_bad_token_exits_1_with_the_servers_message_and_no_retry(
    http_server, base_url, zip_path
):
    done = await asyncio.to_thread(
        run_upload,
        str(zip_path),
        "--url",
        local(base_url),
        "--token",
        uuid.uuid4().hex,
        "--retry-delay",
        "0",
    )
    assert done.returncode == 1
    assert "error: HTTP 403: API Token not matched" in done.stderr
    assert "retrying" not in done.stderr
    assert done.stdout == ""


@pytest.mark.gen_test(timeout=90)
async def test_invalid_archive_exits_1_with_the_servers_message(
    http_server, base_url, runtime, tmp_path
):
    archive = tmp_path / "flat.zip"
    archive.write_bytes(make_zip({"xpcshell.sym": b"MODULE"}))
    token, _ = await token_for(runtime, UPLOAD)
    done = await asyncio.to_thread(
        run_upload, str(archive), "--url", local(base_url), "--token", token
    )
    assert done.returncode == 1
    assert "(First unrecognized pattern was xpcshell.sym)" in done.stderr


@pytest.mark.gen_test(timeout=90)
async def test_too_large_is_refused_from_the_headers(runtime, upload_settings, tmp_path):
    from tests.conftest import served

    archive = tmp_path / "big.zip"
    archive.write_bytes(make_zip({f"b.pdb/{new_ident()}/b.dbg.gz": os.urandom(200_000)}))
    async with served(upload_settings.replace(upload_max_size=10_000)) as (_, base):
        token, _ = await token_for(runtime, UPLOAD)
        done = await asyncio.to_thread(
            run_upload, str(archive), "--url", base, "--token", token, "--retry-delay", "0"
        )
    assert done.returncode == 1, done.stderr
    assert "the limit is 10000 bytes" in done.stderr
    assert "retrying" not in done.stderr


@pytest.mark.gen_test(timeout=90)
async def test_503_twice_then_success_through_a_proxy(
    http_server, base_url, runtime, worker, s3, tmp_path
):
    ident = new_ident()
    archive = tmp_path / "retried.zip"
    archive.write_bytes(make_zip({f"r.pdb/{ident}/r.sym": sym_text(ident, "r")}))
    token, _ = await token_for(runtime, UPLOAD)
    busy = (503, {"error": "Service Unavailable"}, {})
    with FakeServer([busy, busy], forward_to=local(base_url)) as fake:
        done = await asyncio.to_thread(
            run_upload, str(archive), "--url", fake.url, "--token", token, "--retry-delay", "0.01"
        )
    assert done.returncode == 0, done.stderr
    assert len(fake.requests) == 3
    lengths = {int(headers["content-length"]) for headers, _ in fake.requests}
    assert lengths == {len(fake.requests[0][1])}  # the whole body, every time
    assert done.stderr.count("retrying in") == 2
    assert "attempt 1 failed (HTTP 503 Service Unavailable: Service Unavailable)" in done.stderr
    assert "attempt 2 failed" in done.stderr
    assert done.stderr.count("sent 100%") == 3
    upload_id_from(done.stdout)
    s3.head_object(Bucket="symbols", Key=f"v1/r.pdb/{ident}/r.sym")


# -- a scripted server --------------------------------------------------------------------------


def test_400_is_not_retried(zip_path):
    refused = (400, {"error": 'Unrecognized archive file extension ".rar"'}, {})
    with FakeServer([refused]) as fake:
        result = invoke(str(zip_path), "--url", fake.url, "--token", "t0k3n", "--retry-delay", "0")
    assert result.exit_code == 1
    assert len(fake.requests) == 1
    assert 'error: HTTP 400: Unrecognized archive file extension ".rar"' in result.stderr


@pytest.mark.parametrize("status", [408, 429, 500, 501, 502, 503, 504, 507, 599])
def test_retryable_statuses_are_retried_until_exhausted(zip_path, status):
    with FakeServer([(status, {"error": "later"}, {})]) as fake:
        result = invoke(
            str(zip_path),
            "--retries",
            "2",
            "--retry-delay",
            "0",
            env={"SYMBOLON_URL": fake.url, "SYMBOLON_TOKEN": "t0k3n"},
        )
    assert result.exit_code == 2
    assert len(fake.requests) == 3
    assert f"giving up after 3 attempt(s); last: HTTP {status}" in result.stderr


def test_other_4xx_are_not_retried(zip_path):
    with FakeServer([(404, {"error": "Not Found"}, {})]) as fake:
        result = invoke(str(zip_path), "--url", fake.url, "--token", "t", "--retry-delay", "0")
    assert result.exit_code == 1
    assert len(fake.requests) == 1
    assert "error: HTTP 404: Not Found" in result.stderr


def test_request_carries_token_form_and_archive(zip_path):
    answer = {"upload": {"id": 9, "skipped_keys": ["a"], "filename": "some-symbols.zip"}}
    with FakeServer([(201, answer, {})]) as fake:
        result = invoke(str(zip_path), "--url", fake.url, "--token", "secret", "--try")
    assert result.exit_code == 0, result.output
    assert "upload id: 9" in result.stdout
    assert "skipped: 1 file(s) already stored" in result.stdout
    [(headers, body)] = fake.requests
    assert headers["auth-token"] == "secret"
    assert int(headers["content-length"]) == len(body)
    form = UploadForm(headers["content-type"], zip_path.parent / "received.zip")
    form.feed(body)
    form.close()
    assert form.file_field == "some-symbols.zip"
    assert form.fields == {"try": "1"}
    assert (zip_path.parent / "received.zip").read_bytes() == zip_path.read_bytes()


def test_202_prints_the_status_url(zip_path):
    location = "/api/uploads/upload/7"
    answer = {"upload": {"id": 7}, "status_url": location}
    with FakeServer([(202, answer, {"Location": location})]) as fake:
        result = invoke(str(zip_path), "--url", fake.url, "--token", "t")
    assert result.exit_code == 0
    assert "upload id: 7" in result.stdout
    assert f"status: {fake.url}{location}" in result.stdout


def test_connection_errors_are_retried_then_exit_2(zip_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: connections are refused
    result = invoke(
        str(zip_path),
        "--url",
        f"http://127.0.0.1:{port}",
        "--token",
        "t",
        "--retries",
        "2",
        "--retry-delay",
        "0",
    )
    assert result.exit_code == 2
    assert result.stderr.count("retrying in") == 2
    assert "giving up after 3 attempt(s); last: ConnectionRefusedError" in result.stderr


def test_back_off_doubles_and_is_capped(zip_path):
    delays: list[float] = []
    with FakeServer([(503, {"error": "busy"}, {})]) as fake:
        outcome = client.post_with_retries(
            fake.url,
            "t",
            zip_path,
            zip_path.name,
            retries=4,
            retry_delay=2,
            max_delay=10,
            sleep=delays.append,
        )
    assert delays == [2, 4, 8, 10]
    assert outcome.attempts == 5 and outcome.retries_exhausted
    assert len(outcome.errors) == 5


def test_retry_after_is_honoured_within_the_cap(zip_path):
    delays: list[float] = []
    busy = (429, {"error": "slow down"}, {"Retry-After": "7"})
    with FakeServer([busy, busy, (201, {"upload": {"id": 1}}, {})]) as fake:
        outcome = client.post_with_retries(
            fake.url, "t", zip_path, zip_path.name, retry_delay=1, max_delay=5, sleep=delays.append
        )
    assert delays == [5, 5]
    assert outcome.response is not None and outcome.response.status == 201
    assert outcome.attempts == 3


def test_directory_temp_zip_is_removed_when_the_upload_is_refused(tmp_path, monkeypatch):
    tree = tmp_path / "syms"
    breakpad_tree(tree, [new_ident()])
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    with FakeServer([(403, {"error": "Forbidden"}, {})]) as fake:
        result = invoke(str(tree), "--url", fake.url, "--token", "t")
    assert result.exit_code == 1
    assert "error: HTTP 403: Forbidden" in result.stderr
    [(_, body)] = fake.requests
    assert b'name="symbols.zip"; filename="symbols.zip"' in body
    assert list(temp.iterdir()) == []


# -- without any server -------------------------------------------------------------------------


def test_missing_token_is_a_clear_error(zip_path):
    with FakeServer([(201, {"upload": {"id": 1}}, {})]) as fake:
        result = invoke(str(zip_path), "--url", fake.url)
    assert result.exit_code == 1
    assert "no upload token: pass --token or set SYMBOLON_TOKEN" in result.stderr
    assert fake.requests == []


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: (p / "notes.txt").write_text("x") and p / "notes.txt", "is not a .zip file"),
        (lambda p: (p / "flat").mkdir() or p / "flat", "holds no <module>/<debug_id>/<file>"),
    ],
)
def test_bad_paths_are_refused_before_sending(tmp_path, make, message):
    path = make(tmp_path)
    result = invoke(str(path), "--token", "t", "--url", "http://127.0.0.1:9")
    assert result.exit_code == 1
    assert message in result.stderr


def test_bad_url_is_refused(zip_path):
    result = invoke(str(zip_path), "--token", "t", "--url", "ftp://example.com")
    assert result.exit_code == 1
    assert "not an http(s) URL" in result.stderr


def test_multipart_body_is_what_the_server_parses(tmp_path):
    data = os.urandom(300_000)
    path = tmp_path / "a.zip"
    path.write_bytes(data)
    body = client.MultipartBody(path, 'we"ird\nname.zip', {"try": "1"})
    chunks = list(body.chunks(size=4096))
    assert len(chunks) > 70  # streamed in pieces, not one blob
    assert sum(map(len, chunks)) == body.length
    form = UploadForm(body.content_type, tmp_path / "out.zip")
    for chunk in chunks:
        form.feed(chunk)
    form.close()
    assert form.file_field == "we%22ird%0Aname.zip"
    assert form.fields == {"try": "1"}
    assert (tmp_path / "out.zip").read_bytes() == data


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("tty", [False, True])
def test_progress(tty):
    stream = Terminal() if tty else io.StringIO()
    progress = client.Progress(1000, stream)
    for _ in range(100):
        progress.update(10)
    text = stream.getvalue()
    if tty:
        assert text.startswith("\r[") and text.endswith("] 1000 B / 1000 B 100%\n")
        assert "#" * client.Progress.WIDTH in text
    else:
        lines = text.splitlines()
        assert lines == [f"sent {p}% ({p * 10} / 1000 bytes)" for p in range(10, 101, 10)]
