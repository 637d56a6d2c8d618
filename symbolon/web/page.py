"""What every page shares (docs/web.md): who is signed in (the session cookie or an
``Auth-Token``, exactly as the JSON API decides), sign-in redirects with a same-site ``next``,
HTML error pages, flash messages, the curl equivalents of a page, and the layout's data."""

from __future__ import annotations

import hashlib
import json
import shlex
import urllib.parse
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any

import tornado.web

from symbolon.accounts import csrf
from symbolon.accounts.auth import Principal
from symbolon.accounts.permissions import Permission
from symbolon.handlers.auth import local_path
from symbolon.handlers.base import ApiError, BaseHandler
from symbolon.runtime import Runtime
from symbolon.stats import human_size

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"

SIGN_IN = "/oidc/authenticate/"
SIGN_OUT = "/oidc/logout/"
FLASH_COOKIE = "symbolon_flash"
GREETED_COOKIE = "symbolon_greeted"  # which session was last greeted "Signed in as ..."
FLASH_SECONDS = 300
TOKEN_PLACEHOLDER = "YOURTOKENHERE"

# What people call each permission on the pages.
PERMISSION_LABELS = {
    Permission.UPLOAD_SYMBOLS: "Upload symbols",
    Permission.UPLOAD_TRY_SYMBOLS: "Upload try symbols",
    Permission.VIEW_ALL_UPLOADS: "View all uploads",
    Permission.MANAGE_TOKENS: "Manage API tokens",
    Permission.VIEW_CRASHES: "View crash reports",
}


@dataclass(frozen=True)
class NavItem:
    label: str
    path: str


# The header's navigation, in order. An entry shows once a page is routed at its path, so a
# page added to routes.py appears here without another change, and only to those the page
# admits (PageHandler.admits).
NAVIGATION = (
    NavItem("Home", "/"),
    NavItem("Uploads", "/uploads/"),
    NavItem("Downloads missing", "/downloads/missing/"),
    NavItem("Symbolication", "/symbolication/"),
    NavItem("Crashes", "/crashes/"),
    NavItem("API tokens", "/tokens"),
    NavItem("Users", "/users/"),
    NavItem("Status", "/status/"),
    NavItem("Help", "/help"),
)


@dataclass(frozen=True)
class Flash:
    message: str
    kind: str = "info"  # info, success, warning, error: the CSS class


@dataclass(frozen=True)
class CurlCommand:
    """One API call a page's data comes from, as a person would type it."""

    description: str
    command: str


class PageError(tornado.web.HTTPError):
    """An error page with a message for people: ``raise PageError(403, "...")``."""

    def __init__(self, status_code: int, message: str):
        super().__init__(status_code)
        self.message = message


def sign_in_url(next_path: str | None = None) -> str:
    """The sign-in link, coming back to ``next_path`` only if it is a path on this site."""
    safe = local_path(next_path)
    if safe is None or safe == "/":
        return SIGN_IN
    return f"{SIGN_IN}?{urllib.parse.urlencode({'next': safe})}"


def format_time(value: datetime | None) -> str:
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def permission_label(codename: str) -> str:
    permission = Permission.lookup(codename)
    return PERMISSION_LABELS[permission] if permission is not None else codename


@dataclass
class _Routed:
    """The pages an application routes the navigation's paths to, found once per application."""

    pages: dict[str, type[PageHandler]] = field(default_factory=dict)


_ROUTED: dict[int, _Routed] = {}


