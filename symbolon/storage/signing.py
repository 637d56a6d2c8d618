"""Signed URLs on this server for directory locations (docs/download.md, "Directory locations").

A ``GET`` of a private directory's object and every ``PUT`` to a directory carry
``expires=<unix seconds>`` and ``signature=``, an HMAC-SHA256 under a key derived from
``SECRET_KEY``. The signature covers the method, the location id, the object key and the expiry;
for a ``PUT`` also the content type, content encoding and metadata the object is stored with and
the largest body accepted. Those travel in the query, so the server stores what was signed,
whatever headers the client sends.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qs, quote, urlencode

EXPIRES = "expires"
SIGNATURE = "signature"
CONTENT_TYPE = "content_type"
CONTENT_ENCODING = "content_encoding"
MAX_SIZE = "max_size"
META_PREFIX = "meta-"
# The signing key is not SECRET_KEY itself, so that no other signature made with it can pass here.
KEY_PURPOSE = b"symbolon storage URL"
# Unix seconds fit in this many digits until the year 33658: longer is not a time.
MAX_EXPIRES_DIGITS = 12


class SignatureInvalid(Exception):
    """The URL is not signed, is signed for something else, or expired; the message says which."""


@dataclass(frozen=True)
class PutTerms:
    """What a signed ``PUT`` stores, and the largest body it accepts."""

    max_size: int
    content_type: str | None = None
    content_encoding: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)


class UrlSigner:
    def __init__(self, secret_key: str):
        self._key = hmac.new(secret_key.encode(), KEY_PURPOSE, hashlib.sha256).digest()

    def _sign(
        self, method: str, location_id: str, key: str, expires_at: int, terms: PutTerms | None
    ) -> str:
        fields: list[object] = [method, location_id, key, expires_at]
        if terms is not None:
            metadata = sorted(terms.metadata.items())
            fields += [terms.content_type, terms.content_encoding, metadata, terms.max_size]
        # JSON keeps the fields apart whatever characters they hold.
        message = json.dumps(fields, separators=(",", ":")).encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def get_query(self, location_id: str, key: str, expires_at: int) -> str:
        signature = self._sign("GET", location_id, key, expires_at, None)
        return urlencode({EXPIRES: expires_at, SIGNATURE: signature})

    def put_query(self, location_id: str, key: str, expires_at: int, terms: PutTerms) -> str:
        params: dict[str, str | int] = {EXPIRES: expires_at, MAX_SIZE: terms.max_size}
        if terms.content_type is not None:
            params[CONTENT_TYPE] = terms.content_type
        if terms.content_encoding is not None:
            params[CONTENT_ENCODING] = terms.content_encoding
        for name, value in sorted(terms.metadata.items()):
            params[META_PREFIX + name] = value
        params[SIGNATURE] = self._sign("PUT", location_id, key, expires_at, terms)
        return urlencode(params, quote_via=quote)

    def verify_get(self, location_id: str, key: str, query: str, now: float) -> None:
        params = _params(query)
        expires_at = _expiry(params)
        self._check(params, self._sign("GET", location_id, key, expires_at, None), expires_at, now)

    def verify_put(self, location_id: str, key: str, query: str, now: float) -> PutTerms:
        params = _params(query)
        expires_at = _expiry(params)
        size = params.get(MAX_SIZE)
        if size is None or not size.isascii() or not size.isdigit() or len(size) > 20:
            raise SignatureInvalid("This upload URL names no valid max_size")
        terms = PutTerms(
            max_size=int(size),
            content_type=params.get(CONTENT_TYPE),
            content_encoding=params.get(CONTENT_ENCODING),
            metadata={
                name.removeprefix(META_PREFIX): value
                for name, value in params.items()
                if name.startswith(META_PREFIX)
            },
        )
        self._check(params, self._sign("PUT", location_id, key, expires_at, terms), expires_at, now)
        return terms

    @staticmethod
    def _check(params: dict[str, str], expected: str, expires_at: int, now: float) -> None:
        given = params.get(SIGNATURE)
        if given is None:
            raise SignatureInvalid("This URL is not signed")
        if not hmac.compare_digest(expected.encode(), given.encode()):
            raise SignatureInvalid("This URL's signature does not match")
        if expires_at < now:
            raise SignatureInvalid("This URL has expired")


def _params(query: str) -> dict[str, str]:
    parsed = parse_qs(query, keep_blank_values=True, errors="replace")
    twice = sorted(name for name, values in parsed.items() if len(values) > 1)
    if twice:
        raise SignatureInvalid(f"This URL gives {twice[0]!r} more than once")
    return {name: values[0] for name, values in parsed.items()}


def _expiry(params: dict[str, str]) -> int:
    if SIGNATURE not in params:
        raise SignatureInvalid("This URL is not signed")
    value = params.get(EXPIRES, "")
    if not value.isascii() or not value.isdigit() or len(value) > MAX_EXPIRES_DIGITS:
        raise SignatureInvalid("This URL has no valid expires")
    return int(value)
