"""Browser sessions: PostgreSQL holds them, Redis only caches them; CSRF on every change (docs/accounts.md)."""

from __future__ import annotations

import json

import pytest

from symbolon.accounts.sessions import SESSION_COOKIE
from tests.accounts import Caller, call, make_user, token_of
from tests.conftest import served, unique_email
from tests.oidc_provider import Browser
from tests.redis_pause import pause


@pytest.mark.gen_test(timeout=30)
async def test_a_session_is_found_in_the_database_when_the_cache_forgot_it(runtime):
    user = await make_user(runtime)
    cookie, session = await runtime.sessions.create(user.id)
    await runtime.cache.delete(session.cache_key)
    loaded = await runtime.sessions.load(cookie)
    assert (loaded.user_id, loaded.csrf_token) == (user.id, session.csrf_token)
    # ...and the database row is the truth: gone from it, gone.
    await runtime.db.execute("DELETE FROM sessions WHERE key_hash = $1", session.key_hash)
    await runtime.cache.delete(session.cache_key)
    assert await runtime.sessions.load(cookie) is None


@pytest.mark.gen_test(timeout=30)
async def test_forged_expired_and_foreign_cookies_are_nobody(runtime):
    user = await make_user(runtime)
    cookie, session = await runtime.sessions.create(user.id)
    assert await runtime.sessions.load(cookie + "x") is None
    assert await runtime.sessions.load(cookie.replace("|", "|0", 1)) is None
    assert await runtime.sessions.load("") is None
    # A value signed with our key for another cookie name does not pass as a session.
    assert await runtime.sessions.load(runtime.sessions.sign("symbolon_oidc", "x")) is None
    await runtime.db.execute(
        "UPDATE sessions SET expires_at = now() - interval '1 second' WHERE key_hash = $1",
        session.key_hash,
    )
    await runtime.cache.delete(session.cache_key)
    assert await runtime.sessions.load(cookie) is None
    assert await runtime.sessions.purge_expired() >= 1


@pytest.mark.gen_test(timeout=30)
async def test_the_session_key_is_stored_only_hashed(runtime):
    user = await make_user(runtime)
    cookie, _ = await runtime.sessions.create(user.id)
    key = runtime.sessions.unsign(SESSION_COOKIE, cookie, 60)
    assert key
    rows = await runtime.db.fetch("SELECT * FROM sessions WHERE user_id = $1", user.id)
    assert rows and all(key not in json.dumps(dict(r), default=str) for r in rows)


@pytest.mark.gen_test(timeout=60)
async def test_signing_in_and_staying_signed_in_while_redis_is_paused(
    own_redis,
    settings,
    oidc_provider,
):
    """With the cache paused, a session cookie still works."""
    configured = oidc_provider.settings(settings.replace(redis_url=own_redis))
    email = unique_email("paused")
    async with served(configured) as (_, base), Browser() as signed_in, Browser() as late:
        await signed_in.sign_in(base, email)
        await pause(own_redis, settings)
        # Signed in before the pause: still signed in.
        response = await signed_in.request("GET", f"{base}/api/_auth/")
        me = await response.json()
        assert me["user"]["email"] == email
        # Changes still work: the CSRF token comes from the database too.
        response = await signed_in.request(
            "POST", f"{base}/api/tokens/", headers={"X-CSRFToken": me["csrf_token"]}
        )
        assert response.status == 403  # a new user may not manage tokens: but not a 500
        assert await response.json() == {"error": "Forbidden"}
        # Signing in during the pause works as well.
        response = await late.sign_in(base, email)
        assert response.headers["Location"] == "/?signedin=true"
        response = await late.request("GET", f"{base}/api/_auth/")
        assert (await response.json())["user"]["email"] == email


