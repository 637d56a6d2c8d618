"""Upload v2 (docs/upload.md) with presigned PUTs to real S3, and the completion call."""

from __future__ import annotations

import gzip
import hashlib
import json
import urllib.parse
import uuid
import zlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import tornado.httpclient
from botocore.exceptions import ConnectTimeoutError

from symbolon.uploads import records, v2
from tests.conftest import s3_client, s3_endpoint
from tests.downloads import PROXY_HEADERS, behind_a_proxy, get
from tests.s3_faults import lookups_time_out
from tests.uploads import UPLOAD, token_for


@pytest.fixture
def settings(upload_settings):
    """The app of these tests runs with the upload settings (a partner bucket, longer waits)."""
    return upload_settings


def ident() -> str:
    return uuid.uuid4().hex.upper() + "1"


async def call(http_client, base_url, path, token, body=b"{}"):
    return await http_client.fetch(
        base_url + path,
        method="POST",
        body=body,
        headers={"Auth-Token": token, "Content-Type": "application/json"},
        raise_error=False,
        request_timeout=60,
    )


def entry(key: str, content: bytes) -> dict:
    return {"key": key, "size": len(content), "md5_hash": hashlib.md5(content).hexdigest()}


async def put(action: dict, content: bytes) -> int:
    body = gzip.compress(content) if action["content_encoding"] == "gzip" else content
    response = await tornado.httpclient.AsyncHTTPClient().fetch(
        action["url"], method="PUT", body=body, headers=action["headers"], raise_error=False
    )
    return response.code


@pytest.mark.gen_test(timeout=60)
async def test_auth_info(http_client, base_url, runtime):
    token, email = await token_for(runtime, ["upload.upload_try_symbols"])
    response = await call(http_client, base_url, "/upload/auth_info/", token)
    assert response.code == 200
    body = json.loads(response.body)
    assert body["email"] == email and body["try_symbols"] is True
    assert body["upload_api_version"] == 1
    assert isinstance(body["token_expires_at"], int)
    denied = await call(
        http_client,
        base_url,
        "/upload/auth_info/",
        (await token_for(runtime, ["upload.view_all_uploads"]))[0],
    )
    assert denied.code == 403 and json.loads(denied.body) == {"error": "Forbidden"}
    assert (await get(http_client, base_url, "/upload/auth_info/")).code == 405


@pytest.mark.gen_test(timeout=60)
async def test_v2_upload_put_and_complete(http_client, base_url, runtime, worker, upload_settings):
    token, email = await token_for(runtime, UPLOAD)
    debug = ident()
    sym = f"MODULE windows x86_64 {debug} v2.pdb\nINFO CODE_ID 5F2A1B0C7E000 v2.dll\n".encode()
    pdb = b"\x00binary pdb"
    files = [entry(f"v2.pdb/{debug.lower()}/v2.sym", sym), entry(f"v2.pdb/{debug}/v2.pd_", pdb)]
    files += [
        {"key": "nope.sym", "size": 1, "md5_hash": "0" * 32},
        {"key": f"a.pdb/{debug}/a.sym", "size": 1, "md5_hash": "XYZ"},
    ]
    response = await call(
        http_client, base_url, "/upload/v2/", token, json.dumps({"files": files}).encode()
    )
    assert response.code == 201, response.body
    body = json.loads(response.body)
    assert body["upload_protocol"] == "s3-presigned-put"
    assert body["user"] == email and body["try_symbols"] is False
    actions = [f["action"] for f in body["files"]]
    assert [f["key"] for f in body["files"]] == [f["key"] for f in files]  # request order
    assert actions[0]["type"] == "upload" and actions[0]["content_encoding"] == "gzip"
    assert actions[1]["type"] == "upload" and actions[1]["content_encoding"] is None
    assert actions[2] == {"type": "error", "msg": "invalid key"}
    assert actions[3] == {"type": "error", "msg": "invalid MD5 hex digest"}
    assert await put(actions[0], sym) == 200
    assert await put(actions[1], pdb) == 200

    done = await call(http_client, base_url, body["complete_url"], token)
    assert done.code == 201, done.body
    assert json.loads(done.body)["upload"]["completed_at"]
    stored = s3_client(s3_endpoint(upload_settings)).get_object(
        Bucket="symbols", Key=f"v1/v2.pdb/{debug}/v2.sym"
    )
    assert (
        stored["ContentEncoding"] == "gzip"
        and stored["Metadata"]["original_md5_hash"] == files[0]["md5_hash"]
    )
    rows = await runtime.db.fetch(
        "SELECT * FROM file_uploads WHERE upload_id = $1 ORDER BY key", body["id"]
    )
    assert [r["key"] for r in rows] == [f"v1/v2.pdb/{debug}/v2.pd_", f"v1/v2.pdb/{debug}/v2.sym"]
    assert rows[1]["code_file"] == "v2.dll"
    assert (await get(http_client, base_url, f"/v2.pdb/{debug}/v2.sym")).code == 302

    again = await call(
        http_client, base_url, "/upload/v2/", token, json.dumps({"files": files[:2]}).encode()
    )
    assert [f["action"] for f in json.loads(again.body)["files"]] == [
        {"type": "skip"},
        {"type": "skip"},
    ]


