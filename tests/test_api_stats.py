"""``/api/stats/`` and ``/api/stats/uploads`` (docs/accounts.md), on a database of
their own so that every number is known."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest

from symbolon.stats import human_size
from tests.accounts import Caller, call, make_upload, make_user, token_of
from tests.conftest import served


def period(count: int, size: int | None = None) -> dict:
    return {"count": count} if size is None else {"count": count, "total_size": size}


@pytest.mark.gen_test(timeout=60)
async def test_home_stats(settings, fresh_database):
    server = served(settings.replace(database_url=fresh_database))
    async with server as (client, base):
        rt = server.runtime
        today = datetime.combine(datetime.now(UTC).date(), time(), tzinfo=UTC)
        user = await make_user(rt)
        other = await make_user(rt)
        await make_upload(rt, user, size=100, files=("v1/a/1/a.sym", "v1/a/1/a.pd_"))
        await make_upload(rt, user, size=30, created_at=today - timedelta(hours=1), files=())
        await make_upload(rt, user, size=7, created_at=today - timedelta(days=40), files=())
        await make_upload(rt, other, size=1000, files=("v1/b/2/b.sym",))
        for modified in (datetime.now(UTC), today - timedelta(hours=2), today - timedelta(days=29)):
            await rt.db.execute(
                """INSERT INTO missing_symbols (hash, symbol, debugid, filename, modified_at)
                   VALUES (md5(random()::text), 's.pdb', 'ID', 's.sym', $1)""",
                modified,
            )
        await token_of(rt, user)
        await token_of(rt, user)
        await rt.db.execute(
            """UPDATE tokens SET expires_at = now() - interval '1 day'
               WHERE id = (SELECT min(id) FROM tokens WHERE user_id = $1)""",
            user.id,
        )

        status, body = await call(client, base, await Caller.with_session(rt, user), "/api/stats/")
        assert status == 200
        assert body == {
            "stats": {
                "uploads": {
                    "all_uploads": False,
                    "today": period(1, 100),
                    "yesterday": period(1, 30),
                    "last_30_days": period(2, 130),
                },
                "files": {"today": period(2), "yesterday": period(0), "last_30_days": period(2)},
                "downloads": {
                    "missing": {
                        "today": period(1),
                        "yesterday": period(1),
                        "last_30_days": period(3),
                    }
                },
                "tokens": {"total": 2, "expired": 1},
            }
        }

        superuser = await make_user(rt, superuser=True)
        await rt.db.execute("UPDATE users SET is_active = false WHERE id = $1", other.id)
        _, body = await call(client, base, await Caller.with_session(rt, superuser), "/api/stats/")
        stats = body["stats"]
        assert stats["uploads"]["all_uploads"] is True
        assert stats["uploads"]["today"] == period(2, 1100)
        assert stats["files"]["today"] == period(3)
        assert stats["tokens"] == {"total": 0, "expired": 0}
        assert stats["users"] == {"total": 3, "superusers": 1, "active": 2, "not_active": 1}

        # A superuser's token without view-all counts only the superuser's own uploads.
        token = Caller.with_token(await token_of(rt, superuser))
        _, body = await call(client, base, token, "/api/stats/")
        assert body["stats"]["uploads"]["all_uploads"] is False
        assert body["stats"]["uploads"]["today"] == period(0, 0)
        assert "users" in body["stats"]  # a flag check: the superuser flag still shows

        _, body = await call(
            client, base, await Caller.with_session(rt, user), "/api/stats/uploads"
        )
        assert body["uploads"]["today"] == {
            "count": 1,
            "total_size": 100,
            "total_size_human": "100 bytes",
            "files": 2,
        }
        assert body["uploads"]["yesterday"]["count"] == 1
        assert set(body["uploads"]) == {"today", "yesterday", "this_month"}


def test_human_sizes_read_like_the_reference():
    assert human_size(0) == "0 bytes"
    assert human_size(1) == "1 byte"
    assert human_size(1023) == "1023 bytes"
    assert human_size(1024) == "1.0 KB"
    assert human_size(int(117.7 * 1024**2)) == "117.7 MB"
    assert human_size(3 * 1024**3) == "3.0 GB"
