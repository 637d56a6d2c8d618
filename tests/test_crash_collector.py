"""The collector's guarantees: client-supplied ids, throttling, storage and broker outages, the
directory store, start-up checks and the operator's commands (spec/crashes.md §4, §5, §7 to §9)."""

from __future__ import annotations

import asyncio
import json

import pytest
import redis

from symbolon.crashes.crashid import create_crash_id
from symbolon.crashes.storage import StorageError
from symbolon.server.embedded import EmbeddedRedis
from symbolon.server.lifecycle import StartupError, connect
from tests.cli import env_for, symbolon
from tests.conftest import run_isolated, s3_client, served
from tests.crashes import headers_for, report, unique_queue
from tests.test_submit import crash_id_of, crash_keys, post, published

TOKEN = "stage-submitter-secret"
MINIDUMP = {"upload_file_minidump": b"MDMP\x93\xa7"}


@pytest.fixture
def crash_settings(live_settings):
    return live_settings.replace(
        crashmover_retry_sleep_seconds=0.01,
        crashpublish_queue_name=unique_queue(),
        breakpad_stage_submitter_bearer_token=TOKEN,
    )


def an_id(result: int = 0) -> str:
    from datetime import UTC, datetime

    return create_crash_id(datetime(2024, 2, 29, 23, 59, tzinfo=UTC), result)


@pytest.mark.gen_test(timeout=30)
async def test_a_stage_submitter_keeps_its_crash_id_and_date(crash_settings):
    crash_id = an_id()
    async with served(crash_settings) as (client, base_url):
        body = report({"ProductName": "X", "uuid": crash_id}, MINIDUMP)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        response = await post(client, base_url, body, headers_for(**headers))
        assert crash_id_of(response) == crash_id
        assert f"v1/raw_crash/20240229/{crash_id}" in crash_keys(crash_settings, crash_id)
        assert published(crash_settings) == [crash_id]


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize(
    "authorization", [None, "Bearer wrong", f"bearer {TOKEN}", f"Bearer  {TOKEN}", TOKEN]
)
async def test_a_uuid_without_the_bearer_token_is_401(crash_settings, authorization):
    async with served(crash_settings) as (client, base_url):
        body = report({"ProductName": "X", "uuid": an_id()}, MINIDUMP)
        extra = {"Authorization": authorization} if authorization else {}
        response = await post(client, base_url, body, headers_for(**extra))
        assert (response.code, response.body) == (401, b"Discarded=unauthorized_uuid")
        assert published(crash_settings) == []


@pytest.mark.gen_test(timeout=30)
async def test_a_uuid_in_json_extra_needs_the_token_too(live_settings):
    settings = live_settings.replace(crashpublish_queue_name=unique_queue())  # no token set
    async with served(settings) as (client, base_url):
        body = report(extra={"ProductName": "X", "uuid": an_id()})
        response = await post(client, base_url, body)
        assert (response.code, response.body) == (401, b"Discarded=unauthorized_uuid")


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize(
    "bad", [an_id().upper(), an_id(2), an_id(3), an_id()[:-1], "not-a-crash-id"]
)
async def test_an_authorised_but_invalid_uuid_is_malformed(crash_settings, bad):
    async with served(crash_settings) as (client, base_url):
        body = report({"ProductName": "X", "uuid": bad}, MINIDUMP)
        response = await post(client, base_url, body, headers_for(Authorization=f"Bearer {TOKEN}"))
        assert (response.code, response.body) == (400, b"Discarded=malformed_invalid_uuid")


@pytest.fixture
def mozilla(crash_settings):
    return crash_settings.replace(
        breakpad_throttler_rules="antenna.throttler.MOZILLA_RULES",
        breakpad_throttler_products="antenna.throttler.MOZILLA_PRODUCTS",
        breakpad_throttler_product_packagenames="antenna.throttler.MOZILLA_PRODUCT_PACKAGENAMES",
    )


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize(
    ("annotations", "answer"),
    [
        ({"ProductName": "Foo"}, "Discarded=rule_unsupported_product"),
        ({}, "Discarded=rule_unsupported_product"),
        ({"ProductName": "Fenix"}, "Discarded=rule_unsupported_packagename"),
        (
            {"ProductName": "Firefox", "BuildID": "20100101000000"},
            "Discarded=rule_has_old_buildid",
        ),
        ({"ProductName": "Firefox", "HangID": "x"}, "Discarded=rule_has_hangid_and_browser"),
    ],
)
async def test_mozilla_rules_reject_with_200_and_store_nothing(mozilla, annotations, answer):
    async with served(mozilla) as (client, base_url):
        body = report({"Other": "x", **annotations}, MINIDUMP)
        response = await post(client, base_url, body)
        assert (response.code, response.body.decode()) == (200, answer)
        assert published(mozilla) == []


