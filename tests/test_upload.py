"""Symbol upload v1 (docs/upload.md) end to end: HTTP, staging, the actor, S3, PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import hashlib
import json
import os
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from symbolon.uploads import process
from tests.conftest import unique_email
from tests.downloads import get
from tests.uploads import (
    PARTNER_BUCKET,
    UPLOAD,
    debug_id,
    make_zip,
    multipart,
    overlapping_zip,
    post,
    sym_text,
    token_for,
)


@pytest.fixture
def settings(upload_settings):
    """The app of these tests runs with the upload settings (a partner bucket, longer waits)."""
    return upload_settings


@pytest.mark.gen_test(timeout=60)
async def test_upload_stores_members_records_them_and_answers_201(
    http_client, base_url, runtime, worker, s3
):
    ident = debug_id()
    key = f"xul.pdb/{ident.upper()}/xul.sym"
    assert (await get(http_client, base_url, f"/{key}")).code == 404  # a cached miss, first
    token, email = await token_for(runtime, UPLOAD)
    content = sym_text(ident.upper())
    archive = make_zip(
        {
            f"xul.pdb/{ident}/xul.sym": content,
            f"xul.pdb/{ident}/xul.pd_": b"\x00binary",
            "build-symbols.txt": b"x",
        }
    )
    body, content_type = multipart({"symbols.zip": archive})
    response = await post(http_client, base_url, body, content_type, token)
    assert response.code == 201, response.body
    upload = json.loads(response.body)["upload"]
    assert upload["filename"] == "symbols.zip"
    assert upload["bucket"] == "symbols"
    assert upload["try_symbols"] is False
    assert upload["user"] == email
    assert upload["skipped_keys"] == []
    assert upload["size"] == len(archive)
    assert upload["completed_at"].endswith("Z") and upload["created_at"].endswith("Z")

    stored = s3.get_object(Bucket="symbols", Key=f"v1/{key}")
    assert stored["ContentEncoding"] == "gzip"
    assert stored["ContentType"] == "text/plain"
    assert stored["Metadata"] == {
        "original_size": str(len(content)),
        "original_md5_hash": hashlib.md5(content).hexdigest(),
    }
    assert gzip.decompress(stored["Body"].read()) == content
    raw = s3.get_object(Bucket="symbols", Key=f"v1/xul.pdb/{ident.upper()}/xul.pd_")
    assert raw["Body"].read() == b"\x00binary" and "ContentEncoding" not in raw

    rows = await runtime.db.fetch(
        "SELECT * FROM file_uploads WHERE upload_id = $1 ORDER BY key", upload["id"]
    )
    assert [r["key"] for r in rows] == [f"v1/xul.pdb/{ident.upper()}/xul.pd_", f"v1/{key}"]
    sym_row = rows[1]
    assert (sym_row["debug_filename"], sym_row["debug_id"]) == ("xul.pdb", ident.upper())
    assert (sym_row["code_file"], sym_row["code_id"]) == ("xul.dll", "5F2A1B0C7E000")
    assert sym_row["compressed"] and sym_row["update"] is False
    record = await runtime.db.fetchrow("SELECT * FROM uploads WHERE id = $1", upload["id"])
    assert record["ignored_keys"] == ["build-symbols.txt"]
    assert len(record["content_hash"]) == 30

    # Visible to downloads at once, although a miss was cached before.
    assert (await get(http_client, base_url, f"/{key}")).code == 302


@pytest.mark.gen_test(timeout=60)
async def test_identical_reupload_is_skipped(http_client, base_url, runtime, worker):
    ident = debug_id()
    token, _ = await token_for(runtime, UPLOAD)
    body, content_type = multipart(
        {"again.zip": make_zip({f"a.pdb/{ident}/a.sym": sym_text(ident.upper(), "a")})}
    )
    first = json.loads((await post(http_client, base_url, body, content_type, token)).body)[
        "upload"
    ]
    second = await post(http_client, base_url, body, content_type, token)
    assert second.code == 201
    upload = json.loads(second.body)["upload"]
    assert upload["skipped_keys"] == [f"v1/a.pdb/{ident.upper()}/a.sym"]
    count = await runtime.db.fetchval(
        "SELECT count(*) FROM file_uploads WHERE upload_id = ANY($1::bigint[])",
        [first["id"], upload["id"]],
    )
    assert count == 1


@pytest.mark.gen_test(timeout=60)
async def test_changed_content_overwrites_and_is_marked_update(
    http_client, base_url, runtime, worker, s3
):
    ident = debug_id()
    token, _ = await token_for(runtime, UPLOAD)
    for content in (b"MODULE one\n", b"MODULE two, longer\n"):
        body, content_type = multipart({"v.zip": make_zip({f"v.pdb/{ident}/v.sym": content})})
        upload = json.loads((await post(http_client, base_url, body, content_type, token)).body)[
            "upload"
        ]
    row = await runtime.db.fetchrow("SELECT * FROM file_uploads WHERE upload_id = $1", upload["id"])
    assert row["update"] is True
    stored = s3.get_object(Bucket="symbols", Key=f"v1/v.pdb/{ident.upper()}/v.sym")["Body"].read()
    assert gzip.decompress(stored) == b"MODULE two, longer\n"


@pytest.mark.gen_test(timeout=60)
async def test_try_uploads(http_client, base_url, runtime, worker, s3):
    try_only, _ = await token_for(runtime, ["upload.upload_try_symbols"], superuser=False)
    full, _ = await token_for(runtime, UPLOAD)
    cases = (
        (try_only, {}),
        (try_only, {"try": ""}),
        (full, {"try": "1"}),
        # A bucket choice cannot take try symbols out of the try location.
        (try_only, {"bucket_name": "symbols"}),
        (full, {"try": "1", "bucket_name": "symbols"}),
    )
    for token, fields in cases:
        ident = debug_id()
        body, content_type = multipart(
            {"t.zip": make_zip({f"t.pdb/{ident}/t.sym": b"MODULE"})}, fields
        )
        response = await post(http_client, base_url, body, content_type, token)
        assert response.code == 201, response.body
        assert json.loads(response.body)["upload"]["try_symbols"] is True
        s3.head_object(Bucket="symbols", Key=f"try/v1/t.pdb/{ident.upper()}/t.sym")
    ident = debug_id()
    body, content_type = multipart(
        {"r.zip": make_zip({f"r.pdb/{ident}/r.sym": b"MODULE"})}, {"try": ""}
    )
    regular = json.loads((await post(http_client, base_url, body, content_type, full)).body)[
        "upload"
    ]
    assert regular["try_symbols"] is False


@pytest.mark.gen_test(timeout=60)
async def test_email_exceptions_choose_the_bucket(http_client, base_url, runtime, worker, s3):
    token, _ = await token_for(runtime, UPLOAD, email=f"dev-{uuid.uuid4().hex[:6]}@Partner.example")
    ident = debug_id()
    body, content_type = multipart({"p.zip": make_zip({f"p.pdb/{ident}/p.sym": b"MODULE"})})
    upload = json.loads((await post(http_client, base_url, body, content_type, token)).body)[
        "upload"
    ]
    assert upload["bucket"] == PARTNER_BUCKET
    s3.head_object(Bucket=PARTNER_BUCKET, Key=f"v1/p.pdb/{ident.upper()}/p.sym")


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({}, "Must be multipart form data with at least one file"),
        ({"symbols.rar": b"x"}, 'Unrecognized archive file extension ".rar"'),
        ({"symbols.zip": b""}, "File is not a zip file"),
        ({"symbols.zip": b"not a zip at all"}, "File is not a zip file"),
        (
            {"symbols.zip": make_zip({"xpcshell.sym": b"MODULE"})},
            "Unrecognized file pattern. Should only be <module>/<hex>/<file> or <name>-symbols.txt "
            "and nothing else. (First unrecognized pattern was xpcshell.sym)",
        ),
        (
            {"symbols.zip": make_zip({"qcom/proprietary/0A/x.sym": b"x"})},
            "Content of archive file contains the snippet 'qcom/proprietary' which is not allowed",
        ),
    ],
)
@pytest.mark.gen_test(timeout=60)
async def test_invalid_archives_are_400_and_leave_nothing_behind(
    http_client, base_url, runtime, files, message
):
    token, email = await token_for(runtime, UPLOAD)
    body, content_type = multipart(files, {"note": "x"})
    response = await post(http_client, base_url, body, content_type, token)
    assert response.code == 400
    assert json.loads(response.body) == {"error": message}
    uploads = await runtime.db.fetchval(
        "SELECT count(*) FROM uploads u JOIN users s ON s.id = u.user_id WHERE s.email = $1", email
    )
    assert uploads == 0
    assert not list(runtime.settings.staging_dir.glob("upload-*"))


@pytest.mark.gen_test(timeout=60)
async def test_hostile_archives_are_refused(http_client, base_url, runtime):
    token, _ = await token_for(runtime, UPLOAD)
    for members in ({"../../etc/x.pdb/0A/x.sym": b"x"}, {}):
        body, content_type = multipart({"evil.zip": make_zip(members)})
        response = await post(http_client, base_url, body, content_type, token)
        assert response.code == 400, members
        assert json.loads(response.body)["error"]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (None, "This requires an Auth-Token to authenticate the request"),
        ("unknown", "API Token not matched"),
        ("expired", "API Token found but expired"),
        ("inactive", "API Token matched but user not active"),
        ("no-permission", "Forbidden"),
    ],
)
@pytest.mark.gen_test(timeout=60)
async def test_authentication_and_permission_failures_are_403(
    http_client, base_url, runtime, make, message
):
    token = None
    if make == "unknown":
        token = uuid.uuid4().hex
    elif make in ("expired", "inactive", "no-permission"):
        perms = ["upload.view_all_uploads"] if make == "no-permission" else UPLOAD
        token, email = await token_for(runtime, perms)
        if make == "expired":
            await runtime.db.execute(
                "UPDATE tokens SET expires_at = $1 WHERE key_prefix = $2",
                datetime.now(UTC) - timedelta(days=1),
                token[:8],
            )
        if make == "inactive":
            await runtime.db.execute("UPDATE users SET is_active = false WHERE email = $1", email)
    body, content_type = multipart({"symbols.zip": make_zip({"a.pdb/0A/a.sym": b"x" * 100_000})})
    response = await post(http_client, base_url, body, content_type, token)
    assert response.code == 403
    assert json.loads(response.body) == {"error": message}


@pytest.mark.gen_test
async def test_other_methods_are_405(http_client, base_url):
    response = await get(http_client, base_url, "/upload/")
    assert response.code == 405
    assert response.headers["Allow"] == "POST"
    assert json.loads(response.body) == {"error": "Method Not Allowed (GET): /upload/"}


@pytest.mark.gen_test(timeout=60)
async def test_too_large_is_413_from_content_length(runtime, upload_settings, worker):
    from tests.conftest import served

    async with served(upload_settings.replace(upload_max_size=10_000)) as (client, base):
        token, _ = await token_for(runtime, UPLOAD)
        body, content_type = multipart({"big.zip": b"x" * 20_000})
        response = await post(client, base, body, content_type, token)
    assert response.code == 413
    assert "the limit is 10000 bytes" in json.loads(response.body)["error"]


@pytest.mark.gen_test(timeout=60)
async def test_bodies_above_tornados_default_limit_are_accepted(
    http_client, base_url, runtime, worker
):
    """Tornado refuses bodies over 100 MB by itself; uploads set their own limit."""
    token, _ = await token_for(runtime, UPLOAD)
    ident = debug_id()
    blob = os.urandom(110 * 1024 * 1024)  # 110 MB that does not compress away
    body, content_type = multipart({"large.zip": make_zip({f"l.pdb/{ident}/l.dbg.gz": blob})})
    del blob
    response = await post(http_client, base_url, body, content_type, token)
    assert response.code == 201, response.body[:200]


@pytest.mark.gen_test(timeout=60)
async def test_respond_async_answers_202_with_a_status_url(http_client, base_url, runtime, worker):
    token, _ = await token_for(runtime, UPLOAD)
    ident = debug_id()
    body, content_type = multipart({"a.zip": make_zip({f"a.pdb/{ident}/a.sym": b"MODULE"})})
    response = await post(
        http_client, base_url, body, content_type, token, headers={"Prefer": "respond-async"}
    )
    assert response.code == 202
    upload_id = json.loads(response.body)["upload"]["id"]
    assert response.headers["Location"] == f"/api/uploads/upload/{upload_id}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        row = await runtime.db.fetchrow("SELECT completed_at FROM uploads WHERE id = $1", upload_id)
        if row["completed_at"]:
            break
        await asyncio.sleep(0.1)
    assert row["completed_at"] is not None


@pytest.mark.gen_test(timeout=60)
async def test_a_retried_actor_finishes_without_duplicates(runtime, monkeypatch):
    """A crash after the first stored member; the retry stores the rest, records nothing twice."""
    idents = [debug_id() for _ in range(3)]
    members = {
        f"r{i}.pdb/{ident}/r{i}.sym": f"MODULE {i}".encode() for i, ident in enumerate(idents)
    }
    staged = runtime.settings.staging_dir / f"upload-{uuid.uuid4().hex}.zip"
    staged.parent.mkdir(parents=True, exist_ok=True)
    staged.write_bytes(make_zip(members))
    user_id = await runtime.db.fetchval(
        "INSERT INTO users (email) VALUES ($1) RETURNING id", unique_email()
    )
    destination = runtime.storage.upload_default
    upload_id = await runtime.db.fetchval(
        """INSERT INTO uploads (user_id, filename, bucket_name, staging_ref, destination_url)
           VALUES ($1, 'r.zip', $2, $3, $4) RETURNING id""",
        user_id,
        destination.bucket,
        str(staged),
        destination.url,
    )
    real = process.store_member
    calls = []

    async def crashing(rt, uid, zf, member, dest, done):
        calls.append(member.key)
        if len(calls) > 1:
            raise ConnectionError("the worker died here")
        return await real(rt, uid, zf, member, dest, done)

    monkeypatch.setattr(process, "store_member", crashing)
    one_at_a_time = dataclasses.replace(
        runtime, settings=runtime.settings.replace(upload_file_upload_max_workers=1)
    )
    with pytest.raises(ConnectionError):
        await process.process_upload(one_at_a_time, upload_id)
    monkeypatch.setattr(process, "store_member", real)
    await process.process_upload(runtime, upload_id)
    await process.process_upload(runtime, upload_id)  # a duplicate delivery changes nothing
    rows = await runtime.db.fetch("SELECT key FROM file_uploads WHERE upload_id = $1", upload_id)
    assert len(rows) == 3
    upload = await runtime.db.fetchrow("SELECT * FROM uploads WHERE id = $1", upload_id)
    assert upload["completed_at"] is not None
    assert upload["skipped_keys"] is None  # stored by the first attempt, not skipped
    assert not staged.exists()


@pytest.mark.gen_test(timeout=60)
async def test_upload_status_endpoint(http_client, base_url, runtime, worker):
    token, email = await token_for(runtime, UPLOAD, superuser=False)
    ident = debug_id()
    body, content_type = multipart({"s.zip": make_zip({f"s.pdb/{ident}/s.sym": b"MODULE"})})
    upload_id = json.loads((await post(http_client, base_url, body, content_type, token)).body)[
        "upload"
    ]["id"]
    path = f"/api/uploads/upload/{upload_id}"
    response = await http_client.fetch(
        base_url + path, headers={"Auth-Token": token}, raise_error=False
    )
    assert response.code == 200
    upload = json.loads(response.body)["upload"]
    assert upload["status"] == "completed" and upload["error"] is None
    assert upload["user"]["email"] == email
    assert [f["key"] for f in upload["file_uploads"]] == [f"v1/s.pdb/{ident.upper()}/s.sym"]
    assert upload["related"] == []

    again = json.loads((await post(http_client, base_url, body, content_type, token)).body)[
        "upload"
    ]["id"]
    response = await http_client.fetch(
        base_url + path, headers={"Auth-Token": token}, raise_error=False
    )
    assert [r["id"] for r in json.loads(response.body)["upload"]["related"]] == [again]

    stranger, _ = await token_for(runtime, UPLOAD, superuser=False)
    denied = await http_client.fetch(
        base_url + path, headers={"Auth-Token": stranger}, raise_error=False
    )
    assert denied.code == 403
    assert json.loads(denied.body) == {"error": "Insufficient access to view this upload"}
    auditor, _ = await token_for(runtime, ["upload.view_all_uploads"])
    seen = await http_client.fetch(
        base_url + path, headers={"Auth-Token": auditor}, raise_error=False
    )
    assert seen.code == 200
    missing = await http_client.fetch(
        base_url + "/api/uploads/upload/999999999", headers={"Auth-Token": token}, raise_error=False
    )
    assert missing.code == 404
    anonymous = await http_client.fetch(base_url + path, raise_error=False)
    assert anonymous.code == 403


@pytest.mark.gen_test(timeout=60)
async def test_storage_failures_are_retried_then_reported_as_500(runtime, monkeypatch):
    staged = runtime.settings.staging_dir / f"upload-{uuid.uuid4().hex}.zip"
    staged.write_bytes(make_zip({f"f.pdb/{debug_id()}/f.sym": b"MODULE"}))
    user_id = await runtime.db.fetchval(
        "INSERT INTO users (email) VALUES ($1) RETURNING id", unique_email()
    )
    upload_id = await runtime.db.fetchval(
        """INSERT INTO uploads (user_id, filename, bucket_name, staging_ref, destination_url)
           VALUES ($1, 'f.zip', 'symbols', $2, $3) RETURNING id""",
        user_id,
        str(staged),
        runtime.storage.upload_default.url,
    )

    async def broken(*args):
        raise ConnectionError("S3 is down")

    monkeypatch.setattr(process, "store_member", broken)
    for _ in range(process.MAX_ATTEMPTS - 1):
        with pytest.raises(ConnectionError):
            await process.process_upload(runtime, upload_id)
    await process.process_upload(runtime, upload_id)  # the last attempt records the failure
    row = await runtime.db.fetchrow("SELECT * FROM uploads WHERE id = $1", upload_id)
    assert row["error_status"] == 500
    assert row["error"] == "Storing the symbols failed: S3 is down"
    assert row["completed_at"] is None and row["failed_at"] is not None
    assert not staged.exists()
    await process.process_upload(runtime, upload_id)  # later deliveries do nothing
    assert (await runtime.db.fetchval("SELECT attempts FROM uploads WHERE id = $1", upload_id)) == 5


@pytest.mark.gen_test(timeout=60)
async def test_bucket_name_chooses_among_the_users_possible_locations(
    http_client, base_url, runtime, worker, s3
):
    token, _ = await token_for(
        runtime, UPLOAD, email=f"ui-{uuid.uuid4().hex[:6]}@partner.example", superuser=False
    )
    ident = debug_id()
    body, content_type = multipart(
        {"b.zip": make_zip({f"b.pdb/{ident}/b.sym": b"MODULE"})}, {"bucket_name": "partner"}
    )
    upload = json.loads((await post(http_client, base_url, body, content_type, token)).body)[
        "upload"
    ]
    assert upload["bucket"] == PARTNER_BUCKET
    body, content_type = multipart(
        {"b.zip": make_zip({f"b.pdb/{ident}/b.sym": b"MODULE"})}, {"bucket_name": "nowhere"}
    )
    refused = await post(http_client, base_url, body, content_type, token)
    assert refused.code == 403
    assert json.loads(refused.body) == {"error": "No valid bucket"}


@pytest.mark.gen_test(timeout=60)
async def test_an_overlapping_zip_bomb_is_refused_before_anything_is_recorded(
    http_client, base_url, runtime
):
    # 100 MB from 13 KB: each member's data runs through the next ones' to one shared stream.
    names = [f"o{i}.pdb/{debug_id()}/o{i}.sym" for i in range(100)]
    bomb = overlapping_zip(names, bytes(1_000_000))
    token, email = await token_for(runtime, UPLOAD)
    body, content_type = multipart({"bomb.zip": bomb})
    response = await post(http_client, base_url, body, content_type, token)
    assert response.code == 400
    assert json.loads(response.body) == {
        "error": f"Archive members '{names[0]}' and '{names[1]}' overlap (they share bytes of "
        "the archive); it looks like a zip bomb"
    }
    uploads = await runtime.db.fetchval(
        "SELECT count(*) FROM uploads u JOIN users s ON s.id = u.user_id WHERE s.email = $1", email
    )
    assert uploads == 0


def with_bad_crc(archive: bytes, index: int) -> bytes:
    """The archive with the CRC of its index-th member wrong in the central directory."""
    data = bytearray(archive)
    at = [i for i in range(len(data)) if data.startswith(b"PK\x01\x02", i)][index] + 16
    data[at] ^= 1
    return bytes(data)


@pytest.mark.gen_test(timeout=60)
async def test_a_corrupt_member_refuses_the_whole_archive(
    http_client, base_url, runtime, worker, s3
):
    first, second = debug_id(), debug_id()
    stored = f"a.pdb/{first.upper()}/a.sym"
    lines = (f"FUNC {n * 977:x} {n % 97:x} 0 f{n:x}()\n" for n in range(400_000))
    archive = make_zip(
        {
            f"a.pdb/{first}/a.sym": sym_text(first.upper(), "a"),
            # Large, so that its bad CRC shows late, as the end of its data is reached.
            f"b.pdb/{second}/b.sym": sym_text(second.upper(), "b") + "".join(lines).encode(),
        }
    )
    token, email = await token_for(runtime, UPLOAD)
    body, content_type = multipart({"corrupt.zip": with_bad_crc(archive, 1)})
    response = await post(http_client, base_url, body, content_type, token)
    assert response.code == 400, response.body
    error = json.loads(response.body)["error"]
    assert error.startswith(f"Archive member 'b.pdb/{second}/b.sym' is corrupt: Bad CRC")
    upload = await runtime.db.fetchrow(
        """SELECT u.* FROM uploads u JOIN users s ON s.id = u.user_id WHERE s.email = $1""", email
    )
    assert upload["failed_at"] is not None and upload["error_status"] == 400
    rows = await runtime.db.fetchval(
        "SELECT count(*) FROM file_uploads WHERE upload_id = $1", upload["id"]
    )
    assert rows == 0
    listed = s3.list_objects_v2(Bucket="symbols", Prefix=f"v1/a.pdb/{first.upper()}/")
    assert listed["KeyCount"] == 0
    assert (await get(http_client, base_url, f"/{stored}")).code == 404
