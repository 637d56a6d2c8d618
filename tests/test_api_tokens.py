"""The token API and the life of a token (docs/accounts.md, "API tokens")."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import pytest

from tests.accounts import Caller, call, make_user, token_of

NAMES = {
    "upload.upload_symbols": "Upload Symbols Files",
    "upload.upload_try_symbols": "Upload Try Symbols Files",
    "upload.view_all_uploads": "View All Symbols Uploads",
    "tokens.manage_tokens": "Manage Your API Tokens",
}


async def permission_ids(runtime) -> dict[str, int]:
    rows = await runtime.db.fetch("SELECT id, codename FROM permissions")
    return {r["codename"]: r["id"] for r in rows}


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@pytest.mark.gen_test(timeout=60)
async def test_token_lifecycle_create_use_extend_expire_revoke(http_client, base_url, runtime):
    ids = await permission_ids(runtime)
    user = await make_user(runtime, groups=("Uploaders",))
    browser = await Caller.with_session(runtime, user)

    # Create: the key is in this answer, once.
    form = {"permissions": str(ids["upload.upload_symbols"]), "expires": "7", "notes": "  CI  "}
    status, body = await call(http_client, base_url, browser, "/api/tokens/", "POST", form)
    assert status == 201, body
    assert body["ok"] is True
    made = body["token"]
    key = made["key"]
    assert re.fullmatch(r"[0-9a-f]{32}", key)
    assert made["notes"] == "CI"
    assert made["permissions"] == [
        {"name": "Upload Symbols Files", "id": ids["upload.upload_symbols"]}
    ]
    assert made["is_expired"] is False
    expires = parse_time(made["expires_at"])
    assert (
        timedelta(days=6, hours=23)
        < expires - parse_time(made["created_at"])
        <= timedelta(days=7, seconds=1)
    )

    # Use it, with a label after the key as current clients send.
    token = Caller.with_token(f"{key}-ci-20230913")
    status, body = await call(http_client, base_url, token, "/upload/auth_info/", "POST")
    assert status == 200 and body["email"] == user.email

    # Listed by prefix: the secret is stored only hashed.
    status, body = await call(http_client, base_url, browser, "/api/tokens/")
    assert status == 200
    (listed,) = [t for t in body["tokens"] if t["id"] == made["id"]]
    assert listed["key"] is None and listed["key_prefix"] == key[:8]
    assert body["totals"] == {"all": 1, "active": 1, "expired": 0}
    stored = await runtime.db.fetchrow("SELECT * FROM tokens WHERE id = $1", made["id"])
    assert key not in str(dict(stored))

    # Extend: from the current expiry, not from now.
    path = f"/api/tokens/token/{made['id']}/extend"
    status, body = await call(http_client, base_url, browser, path, "POST", {"days": "10"})
    assert (status, body) == (200, {"ok": True, "days": 10})
    extended = await runtime.db.fetchval("SELECT expires_at FROM tokens WHERE id = $1", made["id"])
    assert abs(extended - expires - timedelta(days=10)) < timedelta(milliseconds=1)

    # Expire: refused with the reference's message, and listed as expired.
    await runtime.db.execute(
        "UPDATE tokens SET expires_at = now() - interval '1 minute' WHERE id = $1", made["id"]
    )
    status, body = await call(http_client, base_url, token, "/upload/auth_info/", "POST")
    assert (status, body) == (403, {"error": "API Token found but expired"})
    status, body = await call(http_client, base_url, browser, "/api/tokens/")
    assert body["tokens"] == [] and body["totals"] == {"all": 1, "active": 0, "expired": 1}
    status, body = await call(http_client, base_url, browser, "/api/tokens/?state=expired")
    assert [t["id"] for t in body["tokens"]] == [made["id"]]
    assert body["tokens"][0]["is_expired"] is True

    # Revoke: gone, and a second delete finds nothing.
    path = f"/api/tokens/token/{made['id']}"
    status, body = await call(http_client, base_url, browser, path, "DELETE")
    assert (status, body) == (200, {"ok": True})
    status, body = await call(http_client, base_url, token, "/upload/auth_info/", "POST")
    assert (status, body) == (403, {"error": "API Token not matched"})
    status, body = await call(http_client, base_url, browser, path, "DELETE")
    assert (status, body) == (404, {"error": "No Token matches the given query."})


@pytest.mark.gen_test(timeout=30)
async def test_token_list_is_your_own_newest_first_with_what_you_may_grant(
    http_client, base_url, runtime
):
    user = await make_user(runtime, groups=("Uploaders",))
    someone = await make_user(runtime, groups=("Uploaders",))
    first = await token_of(runtime, user, ("upload.upload_symbols",))
    second = await token_of(runtime, user, ("tokens.manage_tokens",))
    await token_of(runtime, someone, ("upload.upload_symbols",))
    browser = await Caller.with_session(runtime, user)
    status, body = await call(http_client, base_url, browser, "/api/tokens/?state=all")
    assert status == 200
    assert [t["key_prefix"] for t in body["tokens"]] == [second[:8], first[:8]]
    ids = await permission_ids(runtime)
    # Uploaders hold manage_tokens, and may put it on a token.
    assert body["permissions"] == [
        {"name": NAMES[c], "id": ids[c]}
        for c in ("upload.upload_symbols", "upload.upload_try_symbols", "tokens.manage_tokens")
    ]
    superuser = await Caller.with_session(runtime, await make_user(runtime, superuser=True))
    _, body = await call(http_client, base_url, superuser, "/api/tokens/")
    assert len(body["permissions"]) == 5  # every permission, crashes.view_crashes included
    status, body = await call(http_client, base_url, browser, "/api/tokens/?state=old")
    assert (status, body) == (400, {"errors": {"state": ["Unrecognized state value 'old'"]}})


@pytest.mark.gen_test(timeout=30)
async def test_token_creation_is_validated(http_client, base_url, runtime):
    ids = await permission_ids(runtime)
    user = await make_user(runtime, groups=("Uploaders",))
    browser = await Caller.with_session(runtime, user)
    up, try_up = ids["upload.upload_symbols"], ids["upload.upload_try_symbols"]

    async def create(form):
        return await call(http_client, base_url, browser, "/api/tokens/", "POST", form)

    required = ["This field is required."]
    assert await create({}) == (400, {"errors": {"permissions": required, "expires": required}})
    assert await create({"permissions": str(up)}) == (400, {"errors": {"expires": required}})
    assert await create({"permissions": str(up), "expires": "soon"}) == (
        400,
        {"errors": {"expires": ["Invalid number of days ('soon')"]}},
    )
    assert await create({"permissions": f"{up},{try_up}", "expires": "1"}) == (
        400,
        {"errors": {"permissions": ["Invalid combination of permissions"]}},
    )
    assert await create({"permissions": "999999", "expires": "1"}) == (
        400,
        {"errors": {"permissions": ["Unrecognized permission id '999999'"]}},
    )
    assert await create({"permissions": str(ids["upload.view_all_uploads"]), "expires": "1"}) == (
        403,
        {"error": "View All Symbols Uploads not a valid permission"},
    )
    assert await runtime.db.fetchval("SELECT count(*) FROM tokens WHERE user_id = $1", user.id) == 0


@pytest.mark.gen_test(timeout=30)
async def test_a_token_cannot_mint_a_stronger_token(http_client, base_url, runtime):
    ids = await permission_ids(runtime)
    superuser = await make_user(runtime, superuser=True)
    manager = Caller.with_token(await token_of(runtime, superuser, ("tokens.manage_tokens",)))
    form = {"permissions": str(ids["upload.upload_symbols"]), "expires": "1"}
    status, body = await call(http_client, base_url, manager, "/api/tokens/", "POST", form)
    assert (status, body) == (403, {"error": "Upload Symbols Files not a valid permission"})
    form = {"permissions": str(ids["tokens.manage_tokens"]), "expires": "1"}
    status, body = await call(http_client, base_url, manager, "/api/tokens/", "POST", form)
    assert status == 201


@pytest.mark.gen_test(timeout=30)
async def test_delete_and_extend_reach_only_what_they_should(http_client, base_url, runtime):
    owner = await make_user(runtime, groups=("Uploaders",))
    stranger = await Caller.with_session(runtime, await make_user(runtime, groups=("Uploaders",)))
    superuser = await Caller.with_session(runtime, await make_user(runtime, superuser=True))
    await token_of(runtime, owner, ("upload.upload_symbols",))
    token_id = await runtime.db.fetchval("SELECT id FROM tokens WHERE user_id = $1", owner.id)
    not_found = (404, {"error": "No Token matches the given query."})

    extend = f"/api/tokens/token/{token_id}/extend"
    assert await call(http_client, base_url, stranger, extend, "POST") == not_found
    # Only the owner extends, superusers included.
    assert await call(http_client, base_url, superuser, extend, "POST") == not_found
    delete = f"/api/tokens/token/{token_id}"
    assert await call(http_client, base_url, stranger, delete, "DELETE") == not_found
    # Superusers may delete anyone's.
    assert await call(http_client, base_url, superuser, delete, "DELETE") == (200, {"ok": True})
    assert (
        await call(
            http_client, base_url, superuser, "/api/tokens/token/99999999999999999999", "DELETE"
        )
        == not_found
    )


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize(
    ("days", "expected"),
    [
        (None, (200, {"ok": True, "days": 365})),
        ("", (200, {"ok": True, "days": 365})),
        ("0", (200, {"ok": True, "days": 365})),
        ("30", (200, {"ok": True, "days": 30})),
        ("a year", (400, {"errors": {"days": ["Invalid number of days ('a year')"]}})),
        ("-5", (400, {"errors": {"days": ["Invalid number of days ('-5')"]}})),
    ],
)
async def test_extend_days(http_client, base_url, runtime, days, expected):
    user = await make_user(runtime)
    await token_of(runtime, user)
    token_id = await runtime.db.fetchval("SELECT id FROM tokens WHERE user_id = $1", user.id)
    browser = await Caller.with_session(runtime, user)
    form = {} if days is None else {"days": days}
    path = f"/api/tokens/token/{token_id}/extend"
    assert await call(http_client, base_url, browser, path, "POST", form) == expected


@pytest.mark.gen_test(timeout=30)
async def test_token_item_endpoints_check_the_method_before_anything_else(http_client, base_url):
    bad = Caller.with_token("0" * 32)
    status, body = await call(http_client, base_url, bad, "/api/tokens/token/1", "GET")
    assert (status, body) == (405, {"error": "Method Not Allowed (GET): /api/tokens/token/1"})
    response = await http_client.fetch(
        f"{base_url}/api/tokens/token/1/extend", raise_error=False, headers=bad.headers
    )
    assert response.code == 405 and response.headers["Allow"] == "POST"
