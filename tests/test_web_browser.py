"""The web UI in a real browser (docs/web.md): Chromium, ``symbolon serve``, the real OpenID
Connect provider. Each step's page is kept as screenshots at phone and desktop widths."""

from __future__ import annotations

import json
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import asyncpg

from tests.browser import Journey, chromium, journey, site
from tests.conftest import run_isolated, unique_email

__all__ = ["chromium", "journey", "site"]  # fixtures, used by name


def poll(predicate, seconds: float = 30.0, every: float = 0.2) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return False


def test_sign_in_make_a_token_see_a_missing_symbol_sign_out(journey: Journey):
    page = journey.page
    email = unique_email("browser")

    # Anonymous: what the service is, and how to sign in.
    journey.go("/")
    assert page.title() == "Home · Symbolon"
    assert page.get_by_role("heading", level=1).inner_text() == "Symbolon"
    assert f"{journey.site.url}/" in page.locator("main").inner_text()
    journey.shots("01-home-anonymous")
    # The first Tab reaches the skip link, which leads to the content.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to the content"

    # A page that needs someone sends the visitor to sign in, and back there afterwards.
    journey.go("/help")
    journey.shots("02-help")
    journey.sign_in(email)
    page.wait_for_url(re.compile(r".*/help$"))
    assert "Signed in as " + email in page.locator(".flash").inner_text()
    page.get_by_role("link", name="Home").first.click()
    assert page.locator(".flash").count() == 0  # greeted once
    facts = page.locator("dl.facts").inner_text()
    assert email in facts and "None yet" in facts
    journey.shots("03-home-no-permissions")

    # Without the permission, the tokens page says what is missing.
    journey.go("/tokens")
    assert page.get_by_role("heading", level=1).inner_text() == "Forbidden"
    assert "Manage API tokens" in page.locator("main").inner_text()
    journey.shots("04-tokens-forbidden")

    # An administrator makes the person an uploader.
    journey.site.symbolon("user", "groups", email, "Uploaders")
    journey.go("/")
    facts = page.locator("dl.facts").inner_text()
    assert "Upload symbols" in facts and "Manage API tokens" in facts
    assert page.locator("figure.chart svg rect.bar").count() == 30
    journey.shots("05-home-uploader")

    # Make a token: the live check warns about both upload permissions together.
    page.get_by_role("link", name="API tokens").click()
    page.wait_for_url(re.compile(r".*/tokens$"))
    warning = page.locator("[data-exclusive]")
    page.get_by_label("Upload symbols (upload.upload_symbols)").check()
    page.get_by_label("Upload try symbols (upload.upload_try_symbols)").check()
    assert warning.is_visible()
    journey.shots("06-tokens-warning")
    page.get_by_label("Upload try symbols (upload.upload_try_symbols)").uncheck()
    assert not warning.is_visible()
    notes = f"CI <b>{uuid.uuid4().hex[:6]}</b>"
    page.get_by_label("Notes").fill(notes)
    page.get_by_label("Expires in").select_option(label="90 days")
    page.get_by_role("button", name="Make token").click()
    key = page.locator("#new-token-key").input_value()
    assert re.fullmatch(r"[0-9a-f]{32}", key)
    assert notes in page.locator("table").inner_text()  # shown as text, not markup
    journey.shots("07-token-made")
    status, body = journey.site.get("/api/_auth/", {"Auth-Token": key})
    assert status == 200 and json.loads(body)["user"]["email"] == email
    # Shown once: the page again has the prefix only.
    journey.go("/tokens")
    assert key not in page.content() and key[:8] in page.content()

    # A download that misses shows up under "Downloads missing".
    symbol = f"web{uuid.uuid4().hex[:8]}.pdb"
    debug_id = uuid.uuid4().hex.upper() + "1"
    status, _ = journey.site.get(f"/{symbol}/{debug_id}/{symbol[:-4]}.sym")
    assert status == 404
    page.get_by_role("link", name="Downloads missing").first.click()
    page.get_by_label("Debug file").fill(symbol)
    page.get_by_role("button", name="Filter").click()

    def listed() -> bool:
        if symbol in page.locator("table").inner_text():
            return True
        page.reload()
        return False

    assert poll(listed), "the missing symbol never appeared"
    assert debug_id in page.locator("table").inner_text()
    journey.shots("08-downloads-missing")

    # Sign out: a POST with the CSRF token, back to the anonymous home page.
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(journey.site.url + "/")
    assert page.get_by_role("link", name="Sign in").first.is_visible()
    journey.go("/tokens")
    page.wait_for_url(re.compile("^" + re.escape(journey.site.issuer)))
    assert journey.errors == []


def test_a_superusers_pages_with_figures(journey: Journey, live_settings):
    """Home with a month of uploads, and the pages a superuser sees, at both widths."""
    email = unique_email("boss")
    journey.site.symbolon("superuser", email)
    prefix = f"chart{uuid.uuid4().hex[:6]}"

    async def arrange() -> None:
        conn = await asyncpg.connect(live_settings.database_url)
        try:
            user_id = await conn.fetchval(
                "SELECT id FROM users WHERE lower(email) = lower($1)", email
            )
            for day in range(30):
                for n in range((day * 7) % 5 + (3 if day > 25 else 0)):
                    await conn.execute(
                        """INSERT INTO uploads (user_id, filename, bucket_name, size,
                                                completed_at, created_at)
                           VALUES ($1, $2, 'symbols', $3, now(),
                                   now() - make_interval(days => $4))""",
                        user_id,
                        f"{prefix}-{day}-{n}.zip",
                        1_000_000 * (n + 1),
                        day,
                    )
            for i in range(30):
                await conn.execute(
                    """INSERT INTO missing_symbols (hash, symbol, debugid, filename, code_file,
                                                    code_id, count)
                       VALUES (md5(random()::text), $1, $2, $3, $4, $5, $6)""",
                    f"{prefix}lib{i}.pdb",
                    uuid.uuid4().hex.upper() + "1",
                    f"{prefix}lib{i}.sym",
                    f"{prefix}lib{i}.dll",
                    uuid.uuid4().hex[:12].upper(),
                    (i * 37) % 100 + 1,
                )
        finally:
            await conn.close()

    # On a thread of its own: Playwright's loop runs on this one.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(run_isolated, arrange()).result()
    page = journey.page
    journey.go("/")
    journey.sign_in(email)
    assert "Superuser Yes" in " ".join(page.locator("dl.facts").inner_text().split())
    bars = page.locator("figure.chart rect.bar")
    assert bars.count() == 30
    assert page.locator("figure.chart").get_by_text("The numbers").is_visible()
    journey.shots("10-home-superuser")
    journey.go(f"/downloads/missing/?symbol={prefix}&sort=count&reverse=true")
    assert page.locator("tbody tr").count() == 20
    journey.shots("11-downloads-missing-sorted")
    page.get_by_role("link", name="Next").click()
    assert page.locator("tbody tr").count() == 10
    page.locator("details.curl summary").click()
    assert "/api/downloads/missing/?" in page.locator("details.curl").inner_text()
    journey.shots("12-downloads-missing-page-2-curl")
    journey.go("/tokens")
    journey.shots("13-tokens-superuser")
    assert journey.errors == []
