"""One behaviour suite, run against each symbol store backend (docs/embedded.md, "Symbol
storage"): an S3 bucket on the embedded emulator, and a ``file://`` directory. Everything goes
through HTTP and the store interface, never a backend's own client, so both answer the same
questions the same way.

Each backend gets one runtime and one worker for the whole module (they are the slow part).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from symbolon.symbolication.parse import ParsePool
from symbolon.symbols.expiry import expire_try_symbols
from tests.backends import (  # noqa: F401 - the fixtures, for this module's tests
    TRY_UPLOAD,
    backend,
    backend_settings,
    follow,
    io_loop,
    md5,
    new_bucket,
    own,
    planned,
    runtime,
    settings,
    tokens,
    upload_zip,
    v2_call,
    v2_put,
    worker,
)
from tests.conftest import served
from tests.downloads import get
from tests.symbolication_support import sym, with_debug_id
from tests.uploads import debug_id, sym_text

# -- upload v1 and download -----------------------------------------------------------------------


@pytest.mark.gen_test(timeout=90)
async def test_a_zip_upload_stores_files_that_download_byte_identical(
    http_client, base_url, runtime, worker, tokens
):
    ident = debug_id()
    upper = ident.upper()
    content, binary = sym_text(upper), bytes(range(256)) * 40
    members = {f"xul.pdb/{ident}/xul.sym": content, f"xul.pdb/{ident}/xul.pd_": binary}
    upload = await upload_zip(http_client, base_url, tokens["upload"], members)
    assert upload["skipped_keys"] == []

    info = await own(runtime).head(f"v1/xul.pdb/{upper}/xul.sym")
    assert info is not None and info.content_encoding == "gzip"
    assert info.metadata["original_md5_hash"] == md5(content)

    redirect = await get(http_client, base_url, f"/xul.pdb/{upper}/xul.sym")
    assert redirect.code == 302
    sym_file = await follow(base_url, f"/xul.pdb/{upper}/xul.sym")
    assert sym_file.code == 200
    assert sym_file.headers["Content-Encoding"] == "gzip"  # as stored
    assert md5(sym_file.body) == info.etag and gzip.decompress(sym_file.body) == content

    raw = await follow(base_url, f"/xul.pdb/{upper}/xul.pd_")
    assert raw.code == 200 and raw.body == binary
    assert "Content-Encoding" not in raw.headers

    again = await upload_zip(http_client, base_url, tokens["upload"], members)
    assert sorted(again["skipped_keys"]) == [
        f"v1/xul.pdb/{upper}/xul.pd_",
        f"v1/xul.pdb/{upper}/xul.sym",
    ]
    same = await own(runtime).head(f"v1/xul.pdb/{upper}/xul.sym")
    assert same is not None and same.etag == info.etag


# -- upload v2 ------------------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=90)
async def test_upload_v2_puts_to_the_returned_urls_and_a_tampered_put_fails_verification(
    http_client, base_url, runtime, worker, tokens
):
    ident = debug_id().upper()
    content, binary = sym_text(ident, "v2"), b"\x00pdb" * 300
    files = [planned(f"v2.pdb/{ident}/v2.sym", content), planned(f"v2.pdb/{ident}/v2.pd_", binary)]
    plan = await v2_call(http_client, base_url, "/upload/v2/", tokens["upload"], {"files": files})
    assert plan.code == 201, plan.body
    body = json.loads(plan.body)
    actions = [f["action"] for f in body["files"]]
    assert [a["type"] for a in actions] == ["upload", "upload"]
    assert all(a["url"].startswith("http") for a in actions)  # absolute, whichever backend
    assert await v2_put(actions[0], content) == 200
    assert await v2_put(actions[1], binary) == 200
    done = await v2_call(http_client, base_url, body["complete_url"], tokens["upload"], {})
    assert done.code == 201, done.body
    sym_file = await follow(base_url, f"/v2.pdb/{ident}/v2.sym")
    assert sym_file.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(sym_file.body) == content
    assert (await follow(base_url, f"/v2.pdb/{ident}/v2.pd_")).body == binary

    tampered = debug_id().upper()
    declared = sym_text(tampered, "bad")
    plan = await v2_call(
        http_client,
        base_url,
        "/upload/v2/",
        tokens["upload"],
        {"files": [planned(f"bad.pdb/{tampered}/bad.sym", declared)]},
    )
    body = json.loads(plan.body)
    other = declared.replace(b"bad.dll", b"xyz.dll")  # same size, other bytes
    assert len(other) == len(declared) and other != declared
    assert await v2_put(body["files"][0]["action"], other) == 200
    done = await v2_call(http_client, base_url, body["complete_url"], tokens["upload"], {})
    assert done.code == 400
    assert "does not match its declared size and MD5" in json.loads(done.body)["error"]
    assert await own(runtime).head(f"v1/bad.pdb/{tampered}/bad.sym") is None
    assert (await get(http_client, base_url, f"/bad.pdb/{tampered}/bad.sym")).code == 404


# -- existence checks and their cache -------------------------------------------------------------


@pytest.mark.gen_test(timeout=90)
async def test_existence_checks_their_cache_and_its_invalidation(
    http_client, base_url, runtime, worker, tokens
):
    ident = debug_id().upper()
    path = f"/e.pdb/{ident}/e.sym"
    assert (await get(http_client, base_url, path)).code == 404
    assert (await get(http_client, base_url, path, method="HEAD")).code == 404

    # Written behind the server's back: the cached miss stands until a refresh.
    await own(runtime).put_bytes(f"v1{path}", b"MODULE behind")
    assert (await get(http_client, base_url, path)).code == 404
    assert (await get(http_client, base_url, f"{path}?_refresh")).code == 302
    assert (await get(http_client, base_url, path)).code == 302
    head = await get(http_client, base_url, path, method="HEAD")
    assert head.code == 200 and "Location" not in head.headers

    # An upload forgets the cached answer at once.
    uploaded = debug_id().upper()
    path = f"/u.pdb/{uploaded}/u.sym"
    assert (await get(http_client, base_url, path)).code == 404
    await upload_zip(http_client, base_url, tokens["upload"], {path[1:]: sym_text(uploaded, "u")})
    assert (await get(http_client, base_url, path)).code == 302

    # And a deletion behind its back is seen after a refresh.
    await own(runtime).delete([f"v1{path}"])
    assert (await get(http_client, base_url, f"{path}?_refresh")).code == 404


# -- several locations of both kinds ---------------------------------------------------------------


@pytest.mark.gen_test(timeout=90)
async def test_lookups_across_a_directory_and_a_bucket_take_the_first_that_has_the_file(
    backend, backend_settings
):
    """This backend's location first, then one of the other kind."""
    urls = (backend.url, backend.other)
    mixed = backend_settings.replace(symbol_urls=urls, upload_default_url=backend.url)
    server = served(mixed)
    async with server as (client, base):
        runtime = server.runtime
        await runtime.stores.ensure(runtime.storage)
        first, second = (runtime.stores.at(s) for s in runtime.storage.sources)
        only_first, only_second, both = (debug_id().upper() for _ in range(3))
        await first.put_bytes(f"v1/m.pdb/{only_first}/m.sym", b"first")
        await second.put_bytes(f"v1/m.pdb/{only_second}/m.sym", b"second")
        await first.put_bytes(f"v1/m.pdb/{both}/m.sym", b"first")
        await second.put_bytes(f"v1/m.pdb/{both}/m.sym", b"second")
        expected = {only_first: b"first", only_second: b"second", both: b"first"}
        for ident, body in expected.items():
            response = await follow(base, f"/m.pdb/{ident}/m.sym")
            assert (response.code, response.body) == (200, body), ident
        missing = await get(client, base, f"/m.pdb/{debug_id().upper()}/m.sym")
        assert missing.code == 404


