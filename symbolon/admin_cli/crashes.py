"""``symbolon crashes``: look at what the collector stored, publish what it could not, and queue
crashes for processing again."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import click

from symbolon.conf import Settings, SettingsError
from symbolon.crashes.collector import Collector
from symbolon.crashes.crashid import is_valid_crash_id
from symbolon.crashes.publish import Publisher
from symbolon.crashes.store import CrashStorage, StorageError
from symbolon.crashes.stores import make_crash_storage
from symbolon.runtime import load_checked_settings
from symbolon.server import lifecycle
from symbolon.storage.s3 import S3Clients

T = TypeVar("T")


def _run(fn: Callable[[Settings, CrashStorage], Awaitable[T]]) -> T:
    try:
        settings = load_checked_settings()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from exc
    lifecycle.configure_process(settings.replace(log_format="text", logging_level="WARNING"))
    with lifecycle.services(settings) as live:

        async def main() -> T:
            s3 = S3Clients(live)
            storage = make_crash_storage(live, s3)
            try:
                return await fn(live, storage)
            except StorageError as exc:
                raise click.ClickException(str(exc)) from exc
            finally:
                await storage.close()
                await s3.close()

        return asyncio.run(main())


def _date(value: str | None) -> str:
    if value is None:
        return datetime.now(UTC).strftime("%Y%m%d")
    try:
        return datetime.strptime(value.replace("-", ""), "%Y%m%d").strftime("%Y%m%d")
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date like 2026-11-22") from None


@click.group()
def crashes() -> None:
    """Crash reports the collector stored."""


@crashes.command("show")
@click.argument("crash_id")
def show(crash_id: str) -> None:
    """Print the stored raw crash of CRASH_ID (a bp- prefix is allowed)."""
    crash_id = crash_id.removeprefix("bp-")
    if not is_valid_crash_id(crash_id, strict=False):
        raise click.BadParameter(f"{crash_id!r} is not a crash id")

    async def run(settings: Settings, storage: CrashStorage) -> bytes | None:
        return await storage.load_raw_crash(crash_id)

    raw = _run(run)
    if raw is None:
        raise click.ClickException(f"no crash {crash_id} is stored")
    click.echo(json.dumps(json.loads(raw), indent=2, sort_keys=True))


@crashes.command("list")
@click.option("--date", "day", help="UTC day of receipt, e.g. 2026-11-22 (default: today).")
def list_crashes(day: str | None) -> None:
    """List the ids of the crashes stored for a day."""
    date = _date(day)

    async def run(settings: Settings, storage: CrashStorage) -> list[str]:
        return await storage.list_crash_ids(date)

    for crash_id in _run(run):
        click.echo(crash_id)


@crashes.command("republish")
@click.option(
    "--date",
    "day",
    help="Also publish every crash stored that day again (consumers must accept duplicates).",
)
def republish(day: str | None) -> None:
    """Publish the crash ids a broker outage or a stopped process left unpublished (serve does it
    every so often)."""
    date = _date(day) if day else None

    async def run(settings: Settings, storage: CrashStorage) -> tuple[int, int]:
        collector = Collector(settings, storage, Publisher(settings))
        try:
            pending = 0
            while published := await collector.republish_pending():
                pending += published
            if await storage.unpublished(limit=1):
                raise click.ClickException(
                    "the broker (REDIS_URL) did not take the marked crash ids; see the log"
                )
            of_day = await storage.list_crash_ids(date) if date else []
            for crash_id in of_day:
                try:
                    await collector.publisher.publish(crash_id)
                except Exception as exc:
                    raise click.ClickException(
                        f"the broker (REDIS_URL) did not take {crash_id}: {exc}"
                    ) from exc
            return pending, pending + len(of_day)
        finally:
            await collector.publisher.close()

    pending, total = _run(run)
    click.echo(f"published {total} crash id(s), {pending} of them marked unpublished")


# Days of crashes --since reaches back at most: a typo of a year is not a million crashes.
MAX_REPROCESS_DAYS = 366


def _days_since(value: str) -> list[str]:
    """``YYYYMMDD`` from ``value`` through today (UTC)."""
    first = datetime.strptime(_date(value), "%Y%m%d").date()
    today = datetime.now(UTC).date()
    if first > today:
        raise click.BadParameter(f"{value} is in the future", param_hint="--since")
    if (today - first).days >= MAX_REPROCESS_DAYS:
        raise click.BadParameter(
            f"{value} is more than {MAX_REPROCESS_DAYS} days ago", param_hint="--since"
        )
    return [(first + timedelta(days=n)).strftime("%Y%m%d") for n in range((today - first).days + 1)]


@crashes.command("reprocess")
@click.argument("crash_ids", nargs=-1)
@click.option("--since", help="Every crash stored from this UTC day (e.g. 2026-11-22) to today.")
def reprocess(crash_ids: tuple[str, ...], since: str | None) -> None:
    """Queue crashes for processing again (docs/processing.md): CRASH_ID... (a bp- prefix is
    allowed), or every crash stored --since a day. The processor (serve's worker, or worker)
    takes them from the processing queue."""
    if bool(crash_ids) == bool(since):
        raise click.UsageError("give crash ids or --since DATE (one of them)")
    ids = [crash_id.removeprefix("bp-") for crash_id in crash_ids]
    for crash_id in ids:
        if not is_valid_crash_id(crash_id, strict=False):
            raise click.BadParameter(f"{crash_id!r} is not a crash id")
    days = _days_since(since) if since else []

    async def run(settings: Settings, storage: CrashStorage) -> int:
        wanted = list(ids)
        for crash_id in wanted:
            if await storage.load_raw_crash(crash_id) is None:
                raise click.ClickException(f"no crash {crash_id} is stored")
        for day in days:
            wanted += await storage.list_crash_ids(day)
        publisher = Publisher(settings)
        try:
            for crash_id in wanted:
                try:
                    await publisher.publish(crash_id)
                except Exception as exc:
                    raise click.ClickException(
                        f"the broker (REDIS_URL) did not take {crash_id}: {exc}"
                    ) from exc
        finally:
            await publisher.close()
        return len(wanted)

    queued = _run(run)
    click.echo(f"queued {queued} crash(es) for processing")
