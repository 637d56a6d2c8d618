"""The users pages (docs/web.md, "Users"): superusers signed in only, search, activate and
deactivate, the superuser flag and groups through the users API's domain code, with CSRF, and
the audit trail."""

from __future__ import annotations

import urllib.parse
import uuid

import pytest

from tests.accounts import Caller, make_user, token_of
from tests.conftest import unique_email
from tests.web_pages import Page, fetch_page


async def get(http_client, base_url, caller: Caller, path: str) -> Page:
    return await fetch_page(http_client, base_url, caller, path)


async def change(http_client, base_url, caller: Caller, user_id: int, csrf=True, **form) -> Page:
    return await fetch_page(
        http_client, base_url, caller, f"/users/user/{user_id}", "POST", form=form, csrf=csrf
    )


async def groups_of(runtime, user_id: int) -> list[str]:
    rows = await runtime.db.fetch(
        """SELECT g.name FROM user_groups ug JOIN groups g ON g.id = ug.group_id
           WHERE ug.user_id = $1 ORDER BY g.name""",
        user_id,
    )
    return [r["name"] for r in rows]


async def group_id(runtime, name: str) -> int:
    return await runtime.db.fetchval("SELECT id FROM groups WHERE name = $1", name)


@pytest.mark.gen_test(timeout=60)
async def test_only_signed_in_superusers_administer_users(http_client, base_url, runtime):
    target = await make_user(runtime)
    for path in ("/users/", f"/users/user/{target.id}"):
        page = await get(http_client, base_url, Caller.anonymous(), path)
        assert page.status == 302
        assert urllib.parse.urlsplit(page.location).path == "/oidc/authenticate/"
    for groups in ((), ("Uploaders",), ("Upload Auditors",)):
        caller = await Caller.with_session(runtime, await make_user(runtime, groups=groups))
        for path in ("/users/", f"/users/user/{target.id}"):
            page = await get(http_client, base_url, caller, path)
            assert page.status == 403 and "for superusers" in page.text, (groups, path)
            assert target.email not in page.text
        refused = await change(
            http_client, base_url, caller, target.id, change="superuser", value="true"
        )
        assert refused.status == 403
        assert "Users" not in (await get(http_client, base_url, caller, "/")).navigation()
    # A superuser's token is not enough, as for the API.
    boss = await make_user(runtime, superuser=True)
    token = Caller.with_token(await token_of(runtime, boss, ("upload.view_all_uploads",)))
    page = await get(http_client, base_url, token, "/users/")
    assert page.status == 403 and "not a token" in page.text
    assert not (
        await runtime.db.fetchval("SELECT is_superuser FROM users WHERE id = $1", target.id)
    )


@pytest.mark.gen_test(timeout=60)
async def test_the_list_searches_and_escapes(http_client, base_url, runtime):
    mark = uuid.uuid4().hex[:8]
    found = await make_user(runtime, email=f"<b>{mark}</b>@example.com", groups=("Uploaders",))
    other = await make_user(runtime)
    boss = await Caller.with_session(runtime, await make_user(runtime, superuser=True))
    page = await get(http_client, base_url, boss, f"/users/?q={mark.upper()}")
    assert page.status == 200 and page.h1() == "Users"
    assert (found.email, f"/users/user/{found.id}") in page.links
    assert other.email not in page.text
    assert "Uploaders" in page.text
    assert f"<b>{mark}</b>" not in page.body and f"&lt;b&gt;{mark}&lt;/b&gt;" in page.body
    assert "symbolon_session=YOURSESSIONCOOKIE" in page.text and "/api/_users/" in page.text
    nothing = await get(http_client, base_url, boss, f"/users/?q=nobody-{mark}")
    assert f"No user's e-mail holds “nobody-{mark}”." in nothing.text
    # A page past the last of the search's one page.
    past = await get(http_client, base_url, boss, f"/users/?q={mark}&page=99999999999999999999")
    assert past.status == 200 and "No items on page" in past.text
    assert ("Last page", f"/users/?q={mark}") in past.links
    assert (await get(http_client, base_url, boss, "/")).navigation()["Users"] == "/users/"


