"""Settings of sign-in, sessions and the blocked-user check."""

from __future__ import annotations

from tests.environment import REAL, load, problems

PROVIDER = {
    "OIDC_RP_CLIENT_ID": "symbolon",
    "OIDC_RP_CLIENT_SECRET": "s3cret",
    "OIDC_OP_AUTHORIZATION_ENDPOINT": "https://sso.example.com/authorize",
    "OIDC_OP_TOKEN_ENDPOINT": "https://sso.example.com/oauth/token",
    "OIDC_OP_USER_ENDPOINT": "https://sso.example.com/userinfo",
}


def test_account_defaults():
    s = load(REAL)
    assert s.oidc_rp_client_id is None  # sign-in off until configured
    assert (s.oidc_rp_sign_algo, s.oidc_rp_scopes, s.oidc_verify_ssl) == (
        "HS256",
        "openid email",
        True,
    )
    assert s.session_cookie_age == 31_536_000 and s.session_cookie_secure is True
    assert s.enable_auth0_blocked_check is False
    assert s.not_blocked_in_auth0_interval_seconds == 86400


def test_local_development_drops_the_secure_cookie_flag_unless_told_otherwise():
    assert load({**REAL, "LOCAL_DEV_ENV": "true"}).session_cookie_secure is False
    both = {**REAL, "LOCAL_DEV_ENV": "true", "SESSION_COOKIE_SECURE": "true"}
    assert load(both).session_cookie_secure is True


def test_provider_by_endpoints_or_by_issuer_with_legacy_names():
    s = load({**REAL, **{f"DJANGO_{k}": v for k, v in PROVIDER.items()}})
    assert s.oidc_op_token_endpoint == "https://sso.example.com/oauth/token"
    s = load(
        {
            **REAL,
            "OIDC_RP_CLIENT_ID": "c",
            "OIDC_RP_CLIENT_SECRET": "s",
            "OIDC_OP_ISSUER": "https://accounts.example.com",
            "OIDC_RP_SIGN_ALGO": "rs256",
            "DJANGO_NOT_BLOCKED_IN_AUTH0_INTERVAL_SECONDS": "60",
        }
    )
    assert s.oidc_rp_sign_algo == "RS256" and s.not_blocked_in_auth0_interval_seconds == 60


def test_incomplete_or_unsafe_provider_settings_stop_start_up():
    no_endpoints = {**REAL, "OIDC_RP_CLIENT_ID": "c", "OIDC_RP_CLIENT_SECRET": "s"}
    (problem,) = problems(no_endpoints)
    assert "OIDC_OP_ISSUER" in problem and "OIDC_OP_TOKEN_ENDPOINT" in problem
    no_secret = {**REAL, **PROVIDER, "OIDC_RP_CLIENT_SECRET": ""}
    assert any(p.startswith("OIDC_RP_CLIENT_SECRET") for p in problems(no_secret))
    rs256_without_keys = {**REAL, **PROVIDER, "OIDC_RP_SIGN_ALGO": "RS256"}
    assert any("OIDC_OP_JWKS_ENDPOINT" in p for p in problems(rs256_without_keys))
    unsigned = {**REAL, **PROVIDER, "OIDC_RP_SIGN_ALGO": "none"}
    assert any(p.startswith("OIDC_RP_SIGN_ALGO='none'") for p in problems(unsigned))
    plain_http = {**REAL, **PROVIDER, "OIDC_OP_TOKEN_ENDPOINT": "http://sso.example.com/token"}
    assert any(
        p.startswith("OIDC_OP_TOKEN_ENDPOINT") and "https" in p for p in problems(plain_http)
    )
    # Plain http is fine on loopback, or in local development.
    loopback = {**plain_http, "OIDC_OP_TOKEN_ENDPOINT": "http://127.0.0.1:9000/token"}
    assert load(loopback).oidc_op_token_endpoint == "http://127.0.0.1:9000/token"
    assert load({**plain_http, "LOCAL_DEV_ENV": "true"}).oidc_op_token_endpoint


def test_the_blocked_check_needs_the_provider():
    check = {**REAL, "ENABLE_AUTH0_BLOCKED_CHECK": "true"}
    assert any(p.startswith("ENABLE_AUTH0_BLOCKED_CHECK") for p in problems(check))
    assert load({**check, **PROVIDER}).enable_auth0_blocked_check is True
