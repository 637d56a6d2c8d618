"""The API tokens page (docs/web.md): your tokens only; making one (its key once), extending,
deleting, with the rules of /api/tokens/ and CSRF-checked forms."""

from __future__ import annotations

import re
import urllib.parse
from datetime import timedelta

import pytest

from symbolon.accounts import tokens as token_store
from symbolon.accounts.permissions import Permission
from tests.accounts import Caller, make_user, token_of
from tests.web_pages import fetch_page

UPLOAD = Permission.UPLOAD_SYMBOLS.value
TRY = Permission.UPLOAD_TRY_SYMBOLS.value
VIEW_ALL = Permission.VIEW_ALL_UPLOADS.value
MANAGE = Permission.MANAGE_TOKENS.value


async def tokens_of(runtime, user) -> list[token_store.Token]:
    async with runtime.db.acquire() as conn:
        return await token_store.user_tokens(conn, user.id)


@pytest.fixture
def uploader(runtime, io_loop):
    return io_loop.run_sync(lambda: make_user(runtime, groups=("Uploaders",)))


@pytest.mark.gen_test(timeout=60)
async def test_anonymous_visitors_are_sent_to_sign_in(http_client, base_url):
    page = await fetch_page(http_client, base_url, Caller.anonymous(), "/tokens?state=all")
    assert page.status == 302
    assert page.location == "/oidc/authenticate/?" + urllib.parse.urlencode(
        {"next": "/tokens?state=all"}
    )
    for path in ("/tokens", "/tokens/extend", "/tokens/delete"):
        posted = await fetch_page(
            http_client, base_url, Caller.anonymous(), path, "POST", {"token": "1"}
        )
        assert posted.status == 403, path


@pytest.mark.gen_test(timeout=60)
async def test_without_manage_tokens_the_page_says_what_is_missing(http_client, base_url, runtime):
    caller = await Caller.with_session(runtime, await make_user(runtime))
    page = await fetch_page(http_client, base_url, caller, "/tokens")
    assert page.status == 403 and page.h1() == "Forbidden"
    assert "“Manage API tokens”" in page.text
    assert ("Getting permissions", "/help#permissions") in page.links
    made = await fetch_page(
        http_client, base_url, caller, "/tokens", "POST", {"permissions": MANAGE, "expires": "7"}
    )
    assert made.status == 403


@pytest.mark.gen_test(timeout=60)
async def test_lists_your_tokens_only_with_counts(http_client, base_url, runtime, uploader):
    other = await make_user(runtime, groups=("Uploaders",))
    mine = await token_of(runtime, uploader, (UPLOAD,))
    old = await token_of(runtime, uploader, (TRY,))
    theirs = await token_of(runtime, other, (UPLOAD,))
    await runtime.db.execute(
        "UPDATE tokens SET expires_at = now() - interval '1 day' WHERE key_prefix = $1", old[:8]
    )
    caller = await Caller.with_session(runtime, uploader)
    page = await fetch_page(http_client, base_url, caller, "/tokens")
    assert (
        page.status == 200 and page.title == "API tokens · Symbolon" and page.h1() == "API tokens"
    )
    assert mine[:8] in page.text and old[:8] not in page.text
    assert theirs[:8] not in page.body  # never another user's
    assert mine not in page.body  # only the prefix of a key, ever
    assert ("Active (1)", "/tokens") in page.links
    assert ("Expired (1)", "/tokens?state=expired") in page.links
    assert ("All (2)", "/tokens?state=all") in page.links
    expired = await fetch_page(http_client, base_url, caller, "/tokens?state=expired")
    assert old[:8] in expired.text and mine[:8] not in expired.text and "expired" in expired.text
    every = await fetch_page(http_client, base_url, caller, "/tokens?state=all")
    assert old[:8] in every.text and mine[:8] in every.text and theirs[:8] not in every.body
    bad = await fetch_page(http_client, base_url, caller, "/tokens?state=<x>")
    assert bad.status == 400 and "Unrecognized state value &#x27;&lt;x&gt;&#x27;" in bad.body
    # The form offers only what the user holds.
    offered = page.form("/tokens")["fields"]["permissions"]
    assert sorted(offered) == sorted([UPLOAD, TRY, MANAGE])
    assert "curl -H &#x27;Auth-Token: YOURTOKENHERE&#x27;" in page.body


