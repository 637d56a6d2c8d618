"""Symbol download (docs/download.md) against real S3 (moto), Redis and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
import uuid

import pytest
import tornado.httpclient

from symbolon.runtime import Runtime
from tests.conftest import s3_client, s3_endpoint, served, wait_until
from tests.downloads import PROXY_HEADERS, behind_a_proxy, get
from tests.uploads import token_for

SYMBOL = b"MODULE windows x86_64 0123 xul.pdb\n"


def new_id() -> str:
    return uuid.uuid4().hex.upper() + "1"  # 33 hex characters, like a real debug id


@pytest.fixture(scope="module")
def buckets(live_settings):
    """Three sources: public, private (also the upload default, so try lives there), private."""
    endpoint = s3_endpoint(live_settings)
    client = s3_client(endpoint)
    for name in ("dl-public", "dl-private", "dl-third"):
        client.create_bucket(Bucket=name)
    # What makes a bucket public: anyone may read its objects, without credentials.
    client.put_bucket_policy(
        Bucket="dl-public",
        Policy=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": "*",
                        "Action": "s3:GetObject",
                        "Resource": "arn:aws:s3:::dl-public/*",
                    }
                ],
            }
        ),
    )
    return endpoint, client


@pytest.fixture
def settings(live_settings, buckets):
    endpoint, _ = buckets
    urls = (
        f"{endpoint}/dl-public?access=public",
        f"{endpoint}/dl-private",
        f"{endpoint}/dl-third",
    )
    return live_settings.replace(symbol_urls=urls, upload_default_url=urls[1])


def put(buckets, bucket: str, key: str, body: bytes = SYMBOL, prefix: str = "v1") -> None:
    # moto answers anonymous HEADs by object ACL only (real S3 also honours the bucket policy).
    acl = {"ACL": "public-read"} if bucket == "dl-public" else {}
    buckets[1].put_object(Bucket=bucket, Key=f"{prefix}/{key}", Body=body, **acl)


def delete(buckets, bucket: str, key: str, prefix: str = "v1") -> None:
    buckets[1].delete_object(Bucket=bucket, Key=f"{prefix}/{key}")


def assert_cors(response) -> None:
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert response.headers["Access-Control-Allow-Methods"] == "GET"
    assert "x-requested-with" in response.headers["Access-Control-Allow-Headers"]


# -- redirects ------------------------------------------------------------------------------


@pytest.mark.gen_test
async def test_private_source_redirects_to_a_working_presigned_url(http_client, base_url, buckets):
    ident = new_id()
    put(buckets, "dl-private", f"xul.pdb/{ident}/xul.sym")
    response = await get(http_client, base_url, f"/xul.pdb/{ident}/xul.sym")
    assert response.code == 302
    assert response.body == b""
    assert_cors(response)
    location = response.headers["Location"]
    parts = urllib.parse.urlsplit(location)
    assert parts.path == f"/dl-private/v1/xul.pdb/{ident}/xul.sym"  # path-style, custom endpoint
    query = urllib.parse.parse_qs(parts.query)
    assert query["X-Amz-Expires"] == ["3600"]
    assert "X-Amz-Signature" in query
    fetched = await tornado.httpclient.AsyncHTTPClient().fetch(location)
    assert fetched.body == SYMBOL


@pytest.mark.gen_test
async def test_public_source_redirects_to_the_plain_object_url(http_client, base_url, buckets):
    ident = new_id()
    put(buckets, "dl-public", f"xul.pdb/{ident}/xul.sym")
    response = await get(http_client, base_url, f"/xul.pdb/{ident}/xul.sym")
    assert response.code == 302
    assert response.headers["Location"] == f"{buckets[0]}/dl-public/v1/xul.pdb/{ident}/xul.sym"


@pytest.mark.gen_test
async def test_public_url_is_percent_encoded(http_client, base_url, buckets):
    ident = new_id()
    put(buckets, "dl-public", f"my lib+1.so/{ident}/my lib+1.so.sym")
    path = f"/{urllib.parse.quote('my lib+1.so')}/{ident}/{urllib.parse.quote('my lib+1.so.sym')}"
    response = await get(http_client, base_url, path)
    assert response.code == 302
    assert response.headers["Location"].endswith(f"/v1/my%20lib%2B1.so/{ident}/my%20lib%2B1.so.sym")


@pytest.mark.gen_test
async def test_a_path_a_store_answers_is_the_redirect_as_it_is(runtime, buckets, monkeypatch):
    """A store may answer with a path on this server (a directory does): the redirect is that
    relative path, whatever Host the request came with, directly or through a proxy."""
    ident = new_id()
    put(buckets, "dl-private", f"xul.pdb/{ident}/xul.sym")
    store = runtime.stores.at(runtime.storage.sources[1])

    async def on_this_server(key: str, expires: int) -> str:
        return f"/storage/place/{urllib.parse.quote(key)}?expires={expires}"

    monkeypatch.setattr(store, "download_url", on_this_server)
    client = tornado.httpclient.AsyncHTTPClient()
    path = f"/xul.pdb/{ident}/xul.sym"
    with behind_a_proxy(runtime) as base:
        for headers in (PROXY_HEADERS, {"Host": "evil.example"}, {}):
            response = await get(client, base, path, headers=headers)
            assert response.code == 302
            assert response.headers["Location"] == f"/storage/place/v1{path}?expires=3600"


@pytest.mark.gen_test
async def test_head_answers_200_without_a_location(http_client, base_url, buckets):
    ident = new_id()
    put(buckets, "dl-private", f"xul.pdb/{ident}/xul.sym")
    response = await get(http_client, base_url, f"/xul.pdb/{ident}/xul.sym", method="HEAD")
    assert response.code == 200
    assert "Location" not in response.headers
    assert_cors(response)
    missing = await get(http_client, base_url, f"/xul.pdb/{new_id()}/xul.sym", method="HEAD")
    assert missing.code == 404


@pytest.mark.gen_test
async def test_lower_case_debug_ids_are_upper_cased(http_client, base_url, buckets):
    ident = new_id()
    put(buckets, "dl-private", f"xul.pdb/{ident}/xul.sym")
    response = await get(http_client, base_url, f"/xul.pdb/{ident.lower()}/xul.sym")
    assert response.code == 302


@pytest.mark.gen_test
async def test_first_source_in_configured_order_wins(http_client, base_url, buckets):
    both, third_only = new_id(), new_id()
    put(buckets, "dl-third", f"a.pdb/{both}/a.sym")
    put(buckets, "dl-public", f"a.pdb/{both}/a.sym")
    put(buckets, "dl-third", f"a.pdb/{third_only}/a.sym")
    first = await get(http_client, base_url, f"/a.pdb/{both}/a.sym")
    assert first.headers["Location"].startswith(f"{buckets[0]}/dl-public/")
    last = await get(http_client, base_url, f"/a.pdb/{third_only}/a.sym")
    assert urllib.parse.urlsplit(last.headers["Location"]).path.startswith("/dl-third/")


@pytest.mark.gen_test
async def test_sources_are_asked_concurrently(runtime, buckets):
    """A miss through three sources takes about one round trip, not three."""
    slow = 0.3

    async def delayed(source, key):
        await asyncio.sleep(slow)
        return False

    runtime.lookup._exists = delayed
    started = time.monotonic()
    assert await runtime.lookup.find(f"x.pdb/{new_id()}/x.sym", include_try=True) is None
    assert time.monotonic() - started < 2 * slow


@pytest.mark.gen_test
async def test_try_symbols_only_when_asked_and_after_regular_ones(http_client, base_url, buckets):
    ident, shadowed = new_id(), new_id()
    put(buckets, "dl-private", f"t.pdb/{ident}/t.sym", prefix="try/v1")
    put(buckets, "dl-private", f"t.pdb/{shadowed}/t.sym", prefix="try/v1")
    put(buckets, "dl-third", f"t.pdb/{shadowed}/t.sym")
    path = f"/t.pdb/{ident}/t.sym"
    assert (await get(http_client, base_url, path)).code == 404
    for variant in (f"/try{path}", f"{path}?try", f"{path}?try=0", f"{path}?try=1"):
        response = await get(http_client, base_url, variant)
        assert response.code == 302, variant
        assert f"/dl-private/try/v1{path}" in response.headers["Location"]
    regular_wins = await get(http_client, base_url, f"/try/t.pdb/{shadowed}/t.sym")
    assert "/dl-third/v1/" in regular_wins.headers["Location"]


@pytest.mark.gen_test
async def test_presigned_validity_is_configurable(settings, buckets):
    runtime = await Runtime.create(settings.replace(download_presigned_url_expiry_seconds=120))
    try:
        source = runtime.storage.sources[1]
        url = await runtime.stores.at(source).download_url(source.object_key("a/B/c.sym"), 120)
    finally:
        await runtime.close()
    assert "X-Amz-Expires=120" in url


# -- native files ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "debug_file, symbol_file, ident",
    [
        ("foo.pdb", "foo.pdb", new_id()),
        ("foo.dll", "foo.dll", "5F3C2A1B" + "1e000"),  # TIMESTAMP + SIZEOFIMAGE
        ("libfoo.so", "libfoo.so", new_id()),
        ("libfoo.so", "libfoo.so.debug", new_id()),
        ("Foo", "Foo.debug", new_id()),  # a dSYM's DWARF file
    ],
)
@pytest.mark.gen_test
async def test_native_files_are_found_whatever_their_ending(
    http_client, base_url, buckets, debug_file, symbol_file, ident
):
    body = b"\x7fELF native " + ident.encode()
    put(buckets, "dl-private", f"{debug_file}/{ident.upper()}/{symbol_file}", body)
    path = f"/{debug_file}/{ident}/{symbol_file}"
    response = await get(http_client, base_url, path)
    assert response.code == 302, response.body
    assert_cors(response)
    fetched = await tornado.httpclient.AsyncHTTPClient().fetch(response.headers["Location"])
    assert fetched.body == body
    assert (await get(http_client, base_url, path, method="HEAD")).code == 200
    missing = await get(http_client, base_url, f"/{debug_file}/{new_id()}/{symbol_file}")
    assert missing.code == 404 and missing.body == b"Symbol Not Found"


@pytest.mark.gen_test
async def test_microsoft_compressed_and_pointer_probes_are_404_beside_a_stored_pdb(
    http_client, base_url, buckets
):
    """symsrv asks for foo.pd_ and file.ptr before foo.pdb: both must be a plain 404."""
    ident = new_id()
    put(buckets, "dl-private", f"foo.pdb/{ident}/foo.pdb", b"Microsoft C/C++ MSF 7.00")
    for probe in ("foo.pd_", "file.ptr"):
        response = await get(http_client, base_url, f"/foo.pdb/{ident}/{probe}")
        assert response.code == 404, probe
    assert (await get(http_client, base_url, f"/foo.pdb/{ident}/foo.pdb")).code == 302


# -- fast answers ---------------------------------------------------------------------------


@pytest.fixture
def dead_storage_settings(settings):
    """Sources nobody answers at: any storage access would fail."""
    url = "http://127.0.0.1:9/nowhere"
    return settings.replace(symbol_urls=(url,), upload_default_url=url)


@pytest.mark.parametrize(
    "path",
    [
        "/xul.pdb/0123456789ABCDEF0123456789ABCDEF0/file.ptr",
        "/xul.pdb/000000000000000000000000000000000/xul.sym",
        "/xul.pdb/0123456789ABCDEF0123456789ABCDEF0/xul.exe",
        "/xul.pdb/0123456789ABCDEF0123456789ABCDEF0/xul.SYM",
        # Native names are looked up only as the debug file itself or its ".debug".
        "/xul.pdb/0123456789ABCDEF0123456789ABCDEF0/xul.dll",
        "/libxul.so/0123456789ABCDEF0123456789ABCDEF0/libxul.so.dbg",
        "/libxul.so/0123456789ABCDEF0123456789ABCDEF0/libxul.debug",
    ],
)
@pytest.mark.gen_test
async def test_ignored_requests_never_touch_storage(dead_storage_settings, path):
    async with served(dead_storage_settings) as (client, base):
        response = await get(client, base, path, headers={"Debug": "true"})
    assert response.code == 404
    assert response.body == b"Symbol Not Found (and ignored)"
    assert response.headers["Debug-Time"] == "0"
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert_cors(response)


@pytest.mark.parametrize("name", ["xul^.pdb", "xul.pdb%22", "x%C3%BCl.pdb", "a%7Cb.pdb", "a%5Cb"])
@pytest.mark.gen_test
async def test_invalid_characters_are_400_without_storage_access(dead_storage_settings, name):
    async with served(dead_storage_settings) as (client, base):
        response = await get(
            client,
            base,
            f"/{name}/0123456789ABCDEF0123456789ABCDEF0/xul.sym",
            headers={"Debug": "1"},
        )
    assert response.code == 400
    assert (
        response.body == b"Symbol name lookup contains invalid characters and will never be found."
    )
    assert response.headers["Debug-Time"] == "0"


@pytest.mark.gen_test
async def test_tilde_and_non_latin_names_are_looked_up(http_client, base_url, buckets):
    ident = new_id()
    put(buckets, "dl-private", f"libgallium-24.2.8-1~bpo12+rpt1.so/{ident}/汉.sym")
    name = urllib.parse.quote("libgallium-24.2.8-1~bpo12+rpt1.so")
    response = await get(http_client, base_url, f"/{name}/{ident}/{urllib.parse.quote('汉.sym')}")
    assert response.code == 302


@pytest.mark.gen_test(timeout=30)
async def test_unreachable_storage_is_a_503_not_a_false_404(dead_storage_settings):
    async with served(dead_storage_settings) as (client, base):
        response = await get(client, base, f"/xul.pdb/{new_id()}/xul.sym")
    assert response.code == 503
    assert int(response.headers["Retry-After"]) > 0


@pytest.mark.gen_test
async def test_debug_time_only_when_asked(http_client, base_url, buckets):
    ident = new_id()
    put(buckets, "dl-private", f"d.pdb/{ident}/d.sym")
    asked = await get(http_client, base_url, f"/d.pdb/{ident}/d.sym", headers={"Debug": "YES"})
    assert float(asked.headers["Debug-Time"]) >= 0
    missing = await get(http_client, base_url, f"/d.pdb/{new_id()}/d.sym", headers={"Debug": "1"})
    assert float(missing.headers["Debug-Time"]) > 0
    plain = await get(http_client, base_url, f"/d.pdb/{ident}/d.sym")
    assert "Debug-Time" not in plain.headers


@pytest.mark.gen_test
async def test_not_hex_debug_id_is_the_generic_json_404(http_client, base_url):
    response = await get(http_client, base_url, "/xul.pdb/NOTHEX/xul.sym")
    assert response.code == 404
    assert response.body == b'{"error": "Not Found", "path": "/xul.pdb/NOTHEX/xul.sym"}'


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS"])
@pytest.mark.gen_test
async def test_other_methods_are_405_without_cors(http_client, base_url, method):
    response = await get(
        http_client,
        base_url,
        "/xul.pdb/ABC/xul.sym",
        method=method,
        body=b"" if method != "DELETE" else None,
    )
    assert response.code == 405
    assert response.headers["Allow"] == "GET, HEAD"
    assert "Access-Control-Allow-Origin" not in response.headers


# -- the existence cache ----------------------------------------------------------------------


@pytest.mark.gen_test
async def test_answers_are_cached_and_refresh_bypasses_the_cache(http_client, base_url, buckets):
    ident = new_id()
    path = f"/c.pdb/{ident}/c.sym"
    assert (await get(http_client, base_url, path)).code == 404
    put(buckets, "dl-third", f"c.pdb/{ident}/c.sym")  # behind Symbolon's back: no invalidation
    assert (await get(http_client, base_url, path)).code == 404  # the cached answer
    assert (await get(http_client, base_url, f"{path}?_refresh")).code == 302
    assert (await get(http_client, base_url, path)).code == 302  # the refresh was written back
    delete(buckets, "dl-third", f"c.pdb/{ident}/c.sym")
    assert (await get(http_client, base_url, path)).code == 302
    assert (await get(http_client, base_url, f"{path}?_refresh=1")).code == 404


@pytest.mark.gen_test
async def test_cache_entries_live_in_redis_with_the_configured_ttl(runtime, buckets):
    key = f"r.pdb/{new_id()}/r.sym"
    await runtime.lookup.find(key, include_try=False)
    for cache_key in runtime.lookup.cache_keys_for(key)[:3]:
        assert runtime.storage.hash in cache_key
        assert await runtime.cache.client.get(cache_key) == b"0"
        ttl = await runtime.cache.client.ttl(cache_key)
        assert 0 < ttl <= runtime.settings.symboldownload_exists_ttl_seconds


@pytest.mark.gen_test
async def test_invalidation_makes_an_upload_visible_at_once(
    http_client, base_url, runtime, buckets
):
    ident = new_id()
    key = f"u.pdb/{ident}/u.sym"
    assert (await get(http_client, base_url, f"/{key}")).code == 404
    put(buckets, "dl-third", key)
    await runtime.lookup.invalidate([key])  # what the upload does for each stored file
    assert (await get(http_client, base_url, f"/{key}")).code == 302


@pytest.mark.gen_test(timeout=20)
async def test_invalidation_reaches_other_processes_memos(settings, buckets):
    """Two runtimes stand for two web processes sharing one Redis."""
    one = await Runtime.create(settings)
    two = await Runtime.create(settings)
    try:
        assert await wait_until(lambda: one.lookup.memo.active and two.lookup.memo.active)
        key = f"m.pdb/{new_id()}/m.sym"
        assert await one.lookup.find(key, include_try=False) is None
        assert one.lookup.memo.get(one.lookup.cache_keys_for(key)[2]) == b"0"  # remembered
        put(buckets, "dl-third", key)
        await two.lookup.invalidate([key])
        assert await wait_until(
            lambda: one.lookup.memo.get(one.lookup.cache_keys_for(key)[2]) is None
        )
        found = await one.lookup.find(key, include_try=False)
        assert found is not None and found.source.bucket == "dl-third"
    finally:
        await one.close()
        await two.close()


def test_memo_forgets_everything_when_invalidations_stop():
    from symbolon.storage.lookup import LocalMemo

    memo = LocalMemo(maxsize=2, ttl=60)
    memo.put("a", b"1", memo.generation)
    assert memo.get("a") is None  # not trusted before it is subscribed
    memo.active = True
    memo.put("a", b"1", memo.generation)
    memo.put("b", b"1", memo.generation)
    memo.put("c", b"1", memo.generation)
    assert memo.get("a") is None and memo.get("c") == b"1"  # bounded, oldest out
    stale = memo.generation
    memo.discard(["c"])
    memo.put("d", b"0", stale)  # read before the invalidation: not remembered
    assert memo.get("d") is None
    memo.deactivate()
    assert memo.get("b") is None


@pytest.mark.gen_test(timeout=30)
async def test_downloads_work_while_redis_is_paused(settings, buckets, tmp_path):
    from symbolon.server.embedded import EmbeddedRedis

    own = EmbeddedRedis(tmp_path, "paused", {"save": ""})
    url = own.start()
    try:
        async with served(settings.replace(redis_url=url)) as (client, base):
            ident = new_id()
            put(buckets, "dl-private", f"p.pdb/{ident}/p.sym")
            admin = tornado_redis(url, settings)
            await admin.execute_command("CLIENT", "PAUSE", 10_000, "ALL")
            await admin.aclose()
            found = await get(client, base, f"/p.pdb/{ident}/p.sym", request_timeout=20)
            assert found.code == 302
            missing = await get(client, base, f"/p.pdb/{new_id()}/p.sym", request_timeout=20)
            assert missing.code == 404
    finally:
        own.stop()


def tornado_redis(url, settings):
    from symbolon.redis_cache import redis_client

    return redis_client(url, settings)


@pytest.mark.gen_test
async def test_metrics_for_lookups_cache_and_redirects(http_client, base_url, buckets, metricsmock):
    ident = new_id()
    put(buckets, "dl-private", f"mm.pdb/{ident}/mm.sym")
    await get(http_client, base_url, f"/mm.pdb/{ident}/mm.sym")  # storage lookup, then cached
    metricsmock.assert_timing("symbolon.download_symbol")
    metricsmock.assert_timing("symbolon.symboldownloader_exists")
    metricsmock.assert_incr("symbolon.symboldownloader_exists_cache_miss")
    metricsmock.clear_records()
    await get(http_client, base_url, f"/mm.pdb/{ident}/mm.sym?code_file=x")
    assert not metricsmock.filter_records("timing", "symbolon.symboldownloader_exists")
    metricsmock.assert_timing("symbolon.download_symbol")


@pytest.mark.gen_test
async def test_concurrent_lookups_of_one_key_share_one_storage_trip(runtime, buckets):
    calls = []
    real = runtime.lookup._exists

    async def counting(source, key):
        calls.append(source.bucket)
        await asyncio.sleep(0.05)
        return await real(source, key)

    runtime.lookup._exists = counting
    key = f"burst.pdb/{new_id()}/burst.sym"
    results = await asyncio.gather(
        *(runtime.lookup.find(key, include_try=False) for _ in range(20))
    )
    assert results == [None] * 20
    assert sorted(calls) == ["dl-private", "dl-public", "dl-third"]  # once per source, not 20 times


@pytest.mark.gen_test(timeout=30)
async def test_a_bad_auth_token_turns_a_download_into_a_403(
    http_client, base_url, runtime, buckets
):
    ident = new_id()
    put(buckets, "dl-private", f"tok.pdb/{ident}/tok.sym")
    bad = await get(
        http_client, base_url, f"/tok.pdb/{ident}/tok.sym", headers={"Auth-Token": uuid.uuid4().hex}
    )
    assert bad.code == 403
    assert json.loads(bad.body) == {"error": "API Token not matched"}
    token, _ = await token_for(runtime, ["upload.view_all_uploads"])
    good = await get(
        http_client, base_url, f"/tok.pdb/{ident}/tok.sym", headers={"Auth-Token": f"{token}-label"}
    )
    assert good.code == 302
    assert good.headers["Vary"] == "Auth-Token"
    health = await get(
        http_client, base_url, "/__lbheartbeat__", headers={"Auth-Token": "nonsense"}
    )
    assert health.code == 200


@pytest.mark.gen_test
async def test_objects_stored_under_a_lower_case_debug_id_are_still_found(
    http_client, base_url, buckets
):
    """Older uploads kept the archive's spelling: a bucket may hold lower-case id directories."""
    ident, both = new_id(), new_id()
    put(buckets, "dl-private", f"old.pdb/{ident.lower()}/old.sym")
    put(buckets, "dl-public", f"old.pdb/{ident.lower()}/old.sym")  # a later source
    for spelling in (ident, ident.lower()):
        response = await get(http_client, base_url, f"/old.pdb/{spelling}/old.sym")
        assert response.code == 302
        location = urllib.parse.urlsplit(response.headers["Location"]).path
        # The upper-case spelling is missing everywhere, so the first source with either wins.
        assert location == f"/dl-public/v1/old.pdb/{ident.lower()}/old.sym"
        fetched = await tornado.httpclient.AsyncHTTPClient().fetch(response.headers["Location"])
        assert fetched.body == SYMBOL
    head = await get(http_client, base_url, f"/old.pdb/{ident}/old.sym", method="HEAD")
    assert head.code == 200
    # The upper-case spelling wins wherever it is.
    put(buckets, "dl-third", f"new.pdb/{both}/new.sym")
    put(buckets, "dl-public", f"new.pdb/{both.lower()}/new.sym")
    response = await get(http_client, base_url, f"/new.pdb/{both.lower()}/new.sym")
    assert urllib.parse.urlsplit(response.headers["Location"]).path.startswith("/dl-third/")
    missing = await get(http_client, base_url, f"/old.pdb/{new_id()}/old.sym")
    assert missing.code == 404
