"""Settings: environment variables (optionally from ``.env``) parsed once into a typed object.

Names follow the original services' without the ``DJANGO_``/``ELIOT_`` prefixes; the prefixed
spellings are accepted too, so an old deployment's environment keeps working. A bad value stops
start-up with a message that names the variable and says what was expected. Each setting is
declared once, in ``symbolon.conf.settings``; this package imports nothing else of the project,
so every module may read settings. Problems only the domain can see (storage locations,
throttling rules) are added by ``symbolon.runtime.check_settings``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dotenv import dotenv_values

from symbolon.conf.settings import Declaration, Settings, declarations

__all__ = ["LEGACY_PREFIXES", "Settings", "SettingsError", "load_settings", "read_settings"]

LEGACY_PREFIXES = ("DJANGO_", "ELIOT_")


class SettingsError(Exception):
    """One or more environment variables have values we cannot use."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))


def _lookup(environ: Mapping[str, str], declaration: Declaration) -> tuple[str, str] | None:
    """The name that was used and its value: the plain name first, then the legacy spellings."""
    name = declaration.env
    for candidate in (name, *(p + name for p in LEGACY_PREFIXES), *declaration.aliases):
        value = environ.get(candidate)
        if value is not None and value.strip() != "":
            return candidate, value.strip()
    return None


def read_settings(
    environ: Mapping[str, str] | None = None, dotenv_path: str | Path | None = ".env"
) -> tuple[Settings, list[str]]:
    """Settings from the environment (plus ``.env`` for names the environment lacks), and every
    problem found; a value that could not be used is left at its default."""
    env: dict[str, str] = {}
    if dotenv_path is not None and Path(dotenv_path).is_file():
        env.update({k: v for k, v in dotenv_values(dotenv_path).items() if v is not None})
    env.update(os.environ if environ is None else environ)
    problems: list[str] = []
    values: dict[str, Any] = {}
    derived: dict[str, Declaration] = {}
    for name, declaration in declarations().items():
        found = _lookup(env, declaration)
        if found is None:
            if declaration.derive is not None:
                derived[name] = declaration
            continue
        used, value = found
        try:
            values[name] = declaration.parse.parse(value)
        except (ValueError, SyntaxError, TypeError) as exc:
            detail = f" ({exc})" if str(exc) else ""
            problems.append(f"{used}={value!r}: expected {declaration.parse.expected}{detail}")
    settings = Settings(**values)
    if derived:
        settings = settings.replace(
            **{name: d.derive(vars(settings)) for name, d in derived.items() if d.derive}
        )
    _check_combinations(settings, problems)
    _check_crash_settings(settings, problems)
    return settings, problems


def load_settings(
    environ: Mapping[str, str] | None = None, dotenv_path: str | Path | None = ".env"
) -> Settings:
    """``read_settings``, raising SettingsError with every problem when there is one."""
    settings, problems = read_settings(environ, dotenv_path)
    if problems:
        raise SettingsError(problems)
    return settings


def _check_combinations(s: Settings, problems: list[str]) -> None:
    if (s.redis_url is None) != (s.redis_store_url is None):
        problems.append(
            "REDIS_URL and REDIS_STORE_URL: set both (two separate Redis servers; the store "
            "needs maxmemory-policy allkeys-lru) or neither (embedded Redis)"
        )
    if not s.symbol_urls and (s.upload_default_url or s.upload_try_symbols_url):
        problems.append(
            "UPLOAD_DEFAULT_URL/UPLOAD_TRY_SYMBOLS_URL are set but SYMBOL_URLS is not: "
            "set SYMBOL_URLS too, or unset them to use the embedded S3 server"
        )
    if s.symbol_urls and not s.upload_default_url:
        problems.append("UPLOAD_DEFAULT_URL: required when SYMBOL_URLS is set")
    _check_oidc(s, problems)
    # With the embedded database this is a development setup: a key is generated and kept in
    # the data dir. A real database means a real deployment, which must set its own.
    if s.secret_key is None and not s.embedded_postgres and not s.local_dev_env:
        problems.append(
            "SECRET_KEY: required when DATABASE_URL is set "
            '(generate one with: python -c "import secrets; print(secrets.token_hex(32))")'
        )


def _check_crash_settings(s: Settings, problems: list[str]) -> None:
    if not s.enable_crash_collector:
        return
    if s.crash_storage == "s3" and not s.crash_bucket_name and not s.embedded_storage:
        problems.append(
            "CRASHMOVER_CRASHSTORAGE_BUCKET_NAME: required for crash storage in S3 when "
            "SYMBOL_URLS is set (or set CRASHMOVER_CRASHSTORAGE_CLASS=fs, or "
            "ENABLE_CRASH_COLLECTOR=false)"
        )


def _check_oidc(s: Settings, problems: list[str]) -> None:
    if s.enable_auth0_blocked_check and not (
        s.oidc_op_user_endpoint and s.oidc_rp_client_id and s.oidc_rp_client_secret
    ):
        problems.append(
            "ENABLE_AUTH0_BLOCKED_CHECK=true needs OIDC_OP_USER_ENDPOINT (its host is the Auth0 "
            "domain), OIDC_RP_CLIENT_ID and OIDC_RP_CLIENT_SECRET"
        )
    if not s.oidc_rp_client_id:
        return  # sign-in is off; tokens made on the command line still work
    endpoints = {
        "OIDC_OP_AUTHORIZATION_ENDPOINT": s.oidc_op_authorization_endpoint,
        "OIDC_OP_TOKEN_ENDPOINT": s.oidc_op_token_endpoint,
        "OIDC_OP_USER_ENDPOINT": s.oidc_op_user_endpoint,
    }
    if not s.oidc_op_issuer and not all(endpoints.values()):
        missing = ", ".join(name for name, value in endpoints.items() if not value)
        problems.append(
            f"OIDC_RP_CLIENT_ID is set, so sign-in needs its provider: set OIDC_OP_ISSUER "
            f"(endpoints are discovered) or {missing}"
        )
    if not s.oidc_rp_client_secret:
        problems.append("OIDC_RP_CLIENT_SECRET: required when OIDC_RP_CLIENT_ID is set")
    asymmetric = not s.oidc_rp_sign_algo.startswith("HS")
    if asymmetric and not (s.oidc_op_jwks_endpoint or s.oidc_op_issuer):
        problems.append(
            f"OIDC_RP_SIGN_ALGO={s.oidc_rp_sign_algo} needs the provider's keys: set "
            "OIDC_OP_JWKS_ENDPOINT or OIDC_OP_ISSUER"
        )
    if not s.local_dev_env:
        named = {"OIDC_OP_ISSUER": s.oidc_op_issuer, **endpoints}
        named["OIDC_OP_JWKS_ENDPOINT"] = s.oidc_op_jwks_endpoint
        for name, value in named.items():
            if value and not _secure_or_loopback(value):
                problems.append(
                    f"{name}={value!r}: the provider must be reached over https "
                    "(plain http only on 127.0.0.1/localhost, or with LOCAL_DEV_ENV=true)"
                )


def _secure_or_loopback(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme == "https" or parts.hostname in ("127.0.0.1", "::1", "localhost")
