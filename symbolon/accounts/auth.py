"""Who is asking: an ``Auth-Token`` header or a session cookie (docs/accounts.md, "API tokens",
"Sessions and CSRF")."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from symbolon.accounts.permissions import Permission
from symbolon.accounts.sessions import Session, SessionStore
from symbolon.accounts.tokens import Token, find_by_key
from symbolon.accounts.users import USER_COLUMNS, User, find_user_by_id, user_permissions


class AuthError(Exception):
    """Answered ``403 {"error": message}``."""


@dataclass(frozen=True)
class Principal:
    user: User
    # A token-authenticated request carries only the token's permissions, even a superuser's.
    permissions: frozenset[str]
    token: Token | None = None
    session: Session | None = None

    def has(self, permission: Permission) -> bool:
        return permission in self.permissions


async def authenticate_token(db: asyncpg.Pool, presented: str) -> Principal:
    token = await find_by_key(db, presented)
    if token is None:
        raise AuthError("API Token not matched")
    if token.is_expired:
        raise AuthError("API Token found but expired")
    row = await db.fetchrow(
        f"""UPDATE users SET last_login = now() WHERE id = $1 RETURNING {USER_COLUMNS}""",
        token.user_id,
    )
    user = User.from_row(row)
    if not user.is_active:
        raise AuthError("API Token matched but user not active")
    await db.execute("UPDATE tokens SET last_used_at = now() WHERE id = $1", token.id)
    return Principal(user=user, permissions=frozenset(token.permissions), token=token)


async def authenticate_session(
    db: asyncpg.Pool, sessions: SessionStore, cookie: str
) -> Principal | None:
    """The signed-in user of a session cookie, with the account's permissions; None when the
    cookie is forged or expired, the session is gone, or the user is inactive."""
    session = await sessions.load(cookie)
    if session is None:
        return None
    user = await find_user_by_id(db, session.user_id)
    if user is None or not user.is_active:
        return None
    permissions = await user_permissions(db, user)
    return Principal(user=user, permissions=frozenset(permissions), session=session)
