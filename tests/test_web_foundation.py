"""The web UI's foundation (docs/web.md): the route list, the page base class (sign-in
redirects, 403 pages, CSRF, flash messages, escaping), static files and the template parts."""

from __future__ import annotations

import json
import re
import urllib.parse

import pytest
import tornado.template

from symbolon.accounts.permissions import Permission
from symbolon.web import routes
from symbolon.web.charts import bar_chart, nice_max
from symbolon.web.page import GREETED_COOKIE, TEMPLATES, PageHandler, sign_in_url
from symbolon.web.parts import Code, Column, Link, Pager, Table
from tests.accounts import Caller, make_user, token_of
from tests.conftest import served
from tests.web_pages import fetch_page, read


class SignedInPage(PageHandler):
    title = "Test page"

    async def get(self) -> None:
        principal = self.require_signin()
        self.curl("/api/stats/", "Stats:", auth=True)
        self.page("error.html", heading="Test page", message=f"Hello {principal.user.email}")

    async def post(self) -> None:
        self.require_signin()
        self.flash("Done <b>it</b>", "success")
        self.redirect("/test-web/signed-in")


class ViewAllPage(PageHandler):
    async def get(self) -> None:
        self.require(Permission.VIEW_ALL_UPLOADS)
        self.page("error.html", heading="All uploads", message="")


class SuperuserPage(PageHandler):
    async def get(self) -> None:
        self.require(superuser=True)
        self.page("error.html", heading="Superusers", message="")


TEST_ROUTES = [
    (r"/test-web/signed-in", SignedInPage),
    (r"/test-web/view-all", ViewAllPage),
    (r"/test-web/superuser", SuperuserPage),
]


def cookies_from(page, jar: dict[str, str]) -> dict[str, str]:
    """``jar`` updated with the page's Set-Cookie headers, as a browser keeps them."""
    for header in page.headers.get_list("Set-Cookie"):
        name, _, rest = header.partition("=")
        value = rest.split(";", 1)[0]
        if value in ("", '""') or "Max-Age=0" in header or "1970" in header:
            jar.pop(name, None)
        else:
            jar[name] = value
    return jar


def with_cookies(caller: Caller, jar: dict[str, str]) -> Caller:
    cookie = "; ".join(f"{k}={v}" for k, v in jar.items())
    return Caller({**caller.headers, "Cookie": cookie}, csrf=caller.csrf)


def session_jar(caller: Caller) -> dict[str, str]:
    name, _, value = caller.headers["Cookie"].partition("=")
    return {name: value}


# -- routes


def test_page_routes_shadow_neither_downloads_nor_the_json_api():
    patterns = [re.compile(route[0] + "$") for route in routes.ROUTES]
    firsts = {p.pattern.strip("^$").split("/")[1] for p in patterns} - {""}
    for first in {*firsts, "tokens", "downloads", "static", "help"}:
        for name in ("xul.sym", "delete", "extend", "missing", "file"):
            path = f"/{first}/0123456789ABCDEF/{name}"
            assert not any(p.match(path) for p in patterns), path
    api = (
        "/api/",
        "/upload/",
        "/symbolicate/",
        "/submit",
        "/__",
        "/oidc/",
        "/missingsymbols",
        "/try/",
    )
    for route in routes.ROUTES:
        assert not route[0].startswith(api), route[0]


@pytest.mark.gen_test(timeout=60)
async def test_downloads_still_answer_under_the_first_segments_of_pages(http_client, base_url):
    for first in ("static", "downloads", "tokens", "help"):
        page = await fetch_page(
            http_client, base_url, Caller.anonymous(), f"/{first}/0123456789ABCDEF0/x.sym"
        )
        assert page.status == 404 and page.body.startswith("Symbol Not Found"), first


BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


