"""``symbolon storage``: symbol stores as a whole; ``copy`` moves one to another location
(docs/operations.md, "Moving symbols to another store")."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from symbolon.conf import Settings, SettingsError
from symbolon.runtime import load_checked_settings
from symbolon.server import lifecycle
from symbolon.storage.copy import (
    CopyOptions,
    CopyRefused,
    CopyResult,
    ObjectDone,
    Outcome,
    Route,
    StorePair,
    Totals,
    copy_pairs,
    routes,
)
from symbolon.storage.s3 import S3Clients
from symbolon.storage.sources import SymbolSource
from symbolon.storage.store import StoreUnavailable
from symbolon.storage.stores import Stores

MB = 1_000_000


@click.group()
def storage() -> None:
    """Symbol stores: S3 buckets and directories named by SYMBOL_URLS-style URLs."""


def _source(settings: Settings, url: str, name: str) -> SymbolSource:
    try:
        return SymbolSource.parse(url, settings.symbol_file_prefix)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=name) from exc


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def progress_line(t: Totals) -> str:
    listed = f"{t.listed}" if t.listing_done else f"{t.listed}+"
    return (
        f"{t.done}/{listed} objects, {_size(t.bytes_moved)} in {t.seconds:.0f} s, "
        f"{t.rate / MB:.1f} MB/s ({t.copied} copied, {t.skipped} skipped, {t.failed} failed)"
    )


def summary(result: CopyResult, dry_run: bool) -> str:
    t = result.totals
    if dry_run:
        head = f"would copy {t.would_copy} object(s), {_size(t.bytes_copied)}"
    else:
        head = f"copied {t.copied} object(s), {_size(t.bytes_copied)}"
    gone = f", {t.gone} gone from the source since listed" if t.gone else ""
    return (
        f"{head}; skipped {t.skipped} already there ({_size(t.bytes_skipped)}); "
        f"failed {t.failed}{gone}; {t.seconds:.1f} s, {t.rate / MB:.1f} MB/s"
    )


@storage.command("copy")
@click.argument("src")
@click.argument("dst")
@click.option(
    "--prefix",
    default="",
    help="Only keys starting with this below the source location (e.g. v1/ or try/).",
)
@click.option(
    "--jobs",
    type=click.IntRange(1, 64),
    default=4,
    show_default=True,
    help="Objects copied at a time.",
)
@click.option("--dry-run", is_flag=True, help="List what would be copied; write nothing.")
@click.option(
    "--tmp-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where objects pass through on their way (default: the system's temporary directory).",
)
@click.option(
    "--progress-every",
    type=click.FloatRange(min=0.1),
    default=1.0,
    show_default=True,
    help="Seconds between progress lines on stderr.",
)
def copy(
    src: str,
    dst: str,
    prefix: str,
    jobs: int,
    dry_run: bool,
    tmp_dir: Path | None,
    progress_every: float,
) -> None:
    """Copy every object of the store at SRC to DST, skipping what DST already holds.

    SRC and DST are location URLs as in SYMBOL_URLS (an S3 bucket with an optional prefix, or
    file:///directory); S3 credentials are the AWS settings. Run it again after an interruption
    to go on where it stopped. The database is not touched: afterwards point SYMBOL_URLS and
    UPLOAD_DEFAULT_URL at DST and restart."""
    try:
        settings = load_checked_settings()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from exc
    source, destination = _source(settings, src, "SRC"), _source(settings, dst, "DST")
    try:
        planned = routes(source, destination, settings.symbol_file_prefix)
    except CopyRefused as exc:
        raise click.UsageError(str(exc)) from exc
    options = CopyOptions(
        prefix=prefix, jobs=jobs, dry_run=dry_run, tmp_dir=tmp_dir, progress_interval=progress_every
    )
    lifecycle.configure_process(settings.replace(log_format="text", logging_level="WARNING"))
    with lifecycle.services(settings) as live:
        result = asyncio.run(_copy(live, planned, options))
    click.echo(summary(result, dry_run))
    if result.totals.failed:
        raise click.ClickException(
            f"{result.totals.failed} object(s) were not copied (listed above); "
            "run the command again to retry them"
        )


async def _copy(settings: Settings, planned: list[Route], options: CopyOptions) -> CopyResult:
    s3 = S3Clients(settings)
    stores = Stores(settings, s3)
    try:
        pairs = [StorePair(stores.at(r.src), stores.at(r.dst), r.exclude) for r in planned]
    except ValueError as exc:
        await s3.close()
        raise click.ClickException(str(exc)) from exc
    # The first pair is SRC to DST; their try locations follow.
    main = pairs[0]

    def on_object(done: ObjectDone) -> None:
        # A key in a try directory is relative to it: named with the directory's URL. (Bucket
        # keys are whole already.)
        where = done.where
        if done.location != main.src.source.url and done.location.startswith("file:"):
            where = f"{done.location} {where}"
        if done.outcome is Outcome.WOULD_COPY:
            click.echo(f"{where}\t{done.size}")
        elif done.outcome is Outcome.FAILED:
            click.echo(f"failed: {where}: {done.message}", err=True)
        elif done.outcome is Outcome.GONE:
            click.echo(f"gone: {where}: {done.message}", err=True)

    def on_progress(totals: Totals) -> None:
        click.echo(progress_line(totals), err=True)

    try:
        problem = await main.src.problem(read_only_public=True)
        if problem:
            raise click.ClickException(f"SRC: {problem}")
        # Missing directories are made; a bucket is the operator's to create, with its region
        # and permissions.
        to_directory = main.dst.source.scheme == "file"
        if to_directory and not options.dry_run:
            for pair in pairs:
                await pair.dst.ensure()
        # A dry run to a directory not made yet finds everything to copy.
        if not (to_directory and options.dry_run):
            problem = await main.dst.problem()
            if problem:
                raise click.ClickException(f"DST: {problem}")
        return await copy_pairs(pairs, options, on_object=on_object, on_progress=on_progress)
    except StoreUnavailable as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        await stores.close()
        await s3.close()