# -- try symbols ----------------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=90)
async def test_try_symbols_go_to_the_try_location_and_expire(
    http_client, base_url, runtime, worker, tokens
):
    tried, regular = debug_id().upper(), debug_id().upper()
    upload = await upload_zip(
        http_client, base_url, tokens["try"], {f"t.pdb/{tried}/t.sym": sym_text(tried, "t")}
    )
    assert upload["try_symbols"] is True
    await upload_zip(
        http_client, base_url, tokens["upload"], {f"r.pdb/{regular}/r.sym": sym_text(regular, "r")}
    )
    try_store = runtime.stores.at(runtime.storage.upload_try)
    tried_key = try_store.source.object_key(f"t.pdb/{tried}/t.sym")
    assert try_store.source.url != runtime.storage.upload_default.url
    assert await try_store.head(tried_key) is not None
    assert await own(runtime).head(f"v1/t.pdb/{tried}/t.sym") is None
    assert (await get(http_client, base_url, f"/t.pdb/{tried}/t.sym")).code == 404
    found = await follow(base_url, f"/try/t.pdb/{tried}/t.sym")
    assert found.code == 200 and gzip.decompress(found.body) == sym_text(tried, "t")

    # Objects written now are old when looked at from 30 days on.
    done = await expire_try_symbols(runtime, days=28, now=datetime.now(UTC) + timedelta(days=30))
    assert done.objects >= 1 and done.uploads >= 1
    assert await try_store.head(tried_key) is None
    assert [i async for i in try_store.list(tried_key)] == []
    assert (await get(http_client, base_url, f"/try/t.pdb/{tried}/t.sym")).code == 404
    assert await own(runtime).head(f"v1/r.pdb/{regular}/r.sym") is not None  # never expire
    assert (await get(http_client, base_url, f"/r.pdb/{regular}/r.sym")).code == 302


