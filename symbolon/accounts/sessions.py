"""Browser sessions: a signed cookie naming a row in PostgreSQL (docs/accounts.md).

Signed-in users must stay signed in while Redis is paused or down, so the
database holds every session and Redis only saves the lookup ("cached_db"). A cached entry lives
a few minutes at most: a logout that could not reach Redis leaves a stale entry for that long,
never longer. The user row itself is read from the database on every request, so deactivating
someone takes effect at once whatever the cache holds.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
from tornado.web import create_signed_value, decode_signed_value

from symbolon.redis_cache import Cache

SESSION_COOKIE = "symbolon_session"
CACHE_SECONDS = 300


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class Session:
    key_hash: str
    user_id: int
    csrf_token: str
    expires_at: datetime

    @property
    def cache_key(self) -> str:
        return f"session:{self.key_hash}"


class SessionStore:
    def __init__(self, db: asyncpg.Pool, cache: Cache, secret: str | None, age_seconds: int):
        self.db = db
        self.cache = cache
        self.secret = secret
        self.age_seconds = age_seconds

    def sign(self, name: str, value: str) -> str:
        if not self.secret:
            raise RuntimeError("SECRET_KEY is not set: nothing to sign cookies with")
        return create_signed_value(self.secret, name, value).decode()

    def unsign(self, name: str, signed: str | None, max_age_seconds: float) -> str | None:
        """The value of a cookie we signed, or None if it is forged, foreign or too old."""
        if not signed or not self.secret:
            return None
        value = decode_signed_value(self.secret, name, signed, max_age_days=max_age_seconds / 86400)
        return value.decode() if value is not None else None

    async def create(self, user_id: int) -> tuple[str, Session]:
        """A new session; returns the signed cookie value and the session."""
        key = secrets.token_urlsafe(32)
        session = Session(
            key_hash=_hash(key),
            user_id=user_id,
            csrf_token=secrets.token_urlsafe(32),
            expires_at=datetime.now(UTC) + timedelta(seconds=self.age_seconds),
        )
        await self.db.execute(
            """INSERT INTO sessions (key_hash, user_id, csrf_token, expires_at)
               VALUES ($1, $2, $3, $4)""",
            session.key_hash,
            session.user_id,
            session.csrf_token,
            session.expires_at,
        )
        await self._remember(session)
        return self.sign(SESSION_COOKIE, key), session

    async def load(self, cookie: str | None) -> Session | None:
        key = self.unsign(SESSION_COOKIE, cookie, self.age_seconds)
        if key is None:
            return None
        key_hash = _hash(key)
        cached = await self.cache.get(f"session:{key_hash}")
        if cached is not None:
            data = json.loads(cached)
            session = Session(
                key_hash=key_hash,
                user_id=data["user_id"],
                csrf_token=data["csrf_token"],
                expires_at=datetime.fromtimestamp(data["expires_at"], UTC),
            )
        else:
            row = await self.db.fetchrow(
                "SELECT user_id, csrf_token, expires_at FROM sessions WHERE key_hash = $1",
                key_hash,
            )
            if row is None:
                return None
            session = Session(key_hash=key_hash, **dict(row))
            await self._remember(session)
        if session.expires_at <= datetime.now(UTC):
            return None
        return session

    async def delete(self, session: Session) -> None:
        await self.db.execute("DELETE FROM sessions WHERE key_hash = $1", session.key_hash)
        await self.cache.delete(session.cache_key)

    async def delete_for_user(self, user_id: int) -> int:
        """Sign the user out everywhere; returns how many sessions there were."""
        rows = await self.db.fetch(
            "DELETE FROM sessions WHERE user_id = $1 RETURNING key_hash", user_id
        )
        await self.cache.delete(*(f"session:{r['key_hash']}" for r in rows))
        return len(rows)

    async def purge_expired(self) -> int:
        status = await self.db.execute("DELETE FROM sessions WHERE expires_at <= now()")
        return int(status.split()[-1])

    async def _remember(self, session: Session) -> None:
        remaining = (session.expires_at - datetime.now(UTC)).total_seconds()
        data = {
            "user_id": session.user_id,
            "csrf_token": session.csrf_token,
            "expires_at": session.expires_at.timestamp(),
        }
        await self.cache.set(
            session.cache_key, json.dumps(data), ttl=max(1.0, min(CACHE_SECONDS, remaining))
        )
