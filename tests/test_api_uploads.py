"""``/api/uploads/``, ``/api/uploads/files/``, their detail views and the uploads per day
(``/api/uploads/created/…``) (docs/accounts.md, "JSON API").

Listings run against a database of their own, so that totals and pages are exact.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.accounts import Caller, call, make_upload, make_user, token_of
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
        huge = "9" * 30  # far past the end: an empty page, not a bigint overflow
        status, far = await call(client, base, caller, f"/api/uploads/?page={huge}")
        assert (status, far["uploads"], far["total"]) == (200, [], 25)


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


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


async def _uploads_over_three_days(rt):
    """Uploads on 2024-03-01 (two, one a moment before midnight), 03-02 (at midnight) and 03-04;
    the ids of the day rows they make."""
    alice = await make_user(rt)
    bob = await make_user(rt)
    first, _ = await make_upload(
        rt,
        alice,
        size=1000,
        files=("v1/a.pdb/1/a.sym", "v1/a.pdb/1/a.pd_"),
        created_at=_at("2024-03-01T10:00:00"),
    )
    await rt.db.execute(
        "UPDATE uploads SET skipped_keys = $2, ignored_keys = $3 WHERE id = $1",
        first,
        ["v1/x.pdb/1/x.sym", "v1/y.pdb/1/y.sym"],
        ["z.txt"],
    )
    await make_upload(rt, bob, size=3001, created_at=_at("2024-03-01T23:59:59.500000"))
    await make_upload(rt, bob, size=5 * 1024**2, files=(), created_at=_at("2024-03-02T00:00:00"))
    await make_upload(
        rt, alice, size=2048, try_symbols=True, completed=False, created_at=_at("2024-03-04T12:00")
    )
    # A file row whose upload is gone counts nowhere.
    await rt.db.execute(
        """INSERT INTO file_uploads (upload_id, bucket_name, key, size, created_at)
           VALUES (NULL, 'symbols', 'v1/old.pdb/00/old.sym', 5, '2024-03-01T12:00Z')"""
    )
    return 20240301, 20240302, 20240304


@pytest.mark.gen_test(timeout=60)
async def test_uploads_created_rows_and_aggregates(own_settings):
    server = served(own_settings)
    async with server as (client, base):
        rt = server.runtime
        await _uploads_over_three_days(rt)
        caller = await Caller.with_session(rt, await make_user(rt, groups=("Upload Auditors",)))
        before = datetime.now(UTC)
        status, body = await call(client, base, caller, "/api/uploads/created/")
        after = datetime.now(UTC)
        assert status == 200, body
        assert set(body) == {"uploads_created", "aggregates", "total", "batch_size", "order_by"}
        rows = body["uploads_created"]
        for row in rows:
            computed = datetime.fromisoformat(row.pop("created_at").replace("Z", "+00:00"))
            assert before - timedelta(seconds=1) <= computed <= after  # computed just now
        assert rows == [
            {"id": 20240304, "date": "2024-03-04", "count": 1, "files": 1, "skipped": 0,
             "ignored": 0, "size": 2048, "size_avg": 2048},
            {"id": 20240302, "date": "2024-03-02", "count": 1, "files": 0, "skipped": 0,
             "ignored": 0, "size": 5 * 1024**2, "size_avg": 5 * 1024**2},
            {"id": 20240301, "date": "2024-03-01", "count": 2, "files": 3, "skipped": 2,
             "ignored": 1, "size": 4001, "size_avg": 2000},
        ]  # fmt: skip
        assert body["aggregates"] == {
            "uploads_created": {
                "count": 4,
                "files": 4,
                "size": 4001 + 5 * 1024**2 + 2048,
                "size_avg": (4001 + 5 * 1024**2 + 2048) / 3,  # per day, as the reference
                "skipped": 2,
                "ignored": 1,
            }
        }
        assert body["total"] == 3 and body["batch_size"] == 20
        assert body["order_by"] == {"sort": "date", "reverse": True}

        # Nothing matching: no rows, and aggregates of nothing are null (as the reference's).
        _, body = await call(client, base, caller, "/api/uploads/created/?count=>100")
        assert body["uploads_created"] == [] and body["total"] == 0
        assert set(body["aggregates"]["uploads_created"].values()) == {None}


@pytest.mark.gen_test(timeout=60)
async def test_uploads_created_filters_and_sorting(own_settings):
    server = served(own_settings)
    async with server as (client, base):
        rt = server.runtime
        day1, day2, day4 = await _uploads_over_three_days(rt)
        await make_upload(rt, await make_user(rt), size=10)
        caller = await Caller.with_session(rt, await make_user(rt, superuser=True))
        now = datetime.now(UTC)
        today_id = now.year * 10_000 + now.month * 100 + now.day

        async def ids(query: str) -> list[int]:
            status, body = await call(client, base, caller, f"/api/uploads/created/?{query}")
            assert status == 200, body
            assert body["total"] == len(body["uploads_created"])
            return [row["id"] for row in body["uploads_created"]]

        assert await ids("") == [today_id, day4, day2, day1]
        assert await ids("date=today") == [today_id]
        assert await ids("date=2024-03-01") == [day1]
        assert await ids("date=2024-03-01T00:00:00Z") == [day1]  # midnight: the whole day
        assert await ids("date=2024-03-01T10:00:00") == []  # no day starts then
        assert await ids("date=>=2024-03-02") == [today_id, day4, day2]
        assert await ids("date=>2024-03-02") == [today_id, day4]  # `>` skips the day itself
        assert await ids("date=<2024-03-02") == [day1]
        assert await ids("date=<=2024-03-02") == [day2, day1]
        assert await ids("date=>=2024-03-01,<2024-03-04") == [day2, day1]
        assert await ids("date=null") == []
        assert await ids("size=>4kb") == [day2]
        assert await ids("size=<5m") == [today_id, day4, day1]
        assert await ids("size=>=2k,<4k") == [day4, day1]
        assert await ids("count=2") == [day1]
        assert await ids("count=<2") == [today_id, day4, day2]
        assert await ids("count=1&size=<1m&date=<today") == [day4]
        assert await ids("sort=size") == [today_id, day4, day1, day2]
        assert await ids("sort=size&reverse=true") == [day2, day1, day4, today_id]
        assert await ids("sort=date") == [day1, day2, day4, today_id]
        assert await ids("sort=date&reverse=true") == [today_id, day4, day2, day1]

        _, body = await call(client, base, caller, "/api/uploads/created/?date=2024-03-01")
        assert body["aggregates"]["uploads_created"] == {
            "count": 2, "files": 3, "size": 4001, "size_avg": 4001.0, "skipped": 2, "ignored": 1,
        }  # fmt: skip
        _, body = await call(client, base, caller, "/api/uploads/created/?sort=size")
        assert body["order_by"] == {"sort": "size", "reverse": False}

        for query, errors in [
            ("date=soon", {"date": ["Unable to parse 'soon'"]}),
            ("size=huge", {"size": ["'huge' is not a valid size"]}),
            ("count=many", {"count": ["'many' is not a valid count"]}),
            ("sort=count", {"sort": ["Invalid sort 'count'"]}),
            ("sort=created_at", {"sort": ["Invalid sort 'created_at'"]}),
            ("page=two", {"page": ["Not a number 'two'"]}),
        ]:
            status, body = await call(client, base, caller, f"/api/uploads/created/?{query}")
            assert (status, body) == (400, {"errors": errors}), query


@pytest.mark.gen_test(timeout=60)
async def test_uploads_created_pages_hold_twenty_days(own_settings):
    server = served(own_settings)
    async with server as (client, base):
        rt = server.runtime
        user = await make_user(rt)
        first = _at("2023-01-30T08:00:00")
        for day in range(25):
            await make_upload(rt, user, size=100 + day, created_at=first + timedelta(days=day))
        caller = await Caller.with_session(rt, await make_user(rt, groups=("Upload Auditors",)))

        async def page(query: str) -> dict:
            status, body = await call(client, base, caller, f"/api/uploads/created/?{query}")
            assert status == 200, body
            return body

        one, two, three, zero = [await page(q) for q in ("", "page=2", "page=3", "page=0")]
        assert (await page("page=" + "9" * 30))["uploads_created"] == []
        dates = [(first + timedelta(days=d)).date().isoformat() for d in range(25)][::-1]
        assert [r["date"] for r in one["uploads_created"]] == dates[:20]
        assert [r["date"] for r in two["uploads_created"]] == dates[20:]
        assert three["uploads_created"] == []
        assert {one["total"], two["total"], three["total"]} == {25}
        assert three["aggregates"] == one["aggregates"]  # over every matching day, on any page
        assert one["aggregates"]["uploads_created"]["count"] == 25
        assert one["aggregates"]["uploads_created"]["size"] == sum(range(100, 125))
        assert [r["id"] for r in zero["uploads_created"]] == [
            r["id"] for r in one["uploads_created"]
        ]
        assert dates[0] == "2023-02-23" and one["uploads_created"][0]["id"] == 20230223


@pytest.mark.gen_test(timeout=60)
async def test_uploads_created_permissions(http_client, base_url, runtime):
    path = "/api/uploads/created/"
    status, body = await call(http_client, base_url, Caller.anonymous(), path)
    assert (status, body) == (
        403,
        {"error": "This requires an Auth-Token to authenticate the request"},
    )
    for user, token_permissions, expected in [
        (await make_user(runtime), (), 403),
        (await make_user(runtime, groups=("Uploaders",)), ("upload.upload_symbols",), 403),
        (await make_user(runtime, groups=("Upload Auditors",)), ("upload.view_all_uploads",), 200),
        (await make_user(runtime, superuser=True), ("upload.view_all_uploads",), 200),
    ]:
        session = await Caller.with_session(runtime, user)
        token = Caller.with_token(await token_of(runtime, user, token_permissions))
        for caller in (session, token):
            status, body = await call(http_client, base_url, caller, path)
            assert status == expected, (user.email, caller.headers, body)
            if expected == 403:
                assert body == {"error": "Forbidden"}
    # A superuser's token holds only its own permissions.
    superuser = await make_user(runtime, superuser=True)
    status, _ = await call(
        http_client, base_url, Caller.with_token(await token_of(runtime, superuser)), path
    )
    assert status == 403


@pytest.mark.gen_test(timeout=60)
async def test_uploads_created_backfilled(own_settings):
    path = "/api/uploads/created/backfilled/"
    server = served(own_settings)
    async with server as (client, base):
        rt = server.runtime
        superuser = await make_user(rt, superuser=True)
        session = await Caller.with_session(rt, superuser)
        status, body = await call(client, base, session, path)
        assert (status, body) == (
            200,
            {"uploads_created_count": 0, "days_till_today": None, "backfilled": True},
        )

        await _uploads_over_three_days(rt)
        first = _at("2024-03-01T10:00:00")
        before = (datetime.now(UTC) - first).days
        status, body = await call(client, base, session, path)
        after = (datetime.now(UTC) - first).days
        assert status == 200
        assert body["uploads_created_count"] == 3 and body["backfilled"] is True
        assert body["days_till_today"] in (before, after)

        status, posted = await call(client, base, session, path, "POST", {"days": "5"})
        assert status == 200
        assert posted == {**body, "updated": []}  # the rows are live: nothing to recompute
        status, posted = await call(
            client,
            base,
            Caller.with_token(await token_of(rt, superuser)),
            path,
            "POST",
            {"force": "yes"},
        )
        assert (status, posted["updated"]) == (200, [])  # a superuser's token will do
        status, body = await call(client, base, session, path, "POST", csrf=False)
        assert status == 403  # a browser session's POST needs the CSRF token

        auditor = await make_user(rt, groups=("Upload Auditors",))
        for caller in (
            await Caller.with_session(rt, auditor),
            Caller.with_token(await token_of(rt, auditor, ("upload.view_all_uploads",))),
        ):
            for method in ("GET", "POST"):
                status, body = await call(client, base, caller, path, method)
                assert (status, body) == (403, {"error": "Forbidden"}), method
        status, body = await call(client, base, Caller.anonymous(), path)
        assert (status, body) == (
            403,
            {"error": "This requires an Auth-Token to authenticate the request"},
        )