@pytest.mark.gen_test(timeout=60)
async def test_unknown_paths_under_pages_are_a_404_page_for_browsers_only(
    http_client, base_url, runtime
):
    caller = await Caller.with_session(runtime, await make_user(runtime))
    for path in (
        "/uploads/foo",
        "/uploads/files/file/x",
        "/crashes/x/y/z/w",
        "/tokens/",
        "/help/x",
    ):
        page = await fetch_page(http_client, base_url, caller, path, headers=BROWSER)
        assert page.status == 404 and page.h1() == "Not Found", path
        assert page.headers["Content-Type"].startswith("text/html")
        assert f"There is no page at {path}." in page.text
        assert page.navigation()["Home"] == "/"  # in the layout
        # Any other client gets the JSON API's 404.
        for accept in ({}, {"Accept": "application/json"}, {"Accept": "text/html;q=0, */*"}):
            other = await fetch_page(http_client, base_url, caller, path, headers=accept)
            assert other.status == 404 and json.loads(other.body) == {
                "error": "Not Found",
                "path": path,
            }, (path, accept)
    # The JSON API's paths and the downloads keep their 404s, whatever the client accepts.
    for path in ("/api/nothing/", "/upload/nothing", "/symbolicate/v9"):
        page = await fetch_page(http_client, base_url, caller, path, headers=BROWSER)
        assert page.status == 404 and json.loads(page.body)["error"] == "Not Found", path
    download = "/uploads/0123456789ABCDEF0/x.sym"
    page = await fetch_page(http_client, base_url, caller, download, headers=BROWSER)
    assert page.status == 404 and page.body.startswith("Symbol Not Found")
    # A page's path without its trailing slash still redirects to it.
    page = await fetch_page(http_client, base_url, caller, "/uploads", headers=BROWSER)
    assert page.status == 301 and page.location == "/uploads/"
    # A bad token: 403, a page for browsers and JSON for the rest, as on any path.
    bad = Caller.with_token("not-a-token")
    page = await fetch_page(http_client, base_url, bad, "/uploads/foo", headers=BROWSER)
    assert page.status == 403 and page.h1() == "Forbidden"
    page = await fetch_page(http_client, base_url, bad, "/uploads/foo")
    assert page.status == 403 and "error" in json.loads(page.body)


# -- static files


@pytest.mark.gen_test(timeout=60)
async def test_static_files_have_versioned_urls_cached_for_long(http_client, base_url):
    home = await fetch_page(http_client, base_url, Caller.anonymous(), "/")
    (href,) = re.findall(r'href="(/static/style\.css\?v=[0-9a-f]+)"', home.body)
    versioned = await fetch_page(http_client, base_url, Caller.anonymous(), href)
    assert versioned.status == 200 and "--accent" in versioned.body
    assert versioned.headers["Content-Type"] == "text/css"
    assert "max-age=315360000" in versioned.headers["Cache-Control"]
    bare = await fetch_page(http_client, base_url, Caller.anonymous(), "/static/style.css")
    assert bare.headers["Cache-Control"] == "max-age=3600"
    missing = await fetch_page(http_client, base_url, Caller.anonymous(), "/static/nope.css")
    assert missing.status == 404
    escape = await fetch_page(http_client, base_url, Caller.anonymous(), "/static/..%2fpage.py")
    assert escape.status in (403, 404)


# -- sign-in, permissions, CSRF


def test_sign_in_links_come_back_to_same_site_paths_only():
    assert sign_in_url("/tokens?state=all") == "/oidc/authenticate/?next=%2Ftokens%3Fstate%3Dall"
    assert sign_in_url("/") == "/oidc/authenticate/"
    for foreign in (
        "//evil.example/",
        "https://evil.example/",
        "/\\evil.example",
        "javascript:x",
        None,
    ):
        assert sign_in_url(foreign) == "/oidc/authenticate/", foreign


@pytest.mark.gen_test(timeout=60)
async def test_anonymous_visitors_are_sent_to_sign_in_and_back(settings):
    async with served(settings, extra_routes=TEST_ROUTES) as (client, base):
        page = await fetch_page(client, base, Caller.anonymous(), "/test-web/signed-in?x=1&y=%3C")
        assert page.status == 302
        location = urllib.parse.urlsplit(page.location)
        assert location.path == "/oidc/authenticate/"
        assert urllib.parse.parse_qs(location.query) == {"next": ["/test-web/signed-in?x=1&y=%3C"]}
        # A state-changing request is refused rather than redirected.
        posted = await fetch_page(client, base, Caller.anonymous(), "/test-web/signed-in", "POST")
        assert posted.status == 403 and "Sign in first." in posted.text