@pytest.mark.gen_test(timeout=30)
async def test_mozilla_rules_accept_nightly_and_fake_accept_b2g(mozilla):
    async with served(mozilla) as (client, base_url):
        nightly = report({"ProductName": "Firefox", "ReleaseChannel": "nightly"}, MINIDUMP)
        accepted = crash_id_of(await post(client, base_url, nightly))
        assert accepted[-7] == "0"
        fake = crash_id_of(await post(client, base_url, report({"ProductName": "B2G"}, MINIDUMP)))
        assert fake[-7] == "3"
        assert crash_keys(mozilla, fake) == []  # answered, never stored
        assert published(mozilla) == [accepted]


@pytest.mark.gen_test(timeout=30)
async def test_a_rejected_stage_crash_is_still_rejected(mozilla):
    async with served(mozilla) as (client, base_url):
        body = report({"ProductName": "Foo", "uuid": an_id()}, MINIDUMP)
        response = await post(client, base_url, body, headers_for(Authorization=f"Bearer {TOKEN}"))
        assert response.body == b"Discarded=rule_unsupported_product"


class FailingRawCrashWrites:
    """Fault injection: the raw crash (written last) cannot be stored while ``down``."""

    def __init__(self, storage):
        self.storage = storage
        self.down = True
        self.original = storage._put

    async def __call__(self, key, body):
        if self.down and key.startswith("v1/raw_crash/"):
            raise StorageError(f"cannot write {key}: injected outage")
        await self.original(key, body)


def object_count(settings) -> int:
    client = s3_client(settings.crash_endpoint_url)
    paginator = client.get_paginator("list_objects_v2")
    return sum(
        page.get("KeyCount", 0) for page in paginator.paginate(Bucket=settings.crash_bucket_name)
    )


@pytest.mark.gen_test(timeout=60)
async def test_a_storage_outage_is_a_503_and_nothing_is_stored_twice(crash_settings, caplog):
    settings = crash_settings.replace(crashmover_max_attempts=3)
    server = served(settings)
    async with server as (client, base_url):
        storage = server.runtime.collector.storage
        fault = storage._put = FailingRawCrashWrites(storage)
        before = object_count(settings)
        body = report({"ProductName": "X"}, MINIDUMP)
        response = await post(client, base_url, body)
        assert (response.code, response.body) == (503, b"")
        assert response.headers["Retry-After"] == "60"
        assert "too many errors trying to save; dropped" in caplog.text
        assert caplog.text.count("CrashMover.crashmover_save: exception") == 3
        assert object_count(settings) == before  # the partly saved crash was removed
        assert published(settings) == []

        fault.down = False  # storage is back; the client sends the same report again
        crash_id = crash_id_of(await post(client, base_url, body))
        assert object_count(settings) == before + 3  # dump_names, dump, raw_crash: once
        assert published(settings) == [crash_id]


@pytest.fixture
def own_redis(tmp_path):
    """A broker of this test's own, so pausing it disturbs no other test."""
    server = EmbeddedRedis(tmp_path, "broker", {"save": ""})
    url = server.start()
    yield url
    server.stop()


@pytest.mark.gen_test(timeout=60)
async def test_a_broker_outage_saves_the_crash_and_publishes_it_later(crash_settings, own_redis):
    settings = crash_settings.replace(redis_url=own_redis, redis_socket_timeout=0.5)
    server = served(settings)
    async with server as (client, base_url):
        collector = server.runtime.collector
        admin = redis.Redis.from_url(own_redis)
        admin.execute_command("CLIENT", "PAUSE", 2000, "ALL")
        admin.close()
        crash_id = crash_id_of(await post(client, base_url, report({"ProductName": "X"}, MINIDUMP)))
        assert await collector.storage.load_raw_crash(crash_id) is not None
        assert await collector.storage.unpublished() == [crash_id]

        await asyncio.sleep(2.5)  # the pause ends
        assert await collector.republish_pending() == 1
        assert published(settings) == [crash_id]
        assert await collector.storage.unpublished() == []
        assert await collector.republish_pending() == 0


