"""User administration for superusers (docs/accounts.md, "User management").

``GET /api/_users/`` lists users and groups; ``GET /api/_users/user/<id>`` shows one user with
its audit trail; ``POST /api/_users/user/<id>`` changes ``is_active``, ``is_superuser`` and
``groups`` (comma-separated group ids; empty for none), each only when given. It takes a signed-in
superuser: tokens carry only the four token permissions, and user administration is none of them.
"""

from __future__ import annotations

from typing import Any

from symbolon.accounts import admin, audit
from symbolon.accounts.auth import Principal
from symbolon.accounts.users import AccountError, find_user_by_id
from symbolon.conf.parsers import FALSE_WORDS, TRUE_WORDS
from symbolon.handlers.base import ApiError, BaseHandler, ReadHandler, object_id


class _UsersHandler(BaseHandler):
    def superuser(self) -> Principal:
        principal = self.authorize()
        if principal.session is None:
            raise ApiError(403, "User administration needs a signed-in superuser, not a token")
        if not principal.user.is_superuser:
            raise ApiError(403, "Forbidden")
        return principal


class UsersHandler(_UsersHandler, ReadHandler):
    async def get(self) -> None:
        self.superuser()
        async with self.runtime.db.acquire() as conn:
            users = await admin.list_users(conn)
            groups = await admin.all_groups(conn)
        self.write_json({"users": users, "groups": groups})


class UserHandler(_UsersHandler):
    SUPPORTED_METHODS = ("GET", "POST")

    async def get(self, user_id: str) -> None:
        self.superuser()
        await self.respond(object_id(user_id, "User"))

    async def post(self, user_id: str) -> None:
        principal = self.superuser()
        ident = object_id(user_id, "User")
        actor = audit.Actor(principal.user.id, principal.user.email)
        try:
            changes = self.parse_form()
        except FormError as exc:
            return self.write_json({"errors": exc.errors}, status=400)
        async with self.runtime.db.acquire() as conn:
            user = await find_user_by_id(conn, ident)
            if user is None:
                raise ApiError(404, "No User matches the given query.")
            field = ""
            try:
                async with conn.transaction():  # all the changes or none
                    for field, change in (
                        ("is_active", admin.set_active),
                        ("is_superuser", admin.set_superuser),
                        ("groups", admin.set_groups),
                    ):
                        if field in changes:
                            await change(conn, actor, user, changes[field])
            except AccountError as exc:
                return self.write_json({"errors": {field: [str(exc)]}}, status=400)
        await self.respond(ident, ok=True)

    def parse_form(self) -> dict[str, Any]:
        changes: dict[str, Any] = {}
        errors: dict[str, list[str]] = {}
        for name in ("is_active", "is_superuser"):
            value = self.get_body_argument(name, None)
            if value is None:
                continue
            if value.strip().lower() in TRUE_WORDS:
                changes[name] = True
            elif value.strip().lower() in FALSE_WORDS:
                changes[name] = False
            else:
                errors[name] = [f"'{value}' is not true or false"]
        groups = self.get_body_argument("groups", None)
        if groups is not None:
            ids = [g.strip() for g in groups.split(",") if g.strip()]
            # ASCII only: str.isdigit also accepts digits int() refuses, such as '²'.
            bad = [g for g in ids if not (g.isascii() and g.isdigit()) or len(g) > 9]
            if bad:
                errors["groups"] = [f"Unrecognized group id '{bad[0]}'"]
            else:
                changes["groups"] = [int(g) for g in ids]
        if errors:
            raise FormError(errors)
        if not changes:
            raise FormError(
                {"__all__": ["Nothing to change: give is_active, is_superuser or groups"]}
            )
        return changes

    async def respond(self, user_id: int, ok: bool = False) -> None:
        async with self.runtime.db.acquire() as conn:
            found = await admin.list_users(conn, user_id)
            if not found:
                raise ApiError(404, "No User matches the given query.")
            body: dict[str, Any] = {
                "user": found[0],
                "groups": await admin.all_groups(conn),
                "audit": await audit.entries(conn, user_id),
            }
        if ok:
            body = {"ok": True, **body}
        self.write_json(body)


class FormError(Exception):
    def __init__(self, errors: dict[str, list[str]]):
        super().__init__(errors)
        self.errors = errors


ROUTES = [
    (r"/api/_users/", UsersHandler),
    (r"/api/_users/user/(\d+)", UserHandler),
]
