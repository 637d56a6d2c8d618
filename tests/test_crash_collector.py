"""The collector's guarantees: client-supplied ids, throttling, storage and broker outages, the
directory store, start-up checks and the operator's commands (docs/crashes.md)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import threading
import uuid
from pathlib import Path

import pytest
import redis
from markus.testing import MetricsMock
from tornado.httpclient import AsyncHTTPClient

from symbolon.crashes.collector import Submission
from symbolon.crashes.crashid import create_crash_id
from symbolon.crashes.payload import Payload
from symbolon.crashes.store import StorageError
from symbolon.crashes.stores.directory import DUMP_WRITERS, FSCrashStorage
from symbolon.server.lifecycle import StartupError, connect, serve_forever
from tests.cli import env_for, invoke
from tests.conftest import free_port, run_isolated, s3_client, served, wait_until
from tests.crashes import (
    EarlyAnsweringS3,
    crash_id_of,
    crash_keys,
    headers_for,
    post,
    published,
    report,
    unique_queue,
)

TOKEN = "stage-submitter-secret"
MINIDUMP = {"upload_file_minidump": b"MDMP\x93\xa7"}
COLLECTOR = "socorro.collector.breakpad_resource."
MOVER = "socorro.collector.crashmover."


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
    with MetricsMock() as mm:
        async with served(crash_settings) as (client, base_url):
            body = report({"ProductName": "X", "uuid": an_id()}, MINIDUMP)
            extra = {"Authorization": authorization} if authorization else {}
            response = await post(client, base_url, body, headers_for(**extra))
            assert (response.code, response.body) == (401, b"Discarded=unauthorized_uuid")
            assert published(crash_settings) == []
    assert mm.has_record("incr", COLLECTOR + "unauthorized_uuid")


@pytest.mark.gen_test(timeout=30)
async def test_a_uuid_in_json_extra_needs_the_token_too(live_settings):
    settings = live_settings.replace(crashpublish_queue_name=unique_queue())  # no token set
    server = served(settings)
    async with server as (client, base_url):
        body = report(extra={"ProductName": "X", "uuid": an_id()})
        response = await post(client, base_url, body)
        assert (response.code, response.body) == (401, b"Discarded=unauthorized_uuid")
        # No token configured is not an empty token that an empty bearer matches (HTTP trims
        # the header's trailing space, so this is asked of the collector itself).
        payload = Payload(annotations={"ProductName": "X", "uuid": an_id()})
        request = Submission(None, 0, compressed=False, authorization="Bearer ")
        answer = await server.runtime.collector.submit(payload, request)
        assert (answer.status, answer.body) == (401, "Discarded=unauthorized_uuid")


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
    with MetricsMock() as mm:
        async with served(mozilla) as (client, base_url):
            before = object_count(mozilla)
            body = report({"Other": "x", **annotations}, MINIDUMP)
            response = await post(client, base_url, body)
            assert (response.code, response.body.decode()) == (200, answer)
            assert published(mozilla) == []
            assert object_count(mozilla) == before
    assert mm.has_record("incr", COLLECTOR + "throttle", tags=["result:reject"])
    rule = answer.removeprefix("Discarded=rule_")
    assert mm.has_record("incr", COLLECTOR + "throttle_rule", tags=[f"rule:{rule}"])


@pytest.mark.gen_test(timeout=30)
async def test_mozilla_rules_accept_nightly_and_fake_accept_b2g(mozilla):
    with MetricsMock() as mm:
        async with served(mozilla) as (client, base_url):
            nightly = report({"ProductName": "Firefox", "ReleaseChannel": "nightly"}, MINIDUMP)
            accepted = crash_id_of(await post(client, base_url, nightly))
            assert accepted[-7] == "0"
            b2g = report({"ProductName": "B2G"}, MINIDUMP)
            fake = crash_id_of(await post(client, base_url, b2g))
            assert fake[-7] == "3"
            assert crash_keys(mozilla, fake) == []  # answered, never stored
            assert published(mozilla) == [accepted]
    assert mm.has_record("incr", COLLECTOR + "throttle", tags=["result:accept"])
    assert mm.has_record("incr", COLLECTOR + "throttle", tags=["result:fakeaccept"])
    assert len(mm.filter_records("incr", MOVER + "save_crash.count")) == 1


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
    mm = MetricsMock()
    async with server as (client, base_url):
        storage = server.runtime.collector.storage
        fault = storage._put = FailingRawCrashWrites(storage)
        before = object_count(settings)
        body = report({"ProductName": "X"}, MINIDUMP)
        with mm:
            response = await post(client, base_url, body)
        assert (response.code, response.body) == (503, b"")
        assert response.headers["Retry-After"] == "60"
        assert "too many errors trying to save; dropped" in caplog.text
        assert caplog.text.count("CrashMover.crashmover_save: exception") == 3
        assert object_count(settings) == before  # the partly saved crash was removed
        assert published(settings) == []
        retries = mm.filter_records("incr", MOVER + "retry_count")
        assert [r.tags for r in retries] == [["count:save_crash_exception.count"]] * 2
        assert len(mm.filter_records("incr", MOVER + "save_crash_dropped.count")) == 1
        assert mm.filter_records("incr", MOVER + "save_crash.count") == []

        fault.down = False  # storage is back; the client sends the same report again
        crash_id = crash_id_of(await post(client, base_url, body))
        assert object_count(settings) == before + 3  # dump_names, dump, raw_crash: once
        assert published(settings) == [crash_id]


class SlowDownStorm:
    """Fault injection around the real S3 store: one dump write fails, and the write after it
    goes to an endpoint that answers before reading the body, as S3 under load does."""

    def __init__(self, storage, early_endpoint: str):
        self.storage = storage
        self.early_endpoint = early_endpoint
        self.put = storage._put
        self.client = storage.client
        self.state = "healthy"  # then "failed", then "early", then "over"
        storage._put = self._put
        storage.client = self._client

    async def _put(self, key, body):
        if self.state == "healthy" and key.startswith("v1/dump/"):
            self.state = "failed"
            raise StorageError(f"cannot write {key}: SlowDown (injected)")
        if self.state == "failed":
            self.state = "early"
            try:
                return await self.put(key, body)
            finally:
                self.state = "over"
        return await self.put(key, body)

    async def _client(self):
        if self.state == "early":
            return await self.storage._s3.client_for(
                self.early_endpoint, self.storage.region, "crash", self.storage._credentials
            )
        return await self.client()


@pytest.mark.gen_test(timeout=60)
async def test_a_failed_dump_write_then_an_early_answer_is_a_503_leaving_nothing(crash_settings):
    settings = crash_settings.replace(crashmover_max_attempts=2)
    server, early = served(settings), EarlyAnsweringS3()
    async with server as (client, base_url), early as early_endpoint:
        storage = server.runtime.collector.storage
        fault = SlowDownStorm(storage, early_endpoint)
        before = object_count(settings)
        response = await post(client, base_url, report({"ProductName": "X"}, MINIDUMP))
        assert fault.state == "over" and early.requests >= 1
        assert (response.code, response.body) == (503, b"")
        assert response.headers["Retry-After"] == "60"
        assert object_count(settings) == before  # the first attempt's writes were removed
        assert published(settings) == []


@pytest.mark.gen_test(timeout=60)
async def test_a_broker_outage_saves_the_crash_and_publishes_it_later(crash_settings, own_redis):
    settings = crash_settings.replace(redis_url=own_redis, redis_socket_timeout=0.5)
    server = served(settings)
    async with server as (client, base_url):
        collector = server.runtime.collector
        admin = redis.Redis.from_url(own_redis)
        admin.execute_command("CLIENT", "PAUSE", 2000, "ALL")
        admin.close()
        with MetricsMock() as mm:
            body = report({"ProductName": "X"}, MINIDUMP)
            crash_id = crash_id_of(await post(client, base_url, body))
        assert await collector.storage.load_raw_crash(crash_id) is not None
        assert await collector.storage.unpublished() == [crash_id]
        assert len(mm.filter_records("incr", MOVER + "publish_crash_dropped.count")) == 1
        assert mm.filter_records("incr", MOVER + "save_crash.count") == []

        await asyncio.sleep(2.5)  # the pause ends
        assert await collector.republish_pending() == 1
        assert published(settings) == [crash_id]
        assert await collector.storage.unpublished() == []
        assert await collector.republish_pending() == 0


@pytest.mark.gen_test(timeout=60)
async def test_serve_publishes_later_what_a_broker_outage_left(crash_settings, own_redis, tmp_path):
    # Nobody calls republish_pending here: the loop that serve runs beside the server does.
    root = tmp_path / "crashes"
    settings = crash_settings.replace(
        redis_url=own_redis,
        redis_socket_timeout=0.5,
        crash_storage="fs",
        crash_fs_root=root,
        crashpublish_retry_seconds=0.3,
        host="127.0.0.1",
        port=free_port(),
        worker_threads=0,
    )
    stop = asyncio.Event()
    serving = asyncio.create_task(serve_forever(settings, stop))
    try:
        base_url = f"http://127.0.0.1:{settings.port}"
        client = AsyncHTTPClient()
        for _ in range(100):
            if serving.done():
                serving.result()  # start-up failed: say why
            with contextlib.suppress(OSError):
                await client.fetch(base_url + "/__lbheartbeat__")
                break
            await asyncio.sleep(0.1)
        admin = redis.Redis.from_url(own_redis)
        admin.execute_command("CLIENT", "PAUSE", 1500, "ALL")
        admin.close()
        crash_id = crash_id_of(await post(client, base_url, report({"ProductName": "X"}, MINIDUMP)))
        marker = root / "symbolon" / "unpublished" / crash_id
        assert marker.exists()  # the publish failed
        assert await wait_until(lambda: not marker.exists(), seconds=10)
        assert published(settings) == sorted([crash_id, "test"])  # and the start-up check's
    finally:
        stop.set()
        await serving


@pytest.mark.gen_test(timeout=60)
async def test_a_crash_saved_by_a_request_that_died_before_publishing_is_published_once(
    crash_settings,
):
    server = served(crash_settings)
    async with server as (client, base_url):
        collector = server.runtime.collector
        storage = collector.storage
        body = report({"ProductName": "X"}, MINIDUMP)
        whole = crash_id_of(await post(client, base_url, body))
        assert published(crash_settings) == [whole]
        assert await storage.publishing(0) == []  # a published crash leaves no mark

        publish = collector.publish

        async def died(crash_id):  # the process is killed once the crash is stored
            pass

        collector.publish = died
        orphan = crash_id_of(await post(client, base_url, body))
        collector.publish = publish
        assert await storage.load_raw_crash(orphan) is not None
        assert published(crash_settings) == [whole]
        half = an_id()  # killed in the middle of saving: no raw crash, no crash id given
        await storage.mark_publishing(half)

        assert await collector.republish_pending() == 0  # the marks are still young
        collector.publish_grace_seconds = 0
        assert await collector.republish_pending() == 1
        assert published(crash_settings) == sorted([whole, orphan])
        assert await storage.publishing(0) == []
        assert await collector.republish_pending() == 0
        assert published(crash_settings) == sorted([whole, orphan])


@pytest.mark.gen_test(timeout=60)
async def test_serve_publishes_a_crash_its_killed_predecessor_saved_but_did_not_publish(
    crash_settings, tmp_path
):
    root = tmp_path / "crashes"
    settings = crash_settings.replace(
        crash_storage="fs",
        crash_fs_root=root,
        crashpublish_retry_seconds=0.3,
        host="127.0.0.1",
        port=free_port(),
        worker_threads=0,
    )
    crash_id = an_id()
    storage = FSCrashStorage(root)
    await storage.mark_publishing(crash_id)  # what a request does before saving
    await storage.save(crash_id, b'{"ProductName": "X"}', MINIDUMP)
    await storage.close()
    marker = root / "symbolon" / "publishing" / crash_id
    an_hour_ago = marker.stat().st_mtime - 3600
    os.utime(marker, (an_hour_ago, an_hour_ago))  # killed an hour ago, then started again

    stop = asyncio.Event()
    serving = asyncio.create_task(serve_forever(settings, stop))
    try:
        assert await wait_until(lambda: serving.done() or not marker.exists(), seconds=30)
        assert not serving.done(), serving
        assert published(settings) == sorted([crash_id, "test"])  # and the start-up check's
    finally:
        stop.set()
        await serving
    assert published(settings) == sorted([crash_id, "test"])


@pytest.mark.parametrize("fsync", [False, True])
@pytest.mark.gen_test(timeout=30)
async def test_directory_storage_uses_the_date_first_layout(crash_settings, tmp_path, fsync):
    root = tmp_path / "crashes"
    settings = crash_settings.replace(crash_storage="fs", crash_fs_root=root, crash_fs_fsync=fsync)
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


def open_files(under: Path) -> list[str]:
    """The files under a directory that this process holds open."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # an fd closed meanwhile
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith(str(under)):
                found.append(target)
    return found


