"""``/crashes/``: the crash index as ``GET /api/crashes/`` lists it (handlers/api_crashes.py),
newest first, filtered, with the top signatures of ``GET /api/crashes/signatures/``, and the
crashes stored that processing has not reached; ``/crashes/<id>``: a crash's state, and for
``crashes.view_crashes`` what processing found, its annotations and dumps
(docs/web.md, "Crashes"; docs/processing.md, "The JSON API").

Annotations, dumps and the processed crash can hold personal data: as in the API, they are
shown only with ``crashes.view_crashes``; the lists, signatures and a crash's state need only
signing in.
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from symbolon.accounts.auth import Principal
from symbolon.accounts.permissions import Permission
from symbolon.crashes.crashid import is_valid_crash_id
from symbolon.crashes.payload import MAIN_DUMP_ALIASES
from symbolon.crashes.store import CrashStorage, StorageError
from symbolon.filters import FilterError, page_number
from symbolon.jsonutil import timestamp
from symbolon.processing.pipeline import records
from symbolon.runtime import Runtime
from symbolon.web.page import PageError, PageHandler
from symbolon.web.pages.crash_view import view_of
from symbolon.web.pages.shown import query_of, shown_time
from symbolon.web.parts import Code, Column, Link, Pager, Table, with_query

PATH = "/crashes/"
API = "/api/crashes/"
# The window of the top signatures when no date filter is given, and how many are shown.
TOP_DAYS = 7
TOP_SHOWN = 10
# Days of the crash store searched for crashes without an index row, and how many are shown.
RECENT_DAYS = 7
WAITING_SHOWN = 20
STATES = (("", "Any"), ("pending", "Pending"), ("processed", "Processed"), ("failed", "Failed"))
# (name, label, example or choices): the API's filters, as the filter form offers them.
FILTERS: tuple[tuple[str, str, Any], ...] = (
    ("product", "Product", "Firefox"),
    ("version", "Version", "120.0"),
    ("release_channel", "Channel", "beta"),
    ("signature", "Signature", "abort | Parser::check"),
    ("date", "Received", ">=2026-11-01, <2026-11-22"),
    ("state", "State", STATES),
)
PARAMS = (*(name for name, _, _ in FILTERS), "page")
# The filters the top signatures take: all but the signature and state themselves.
TOP_FILTERS = ("product", "version", "release_channel", "date")
COLUMNS = (
    Column("id", "Crash id", wrap=True),
    Column("date", "Received (UTC)", time=True),
    Column("product", "Product"),
    Column("version", "Version"),
    Column("channel", "Channel"),
    Column("state", "State"),
    Column("signature", "Signature", wrap=True),
)


def shown_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, indent=1, sort_keys=True)


def api_path(path: str, params: Mapping[str, str]) -> str:
    query = urllib.parse.urlencode(params)
    return f"{path}?{query}" if query else path


def filter_error(exc: FilterError) -> str:
    labels = {name: label for name, label, _ in FILTERS}
    return f"{labels.get(exc.field, exc.field.capitalize())}: {exc.message}"


def signature_link(signature: str, kept: Mapping[str, str]) -> Link:
    """The list filtered by ``signature``, keeping the filters in ``kept``."""
    return Link(signature, with_query(PATH, kept, signature=signature, page=None))


class CrashesPage(PageHandler):
    """``GET /crashes/``: the crash index, newest first, ``GET /api/crashes/``'s filters."""

    title = "Crash reports"
    nav = PATH

    @classmethod
    def admits(cls, principal: Principal | None, runtime: Runtime) -> bool:
        return runtime.collector is not None and principal is not None

    def store(self) -> CrashStorage:
        collector = self.runtime.collector
        if collector is None:
            raise PageError(
                404, "This server collects no crash reports (ENABLE_CRASH_COLLECTOR is off)."
            )
        return collector.storage

    async def get(self) -> None:
        self.require_signin()
        store = self.store()
        db = self.runtime.db
        error = None
        try:
            params = query_of(self.request.query_arguments, PARAMS)
            body = await records.list_crashes(db, params)
        except FilterError as exc:
            error = filter_error(exc)
            params = {}
            body = await records.list_crashes(db, params)
        filters = {k: v for k, v in params.items() if k != "page"}
        page = page_number(params.get("page"))
        kept = {k: v for k, v in filters.items() if k in TOP_FILTERS}
        rows = [
            {
                "id": Link(c["crash_id"], f"{PATH}{c['crash_id']}"),
                "date": shown_time(c["date"]),
                "product": c["product"] or None,
                "version": c["version"] or None,
                "channel": c["release_channel"] or None,
                "state": c["state"],
                "signature": signature_link(c["signature"], kept) if c["signature"] else None,
            }
            for c in body["crashes"]
        ]
        pager = Pager(page, body["batch_size"], body["total"], PATH, filters)
        table = Table(
            columns=COLUMNS,
            rows=rows,
            caption="Crashes, newest first",
            empty=pager.empty("No crashes match." if filters else "No crashes processed yet."),
        )
        top_params = kept if "date" in kept else {**kept, "days": str(TOP_DAYS)}
        top = await records.top_signatures(db, top_params)
        top_rows = [
            {
                "signature": signature_link(s["signature"], kept),
                "count": f"{s['count']:,}",
                "last": shown_time(s["last_date"]),
            }
            for s in top["signatures"][:TOP_SHOWN]
        ]
        waiting, waiting_error = await self.waiting(store, filters, page)
        self.curl(api_path(API, params), "This list, 100 a page:", auth=True)
        self.curl(api_path(f"{API}signatures/", top_params), "The top signatures:", auth=True)
        self.page(
            "crashes.html",
            status=400 if error else 200,
            error=error,
            filters=FILTERS,
            values=filters,
            table=table,
            pager=pager,
            top=Table(
                columns=(
                    Column("signature", "Signature", wrap=True),
                    Column("count", "Crashes", numeric=True),
                    Column("last", "Last received (UTC)", time=True),
                ),
                rows=top_rows,
                caption="",
                empty="No processed crashes in this window.",
            ),
            top_total=top["total"],
            top_more=max(0, len(top["signatures"]) - TOP_SHOWN),
            top_window=(
                f"received {filters['date']}" if "date" in kept else f"the last {TOP_DAYS} days"
            ),
            waiting=waiting,
            waiting_error=waiting_error,
            waiting_shown=WAITING_SHOWN,
            recent_days=RECENT_DAYS,
        )

    async def waiting(
        self, store: CrashStorage, filters: Mapping[str, str], page: int
    ) -> tuple[list[str] | None, str | None]:
        """Crashes of the last days stored without an index row: processing has not reached
        them (or is switched off). Only on the unfiltered first page, or filtered by
        ``state=pending``: the index knows nothing else of them."""
        if (
            page != 1
            or any(k != "state" for k in filters)
            or filters.get("state", "pending") != "pending"
        ):
            return None, None
        today = datetime.now(UTC).date()
        days = [(today - timedelta(days=n)).strftime("%Y%m%d") for n in range(RECENT_DAYS)]
        try:
            listed = await asyncio.gather(*(store.list_crash_ids(day) for day in days))
        except StorageError as exc:
            return None, f"The crash store did not answer: {exc}"
        # Newest day first, as the store lists each day.
        return await records.unindexed(self.runtime.db, [c for day in listed for c in day]), None


