"""Upload v2 (docs/upload.md) with presigned PUTs to real S3, and the completion call."""

from __future__ import annotations

import gzip
import hashlib
import json
import uuid

import pytest
import tornado.httpclient

from tests.conftest import s3_client, s3_endpoint
from tests.downloads import get
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