@pytest.mark.gen_test(timeout=30)
async def test_a_dump_the_writer_thread_cannot_write_is_a_503_leaving_nothing(
    crash_settings, tmp_path
):
    root = tmp_path / "crashes"
    settings = crash_settings.replace(
        crash_storage="fs", crash_fs_root=root, crashmover_max_attempts=2
    )
    server = served(settings)
    async with server as (client, base_url):
        storage = server.runtime.collector.storage
        write_fd = storage._write_fd

        def full_disk(fd, data):
            if len(data) == len(MINIDUMP["upload_file_minidump"]):
                raise OSError(28, "injected: No space left on device")
            write_fd(fd, data)

        storage._write_fd = full_disk
        response = await post(client, base_url, report({"ProductName": "X"}, MINIDUMP))
        assert response.code == 503
        assert response.headers["Retry-After"] == "60"
        assert open_files(root) == []  # the writer closed what it opened
        assert [p for p in root.rglob("*") if p.is_file()] == []  # the partial crash is gone
        assert published(settings) == []

        storage._write_fd = write_fd  # the disk has room again
        crash_id = crash_id_of(await post(client, base_url, report({"ProductName": "X"}, MINIDUMP)))
        day = root / ("20" + crash_id[-6:])
        assert (day / "upload_file_minidump" / crash_id).read_bytes() == b"MDMP\x93\xa7"
        raw = json.loads((day / "raw_crash" / f"{crash_id}.json").read_text())
        assert raw["metadata"]["dump_checksums"] == {
            "upload_file_minidump": hashlib.sha256(b"MDMP\x93\xa7").hexdigest()
        }


