"""``/downloads/missing/``: symbol files asked for and not found, as ``/api/downloads/missing/``
lists them (public, like the API): filters, sorting, 20 a page, totals."""

from __future__ import annotations

import urllib.parse
from datetime import datetime

from symbolon.filters import FilterError, page_number
from symbolon.symbols import missing
from symbolon.web.page import PageHandler
from symbolon.web.parts import Code, Column, Pager, Table, with_query

PATH = "/downloads/missing/"
FILTERS = (
    ("symbol", "Debug file", "xul.pdb"),
    ("debugid", "Debug id", "44E4EC8C…"),
    ("filename", "Symbol file", "xul.sym"),
    ("modified_at", "Last asked", ">=2025-01-31, today"),
    ("created_at", "First asked", "<yesterday"),
    ("count", "Times asked", ">=10"),
)
PARAMS = (*(name for name, _, _ in FILTERS), "sort", "reverse", "page")
COLUMNS = (
    Column("symbol", "Debug file"),
    Column("debugid", "Debug id", wrap=True),
    Column("filename", "Symbol file"),
    Column("code_file", "Code file"),
    Column("code_id", "Code id", wrap=True),
    Column("count", "Times asked", sort="count", numeric=True),
    Column("modified_at", "Last asked (UTC)", sort="modified_at", time=True),
    Column("created_at", "First asked (UTC)", sort="created_at", time=True),
)


def shown_time(value: str | None) -> str | None:
    """An API timestamp (``2025-01-31T10:20:30.123Z``) as the pages show times."""
    if not value:
        return None
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment.strftime("%Y-%m-%d %H:%M")


class MissingPage(PageHandler):
    title = "Downloads missing"
    nav = PATH

    async def get(self) -> None:
        # Empty fields of the filter form mean no filter.
        params = {
            name: value
            for name in PARAMS
            if (value := self.get_query_argument(name, "").strip()) != ""
        }
        error = None
        try:
            body = await missing.api_listing(self.runtime.db, params)
        except FilterError as exc:
            labels = {name: label for name, label, _ in FILTERS}
            error = f"{labels.get(exc.field, exc.field)}: {exc.message}"
            body = await missing.api_listing(self.runtime.db, {})
            params = {}
        sort, reverse = body["order_by"]["sort"], body["order_by"]["reverse"]
        rows = [
            {
                **{k: Code(r[k]) if r[k] else None for k in ("symbol", "debugid", "filename")},
                **{k: Code(r[k]) if r[k] else None for k in ("code_file", "code_id")},
                "count": f"{r['count']:,}",
                "modified_at": shown_time(r["modified_at"]),
                "created_at": shown_time(r["created_at"]),
            }
            for r in body["missing"]
        ]
        filters = {k: v for k, v in params.items() if k not in ("sort", "reverse", "page")}

        def sort_url(column: str, descending: bool) -> str:
            return with_query(PATH, filters, sort=column, reverse="true" if descending else "false")

        kept = {**filters, **{k: v for k, v in params.items() if k in ("sort", "reverse")}}
        pager = Pager(
            page=page_number(params.get("page")),
            per_page=body["batch_size"],
            total=body["total"],
            path=PATH,
            query=kept,
        )
        table = Table(
            columns=COLUMNS,
            rows=rows,
            caption="Missing symbol files",
            empty=pager.empty(
                "No missing symbol files match." if filters else "No missing symbol files."
            ),
            sort=sort,
            reverse=reverse,
            sort_url=sort_url,
        )
        query = urllib.parse.urlencode(params)
        self.curl(f"/api/downloads/missing/{'?' + query if query else ''}", "This page:")
        self.curl("/missingsymbols.csv", "Windows symbols missing in the last 24 hours, as CSV:")
        self.page(
            "missing.html",
            status=400 if error else 200,
            error=error,
            filters=FILTERS,
            sorts=[(c.sort, c.label) for c in COLUMNS if c.sort],
            values=filters,
            sort=sort,
            reverse=reverse,
            aggregates=body["aggregates"]["missing"],
            table=table,
            pager=pager,
            filtered=bool(filters),
        )


ROUTES = [(PATH, MissingPage)]
