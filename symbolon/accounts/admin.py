"""User administration: the active flag, the superuser flag and group membership.

See docs/accounts.md, "Users, groups and permissions" and "User management".

Every change is recorded in the audit trail. When a user loses a permission (a group taken away,
superuser status removed), the user's tokens lose it too: a token never carries more than its
owner holds.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from symbolon.accounts import audit
from symbolon.accounts.audit import Actor
from symbolon.accounts.permissions import Permission
from symbolon.accounts.users import (
    USER_COLUMNS,
    AccountError,
    User,
    get_or_create_user,
)
from symbolon.jsonutil import timestamp


async def permission_rows(conn: asyncpg.Connection) -> dict[str, dict[str, Any]]:
    """codename → ``{"id", "codename", "name"}``, as the JSON API shows permissions."""
    rows = await conn.fetch("SELECT id, codename, name FROM permissions ORDER BY id")
    return {r["codename"]: dict(r) for r in rows}


async def all_groups(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    perms = await permission_rows(conn)
    rows = await conn.fetch(
        """SELECT g.id, g.name,
                  coalesce(array_agg(p.codename ORDER BY p.id)
                           FILTER (WHERE p.codename IS NOT NULL), '{}') AS codenames
           FROM groups g
           LEFT JOIN group_permissions gp ON gp.group_id = g.id
           LEFT JOIN permissions p ON p.id = gp.permission_id
           GROUP BY g.id ORDER BY g.id"""
    )
    return [
        {"id": r["id"], "name": r["name"], "permissions": [perms[c] for c in r["codenames"]]}
        for r in rows
    ]


async def list_users(conn: asyncpg.Connection, user_id: int | None = None) -> list[dict[str, Any]]:
    """Every user (or one) with counts, groups and effective permissions, by e-mail."""
    perms = await permission_rows(conn)
    groups = {g["id"]: g for g in await all_groups(conn)}
    rows = await conn.fetch(
        """SELECT u.id, u.email, u.last_login, u.date_joined, u.is_superuser, u.is_staff,
                  u.is_active, u.inactive_reason,
                  (SELECT count(*) FROM uploads WHERE user_id = u.id) AS no_uploads,
                  (SELECT max(created_at) FROM uploads WHERE user_id = u.id) AS last_upload,
                  (SELECT count(*) FROM tokens WHERE user_id = u.id) AS no_tokens,
                  coalesce((SELECT array_agg(group_id ORDER BY group_id) FROM user_groups
                            WHERE user_id = u.id), '{}') AS group_ids,
                  coalesce((SELECT array_agg(p.codename) FROM user_permissions up
                            JOIN permissions p ON p.id = up.permission_id
                            WHERE up.user_id = u.id), '{}') AS direct
           FROM users u WHERE ($1::bigint IS NULL OR u.id = $1)
           ORDER BY lower(u.email)""",
        user_id,
    )
    users = []
    for r in rows:
        held = set(r["direct"])
        for gid in r["group_ids"]:
            held.update(p["codename"] for p in groups[gid]["permissions"])
        if r["is_superuser"]:
            held = set(Permission)
        users.append(
            {
                "id": r["id"],
                "email": r["email"],
                "last_login": timestamp(r["last_login"]),
                "date_joined": timestamp(r["date_joined"]),
                "is_superuser": r["is_superuser"],
                "is_staff": r["is_staff"],
                "is_active": r["is_active"],
                "inactive_reason": r["inactive_reason"],
                "no_uploads": r["no_uploads"],
                "last_upload": timestamp(r["last_upload"]),
                "no_tokens": r["no_tokens"],
                "groups": [groups[gid] for gid in r["group_ids"]],
                "permissions": [perms[c] for c in perms if c in held],
            }
        )
    return users


async def set_active(conn: asyncpg.Connection, actor: Actor, user: User, active: bool) -> bool:
    """Returns whether anything changed. Deactivating signs the user out everywhere."""
    if not active and actor.id == user.id:
        raise AccountError("you cannot deactivate yourself")
    async with conn.transaction():
        row = await conn.fetchrow(
            "SELECT is_active, inactive_reason FROM users WHERE id = $1 FOR UPDATE", user.id
        )
        # Deactivating a user the blocked check made inactive still matters: it stops the next
        # sign-in from making the account active again.
        if row["is_active"] == active and (active or row["inactive_reason"] != "blocked"):
            return False
        await conn.execute(
            "UPDATE users SET is_active = $2, inactive_reason = $3 WHERE id = $1",
            user.id,
            active,
            None if active else "admin",
        )
        if not active:
            await conn.execute("DELETE FROM sessions WHERE user_id = $1", user.id)
        await audit.record(
            conn,
            actor,
            user.id,
            "activate" if active else "deactivate",
            f"{user.email} {'activated' if active else 'deactivated'}",
        )
    return True


async def set_superuser(conn: asyncpg.Connection, actor: Actor, user: User, flag: bool) -> bool:
    if not flag and actor.id == user.id:
        raise AccountError("you cannot remove your own superuser status")
    async with conn.transaction():
        current = await conn.fetchval(
            "SELECT is_superuser FROM users WHERE id = $1 FOR UPDATE", user.id
        )
        if current == flag:
            return False
        # Staff goes with superuser, as the `superuser` command sets both (docs/accounts.md).
        await conn.execute(
            "UPDATE users SET is_superuser = $2, is_staff = $2 WHERE id = $1", user.id, flag
        )
        if not flag:
            await prune_token_permissions(conn, user.id)
        await audit.record(
            conn,
            actor,
            user.id,
            "superuser" if flag else "unsuperuser",
            f"{user.email} {'made' if flag else 'no longer'} a superuser",
        )
    return True


async def group_ids_by_name(conn: asyncpg.Connection, names: list[str]) -> list[int]:
    rows = await conn.fetch("SELECT id, name FROM groups")
    by_name = {r["name"].lower(): r["id"] for r in rows}
    unknown = [n for n in names if n.lower() not in by_name]
    if unknown:
        known = ", ".join(sorted(r["name"] for r in rows))
        raise AccountError(f"unknown group {unknown[0]!r} (known: {known})")
    return [by_name[n.lower()] for n in names]


async def set_groups(
    conn: asyncpg.Connection, actor: Actor, user: User, group_ids: list[int]
) -> bool:
    """Make the user's groups exactly ``group_ids``; unknown ids raise AccountError."""
    wanted = set(group_ids)
    async with conn.transaction():
        names = {r["id"]: r["name"] for r in await conn.fetch("SELECT id, name FROM groups")}
        unknown = wanted - names.keys()
        if unknown:
            raise AccountError(f"unknown group id {min(unknown)}")
        current = {
            r["group_id"]
            for r in await conn.fetch(
                "SELECT group_id FROM user_groups WHERE user_id = $1 FOR UPDATE", user.id
            )
        }
        if current == wanted:
            return False
        await conn.execute(
            "DELETE FROM user_groups WHERE user_id = $1 AND NOT (group_id = ANY($2::int[]))",
            user.id,
            sorted(wanted),
        )
        await conn.execute(
            """INSERT INTO user_groups (user_id, group_id)
               SELECT $1, unnest($2::int[]) ON CONFLICT DO NOTHING""",
            user.id,
            sorted(wanted - current),
        )
        await prune_token_permissions(conn, user.id)

        def listed(ids: set[int]) -> str:
            return ", ".join(sorted(names[i] for i in ids)) or "(none)"

        await audit.record(
            conn,
            actor,
            user.id,
            "groups",
            f"{user.email} groups: {listed(current)} -> {listed(wanted)}",
        )
    return True


