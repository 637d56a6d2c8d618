"""The token API of the web UI (docs/accounts.md): list, create, delete, extend.

Keys are stored hashed, so a list shows each token's prefix, and the full key is in the answer to
the POST that created it, once (docs/decisions.md).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from symbolon.accounts import tokens as token_store
from symbolon.accounts.admin import permission_rows
from symbolon.accounts.auth import Principal
from symbolon.accounts.permissions import Permission
from symbolon.accounts.users import AccountError
from symbolon.handlers.base import ApiError, BaseHandler, object_id
from symbolon.jsonutil import timestamp

MAX_DAYS = 36_500  # beyond a century, dates stop fitting the types that store them
MAX_AHEAD = timedelta(days=MAX_DAYS)
EXTEND_DEFAULT_DAYS = 365


class FormError(Exception):
    def __init__(self, errors: dict[str, list[str]]):
        super().__init__(errors)
        self.errors = errors


def token_json(
    token: token_store.Token, known: dict[str, dict[str, Any]], key: str | None = None
) -> dict[str, Any]:
    return {
        "id": token.id,
        "expires_at": timestamp(token.expires_at),
        "is_expired": token.is_expired,
        "key": key,
        "key_prefix": token.key_prefix,
        "permissions": [
            {"name": known[c]["name"], "id": known[c]["id"]} for c in token.permissions
        ],
        "notes": token.notes,
        "created_at": timestamp(token.created_at),
    }


def parse_days(field: str, value: str, default: int | None = None) -> int:
    """A whole number of days, 1 to a century; empty or 0 means ``default`` when there is one."""
    value = value.strip()
    if default is not None and value in ("", "0"):
        return default
    try:
        days = int(value)
    except ValueError:
        days = -1
    if not 1 <= days <= MAX_DAYS:
        raise FormError({field: [f"Invalid number of days ('{value}')"]})
    return days


class TokensHandler(BaseHandler):
    """``GET /api/tokens/[?state=expired|all]`` and ``POST /api/tokens/``."""

    SUPPORTED_METHODS = ("GET", "POST")

    async def get(self) -> None:
        principal = self.authorize(Permission.MANAGE_TOKENS)
        state = self.get_query_argument("state", None)
        if state is not None and state not in ("expired", "all"):
            body = {"errors": {"state": [f"Unrecognized state value '{state}'"]}}
            return self.write_json(body, status=400)
        async with self.runtime.db.acquire() as conn:
            known = await permission_rows(conn)
            found = await token_store.user_tokens(conn, principal.user.id)
        expired = [t for t in found if t.is_expired]
        active = [t for t in found if not t.is_expired]
        shown = {None: active, "expired": expired, "all": found}[state]
        self.write_json(
            {
                "tokens": [token_json(t, known) for t in shown],
                "permissions": [
                    {"name": p["name"], "id": p["id"]}
                    for c, p in known.items()
                    if c in grantable(principal)
                ],
                "totals": {"all": len(found), "active": len(active), "expired": len(expired)},
            }
        )

    async def post(self) -> None:
        principal = self.authorize(Permission.MANAGE_TOKENS)
        async with self.runtime.db.acquire() as conn:
            known = await permission_rows(conn)
            try:
                wanted, days, notes = self.parse_form(known)
            except FormError as exc:
                return self.write_json({"errors": exc.errors}, status=400)
            for codename in sorted(wanted, key=lambda c: known[c]["id"]):
                if codename not in grantable(principal):
                    raise ApiError(403, f"{known[codename]['name']} not a valid permission")
            try:
                made, key = await token_store.create_token(
                    conn, principal.user, wanted, days, notes
                )
            except AccountError as exc:
                return self.write_json({"errors": {"permissions": [str(exc)]}}, status=400)
        self.write_json({"ok": True, "token": token_json(made, known, key=key)}, status=201)

    def parse_form(self, known: dict[str, dict[str, Any]]) -> tuple[set[str], int, str]:
        raw_permissions = self.get_body_argument("permissions", "").strip()
        raw_expires = self.get_body_argument("expires", "").strip()
        ids = [p.strip() for p in raw_permissions.split(",") if p.strip()]
        missing = {
            name: ["This field is required."]
            for name, value in (("permissions", ids), ("expires", raw_expires))
            if not value
        }
        if missing:
            raise FormError(missing)
        days = parse_days("expires", raw_expires)
        by_id = {str(p["id"]): codename for codename, p in known.items()}
        unknown = [i for i in ids if i not in by_id]
        if unknown:
            raise FormError({"permissions": [f"Unrecognized permission id '{unknown[0]}'"]})
        wanted = {by_id[i] for i in ids}
        if wanted >= token_store.EXCLUSIVE:
            raise FormError({"permissions": ["Invalid combination of permissions"]})
        return wanted, days, self.get_body_argument("notes", "").strip()


def grantable(principal: Principal) -> frozenset[str]:
    """What the caller may put on a token: what the caller holds right now. For a session that
    is the account's permissions (all four for superusers); for a token, only the token's, so a
    token can never mint a stronger one (docs/decisions.md)."""
    return principal.permissions


class TokenHandler(BaseHandler):
    """``DELETE /api/tokens/token/<id>``: yours, or anyone's for superusers."""

    SUPPORTED_METHODS = ("DELETE",)

    async def delete(self, token_id: str) -> None:
        principal = self.authorize()
        async with self.runtime.db.acquire() as conn:
            token = await token_store.find_token(conn, object_id(token_id, "Token"))
            if token is None or (
                token.user_id != principal.user.id and not principal.user.is_superuser
            ):
                raise ApiError(404, "No Token matches the given query.")
            await token_store.delete_token(conn, token.id)
        self.write_json({"ok": True})


class ExtendHandler(BaseHandler):
    """``POST /api/tokens/token/<id>/extend``: own tokens only, superusers included."""

    SUPPORTED_METHODS = ("POST",)

    async def post(self, token_id: str) -> None:
        principal = self.authorize()
        try:
            days = parse_days("days", self.get_body_argument("days", ""), EXTEND_DEFAULT_DAYS)
        except FormError as exc:
            return self.write_json({"errors": exc.errors}, status=400)
        async with self.runtime.db.acquire() as conn:
            token = await token_store.find_token(conn, object_id(token_id, "Token"))
            if token is None or token.user_id != principal.user.id:
                raise ApiError(404, "No Token matches the given query.")
            if token.expires_at + timedelta(days=days) > datetime.now(UTC) + MAX_AHEAD:
                body = {"errors": {"days": [f"Invalid number of days ('{days}')"]}}
                return self.write_json(body, status=400)
            await token_store.extend_token(conn, token.id, days)
        self.write_json({"ok": True, "days": days})


ROUTES = [
    (r"/api/tokens/", TokensHandler),
    (r"/api/tokens/token/(\d+)", TokenHandler),
    (r"/api/tokens/token/(\d+)/extend", ExtendHandler),
]
