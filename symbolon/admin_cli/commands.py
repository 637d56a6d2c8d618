"""The ``symbolon`` command line: serve, worker, migrate, superuser, user, token, is-blocked."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
import click

from symbolon.accounts import admin, audit
from symbolon.accounts import tokens as token_store
from symbolon.accounts.users import (
    AccountError,
    User,
    find_user,
    get_or_create_user,
    make_superuser,
    permission_codename,
)
from symbolon.admin_cli.crashes import crashes
from symbolon.admin_cli.storage import storage
from symbolon.admin_cli.upload import upload_command
from symbolon.conf import Settings, SettingsError
from symbolon.db import migrate as migrations
from symbolon.runtime import load_checked_settings
from symbolon.server import lifecycle

T = TypeVar("T")


def _settings(**overrides: Any) -> Settings:
    try:
        settings = load_checked_settings()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from exc
    return settings.replace(**{k: v for k, v in overrides.items() if v is not None})


def _with_database(fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    """Run ``fn`` on a migrated database: the configured one, or the embedded one."""
    settings = _settings()
    lifecycle.configure_process(settings.replace(log_format="text"))
    with lifecycle.services(settings) as live:

        async def main() -> T:
            conn = await asyncpg.connect(live.database_url)
            try:
                await migrations.migrate(conn)
                return await fn(conn)
            finally:
                await conn.close()

        try:
            return asyncio.run(main())
        except AccountError as exc:
            raise click.ClickException(str(exc)) from exc


@click.group()
def cli() -> None:
    """Symbolon: symbols, symbolication and crash collection in one server."""


cli.add_command(upload_command)
cli.add_command(crashes)
cli.add_command(storage)


@cli.command()
@click.option("--host", help="Address to listen on (default: HOST or 127.0.0.1).")
@click.option("--port", type=int, help="Port to listen on (default: PORT or 8000).")
@click.option("--worker-threads", type=int, help="Embedded task-worker threads; 0 disables.")
@click.option(
    "--processes", type=click.IntRange(min=1), help="Web processes (default: WEB_PROCESSES or 1)."
)
def serve(
    host: str | None, port: int | None, worker_threads: int | None, processes: int | None
) -> None:
    """Serve the web app, with an embedded task worker, until Ctrl-C."""
    settings = _settings(
        host=host, port=port, worker_threads=worker_threads, web_processes=processes
    )
    lifecycle.configure_process(settings)
    try:
        with lifecycle.services(settings) as live:
            if live.web_processes > 1:
                lifecycle.serve_processes(live)
            else:
                lifecycle.run_loop(live, lifecycle.serve_forever(live))
    except lifecycle.StartupError as exc:
        raise click.ClickException(f"refusing to start: {exc}") from exc


@cli.command()
@click.option("--threads", type=int, default=None, help="Worker threads (default WORKER_THREADS).")
def worker(threads: int | None) -> None:
    """Run task workers only (no web server), until Ctrl-C."""
    from symbolon.tasks.broker import Scheduler, setup_broker, start_worker

    settings = _settings()
    lifecycle.configure_process(settings)
    with lifecycle.services(settings) as live:
        broker = setup_broker(live)
        running = start_worker(broker, max(1, threads or live.worker_threads))
        scheduler = Scheduler(broker)
        scheduler.start()
        stop = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
        stop.wait()
        scheduler.stop()
        running.stop()
        broker.close()


@cli.command()
def migrate() -> None:
    """Apply pending database migrations (start-up does this too)."""

    async def run(conn: asyncpg.Connection) -> None:
        pending = await migrations.pending(conn)
        click.echo(f"{len(pending)} migration(s) were pending; the database is up to date.")

    settings = _settings()
    lifecycle.configure_process(settings.replace(log_format="text"))
    with lifecycle.services(settings) as live:

        async def main() -> list[migrations.Migration]:
            conn = await asyncpg.connect(live.database_url)
            try:
                return await migrations.migrate(conn)
            finally:
                await conn.close()

        applied = asyncio.run(main())
    for m in applied:
        click.echo(f"applied {m.version:04d}_{m.name}")
    click.echo(f"{len(applied)} migration(s) applied; the database is up to date.")


@cli.command()
@click.option(
    "--days", type=click.IntRange(min=1), default=None, help="Default TRY_SYMBOLS_EXPIRY_DAYS."
)
def cleanup(days: int | None) -> None:
    """Delete try symbols older than the expiry now (workers also do it every hour)."""
    from symbolon.runtime import Runtime
    from symbolon.symbols.expiry import expire_try_symbols

    settings = _settings()
    lifecycle.configure_process(settings.replace(log_format="text"))
    with lifecycle.services(settings) as live:

        async def main() -> None:
            rt = await Runtime.create(live)
            try:
                done = await expire_try_symbols(rt, days or live.try_symbols_expiry_days)
            finally:
                await rt.close()
            click.echo(
                f"deleted {done.objects} try object(s), {done.uploads} upload(s), "
                f"{done.files} file row(s)"
            )

        asyncio.run(main())


@cli.command()
@click.argument("email")
def superuser(email: str) -> None:
    """Make EMAIL a superuser, creating the user if missing."""

    async def run(conn: asyncpg.Connection) -> list[str]:
        _, notes = await make_superuser(conn, email)
        return notes

    for line in _with_database(run):
        click.echo(line)


@cli.group()
def token() -> None:
    """Create, list and revoke API tokens."""


@token.command("create")
@click.argument("email")
@click.option(
    "--permission",
    "permissions",
    multiple=True,
    help="upload_symbols, upload_try_symbols, view_all_uploads, manage_tokens or view_crashes "
    "(repeatable).",
)
@click.option("--expires-days", type=click.IntRange(min=1), default=None)
@click.option("--notes", default="")
def token_create(
    email: str, permissions: tuple[str, ...], expires_days: int | None, notes: str
) -> None:
    """Create a token for EMAIL (created if missing); prints the secret last, once."""
    try:
        wanted = {permission_codename(p) for p in permissions}
    except AccountError as exc:
        raise click.ClickException(str(exc)) from exc
    days = expires_days or _settings().tokens_default_expiration_days

    async def run(conn: asyncpg.Connection) -> tuple[token_store.Token, str, bool]:
        async with conn.transaction():
            user, created = await get_or_create_user(conn, email)
            made, key = await token_store.create_token(conn, user, wanted, days, notes.strip())
        return made, key, created

    made, key, created = _with_database(run)
    if created:
        click.echo(f"created user {made.email}")
    click.echo(f"token {made.id} for {made.email}, expires {made.expires_at:%Y-%m-%d}")
    click.echo(f"permissions: {', '.join(made.permissions) or '(none)'}")
    click.echo("the key below is shown only now; it is stored hashed:")
    click.echo(key)


@token.command("list")
@click.argument("email", required=False)
def token_list(email: str | None) -> None:
    """List tokens (all, or EMAIL's): id, key prefix, owner, expiry, permissions, notes."""
    found = _with_database(lambda conn: token_store.list_tokens(conn, email))
    if not found:
        click.echo("no tokens")
    for t in found:
        state = "EXPIRED" if t.is_expired else f"expires {t.expires_at:%Y-%m-%d}"
        perms = ",".join(p.split(".", 1)[1] for p in t.permissions) or "-"
        click.echo(f"{t.id}\t{t.key_prefix}…\t{t.email}\t{state}\t{perms}\t{t.notes}")


@token.command("revoke")
@click.argument("token_or_id", required=False)
@click.option("--user", "email", help="Revoke every token of this user instead.")
def token_revoke(token_or_id: str | None, email: str | None) -> None:
    """Delete a token, named by its id or its key, or all of a user's tokens (--user)."""
    if (token_or_id is None) == (email is None):
        raise click.UsageError("give a token id or key, or --user EMAIL (not both)")
    if email is not None:
        found = _with_database(lambda conn: _revoke_all(conn, email))
        for t in found:
            click.echo(f"revoked token {t.id} ({t.key_prefix}…) of {t.email}")
        click.echo(f"{len(found)} token(s) of {email} revoked")
        return
    assert token_or_id is not None
    gone = _with_database(lambda conn: token_store.revoke_token(conn, token_or_id))
    click.echo(f"revoked token {gone.id} ({gone.key_prefix}…) of {gone.email}")


async def _revoke_all(conn: asyncpg.Connection, email: str) -> list[token_store.Token]:
    await _existing_user(conn, email)
    return await token_store.revoke_user_tokens(conn, email)


async def _existing_user(conn: asyncpg.Connection, email: str) -> User:
    found = await find_user(conn, email)
    if found is None:
        raise AccountError(f"no user {email!r}")
    return found


@cli.group()
def user() -> None:
    """List users and change what they may do (every change is audited)."""


@user.command("list")
def user_list() -> None:
    """Every user: e-mail, state, superuser, groups, tokens, uploads, last sign-in."""
    users = _with_database(admin.list_users)
    click.echo("email\tstate\tsuperuser\tgroups\ttokens\tuploads\tlast login")
    for u in users:
        state = "active" if u["is_active"] else f"INACTIVE ({u['inactive_reason'] or 'admin'})"
        groups = ",".join(g["name"] for g in u["groups"]) or "-"
        click.echo(
            f"{u['email']}\t{state}\t{'yes' if u['is_superuser'] else 'no'}\t{groups}\t"
            f"{u['no_tokens']}\t{u['no_uploads']}\t{u['last_login'] or 'never'}"
        )


def _set_active(email: str, active: bool) -> None:
    async def run(conn: asyncpg.Connection) -> bool:
        found = await _existing_user(conn, email)
        return await admin.set_active(conn, audit.COMMAND_LINE, found, active)

    changed = _with_database(run)
    state = "active" if active else "inactive (signed out everywhere; tokens refused)"
    click.echo(f"{email} {'is now' if changed else 'was already'} {state}")


@user.command("activate")
@click.argument("email")
def user_activate(email: str) -> None:
    """Let EMAIL sign in and use tokens again."""
    _set_active(email, True)


@user.command("deactivate")
@click.argument("email")
def user_deactivate(email: str) -> None:
    """Sign EMAIL out everywhere and refuse the user's tokens; signing in will not undo it."""
    _set_active(email, False)


@user.command("groups")
@click.argument("email")
@click.argument("groups", nargs=-1)
@click.option("--clear", is_flag=True, help="Remove the user from every group.")
def user_groups(email: str, groups: tuple[str, ...], clear: bool) -> None:
    """Show EMAIL's groups, or make them exactly GROUPS (e.g. Uploaders, "Upload Auditors")."""
    if groups and clear:
        raise click.UsageError("give groups or --clear, not both")

    async def run(conn: asyncpg.Connection) -> tuple[bool, list[str]]:
        found = await _existing_user(conn, email)
        changed = False
        if groups or clear:
            ids = await admin.group_ids_by_name(conn, list(groups))
            changed = await admin.set_groups(conn, audit.COMMAND_LINE, found, ids)
        (listed,) = await admin.list_users(conn, found.id)
        return changed, [g["name"] for g in listed["groups"]]

    changed, names = _with_database(run)
    prefix = "groups now" if changed else "groups"
    click.echo(f"{email} {prefix}: {', '.join(names) or '(none)'}")


@cli.command("is-blocked")
@click.argument("email")
def is_blocked(email: str) -> None:
    """Ask Auth0 whether EMAIL is blocked, as the blocked-user check does (alias:
    is-blocked-in-auth0). Needs OIDC_OP_USER_ENDPOINT, OIDC_RP_CLIENT_ID and
    OIDC_RP_CLIENT_SECRET."""
    from symbolon.accounts.blocked import Auth0Lookup, BlockedCheckError

    try:
        lookup = Auth0Lookup(_settings())
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        blocked = asyncio.run(lookup.lookup(email))
    except BlockedCheckError as exc:
        raise click.ClickException(str(exc)) from exc
    if blocked is None:
        click.echo(f"{email} could not be found in Auth0")
    else:
        click.echo("BLOCKED!" if blocked else "NOT blocked!")


cli.add_command(is_blocked, "is-blocked-in-auth0")
