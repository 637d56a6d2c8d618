"""``/users/``: user administration for superusers, as ``/api/_users/`` (handlers/api_users.py):
a signed-in superuser (not a token), the same listing, the same changes through the same domain
functions (accounts/admin.py), each recorded in the audit trail shown on the user's page."""

from __future__ import annotations

import shlex
from typing import Any

from symbolon.accounts import admin, audit
from symbolon.accounts.auth import Principal
from symbolon.accounts.sessions import SESSION_COOKIE
from symbolon.accounts.users import AccountError, find_user_by_id
from symbolon.filters import FilterError, page_number
from symbolon.handlers.base import object_id
from symbolon.runtime import Runtime
from symbolon.web.page import CurlCommand, PageError, PageHandler
from symbolon.web.pages.shown import shown_time
from symbolon.web.parts import Column, Link, Pager, Table

PATH = "/users/"
PER_PAGE = 50
COOKIE_PLACEHOLDER = "YOURSESSIONCOOKIE"
CSRF_PLACEHOLDER = "YOURCSRFTOKEN"
COLUMNS = (
    Column("email", "User"),
    Column("state", "Active"),
    Column("superuser", "Superuser"),
    Column("groups", "Groups"),
    Column("uploads", "Uploads", numeric=True),
    Column("tokens", "Tokens", numeric=True),
    Column("last_login", "Last signed in", time=True),
    Column("joined", "Joined", time=True),
)


class UsersBase(PageHandler):
    nav = PATH

    @classmethod
    def admits(cls, principal: Principal | None, runtime: Runtime) -> bool:
        return (
            principal is not None and principal.user.is_superuser and principal.session is not None
        )

    def superuser(self) -> Principal:
        """A signed-in superuser, as the API wants: tokens carry no right to administer users."""
        principal = self.require(superuser=True)
        if principal.session is None:
            raise PageError(403, "User administration needs a signed-in superuser, not a token.")
        return principal

    def session_curl(self, path: str, description: str, form: dict[str, str] | None = None) -> None:
        """The API call with a browser session: the user API takes no token."""
        parts = ["curl", "-b", f"{SESSION_COOKIE}={COOKIE_PLACEHOLDER}"]
        if form is not None:
            parts += ["-H", f"X-CSRFToken: {CSRF_PLACEHOLDER}"]
            for name, value in form.items():
                parts += ["--data-urlencode", f"{name}={value}"]
        parts.append(f"{self.request.protocol}://{self.request.host}{path}")
        self.curl_commands.append(CurlCommand(description, shlex.join(parts)))


class UsersPage(UsersBase):
    """``GET /users/[?q=text]``: every user, or those whose e-mail holds ``q``."""

    title = "Users"

    async def get(self) -> None:
        self.superuser()
        search = self.get_query_argument("q", "").strip()
        try:
            page = page_number(self.get_query_argument("page", None))
        except FilterError as exc:
            raise PageError(400, exc.message) from None
        async with self.runtime.db.acquire() as conn:
            users = await admin.list_users(conn)
        if search:
            users = [u for u in users if search.lower() in u["email"].lower()]
        shown = users[(page - 1) * PER_PAGE : page * PER_PAGE]
        rows = [
            {
                "email": Link(u["email"], f"{PATH}user/{u['id']}"),
                "state": "active" if u["is_active"] else "inactive",
                "superuser": "yes" if u["is_superuser"] else "no",
                "groups": ", ".join(g["name"] for g in u["groups"]) or None,
                "uploads": f"{u['no_uploads']:,}",
                "tokens": f"{u['no_tokens']:,}",
                "last_login": shown_time(u["last_login"]) or "never",
                "joined": shown_time(u["date_joined"]),
            }
            for u in shown
        ]
        self.session_curl("/api/_users/", "Every user and group (a superuser's session):")
        pager = Pager(page, PER_PAGE, len(users), PATH, {"q": search} if search else {})
        self.page(
            "users.html",
            search=search,
            table=Table(
                columns=COLUMNS,
                rows=rows,
                caption="Users",
                empty=pager.empty(
                    f"No user's e-mail holds “{search}”." if search else "No users yet."
                ),
            ),
            pager=pager,
        )


