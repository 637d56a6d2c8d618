"""debuginfod's answers for what debuggers never show: objects stored without compression or
broken, storage that does not answer, and the temporary copies a section is cut from."""

from __future__ import annotations

import asyncio
import gzip
import os
import secrets
import socket
import subprocess
import tempfile
import tracemalloc
from pathlib import Path

import pytest

from symbolon.conf import Settings
from symbolon.handlers import debuginfod as debuginfod_handlers
from symbolon.storage.sources import StorageConfig
from symbolon.symbols.debuginfod import SectionGate, _Inflater
from tests.conftest import s3_client, s3_endpoint, served, wait_until
from tests.downloads import get

SOURCE = "int leaf(int n) { return n * 3 + 1; }\n"


@pytest.fixture(scope="module")
def elf(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    """A small ELF object, and its .text section's bytes as objcopy extracts them."""
    root = tmp_path_factory.mktemp("elf")
    (root / "leaf.c").write_text(SOURCE)
    obj, text = root / "leaf.o", root / "text"
    subprocess.run(["gcc", "-g", "-c", "-o", obj, root / "leaf.c"], check=True, timeout=60)
    subprocess.run(
        ["objcopy", "--dump-section", f".text={text}", obj, root / "out.o"], check=True, timeout=60
    )
    return obj.read_bytes(), text.read_bytes()


def put(settings: Settings, key: str, body: bytes, **extra: str) -> None:
    source = StorageConfig.from_settings(settings).sources[0]
    s3_client(s3_endpoint(settings)).put_object(
        Bucket=source.bucket, Key=source.object_key(key), Body=body, **extra
    )


def leftovers() -> list[str]:
    return [n for n in os.listdir(tempfile.gettempdir()) if n.startswith("debuginfod-section-")]


@pytest.mark.gen_test
async def test_a_section_of_an_object_stored_uncompressed(http_client, base_url, settings, elf):
    build_id = secrets.token_hex(20)
    put(settings, f"buildid/{build_id}/debuginfo", elf[0])
    response = await get(http_client, base_url, f"/buildid/{build_id}/section/.text")
    assert response.code == 200
    assert response.body == elf[1]
    assert leftovers() == []


@pytest.mark.gen_test
async def test_a_debuginfo_that_is_no_elf_file_falls_back_to_the_executable(
    http_client, base_url, settings, elf
):
    build_id = secrets.token_hex(20)
    put(
        settings, f"buildid/{build_id}/debuginfo", gzip.compress(b"not ELF"), ContentEncoding="gzip"
    )
    put(settings, f"buildid/{build_id}/executable", gzip.compress(elf[0]), ContentEncoding="gzip")
    response = await get(http_client, base_url, f"/buildid/{build_id}/section/.text")
    assert response.code == 200 and response.body == elf[1]
    missing = await get(http_client, base_url, f"/buildid/{build_id}/section/.nothing")
    assert missing.code == 404
    reason = missing.body.decode()
    assert "its debuginfo is not a readable ELF file (not an ELF file)" in reason, reason
    assert "its executable has no section .nothing" in reason
    assert leftovers() == []


@pytest.mark.gen_test
async def test_a_broken_gzip_body_is_a_404_saying_so(http_client, base_url, settings, elf):
    build_id = secrets.token_hex(20)
    broken = gzip.compress(elf[0])[:-20]
    put(settings, f"buildid/{build_id}/debuginfo", broken, ContentEncoding="gzip")
    response = await get(http_client, base_url, f"/buildid/{build_id}/section/.text")
    assert response.code == 404
    assert "stored gzipped but" in response.body.decode()
    assert leftovers() == []


@pytest.mark.parametrize("tail", ["debuginfo", "executable", "section/.text"])
@pytest.mark.gen_test(timeout=30)
async def test_storage_that_does_not_answer_is_a_503_not_a_false_404(settings, tail):
    url = "http://127.0.0.1:9/nowhere"
    async with served(settings.replace(symbol_urls=(url,), upload_default_url=url)) as (c, base):
        response = await get(c, base, f"/buildid/{secrets.token_hex(20)}/{tail}")
    assert response.code == 503
    assert int(response.headers["Retry-After"]) > 0


@pytest.mark.gen_test
async def test_metrics_for_lookups_sections_and_misses(
    http_client, base_url, settings, elf, metricsmock
):
    build_id = secrets.token_hex(20)
    put(settings, f"buildid/{build_id}/executable", elf[0])
    assert (await get(http_client, base_url, f"/buildid/{build_id}/executable")).code == 302
    metricsmock.assert_timing("symbolon.debuginfod_lookup")
    assert (await get(http_client, base_url, f"/buildid/{build_id}/debuginfo")).code == 404
    metricsmock.assert_incr("symbolon.debuginfod_missing", tags=["artifact:debuginfo"])
    assert (await get(http_client, base_url, f"/buildid/{build_id}/section/.text")).code == 200
    metricsmock.assert_timing("symbolon.debuginfod_section")


@pytest.mark.gen_test
async def test_section_requests_beyond_the_slots_and_the_queue_are_a_503(
    http_client, base_url, settings, elf, runtime
):
    build_id = secrets.token_hex(20)
    put(settings, f"buildid/{build_id}/debuginfo", elf[0])
    runtime.sections = SectionGate(slots=1, waiting=1)
    url = f"/buildid/{build_id}/section/.text"
    async with runtime.sections.slot():  # the one slot is taken
        queued = asyncio.ensure_future(get(http_client, base_url, url))
        assert await wait_until(lambda: runtime.sections.waiting == 1, seconds=30)
        refused = await get(http_client, base_url, url)
        assert refused.code == 503, refused.body
        assert "Too many section requests" in refused.body.decode()
        assert int(refused.headers["Retry-After"]) > 0
        assert not queued.done()
    answered = await queued  # the waiting one is answered once the slot is free
    assert answered.code == 200 and answered.body == elf[1]
    assert runtime.sections.waiting == 0
    assert leftovers() == []


@pytest.mark.gen_test
async def test_a_cancelled_wait_for_a_section_slot_leaves_no_count_behind():
    gate = SectionGate(slots=1, waiting=1)

    async def take() -> None:
        async with gate.slot():
            pass

    async with gate.slot():
        waiter = asyncio.ensure_future(take())
        assert await wait_until(lambda: gate.waiting == 1, seconds=30)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert gate.waiting == 0
    async with gate.slot():  # the slot was released, not lost to the cancelled waiter
        assert gate.waiting == 0


def big_object(root: Path, mib: int) -> bytes:
    """An ELF object with a ``.data`` section of ``mib`` MiB, mostly zeros."""
    (root / "big.c").write_text(f"char blob[{mib} << 20] = {{1}};\n")
    subprocess.run(["gcc", "-c", "-o", root / "big.o", root / "big.c"], check=True, timeout=120)
    return (root / "big.o").read_bytes()


def read_to_end(sock: socket.socket) -> int:
    got = 0
    while data := sock.recv(1 << 16):
        got += len(data)
    return got


@pytest.mark.gen_test(timeout=90)
async def test_a_client_that_does_not_read_is_cut_off_and_frees_its_slot(
    http_client, base_url, settings, elf, runtime, tmp_path, monkeypatch
):
    monkeypatch.setattr(debuginfod_handlers, "FLUSH_SECONDS", 0.5)
    build_id = secrets.token_hex(20)
    put(settings, f"buildid/{build_id}/debuginfo", big_object(tmp_path, 32))
    runtime.sections = SectionGate(slots=1, waiting=0)
    host, port = base_url.split("//")[1].split(":")
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.connect((host, int(port)))
    stalled.settimeout(60)
    try:
        stalled.sendall(
            f"GET /buildid/{build_id}/section/.data HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        )
        assert await wait_until(lambda: leftovers() != [], seconds=60)  # it holds the slot
        # Once the stalled send runs out of time the slot is free again for others.
        answered = False
        for _ in range(600):
            response = await get(http_client, base_url, f"/buildid/{build_id}/section/.bss")
            if response.code != 503:
                answered = True
                break
            await asyncio.sleep(0.05)
        assert answered
        assert await wait_until(lambda: leftovers() == [], seconds=30)
        # The connection was closed before the 32 MiB were sent.
        assert await asyncio.to_thread(read_to_end, stalled) < 32 << 20
    finally:
        stalled.close()


def test_send_time_allows_a_slow_link():
    assert debuginfod_handlers.send_seconds(0) >= 60
    assert debuginfod_handlers.send_seconds(256 << 20) >= 60 + 1024


def test_a_gzip_bomb_inflates_in_bounded_steps(tmp_path):
    body = gzip.compress(bytes(256 << 20), compresslevel=1)
    sink = _Inflater(tmp_path / "out", gzipped=True)
    tracemalloc.start()
    try:
        sink.write(body)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    sink.finish()
    assert (tmp_path / "out").stat().st_size == 256 << 20
    assert peak < 64 << 20, peak
