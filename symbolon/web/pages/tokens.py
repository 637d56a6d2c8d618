"""``/tokens``: your API tokens; make one (its key shown once), extend, delete. The same rules
as ``/api/tokens/`` (handlers/api_tokens.py): listing and making need ``tokens.manage_tokens``, a
token carries only permissions you hold and never both upload permissions, extending is for your
own tokens, deleting for yours (anyone's for superusers)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from symbolon.accounts import tokens as token_store
from symbolon.accounts.admin import permission_rows
from symbolon.accounts.auth import Principal
from symbolon.accounts.permissions import Permission
from symbolon.accounts.users import AccountError
from symbolon.handlers.api_tokens import MAX_AHEAD, grantable
from symbolon.runtime import Runtime
from symbolon.web.page import Flash, PageError, PageHandler, permission_label

# The choices of the forms, in days: one day to ten years.
EXPIRY_CHOICES = (
    (1, "1 day"),
    (7, "1 week"),
    (30, "30 days"),
    (90, "90 days"),
    (180, "180 days"),
    (365, "1 year"),
    (730, "2 years"),
    (1825, "5 years"),
    (3650, "10 years"),
)
DEFAULT_EXPIRY = 365
STATES = ("active", "expired", "all")
MADE = "Token made. Copy its key now: it is not shown again."
NOTES_MAX = 1000
EXCLUSIVE_WARNING = (
    "A token cannot carry both “Upload symbols” and “Upload try symbols”: make one token for "
    "each, so that a try build can never upload regular symbols."
)


def _days(value: str) -> int | None:
    try:
        days = int(value)
    except ValueError:
        return None
    return days if days in dict(EXPIRY_CHOICES) else None


def _token_id(value: str) -> int | None:
    return int(value) if value.isdigit() and len(value) <= 18 else None


class TokensPage(PageHandler):
    """``GET /tokens[?state=active|expired|all]`` and ``POST /tokens`` (make one)."""

    title = "API tokens"
    nav = "/tokens"

    @classmethod
    def admits(cls, principal: Principal | None, runtime: Runtime) -> bool:
        return principal is not None and principal.has(Permission.MANAGE_TOKENS)

    async def get(self) -> None:
        self.require(Permission.MANAGE_TOKENS)
        await self.show()

    async def post(self) -> None:
        principal = self.require(Permission.MANAGE_TOKENS)
        wanted = set(self.get_body_arguments("permissions"))
        days = _days(self.get_body_argument("expires", ""))
        notes = self.get_body_argument("notes", "").strip()
        errors: list[str] = []
        allowed = grantable(principal)
        if not wanted:
            errors.append("Choose at least one permission.")
        refused = sorted(wanted - allowed)
        if refused:
            names = ", ".join(permission_label(c) for c in refused)
            errors.append(f"You cannot give a token permissions you do not hold: {names}.")
        if wanted >= token_store.EXCLUSIVE:
            errors.append(EXCLUSIVE_WARNING)
        if days is None:
            errors.append("Choose when the token expires.")
        if len(notes) > NOTES_MAX:
            errors.append(f"Notes can be at most {NOTES_MAX} characters long.")
        form = {"permissions": wanted, "expires": days or DEFAULT_EXPIRY, "notes": notes}
        if errors or days is None:
            return await self.show(status=400, errors=errors, form=form)
        async with self.runtime.db.acquire() as conn:
            try:
                made, key = await token_store.create_token(
                    conn, principal.user, wanted, days, notes
                )
            except AccountError as exc:
                return await self.show(status=400, errors=[str(exc)], form=form)
        self.flashes.append(
            Flash("Token made. Copy its key now: it is not shown again.", "success")
        )
        await self.show(created=made, key=key, state="active")

    async def show(
        self,
        status: int = 200,
        errors: list[str] | None = None,
        form: dict[str, Any] | None = None,
        created: token_store.Token | None = None,
        key: str | None = None,
        state: str | None = None,
    ) -> None:
        principal = self.require_signin()
        state = state or self.get_query_argument("state", "active")
        if state not in STATES:
            raise PageError(
                400, f"Unrecognized state value '{state}': choose active, expired or all."
            )
        async with self.runtime.db.acquire() as conn:
            known = await permission_rows(conn)
            found = await token_store.user_tokens(conn, principal.user.id)
        expired = [t for t in found if t.is_expired]
        active = [t for t in found if not t.is_expired]
        shown = {"active": active, "expired": expired, "all": found}[state]
        allowed = grantable(principal)
        self.curl(
            "/api/tokens/" + ("" if state == "active" else f"?state={state}"),
            "Your tokens:",
            auth=True,
        )
        self.curl(
            "/api/tokens/",
            "Make a token (permission ids from the listing above; expires in days):",
            auth=True,
            method="POST",
            form={"permissions": "1,4", "expires": "365", "notes": "for CI"},
        )
        self.page(
            "tokens.html",
            status=status,
            state=state,
            tokens=shown,
            counts={"active": len(active), "expired": len(expired), "all": len(found)},
            grantable=[c for c in known if c in allowed],
            exclusive=sorted(token_store.EXCLUSIVE),
            exclusive_warning=EXCLUSIVE_WARNING,
            expiry_choices=EXPIRY_CHOICES,
            errors=errors or [],
            form=form or {"permissions": set(), "expires": DEFAULT_EXPIRY, "notes": ""},
            created=created,
            key=key,
            now=datetime.now(UTC),
        )


class ExtendTokenPage(PageHandler):
    """``POST /tokens/extend`` (``token``, ``days``): your own tokens only, as the API."""

    async def post(self) -> None:
        principal = self.require_signin()
        token_id = _token_id(self.get_body_argument("token", ""))
        days = _days(self.get_body_argument("days", ""))
        if days is None:
            raise PageError(400, "Choose how many days to extend the token by.")
        async with self.runtime.db.acquire() as conn:
            token = await token_store.find_token(conn, token_id) if token_id else None
            if token is None or token.user_id != principal.user.id:
                raise PageError(404, "No such token of yours.")
            if token.expires_at + timedelta(days=days) > datetime.now(UTC) + MAX_AHEAD:
                raise PageError(400, "That would make the token last too long.")
            await token_store.extend_token(conn, token.id, days)
        label = dict(EXPIRY_CHOICES)[days]
        self.flash(f"Token {token.key_prefix}… extended by {label}.", "success")
        self.redirect("/tokens", status=303)


class DeleteTokenPage(PageHandler):
    """``POST /tokens/delete`` (``token``): yours, or anyone's for superusers, as the API."""

    async def post(self) -> None:
        principal = self.require_signin()
        token_id = _token_id(self.get_body_argument("token", ""))
        async with self.runtime.db.acquire() as conn:
            token = await token_store.find_token(conn, token_id) if token_id else None
            if token is None or (
                token.user_id != principal.user.id and not principal.user.is_superuser
            ):
                raise PageError(404, "No such token of yours.")
            await token_store.delete_token(conn, token.id)
        self.flash(f"Token {token.key_prefix}… deleted.", "success")
        self.redirect("/tokens", status=303)


ROUTES = [
    (r"/tokens", TokensPage),
    (r"/tokens/extend", ExtendTokenPage),
    (r"/tokens/delete", DeleteTokenPage),
]