@pytest.mark.gen_test(timeout=30)
async def test_a_save_cancelled_before_its_writer_starts_still_closes_its_files(tmp_path):
    root = tmp_path / "crashes"
    storage = FSCrashStorage(root)
    release = threading.Event()
    write_dumps = storage._write_dumps

    def slow(files, raw_crash):
        release.wait(10)  # every writer thread is busy
        return write_dumps(files, raw_crash)

    storage._write_dumps = slow
    busy = [
        asyncio.ensure_future(storage.save(an_id(), b"{}", {"upload_file_minidump": b"MDMP"}))
        for _ in range(DUMP_WRITERS)
    ]
    queued_id = an_id()
    queued = asyncio.ensure_future(
        storage.save(queued_id, b"{}", {"upload_file_minidump": b"MDMP"})
    )
    await asyncio.sleep(0.2)
    queued.cancel()  # its write has not started
    await asyncio.sleep(0.05)
    release.set()
    await asyncio.gather(*busy)
    for _ in range(50):  # the cancelled save's write still runs, and closes what it opened
        if not open_files(root):
            break
        await asyncio.sleep(0.05)
    assert open_files(root) == []
    assert await storage.load_raw_crash(queued_id) is None  # never answered: not a crash
    await storage.close()


@pytest.mark.gen_test(timeout=30)
async def test_a_raw_crash_that_cannot_be_renamed_into_place_leaves_no_temporary_file(tmp_path):
    root = tmp_path / "crashes"
    storage = FSCrashStorage(root)
    crash_id = an_id()
    in_the_way = root / ("20" + crash_id[-6:]) / "raw_crash" / f"{crash_id}.json"
    (in_the_way / "occupied").mkdir(parents=True)  # a directory where the file goes
    with pytest.raises(StorageError):
        await storage.save(crash_id, b"{}", {"upload_file_minidump": b"MDMP"})
    assert [p.name for p in in_the_way.parent.iterdir()] == [in_the_way.name]
    await storage.close()


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
async def test_start_up_publishes_test_and_probes_the_bucket(crash_settings, monkeypatch):
    from symbolon.crashes.stores.s3 import S3CrashStorage

    written, deleted = [], []
    put, delete = S3CrashStorage._put, S3CrashStorage._delete

    async def recording_put(self, key, body):
        written.append(key)
        await put(self, key, body)

    async def recording_delete(self, key):
        deleted.append(key)
        await delete(self, key)

    monkeypatch.setattr(S3CrashStorage, "_put", recording_put)
    monkeypatch.setattr(S3CrashStorage, "_delete", recording_delete)
    runtime = await connect(crash_settings)
    await runtime.close()
    assert published(crash_settings) == ["test"]
    assert len(written) == 1 and written[0].startswith("test/testfile-")
    assert deleted == written  # the probe object was deleted again


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