@pytest.mark.gen_test(timeout=60)
async def test_groups_the_superuser_flag_and_activation_with_the_audit_trail(
    http_client, base_url, runtime
):
    admin_user = await make_user(runtime, superuser=True)
    boss = await Caller.with_session(runtime, admin_user)
    target = await make_user(runtime, email=unique_email("target"))
    target_session = await Caller.with_session(runtime, target)

    page = await get(http_client, base_url, boss, f"/users/user/{target.id}")
    assert page.status == 200 and page.h1() == target.email
    forms = [f for f in page.forms if f["action"] == f"/users/user/{target.id}"]
    assert {f["fields"]["change"] for f in forms} == {"active", "superuser", "groups"}
    assert all(f["fields"]["csrf_token"] == boss.csrf for f in forms)

    uploaders = await group_id(runtime, "Uploaders")
    done = await change(http_client, base_url, boss, target.id, change="groups", groups=[uploaders])
    assert done.status == 303 and done.location == f"/users/user/{target.id}"
    assert await groups_of(runtime, target.id) == ["Uploaders"]
    done = await change(http_client, base_url, boss, target.id, change="superuser", value="true")
    assert done.status == 303
    assert await runtime.db.fetchval("SELECT is_superuser FROM users WHERE id = $1", target.id)
    done = await change(http_client, base_url, boss, target.id, change="active", value="false")
    assert done.status == 303
    assert not await runtime.db.fetchval("SELECT is_active FROM users WHERE id = $1", target.id)
    # Deactivated: signed out everywhere.
    assert (await get(http_client, base_url, target_session, "/uploads/")).status == 302
    done = await change(http_client, base_url, boss, target.id, change="groups")  # no box ticked
    assert await groups_of(runtime, target.id) == []

    page = await get(http_client, base_url, boss, f"/users/user/{target.id}")
    trail = page.body.split("Audit trail", 1)[1]
    for expected in ("groups: (none) -&gt; Uploaders", "made a superuser", "deactivated",
                     "groups: Uploaders -&gt; (none)"):  # fmt: skip
        assert expected in trail, expected
    assert trail.index("Uploaders -&gt; (none)") < trail.index("(none) -&gt; Uploaders")
    assert admin_user.email in trail  # who did it


@pytest.mark.gen_test(timeout=60)
async def test_refusals_change_nothing(http_client, base_url, runtime):
    me = await make_user(runtime, superuser=True)
    boss = await Caller.with_session(runtime, me)
    target = await make_user(runtime)
    uploaders = await group_id(runtime, "Uploaders")
    # Without the CSRF token.
    refused = await change(
        http_client, base_url, boss, target.id, csrf=False, change="groups", groups=[uploaders]
    )
    assert refused.status == 403 and "CSRF token missing or incorrect" in refused.text
    assert await groups_of(runtime, target.id) == []
    # What the domain refuses, with its reason.
    page = await change(http_client, base_url, boss, me.id, change="active", value="false")
    assert page.status == 400 and "you cannot deactivate yourself" in page.text
    page = await change(http_client, base_url, boss, me.id, change="superuser", value="false")
    assert page.status == 400 and "you cannot remove your own superuser status" in page.text
    assert await runtime.db.fetchval(
        "SELECT is_active AND is_superuser FROM users WHERE id = $1", me.id
    )
    page = await change(http_client, base_url, boss, target.id, change="groups", groups=["99999"])
    assert page.status == 400 and "unknown group id 99999" in page.text
    for form in ({"change": "active", "value": "maybe"}, {"change": "nothing"},
                 {"change": "groups", "groups": ["x"]}):  # fmt: skip
        page = await change(http_client, base_url, boss, target.id, **form)
        assert page.status == 400, form
    assert (await change(http_client, base_url, boss, 999999999, change="groups")).status == 404
    trail = await runtime.db.fetchval(
        "SELECT count(*) FROM audit_log WHERE user_id = $1", target.id
    )
    assert trail == 0