@pytest.mark.gen_test(timeout=60)
async def test_completion_refuses_what_does_not_match(
    http_client, base_url, runtime, worker, upload_settings
):
    token, _ = await token_for(runtime, UPLOAD)
    debug = ident()
    declared = b"MODULE what the client said\n"
    files = [entry(f"bad.pdb/{debug}/bad.sym", declared), entry(f"gone.pdb/{debug}/gone.sym", b"x")]
    body = json.loads(
        (
            await call(
                http_client, base_url, "/upload/v2/", token, json.dumps({"files": files}).encode()
            )
        ).body
    )
    assert await put(body["files"][0]["action"], b"MODULE something else!!\n") == 200
    done = await call(http_client, base_url, body["complete_url"], token)
    assert done.code == 400
    error = json.loads(done.body)["error"]
    assert "bad.pdb" in error and "does not match its declared size and MD5" in error
    assert "gone.pdb" in error and "was not uploaded" in error
    listed = s3_client(s3_endpoint(upload_settings)).list_objects_v2(
        Bucket="symbols", Prefix=f"v1/bad.pdb/{debug}/"
    )
    assert listed.get("KeyCount", 0) == 0  # the mismatching object was removed


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "malformed JSON request body"),
        (b'{"files": [{"key": "a/0A/a.sym"}]}', "malformed JSON request body"),
        (
            json.dumps(
                {"files": [{"key": "a/0A/a.sym", "size": 1, "md5_hash": "0" * 32}] * 1025}
            ).encode(),
            "too many files",
        ),
    ],
)
@pytest.mark.gen_test(timeout=60)
async def test_malformed_v2_requests(http_client, base_url, runtime, body, message):
    token, _ = await token_for(runtime, UPLOAD)
    response = await call(http_client, base_url, "/upload/v2/", token, body)
    assert response.code == 400
    assert json.loads(response.body) == {"error": message}


@pytest.mark.gen_test(timeout=60)
async def test_only_the_owner_completes(http_client, base_url, runtime):
    owner, _ = await token_for(runtime, UPLOAD)
    other, _ = await token_for(runtime, UPLOAD)
    body = json.loads(
        (await call(http_client, base_url, "/upload/v2/", owner, b'{"files": []}')).body
    )
    response = await call(http_client, base_url, body["complete_url"], other)
    assert response.code == 404


