"""CSRF protection for requests a browser makes with the session cookie.

Every state-changing request authenticated by the session cookie must present the session's CSRF
token, in the ``X-CSRFToken`` header (what the web UI sends) or a ``csrf_token`` form field (plain
HTML forms). A page on another site can make the browser send the cookie, but it cannot read the
token. Requests authenticated by an ``Auth-Token`` header are exempt: no browser adds that header
on its own. The session cookie is also ``SameSite=Lax``, a second line of defence.

A request that fails the check is simply not authenticated by its cookie: endpoints that need a
user answer ``403`` with the CSRF message, endpoints open to anyone are not disturbed.
"""

from __future__ import annotations

import hmac

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
HEADER = "X-CSRFToken"
FIELD = "csrf_token"
FAILURE = "CSRF token missing or incorrect"


def needs_check(method: str) -> bool:
    return method.upper() not in SAFE_METHODS


def verify(expected: str, presented: str | None) -> bool:
    if not presented:
        return False
    return hmac.compare_digest(expected.encode(), presented.encode())