@pytest.mark.gen_test(timeout=60)
async def test_making_a_token_shows_its_key_once(http_client, base_url, runtime, uploader):
    caller = await Caller.with_session(runtime, uploader)
    notes = "CI for <script>alert('x')</script>"
    page = await fetch_page(
        http_client,
        base_url,
        caller,
        "/tokens",
        "POST",
        {"permissions": [UPLOAD], "expires": "90", "notes": notes},
    )
    assert page.status == 200
    (key,) = re.findall(
        r'id="new-token-key" type="text" readonly value="([0-9a-f]{32})"', page.body
    )
    assert "Token made. Copy its key now" in page.text
    assert "<script>alert" not in page.body
    assert "CI for &lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page.body
    (made,) = await tokens_of(runtime, uploader)
    assert made.key_prefix == key[:8] and made.permissions == (UPLOAD,) and made.notes == notes
    remaining = made.expires_at - made.created_at
    assert timedelta(days=89, hours=23) < remaining <= timedelta(days=90, seconds=5)
    found = await token_store.find_by_key(runtime.db, key)
    assert found is not None and found.id == made.id
    again = await fetch_page(http_client, base_url, caller, "/tokens")
    assert key not in again.body and key[:8] in again.text


@pytest.mark.gen_test(timeout=60)
@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"permissions": [UPLOAD, TRY], "expires": "30"}, "cannot carry both"),
        ({"permissions": [VIEW_ALL], "expires": "30"}, "permissions you do not hold: View all"),
        ({"permissions": ["upload.nonsense"], "expires": "30"}, "do not hold: upload.nonsense"),
        ({"expires": "30"}, "Choose at least one permission."),
        ({"permissions": [UPLOAD], "expires": "3651"}, "Choose when the token expires."),
        ({"permissions": [UPLOAD], "expires": "x"}, "Choose when the token expires."),
    ],
)
async def test_refused_tokens_are_not_made(http_client, base_url, runtime, uploader, form, message):
    caller = await Caller.with_session(runtime, uploader)
    page = await fetch_page(http_client, base_url, caller, "/tokens", "POST", form)
    assert page.status == 400
    assert "The token was not made" in page.text and message in page.text
    assert await tokens_of(runtime, uploader) == []
    # The form keeps what was chosen.
    fields = page.form("/tokens")["fields"]
    assert "new-token-key" not in page.body and fields["csrf_token"] == caller.csrf


@pytest.mark.gen_test(timeout=60)
async def test_the_both_uploads_warning_is_in_the_form(http_client, base_url, runtime, uploader):
    page = await fetch_page(
        http_client, base_url, await Caller.with_session(runtime, uploader), "/tokens"
    )
    assert f'data-exclusive="{TRY},{UPLOAD}"' in page.body or (
        f'data-exclusive="{UPLOAD},{TRY}"' in page.body
    )


@pytest.mark.gen_test(timeout=60)
async def test_forms_without_the_csrf_token_change_nothing(
    http_client, base_url, runtime, uploader
):
    key = await token_of(runtime, uploader, (UPLOAD,))
    (token,) = await tokens_of(runtime, uploader)
    caller = await Caller.with_session(runtime, uploader)
    for path, form in (
        ("/tokens", {"permissions": [UPLOAD], "expires": "30"}),
        ("/tokens/extend", {"token": str(token.id), "days": "30"}),
        ("/tokens/delete", {"token": str(token.id)}),
    ):
        page = await fetch_page(http_client, base_url, caller, path, "POST", form, csrf=False)
        assert page.status == 403, path
        assert "CSRF token missing or incorrect" in page.text
    assert await tokens_of(runtime, uploader) == [token]
    assert await token_store.find_by_key(runtime.db, key) is not None


