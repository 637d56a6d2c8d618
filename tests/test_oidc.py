"""Browser sign-in end to end against a real OpenID Connect provider (docs/accounts.md)."""

from __future__ import annotations

import logging
import urllib.parse

import pytest
from tornado.testing import bind_unused_port

from symbolon.accounts.sessions import SESSION_COOKIE
from tests.conftest import served, unique_email
from tests.oidc_provider import Browser

SIGNED_IN = "/?signedin=true"
FAILED = "/?signin=failed"


def dead_url() -> str:
    """An address where nothing listens: a provider that is down."""
    sock, port = bind_unused_port()
    sock.close()
    return f"http://127.0.0.1:{port}"


def replace_param(name: str, value: str):
    def rewrite(url: str) -> str:
        parts = urllib.parse.urlsplit(url)
        query = dict(urllib.parse.parse_qsl(parts.query))
        query[name] = value
        return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))

    return rewrite


def set_cookie(response, name: str) -> list[str]:
    return [c for c in response.headers.getall("Set-Cookie", []) if c.startswith(f"{name}=")]


async def whoami(browser: Browser, base: str) -> dict:
    response = await browser.request("GET", f"{base}/api/_auth/")
    assert response.status == 200
    return await response.json()


@pytest.fixture
def browser(io_loop):
    b = Browser()
    yield b
    io_loop.run_sync(b.close)


async def user_row(runtime, email):
    return await runtime.db.fetchrow("SELECT * FROM users WHERE lower(email) = lower($1)", email)


@pytest.mark.gen_test(timeout=60)
async def test_first_sign_in_creates_a_user_with_no_permissions(
    settings, oidc_provider, browser, caplog, runtime
):
    email = unique_email("newcomer")
    caplog.set_level(logging.INFO, logger="symbolon.access")
    async with served(oidc_provider.settings(settings)) as (_, base):
        response = await browser.sign_in(base, email)
        assert response.status == 302
        assert response.headers["Location"] == SIGNED_IN
        (cookie,) = set_cookie(response, SESSION_COOKIE)
        assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
        assert "Secure" not in cookie  # SESSION_COOKIE_SECURE=false in these tests

        me = await whoami(browser, base)
        assert me["user"] == {
            "email": email,
            "is_active": True,
            "is_superuser": False,
            "permissions": [],
        }
        assert me["sign_out_url"] == f"{base}/oidc/logout/"
        assert me["csrf_token"]
        # The sign-in page remembered nothing after its one use.
        assert browser.cookie("symbolon_oidc") in (None, "")
    row = await user_row(runtime, email)
    assert row["is_active"] and not row["is_superuser"] and row["last_login"] is not None
    # The one-time code never reaches the access log.
    logged = [r.getMessage() for r in caplog.records if "/oidc/callback/" in r.getMessage()]
    assert logged and not any("code=" in m or "state=" in m for m in logged)


@pytest.mark.gen_test(timeout=60)
async def test_hs256_with_endpoints_configured_one_by_one(settings, oidc_provider, browser):
    issuer = oidc_provider.issuer
    configured = oidc_provider.settings(
        settings,
        "HS256",
        oidc_op_issuer=None,
        oidc_op_authorization_endpoint=f"{issuer}/auth",
        oidc_op_token_endpoint=f"{issuer}/token",
        oidc_op_user_endpoint=f"{issuer}/me",
    )
    email = unique_email("hs")
    async with served(configured) as (_, base):
        response = await browser.sign_in(base, email)
        assert response.headers["Location"] == SIGNED_IN
        assert (await whoami(browser, base))["user"]["email"] == email


