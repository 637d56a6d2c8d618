"""Every protected endpoint, for each of {anonymous, no permission, right permission, superuser}
(docs/accounts.md).

Each caller kind comes as a browser session and as a token where that makes a difference: a
token carries only its own permissions, even a superuser's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from symbolon.accounts import tokens as token_store
from tests.accounts import Caller, call, make_upload, make_user, token_of

LOGIN = "login"
SUPERUSER = "superuser"
# A superuser, by session or by any of the superuser's tokens: the account's flag decides.
SUPERUSER_ACCOUNT = "superuser account"
MANAGE = "tokens.manage_tokens"
VIEW_ALL = "upload.view_all_uploads"
UPLOAD = "upload.upload_symbols"
NEEDS_LOGIN = "This requires an Auth-Token to authenticate the request"
NOT_BY_TOKEN = "User administration needs a signed-in superuser, not a token"
GROUP_FOR = {
    LOGIN: (),
    MANAGE: ("Uploaders",),
    UPLOAD: ("Uploaders",),
    VIEW_ALL: ("Upload Auditors",),
}


@dataclass
class Case:
    method: str
    path: str
    needs: str
    success: int = 200
    form: dict[str, str] = field(default_factory=dict)
    denied: str = "Forbidden"

    @property
    def id(self) -> str:
        return f"{self.method} {self.path}"


CASES = [
    Case("GET", "/api/stats/", LOGIN),
    Case("GET", "/api/stats/uploads", LOGIN),
    Case("GET", "/api/tokens/", MANAGE),
    Case("POST", "/api/tokens/", MANAGE, 201, {"permissions": "{manage_id}", "expires": "1"}),
    Case("DELETE", "/api/tokens/token/{own_token}", LOGIN),
    Case("POST", "/api/tokens/token/{own_token}/extend", LOGIN, form={"days": "2"}),
    Case("GET", "/api/uploads/", LOGIN),
    Case("GET", "/api/uploads/_possible_upload_urls/", LOGIN),
    Case(
        "GET",
        "/api/uploads/upload/{other_upload}",
        VIEW_ALL,
        denied="Insufficient access to view this upload",
    ),
    Case("GET", "/api/uploads/files/", VIEW_ALL),
    Case("GET", "/api/uploads/created/", VIEW_ALL),
    Case("GET", "/api/uploads/created/backfilled/", SUPERUSER_ACCOUNT),
    Case("POST", "/api/uploads/created/backfilled/", SUPERUSER_ACCOUNT, form={"days": "2"}),
    Case(
        "GET",
        "/api/uploads/files/file/{other_file}",
        VIEW_ALL,
        denied="Insufficient access to view this file",
    ),
    Case("GET", "/api/_users/", SUPERUSER),
    Case("GET", "/api/_users/user/{other_user}", SUPERUSER),
    Case("POST", "/api/_users/user/{other_user}", SUPERUSER, form={"is_active": "true"}),
    # Upload endpoints: with the right permission the request is judged on its content.
    Case("POST", "/upload/", UPLOAD, 400),
    Case("POST", "/upload/auth_info/", UPLOAD),
]


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_permission_matrix(http_client, base_url, runtime, case):
    other = await make_user(runtime)
    other_upload, (other_file,) = await make_upload(runtime, other)
    nobody = await make_user(runtime)
    superuser = await make_user(runtime, superuser=True)
    if case.needs in (SUPERUSER, SUPERUSER_ACCOUNT):
        right = superuser
        right_token_permissions: tuple[str, ...] = (MANAGE, VIEW_ALL, UPLOAD)
    else:
        right = await make_user(runtime, groups=GROUP_FOR[case.needs])
        right_token_permissions = () if case.needs == LOGIN else (case.needs,)
    manage_id = await runtime.db.fetchval(
        "SELECT id FROM permissions WHERE codename = 'tokens.manage_tokens'"
    )

    callers = {
        "anonymous": (Caller.anonymous(), None),
        "no permission (session)": (await Caller.with_session(runtime, nobody), nobody),
        "no permission (token)": (Caller.with_token(await token_of(runtime, nobody)), nobody),
        "superuser's token without the permission": (
            Caller.with_token(await token_of(runtime, superuser)),
            superuser,
        ),
        "right permission (session)": (await Caller.with_session(runtime, right), right),
        "right permission (token)": (
            Caller.with_token(await token_of(runtime, right, right_token_permissions)),
            right,
        ),
        "superuser (session)": (await Caller.with_session(runtime, superuser), superuser),
    }
    for label, (caller, user) in callers.items():
        own_token = await token_of(runtime, user or other)
        own_token_id = (await token_store_find(runtime, own_token)).id
        values = {
            "own_token": own_token_id,
            "other_upload": other_upload,
            "other_file": other_file,
            "other_user": other.id,
            "manage_id": manage_id,
        }
        path = case.path.format(**values)
        form = {k: v.format(**values) for k, v in case.form.items()}
        status, body = await call(http_client, base_url, caller, path, case.method, form)

        by_token = "Auth-Token" in caller.headers
        if label == "anonymous":
            expected = (403, NEEDS_LOGIN)
        elif label.startswith("right") or label.startswith("superuser (session)"):
            expected = (case.success, None)
            if case.needs == SUPERUSER and by_token:
                expected = (403, NOT_BY_TOKEN)
        elif case.needs == LOGIN or (case.needs == SUPERUSER_ACCOUNT and user is superuser):
            expected = (case.success, None)
        elif case.needs == SUPERUSER and by_token:
            expected = (403, NOT_BY_TOKEN)
        else:
            expected = (403, case.denied)
        if case.path == "/upload/auth_info/" and not by_token and expected[0] == 200:
            expected = (403, NEEDS_LOGIN)  # it describes the caller's token

        assert status == expected[0], f"{case.id} as {label}: {status} {body}"
        if expected[1] is not None:
            assert body == {"error": expected[1]}, f"{case.id} as {label}"


async def token_store_find(runtime, key):
    async with runtime.db.acquire() as conn:
        return await token_store.find_by_key(conn, key)


@pytest.mark.gen_test(timeout=30)
async def test_public_endpoints_need_no_one(http_client, base_url):
    for path in ("/api/_auth/", "/api/downloads/missing/"):
        status, _ = await call(http_client, base_url, Caller.anonymous(), path)
        assert status == 200, path


@pytest.mark.gen_test(timeout=30)
async def test_inactive_users_session_is_anonymous_and_their_tokens_fail(
    http_client, base_url, runtime
):
    user = await make_user(runtime, groups=("Uploaders",))
    session = await Caller.with_session(runtime, user)
    token = Caller.with_token(await token_of(runtime, user, (MANAGE,)))
    await runtime.db.execute("UPDATE users SET is_active = false WHERE id = $1", user.id)
    status, body = await call(http_client, base_url, session, "/api/tokens/")
    assert (status, body) == (403, {"error": NEEDS_LOGIN})
    status, body = await call(http_client, base_url, token, "/api/tokens/")
    assert (status, body) == (403, {"error": "API Token matched but user not active"})