@pytest.mark.gen_test(timeout=30)
@pytest.mark.parametrize(
    ("method", "path", "form"),
    [
        ("POST", "/api/tokens/", {"permissions": "1", "expires": "1"}),
        ("DELETE", "/api/tokens/token/{token_id}", None),
        ("POST", "/api/tokens/token/{token_id}/extend", {"days": "1"}),
        ("POST", "/api/_users/user/{user_id}", {"is_superuser": "true"}),
        ("POST", "/upload/", {"url": "https://example.com/a.zip"}),
    ],
)
async def test_changes_by_session_need_the_csrf_token(
    http_client, base_url, runtime, method, path, form
):
    superuser = await make_user(runtime, superuser=True)
    victim = await make_user(runtime)
    token = await token_of(runtime, superuser, ("tokens.manage_tokens",))
    token_id = await runtime.db.fetchval("SELECT id FROM tokens WHERE user_id = $1", superuser.id)
    path = path.format(token_id=token_id, user_id=victim.id)
    caller = await Caller.with_session(runtime, superuser)
    for presented in (None, "wrong", caller.csrf[:-1]):
        headers = dict(caller.headers)
        if presented is not None:
            headers["X-CSRFToken"] = presented
        status, body = await call(http_client, base_url, Caller(headers), path, method, form)
        assert (status, body) == (403, {"error": "CSRF token missing or incorrect"}), presented
    # Nothing happened.
    assert (
        await runtime.db.fetchval("SELECT count(*) FROM tokens WHERE user_id = $1", superuser.id)
        == 1
    )
    assert not await runtime.db.fetchval("SELECT is_superuser FROM users WHERE id = $1", victim.id)
    # Reading needs no token; a token-authenticated change needs none either.
    status, _ = await call(http_client, base_url, caller, "/api/tokens/")
    assert status == 200
    status, _ = await call(
        http_client, base_url, Caller.with_token(token), "/api/tokens/token/0", "DELETE"
    )
    assert status == 404


@pytest.mark.gen_test(timeout=30)
async def test_csrf_token_may_come_as_a_form_field(http_client, base_url, runtime):
    user = await make_user(runtime, groups=("Uploaders",))
    caller = await Caller.with_session(runtime, user)
    manage = await runtime.db.fetchval(
        "SELECT id FROM permissions WHERE codename = 'tokens.manage_tokens'"
    )
    form = {"permissions": str(manage), "expires": "1", "csrf_token": caller.csrf}
    status, body = await call(
        http_client, base_url, caller, "/api/tokens/", "POST", form, csrf=False
    )
    assert status == 201, body


@pytest.mark.gen_test(timeout=30)
async def test_an_auth_token_header_wins_over_the_session_cookie(http_client, base_url, runtime):
    signed_in = await make_user(runtime, superuser=True)
    other = await make_user(runtime)
    session = await Caller.with_session(runtime, signed_in)
    token = await token_of(runtime, other)
    both = Caller({**session.headers, "Auth-Token": token})
    status, body = await call(http_client, base_url, both, "/api/_auth/")
    assert status == 200 and body["user"]["email"] == other.email
    assert "csrf_token" not in body


@pytest.mark.gen_test(timeout=30)
async def test_a_deleted_user_is_signed_out(http_client, base_url, runtime):
    user = await make_user(runtime)
    caller = await Caller.with_session(runtime, user)
    await runtime.db.execute("DELETE FROM users WHERE id = $1", user.id)
    status, body = await call(http_client, base_url, caller, "/api/_auth/")
    assert (status, body["user"]) == (200, None)


@pytest.mark.gen_test(timeout=30)
async def test_auth_debug_says_whether_cache_and_cookies_work(http_client, base_url, runtime):
    await runtime.cache.delete("auth-debug")
    first = await http_client.fetch(f"{base_url}/__auth_debug__")
    assert first.headers["Content-Type"].startswith("text/plain")
    assert first.headers["Cache-Control"] == "no-store"
    assert first.body.decode().splitlines() == [
        "Refresh to see if caching works.",
        "Refresh to see if session cookies work.",
    ]
    cookie = first.headers["Set-Cookie"].split(";")[0]
    again = await http_client.fetch(f"{base_url}/__auth_debug__", headers={"Cookie": cookie})
    assert again.body.decode().splitlines() == ["Cache works!", "Session cookies work!"]
    without = await http_client.fetch(f"{base_url}/__auth_debug__")
    assert without.body.decode().splitlines()[1] == "Refresh to see if session cookies work."


@pytest.mark.gen_test(timeout=30)
async def test_without_its_csrf_token_a_cookie_does_not_authenticate_a_change(
    http_client, base_url, runtime
):
    """Endpoints open to anyone keep working for a signed-in browser; they just do not see the
    user, as another site's forged request must not."""
    caller = await Caller.with_session(runtime, await make_user(runtime))
    status, body = await call(http_client, base_url, caller, "/api/_auth/", "POST", csrf=False)
    assert status == 200 and body["user"] is None
    status, body = await call(http_client, base_url, caller, "/api/_auth/", "POST")
    assert status == 200 and body["user"] is not None