@pytest.mark.gen_test(timeout=60)
async def test_start_up_refuses_an_unreachable_crash_store_naming_it(crash_settings):
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    settings = crash_settings.replace(
        crash_bucket_name="unreachable-crashes",
        crash_endpoint_url=closed,
        crash_storage_is_embedded=False,
    )
    with pytest.raises(StartupError) as caught:
        await connect(settings)
    message = str(caught.value)
    assert "unreachable-crashes" in message
    assert closed in message  # where it looked
    assert "Could not connect to the endpoint URL" in message  # the error itself


@pytest.mark.gen_test(timeout=30)
async def test_start_up_refuses_when_the_embedded_crash_bucket_cannot_be_made(
    crash_settings, monkeypatch
):
    from botocore.exceptions import ClientError

    from symbolon.crashes.stores.s3 import S3CrashStorage

    client_for = S3CrashStorage.client

    async def refusing_creation(self):  # fault injection: the server refuses CreateBucket
        client = await client_for(self)

        async def create_bucket(**_):
            error = {"Error": {"Code": "AccessDenied", "Message": "no buckets for you"}}
            raise ClientError(error, "CreateBucket")

        monkeypatch.setattr(client, "create_bucket", create_bucket)
        return client

    monkeypatch.setattr(S3CrashStorage, "client", refusing_creation)
    settings = crash_settings.replace(crash_bucket_name=f"new-crashes-{uuid.uuid4().hex[:8]}")
    with pytest.raises(StartupError) as caught:  # a refusal, not a traceback
        await connect(settings)
    message = str(caught.value)
    assert settings.crash_bucket_name in message
    assert "AccessDenied" in message


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
    from symbolon.crashes.store import raw_crash_json
    from symbolon.crashes.stores.s3 import S3CrashStorage
    from symbolon.storage.s3 import S3Clients

    crash_id = an_id()
    raw = {"ProductName": "Cli", "uuid": crash_id}

    async def arrange() -> None:
        s3 = S3Clients(crash_settings)
        storage = S3CrashStorage(crash_settings, s3)
        await storage.save(crash_id, raw_crash_json(raw), {"upload_file_minidump": b"MDMP"})
        await storage.mark_unpublished(crash_id)
        await s3.close()

    run_isolated(arrange())
    env = env_for(
        crash_settings, CRASHMOVER_CRASHPUBLISH_QUEUE_NAME=crash_settings.crashpublish_queue_name
    )

    listed = invoke("crashes", "list", "--date", "2024-02-29", env=env)
    assert listed.returncode == 0, listed.stderr
    assert crash_id in listed.stdout.split()

    shown = invoke("crashes", "show", f"bp-{crash_id}", env=env)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == raw

    missing = invoke("crashes", "show", an_id(), env=env)
    assert missing.returncode == 1 and "no crash" in missing.stderr

    republished = invoke("crashes", "republish", env=env)
    assert republished.returncode == 0, republished.stderr
    assert published(crash_settings) == [crash_id]
    again = invoke("crashes", "republish", env=env)
    assert "published 0 crash id(s)" in again.stdout
    day = invoke("crashes", "republish", "--date", "2024-02-29", env=env)
    assert day.returncode == 0, day.stderr
    assert published(crash_settings).count(crash_id) == 2  # every crash of that day again