@pytest.mark.gen_test(timeout=30)
async def test_directory_storage_uses_the_date_first_layout(crash_settings, tmp_path):
    root = tmp_path / "crashes"
    settings = crash_settings.replace(crash_storage="fs", crash_fs_root=root)
    async with served(settings) as (client, base_url):
        dumps = {"upload_file_minidump": b"MDMP", "memory_report": b"{}"}
        crash_id = crash_id_of(await post(client, base_url, report({"ProductName": "X"}, dumps)))
    day = root / ("20" + crash_id[-6:])
    assert json.loads((day / "raw_crash" / f"{crash_id}.json").read_text())["uuid"] == crash_id
    assert json.loads((day / "dump_names" / f"{crash_id}.json").read_text()) == [
        "memory_report",
        "upload_file_minidump",
    ]
    assert (day / "upload_file_minidump" / crash_id).read_bytes() == b"MDMP"  # not renamed
    assert (day / "memory_report" / crash_id).read_bytes() == b"{}"
    assert published(settings) == [crash_id]


@pytest.mark.gen_test(timeout=30)
async def test_directory_storage_write_failures_are_save_failures(crash_settings, tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    settings = crash_settings.replace(
        crash_storage="fs", crash_fs_root=blocker, crashmover_max_attempts=2
    )
    async with served(settings) as (client, base_url):
        response = await post(client, base_url, report({"ProductName": "X"}, MINIDUMP))
        assert response.code == 503
        assert published(settings) == []


@pytest.mark.gen_test(timeout=30)
async def test_start_up_publishes_test_and_probes_the_bucket(crash_settings):
    runtime = await connect(crash_settings)
    await runtime.close()
    assert published(crash_settings) == ["test"]
    client = s3_client(crash_settings.crash_endpoint_url)
    listing = client.list_objects_v2(Bucket=crash_settings.crash_bucket_name, Prefix="test/")
    assert listing.get("KeyCount", 0) == 0  # the probe object was deleted again


@pytest.mark.gen_test(timeout=30)
async def test_start_up_refuses_a_missing_crash_bucket_naming_it(crash_settings):
    # Only the embedded server gets buckets made for it: this one is "real".
    settings = crash_settings.replace(
        crash_bucket_name="no-such-crash-bucket", crash_storage_is_embedded=False
    )
    with pytest.raises(StartupError) as caught:
        await connect(settings)
    message = str(caught.value)
    assert "no-such-crash-bucket" in message
    assert "CRASHMOVER_CRASHSTORAGE_BUCKET_NAME" in message


@pytest.mark.gen_test(timeout=30)
async def test_heartbeat_reports_a_missing_crash_bucket(crash_settings):
    settings = crash_settings.replace(crash_bucket_name="no-such-crash-bucket")
    async with served(settings) as (client, base_url):
        response = await client.fetch(base_url + "/__heartbeat__", raise_error=False)
    body = json.loads(response.body)
    assert response.code == 500
    assert body["checks"]["check_crash_storage"] == "error"
    assert (
        "no-such-crash-bucket"
        in body["details"]["check_crash_storage"]["messages"]["symbolon.health.E030"]
    )


def test_operators_can_list_show_and_republish_crashes(crash_settings):
    from symbolon.crashes.storage import S3CrashStorage, raw_crash_json

    crash_id = an_id()
    raw = {"ProductName": "Cli", "uuid": crash_id}

    async def arrange() -> None:
        storage = S3CrashStorage(crash_settings)
        await storage.save(crash_id, raw_crash_json(raw), {"upload_file_minidump": b"MDMP"})
        await storage.mark_unpublished(crash_id)
        await storage.close()

    run_isolated(arrange())
    env = env_for(
        crash_settings, CRASHMOVER_CRASHPUBLISH_QUEUE_NAME=crash_settings.crashpublish_queue_name
    )

    listed = symbolon("crashes", "list", "--date", "2024-02-29", env=env)
    assert listed.returncode == 0, listed.stderr
    assert crash_id in listed.stdout.split()

    shown = symbolon("crashes", "show", f"bp-{crash_id}", env=env)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == raw

    missing = symbolon("crashes", "show", an_id(), env=env)
    assert missing.returncode == 1 and "no crash" in missing.stderr

    republished = symbolon("crashes", "republish", env=env)
    assert republished.returncode == 0, republished.stderr
    assert published(crash_settings) == [crash_id]
    again = symbolon("crashes", "republish", env=env)
    assert "published 0 crash id(s)" in again.stdout