class CrashPage(CrashesPage):
    """``GET /crashes/<crash id>``: a crash's state; with ``crashes.view_crashes``, what
    processing found, its annotations and dumps."""

    title = "Crash report"

    async def get(self, crash_id: str) -> None:  # type: ignore[override]
        principal = self.require_signin()
        store = self.store()
        crash_id = crash_id.removeprefix("bp-").lower()
        if not is_valid_crash_id(crash_id, strict=False):
            raise PageError(404, "That is not a crash id.")
        may_view = principal.has(Permission.VIEW_CRASHES)
        row = await records.find(self.runtime.db, crash_id)
        raw = processed = None
        names: list[str] = []
        try:
            if may_view:
                raw, processed = await self.runtime.processor.load(crash_id)
                stored = raw is not None
                # Names only: the store tells a dump's size by reading all of it.
                names = await store.load_dump_names(crash_id) if stored else []
            else:
                stored = row is not None or await store.load_raw_crash(crash_id) is not None
        except StorageError as exc:
            raise PageError(503, f"The crash store did not answer: {exc}") from None
        if row is None and not stored:
            raise PageError(404, f"No crash report {crash_id} is stored.")
        if row is not None:
            product, version = row["product"], row["version"]
            channel, received = row["release_channel"], shown_time(timestamp(row["date"]))
        elif raw is not None:
            meta = records.meta_of(raw, crash_id)
            product, version, channel = meta.product, meta.version, meta.release_channel
            received = shown_time(timestamp(meta.date))
        else:
            product = version = channel = ""
            received = None
        found = raw or {}
        annotations = [
            {"name": Code(name), "value": shown_value(found[name])}
            for name in sorted(k for k in found if k != "metadata")
        ]
        metadata = found.get("metadata")
        self.title = f"Crash {crash_id}"
        self.curl(f"{API}{crash_id}", "This crash, with its raw and processed crash:", auth=True)
        self.page(
            "crash.html",
            crash_id=crash_id,
            # Stored and not in the index: the processor has not reached it, as the API says.
            state=row["state"] if row is not None else "pending",
            reason=row["reason"] if row is not None else None,
            signature=row["signature"] if row is not None else None,
            processed_at=shown_time(timestamp(row["processed_at"])) if row is not None else None,
            product=product,
            version=version,
            channel=channel,
            received=received,
            may_view=may_view,
            stored=stored,
            view=view_of(processed) if processed is not None else None,
            annotations=Table(
                columns=(Column("name", "Annotation"), Column("value", "Value")),
                rows=annotations,
                empty="No annotations.",
            ),
            metadata=json.dumps(metadata, indent=2, sort_keys=True) if metadata else None,
            dumps=[name or "dump" for name in names],
            api_url=f"{API}{crash_id}",
            signature_url=lambda s: with_query(PATH, {"signature": s}),
        )