@pytest.mark.gen_test(timeout=60)
async def test_returning_user_signs_into_the_same_account_with_its_permissions(
    settings, oidc_provider, runtime
):
    async with served(oidc_provider.settings(settings)) as (_, base):
        email = unique_email("returning")
        async with Browser() as first, Browser() as second:
            await first.sign_in(base, email)
            row = await user_row(runtime, email)
            await runtime.db.execute(
                """INSERT INTO user_groups (user_id, group_id)
                   SELECT $1, id FROM groups WHERE name = 'Uploaders'""",
                row["id"],
            )
            # The provider may spell the address differently: accounts match case-insensitively.
            response = await second.sign_in(base, email.upper())
            assert response.headers["Location"] == SIGNED_IN
            me = await whoami(second, base)
            assert me["user"]["email"] == email
            codenames = {p["codename"] for p in me["user"]["permissions"]}
            assert codenames == {
                "upload.upload_symbols",
                "upload.upload_try_symbols",
                "tokens.manage_tokens",
            }
            again = await user_row(runtime, email)
            assert again["id"] == row["id"] and again["last_login"] > row["last_login"]
            # Both browsers are signed in, each with a session of its own.
            assert (await whoami(first, base))["user"]["email"] == email


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(replace_param("state", "forged-state"), id="wrong state"),
        pytest.param(replace_param("nonce", "another-nonce"), id="bad nonce"),
    ],
)
async def test_tampered_sign_in_fails_without_a_session(
    settings, oidc_provider, browser, tamper, runtime
):
    email = unique_email("tampered")
    async with served(oidc_provider.settings(settings)) as (_, base):
        response = await browser.sign_in(base, email, rewrite=tamper)
        assert response.status == 302
        assert response.headers["Location"] == FAILED
        assert set_cookie(response, SESSION_COOKIE) == []
        assert (await whoami(browser, base))["user"] is None
    assert await user_row(runtime, email) is None


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("algorithm", ["RS256", "HS256"])
async def test_id_token_with_a_bad_signature_is_refused(
    settings, oidc_provider, browser, algorithm, runtime
):
    email = unique_email("forged")
    oidc_provider.tamper(True)
    try:
        async with served(oidc_provider.settings(settings, algorithm)) as (_, base):
            response = await browser.sign_in(base, email)
            assert response.headers["Location"] == FAILED
            assert (await whoami(browser, base))["user"] is None
    finally:
        oidc_provider.tamper(False)
    assert await user_row(runtime, email) is None


@pytest.mark.gen_test(timeout=60)
async def test_callback_without_a_sign_in_started_here_fails(settings, oidc_provider, browser):
    async with served(oidc_provider.settings(settings)) as (_, base):
        response = await browser.request("GET", f"{base}/oidc/callback/?code=abc&state=xyz")
        assert (response.status, response.headers["Location"]) == (302, FAILED)
        # The provider's own refusal (e.g. the user said no) fails the same way.
        start = await browser.request("GET", f"{base}/oidc/authenticate/")
        state = dict(
            urllib.parse.parse_qsl(urllib.parse.urlsplit(start.headers["Location"]).query)
        )["state"]
        response = await browser.request(
            "GET", f"{base}/oidc/callback/?error=access_denied&state={state}"
        )
        assert (response.status, response.headers["Location"]) == (302, FAILED)


def assert_error_page(response, text: str) -> None:
    assert response.status == 503
    assert response.headers["Content-Type"].startswith("text/html")
    assert "Sign-in is not available" in text
    assert "Traceback" not in text and "Error" not in text


@pytest.mark.gen_test(timeout=60)
async def test_provider_down_at_sign_in_start_shows_a_clear_page(settings, oidc_provider, browser):
    down = oidc_provider.settings(settings, oidc_op_issuer=dead_url(), oidc_timeout=2.0)
    async with served(down) as (_, base):
        response = await browser.request("GET", f"{base}/oidc/authenticate/")
        assert_error_page(response, await response.text())


@pytest.mark.gen_test(timeout=60)
async def test_provider_down_at_the_callback_shows_a_clear_page(
    settings, oidc_provider, browser, runtime
):
    # The provider signs the user in, then its token endpoint is unreachable.
    issuer = oidc_provider.issuer
    configured = oidc_provider.settings(
        settings,
        oidc_op_issuer=None,
        oidc_op_authorization_endpoint=f"{issuer}/auth",
        oidc_op_token_endpoint=f"{dead_url()}/token",
        oidc_op_user_endpoint=f"{issuer}/me",
        oidc_op_jwks_endpoint=f"{issuer}/jwks",
        oidc_timeout=2.0,
    )
    email = unique_email("down")
    async with served(configured) as (_, base):
        response = await browser.sign_in(base, email)
        assert_error_page(response, await response.text())
    assert await user_row(runtime, email) is None


@pytest.mark.gen_test(timeout=30)
async def test_sign_in_not_configured_says_so(settings, browser):
    async with served(settings) as (_, base):
        response = await browser.request("GET", f"{base}/oidc/authenticate/")
        assert_error_page(response, await response.text())
        assert "try again later" in (await response.text())


