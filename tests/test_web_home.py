"""The home page (docs/web.md): the service for anonymous visitors, your figures once signed in,
with the permissions the JSON API applies; and the help page."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from symbolon import stats
from symbolon.accounts.permissions import Permission
from tests.accounts import Caller, make_upload, make_user, token_of
from tests.conftest import served
from tests.web_pages import fetch_page


@pytest.mark.gen_test(timeout=60)
async def test_anonymous_home_says_what_the_service_is(http_client, base_url):
    page = await fetch_page(http_client, base_url, Caller.anonymous(), "/")
    assert page.status == 200
    assert page.title == "Home · Symbolon" and page.h1() == "Symbolon"
    assert f"{base_url}/" in page.text  # the symbol URL
    assert ("Sign in", "/oidc/authenticate/") in page.links
    assert "Your uploads" not in page.text and "curl" not in page.text
    # Headings go down one level at a time, for screen readers.
    assert [tag for tag, _ in page.headings][:2] == ["h1", "h2"]
    # Where a failed sign-in lands (handlers/auth.py).
    failed = await fetch_page(http_client, base_url, Caller.anonymous(), "/?signin=failed")
    assert "Signing in did not succeed. Please try again." in failed.text
    assert 'role="alert"' in failed.body
    # Bytes that are not UTF-8 there are no failed sign-in, and the page still renders.
    odd = await fetch_page(http_client, base_url, Caller.anonymous(), "/?signin=%FF")
    assert odd.status == 200 and odd.h1() == "Symbolon"
    assert "Signing in did not succeed" not in odd.text


@pytest.mark.gen_test(timeout=60)
async def test_pages_answer_token_callers_like_the_api(http_client, base_url, runtime):
    user = await make_user(runtime, groups=("Uploaders",))
    key = await token_of(runtime, user, (Permission.MANAGE_TOKENS.value,))
    page = await fetch_page(http_client, base_url, Caller.with_token(key), "/")
    assert page.status == 200 and user.email in page.text
    assert "/oidc/logout/" not in page.body  # no session to end
    # The token holds only manage_tokens, so the page shows that, as the API would.
    tokens = await fetch_page(http_client, base_url, Caller.with_token(key), "/tokens")
    assert tokens.status == 200 and tokens.form("/tokens")["fields"]["permissions"] == [
        Permission.MANAGE_TOKENS.value
    ]


@pytest.mark.gen_test(timeout=60)
async def test_home_shows_your_figures_and_not_anyone_elses(settings, fresh_database):
    server = served(settings.replace(database_url=fresh_database))
    async with server as (client, base):
        rt = server.runtime
        user = await make_user(rt, groups=("Uploaders",))
        other = await make_user(rt)
        await make_upload(rt, user, size=2048, files=("v1/a/1/a.sym", "v1/a/1/a.pd_"))
        await make_upload(
            rt, user, size=10, created_at=datetime.now(UTC) - timedelta(days=2), files=()
        )
        await make_upload(rt, other, size=7_000_000, files=("v1/b/2/b.sym",))
        await rt.db.execute(
            """INSERT INTO missing_symbols (hash, symbol, debugid, filename)
               VALUES ('h1', 's.pdb', 'ID', 's.sym')"""
        )
        caller = await Caller.with_session(rt, user)
        page = await fetch_page(client, base, caller, "/")
        assert page.status == 200 and page.h1() == "Home"
        expected = await stats.home_stats(rt.db, user.id, all_uploads=False, is_superuser=False)
        today = expected["stats"]["uploads"]["today"]
        assert today == {"count": 1, "total_size": 2048}
        assert "Your uploads" in page.text and "Everyone's uploads" not in page.text
        assert "Today 1 2.0 KB 2" in page.text
        assert "Last 30 days 2 2.0 KB 2" in page.text
        assert "6.7 MB" not in page.text  # the other user's upload
        assert "Superuser No" in page.text
        for label in ("Upload symbols", "Upload try symbols", "Manage API tokens"):
            assert label in page.text
        assert "View all uploads" not in page.text
        # The chart: one bar a day for 30 days, today's last.
        assert page.body.count('<rect class="bar"') == 30
        today_label = datetime.now(UTC).strftime("%b %d")
        assert f"<title>{today_label}: 1</title>" in page.body
        assert "Your uploads per day, last 30 days" in page.text
        # Missing downloads, and the API calls behind the page.
        assert "Downloads missing" in page.text
        assert "http://127.0.0.1:" in page.body and "/api/stats/" in page.body
        assert "Auth-Token: YOURTOKENHERE" in page.text
        assert "/api/uploads/created/" not in page.body  # needs view_all_uploads

        # With view_all_uploads: everyone's uploads.
        auditor = await make_user(rt, groups=("Upload Auditors",))
        page = await fetch_page(client, base, await Caller.with_session(rt, auditor), "/")
        assert "Everyone's uploads" in page.text
        assert "Today 2 6.7 MB 3" in page.text
        assert f"<title>{today_label}: 2</title>" in page.body
        assert "/api/uploads/created/?date=%3E%3D" in page.body


@pytest.mark.gen_test(timeout=60)
async def test_home_for_people_without_permissions_and_superusers(http_client, base_url, runtime):
    plain = await make_user(runtime)
    page = await fetch_page(http_client, base_url, await Caller.with_session(runtime, plain), "/")
    assert "Permissions None yet" in page.text
    assert ("manage", "/tokens") not in page.links
    boss = await make_user(runtime, superuser=True)
    page = await fetch_page(http_client, base_url, await Caller.with_session(runtime, boss), "/")
    assert "Superuser Yes" in page.text and "Everyone's uploads" in page.text
    assert ("manage", "/tokens") in page.links


@pytest.mark.gen_test(timeout=60)
async def test_home_escapes_what_users_typed(http_client, base_url, runtime):
    user = await make_user(runtime, email="<script>alert(1)</script>@example.com")
    page = await fetch_page(http_client, base_url, await Caller.with_session(runtime, user), "/")
    assert page.status == 200
    assert "<script>alert" not in page.body
    assert page.body.count("&lt;script&gt;alert(1)&lt;/script&gt;@example.com") >= 2


@pytest.mark.gen_test(timeout=60)
async def test_help_explains_the_symbol_server_uploads_and_permissions(http_client, base_url):
    page = await fetch_page(http_client, base_url, Caller.anonymous(), "/help")
    assert page.status == 200 and page.title == "Help · Symbolon" and page.h1() == "Help"
    for expected in (
        f"SRV*C:\\symbols*{base_url}/",
        f"--symbols-url {base_url}/",
        f"-F symbols.zip=@symbols.zip {base_url}/upload/",
        "symbolon upload build/symbols/",
        "Uploaders",
        "Try symbols are deleted after 28 days",
        f"{base_url}/symbolicate/v5",
    ):
        assert expected in page.text, expected
    assert "does not serve the debuginfod protocol" in page.text
    assert {"Getting permissions", "The symbolication API"} <= {t for _, t in page.headings}
    # Code blocks keep their line breaks and indentation.
    assert '\n            "stacks"' in page.body
