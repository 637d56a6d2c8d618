"""Missing-symbol bookkeeping and reports (docs/download.md, "Missing symbols")."""

from __future__ import annotations

import csv
import io
import json
import urllib.parse
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from tests.conftest import served
from tests.downloads import get


def ident() -> str:
    return uuid.uuid4().hex.upper() + "1"


@pytest.fixture
def clean(runtime, io_loop):
    io_loop.run_sync(lambda: runtime.db.execute("DELETE FROM missing_symbols"))
    return runtime


async def rows(runtime, debugid: str):
    return await runtime.db.fetch(
        "SELECT * FROM missing_symbols WHERE debugid = $1 ORDER BY id", debugid
    )


@pytest.mark.gen_test
async def test_a_404_get_is_recorded_once_per_guard_window(http_client, base_url, runtime):
    debugid = ident()
    path = f"/xul.pdb/{debugid}/xul.sym?code_file=xul.dll&code_id=5F2A1B0C7E000"
    assert (await get(http_client, base_url, path)).code == 404
    recorded = await rows(runtime, debugid)
    assert len(recorded) == 1
    row = recorded[0]
    assert (row["symbol"], row["filename"], row["count"]) == ("xul.pdb", "xul.sym", 1)
    assert (row["code_file"], row["code_id"]) == ("xul.dll", "5F2A1B0C7E000")
    assert (await get(http_client, base_url, path)).code == 404
    assert (await rows(runtime, debugid))[0]["count"] == 1  # the Redis guard held it back
    other = f"/xul.pdb/{debugid}/xul.sym?code_file=xul.dll&code_id=0000"
    await get(http_client, base_url, other)
    assert len(await rows(runtime, debugid)) == 2  # a different tuple is a different row


@pytest.mark.gen_test
async def test_count_grows_when_the_guard_has_expired(http_client, base_url, runtime):
    debugid = ident()
    path = f"/a.pdb/{debugid}/a.sym"
    await get(http_client, base_url, path)
    await runtime.cache.client.flushdb()  # the guard's day has passed
    runtime.missing.forget_local()
    await get(http_client, base_url, path)
    row = (await rows(runtime, debugid))[0]
    assert row["count"] == 2
    assert row["modified_at"] >= row["created_at"]


@pytest.mark.gen_test
async def test_head_ignored_and_invalid_requests_are_not_recorded(http_client, base_url, runtime):
    debugid = ident()
    await get(http_client, base_url, f"/a.pdb/{debugid}/a.sym", method="HEAD")
    await get(http_client, base_url, f"/a.pdb/{debugid}/a.exe")
    await get(http_client, base_url, f"/a^.pdb/{debugid}/a.sym")
    await get(http_client, base_url, f"/{'x' * 151}.pdb/{debugid}/a.sym")  # too long to keep
    assert await rows(runtime, debugid) == []


@pytest.mark.parametrize("name", ["code_file", "code_id"])
@pytest.mark.gen_test
async def test_nul_in_code_file_or_id_is_a_400(http_client, base_url, runtime, name):
    debugid = ident()
    response = await get(http_client, base_url, f"/a.pdb/{debugid}/a.sym?{name}=a%00b")
    assert response.code == 400
    assert response.body == f"{name}: Null characters are not allowed.".encode()
    assert await rows(runtime, debugid) == []


@pytest.mark.gen_test
async def test_recording_can_be_switched_off(settings, runtime):
    debugid = ident()
    async with served(settings.replace(enable_store_missing_symbols=False)) as (client, base):
        assert (await get(client, base, f"/a.pdb/{debugid}/a.sym")).code == 404
    assert await rows(runtime, debugid) == []


async def insert(runtime, symbol, debugid, filename, modified_ago, code_file=None, code_id=None):
    when = datetime.now(UTC) - modified_ago
    await runtime.db.execute(
        """INSERT INTO missing_symbols
             (hash, symbol, debugid, filename, code_file, code_id, created_at, modified_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $7)""",
        uuid.uuid4().hex,
        symbol,
        debugid,
        filename,
        code_file,
        code_id,
        when,
    )


@pytest.mark.gen_test
async def test_csv_lists_recent_windows_misses(http_client, base_url, clean):
    runtime = clean
    await insert(runtime, "xul.pdb", "AAA1", "xul.sym", timedelta(hours=2), "xul.dll", "C0DE")
    await insert(runtime, "NTDLL.PDB", "BBB1", "ntdll.SYM", timedelta(hours=23))
    await insert(runtime, "old.pdb", "CCC1", "old.sym", timedelta(hours=25))
    await insert(runtime, "libxul.so", "DDD1", "libxul.so.sym", timedelta(hours=1))
    await insert(runtime, "xul.pdb", "EEE1", "xul.pd_", timedelta(hours=1))
    response = await get(http_client, base_url, "/missingsymbols.csv")
    assert response.code == 200
    assert response.headers["Content-Type"] == "text/csv"
    yesterday = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
    assert response.headers["Content-Disposition"] == (
        f'attachment; filename="missing-symbols-{yesterday}.csv"'
    )
    table = list(csv.reader(io.StringIO(response.body.decode())))
    assert table[0] == ["debug_file", "debug_id", "code_file", "code_id"]
    assert sorted(table[1:]) == [
        ["NTDLL.PDB", "BBB1", "", ""],
        ["xul.pdb", "AAA1", "xul.dll", "C0DE"],
    ]


@pytest.mark.gen_test
async def test_csv_today_starts_at_midnight(http_client, base_url, clean):
    now = datetime.now(UTC)
    since_midnight = now - datetime.combine(now.date(), datetime.min.time(), tzinfo=UTC)
    await insert(clean, "today.pdb", "AAA1", "today.sym", since_midnight / 2)
    await insert(clean, "before.pdb", "BBB1", "before.sym", since_midnight + timedelta(minutes=1))
    response = await get(http_client, base_url, "/missingsymbols.csv?today=1")
    table = list(csv.reader(io.StringIO(response.body.decode())))
    assert [r[0] for r in table[1:]] == ["today.pdb"]