@pytest.mark.gen_test(timeout=60)
async def test_lacking_a_permission_is_a_403_page_that_says_which(settings):
    server = served(settings, extra_routes=TEST_ROUTES)
    async with server as (client, base):
        rt = server.runtime
        plain = await Caller.with_session(rt, await make_user(rt))
        auditor = await Caller.with_session(rt, await make_user(rt, groups=("Upload Auditors",)))
        boss = await Caller.with_session(rt, await make_user(rt, superuser=True))
        page = await fetch_page(client, base, plain, "/test-web/view-all")
        assert page.status == 403
        assert page.headers["Content-Type"] == "text/html; charset=UTF-8"
        assert page.title == "Forbidden · Symbolon" and page.h1() == "Forbidden"
        assert "needs the “View all uploads” permission" in page.text
        assert (await fetch_page(client, base, plain, "/test-web/superuser")).status == 403
        assert (await fetch_page(client, base, auditor, "/test-web/view-all")).status == 200
        assert (await fetch_page(client, base, auditor, "/test-web/superuser")).status == 403
        assert (await fetch_page(client, base, boss, "/test-web/view-all")).status == 200
        assert (await fetch_page(client, base, boss, "/test-web/superuser")).status == 200


@pytest.mark.gen_test(timeout=60)
async def test_a_bad_token_is_a_403_page(http_client, base_url):
    page = await fetch_page(http_client, base_url, Caller.with_token("0" * 32), "/", headers={})
    assert page.status == 403 and page.h1() == "Forbidden"
    assert "API Token not matched" in page.text


@pytest.mark.gen_test(timeout=60)
async def test_posts_without_the_csrf_token_are_refused(settings):
    server = served(settings, extra_routes=TEST_ROUTES)
    async with server as (client, base):
        caller = await Caller.with_session(server.runtime, await make_user(server.runtime))
        refused = await fetch_page(client, base, caller, "/test-web/signed-in", "POST", csrf=False)
        assert refused.status == 403
        assert "CSRF token missing or incorrect" in refused.text
        wrong = Caller(caller.headers, csrf="not-the-token")
        assert (await fetch_page(client, base, wrong, "/test-web/signed-in", "POST")).status == 403
        accepted = await fetch_page(client, base, caller, "/test-web/signed-in", "POST")
        assert accepted.status == 302


# -- flash messages, escaping, the layout


@pytest.mark.gen_test(timeout=60)
async def test_signed_in_greeting_and_flash_messages_show_once(settings):
    server = served(settings, extra_routes=TEST_ROUTES)
    async with server as (client, base):
        user = await make_user(server.runtime)
        caller = await Caller.with_session(server.runtime, user)
        jar = session_jar(caller)
        first = await fetch_page(client, base, with_cookies(caller, jar), "/test-web/signed-in")
        assert f"Signed in as {user.email}." in first.text
        assert GREETED_COOKIE in cookies_from(first, jar)
        again = await fetch_page(client, base, with_cookies(caller, jar), "/test-web/signed-in")
        assert "Signed in as " + user.email + "." not in again.text

        posted = await fetch_page(
            client, base, with_cookies(caller, jar), "/test-web/signed-in", "POST"
        )
        assert posted.status == 302
        cookies_from(posted, jar)
        shown = await fetch_page(client, base, with_cookies(caller, jar), "/test-web/signed-in")
        assert "Done &lt;b&gt;it&lt;/b&gt;" in shown.body  # escaped, like everything shown
        cookies_from(shown, jar)
        gone = await fetch_page(client, base, with_cookies(caller, jar), "/test-web/signed-in")
        assert "Done <b>it</b>" not in gone.text

        # A new session (signing in again) is greeted again.
        other = await Caller.with_session(server.runtime, user)
        jar.update(session_jar(other))
        greeted = await fetch_page(client, base, with_cookies(other, jar), "/test-web/signed-in")
        assert f"Signed in as {user.email}." in greeted.text


@pytest.mark.gen_test(timeout=60)
async def test_the_layout_escapes_the_signed_in_email_and_offers_sign_out(settings):
    server = served(settings, extra_routes=TEST_ROUTES)
    async with server as (client, base):
        user = await make_user(server.runtime, email="<script>alert(1)</script>@example.com")
        caller = await Caller.with_session(server.runtime, user)
        page = await fetch_page(client, base, caller, "/test-web/signed-in")
        assert page.status == 200
        assert "<script>alert(1)" not in page.body
        assert "&lt;script&gt;alert(1)&lt;/script&gt;@example.com" in page.body
        sign_out = page.form("/oidc/logout/")
        assert sign_out["method"] == "post"
        assert sign_out["fields"]["csrf_token"] == caller.csrf
        assert page.headers["Cache-Control"] == "no-store"
        assert "default-src 'self'" in page.headers["Content-Security-Policy"]
        assert page.title == "Test page · Symbolon"
        # The curl equivalents, with the token placeholder.
        assert "curl -H &#x27;Auth-Token: YOURTOKENHERE&#x27; http://127.0.0.1:" in page.body
        assert page.navigation()["Home"] == "/"


