"""Staging in S3: the task that processes an upload may run on another machine."""

from __future__ import annotations

import json
import uuid

import pytest

from symbolon.uploads import process
from tests.conftest import running_worker, s3_client, s3_endpoint, unique_email
from tests.uploads import UPLOAD, debug_id, make_zip, multipart, post, token_for

STAGING_BUCKET = "staging-area"


@pytest.fixture(scope="module")
def staging_settings(live_settings):
    endpoint = s3_endpoint(live_settings)
    s3_client(endpoint).create_bucket(Bucket=STAGING_BUCKET)
    return live_settings.replace(
        upload_staging_url=f"{endpoint}/{STAGING_BUCKET}/incoming", upload_wait_seconds=30.0
    )


@pytest.fixture
def settings(staging_settings):
    return staging_settings


@pytest.fixture(scope="module")
def worker(staging_settings):
    with running_worker(staging_settings) as running:
        yield running


def staged_objects(settings) -> list[str]:
    listing = s3_client(s3_endpoint(settings)).list_objects_v2(Bucket=STAGING_BUCKET)
    return [o["Key"] for o in listing.get("Contents", [])]


@pytest.mark.gen_test(timeout=60)
async def test_the_task_reads_the_archive_from_s3_staging(runtime):
    local = runtime.settings.staging_dir / f"upload-{uuid.uuid4().hex}.zip"
    local.parent.mkdir(parents=True, exist_ok=True)
    ident = debug_id()
    local.write_bytes(make_zip({f"st.pdb/{ident}/st.sym": b"MODULE"}))
    ref = await runtime.staging.put(local)
    assert ref.startswith(f"s3://{STAGING_BUCKET}/incoming/upload-")
    local.unlink()  # the receiving machine's disk is not there for the task
    user_id = await runtime.db.fetchval(
        "INSERT INTO users (email) VALUES ($1) RETURNING id", unique_email()
    )
    upload_id = await runtime.db.fetchval(
        """INSERT INTO uploads (user_id, filename, bucket_name, staging_ref, destination_url)
           VALUES ($1, 'st.zip', 'symbols', $2, $3) RETURNING id""",
        user_id,
        ref,
        runtime.storage.upload_default.url,
    )
    await process.process_upload(runtime, upload_id)
    row = await runtime.db.fetchrow("SELECT * FROM uploads WHERE id = $1", upload_id)
    assert row["completed_at"] is not None
    keys = await runtime.db.fetch("SELECT key FROM file_uploads WHERE upload_id = $1", upload_id)
    assert [k["key"] for k in keys] == [f"v1/st.pdb/{ident.upper()}/st.sym"]
    assert ref.split("/", 3)[3] not in staged_objects(runtime.settings)
    assert not list(runtime.settings.staging_dir.glob("staged-*"))


@pytest.mark.gen_test(timeout=60)
async def test_http_upload_through_s3_staging(http_client, base_url, runtime, worker):
    token, _ = await token_for(runtime, UPLOAD)
    body, content_type = multipart({"s.zip": make_zip({f"s3.pdb/{debug_id()}/s3.sym": b"MODULE"})})
    response = await post(http_client, base_url, body, content_type, token)
    assert response.code == 201, response.body
    assert json.loads(response.body)["upload"]["completed_at"]
    assert staged_objects(runtime.settings) == []
    assert not list(runtime.settings.staging_dir.glob("upload-*"))


@pytest.mark.gen_test(timeout=60)
async def test_the_sweep_deletes_orphaned_staged_objects_and_keeps_referenced_ones(runtime):
    from symbolon.uploads import staging

    refs = []
    for _ in range(2):
        local = runtime.settings.staging_dir / f"upload-{uuid.uuid4().hex}.zip"
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(b"PK")
        refs.append(await runtime.staging.put(local))
        local.unlink()
    orphan, referenced = refs
    user_id = await runtime.db.fetchval(
        "INSERT INTO users (email) VALUES ($1) RETURNING id", unique_email()
    )
    await runtime.db.execute(
        """INSERT INTO uploads (user_id, filename, bucket_name, staging_ref, destination_url)
           VALUES ($1, 'kept.zip', 'symbols', $2, $3)""",
        user_id,
        referenced,
        runtime.storage.upload_default.url,
    )
    assert await staging.sweep(runtime, 0.0) >= 1  # everything is old enough for it
    keys = staged_objects(runtime.settings)
    assert referenced.split("/", 3)[3] in keys
    assert orphan.split("/", 3)[3] not in keys
    await runtime.staging.delete(referenced)
