"""Is a user blocked at the identity provider? (docs/accounts.md, "Blocked users (Auth0)")

Someone who leaves loses their provider account, but their API tokens and year-long session would
live on. So requests by an active user (session or token) ask the provider, at most once per
``NOT_BLOCKED_IN_AUTH0_INTERVAL_SECONDS`` per user; a blocked user is made inactive and signed
out everywhere, and their tokens stop working. Signing in again undoes it (see
``admin.sign_in_user``).

Auth0's management API is the lookup implemented here. Another provider needs only a class with
the same ``lookup`` method.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.parse
from typing import Any, Protocol

import tornado.httpclient

from symbolon.accounts.oidc import provider_fetch
from symbolon.accounts.users import User
from symbolon.conf import Settings
from symbolon.redis_cache import Cache

logger = logging.getLogger(__name__)
BLOCKED_MESSAGE = "User is blocked in Auth0 and made inactive."
LOCAL_MEMORY = 100_000


class BlockedCheckError(Exception):
    """The provider could not say; the request fails rather than letting a blocked user in."""


class BlockedLookup(Protocol):
    async def lookup(self, email: str) -> bool | None:
        """True if blocked, False if found and not blocked, None if the provider has no such
        user."""


class Auth0Lookup:
    """Auth0's management API, on the domain of ``OIDC_OP_USER_ENDPOINT``, with the OIDC client's
    credentials (the client must be allowed the ``read:users`` scope)."""

    def __init__(self, settings: Settings):
        if not (settings.oidc_op_user_endpoint and settings.oidc_rp_client_id):
            raise ValueError(
                "the blocked check needs OIDC_OP_USER_ENDPOINT, OIDC_RP_CLIENT_ID and "
                "OIDC_RP_CLIENT_SECRET"
            )
        parts = urllib.parse.urlsplit(settings.oidc_op_user_endpoint)
        self.base = f"{parts.scheme}://{parts.netloc}"
        self.settings = settings
        self._token: str | None = None
        self._token_until = 0.0

    async def lookup(self, email: str) -> bool | None:
        token = await self._management_token()
        query = urllib.parse.urlencode({"q": f'email:"{email}"'})
        data = await self._call(
            f"{self.base}/api/v2/users?{query}", headers={"Authorization": f"Bearer {token}"}
        )
        if not isinstance(data, list):
            raise BlockedCheckError("Auth0 user search did not answer a list")
        if not data:
            return None
        return any(isinstance(u, dict) and u.get("blocked") is True for u in data)

    async def _management_token(self) -> str:
        if self._token is not None and time.monotonic() < self._token_until:
            return self._token
        s = self.settings
        data = await self._call(
            f"{self.base}/oauth/token",
            method="POST",
            body=json.dumps(
                {
                    "client_id": s.oidc_rp_client_id,
                    "client_secret": s.oidc_rp_client_secret,
                    "grant_type": "client_credentials",
                    "audience": f"{self.base}/api/v2/",
                }
            ),
            headers={"Content-Type": "application/json"},
        )
        if not isinstance(data, dict) or not isinstance(data.get("access_token"), str):
            raise BlockedCheckError("Auth0 gave no management API token")
        self._token = data["access_token"]
        lifetime = float(data.get("expires_in") or 60)
        self._token_until = time.monotonic() + max(0.0, lifetime - 30)
        return self._token

    async def _call(
        self,
        url: str,
        method: str = "GET",
        body: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        try:
            response = await provider_fetch(self.settings, url, method, body, headers)
        except (OSError, tornado.httpclient.HTTPClientError) as exc:
            raise BlockedCheckError(f"Auth0 at {self.base} could not be reached: {exc}") from None
        path = urllib.parse.urlsplit(url).path
        if response.code != 200:
            raise BlockedCheckError(f"Auth0 {method} {path} answered {response.code}")
        try:
            return json.loads(response.body or b"")
        except ValueError:
            raise BlockedCheckError(f"Auth0 {method} {path} did not answer JSON") from None


class BlockedGuard:
    """Asks the lookup about a user at most once per interval, remembered in Redis (shared by
    every process) and in this process (so a paused Redis does not mean a lookup per request)."""

    def __init__(self, lookup: BlockedLookup, cache: Cache, interval_seconds: int):
        self.lookup = lookup
        self.cache = cache
        self.interval = interval_seconds
        self._fine_until: dict[int, float] = {}

    async def is_blocked(self, user: User) -> bool:
        if not user.is_active or not user.email:
            return False
        now = time.time()
        if self._fine_until.get(user.id, 0.0) > now:
            return False
        key = f"not-blocked:{user.id}"
        checked = await self.cache.get(key)
        if checked is not None and float(checked) + self.interval > now:
            self._remember(user.id, float(checked) + self.interval)
            return False
        blocked = await self.lookup.lookup(user.email)
        if blocked:
            logger.warning("%s is blocked at the identity provider; making it inactive", user.email)
            return True
        await self.cache.set(key, str(now), ttl=self.interval)
        self._remember(user.id, now + self.interval)
        return False

    def forget(self, user_id: int) -> None:
        self._fine_until.pop(user_id, None)

    def _remember(self, user_id: int, until: float) -> None:
        if len(self._fine_until) >= LOCAL_MEMORY:
            self._fine_until.clear()
        self._fine_until[user_id] = until


def make_guard(settings: Settings, cache: Cache) -> BlockedGuard | None:
    """The guard when ENABLE_AUTH0_BLOCKED_CHECK is on (the settings check what it needs)."""
    if not settings.enable_auth0_blocked_check:
        return None
    return BlockedGuard(
        Auth0Lookup(settings), cache, settings.not_blocked_in_auth0_interval_seconds
    )