class UserPage(UsersBase):
    """``GET /users/user/<id>``: one user, the forms that change it, and its audit trail;
    ``POST``: one change (``change`` is ``active``, ``superuser`` or ``groups``)."""

    title = "User"

    async def get(self, user_id: str) -> None:
        self.superuser()
        await self.show(object_id(user_id, "User"))

    async def post(self, user_id: str) -> None:
        principal = self.superuser()
        ident = object_id(user_id, "User")
        change = self.get_body_argument("change", "")
        actor = audit.Actor(principal.user.id, principal.user.email)
        async with self.runtime.db.acquire() as conn:
            user = await find_user_by_id(conn, ident)
            if user is None:
                raise PageError(404, f"There is no user #{ident}.")
            try:
                if change == "active":
                    wanted = self.flag("value")
                    changed = await admin.set_active(conn, actor, user, wanted)
                    done = f"{user.email} is now {'active' if wanted else 'inactive'}."
                elif change == "superuser":
                    wanted = self.flag("value")
                    changed = await admin.set_superuser(conn, actor, user, wanted)
                    done = f"{user.email} is {'now' if wanted else 'no longer'} a superuser."
                elif change == "groups":
                    ids = self.group_ids()
                    changed = await admin.set_groups(conn, actor, user, ids)
                    done = f"{user.email}'s groups are saved."
                else:
                    raise PageError(400, "Choose what to change.")
            except AccountError as exc:
                return await self.show(ident, status=400, error=f"Not changed: {exc}.")
        self.flash(done if changed else "Nothing changed.", "success" if changed else "info")
        self.redirect(f"{PATH}user/{ident}", status=303)

    def flag(self, name: str) -> bool:
        value = self.get_body_argument(name, "")
        if value not in ("true", "false"):
            raise PageError(400, f"'{value}' is not true or false.")
        return value == "true"

    def group_ids(self) -> list[int]:
        values = self.get_body_arguments("groups")
        if any(not (v.isascii() and v.isdigit()) or len(v) > 9 for v in values):
            raise PageError(400, "Unrecognized group id.")
        return [int(v) for v in values]

    async def show(self, ident: int, status: int = 200, error: str | None = None) -> None:
        async with self.runtime.db.acquire() as conn:
            found = await admin.list_users(conn, ident)
            if not found:
                raise PageError(404, f"There is no user #{ident}.")
            groups = await admin.all_groups(conn)
            trail = await audit.entries(conn, ident)
        user: dict[str, Any] = found[0]
        self.title = user["email"]
        self.session_curl(f"/api/_users/user/{ident}", "This user, the groups and the audit trail:")
        self.session_curl(
            f"/api/_users/user/{ident}",
            "Change the user (any of is_active, is_superuser, groups as group ids):",
            form={"groups": ",".join(str(g["id"]) for g in user["groups"])},
        )
        member = {g["id"] for g in user["groups"]}
        self.page(
            "user.html",
            status=status,
            error=error,
            account=user,
            groups=groups,
            member=member,
            itself=self.principal is not None and self.principal.user.id == ident,
            trail=Table(
                columns=(
                    Column("when", "When", time=True),
                    Column("actor", "By"),
                    Column("action", "Change"),
                    Column("message", "What"),
                ),
                rows=[
                    {
                        "when": shown_time(e["created_at"]),
                        "actor": e["actor"],
                        "action": e["action"],
                        "message": e["message"],
                    }
                    for e in trail
                ],
                empty="No changes recorded.",
            ),
            shown_time=shown_time,
        )


ROUTES = [
    (PATH, UsersPage),
    (PATH + r"user/(\d+)", UserPage),
]
