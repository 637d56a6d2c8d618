"""Helpers for the account tests: users with groups, sessions and tokens, and JSON requests."""

from __future__ import annotations

import json
import urllib.parse
from dataclasses import dataclass
from typing import Any

from symbolon.accounts import tokens as token_store
from symbolon.accounts.sessions import SESSION_COOKIE
from symbolon.accounts.users import User, find_user_by_id, get_or_create_user
from tests.conftest import unique_email


async def make_user(
    runtime: Any,
    groups: tuple[str, ...] = (),
    superuser: bool = False,
    email: str | None = None,
    active: bool = True,
) -> User:
    async with runtime.db.acquire() as conn:
        user, _ = await get_or_create_user(conn, email or unique_email())
        await conn.execute(
            "UPDATE users SET is_superuser = $2, is_staff = $2, is_active = $3 WHERE id = $1",
            user.id,
            superuser,
            active,
        )
        await conn.execute(
            """INSERT INTO user_groups (user_id, group_id)
               SELECT $1, id FROM groups WHERE name = ANY($2::text[])""",
            user.id,
            list(groups),
        )
    return User(**{**user.__dict__, "is_superuser": superuser, "is_active": active})


async def token_of(
    runtime: Any, user: User, permissions: tuple[str, ...] = (), expires_days: int = 30
) -> str:
    async with runtime.db.acquire() as conn:
        current = await find_user_by_id(conn, user.id)  # as it is now, flags included
        _, key = await token_store.create_token(conn, current, set(permissions), expires_days)
    return key


@dataclass
class Caller:
    """How a request authenticates: a token, a browser session, or nothing."""

    headers: dict[str, str]
    csrf: str | None = None

    @classmethod
    def anonymous(cls) -> Caller:
        return cls({})

    @classmethod
    def with_token(cls, key: str) -> Caller:
        return cls({"Auth-Token": key})

    @classmethod
    async def with_session(cls, runtime: Any, user: User) -> Caller:
        cookie, session = await runtime.sessions.create(user.id)
        return cls({"Cookie": f"{SESSION_COOKIE}={cookie}"}, csrf=session.csrf_token)


async def call(
    http_client: Any,
    base_url: str,
    caller: Caller,
    path: str,
    method: str = "GET",
    form: dict[str, str] | None = None,
    csrf: bool = True,
) -> tuple[int, Any]:
    """(status, parsed JSON body or text). State-changing session requests carry the CSRF token
    unless ``csrf`` is False."""
    headers = dict(caller.headers)
    body = None
    if method not in ("GET", "HEAD"):
        body = urllib.parse.urlencode(form or {})
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        if caller.csrf and csrf:
            headers["X-CSRFToken"] = caller.csrf
    response = await http_client.fetch(
        base_url + path,
        method=method,
        headers=headers,
        body=body,
        raise_error=False,
        follow_redirects=False,
        allow_nonstandard_methods=True,
    )
    text = response.body.decode() if response.body else ""
    try:
        return response.code, json.loads(text)
    except ValueError:
        return response.code, text


async def make_upload(
    runtime: Any,
    user: User,
    filename: str = "symbols.zip",
    size: int = 1000,
    try_symbols: bool = False,
    files: tuple[str, ...] = ("v1/xul.pdb/ABC/xul.sym",),
    completed: bool = True,
    created_at: Any = None,
    bucket_name: str = "symbols",
) -> tuple[int, list[int]]:
    """An upload row of ``user`` with file rows for ``files``; returns their ids."""
    async with runtime.db.acquire() as conn:
        upload_id = await conn.fetchval(
            """INSERT INTO uploads (user_id, filename, bucket_name, size, try_symbols,
                                    completed_at, created_at)
               VALUES ($1, $2, $3, $4, $5, CASE WHEN $6 THEN now() END, coalesce($7, now()))
               RETURNING id""",
            user.id,
            filename,
            bucket_name,
            size,
            try_symbols,
            completed,
            created_at,
        )
        file_ids = [
            await conn.fetchval(
                """INSERT INTO file_uploads (upload_id, bucket_name, key, size, completed_at,
                                             created_at)
                   VALUES ($1, $2, $3, 10, CASE WHEN $4 THEN now() END, coalesce($5, now()))
                   RETURNING id""",
                upload_id,
                bucket_name,
                key,
                completed,
                created_at,
            )
            for key in files
        ]
    return upload_id, file_ids