@pytest.mark.gen_test(timeout=120)
async def test_navigation_shows_the_pages_that_answer_the_caller(http_client, base_url, runtime):
    from symbolon.web import page as page_module

    shown = {n.path for n in page_module.NAVIGATION}
    assert {"/", "/tokens", "/help", "/downloads/missing/"} <= shown
    # Anonymous visitors: the pages that signing in alone opens.
    anonymous = (await fetch_page(http_client, base_url, Caller.anonymous(), "/")).navigation()
    assert list(anonymous) == ["Home", "Uploads", "Downloads missing", "Symbolication", "Help"]
    # Everyone else: an entry for each page that answers them, and none for one that refuses.
    boss = await make_user(runtime, superuser=True)
    uploader = await make_user(runtime, groups=("Uploaders",))
    callers = {
        "nobody": await Caller.with_session(runtime, await make_user(runtime)),
        "uploader": await Caller.with_session(runtime, uploader),
        "auditor": await Caller.with_session(
            runtime, await make_user(runtime, groups=("Upload Auditors",))
        ),
        "superuser": await Caller.with_session(runtime, boss),
        "superuser's token": Caller.with_token(
            await token_of(runtime, boss, ("upload.view_all_uploads",))
        ),
        "superuser's crash token": Caller.with_token(
            await token_of(runtime, boss, ("crashes.view_crashes",))
        ),
        "uploader's token": Caller.with_token(
            await token_of(runtime, uploader, ("upload.upload_symbols",))
        ),
    }
    for name, caller in callers.items():
        nav = (await fetch_page(http_client, base_url, caller, "/")).navigation()
        for item in page_module.NAVIGATION:
            page = await fetch_page(http_client, base_url, caller, item.path)
            assert page.status in (200, 403), (name, item.path, page.status)
            assert (item.label in nav) == (page.status == 200), (name, item.label)
    superuser_nav = (
        await fetch_page(http_client, base_url, callers["superuser"], "/")
    ).navigation()
    assert superuser_nav["Users"] == "/users/" and superuser_nav["Status"] == "/status/"
    token_nav = (
        await fetch_page(http_client, base_url, callers["superuser's token"], "/")
    ).navigation()
    assert "Users" not in token_nav and "Status" in token_nav
    # Entries whose page is not routed are left out rather than linking to a 404.
    routed = {r[0] for r in routes.ROUTES}
    for item in page_module.NAVIGATION:
        if not any(re.fullmatch(p, item.path) for p in routed):
            assert item.label not in anonymous


@pytest.mark.gen_test(timeout=60)
async def test_without_a_collector_crashes_leave_the_navigation(settings):
    server = served(settings.replace(enable_crash_collector=False))
    async with server as (client, base):
        boss = await Caller.with_session(
            server.runtime, await make_user(server.runtime, superuser=True)
        )
        assert (await fetch_page(client, base, boss, "/crashes/")).status == 404
        assert "Crashes" not in (await fetch_page(client, base, boss, "/")).navigation()


# -- template parts


def render(template: str, **values) -> str:
    return tornado.template.Loader(str(TEMPLATES)).load(template).generate(**values).decode()


def test_table_escapes_every_cell_and_links_sortable_headers():
    table = Table(
        columns=[
            Column("name", "Name"),
            Column("count", "Count", sort="count", numeric=True),
            Column("when", "When", sort="modified_at"),
        ],
        rows=[
            {"name": "<img src=x onerror=alert(1)>", "count": 3, "when": Link("<b>", "/x?a=1&b=2")},
            {"name": Code("a&b"), "count": None, "when": "today"},
        ],
        sort="count",
        reverse=True,
        sort_url=lambda sort, reverse: f"/t?sort={sort}&reverse={str(reverse).lower()}",
    )
    page = read(200, {}, render("parts/table.html", table=table))
    assert "<img" not in page.body and "&lt;img src=x onerror=alert(1)&gt;" in page.body
    assert '<a href="/x?a=1&amp;b=2">&lt;b&gt;</a>' in page.body
    assert "<code>a&amp;b</code>" in page.body
    assert 'aria-sort="descending"' in page.body
    # The current column flips; another starts descending.
    assert ("Count ▼", "/t?sort=count&reverse=false") in page.links
    assert ("When", "/t?sort=modified_at&reverse=true") in page.links
    empty = render(
        "parts/table.html", table=Table(columns=[Column("a", "A")], rows=[], empty="None <here>")
    )
    assert "None &lt;here&gt;" in empty