@pytest.mark.gen_test(timeout=30)
async def test_a_resent_stage_crash_is_not_removed_by_a_failed_save(crash_settings, tmp_path):
    settings = crash_settings.replace(
        crash_storage="fs", crash_fs_root=tmp_path / "crashes", crashmover_max_attempts=2
    )
    crash_id = an_id()
    body = report({"ProductName": "X", "uuid": crash_id}, MINIDUMP)
    headers = headers_for(Authorization=f"Bearer {TOKEN}")
    server = served(settings)
    async with server as (client, base_url):
        storage = server.runtime.collector.storage
        assert crash_id_of(await post(client, base_url, body, headers)) == crash_id

        def broken(*args):
            raise OSError("injected: disk gone")

        storage._create = broken  # the resend cannot be stored
        response = await post(client, base_url, body, headers)
        assert response.code == 503
        assert await storage.load_raw_crash(crash_id) is not None  # the first one stays


@pytest.mark.gen_test(timeout=30)
async def test_dump_names_then_dumps_then_the_raw_crash_are_written(crash_settings):
    server = served(crash_settings)
    async with server as (client, base_url):
        storage = server.runtime.collector.storage
        written = []
        original = storage._put

        async def recording(key, body):
            await original(key, body)
            written.append(key.split("/")[1])

        storage._put = recording
        dumps = {"upload_file_minidump": b"M", "memory_report": b"R", "other": b"O"}
        crash_id_of(await post(client, base_url, report({"ProductName": "X"}, dumps)))
    assert written[0] == "publishing"  # symbolon/publishing/<id>, until it is published
    assert written[1] == "dump_names"
    assert sorted(written[2:5]) == ["dump", "memory_report", "other"]
    assert written[5:] == ["raw_crash"]


