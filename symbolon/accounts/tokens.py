"""API tokens (docs/accounts.md). Secrets are shown once and stored only as SHA-256.

A key is 32 random hex characters (128 bits), so a plain SHA-256 is enough to make a stolen
table useless: there is nothing to guess from. A label after the first ``-`` is ignored.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg

from symbolon.accounts.permissions import Permission
from symbolon.accounts.users import AccountError, User, user_permissions

KEY_PATTERN = re.compile(r"^[0-9a-f]{32}$")
PREFIX_LENGTH = 8
EXCLUSIVE = {Permission.UPLOAD_SYMBOLS, Permission.UPLOAD_TRY_SYMBOLS}


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def strip_label(presented: str) -> str:
    """``<key>-<label>`` authenticates as ``<key>``."""
    return presented.strip().split("-", 1)[0].lower()


@dataclass(frozen=True)
class Token:
    id: int
    user_id: int
    email: str
    key_prefix: str
    expires_at: datetime
    notes: str
    created_at: datetime
    permissions: tuple[str, ...]
    preferred_upload_api_version: int = 1

    @property
    def is_expired(self) -> bool:
        return self.expires_at < datetime.now(UTC)


TOKEN_QUERY = """
    SELECT t.id, t.user_id, u.email, t.key_prefix, t.expires_at, t.notes, t.created_at,
           t.preferred_upload_api_version,
           coalesce(array_agg(p.codename ORDER BY p.codename)
                    FILTER (WHERE p.codename IS NOT NULL), '{}') AS permissions
    FROM tokens t
    JOIN users u ON u.id = t.user_id
    LEFT JOIN token_permissions tp ON tp.token_id = t.id
    LEFT JOIN permissions p ON p.id = tp.permission_id
"""


def _token(row: asyncpg.Record) -> Token:
    values = {f: row[f] for f in Token.__dataclass_fields__}
    values["permissions"] = tuple(row["permissions"])
    return Token(**values)


async def create_token(
    conn: asyncpg.Connection,
    user: User,
    permissions: AbstractSet[str],
    expires_days: int,
    notes: str = "",
) -> tuple[Token, str]:
    """Returns the token and its secret key, which is not stored anywhere."""
    unknown = permissions - set(Permission)
    if unknown:
        raise AccountError(f"unknown permissions: {', '.join(sorted(unknown))}")
    if permissions >= EXCLUSIVE:
        raise AccountError(
            "a token may not carry both upload_symbols and upload_try_symbols: "
            "make one token for each"
        )
    missing = permissions - await user_permissions(conn, user)
    if missing:
        raise AccountError(
            f"{user.email} does not hold {', '.join(sorted(missing))}; a token can only carry "
            "permissions its owner holds (put the user in a group that grants them, "
            "or make them superuser)"
        )
    key = uuid.uuid4().hex
    expires_at = datetime.now(UTC) + timedelta(days=expires_days)
    async with conn.transaction():
        token_id = await conn.fetchval(
            """INSERT INTO tokens (user_id, key_hash, key_prefix, expires_at, notes)
               VALUES ($1, $2, $3, $4, $5) RETURNING id""",
            user.id,
            hash_key(key),
            key[:PREFIX_LENGTH],
            expires_at,
            notes,
        )
        await conn.execute(
            """INSERT INTO token_permissions (token_id, permission_id)
               SELECT $1, id FROM permissions WHERE codename = ANY($2::text[])""",
            token_id,
            sorted(permissions),
        )
        row = await conn.fetchrow(TOKEN_QUERY + " WHERE t.id = $1 GROUP BY t.id, u.email", token_id)
    return _token(row), key


async def list_tokens(conn: asyncpg.Connection, email: str | None = None) -> list[Token]:
    if email is None:
        rows = await conn.fetch(TOKEN_QUERY + " GROUP BY t.id, u.email ORDER BY t.id")
    else:
        rows = await conn.fetch(
            TOKEN_QUERY + " WHERE lower(u.email) = lower($1) GROUP BY t.id, u.email ORDER BY t.id",
            email,
        )
    return [_token(r) for r in rows]


async def find_by_key(conn: asyncpg.Connection | asyncpg.Pool, presented: str) -> Token | None:
    key = strip_label(presented)
    if not KEY_PATTERN.match(key):
        return None
    row = await conn.fetchrow(
        TOKEN_QUERY + " WHERE t.key_hash = $1 GROUP BY t.id, u.email", hash_key(key)
    )
    return _token(row) if row else None


async def revoke_token(conn: asyncpg.Connection, token_or_id: str) -> Token:
    """Delete a token named by its id or by its secret key."""
    token: Token | None
    if token_or_id.isdigit() and len(token_or_id) < 20:
        row = await conn.fetchrow(
            TOKEN_QUERY + " WHERE t.id = $1 GROUP BY t.id, u.email", int(token_or_id)
        )
        token = _token(row) if row else None
    else:
        token = await find_by_key(conn, token_or_id)
    if token is None:
        raise AccountError(f"no token matches {token_or_id!r} (give its id or its full key)")
    await conn.execute("DELETE FROM tokens WHERE id = $1", token.id)
    return token


async def find_token(conn: asyncpg.Connection, token_id: int) -> Token | None:
    row = await conn.fetchrow(TOKEN_QUERY + " WHERE t.id = $1 GROUP BY t.id, u.email", token_id)
    return _token(row) if row else None


async def user_tokens(conn: asyncpg.Connection, user_id: int) -> list[Token]:
    """The user's tokens, newest first."""
    rows = await conn.fetch(
        TOKEN_QUERY + " WHERE t.user_id = $1 GROUP BY t.id, u.email ORDER BY t.created_at DESC, "
        "t.id DESC",
        user_id,
    )
    return [_token(r) for r in rows]


async def delete_token(conn: asyncpg.Connection, token_id: int) -> None:
    await conn.execute("DELETE FROM tokens WHERE id = $1", token_id)


async def extend_token(conn: asyncpg.Connection, token_id: int, days: int) -> datetime:
    """Push the expiry ``days`` further (from the current expiry, not from now)."""
    return await conn.fetchval(
        """UPDATE tokens SET expires_at = expires_at + make_interval(days => $2)
           WHERE id = $1 RETURNING expires_at""",
        token_id,
        days,
    )


async def revoke_user_tokens(conn: asyncpg.Connection, email: str) -> list[Token]:
    """Delete every token of the user; returns what was deleted."""
    found = await list_tokens(conn, email)
    await conn.execute("DELETE FROM tokens WHERE id = ANY($1::bigint[])", [t.id for t in found])
    return found