@pytest.mark.gen_test(timeout=60)
async def test_extend_and_delete_your_own_tokens(http_client, base_url, runtime, uploader):
    await token_of(runtime, uploader, (UPLOAD,))
    (token,) = await tokens_of(runtime, uploader)
    caller = await Caller.with_session(runtime, uploader)
    extended = await fetch_page(
        http_client,
        base_url,
        caller,
        "/tokens/extend",
        "POST",
        {"token": str(token.id), "days": "365"},
    )
    assert extended.status == 303 and extended.location == "/tokens"
    (after,) = await tokens_of(runtime, uploader)
    assert after.expires_at - token.expires_at == timedelta(days=365)
    too_long = await fetch_page(
        http_client,
        base_url,
        caller,
        "/tokens/extend",
        "POST",
        {"token": str(token.id), "days": "12"},
    )
    assert too_long.status == 400  # not one of the choices

    deleted = await fetch_page(
        http_client, base_url, caller, "/tokens/delete", "POST", {"token": str(token.id)}
    )
    assert deleted.status == 303 and await tokens_of(runtime, uploader) == []
    missing = await fetch_page(
        http_client, base_url, caller, "/tokens/delete", "POST", {"token": str(token.id)}
    )
    assert missing.status == 404


@pytest.mark.gen_test(timeout=60)
async def test_extend_and_delete_flash_once_after_the_redirect(
    http_client, base_url, runtime, uploader
):
    await token_of(runtime, uploader, (UPLOAD,))
    (token,) = await tokens_of(runtime, uploader)
    caller = await Caller.with_session(runtime, uploader)
    done = await fetch_page(
        http_client,
        base_url,
        caller,
        "/tokens/extend",
        "POST",
        {"token": str(token.id), "days": "7"},
    )
    flash = [
        c.split(";")[0]
        for c in done.headers.get_list("Set-Cookie")
        if c.startswith("symbolon_flash=")
    ]
    assert flash
    with_flash = Caller({"Cookie": caller.headers["Cookie"] + "; " + flash[0]}, csrf=caller.csrf)
    page = await fetch_page(http_client, base_url, with_flash, "/tokens")
    assert f"Token {token.key_prefix}… extended by 1 week." in page.text


@pytest.mark.gen_test(timeout=60)
async def test_other_peoples_tokens_cannot_be_touched(http_client, base_url, runtime, uploader):
    other = await make_user(runtime, groups=("Uploaders",))
    await token_of(runtime, other, (UPLOAD,))
    (theirs,) = await tokens_of(runtime, other)
    caller = await Caller.with_session(runtime, uploader)
    for path, form in (
        ("/tokens/extend", {"token": str(theirs.id), "days": "30"}),
        ("/tokens/delete", {"token": str(theirs.id)}),
        ("/tokens/delete", {"token": "99999999999999999999999"}),
        ("/tokens/delete", {"token": "x"}),
    ):
        page = await fetch_page(http_client, base_url, caller, path, "POST", form)
        assert page.status == 404, (path, form)
    assert await tokens_of(runtime, other) == [theirs]
    # A superuser may delete anyone's, as with the API; extending stays the owner's.
    boss = await Caller.with_session(runtime, await make_user(runtime, superuser=True))
    page = await fetch_page(
        http_client,
        base_url,
        boss,
        "/tokens/extend",
        "POST",
        {"token": str(theirs.id), "days": "30"},
    )
    assert page.status == 404
    page = await fetch_page(
        http_client, base_url, boss, "/tokens/delete", "POST", {"token": str(theirs.id)}
    )
    assert page.status == 303 and await tokens_of(runtime, other) == []
