"""Users and what they may do (docs/accounts.md, "Users, groups and permissions")."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from symbolon.accounts.permissions import Permission


class AccountError(ValueError):
    """A request about accounts that cannot be carried out; the message says why."""


@dataclass(frozen=True)
class User:
    id: int
    email: str
    is_active: bool
    is_superuser: bool
    is_staff: bool
    date_joined: datetime
    last_login: datetime | None

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> User:
        return cls(**{f: row[f] for f in cls.__dataclass_fields__})


def validate_email(email: str) -> str:
    email = email.strip()
    if " " in email or email.count("@") != 1 or email.startswith("@") or email.endswith("@"):
        raise AccountError(f"{email!r} is not an e-mail address")
    return email


def permission_codename(name: str) -> Permission:
    """``upload_symbols`` or ``upload.upload_symbols`` → ``Permission.UPLOAD_SYMBOLS``."""
    permission = Permission.lookup(name)
    if permission is None:
        known = ", ".join(sorted(p.short_name for p in Permission))
        raise AccountError(f"unknown permission {name!r} (known: {known})")
    return permission


USER_COLUMNS = "id, email, is_active, is_superuser, is_staff, date_joined, last_login"


async def find_user(conn: asyncpg.Connection, email: str) -> User | None:
    row = await conn.fetchrow(
        f"SELECT {USER_COLUMNS} FROM users WHERE lower(email) = lower($1)", email
    )
    return User.from_row(row) if row else None


async def get_or_create_user(conn: asyncpg.Connection, email: str) -> tuple[User, bool]:
    """New users start active with no permissions."""
    email = validate_email(email)
    row = await conn.fetchrow(
        f"""INSERT INTO users (email) VALUES ($1)
            ON CONFLICT ((lower(email))) DO NOTHING
            RETURNING {USER_COLUMNS}""",
        email,
    )
    if row is not None:
        return User.from_row(row), True
    user = await find_user(conn, email)
    assert user is not None
    return user, False


async def make_superuser(conn: asyncpg.Connection, email: str) -> tuple[User, list[str]]:
    """Create the user if missing and make it an active superuser; returns what happened."""
    async with conn.transaction():
        user, created = await get_or_create_user(conn, email)
        notes = [f"created user {user.email}"] if created else []
        if user.is_superuser and user.is_staff and user.is_active:
            notes.append(f"{user.email} is already a superuser")
            return user, notes
        row = await conn.fetchrow(
            f"""UPDATE users SET is_superuser = true, is_staff = true, is_active = true
                WHERE id = $1 RETURNING {USER_COLUMNS}""",
            user.id,
        )
        notes.append(f"{user.email} is now a superuser")
        return User.from_row(row), notes


async def user_permissions(conn: asyncpg.Connection | asyncpg.Pool, user: User) -> set[str]:
    """Codenames the user holds, directly or through groups; superusers hold them all."""
    if user.is_superuser:
        return set(Permission)
    rows = await conn.fetch(
        """SELECT p.codename FROM permissions p
             JOIN user_permissions up ON up.permission_id = p.id WHERE up.user_id = $1
           UNION
           SELECT p.codename FROM permissions p
             JOIN group_permissions gp ON gp.permission_id = p.id
             JOIN user_groups ug ON ug.group_id = gp.group_id WHERE ug.user_id = $1""",
        user.id,
    )
    return {r["codename"] for r in rows}


async def find_user_by_id(conn: asyncpg.Connection | asyncpg.Pool, user_id: int) -> User | None:
    row = await conn.fetchrow(f"SELECT {USER_COLUMNS} FROM users WHERE id = $1", user_id)
    return User.from_row(row) if row else None