class DumpPage(CrashesPage):
    """``GET /crashes/<crash id>/dumps/<name>``: a dump's bytes, as an attachment."""

    async def get(self, crash_id: str, name: str) -> None:  # type: ignore[override]
        self.require(Permission.VIEW_CRASHES)
        store = self.store()
        crash_id = crash_id.lower()
        if not is_valid_crash_id(crash_id, strict=False):
            raise PageError(404, "That is not a crash id.")
        try:
            names = await store.load_dump_names(crash_id)
            known = name in names or (name == "dump" and bool(MAIN_DUMP_ALIASES & set(names)))
            data = await store.load_dump(crash_id, name) if known else None
        except StorageError as exc:
            raise PageError(503, f"The crash store did not answer: {exc}") from None
        if data is None:
            raise PageError(404, f"Crash {crash_id} has no dump named {name!r}.")
        self.set_header("Content-Type", "application/octet-stream")
        self.set_header("Content-Disposition", f'attachment; filename="{crash_id}.{name}.dmp"')
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.finish(data)


CRASH_ID = r"((?:bp-)?[0-9a-fA-F-]{36})"
ROUTES = [
    (PATH, CrashesPage),
    (PATH + CRASH_ID, CrashPage),
    (PATH + r"([0-9a-fA-F-]{36})/dumps/([A-Za-z0-9_.-]{1,100})", DumpPage),
]
