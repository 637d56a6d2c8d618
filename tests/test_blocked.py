"""The blocked-user check (docs/accounts.md) against a stand-in for Auth0's management API.

Auth0 is a hosted service that no test can start, so a small server plays its two endpoints,
checking what the reference sends them; it can also fail on demand.
"""

from __future__ import annotations

import asyncio
import json

import pytest
import tornado.httpserver
import tornado.web
from tornado.testing import bind_unused_port

from tests.accounts import Caller, call, make_user, token_of
from tests.cli import env_for, invoke
from tests.conftest import served, unique_email

BLOCKED = {"error": "User is blocked in Auth0 and made inactive."}
CLIENT_ID, CLIENT_SECRET = "symbolon-client", "symbolon-secret"


class FakeAuth0:
    def __init__(self) -> None:
        self.blocked: set[str] = set()
        self.known: set[str] = set()
        self.searches: list[str] = []
        self.token_requests = 0
        self.failing = False
        self.base = ""

    def app(self) -> tornado.web.Application:
        fake = self

        class TokenHandler(tornado.web.RequestHandler):
            def post(self) -> None:
                body = json.loads(self.request.body)
                assert body == {
                    "client_id": CLIENT_ID,
                    "client_secret": CLIENT_SECRET,
                    "grant_type": "client_credentials",
                    "audience": f"{fake.base}/api/v2/",
                }
                fake.token_requests += 1
                self.write({"access_token": "management-token", "expires_in": 86400})

        class UsersHandler(tornado.web.RequestHandler):
            def get(self) -> None:
                assert self.request.headers["Authorization"] == "Bearer management-token"
                if fake.failing:
                    raise tornado.web.HTTPError(503)
                query = self.get_query_argument("q")
                assert query.startswith('email:"') and query.endswith('"')
                email = query[len('email:"') : -1]
                fake.searches.append(email)
                found = []
                if email in fake.known or email in fake.blocked:
                    found = [{"email": email, "blocked": email in fake.blocked}]
                self.set_header("Content-Type", "application/json")
                self.write(json.dumps(found))

        return tornado.web.Application(
            [(r"/oauth/token", TokenHandler), (r"/api/v2/users", UsersHandler)]
        )


@pytest.fixture
def auth0(io_loop):
    fake = FakeAuth0()
    sock, port = bind_unused_port()
    server = tornado.httpserver.HTTPServer(fake.app())
    server.add_sockets([sock])
    fake.base = f"http://127.0.0.1:{port}"
    yield fake
    server.stop()


@pytest.fixture
def checked(settings, auth0):
    return settings.replace(
        enable_auth0_blocked_check=True,
        oidc_op_user_endpoint=f"{auth0.base}/userinfo",
        oidc_rp_client_id=CLIENT_ID,
        oidc_rp_client_secret=CLIENT_SECRET,
    )


@pytest.mark.gen_test(timeout=30)
async def test_a_blocked_token_user_is_made_inactive_and_signed_out(checked, auth0):
    server = served(checked)
    async with server as (client, base):
        rt = server.runtime
        user = await make_user(rt, groups=("Uploaders",))
        token = Caller.with_token(await token_of(rt, user, ("tokens.manage_tokens",)))
        await rt.sessions.create(user.id)
        auth0.blocked.add(user.email)

        assert await call(client, base, token, "/api/tokens/") == (403, BLOCKED)
        row = await rt.db.fetchrow("SELECT * FROM users WHERE id = $1", user.id)
        assert (row["is_active"], row["inactive_reason"]) == (False, "blocked")
        assert (
            await rt.db.fetchval("SELECT count(*) FROM sessions WHERE user_id = $1", user.id) == 0
        )
        # Tokens are kept; they stop working because their owner is inactive.
        assert await rt.db.fetchval("SELECT count(*) FROM tokens WHERE user_id = $1", user.id) == 1
        status, body = await call(client, base, token, "/api/tokens/")
        assert (status, body) == (403, {"error": "API Token matched but user not active"})
        audit = await rt.db.fetchval(
            "SELECT message FROM audit_log WHERE user_id = $1 AND actor = 'blocked check'", user.id
        )
        assert "blocked" in audit