def test_pager_links_keep_the_filters_and_skip_far_pages():
    pager = Pager(
        page=5,
        per_page=20,
        total=400,
        path="/downloads/missing/",
        query={"symbol": "x&y", "page": "5"},
    )
    assert pager.pages == 20 and (pager.first_item, pager.last_item) == (81, 100)
    assert pager.numbers() == [1, None, 3, 4, 5, 6, 7, None, 20]
    assert pager.url(1) == "/downloads/missing/?symbol=x%26y"
    assert pager.url(6) == "/downloads/missing/?symbol=x%26y&page=6"
    page = read(200, {}, render("parts/pager.html", pager=pager))
    assert ("Next", "/downloads/missing/?symbol=x%26y&page=6") in page.links
    assert ("Previous", "/downloads/missing/?symbol=x%26y&page=4") in page.links
    assert 'aria-current="page">5<' in page.body
    assert Pager(page=1, per_page=20, total=0, path="/").pages == 1


def test_a_page_past_the_last_says_so_and_links_to_the_last():
    pager = Pager(page=7, per_page=20, total=45, path="/uploads/", query={"user": "a"})
    assert pager.beyond and pager.pages == 3
    assert pager.empty("No uploads yet.") == "No items on page 7."
    page = read(200, {}, render("parts/pager.html", pager=pager))
    assert "No items on page 7; the last page is 3." in page.text
    assert page.links == [("Last page", "/uploads/?user=a&page=3")]
    assert "\N{EN DASH}" not in page.text  # no "121 to 45 of 45"
    # The last page itself, and an empty listing, are not past the end.
    assert not Pager(page=3, per_page=20, total=45, path="/").beyond
    empty = Pager(page=7, per_page=20, total=0, path="/")
    assert not empty.beyond and empty.empty("Nothing yet.") == "Nothing yet."


def test_bar_chart_scales_to_a_round_top_and_escapes_labels():
    assert [nice_max(v) for v in (0, 1, 3, 7, 12, 180, 2400)] == [1, 1, 5, 10, 20, 200, 2500]
    chart = bar_chart([("<a>", 0), ("b", 5), ("c", 10)], title="T <x>", value_label="N")
    heights = [bar.height for bar in chart.bars]
    assert heights[0] == 0 and heights[2] == 2 * heights[1] and chart.ticks[-1].text == "10"
    assert all(bar.y + bar.height == chart.baseline for bar in chart.bars)
    svg = render("parts/bar_chart.html", chart=chart, chart_id="c1")
    assert "<a>" not in svg and "&lt;a&gt;: 0" in svg and "T &lt;x&gt;" in svg
    assert 'role="img"' in svg and 'aria-labelledby="c1-title c1-desc"' in svg
    # The first and last labels stay inside; narrow screens keep the first, middle and last.
    month = bar_chart([(f"d{i}", i) for i in range(30)], title="T")
    assert [(x.text, x.anchor) for x in month.labels if x.major] == [
        ("d0", "start"),
        ("d14", "middle"),
        ("d29", "end"),
    ]
    assert len(month.labels) == 7
    tiny = bar_chart([("a", 0.001), ("b", 1000)], title="T", whole=False)
    assert tiny.bars[0].height >= 1  # a small value stays visible
    # Counts get whole-number marks, however few.
    assert [t.text for t in bar_chart([("a", 0)], title="T").ticks] == ["0", "1", "2", "3", "4"]
    assert [t.text for t in bar_chart([("a", 9)], title="T").ticks] == [
        "0",
        "2",
        "4",
        "6",
        "8",
        "10",
    ]
    assert [t.text for t in bar_chart([("a", 21)], title="T").ticks] == [
        "0",
        "5",
        "10",
        "15",
        "20",
        "25",
    ]


def test_every_template_and_static_file_is_package_data():
    """A non-editable install carries what the pages render and serve (pyproject.toml)."""
    import tomllib
    from pathlib import PurePosixPath

    from tests.conftest import repo_root

    root = repo_root()
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["symbolon"]
    web = root / "symbolon" / "web"
    files = [
        p.relative_to(root / "symbolon").as_posix()
        for folder in ("templates", "static")
        for p in (web / folder).rglob("*")
        if p.is_file()
    ]
    assert files

    def packaged(name: str) -> bool:
        # As setuptools globs: a * stays within one directory.
        path = PurePosixPath(name)
        return any(len(path.parts) == len(PurePosixPath(g).parts) and path.match(g) for g in globs)

    assert [f for f in files if not packaged(f)] == []
