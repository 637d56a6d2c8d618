"""What the status page shows superusers (docs/web.md, "Status"): every setting with its secrets
masked, table row counts, the migrations applied, and the versions of the services."""

from __future__ import annotations

import dataclasses
import platform
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import tornado

from symbolon import __version__
from symbolon.conf import Settings
from symbolon.conf.settings import declarations

MASK = "********"
# Settings whose whole value is a secret, by field name.
SECRET_NAME = re.compile(r"secret|password|token|dsn|access_key", re.IGNORECASE)
# Numbers and flags named like secrets (a token's lifetime) are not secrets.
NOT_SECRET_TYPES = (bool, int, float)
# Query parameters of a URL that carry credentials.
SECRET_PARAMETER = re.compile(r"secret|password|passwd|token|key|signature|credential|auth", re.I)
# Tables counted exactly up to this estimated size; larger ones show PostgreSQL's estimate.
EXACT_COUNT_LIMIT = 1_000_000


@dataclass(frozen=True)
class SettingRow:
    name: str
    env: str
    value: str
    masked: bool
    doc: str


# A URL's parts (RFC 3986, appendix B), kept verbatim so that only secrets change.
URL_PARTS = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*):(?://(?P<authority>[^/?#]*))?"
    r"(?P<path>[^?#]*)(?:\?(?P<query>[^#]*))?(?:#(?P<fragment>.*))?",
    re.DOTALL,
)


def mask_url(text: str) -> str:
    """``text`` with a URL's password and credential-bearing query values masked, whether or
    not the URL names a host (``postgresql:///db?host=/run/postgresql&password=…``); a value
    that looks like a URL but does not parse is masked whole, as where its secrets are cannot
    be told."""
    try:
        parts = urllib.parse.urlsplit(text)
    except ValueError:
        return MASK
    found = URL_PARTS.fullmatch(text)
    if found is None:
        # Not laid out as a URL, though read as one (leading spaces, say): mask it whole.
        url_like = parts.scheme and (parts.netloc or parts.query or parts.fragment)
        return MASK if url_like else text
    authority, query, fragment = found["authority"], found["query"], found["fragment"]
    shown = found["scheme"] + ":"
    if authority is not None:
        if "@" in authority:
            userinfo, _, host = authority.rpartition("@")
            user, has_password, _ = userinfo.partition(":")
            authority = f"{user}:{MASK}@{host}" if has_password else authority
        shown += "//" + authority
    shown += found["path"]
    if query is not None:
        shown += "?" + _masked_parameters(query)
    if fragment is not None:
        shown += "#" + _masked_parameters(fragment)
    return shown


def _masked_parameters(text: str) -> str:
    """``name=value`` pairs with the values of credential-bearing names masked; the rest kept
    byte for byte."""
    pieces = re.split(r"([&;])", text)
    for i, piece in enumerate(pieces):
        name, equals, _ = piece.partition("=")
        if equals and SECRET_PARAMETER.search(urllib.parse.unquote_plus(name)):
            pieces[i] = f"{name}={MASK}"
    return "".join(pieces)


def _shown(value: Any) -> tuple[str, bool]:
    """(the value as text with URL secrets masked, whether anything was masked)."""
    if value is None:
        return "", False
    if isinstance(value, str):
        masked = mask_url(value)
        return masked, masked != value
    if isinstance(value, Path):
        return str(value), False
    if isinstance(value, bool):
        return "true" if value else "false", False
    if isinstance(value, tuple | list):
        items = [_shown(v) for v in value]
        return ", ".join(text for text, _ in items), any(m for _, m in items)
    if isinstance(value, Mapping):
        pairs = [(str(k), _shown(v)) for k, v in value.items()]
        return ", ".join(f"{k}={t}" for k, (t, _) in pairs), any(m for _, (_, m) in pairs)
    return str(value), False


def settings_report(settings: Settings) -> list[SettingRow]:
    """Every setting read from the environment, in declaration order; secrets masked."""
    declared = declarations()
    rows = []
    for f in dataclasses.fields(Settings):
        declaration = declared.get(f.name)
        if declaration is None:
            continue
        value = getattr(settings, f.name)
        secret = (
            SECRET_NAME.search(f.name) is not None
            and not f.name.endswith("_endpoint")  # where to ask for tokens: not a secret
            and not isinstance(value, NOT_SECRET_TYPES)
        )
        if secret:
            text, masked = (MASK, True) if value not in (None, "") else ("", False)
        else:
            text, masked = _shown(value)
        rows.append(SettingRow(f.name, declaration.env, text, masked, declaration.doc))
    return rows


async def table_counts(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    """The project's tables with their row counts: exact, or estimated for very large ones."""
    tables = await conn.fetch(
        """SELECT c.relname AS name, c.reltuples::bigint AS estimate
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE c.relkind = 'r' AND n.nspname = current_schema()
           ORDER BY c.relname"""
    )
    counted = []
    for table in tables:
        name, estimate = table["name"], table["estimate"]
        if estimate > EXACT_COUNT_LIMIT:
            counted.append({"table": name, "rows": estimate, "estimated": True})
            continue
        quoted = '"' + name.replace('"', '""') + '"'
        rows = await conn.fetchval(f"SELECT count(*) FROM {quoted}")
        counted.append({"table": name, "rows": rows, "estimated": False})
    return counted


async def applied_migrations(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return []
    rows = await conn.fetch("SELECT version, name, applied_at FROM schema_migrations ORDER BY 1")
    return [dict(r) for r in rows]


async def postgres_version(conn: asyncpg.Connection) -> str:
    return str(await conn.fetchval("SHOW server_version"))


async def redis_version(client: Any) -> str:
    """The version a Redis client's server reports, or why it could not be had."""
    try:
        info = await client.info("server")
    except Exception as exc:  # shown on the page, not raised: the page is for diagnosing
        return f"unavailable ({exc.__class__.__name__})"
    return str(info.get("redis_version", "unknown"))


def software_versions(version_info: Mapping[str, Any]) -> dict[str, str]:
    """This server's version (its version.json, or the package's) and its runtime's."""
    commit = str(version_info.get("commit") or "")
    shown = str(version_info.get("version") or __version__)
    return {
        "Symbolon": shown + (f" ({commit[:12]})" if commit else ""),
        "Tornado": tornado.version,
        "Python": platform.python_version(),
    }