def gzip_bomb(inflated: int) -> bytes:
    """A gzip stream of ``inflated`` zero bytes, built without holding them."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    zeros = bytes(1 << 20)
    out = [packer.compress(zeros) for _ in range(inflated >> 20)]
    return b"".join(out) + packer.flush()


async def put_raw(action: dict, body: bytes) -> int:
    response = await tornado.httpclient.AsyncHTTPClient().fetch(
        action["url"], method="PUT", body=body, headers=action["headers"], raise_error=False
    )
    return response.code


async def plan_files(http_client, base_url, token, files) -> dict:
    response = await call(
        http_client, base_url, "/upload/v2/", token, json.dumps({"files": files}).encode()
    )
    assert response.code == 201, response.body
    return json.loads(response.body)


class Chunks:
    """A storage body that hands out ``data`` in reads, counting what was asked for."""

    def __init__(self, data: bytes):
        self.data = memoryview(data)
        self.position = 0

    async def read(self, size: int) -> bytes:
        piece = bytes(self.data[self.position : self.position + size])
        self.position += len(piece)
        return piece


@pytest.mark.gen_test(timeout=60)
async def test_verification_stops_inflating_a_bomb_past_the_declared_size():
    bomb = gzip_bomb(256 << 20)
    declared = 1000
    stream = Chunks(bomb)
    read = await v2.read_verified(stream, declared, gzipped=True, chunk=64 * 1024)
    assert declared < read.size <= declared + 64 * 1024
    assert read.stored == stream.position <= 64 * 1024  # one read was enough to know
    assert len(read.head) <= v2.HEADER_BYTES

    exact = b"MODULE fits\n" * 1000
    good = await v2.read_verified(Chunks(gzip.compress(exact)), len(exact), True, chunk=4096)
    assert good.whole and good.size == len(exact)
    assert good.md5.hexdigest() == hashlib.md5(exact).hexdigest()
    cut = await v2.read_verified(Chunks(gzip.compress(exact)[:-20]), len(exact), True, 4096)
    assert not cut.whole
    garbage = await v2.read_verified(Chunks(b"not gzip at all"), 15, True)
    assert not garbage.whole
    for chunk in (4096, 1 << 20):  # the junk in the same read as the stream's end, or after it
        padded = Chunks(gzip.compress(exact) + b"\0" * 100_000)
        assert not (await v2.read_verified(padded, len(exact), True, chunk)).whole


async def pieces(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


@pytest.mark.gen_test
async def test_a_stored_objects_chunks_are_read_no_more_than_asked_at_a_time():
    reader = v2.ChunkReader(pieces(b"abcde", b"", b"fgh"))
    assert [await reader.read(2) for _ in range(6)] == [b"ab", b"cd", b"e", b"fg", b"h", b""]


@pytest.mark.gen_test(timeout=60)
async def test_an_upload_url_on_this_server_is_made_absolute(runtime, monkeypatch):
    """A store may answer with a path on this server (a directory does): the client is given it
    on the scheme and host it asked the proxy for."""
    token, _ = await token_for(runtime, UPLOAD)
    store = runtime.stores.at(runtime.storage.upload_default)

    async def on_this_server(key: str, expires: int, **fields: object) -> tuple[str, dict]:
        return f"/storage/place/{urllib.parse.quote(key)}?expires={expires}", {"X-Fixed": "1"}

    monkeypatch.setattr(store, "upload_url", on_this_server)
    debug = ident()
    files = [entry(f"rel.pdb/{debug}/rel.sym", b"MODULE rel\n")]
    with behind_a_proxy(runtime) as base:
        response = await tornado.httpclient.AsyncHTTPClient().fetch(
            f"{base}/upload/v2/",
            method="POST",
            body=json.dumps({"files": files}),
            headers={**PROXY_HEADERS, "Auth-Token": token, "Content-Type": "application/json"},
            raise_error=False,
        )
    assert response.code == 201, response.body
    action = json.loads(response.body)["files"][0]["action"]
    assert action["url"].startswith("https://symbols.example.com/storage/place/pending/")
    assert action["url"].endswith(f"/v1/rel.pdb/{debug}/rel.sym?expires=3600")
    assert action["headers"] == {"X-Fixed": "1"}


@pytest.mark.gen_test(timeout=120)
async def test_a_gzip_bomb_put_is_refused(http_client, base_url, runtime, worker, s3):
    token, _ = await token_for(runtime, UPLOAD)
    debug = ident()
    declared = b"MODULE windows x86_64 small.pdb\n"
    body = await plan_files(
        http_client, base_url, token, [entry(f"bomb.pdb/{debug}/bomb.sym", declared)]
    )
    action = body["files"][0]["action"]
    assert action["content_encoding"] == "gzip"
    assert await put_raw(action, gzip_bomb(512 << 20)) == 200
    done = await call(http_client, base_url, body["complete_url"], token)
    assert done.code == 400
    assert "does not match its declared size and MD5" in json.loads(done.body)["error"]
    assert s3.list_objects_v2(Bucket="symbols", Prefix=f"v1/bomb.pdb/{debug}/")["KeyCount"] == 0
    assert s3.list_objects_v2(Bucket="symbols", Prefix=pending_prefix(action))["KeyCount"] == 0


@pytest.mark.gen_test(timeout=60)
async def test_a_file_inflating_past_the_archive_ratio_is_refused(
    http_client, base_url, runtime, worker, s3
):
    token, _ = await token_for(runtime, UPLOAD)
    debug = ident()
    content = b"MODULE windows x86_64 zeros.pdb\n" + bytes(8 << 20)  # honest size and MD5
    body = await plan_files(
        http_client, base_url, token, [entry(f"zeros.pdb/{debug}/zeros.sym", content)]
    )
    action = body["files"][0]["action"]
    assert action["content_encoding"] == "gzip"
    assert await put(action, content) == 200
    done = await call(http_client, base_url, body["complete_url"], token)
    assert done.code == 400, done.body
    error = json.loads(done.body)["error"]
    assert "inflates" in error and "(the limit is 200, UPLOAD_MAX_COMPRESSION_RATIO)" in error
    assert "ask the server's operator to raise the limit" in error
    assert s3.list_objects_v2(Bucket="symbols", Prefix=f"v1/zeros.pdb/{debug}/")["KeyCount"] == 0


def pending_key(action: dict) -> str:
    """The object key a presigned PUT URL writes to."""
    path = urllib.parse.urlsplit(action["url"]).path
    return urllib.parse.unquote(path.split("/", 2)[2])


def pending_prefix(action: dict) -> str:
    return "/".join(pending_key(action).split("/")[:2]) + "/"


@pytest.mark.gen_test(timeout=60)
async def test_files_are_published_only_by_completion(http_client, base_url, runtime, worker, s3):
    token, _ = await token_for(runtime, UPLOAD)
    debug = ident()
    sym = f"MODULE windows x86_64 {debug} pend.pdb\n".encode()
    body = await plan_files(
        http_client, base_url, token, [entry(f"pend.pdb/{debug}/pend.sym", sym)]
    )
    action = body["files"][0]["action"]
    assert pending_key(action).startswith("pending/")
    assert await put(action, sym) == 200
    assert (await get(http_client, base_url, f"/pend.pdb/{debug}/pend.sym")).code == 404
    assert s3.list_objects_v2(Bucket="symbols", Prefix=f"v1/pend.pdb/{debug}/")["KeyCount"] == 0

    done = await call(http_client, base_url, body["complete_url"], token)
    assert done.code == 201, done.body
    assert (await get(http_client, base_url, f"/pend.pdb/{debug}/pend.sym")).code == 302
    assert s3.list_objects_v2(Bucket="symbols", Prefix=pending_prefix(action))["KeyCount"] == 0


@pytest.mark.gen_test(timeout=60)
async def test_a_failed_verification_keeps_the_stored_file(
    http_client, base_url, runtime, worker, s3
):
    token, _ = await token_for(runtime, UPLOAD)
    debug = ident()
    key = f"keep.pdb/{debug}/keep.sym"
    good = f"MODULE windows x86_64 {debug} keep.pdb\n".encode()
    first = await plan_files(http_client, base_url, token, [entry(key, good)])
    assert await put(first["files"][0]["action"], good) == 200
    assert (await call(http_client, base_url, first["complete_url"], token)).code == 201

    newer = good + b"FILE 0 new.cpp\n"
    second = await plan_files(http_client, base_url, token, [entry(key, newer)])
    action = second["files"][0]["action"]
    assert action["type"] == "upload"
    assert await put(action, b"something else entirely") == 200
    done = await call(http_client, base_url, second["complete_url"], token)
    assert done.code == 400
    stored = s3.get_object(Bucket="symbols", Key=f"v1/{key}")
    assert gzip.decompress(stored["Body"].read()) == good
    assert s3.list_objects_v2(Bucket="symbols", Prefix=pending_prefix(action))["KeyCount"] == 0


@pytest.mark.gen_test(timeout=60)
async def test_abandoned_uploads_expire(http_client, base_url, runtime, worker, s3):
    token, _ = await token_for(runtime, UPLOAD)
    debug = ident()
    sym = f"MODULE windows x86_64 {debug} gone.pdb\n".encode()
    body = await plan_files(
        http_client, base_url, token, [entry(f"gone.pdb/{debug}/gone.sym", sym)]
    )
    action = body["files"][0]["action"]
    assert await put(action, sym) == 200

    await v2.expire_pending(runtime, 3600)  # too recent: stays
    assert s3.list_objects_v2(Bucket="symbols", Prefix=pending_prefix(action))["KeyCount"] == 1
    later = datetime.now(UTC) + timedelta(hours=2)
    expired = await v2.expire_pending(runtime, 3600, now=later)
    assert expired.objects >= 1 and expired.uploads >= 1
    assert s3.list_objects_v2(Bucket="symbols", Prefix=pending_prefix(action))["KeyCount"] == 0
    done = await call(http_client, base_url, body["complete_url"], token)
    assert done.code == 400
    assert "Not completed within 3600 seconds" in json.loads(done.body)["error"]


class CountingClient:
    """An S3 client that counts the HEADs in flight, or fails them as a timed-out storage."""

    def __init__(self, client, stats: dict, fail: bool):
        self.client, self.stats, self.fail = client, stats, fail

    def __getattr__(self, name):
        return getattr(self.client, name)

    async def head_object(self, **kwargs):
        if self.fail:
            raise ConnectTimeoutError(endpoint_url="http://storage.invalid")
        self.stats["now"] += 1
        self.stats["most"] = max(self.stats["most"], self.stats["now"])
        try:
            return await self.client.head_object(**kwargs)
        finally:
            self.stats["now"] -= 1


def count_heads(monkeypatch, runtime, fail: bool = False) -> dict:
    stats = {"now": 0, "most": 0}
    original = runtime.s3.client

    async def client(source, purpose="lookup"):
        return CountingClient(await original(source, purpose), stats, fail)

    monkeypatch.setattr(runtime.s3, "client", client)
    return stats


@pytest.mark.gen_test(timeout=120)
async def test_planning_many_files_bounds_its_lookups(
    http_client, base_url, runtime, monkeypatch, upload_settings
):
    token, _ = await token_for(runtime, UPLOAD)
    stats = count_heads(monkeypatch, runtime)
    debug = ident()
    files = [entry(f"many{i}.pdb/{debug}/many{i}.sym", b"x%d" % i) for i in range(1024)]
    body = await plan_files(http_client, base_url, token, files)
    assert [f["action"]["type"] for f in body["files"]] == ["upload"] * 1024
    assert 0 < stats["most"] <= upload_settings.upload_v2_plan_concurrency


@pytest.mark.gen_test(timeout=60)
async def test_a_storage_timeout_while_planning_is_a_503(
    http_client, base_url, runtime, monkeypatch
):
    token, _ = await token_for(runtime, UPLOAD)
    count_heads(monkeypatch, runtime, fail=True)
    files = [entry(f"t.pdb/{ident()}/t.sym", b"t")]
    response = await call(
        http_client, base_url, "/upload/v2/", token, json.dumps({"files": files}).encode()
    )
    assert response.code == 503
    assert int(response.headers["Retry-After"]) > 0
    assert "storage is unavailable" in json.loads(response.body)["error"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            b'{"files": [{"key": "a/0A/a.sym", "size": 9223372036854775808, "md5_hash": "'
            + b"0" * 32
            + b'"}]}',
            "files[0].size 9223372036854775808 is larger than a file may be",
        ),
        (
            b'{"files": [{"key": "a\\ud800/0A/a.sym", "size": 1, "md5_hash": "'
            + b"0" * 32
            + b'"}]}',
            "files[0].key is not valid Unicode text",
        ),
        (b"[" * 100_000 + b"]" * 100_000, "JSON request body nested too deeply"),
        (b'{"files": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
    ],
    ids=["size-2**63", "lone-surrogate", "nested", "nested-files"],
)
@pytest.mark.gen_test(timeout=60)
async def test_hostile_v2_requests(http_client, base_url, runtime, body, message):
    token, _ = await token_for(runtime, UPLOAD)
    response = await call(http_client, base_url, "/upload/v2/", token, body)
    assert response.code == 400
    assert message in json.loads(response.body)["error"]


@pytest.mark.gen_test(timeout=60)
async def test_completing_an_impossible_id_is_a_404(http_client, base_url, runtime):
    token, _ = await token_for(runtime, UPLOAD)
    for number in (2**63, "9" * 5000):
        response = await call(http_client, base_url, f"/upload/v2/{number}/complete", token)
        assert response.code == 404
        assert json.loads(response.body) == {"error": "No Upload matches the given query."}


@pytest.mark.gen_test(timeout=60)
async def test_the_expiry_task_fails_old_uploads(http_client, base_url, runtime, worker):
    import symbolon.tasks.actors as actors
    from symbolon.tasks.broker import enqueue

    token, _ = await token_for(runtime, UPLOAD)
    files = [entry(f"old.pdb/{ident()}/old.sym", b"MODULE old\n")]
    body = await plan_files(http_client, base_url, token, files)
    await runtime.db.execute(
        "UPDATE uploads SET created_at = now() - interval '2 days' WHERE id = $1", body["id"]
    )
    await enqueue(actors.expire_pending_uploads)
    outcome = await records.wait_for_outcome(runtime.db, body["id"], "", 30)
    assert outcome is not None and outcome.upload is None and outcome.error is not None
    assert outcome.error.startswith("Not completed within 86400 seconds")


@pytest.mark.gen_test(timeout=60)
async def test_a_key_storage_cannot_hold_is_an_error_action(http_client, base_url, runtime):
    token, _ = await token_for(runtime, UPLOAD)
    name = "n" * 1000
    body = await plan_files(http_client, base_url, token, [entry(f"{name}/{ident()}/a.sym", b"a")])
    assert body["files"][0]["action"] == {"type": "error", "msg": "key too long"}


@pytest.mark.gen_test(timeout=60)
async def test_a_completion_at_work_is_left_alone_by_the_expiry_and_by_a_second_run(
    http_client, base_url, runtime, worker, s3
):
    token, _ = await token_for(runtime, UPLOAD)
    debug = ident()
    sym = f"MODULE windows x86_64 {debug} busy.pdb\n".encode()
    body = await plan_files(
        http_client, base_url, token, [entry(f"busy.pdb/{debug}/busy.sym", sym)]
    )
    action = body["files"][0]["action"]
    assert await put(action, sym) == 200
    upload_id = body["id"]
    later = datetime.now(UTC) + timedelta(hours=2)
    async with v2.claimed(runtime.db, upload_id) as mine:  # as a completion at work holds it
        assert mine
        await v2.expire_pending(runtime, 3600, now=later)
        await v2.complete(runtime, upload_id)  # a repeated call: leaves it to the first
        row = await runtime.db.fetchrow("SELECT * FROM uploads WHERE id = $1", upload_id)
        assert (row["completed_at"], row["failed_at"]) == (None, None)
    assert s3.list_objects_v2(Bucket="symbols", Prefix=pending_prefix(action))["KeyCount"] == 1
    done = await call(http_client, base_url, body["complete_url"], token)
    assert done.code == 201, done.body
    assert (await get(http_client, base_url, f"/busy.pdb/{debug}/busy.sym")).code == 302


@pytest.mark.gen_test(timeout=60)
async def test_a_completion_call_without_the_task_queue_is_a_503(
    http_client, base_url, runtime, monkeypatch
):
    from symbolon.handlers import upload_v2
    from symbolon.tasks.broker import QueueUnavailable

    async def unavailable(*args, **kwargs):
        raise QueueUnavailable()

    monkeypatch.setattr(upload_v2, "send_within", unavailable)
    token, _ = await token_for(runtime, UPLOAD)
    files = [entry(f"q.pdb/{ident()}/q.sym", b"MODULE q\n")]
    body = await plan_files(http_client, base_url, token, files)
    done = await call(http_client, base_url, body["complete_url"], token)
    assert done.code == 503
    assert int(done.headers["Retry-After"]) > 0
    assert "task queue" in json.loads(done.body)["error"]


@pytest.mark.gen_test(timeout=60)
async def test_a_completion_reads_back_with_the_patient_client(
    http_client, base_url, runtime, monkeypatch
):
    """Reading the PUT objects back is the completion task's, not a download's lookup."""
    token, _ = await token_for(runtime, UPLOAD)
    debug = ident()
    sym = f"MODULE windows x86_64 {debug} slow.pdb\n".encode()
    body = await plan_files(
        http_client, base_url, token, [entry(f"slow.pdb/{debug}/slow.sym", sym)]
    )
    assert await put(body["files"][0]["action"], sym) == 200
    lookups_time_out(monkeypatch, runtime.s3)
    await v2.complete(runtime, body["id"])
    row = await runtime.db.fetchrow("SELECT * FROM uploads WHERE id = $1", body["id"])
    assert row["completed_at"] is not None, row["error"]