@pytest.mark.gen_test
async def test_listing_filters_sorts_and_pages(http_client, base_url, clean):
    for i in range(3):
        await insert(clean, f"lib{i}.pdb", f"ID{i}", f"lib{i}.sym", timedelta(hours=i))
    response = await get(http_client, base_url, "/missingsymbols/")
    body = json.loads(response.body)
    assert body["order_by"] == {"sort": "modified_at", "reverse": True}
    assert (body["batch_size"], body["page"], body["total_count"]) == (100, 1, 3)
    assert [r["symbol"] for r in body["records"]] == ["lib0.pdb", "lib1.pdb", "lib2.pdb"]
    assert set(body["records"][0]) == {
        "id", "symbol", "debugid", "filename", "code_file", "code_id", "count", "modified_at", "created_at"
    }  # fmt: skip
    assert body["records"][0]["modified_at"].endswith("Z")

    oldest_first = json.loads(
        (await get(http_client, base_url, "/missingsymbols/?sort=modified_at")).body
    )
    assert [r["symbol"] for r in oldest_first["records"]] == ["lib2.pdb", "lib1.pdb", "lib0.pdb"]
    assert oldest_first["order_by"] == {"sort": "modified_at", "reverse": False}

    found = json.loads((await get(http_client, base_url, "/missingsymbols/?symbol=lib1")).body)
    assert [r["symbol"] for r in found["records"]] == ["lib1.pdb"]
    since = (datetime.now(UTC) - timedelta(minutes=90)).isoformat()
    recent = json.loads(
        (
            await get(
                http_client,
                base_url,
                f"/missingsymbols/?modified_at={urllib.parse.quote('>=' + since)}",
            )
        ).body
    )
    assert [r["symbol"] for r in recent["records"]] == ["lib0.pdb", "lib1.pdb"]
    empty = json.loads((await get(http_client, base_url, "/missingsymbols/?page=2")).body)
    assert empty["records"] == [] and empty["page"] == 2


@pytest.mark.parametrize(
    ("query", "errors"),
    [
        ("page=two", {"page": ["Not a number 'two'"]}),
        ("sort=count", {"sort": ["Invalid sort 'count'"]}),
        ("modified_at=soon", {"modified_at": ["Unable to parse 'soon'"]}),
    ],
)
@pytest.mark.gen_test
async def test_listing_rejects_bad_filters(http_client, base_url, query, errors):
    response = await get(http_client, base_url, f"/missingsymbols/?{query}")
    assert response.code == 400
    assert json.loads(response.body) == {"errors": errors}


@pytest.mark.gen_test
async def test_listing_without_slash_redirects(http_client, base_url):
    response = await get(http_client, base_url, "/missingsymbols?page=2")
    assert response.code == 301
    assert response.headers["Location"] == "/missingsymbols/?page=2"


@pytest.mark.gen_test
async def test_api_listing_for_the_web_ui(http_client, base_url, clean):
    await insert(clean, "a.pdb", "ID1", "a.sym", timedelta(hours=1))
    await insert(clean, "b.pdb", "ID2", "b.sym", timedelta(days=3))
    await insert(clean, "c.pdb", "ID3", "c.sym", timedelta(days=40))
    response = await get(http_client, base_url, "/api/downloads/missing/")
    body = json.loads(response.body)
    assert body["batch_size"] == 20
    assert body["aggregates"] == {"missing": {"total": 3, "last_1_days": 1, "last_30_days": 2}}
    assert body["total"] == 3
    assert [m["symbol"] for m in body["missing"]] == ["a.pdb", "b.pdb", "c.pdb"]
    assert body["order_by"] == {"sort": "modified_at", "reverse": True}
    by_count = json.loads(
        (await get(http_client, base_url, "/api/downloads/missing/?count=>=2")).body
    )
    assert by_count["total"] == 0


def test_date_filters():
    from symbolon.filters import FilterError, Query, date_filter

    now = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
    query = Query()
    date_filter(query, "c", "c", "2026-04-30", now)
    assert query.conditions == ["c >= $1 AND c < $2"]
    assert query.args == [datetime(2026, 4, 30, tzinfo=UTC), datetime(2026, 5, 1, tzinfo=UTC)]
    query = Query()
    date_filter(query, "c", "c", ">2026-04-30T10:00:00.5Z, <= today, null", now)
    assert query.conditions == ["c >= $1", "c <= $2", "c IS NULL"]
    assert query.args[0] == datetime(2026, 4, 30, 10, 0, 1, 500000, tzinfo=UTC)
    assert query.args[1] == datetime(2026, 5, 1, tzinfo=UTC)
    with pytest.raises(FilterError) as info:
        date_filter(Query(), "c", "created_at", "<= never", now)
    assert info.value.body() == {"errors": {"created_at": ["Unable to parse '<= never'"]}}


def test_size_and_count_filters():
    from symbolon.filters import FilterError, Query, count_filter, size_filter

    query = Query()
    size_filter(query, "size", "size", ">= 10KB, < 1g")
    assert query.conditions == ["size >= $1", "size < $2"]
    assert query.args == [10 * 1024, 1024**3]
    with pytest.raises(FilterError) as info:
        size_filter(Query(), "size", "size", "10 parsecs")
    assert info.value.body() == {"errors": {"size": ["'10 parsecs' is not a valid size"]}}
    query = Query()
    count_filter(query, "count", "count", "> 3")
    assert (query.conditions, query.args) == (["count > $1"], [3])
