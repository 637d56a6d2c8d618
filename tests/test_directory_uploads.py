"""Uploads to a directory location (docs/upload.md): keys S3 would hold but a directory cannot
are refused up front, as the client's error, rather than failing every write."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import pytest

from symbolon.uploads import process
from tests.conftest import unique_email
from tests.uploads import UPLOAD, make_zip, token_for

LONG_FILE = "s" * 251 + ".sym"  # a name a file may have, but not its sidecar (name + ".json")


@pytest.fixture
def settings(live_settings, tmp_path: Path):
    directory = f"file://{tmp_path}/symbols"
    return live_settings.replace(symbol_urls=(directory,), upload_default_url=directory)


@pytest.fixture
def ready(runtime, io_loop) -> None:
    io_loop.run_sync(lambda: runtime.stores.ensure(runtime.storage))


def ident() -> str:
    return uuid.uuid4().hex.upper() + "1"


@pytest.mark.gen_test(timeout=60)
async def test_v2_plans_an_error_for_a_key_the_directory_cannot_hold(
    http_client, base_url, runtime, ready
):
    token, _ = await token_for(runtime, UPLOAD)
    keys = [f".meta/{ident()}/x.sym", f"x.pdb/{ident()}/{LONG_FILE}", f"x.pdb/{ident()}/x.sym"]
    files = [{"key": k, "size": 1, "md5_hash": hashlib.md5(b"x").hexdigest()} for k in keys]
    response = await http_client.fetch(
        base_url + "/upload/v2/",
        method="POST",
        body=json.dumps({"files": files}),
        headers={"Auth-Token": token, "Content-Type": "application/json"},
        raise_error=False,
    )
    assert response.code == 201, response.body
    actions = [f["action"] for f in json.loads(response.body)["files"]]
    assert actions[0]["type"] == actions[1]["type"] == "error"
    assert "not a key a directory holds" in actions[0]["msg"]
    assert actions[1]["msg"].startswith("key too long")
    assert actions[2]["type"] == "upload"


@pytest.mark.gen_test(timeout=60)
async def test_a_v1_member_the_directory_cannot_hold_fails_the_upload_at_once(runtime, ready):
    debug = ident()
    members = {
        f"x.pdb/{debug}/x.sym": b"MODULE x\n",
        f"x.pdb/{debug}/{LONG_FILE}": b"MODULE\n",
        f".meta/{debug}/x.sym": b"MODULE\n",
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
           VALUES ($1, 'long.zip', $2, $3, $4) RETURNING id""",
        user_id,
        destination.bucket,
        str(staged),
        destination.url,
    )
    await process.process_upload(runtime, upload_id)  # one attempt decides: nothing to retry
    row = await runtime.db.fetchrow("SELECT * FROM uploads WHERE id = $1", upload_id)
    assert (row["error_status"], row["attempts"]) == (400, 1)
    assert f"x.pdb/{debug}/{LONG_FILE}: key too long" in row["error"]
    assert f".meta/{debug}/x.sym: not a key a directory holds" in row["error"]
    store = runtime.stores.at(destination)
    assert not await store.exists(destination.object_key(f"x.pdb/{debug}/x.sym"))  # all or none
    assert not staged.exists()
