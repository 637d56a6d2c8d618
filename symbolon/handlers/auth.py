"""Browser sign-in and sign-out, and ``/api/_auth/`` (docs/accounts.md).

``/oidc/authenticate/`` sends the browser to the provider with a fresh ``state``, ``nonce`` and
PKCE verifier, kept in a short-lived signed cookie (anonymous visitors make no session rows).
``/oidc/callback/`` checks them, signs the user in with a new session, and redirects to a local
path only.
"""

from __future__ import annotations

import hmac
import html
import json
import logging
import secrets
import urllib.parse

from symbolon.accounts import admin, csrf
from symbolon.accounts.oidc import ProviderUnavailable, SignInFailed
from symbolon.accounts.sessions import SESSION_COOKIE
from symbolon.accounts.users import user_permissions
from symbolon.handlers.base import ApiError, BaseHandler, ReadHandler

logger = logging.getLogger(__name__)

SIGN_IN_COOKIE = "symbolon_oidc"
SIGN_IN_SECONDS = 600  # time to get through the provider's pages
SIGNED_IN = "/?signedin=true"
SIGN_IN_FAILED = "/?signin=failed"


def local_path(value: str | None) -> str | None:
    """``value`` if it is a path on this site, else None: no open redirects."""
    if not value or not value.startswith("/") or value.startswith(("//", "/\\")):
        return None
    parts = urllib.parse.urlsplit(value)
    if parts.scheme or parts.netloc or "\\" in value:
        return None
    if any(ord(c) < 0x20 or c == "\x7f" for c in value):  # control characters: no header holds them
        return None
    return value


def site_url(handler: BaseHandler, path: str) -> str:
    return f"{handler.request.protocol}://{handler.request.host}{path}"


class _AuthHandler(BaseHandler):
    def set_browser_cookie(self, name: str, value: str, **kwargs: object) -> None:
        self.set_cookie(
            name,
            value,
            httponly=True,
            samesite="Lax",
            secure=self.runtime.settings.session_cookie_secure,
            **kwargs,  # type: ignore[arg-type]
        )

    def error_page(self, status: int, title: str, message: str) -> None:
        """A page a person can read; details go to the log, never a trace to the browser."""
        self.set_status(status)
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.set_header("Cache-Control", "no-store")
        self.finish(
            "<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title></head><body>"
            f"<h1>{html.escape(title)}</h1><p>{html.escape(message)}</p>"
            "<p><a href='/'>Back to the home page</a></p></body></html>"
        )

    def provider_unavailable(self, exc: ProviderUnavailable) -> None:
        logger.error("sign-in: %s", exc)
        self.error_page(
            503,
            "Sign-in is not available",
            "The sign-in provider cannot be used right now, so you cannot sign in. "
            "Please try again later; if this persists, tell the administrators of this site.",
        )


class AuthenticateHandler(_AuthHandler):
    """``GET /oidc/authenticate/[?next=/local/path]`` → 302 to the provider."""

    async def get(self) -> None:
        oidc = self.runtime.oidc
        state, nonce = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        verifier, challenge = oidc.pkce_pair()
        try:
            url = await oidc.authorization_url(
                site_url(self, "/oidc/callback/"), state, nonce, challenge
            )
        except ProviderUnavailable as exc:
            return self.provider_unavailable(exc)
        pending = {
            "state": state,
            "nonce": nonce,
            "verifier": verifier,
            "next": local_path(self.get_query_argument("next", None)),
        }
        self.set_browser_cookie(
            SIGN_IN_COOKIE,
            self.runtime.sessions.sign(SIGN_IN_COOKIE, json.dumps(pending)),
            path="/oidc/",
            max_age=SIGN_IN_SECONDS,
        )
        self.set_header("Cache-Control", "no-store")
        self.redirect(url)