async def prune_token_permissions(conn: asyncpg.Connection, user_id: int) -> int:
    """Take off the user's tokens every permission the user no longer holds."""
    status = await conn.execute(
        """DELETE FROM token_permissions tp USING tokens t, users u
           WHERE tp.token_id = t.id AND t.user_id = u.id AND u.id = $1 AND NOT u.is_superuser
             AND tp.permission_id NOT IN (
                 SELECT permission_id FROM user_permissions WHERE user_id = $1
                 UNION
                 SELECT gp.permission_id FROM group_permissions gp
                   JOIN user_groups ug ON ug.group_id = gp.group_id WHERE ug.user_id = $1)""",
        user_id,
    )
    return int(status.split()[-1])


async def mark_blocked(conn: asyncpg.Connection, user: User) -> None:
    """The identity provider says the user is blocked: inactive, signed out everywhere."""
    async with conn.transaction():
        await conn.execute(
            "UPDATE users SET is_active = false, inactive_reason = 'blocked' WHERE id = $1",
            user.id,
        )
        await conn.execute("DELETE FROM sessions WHERE user_id = $1", user.id)
        await audit.record(
            conn,
            audit.BLOCKED_CHECK,
            user.id,
            "deactivate",
            f"{user.email} is blocked at the identity provider; made inactive",
        )


async def sign_in_user(conn: asyncpg.Connection, email: str) -> User | None:
    """The account a successful sign-in opens: found by e-mail, or created with no permissions.

    An account the blocked check made inactive is active again: the provider has just let its
    owner sign in, so the block was lifted or a mistake (docs/decisions.md). An account an
    administrator deactivated stays so, and the sign-in is refused (None).
    """
    async with conn.transaction():
        user, created = await get_or_create_user(conn, email)
        reason = await conn.fetchval(
            "SELECT inactive_reason FROM users WHERE id = $1 FOR UPDATE", user.id
        )
        if not user.is_active and reason != "blocked":
            return None
        row = await conn.fetchrow(
            f"""UPDATE users SET last_login = now(), is_active = true, inactive_reason = NULL
                WHERE id = $1 RETURNING {USER_COLUMNS}""",
            user.id,
        )
        if created:
            await audit.record(conn, audit.SIGN_IN, user.id, "create", f"{email} signed up")
        elif not user.is_active:
            await audit.record(
                conn,
                audit.SIGN_IN,
                user.id,
                "activate",
                f"{user.email} signed in again after a block; active again",
            )
        return User.from_row(row)
