"""The S3 symbol store against the embedded S3 server: a missing object and a storage that does
not answer come out as the store interface's answers, whatever S3 or the network raised."""

from __future__ import annotations

import re
import uuid

import pytest

from symbolon.storage.sources import SymbolSource
from symbolon.storage.store import ObjectMissing, StoreUnavailable
from symbolon.storage.stores.s3 import S3Store
from symbolon.uploads import process
from tests.conftest import unique_email
from tests.s3_faults import deletes_refused, lookups_time_out
from tests.uploads import debug_id, make_zip

NOBODY = "http://127.0.0.1:9/nowhere"  # the discard port: connections are refused


def a_key(source: SymbolSource) -> str:
    return source.object_key(f"s.pdb/{uuid.uuid4().hex.upper()}1/s.sym")


@pytest.mark.gen_test(timeout=60)
async def test_a_missing_object(runtime):
    source = runtime.storage.upload_default
    store = runtime.stores.at(source)
    key = a_key(source)
    assert await store.head(key) is None
    assert await store.exists(key) is False
    with pytest.raises(ObjectMissing):
        async with store.open(key):
            pass


@pytest.mark.gen_test(timeout=60)
async def test_an_object_opened_is_described_and_read_in_chunks(runtime, tmp_path):
    source = runtime.storage.upload_default
    store = runtime.stores.at(source)
    key = a_key(source)
    path = tmp_path / "stored"
    path.write_bytes(b"\x1f\x8b gzipped, say")
    await store.put_file(key, path, content_encoding="gzip", metadata={"original_size": "12"})
    async with store.open(key) as opened:
        read = b"".join([chunk async for chunk in opened.chunks])
    assert read == path.read_bytes()
    assert (opened.info.size, opened.info.content_encoding) == (len(read), "gzip")
    assert opened.info.metadata == {"original_size": "12"}
    await store.delete([key])
    assert await store.exists(key) is False


@pytest.mark.parametrize("url", [NOBODY, f"{NOBODY}?access=public"], ids=["private", "public"])
@pytest.mark.gen_test(timeout=60)
async def test_a_storage_that_does_not_answer_is_unavailable(runtime, url):
    source = SymbolSource.parse(url)
    store = S3Store(source, runtime.s3)
    key = a_key(source)
    with pytest.raises(StoreUnavailable, match=re.escape(NOBODY)):
        await store.exists(key)
    with pytest.raises(StoreUnavailable, match=re.escape(NOBODY)):
        await store.head(key)
    with pytest.raises(StoreUnavailable, match=re.escape(NOBODY)):
        async with store.open(key):
            pass
    with pytest.raises(StoreUnavailable, match=re.escape(NOBODY)):
        async for _ in store.list("v1/"):
            pass


def test_s3_holds_any_key_up_to_1024_bytes(runtime):
    store = runtime.stores.at(runtime.storage.upload_default)
    for key in (".meta/ABC/x.sym", "v1/./x", "v1/" + "é" * 510):
        assert store.accepts(key) is None
    assert store.accepts("v1/" + "é" * 511) == "key too long"


@pytest.mark.gen_test(timeout=60)
async def test_a_patient_read_waits_as_writes_do(runtime, monkeypatch):
    source = runtime.storage.upload_default
    store = runtime.stores.at(source)
    key = a_key(source)
    await store.put_bytes(key, b"stored")
    lookups_time_out(monkeypatch, runtime.s3)
    with pytest.raises(StoreUnavailable):
        await store.head(key)
    info = await store.head(key, patient=True)
    assert info is not None and info.size == 6
    async with store.open(key, patient=True) as opened:
        assert b"".join([c async for c in opened.chunks]) == b"stored"


@pytest.mark.gen_test(timeout=60)
async def test_storing_an_archive_reads_with_the_patient_client(runtime, monkeypatch):
    """The HEAD before each member is stored is the upload task's, not a download's lookup."""
    key = f"p.pdb/{debug_id().upper()}/p.sym"
    staged = runtime.settings.staging_dir / f"upload-{uuid.uuid4().hex}.zip"
    staged.parent.mkdir(parents=True, exist_ok=True)
    staged.write_bytes(make_zip({key: b"MODULE p\n"}))
    user_id = await runtime.db.fetchval(
        "INSERT INTO users (email) VALUES ($1) RETURNING id", unique_email()
    )
    destination = runtime.storage.upload_default
    upload_id = await runtime.db.fetchval(
        """INSERT INTO uploads (user_id, filename, bucket_name, staging_ref, destination_url)
           VALUES ($1, 'p.zip', $2, $3, $4) RETURNING id""",
        user_id,
        destination.bucket,
        str(staged),
        destination.url,
    )
    lookups_time_out(monkeypatch, runtime.s3)
    await process.process_upload(runtime, upload_id)
    row = await runtime.db.fetchrow("SELECT * FROM uploads WHERE id = $1", upload_id)
    assert row["completed_at"] is not None and row["attempts"] == 1, row["error"]
    monkeypatch.undo()
    assert await runtime.stores.at(destination).exists(destination.object_key(key))


@pytest.mark.gen_test(timeout=60)
async def test_a_refused_deletion_is_unavailable_naming_the_key(runtime, monkeypatch):
    source = runtime.storage.upload_default
    store = runtime.stores.at(source)
    keys = [a_key(source) for _ in range(3)]
    for key in keys:
        await store.put_bytes(key, b"x")
    deletes_refused(monkeypatch, runtime.s3, {keys[1]})
    refused = re.escape(f"deleting {keys[1]!r} failed: ") + ".*AccessDenied"
    with pytest.raises(StoreUnavailable, match=refused):
        await store.delete([keys[1]])
    with pytest.raises(StoreUnavailable, match=refused):
        await store.delete(keys)
    assert [await store.exists(k) for k in keys] == [False, True, False]
    await store.delete([keys[2], a_key(source)])  # what is not there is no error
    await store.delete([keys[0]])