class PageHandler(BaseHandler):
    """A page: HTML for people. Subclasses set ``title`` and ``nav`` (the path of the current
    navigation entry) and call ``self.page(template, **values)``."""

    title = "Symbolon"
    nav: str | None = None

    @classmethod
    def admits(cls, principal: Principal | None, runtime: Runtime) -> bool:
        """Whether the page answers ``principal`` rather than refusing it; for an anonymous
        visitor (None), whether signing in is all it needs. The navigation shows the page only
        then; the handler itself still decides, with require()."""
        return True

    def initialize(self, **kwargs: Any) -> None:
        super().initialize(**kwargs)
        self.curl_commands: list[CurlCommand] = []
        self.flashes: list[Flash] = []

    # -- who is asking

    async def prepare(self) -> None:
        authenticating = super().prepare()
        if authenticating is not None:
            await authenticating

    def require_signin(self) -> Principal:
        """The signed-in caller. An anonymous GET is sent to sign in and comes back here; any
        other request is refused, with the CSRF message when that is why."""
        if self.principal is not None:
            return self.principal
        if self.csrf_failed:
            raise PageError(403, csrf.FAILURE)
        if self.request.method in ("GET", "HEAD"):
            self.redirect(sign_in_url(self.request.uri))
            raise tornado.web.Finish()
        raise PageError(403, "Sign in first.")

    def require(self, *any_of: Permission, superuser: bool = False) -> Principal:
        """The signed-in caller holding one of ``any_of`` (a superuser when ``superuser``);
        else a 403 page that says what is missing."""
        principal = self.require_signin()
        if superuser and not principal.user.is_superuser:
            raise PageError(403, "This page is for superusers.")
        if any_of and not any(principal.has(p) for p in any_of):
            names = " or ".join(f"“{PERMISSION_LABELS[p]}”" for p in any_of)
            raise PageError(403, f"This page needs the {names} permission, which you do not hold.")
        return principal

    def csrf_token(self) -> str:
        """The session's token for the forms of this page; none for token callers."""
        principal = self.principal
        if principal is None or principal.session is None:
            return ""
        return principal.session.csrf_token

    # -- flash messages: shown once, on the next page rendered

    def flash(self, message: str, kind: str = "info") -> None:
        """Keep ``message`` for the next page this browser renders (after a redirect)."""
        pending = [*self._read_flash_cookie(), {"message": message, "kind": kind}]
        self.set_cookie(
            FLASH_COOKIE,
            self.runtime.sessions.sign(FLASH_COOKIE, json.dumps(pending[-5:])),
            path="/",
            httponly=True,
            samesite="Lax",
            secure=self.runtime.settings.session_cookie_secure,
        )

    def _read_flash_cookie(self) -> list[dict[str, str]]:
        raw = self.runtime.sessions.unsign(
            FLASH_COOKIE, self.get_cookie(FLASH_COOKIE), FLASH_SECONDS
        )
        try:
            found = json.loads(raw) if raw else []
        except ValueError:
            return []
        return [f for f in found if isinstance(f, dict)]

    def _take_flashes(self) -> list[Flash]:
        taken = list(self.flashes)
        if self.get_cookie(FLASH_COOKIE) is not None:
            taken += [
                Flash(str(f.get("message")), str(f.get("kind"))) for f in self._read_flash_cookie()
            ]
            self.clear_cookie(FLASH_COOKIE, path="/")
        principal = self.principal
        if principal is not None and principal.session is not None:
            marker = hashlib.sha256(f"greeted:{principal.session.key_hash}".encode()).hexdigest()
            if self.get_cookie(GREETED_COOKIE) != marker[:32]:
                taken.insert(0, Flash(f"Signed in as {principal.user.email}.", "success"))
                self.set_cookie(
                    GREETED_COOKIE,
                    marker[:32],
                    path="/",
                    httponly=True,
                    samesite="Lax",
                    secure=self.runtime.settings.session_cookie_secure,
                )
        # Raw bytes: get_query_argument raises on bytes that are not UTF-8, and this runs
        # for error pages too.
        signin = self.request.query_arguments.get("signin")
        if signin and signin[-1].strip() == b"failed":
            taken.append(Flash("Signing in did not succeed. Please try again.", "error"))
        return taken

    # -- curl equivalents

    def curl(
        self,
        path: str,
        description: str,
        auth: bool = False,
        method: str = "GET",
        form: dict[str, str] | None = None,
    ) -> None:
        """Record the API call that gives what this page shows; listed under the page."""
        parts = ["curl"]
        if method != "GET":
            parts += ["-X", method]
        if auth:
            parts += ["-H", f"Auth-Token: {TOKEN_PLACEHOLDER}"]
        for name, value in (form or {}).items():
            parts += ["--data-urlencode", f"{name}={value}"]
        url = f"{self.request.protocol}://{self.request.host}{path}"
        parts.append(url)
        command = " ".join(shlex.quote(p) for p in parts)
        self.curl_commands.append(CurlCommand(description, command))

    # -- rendering

    def get_template_path(self) -> str:
        return str(TEMPLATES)

    def static_url(self, path: str, include_host: bool | None = None, **kwargs: Any) -> str:
        """``/static/<path>?v=<hash>``: served with a long cache life (routes.py)."""
        version = tornado.web.StaticFileHandler.get_version({"static_path": str(STATIC)}, path)
        return f"/static/{path}" + (f"?v={version}" if version else "")

    def navigation(self) -> list[dict[str, Any]]:
        routed = self._routed_pages()
        return [
            {"label": item.label, "path": item.path, "current": item.path == self.nav}
            for item in NAVIGATION
            if item.path in routed and routed[item.path].admits(self.principal, self.runtime)
        ]

    def _routed_pages(self) -> dict[str, type[PageHandler]]:
        key = id(self.application)
        found = _ROUTED.get(key)
        if found is None:
            pages = {}
            for item in NAVIGATION:
                for rule in self.application.wildcard_router.rules:
                    matcher = getattr(rule.matcher, "regex", None)
                    if matcher is None or not matcher.match(item.path):
                        continue
                    # The first route matching the path is the one that answers it.
                    target = rule.target
                    if isinstance(target, type) and issubclass(target, PageHandler):
                        pages[item.path] = target
                    break
            found = _ROUTED[key] = _Routed(pages)
        return found.pages

    def get_template_namespace(self) -> dict[str, Any]:
        namespace = super().get_template_namespace()
        principal = self.principal
        namespace.update(
            principal=principal,
            user=principal.user if principal is not None else None,
            navigation=self.navigation(),
            csrf_field=csrf.FIELD,
            csrf_token=self.csrf_token(),
            sign_in_url=sign_in_url(self.request.uri),
            sign_out_url=SIGN_OUT,
            curl_commands=self.curl_commands,
            human_size=human_size,
            format_time=format_time,
            permission_label=permission_label,
            page_title=self.title,
        )
        return namespace

    def page(self, template: str, status: int = 200, **values: Any) -> None:
        """Render ``template`` within the layout."""
        self.set_status(status)
        self.set_page_headers()
        self.render(template, flashes=self._take_flashes(), **values)

    def set_page_headers(self) -> None:
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        # Pages show what the signed-in person may see: never from a shared cache.
        self.set_header("Cache-Control", "no-store")
        self.set_header("Vary", "Cookie, Auth-Token")
        self.set_header("Content-Security-Policy", self.content_security_policy())
        self.set_header("Referrer-Policy", "same-origin")

    def content_security_policy(self) -> str:
        option = self.runtime.settings.x_frame_options
        ancestors = {"DENY": "'none'", "OFF": "*"}.get(option, "'self'")
        return (
            "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
            f"form-action 'self'; frame-ancestors {ancestors}"
        )

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if status_code == 405:
            self.set_header("Allow", ", ".join(self.allowed_methods()))
        if isinstance(exc, PageError | ApiError):
            message = exc.message
        elif status_code >= 500:
            message = "Something went wrong on our side. Please try again later."
        else:
            message = ""
        try:
            heading = HTTPStatus(status_code).phrase
        except ValueError:
            heading = self._reason
        self.clear_header("Content-Disposition")
        self.title = heading
        self.curl_commands = []
        self.page("error.html", status=status_code, heading=heading, message=message)