@pytest.mark.gen_test(timeout=30)
async def test_a_blocked_session_user_is_signed_out(checked, auth0):
    server = served(checked)
    async with server as (client, base):
        rt = server.runtime
        user = await make_user(rt)
        session = await Caller.with_session(rt, user)
        auth0.blocked.add(user.email)
        assert await call(client, base, session, "/api/stats/") == (403, BLOCKED)
        _, me = await call(client, base, session, "/api/_auth/")
        assert me["user"] is None


@pytest.mark.gen_test(timeout=30)
async def test_users_are_looked_up_once_per_interval_whatever_the_process(checked, auth0):
    server = served(checked)
    async with server as (client, base):
        rt = server.runtime
        user = await make_user(rt)
        auth0.known.add(user.email)
        unknown = await make_user(rt)  # not in Auth0 at all: fine too
        for who in (user, user, unknown, unknown):
            caller = Caller.with_token(await token_of(rt, who))
            status, _ = await call(client, base, caller, "/api/stats/")
            assert status == 200
        assert auth0.searches == [user.email, unknown.email]
        assert auth0.token_requests == 1  # the management token is reused

        # Another web process learns it from Redis.
        other = served(checked)
        async with other as (_, other_base):
            caller = Caller.with_token(await token_of(rt, user))
            status, _ = await call(client, other_base, caller, "/api/stats/")
            assert status == 200
        assert auth0.searches == [user.email, unknown.email]

        # Once the interval is over (Redis forgets, and so does the process), ask again.
        await rt.cache.delete(f"not-blocked:{user.id}")
        rt.blocked.forget(user.id)
        caller = Caller.with_token(await token_of(rt, user))
        await call(client, base, caller, "/api/stats/")
        assert auth0.searches == [user.email, unknown.email, user.email]
        # Anonymous requests never ask.
        await call(client, base, Caller.anonymous(), "/api/_auth/")
        assert len(auth0.searches) == 3


@pytest.mark.gen_test(timeout=30)
async def test_when_auth0_cannot_answer_the_request_fails_and_the_user_stays(checked, auth0):
    server = served(checked)
    async with server as (client, base):
        rt = server.runtime
        user = await make_user(rt)
        auth0.failing = True
        status, body = await call(
            client, base, Caller.with_token(await token_of(rt, user)), "/api/stats/"
        )
        assert status == 503
        assert "try again later" in body["error"]
        assert await rt.db.fetchval("SELECT is_active FROM users WHERE id = $1", user.id)


@pytest.mark.gen_test(timeout=30)
async def test_the_check_is_off_by_default(settings):
    assert settings.enable_auth0_blocked_check is False
    server = served(settings)
    async with server:
        assert server.runtime.blocked is None


@pytest.mark.gen_test(timeout=60)
async def test_is_blocked_command(live_settings, auth0):
    blocked, fine, missing = unique_email("gone"), unique_email("here"), unique_email("who")
    auth0.blocked.add(blocked)
    auth0.known.add(fine)
    env = env_for(
        live_settings,
        OIDC_RP_CLIENT_ID=CLIENT_ID,
        OIDC_RP_CLIENT_SECRET=CLIENT_SECRET,
        OIDC_OP_AUTHORIZATION_ENDPOINT=f"{auth0.base}/authorize",
        OIDC_OP_TOKEN_ENDPOINT=f"{auth0.base}/oauth/token",
        OIDC_OP_USER_ENDPOINT=f"{auth0.base}/userinfo",
    )
    # The command talks to the stand-in served on this test's event loop: run it in a thread.
    results = [
        await asyncio.to_thread(invoke, command, email, env=env)
        for command, email in (
            ("is-blocked", blocked),
            ("is-blocked", fine),
            ("is-blocked-in-auth0", missing),
        )
    ]
    assert [r.stdout.strip() for r in results] == [
        "BLOCKED!",
        "NOT blocked!",
        f"{missing} could not be found in Auth0",
    ], [r.stderr for r in results]
    auth0.failing = True
    failed = await asyncio.to_thread(invoke, "is-blocked", fine, env=env)
    assert failed.returncode != 0 and "answered 503" in failed.stderr
