"""Try symbols expire after TRY_SYMBOLS_EXPIRY_DAYS."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from symbolon.symbols.expiry import expire_try_symbols
from symbolon.tasks.broker import Scheduler, setup_broker
from tests.cli import env_for, invoke
from tests.conftest import s3_client, s3_endpoint, unique_email


def ident() -> str:
    return uuid.uuid4().hex.upper() + "1"


@pytest.mark.gen_test(timeout=60)
async def test_old_try_symbols_are_deleted_everything_else_kept(runtime, settings):
    s3 = s3_client(s3_endpoint(settings))
    old_key, regular_key = f"old.pdb/{ident()}/old.sym", f"keep.pdb/{ident()}/keep.sym"
    s3.put_object(Bucket="symbols", Key=f"try/v1/{old_key}", Body=b"MODULE")
    s3.put_object(Bucket="symbols", Key=f"v1/{regular_key}", Body=b"MODULE")
    user_id = await runtime.db.fetchval(
        "INSERT INTO users (email) VALUES ($1) RETURNING id", unique_email()
    )
    ancient = datetime.now(UTC) - timedelta(days=40)
    old_upload = await runtime.db.fetchval(
        """INSERT INTO uploads (user_id, bucket_name, try_symbols, created_at)
           VALUES ($1, 'symbols', true, $2) RETURNING id""",
        user_id,
        ancient,
    )
    await runtime.db.execute(
        "INSERT INTO file_uploads (upload_id, bucket_name, key) VALUES ($1, 'symbols', $2)",
        old_upload,
        f"try/v1/{old_key}",
    )
    old_regular = await runtime.db.fetchval(
        """INSERT INTO uploads (user_id, bucket_name, try_symbols, created_at)
           VALUES ($1, 'symbols', false, $2) RETURNING id""",
        user_id,
        ancient,
    )
    assert await runtime.lookup.find(old_key, include_try=True) is not None  # cached as found

    # Objects in the embedded S3 are new; look from 30 days in the future instead.
    done = await expire_try_symbols(runtime, days=28, now=datetime.now(UTC) + timedelta(days=30))
    assert done.objects >= 1 and done.uploads >= 1 and done.files >= 1
    listed = s3.list_objects_v2(Bucket="symbols", Prefix=f"try/v1/{old_key}")
    assert listed.get("KeyCount", 0) == 0
    s3.head_object(Bucket="symbols", Key=f"v1/{regular_key}")  # regular symbols never expire
    assert await runtime.db.fetchval("SELECT count(*) FROM uploads WHERE id = $1", old_upload) == 0
    assert await runtime.db.fetchval("SELECT count(*) FROM uploads WHERE id = $1", old_regular) == 1
    assert await runtime.lookup.find(old_key, include_try=True) is None  # the cache forgot it


@pytest.mark.gen_test(timeout=60)
async def test_recent_try_symbols_stay(runtime, settings):
    s3 = s3_client(s3_endpoint(settings))
    key = f"new.pdb/{ident()}/new.sym"
    s3.put_object(Bucket="symbols", Key=f"try/v1/{key}", Body=b"MODULE")
    await expire_try_symbols(runtime, days=28)
    s3.head_object(Bucket="symbols", Key=f"try/v1/{key}")


def test_one_process_sends_the_periodic_task_per_period(live_settings):
    broker = setup_broker(live_settings)
    try:
        broker.client.delete("symbolon:schedule:expire_try_symbols")
        first, second = Scheduler(broker, period=60), Scheduler(broker, period=60)
        assert first.tick() is True
        assert second.tick() is False  # another process already sent it this period
        assert broker.client.ttl("symbolon:schedule:expire_try_symbols") > 0
    finally:
        broker.client.delete("symbolon:schedule:expire_try_symbols")
        broker.close()


def test_cleanup_command(live_settings):
    result = invoke("cleanup", "--days", "28", env=env_for(live_settings))
    assert result.returncode == 0, result.stderr
    assert "try object(s)" in result.stdout