class CallbackHandler(_AuthHandler):
    """``GET /oidc/callback/?code=…&state=…`` → 302 ``/?signedin=true`` with a session cookie,
    or 302 ``/?signin=failed``."""

    async def get(self) -> None:
        rt = self.runtime
        raw = rt.sessions.unsign(SIGN_IN_COOKIE, self.get_cookie(SIGN_IN_COOKIE), SIGN_IN_SECONDS)
        self.clear_cookie(SIGN_IN_COOKIE, path="/oidc/")  # one attempt per state
        pending = json.loads(raw) if raw else None
        state = self.get_query_argument("state", "")
        if pending is None or not hmac.compare_digest(state.encode(), pending["state"].encode()):
            return self.failed("the state does not match a sign-in started in this browser")
        error = self.get_query_argument("error", None)
        code = self.get_query_argument("code", None)
        if error or not code:
            return self.failed(f"the provider answered {error or 'without a code'}")
        try:
            identity = await rt.oidc.sign_in(
                code,
                site_url(self, "/oidc/callback/"),
                pending["nonce"],
                pending["verifier"],
                response_issuer=self.get_query_argument("iss", None),
            )
        except SignInFailed as exc:
            return self.failed(str(exc))
        except ProviderUnavailable as exc:
            return self.provider_unavailable(exc)
        async with rt.db.acquire() as conn:
            user = await admin.sign_in_user(conn, identity.email)
        if user is None:
            return self.failed(f"{identity.email} is deactivated")
        if self.principal is not None and self.principal.session is not None:
            await rt.sessions.delete(self.principal.session)  # a new session id: no fixation
        await rt.sessions.purge_expired()
        cookie, _ = await rt.sessions.create(user.id)
        self.set_browser_cookie(
            SESSION_COOKIE, cookie, path="/", max_age=rt.settings.session_cookie_age
        )
        logger.info("%s signed in", user.email)
        self.redirect(pending["next"] or SIGNED_IN)

    def failed(self, why: str) -> None:
        logger.warning("sign-in failed: %s", why)
        self.redirect(SIGN_IN_FAILED)


class LogoutHandler(_AuthHandler):
    """``POST /oidc/logout/`` → 302 ``/``, signed out (the CSRF token is required)."""

    SUPPORTED_METHODS = ("POST",)

    async def post(self) -> None:
        if self.csrf_failed:
            raise ApiError(403, csrf.FAILURE)  # another site must not sign people out
        sessions = self.runtime.sessions
        session = self.principal.session if self.principal is not None else None
        if session is None:
            # An inactive user's session is not a principal, but signing out must still end it.
            session = await sessions.load(self.get_cookie(SESSION_COOKIE))
        if session is not None:
            await sessions.delete(session)
        self.clear_cookie(SESSION_COOKIE, path="/")
        self.redirect("/")


class ApiAuthHandler(ReadHandler):
    """``/api/_auth/``: who is signed in, with the account's permissions."""

    async def get(self) -> None:
        principal = self.principal
        if principal is None:
            return self.write_json(
                {"sign_in_url": site_url(self, "/oidc/authenticate/"), "user": None}
            )
        async with self.runtime.db.acquire() as conn:
            # The account's permissions, even when a token with fewer authenticated the call.
            held = await user_permissions(conn, principal.user)
            known = await admin.permission_rows(conn)
        user = principal.user
        body = {
            "user": {
                "email": user.email,
                "is_active": user.is_active,
                "is_superuser": user.is_superuser,
                "permissions": [p for codename, p in known.items() if codename in held],
            },
            "sign_out_url": site_url(self, "/oidc/logout/"),
        }
        if principal.session is not None:
            # What the web UI sends back in X-CSRFToken with every change it makes.
            body["csrf_token"] = principal.session.csrf_token
        self.write_json(body)


class AuthDebugHandler(_AuthHandler):
    """``GET /__auth_debug__``: do the cache and cookies work for this browser? The first thing
    to ask of someone who cannot stay signed in (docs/operations.md, "Health (Dockerflow)")."""

    COOKIE = "symbolon_auth_debug"
    SECONDS = 10
    uses_session = False

    async def get(self) -> None:
        sessions = self.runtime.sessions
        cache = self.runtime.cache
        cached = await cache.get("auth-debug")
        if cached is None:
            await cache.set("auth-debug", b"1", ttl=self.SECONDS)
        returned = sessions.unsign(self.COOKIE, self.get_cookie(self.COOKIE), self.SECONDS)
        self.set_browser_cookie(
            self.COOKIE, sessions.sign(self.COOKIE, "1"), path="/", max_age=self.SECONDS
        )
        self.set_header("Content-Type", "text/plain; charset=UTF-8")
        self.set_header("Cache-Control", "no-store")
        self.finish(
            ("Cache works!" if cached else "Refresh to see if caching works.")
            + "\n"
            + ("Session cookies work!" if returned else "Refresh to see if session cookies work.")
            + "\n"
        )


ROUTES = [
    (r"/oidc/authenticate/", AuthenticateHandler),
    (r"/oidc/callback/", CallbackHandler),
    (r"/oidc/logout/", LogoutHandler),
    (r"/api/_auth/", ApiAuthHandler),
    (r"/__auth_debug__", AuthDebugHandler),
]