@pytest.mark.gen_test(timeout=30)
async def test_an_unauthorised_uuid_is_401_even_when_the_throttler_would_reject(mozilla):
    async with served(mozilla) as (client, base_url):
        before = object_count(mozilla)
        body = report({"ProductName": "Foo", "uuid": an_id()}, MINIDUMP)
        response = await post(client, base_url, body)
        assert (response.code, response.body) == (401, b"Discarded=unauthorized_uuid")
        assert object_count(mozilla) == before


@pytest.mark.gen_test(timeout=30)
async def test_defer_is_stored_and_published_with_digit_1(crash_settings, tmp_path):
    rules = tmp_path / "rules.toml"
    rules.write_text(
        '[[rule]]\nname = "keep_for_later"\nkey = "*"\nalways = true\nresult = "defer"\n'
    )
    settings = crash_settings.replace(breakpad_throttler_rules=str(rules))
    async with served(settings) as (client, base_url):
        crash_id = crash_id_of(await post(client, base_url, report({"ProductName": "X"}, MINIDUMP)))
    assert crash_id[-7] == "1"
    assert f"v1/raw_crash/20{crash_id[-6:]}/{crash_id}" in crash_keys(settings, crash_id)
    assert published(settings) == [crash_id]


@pytest.mark.gen_test(timeout=30)
async def test_the_raw_crash_escapes_non_ascii_as_the_reference_does(crash_settings):
    server = served(crash_settings)
    async with server as (client, base_url):
        crash_id = crash_id_of(await post(client, base_url, report({"ProductName": "Café ☃"})))
        stored = await server.runtime.collector.storage.load_raw_crash(crash_id)
    assert b'"ProductName": "Caf\\u00e9 \\u2603"' in stored


@pytest.mark.gen_test(timeout=30)
async def test_the_reference_metrics_are_emitted(crash_settings):
    from tests.crashes import gzipped

    with MetricsMock() as mm:
        async with served(crash_settings) as (client, base_url):
            await post(client, base_url, report({"ProductName": "X"}, MINIDUMP))
            await post(client, base_url, report(dumps=MINIDUMP))
            body = gzipped(report({"ProductName": "X"}))
            await post(client, base_url, body, headers_for(**{"Content-Encoding": "gzip"}))
            await post(client, base_url, b"not gzip", headers_for(**{"Content-Encoding": "gzip"}))
    name = "socorro.collector.breakpad_resource."
    assert len(mm.filter_records("incr", name + "incoming_crash")) == 2
    assert mm.has_record("incr", name + "malformed", tags=["reason:no_annotations"])
    assert mm.has_record("incr", name + "malformed", tags=["reason:bad_gzip"])
    assert mm.has_record("incr", name + "throttle", tags=["result:accept"])
    assert mm.has_record("incr", name + "throttle_rule", tags=["rule:accept_everything"])
    assert len(mm.filter_records("incr", name + "gzipped_crash")) == 2
    assert mm.has_record("timing", name + "gzipped_crash_decompress", tags=["result:success"])
    assert mm.has_record("timing", name + "gzipped_crash_decompress", tags=["result:fail"])
    assert mm.has_record("histogram", name + "crash_size", tags=["payload:compressed"])
    assert mm.has_record("histogram", name + "crash_size", tags=["payload:uncompressed"])
    assert len(mm.filter_records("timing", name + "on_post.time")) == 4
    mover = "socorro.collector.crashmover."
    assert len(mm.filter_records("incr", mover + "save_crash.count")) == 2
    assert len(mm.filter_records("timing", mover + "crash_save.time")) == 2
    assert mm.filter_records("gauge", mover + "save_queue_size")[-1].value == 0


