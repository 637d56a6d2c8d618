"""``/api/uploads/``, ``/api/uploads/files/`` and their detail views (spec/symbols.md §7.7, §7.8).

Listings run against a database of their own, so that totals and pages are exact.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.accounts import Caller, call, make_upload, make_user
from tests.conftest import served

DEFAULT_ORDER = {"sort": "created_at", "reverse": True}


@pytest.fixture
def own_settings(settings, fresh_database):
    return settings.replace(database_url=fresh_database)


@pytest.mark.gen_test(timeout=60)
async def test_uploads_are_yours_unless_you_may_view_all(own_settings):
    server = served(own_settings)
    async with server as (client, base):
        rt = server.runtime
        alice = await make_user(rt, email="alice@example.com")
        bob = await make_user(rt, email="bob@example.com")
        auditor = await make_user(rt, groups=("Upload Auditors",))
        mine, _ = await make_upload(rt, alice, files=("v1/a.pdb/1/a.sym", "v1/a.pdb/1/a.pd_"))
        await rt.db.execute(
            "UPDATE file_uploads SET completed_at = NULL WHERE key = 'v1/a.pdb/1/a.pd_'"
        )
        await make_upload(rt, bob)

        caller = await Caller.with_session(rt, alice)
        status, body = await call(client, base, caller, "/api/uploads/?user=bob")
        assert status == 200
        assert body["can_view_all"] is False
        assert [u["id"] for u in body["uploads"]] == [mine]  # the user filter needs view-all
        assert body["total"] == 1  # seeing only your own is a filter: counted exactly
        upload = body["uploads"][0]
        assert upload["user"] == {"email": "alice@example.com"}
        assert (upload["files_count"], upload["files_incomplete_count"]) == (1, 1)
        assert set(upload) >= {
            "id", "filename", "size", "bucket_name", "bucket_region", "bucket_endpoint_url",
            "skipped_keys", "ignored_keys", "try_symbols", "download_url", "redirect_urls",
            "completed_at", "created_at",
        }  # fmt: skip
        assert body["batch_size"] == 20 and body["order_by"] == DEFAULT_ORDER
        assert body["has_next"] is False

        caller = await Caller.with_session(rt, auditor)
        status, body = await call(client, base, caller, "/api/uploads/")
        assert body["can_view_all"] is True
        assert len(body["uploads"]) == 2
        assert body["total"] == 1_000_000  # unfiltered: the reference's placeholder, not a count


@pytest.mark.gen_test(timeout=60)
async def test_upload_filters_sorting_and_pages(own_settings):
    server = served(own_settings)
    async with server as (client, base):
        rt = server.runtime
        alice = await make_user(rt, email="Alice@Example.com")
        bob = await make_user(rt, email="bob@example.com")
        now = datetime.now(UTC)
        yesterday = now - timedelta(days=1)
        small, _ = await make_upload(rt, alice, size=1000, created_at=yesterday)
        big, _ = await make_upload(rt, bob, size=5 * 1024**2)
        pending, _ = await make_upload(rt, bob, size=2048, completed=False)
        caller = await Caller.with_session(rt, await make_user(rt, superuser=True))

        async def ids(query: str) -> list[int]:
            status, body = await call(client, base, caller, f"/api/uploads/?{query}")
            assert status == 200, body
            return [u["id"] for u in body["uploads"]]

        assert await ids("user=ALICE") == [small]
        assert await ids("user=!alice") == [pending, big]
        assert await ids("user=example.com") == [pending, big, small]
        assert await ids("size=>=2kb") == [pending, big]
        assert await ids("size=>1m") == [big]
        assert await ids("size=>=1k,<1m") == [pending]
        assert await ids("created_at=yesterday") == [small]
        assert await ids("created_at=>" + yesterday.strftime("%Y-%m-%dT%H:%M:%S.%fZ")) == [
            pending,
            big,
        ]
        assert await ids("completed_at=incomplete") == [pending]
        assert await ids("sort=size") == [small, pending, big]
        assert await ids("sort=size&reverse=true") == [big, pending, small]
        status, body = await call(client, base, caller, "/api/uploads/?user=alice")
        assert body["total"] == 1
        status, body = await call(client, base, caller, "/api/uploads/?sort=size")
        assert body["order_by"] == {"sort": "size", "reverse": False}

        for query, errors in [
            ("size=huge", {"size": ["'huge' is not a valid size"]}),
            ("created_at=soon", {"created_at": ["Unable to parse 'soon'"]}),
            ("sort=filename", {"sort": ["Invalid sort 'filename'"]}),
            ("page=two", {"page": ["Not a number 'two'"]}),
        ]:
            status, body = await call(client, base, caller, f"/api/uploads/?{query}")
            assert (status, body) == (400, {"errors": errors}), query


@pytest.mark.gen_test(timeout=60)
async def test_upload_pages_hold_twenty(own_settings):
    server = served(own_settings)
    async with server as (client, base):
        rt = server.runtime
        user = await make_user(rt)
        made = [(await make_upload(rt, user, files=()))[0] for _ in range(25)]
        caller = await Caller.with_session(rt, user)
        _, first = await call(client, base, caller, "/api/uploads/")
        _, second = await call(client, base, caller, "/api/uploads/?page=2")
        _, zero = await call(client, base, caller, "/api/uploads/?page=0")
        assert [u["id"] for u in first["uploads"]] == made[::-1][:20]
        assert first["has_next"] is True and first["total"] == 25
        assert [u["id"] for u in second["uploads"]] == made[::-1][20:]
        assert second["has_next"] is False
        assert zero == first


@pytest.mark.gen_test(timeout=60)
async def test_files_listing_and_its_filters(own_settings):
    server = served(own_settings)
    async with server as (client, base):
        rt = server.runtime
        user = await make_user(rt, email="files@example.com")
        regular, (xul_sym, xul_pd) = await make_upload(
            rt, user, files=("v1/xul.pdb/AB/xul.sym", "v1/xul.pdb/AB/xul.pd_")
        )
        _, (try_file,) = await make_upload(
            rt, user, try_symbols=True, files=("try/v1/xul.pdb/CD/xul.sym",)
        )
        _, (partner,) = await make_upload(
            rt, user, bucket_name="partner", files=("v1/libxul.so/EF/libxul.so.sym",)
        )
        orphan = await rt.db.fetchval(
            """INSERT INTO file_uploads (upload_id, bucket_name, key, size)
               VALUES (NULL, 'symbols', 'v1/old.pdb/00/old.sym', 5) RETURNING id"""
        )
        caller = await Caller.with_session(rt, await make_user(rt, groups=("Upload Auditors",)))

        async def ids(query: str = "") -> list[int]:
            status, body = await call(client, base, caller, f"/api/uploads/files/?{query}")
            assert status == 200, body
            return [f["id"] for f in body["files"]]

        assert await ids() == [orphan, partner, try_file, xul_pd, xul_sym]
        assert await ids("key=XUL.pdb,.sym") == [try_file, xul_sym]
        assert await ids("bucket_name=partner") == [partner]
        assert await ids("bucket_name=!partner") == [orphan, try_file, xul_pd, xul_sym]
        assert await ids("bucket_name=partner,symbols") == [
            orphan,
            partner,
            try_file,
            xul_pd,
            xul_sym,
        ]
        assert await ids("upload_type=try") == [try_file]
        assert await ids("upload_type=regular") == [partner, xul_pd, xul_sym]
        assert await ids("completed_at=incomplete") == [orphan]

        _, body = await call(client, base, caller, "/api/uploads/files/?key=pd_")
        assert body["total"] == 1 and body["batch_size"] == 40 and body["has_next"] is False
        (item,) = body["files"]
        assert item["upload"] == {
            "id": regular,
            "try_symbols": False,
            "upload_type": "regular",
            "user": {"id": user.id, "email": "files@example.com"},
            "created_at": item["upload"]["created_at"],
        }
        _, body = await call(client, base, caller, "/api/uploads/files/")
        assert body["files"][0]["upload"] is None and body["total"] == 1_000_000
        status, body = await call(client, base, caller, "/api/uploads/files/?upload_type=odd")
        assert (status, body) == (400, {"errors": {"upload_type": ["Invalid upload type 'odd'"]}})
        status, body = await call(client, base, caller, "/api/uploads/files/?size=big")
        assert (status, body) == (400, {"errors": {"size": ["'big' is not a valid size"]}})


@pytest.mark.gen_test(timeout=30)
async def test_file_detail(http_client, base_url, runtime):
    owner = await make_user(runtime)
    upload, (sym,) = await make_upload(
        runtime,
        owner,
        try_symbols=True,
        files=("try/v1/xul.pdb/44E4EC8C2F41492B9369D6B9A059577C2/xul.sym",),
    )
    caller = await Caller.with_session(runtime, owner)
    status, body = await call(http_client, base_url, caller, f"/api/uploads/files/file/{sym}")
    assert status == 200
    assert body["file"]["url"] == "/xul.pdb/44E4EC8C2F41492B9369D6B9A059577C2/xul.sym?try"
    assert body["file"]["upload"]["id"] == upload
    assert body["file"]["upload"]["user"] == {"id": owner.id, "email": owner.email}
    assert body["file"]["debug_filename"] is None

    stranger = await Caller.with_session(runtime, await make_user(runtime))
    status, body = await call(http_client, base_url, stranger, f"/api/uploads/files/file/{sym}")
    assert (status, body) == (403, {"error": "Insufficient access to view this file"})
    status, body = await call(http_client, base_url, caller, "/api/uploads/files/file/999999999")
    assert (status, body) == (404, {"error": "No FileUpload matches the given query."})
    orphan = await runtime.db.fetchval(
        """INSERT INTO file_uploads (upload_id, bucket_name, key, size)
           VALUES (NULL, 'symbols', 'v1/a.pdb/00/a.sym', 5) RETURNING id"""
    )
    status, body = await call(http_client, base_url, stranger, f"/api/uploads/files/file/{orphan}")
    assert status == 403
    auditor = await Caller.with_session(
        runtime, await make_user(runtime, groups=("Upload Auditors",))
    )
    status, body = await call(http_client, base_url, auditor, f"/api/uploads/files/file/{orphan}")
    assert status == 200
    assert body["file"]["upload"] is None and body["file"]["url"] == "/a.pdb/00/a.sym"


@pytest.mark.gen_test(timeout=30)
async def test_possible_upload_urls(http_client, base_url, runtime):
    caller = await Caller.with_session(runtime, await make_user(runtime))
    status, body = await call(http_client, base_url, caller, "/api/uploads/_possible_upload_urls/")
    default = runtime.storage.upload_default
    assert (status, body) == (
        200,
        {
            "urls": [
                {
                    "url": default.url,
                    "bucket_name": default.bucket,
                    "private": not default.public,
                    "default": True,
                }
            ]
        },
    )
