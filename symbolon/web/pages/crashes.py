"""``/crashes/``: the crash reports the collector stored, read from the crash store
(crashes/store.py's ``CrashStorage``), newest day first; ``/crashes/<id>``: one report, its
annotations and dumps. Annotations and dumps can hold personal data: every crash page needs
``crashes.view_crashes`` (docs/accounts.md), which superusers hold (docs/web.md, "Crashes").
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

from symbolon.accounts.auth import Principal
from symbolon.accounts.permissions import Permission
from symbolon.crashes.crashid import crash_date, is_valid_crash_id
from symbolon.crashes.payload import MAIN_DUMP_ALIASES
from symbolon.crashes.store import CrashStorage, StorageError
from symbolon.filters import FilterError, page_number
from symbolon.runtime import Runtime
from symbolon.web.page import PageError, PageHandler
from symbolon.web.pages.shown import query_of
from symbolon.web.parts import Code, Column, Link, Pager, Table

PATH = "/crashes/"
RECENT_DAYS = 7
PER_PAGE = 20
# Raw crashes read at once for a page of the list.
READS_AT_ONCE = 8
NOT_PROCESSED = "not processed"
NO_SIGNATURE = "no signature"
COLUMNS = (
    Column("id", "Crash id"),
    Column("product", "Product"),
    Column("version", "Version"),
    Column("received", "Received", time=True),
    Column("signature", "Signature"),
)


def shown_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, indent=1, sort_keys=True)


def received(raw: dict[str, Any], crash_id: str) -> str:
    """When the collector received the report: its ``submitted_timestamp``, else the id's day."""
    stamp = raw.get("submitted_timestamp")
    if isinstance(stamp, str):
        try:
            return datetime.fromisoformat(stamp).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        except ValueError:
            pass
    day = crash_date(crash_id)
    return f"{day[:4]}-{day[4:6]}-{day[6:]}"


def parse_day(value: str) -> date:
    try:
        return datetime.strptime(value.replace("-", ""), "%Y%m%d").date()
    except ValueError:
        raise FilterError("date", f"'{value}' is not a date like 2026-11-22") from None


async def read_raw(store: CrashStorage, crash_id: str) -> dict[str, Any] | None:
    return _document(await store.load_raw_crash(crash_id))


async def signature(store: CrashStorage, crash_id: str) -> str:
    """The processed crash's signature, or what stands in for it."""
    processed = _document(await store.load_processed(crash_id))
    if processed is None:
        return NOT_PROCESSED
    found = processed.get("signature")
    return found if isinstance(found, str) and found else NO_SIGNATURE


def _document(data: bytes | None) -> dict[str, Any] | None:
    if data is None:
        return None
    try:
        found = json.loads(data)
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


class CrashesPage(PageHandler):
    """``GET /crashes/[?date=YYYY-MM-DD]``: the reports of the last days, or of one day."""

    title = "Crash reports"
    nav = PATH

    @classmethod
    def admits(cls, principal: Principal | None, runtime: Runtime) -> bool:
        collecting = runtime.collector is not None
        return collecting and principal is not None and principal.has(Permission.VIEW_CRASHES)

    def store(self) -> CrashStorage:
        collector = self.runtime.collector
        if collector is None:
            raise PageError(
                404, "This server collects no crash reports (ENABLE_CRASH_COLLECTOR is off)."
            )
        return collector.storage

    async def get(self) -> None:
        self.require(Permission.VIEW_CRASHES)
        store = self.store()
        today = datetime.now(UTC).date()
        error = None
        try:
            params = query_of(self.request.query_arguments, ("date", "page"))
            page = page_number(params.get("page"))
            day = parse_day(params["date"]) if "date" in params else None
        except FilterError as exc:
            error = f"{exc.field.capitalize()}: {exc.message}"
            page, day, params = 1, None, {}
        days = [day] if day else [today - timedelta(days=n) for n in range(RECENT_DAYS)]
        try:
            found = await asyncio.gather(
                *(store.list_crash_ids(d.strftime("%Y%m%d")) for d in days)
            )
        except StorageError as exc:
            raise PageError(503, f"The crash store did not answer: {exc}") from None
        # Newest day first; within a day, by id (the store lists no times).
        ids = [crash_id for listed in found for crash_id in listed]
        chosen = ids[(page - 1) * PER_PAGE : page * PER_PAGE]
        gate = asyncio.Semaphore(READS_AT_ONCE)

        async def read(crash_id: str) -> tuple[dict[str, Any] | None, str]:
            async with gate:
                return await read_raw(store, crash_id), await signature(store, crash_id)

        try:
            read_all = await asyncio.gather(*(read(c) for c in chosen))
        except StorageError as exc:
            raise PageError(503, f"The crash store did not answer: {exc}") from None
        rows = []
        for crash_id, (raw, signed) in zip(chosen, read_all, strict=True):
            raw = raw or {}
            rows.append(
                {
                    "id": Link(crash_id, f"{PATH}{crash_id}"),
                    "product": shown_value(raw.get("ProductName", "")) or None,
                    "version": shown_value(raw.get("Version", "")) or None,
                    "received": received(raw, crash_id),
                    "signature": signed,
                }
            )
        span = day.isoformat() if day else f"the last {RECENT_DAYS} days (UTC)"
        kept = {"date": params["date"]} if "date" in params else {}
        pager = Pager(page, PER_PAGE, len(ids), PATH, kept)
        self.page(
            "crashes.html",
            status=400 if error else 200,
            error=error,
            day=day.isoformat() if day else "",
            span=span,
            table=Table(
                columns=COLUMNS,
                rows=rows,
                caption=f"Crash reports of {span}",
                empty=pager.empty("No crash reports."),
            ),
            pager=pager,
            today=today.isoformat(),
        )


class CrashPage(CrashesPage):
    """``GET /crashes/<crash id>``: a report's annotations and dumps."""

    title = "Crash report"

    async def get(self, crash_id: str) -> None:  # type: ignore[override]
        self.require(Permission.VIEW_CRASHES)
        store = self.store()
        crash_id = crash_id.removeprefix("bp-").lower()
        if not is_valid_crash_id(crash_id, strict=False):
            raise PageError(404, "That is not a crash id.")
        try:
            raw = await read_raw(store, crash_id)
            # Names only: the store tells a dump's size by reading all of it.
            names = await store.load_dump_names(crash_id) if raw is not None else []
            signed = await signature(store, crash_id) if raw is not None else NOT_PROCESSED
        except StorageError as exc:
            raise PageError(503, f"The crash store did not answer: {exc}") from None
        if raw is None:
            raise PageError(404, f"No crash report {crash_id} is stored.")
        metadata = raw.get("metadata")
        annotations = [
            {"name": Code(name), "value": shown_value(raw[name])}
            for name in sorted(k for k in raw if k != "metadata")
        ]
        self.title = f"Crash {crash_id}"
        self.page(
            "crash.html",
            crash_id=crash_id,
            product=shown_value(raw.get("ProductName", "")),
            version=shown_value(raw.get("Version", "")),
            received=received(raw, crash_id),
            annotations=Table(
                columns=(Column("name", "Annotation"), Column("value", "Value")),
                rows=annotations,
                empty="No annotations.",
            ),
            metadata=json.dumps(metadata, indent=2, sort_keys=True) if metadata else None,
            dumps=[name or "dump" for name in names],
            signature=signed,
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
