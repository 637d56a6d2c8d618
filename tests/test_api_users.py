"""User management for superusers (docs/accounts.md, "User management")."""

from __future__ import annotations

import pytest

from tests.accounts import Caller, call, make_upload, make_user, token_of


async def group_ids(runtime) -> dict[str, int]:
    return {r["name"]: r["id"] for r in await runtime.db.fetch("SELECT id, name FROM groups")}


async def token_permissions(runtime, key: str) -> set[str]:
    from symbolon.accounts.tokens import find_by_key

    async with runtime.db.acquire() as conn:
        return set((await find_by_key(conn, key)).permissions)


@pytest.mark.gen_test(timeout=30)
async def test_superuser_lists_users_with_counts_groups_and_permissions(
    http_client, base_url, runtime
):
    admin = await Caller.with_session(runtime, await make_user(runtime, superuser=True))
    user = await make_user(runtime, groups=("Uploaders",))
    await make_upload(runtime, user)
    await token_of(runtime, user)
    status, body = await call(http_client, base_url, admin, "/api/_users/")
    assert status == 200
    (listed,) = [u for u in body["users"] if u["id"] == user.id]
    assert listed["email"] == user.email
    assert (listed["no_uploads"], listed["no_tokens"]) == (1, 1)
    assert listed["is_active"] is True and listed["is_superuser"] is False
    assert [g["name"] for g in listed["groups"]] == ["Uploaders"]
    assert {p["codename"] for p in listed["permissions"]} == {
        "upload.upload_symbols",
        "upload.upload_try_symbols",
        "tokens.manage_tokens",
    }
    assert [g["name"] for g in body["groups"]] == ["Uploaders", "Upload Auditors"]
    auditors = body["groups"][1]
    assert [p["codename"] for p in auditors["permissions"]] == ["upload.view_all_uploads"]


@pytest.mark.gen_test(timeout=30)
async def test_deactivating_signs_out_and_stops_tokens_and_is_audited(
    http_client, base_url, runtime
):
    boss = await make_user(runtime, superuser=True)
    admin = await Caller.with_session(runtime, boss)
    user = await make_user(runtime, groups=("Uploaders",))
    session = await Caller.with_session(runtime, user)
    token = Caller.with_token(await token_of(runtime, user, ("tokens.manage_tokens",)))
    path = f"/api/_users/user/{user.id}"

    status, body = await call(http_client, base_url, admin, path, "POST", {"is_active": "false"})
    assert status == 200 and body["ok"] is True
    assert body["user"]["is_active"] is False
    assert (
        await runtime.db.fetchval("SELECT count(*) FROM sessions WHERE user_id = $1", user.id) == 0
    )
    _, me = await call(http_client, base_url, session, "/api/_auth/")
    assert me["user"] is None
    status, body = await call(http_client, base_url, token, "/api/tokens/")
    assert (status, body) == (403, {"error": "API Token matched but user not active"})

    status, body = await call(http_client, base_url, admin, path, "POST", {"is_active": "true"})
    assert body["user"]["is_active"] is True
    status, _ = await call(http_client, base_url, token, "/api/tokens/")
    assert status == 200
    _, body = await call(http_client, base_url, admin, path)
    assert [(a["actor"], a["action"]) for a in body["audit"]] == [
        (boss.email, "activate"),
        (boss.email, "deactivate"),
    ]


@pytest.mark.gen_test(timeout=30)
async def test_losing_a_group_takes_its_permissions_off_the_users_tokens(
    http_client, base_url, runtime
):
    groups = await group_ids(runtime)
    admin = await Caller.with_session(runtime, await make_user(runtime, superuser=True))
    user = await make_user(runtime)
    path = f"/api/_users/user/{user.id}"
    both = f"{groups['Uploaders']},{groups['Upload Auditors']}"
    status, body = await call(http_client, base_url, admin, path, "POST", {"groups": both})
    assert status == 200
    assert [g["name"] for g in body["user"]["groups"]] == ["Uploaders", "Upload Auditors"]
    key = await token_of(runtime, user, ("upload.upload_symbols", "upload.view_all_uploads"))

    only_auditor = str(groups["Upload Auditors"])
    await call(http_client, base_url, admin, path, "POST", {"groups": only_auditor})
    assert await token_permissions(runtime, key) == {"upload.view_all_uploads"}
    await call(http_client, base_url, admin, path, "POST", {"groups": ""})
    assert await token_permissions(runtime, key) == set()
    _, body = await call(http_client, base_url, admin, path)
    assert body["user"]["groups"] == [] and body["user"]["permissions"] == []


@pytest.mark.gen_test(timeout=30)
async def test_superuser_flag_on_and_off(http_client, base_url, runtime):
    admin = await Caller.with_session(runtime, await make_user(runtime, superuser=True))
    user = await make_user(runtime)
    path = f"/api/_users/user/{user.id}"
    status, body = await call(http_client, base_url, admin, path, "POST", {"is_superuser": "true"})
    assert status == 200
    assert body["user"]["is_superuser"] is True and body["user"]["is_staff"] is True
    assert len(body["user"]["permissions"]) == 5  # every one, crashes.view_crashes included
    key = await token_of(runtime, user, ("upload.view_all_uploads",))
    await call(http_client, base_url, admin, path, "POST", {"is_superuser": "false"})
    assert await token_permissions(runtime, key) == set()


@pytest.mark.gen_test(timeout=30)
async def test_changes_are_validated_and_all_or_nothing(http_client, base_url, runtime):
    boss = await make_user(runtime, superuser=True)
    admin = await Caller.with_session(runtime, boss)
    user = await make_user(runtime)
    path = f"/api/_users/user/{user.id}"

    async def post(form, where=path):
        return await call(http_client, base_url, admin, where, "POST", form)

    assert await post({"is_active": "maybe"}) == (
        400,
        {"errors": {"is_active": ["'maybe' is not true or false"]}},
    )
    assert await post({"groups": "uploaders"}) == (
        400,
        {"errors": {"groups": ["Unrecognized group id 'uploaders'"]}},
    )
    status, body = await post({"is_superuser": "true", "groups": "999999"})
    assert (status, body) == (400, {"errors": {"groups": ["unknown group id 999999"]}})
    assert not await runtime.db.fetchval("SELECT is_superuser FROM users WHERE id = $1", user.id)
    status, body = await post({})
    assert status == 400 and "__all__" in body["errors"]
    own = f"/api/_users/user/{boss.id}"
    assert await post({"is_active": "false"}, own) == (
        400,
        {"errors": {"is_active": ["you cannot deactivate yourself"]}},
    )
    assert await post({"is_superuser": "false"}, own) == (
        400,
        {"errors": {"is_superuser": ["you cannot remove your own superuser status"]}},
    )
    assert await post({"is_active": "true"}, "/api/_users/user/999999999") == (
        404,
        {"error": "No User matches the given query."},
    )