@pytest.mark.gen_test(timeout=60)
async def test_sign_out_needs_the_csrf_token_and_ends_the_session(settings, oidc_provider, browser):
    async with served(oidc_provider.settings(settings)) as (_, base):
        await browser.sign_in(base, unique_email("leaving"))
        me = await whoami(browser, base)
        forged = await browser.request("POST", f"{base}/oidc/logout/")
        assert forged.status == 403
        assert await forged.json() == {"error": "CSRF token missing or incorrect"}
        assert (await whoami(browser, base))["user"] is not None

        response = await browser.request(
            "POST", f"{base}/oidc/logout/", headers={"X-CSRFToken": me["csrf_token"]}
        )
        assert (response.status, response.headers["Location"]) == (302, "/")
        assert (await whoami(browser, base))["user"] is None
        # GET does not sign out (a link or an image on another page must not either).
        response = await browser.request("GET", f"{base}/oidc/logout/")
        assert response.status == 405


@pytest.mark.gen_test(timeout=60)
async def test_sign_out_also_works_from_a_plain_form(settings, oidc_provider, browser):
    async with served(oidc_provider.settings(settings)) as (_, base):
        await browser.sign_in(base, unique_email("form"))
        token = (await whoami(browser, base))["csrf_token"]
        response = await browser.request("POST", f"{base}/oidc/logout/", data={"csrf_token": token})
        assert (response.status, response.headers["Location"]) == (302, "/")
        assert (await whoami(browser, base))["user"] is None


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize(
    ("next_path", "expected"),
    [
        ("/uploads/upload/3?tab=files", "/uploads/upload/3?tab=files"),
        ("//evil.example/", SIGNED_IN),
        ("https://evil.example/", SIGNED_IN),
        ("/\\evil.example", SIGNED_IN),
        ("javascript:alert(1)", SIGNED_IN),
        ("/\x0b/x", SIGNED_IN),  # no header may hold a control character
    ],
)
async def test_after_sign_in_only_local_paths(
    settings, oidc_provider, browser, next_path, expected
):
    async with served(oidc_provider.settings(settings)) as (_, base):
        response = await browser.sign_in(base, unique_email("next"), next_path=next_path)
        assert response.headers["Location"] == expected


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize("login", ["unverified-{}@example.com", "noemail-{}"])
async def test_provider_without_a_verified_address_is_refused(
    settings, oidc_provider, browser, login
):
    async with served(oidc_provider.settings(settings)) as (_, base):
        response = await browser.sign_in(base, login.format(unique_email().split("@")[0]))
        assert response.headers["Location"] == FAILED


@pytest.mark.gen_test(timeout=60)
async def test_deactivated_user_cannot_sign_in_but_a_blocked_one_is_active_again(
    settings, oidc_provider, runtime
):
    async with served(oidc_provider.settings(settings)) as (_, base):
        deactivated = unique_email("deactivated")
        blocked = unique_email("blocked")
        for email, reason in ((deactivated, "admin"), (blocked, "blocked")):
            await runtime.db.execute(
                "INSERT INTO users (email, is_active, inactive_reason) VALUES ($1, false, $2)",
                email,
                reason,
            )
        async with Browser() as first, Browser() as second:
            response = await first.sign_in(base, deactivated)
            assert response.headers["Location"] == FAILED
            assert (await whoami(first, base))["user"] is None
            # Blocked at the provider by mistake: signing in again makes the account active.
            response = await second.sign_in(base, blocked)
            assert response.headers["Location"] == SIGNED_IN
            assert (await whoami(second, base))["user"]["is_active"] is True
    assert (await user_row(runtime, deactivated))["is_active"] is False
    row = await user_row(runtime, blocked)
    assert row["is_active"] is True and row["inactive_reason"] is None


@pytest.mark.gen_test(timeout=60)
async def test_secure_cookies_outside_local_development(settings, oidc_provider, browser):
    secure = oidc_provider.settings(settings, session_cookie_secure=True)
    async with served(secure) as (_, base):
        start = await browser.request("GET", f"{base}/oidc/authenticate/")
        (cookie,) = set_cookie(start, "symbolon_oidc")
        assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie


@pytest.mark.gen_test(timeout=60)
async def test_signing_in_again_replaces_the_session(settings, oidc_provider, browser, runtime):
    async with served(oidc_provider.settings(settings)) as (_, base):
        email = unique_email("twice")
        await browser.sign_in(base, email)
        old = browser.cookie(SESSION_COOKIE)
        await browser.sign_in(base, email)
        assert browser.cookie(SESSION_COOKIE) != old
        user = await user_row(runtime, email)
        count = await runtime.db.fetchval(
            "SELECT count(*) FROM sessions WHERE user_id = $1", user["id"]
        )
        assert count == 1
