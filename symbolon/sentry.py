"""Error reporting with sentry-sdk, when ``SENTRY_DSN`` is set; secrets are scrubbed first."""

from __future__ import annotations

from typing import TYPE_CHECKING

from symbolon import __version__
from symbolon.conf import Settings

if TYPE_CHECKING:
    from sentry_sdk.types import Event, Hint

SCRUBBED_HEADERS = {"auth-token", "authorization", "cookie", "x-forwarded-for", "x-real-ip"}
SCRUBBED_QUERY = {"code", "state"}


def scrub_event(event: Event, hint: Hint | None = None) -> Event:
    request = event.get("request") or {}
    headers = request.get("headers")
    if isinstance(headers, dict):
        for name in list(headers):
            if name.lower() in SCRUBBED_HEADERS:
                headers[name] = "[Scrubbed]"
    if "cookies" in request:
        request["cookies"] = "[Scrubbed]"
    if "data" in request:
        request["data"] = "[Scrubbed]"
    query = request.get("query_string")
    if isinstance(query, str) and any(f"{k}=" in query for k in SCRUBBED_QUERY):
        request["query_string"] = "[Scrubbed]"
    return event


def configure_sentry(settings: Settings) -> None:
    if not settings.sentry_dsn:
        return
    import sentry_sdk
    from sentry_sdk.integrations.tornado import TornadoIntegration

    sentry_sdk.init(
        dsn=settings.sentry_dsn,
        release=__version__,
        integrations=[TornadoIntegration()],
        send_default_pii=False,
        before_send=scrub_event,
    )