# -- symbolication --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def parse_pool() -> Iterator[ParsePool]:
    pool = ParsePool(workers=1, memory_budget=4 * 1024**3)
    yield pool
    pool.close()


@pytest.mark.gen_test(timeout=90)
async def test_symbolication_reads_uploaded_symbols_from_the_store(
    http_client, base_url, worker, tokens, symbolication
):
    ident = debug_id().upper()
    content = with_debug_id(sym("examples/libdemo.so.sym"), ident)
    await upload_zip(
        http_client, base_url, tokens["upload"], {f"libdemo.so/{ident}/libdemo.so.sym": content}
    )
    request = {"memoryMap": [["libdemo.so", ident]], "stacks": [[[0, 4104]]]}
    response = await http_client.fetch(
        f"{base_url}/symbolicate/v5", method="POST", body=json.dumps(request), raise_error=False
    )
    assert response.code == 200, response.body
    result = json.loads(response.body)["results"][0]
    assert result["found_modules"] == {f"libdemo.so/{ident}": True}
    assert result["stacks"][0][0]["function"] == "process_request"


# -- health ---------------------------------------------------------------------------------------


@pytest.mark.gen_test(timeout=120)
async def test_the_heartbeat_names_a_missing_location(backend, backend_settings):
    urls = (backend.url, backend.missing)
    async with served(backend_settings.replace(symbol_urls=urls)) as (client, base):
        response = await client.fetch(f"{base}/__heartbeat__", raise_error=False)
    body = json.loads(response.body)
    assert response.code == 500
    assert body["checks"]["check_storage_urls"] == "error"
    # One message, naming the missing location (its code says bucket or other).
    [message] = body["details"]["check_storage_urls"]["messages"].values()
    expected = {"s3": "because bucket not found", "directory": "does not exist"}[backend.kind]
    assert backend.missing.split("//", 1)[1] in message and expected in message
