"""The "Downloads missing" page (docs/web.md): public like /api/downloads/missing/, with its
filters, sorting, pages of 20 and totals."""

from __future__ import annotations

import urllib.parse
import uuid

import pytest

from symbolon.symbols import missing
from tests.accounts import Caller
from tests.web_pages import fetch_page


async def add_missing(runtime, prefix: str, n: int, count: int = 1) -> None:
    for i in range(n):
        await runtime.db.execute(
            """INSERT INTO missing_symbols (hash, symbol, debugid, filename, code_file, count,
                                            modified_at)
               VALUES ($1, $2, $3, $4, $5, $6, now() - make_interval(mins => $7))""",
            uuid.uuid4().hex,
            f"{prefix}{i:02d}.pdb",
            f"ABC{i:02d}",
            f"{prefix}{i:02d}.sym",
            f"{prefix}{i:02d}.dll",
            count + i,
            i,
        )


def path(**query: str) -> str:
    return "/downloads/missing/?" + urllib.parse.urlencode(query)


@pytest.mark.gen_test(timeout=60)
async def test_lists_filters_sorts_and_pages(http_client, base_url, runtime):
    prefix = f"m{uuid.uuid4().hex[:8]}_"
    await add_missing(runtime, prefix, 25)
    anonymous = Caller.anonymous()
    page = await fetch_page(http_client, base_url, anonymous, path(symbol=prefix))
    assert page.status == 200
    assert page.title == "Downloads missing · Symbolon" and page.h1() == "Downloads missing"
    body = await missing.api_listing(runtime.db, {"symbol": prefix})
    assert body["total"] == 25
    # Totals of what matches, then the newest first: 00 (0 minutes ago) .. 19.
    assert "Missing files (filtered) 25" in page.text
    assert "Asked for in the last day (filtered) 25" in page.text
    assert f"{prefix}00.pdb" in page.text and f"{prefix}19.pdb" in page.text
    assert f"{prefix}20.pdb" not in page.text
    assert "1\u201320 of 25" in page.text
    next_page = dict(page.links)["Next"]
    assert urllib.parse.parse_qs(urllib.parse.urlsplit(next_page).query) == {
        "symbol": [prefix],
        "page": ["2"],
    }
    second = await fetch_page(http_client, base_url, anonymous, next_page)
    assert f"{prefix}24.pdb" in second.text and f"{prefix}19.pdb" not in second.text
    assert "21\u201325 of 25" in second.text

    # Sorted by count, fewest first: a header link, keeping the filter.
    by_count = await fetch_page(
        http_client, base_url, anonymous, path(symbol=prefix, sort="count", reverse="false")
    )
    rows = [t for t in by_count.text.split() if t.startswith(prefix) and t.endswith(".pdb")]
    assert rows[:3] == [f"{prefix}00.pdb", f"{prefix}01.pdb", f"{prefix}02.pdb"]
    assert 'aria-sort="ascending"' in by_count.body
    links = dict(by_count.links)
    assert urllib.parse.parse_qs(urllib.parse.urlsplit(links["Times asked ▲"]).query) == {
        "symbol": [prefix],
        "sort": ["count"],
        "reverse": ["true"],
    }
    # The form's empty fields are no filter; a count filter narrows.
    narrowed = await fetch_page(
        http_client,
        base_url,
        anonymous,
        path(symbol=prefix, debugid="", filename="", count=">=24", sort="", reverse=""),
    )
    assert narrowed.status == 200 and "1\u20132 of 2" in narrowed.text
    # The API calls behind the page, anonymous like the page.
    assert f"{base_url}/api/downloads/missing/?symbol={prefix}" in narrowed.body
    assert "YOURTOKENHERE" not in narrowed.body
    assert ("last 24 hours", "/missingsymbols.csv") in narrowed.links


@pytest.mark.gen_test(timeout=60)
async def test_a_bad_filter_says_why(http_client, base_url):
    page = await fetch_page(http_client, base_url, Caller.anonymous(), path(count="lots"))
    assert page.status == 400
    assert "Times asked:" in page.text
    page = await fetch_page(http_client, base_url, Caller.anonymous(), path(sort="<b>"))
    assert page.status == 400 and "Invalid sort &#x27;&lt;b&gt;&#x27;" in page.body


@pytest.mark.gen_test(timeout=60)
async def test_names_are_shown_escaped(http_client, base_url, runtime):
    name = f"<script>alert('{uuid.uuid4().hex[:6]}')</script>.pdb"
    await runtime.db.execute(
        """INSERT INTO missing_symbols (hash, symbol, debugid, filename)
           VALUES ($1, $2, 'ID', 'x.sym')""",
        uuid.uuid4().hex,
        name,
    )
    page = await fetch_page(http_client, base_url, Caller.anonymous(), path(symbol=name))
    assert page.status == 200 and name in page.text
    assert "<script>alert" not in page.body
    assert 'value="&lt;script&gt;alert(' in page.body  # the filter field too


@pytest.mark.gen_test(timeout=60)
async def test_the_page_without_its_trailing_slash_redirects(http_client, base_url):
    page = await fetch_page(http_client, base_url, Caller.anonymous(), "/downloads/missing")
    assert page.status == 301 and page.location == "/downloads/missing/"
