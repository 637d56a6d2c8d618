"""POST /upload/ while the task broker's Redis stops answering: the upload is not left
"processing" with no task queued for it (docs/upload.md, "What happens")."""

from __future__ import annotations

import json
import uuid

import pytest

from symbolon.tasks.broker import setup_broker
from tests.conftest import served
from tests.redis_pause import pause
from tests.uploads import UPLOAD, debug_id, make_zip, multipart, post, token_for


@pytest.mark.gen_test(timeout=60)
async def test_an_upload_while_the_broker_is_paused_fails_with_a_503(
    live_settings, own_redis, tmp_path
):
    settings = live_settings.replace(redis_url=own_redis, upload_tempdir=tmp_path / "staging")
    broker = setup_broker(settings)
    app = served(settings)
    try:
        async with app as (client, base):
            token, _ = await token_for(app.runtime, UPLOAD)
            name = f"paused-{uuid.uuid4().hex[:8]}.zip"
            body, content_type = multipart({name: make_zip({f"p.pdb/{debug_id()}/p.sym": b"M"})})
            await pause(own_redis, settings)
            response = await post(client, base, body, content_type, token)
            row = await app.runtime.db.fetchrow("SELECT * FROM uploads WHERE filename = $1", name)
    finally:
        broker.close()
    assert response.code == 503, response.body
    assert response.headers["Retry-After"] == "30"
    assert "task queue is unavailable" in json.loads(response.body)["error"]
    assert row["failed_at"] is not None and row["error_status"] == 503
    assert list(settings.staging_dir.glob("*")) == []