@pytest.mark.gen_test(timeout=30)
async def test_an_aborted_upload_ends_its_request(crash_settings):
    def handler_tasks() -> int:
        return sum(
            1 for task in asyncio.all_tasks() if "RequestHandler._execute" in repr(task.get_coro())
        )

    async with served(crash_settings) as (_, base_url):
        port = int(base_url.rsplit(":", 1)[1])
        before = handler_tasks()
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        head = "POST /submit HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
        head += "Content-Type: multipart/form-data; boundary=b\r\n\r\n"
        writer.write(head.encode() + b"x" * 1000)
        await writer.drain()
        await asyncio.sleep(0.3)
        assert handler_tasks() == before + 1  # mid-body
        writer.close()  # the client goes away
        for _ in range(50):
            await asyncio.sleep(0.05)
            if handler_tasks() == before:
                break
        assert handler_tasks() == before


@pytest.mark.gen_test(timeout=30)
async def test_start_up_refuses_a_queue_that_takes_no_message(crash_settings, monkeypatch):
    from symbolon.crashes.publish import Publisher

    async def refuse(self, crash_ids):
        raise ConnectionError("injected: broker refuses")

    monkeypatch.setattr(Publisher, "_enqueue", refuse)
    with pytest.raises(StartupError) as caught:
        await connect(crash_settings)
    assert "crash queue (REDIS_URL" in str(caught.value)


@pytest.mark.gen_test(timeout=30)
async def test_a_removed_marks_directory_is_made_again(tmp_path):
    from symbolon.crashes.stores.directory import FSCrashStorage

    store = FSCrashStorage(tmp_path)
    await store.mark_publishing("a" * 30 + "261202")
    await store.clear_publishing("a" * 30 + "261202")
    shutil.rmtree(tmp_path / "symbolon")  # an empty directory swept by a clean-up job
    await store.mark_publishing("b" * 30 + "261202")
    assert await store.publishing(older_than=-60) == ["b" * 30 + "261202"]


@pytest.mark.gen_test(timeout=30)
async def test_a_directory_stores_publishing_mark_is_a_second_name_of_its_dump_names(tmp_path):
    # A file created and deleted per crash made ext4's every file creation dearer.
    store = FSCrashStorage(tmp_path)
    crash_id = an_id()
    mark = tmp_path / "symbolon" / "publishing" / crash_id
    names = tmp_path / ("20" + crash_id[-6:]) / "dump_names" / f"{crash_id}.json"
    await store.mark_publishing(crash_id)
    assert mark.stat().st_ino == names.stat().st_ino
    await store.save(crash_id, b'{"ProductName": "X"}', MINIDUMP)
    await store.mark_publishing(crash_id)  # a second attempt renews the mark
    assert await store.publishing(older_than=-60) == [crash_id]
    assert mark.stat().st_ino == names.stat().st_ino
    an_hour_ago = names.stat().st_mtime - 3600
    os.utime(names, (an_hour_ago, an_hour_ago))  # the mark's age is the last write's
    assert await store.publishing(older_than=600) == [crash_id]
    await store.clear_publishing(crash_id)
    assert not mark.exists()
    assert json.loads(names.read_text()) == ["upload_file_minidump"]
    assert names.stat().st_nlink == 1
    await store.close()


@pytest.mark.gen_test(timeout=30)
async def test_a_directory_store_without_hard_links_marks_with_a_file(tmp_path, monkeypatch):
    store = FSCrashStorage(tmp_path)
    crash_id = an_id()

    def refuse(*args, **kwargs):
        raise PermissionError("injected: no hard links here")

    monkeypatch.setattr(os, "link", refuse)
    await store.mark_publishing(crash_id)
    mark = tmp_path / "symbolon" / "publishing" / crash_id
    assert mark.read_bytes() == b""
    await store.save(crash_id, b'{"ProductName": "X"}', MINIDUMP)
    assert await store.publishing(older_than=-60) == [crash_id]
    await store.clear_publishing(crash_id)
    assert await store.publishing(older_than=-60) == []
    await store.close()
