"""Processed crashes in the crash store (crashes/store.py): written beside the raw crash by both
backends, replaced whole when a crash is processed again, and read back; and the crash index
rows, whatever the crash's texts."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from symbolon.crashes.crashid import create_crash_id
from symbolon.crashes.stores.directory import FSCrashStorage
from symbolon.crashes.stores.s3 import S3CrashStorage, processed_crash_key
from symbolon.processing.pipeline import records
from symbolon.storage.s3 import S3Clients
from tests.conftest import s3_client


async def round_trip(storage) -> None:
    crash_id = create_crash_id(datetime.now(UTC), 0)
    assert await storage.load_processed(crash_id) is None
    first = json.dumps({"uuid": crash_id, "signature": "first"}).encode()
    await storage.save_processed(crash_id, first)
    assert await storage.load_processed(crash_id) == first
    second = json.dumps({"uuid": crash_id, "signature": "second"}).encode()
    await storage.save_processed(crash_id, second)  # processing again replaces it
    assert await storage.load_processed(crash_id) == second
    # The raw crash is not touched, nor listed among the day's crashes by it.
    assert await storage.load_raw_crash(crash_id) is None
    assert crash_id not in await storage.list_crash_ids(f"20{crash_id[-6:]}")


@pytest.mark.gen_test
async def test_a_directory_keeps_the_processed_crash_under_its_day(tmp_path):
    storage = FSCrashStorage(tmp_path)
    await round_trip(storage)
    (written,) = tmp_path.glob("*/processed_crash/*.json")
    assert written.parent.parent.name == datetime.now(UTC).strftime("%Y%m%d")
    # Written under a temporary name and renamed: nothing else is left in the directory.
    assert [p.name for p in written.parent.iterdir()] == [written.name]
    await storage.close()


@pytest.mark.gen_test
async def test_a_bucket_keeps_it_where_socorro_keeps_processed_crashes(live_settings):
    s3 = S3Clients(live_settings)
    storage = S3CrashStorage(live_settings, s3)
    try:
        await round_trip(storage)
        crash_id = create_crash_id(datetime.now(UTC), 0)
        await storage.save_processed(crash_id, b"{}")
        listing = s3_client(live_settings.crash_endpoint_url).list_objects_v2(
            Bucket=live_settings.crash_bucket_name, Prefix=processed_crash_key(crash_id)
        )
        assert [o["Key"] for o in listing["Contents"]] == [f"v1/processed_crash/{crash_id}"]
    finally:
        await s3.close()


@pytest.mark.gen_test
async def test_the_index_keeps_what_postgresql_can_index(runtime):
    # Annotations, module names and reasons come from the crash: long ones, non-ASCII ones and
    # ones with NUL still make a row (a B-tree entry holds about 2,700 bytes; text holds no NUL).
    crash_id = create_crash_id(datetime.now(UTC), 0)
    raw = {"ProductName": "Produkt\x00 " + "ü" * 2000, "Version": "1" * 5000}
    meta = records.meta_of(raw, crash_id)
    await records.start(runtime.db, crash_id, meta)
    long_module = ("€" * 3000 + ".so", "ab" * 200)
    await records.finish(runtime.db, crash_id, meta, "s" * 255, [long_module], reason=None)
    row = await records.find(runtime.db, crash_id)
    assert row["product"] == ("Produkt " + "ü" * 2000)[:255]
    assert len(row["version"]) == 255
    assert row["state"] == "processed"
    missing = await runtime.db.fetch(
        "SELECT debug_file, debug_id FROM crash_missing_modules WHERE crash_id = $1", crash_id
    )
    assert [(len(r["debug_file"]), len(r["debug_id"])) for r in missing] == [(255, 255)]
    await records.finish(runtime.db, crash_id, meta, None, reason="x\x00" * 2000)
    row = await records.find(runtime.db, crash_id)
    assert (row["state"], len(row["reason"])) == ("failed", 1000)


@pytest.mark.gen_test
async def test_the_index_takes_a_crash_whose_texts_hold_lone_surrogates(runtime):
    # JSON allows "\ud800" alone; PostgreSQL takes only UTF-8: the row is made all the same.
    crash_id = create_crash_id(datetime.now(UTC), 0)
    raw = json.loads(b'{"ProductName": "\\ud800Prod", "Version": "1\\udfff", "prod": "x"}')
    meta = records.meta_of(raw, crash_id)
    await records.start(runtime.db, crash_id, meta)
    row = await records.find(runtime.db, crash_id)
    assert (row["state"], row["product"], row["version"]) == ("pending", "\ufffdProd", "1\ufffd")
    await records.finish(runtime.db, crash_id, meta, "f\udc00", [("m\ud801.so", "AB")])
    row = await records.find(runtime.db, crash_id)
    assert (row["state"], row["signature"]) == ("processed", "f\ufffd")
    missing = await runtime.db.fetchval(
        "SELECT debug_file FROM crash_missing_modules WHERE crash_id = $1", crash_id
    )
    assert missing == "m\ufffd.so"
    await records.finish(runtime.db, crash_id, meta, None, reason="bad \ud800")
    row = await records.find(runtime.db, crash_id)
    assert (row["state"], row["reason"]) == ("failed", "bad \ufffd")
