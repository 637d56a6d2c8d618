"""The status page (docs/web.md, "Status"): superusers only; every setting with its secrets
masked, table row counts, migrations, versions and the health checks."""

from __future__ import annotations

import pytest
import tornado

from symbolon.conf.settings import declarations
from symbolon.status import MASK, mask_url, settings_report
from tests.accounts import Caller, make_user, token_of
from tests.conftest import served
from tests.web_pages import fetch_page


def test_secrets_and_passwords_in_urls_are_masked(live_settings):
    settings = live_settings.replace(
        secret_key="the-secret-key",
        oidc_rp_client_secret="client-secret",
        oidc_op_token_endpoint="https://id.example/token",
        breakpad_stage_submitter_bearer_token="bearer-token",
        sentry_dsn="https://public@sentry.example/1",
        crash_secret_access_key="crash-secret",
        aws_secret_access_key="aws-secret",
        tokens_default_expiration_days=30,
        upload_url_exceptions={"*@partner.example": "s3://user:pw@bucket/x?X-Amz-Signature=sig"},
    )
    rows = {row.name: row for row in settings_report(settings)}
    assert set(rows) == set(declarations())  # every setting
    for name in ("secret_key", "oidc_rp_client_secret", "breakpad_stage_submitter_bearer_token",
                 "sentry_dsn", "crash_secret_access_key", "aws_secret_access_key"):  # fmt: skip
        assert rows[name].value == MASK and rows[name].masked, name
    assert rows["tokens_default_expiration_days"].value == "30"
    assert rows["oidc_op_token_endpoint"].value == "https://id.example/token"
    exceptions = rows["upload_url_exceptions"]
    assert exceptions.masked and "pw" not in exceptions.value and "sig" not in exceptions.value
    assert mask_url("postgresql://symbolon:hunter2@db:5432/x?sslmode=require") == (
        f"postgresql://symbolon:{MASK}@db:5432/x?sslmode=require"
    )
    assert mask_url("redis://:pw@cache:6379/0") == f"redis://:{MASK}@cache:6379/0"
    assert mask_url("redis://cache:6379/0") == "redis://cache:6379/0"
    assert mask_url("https://h/p?token=abc&x=1") == f"https://h/p?token={MASK}&x=1"
    # Without a host part (a socket), the query's credentials are masked all the same, and
    # what is not a credential is kept as written.
    assert mask_url("postgresql:///db?host=/run/postgresql&password=hunter2") == (
        f"postgresql:///db?host=/run/postgresql&password={MASK}"
    )
    assert mask_url("unix:///run/redis.sock?db=0&password=pw") == (
        f"unix:///run/redis.sock?db=0&password={MASK}"
    )
    assert mask_url("postgresql://u:pw@/db?passwd=p&sslkey=k&apikey=a") == (
        f"postgresql://u:{MASK}@/db?passwd={MASK}&sslkey={MASK}&apikey={MASK}"
    )
    assert mask_url("https://h/cb#access_token=abc&state=1") == (
        f"https://h/cb#access_token={MASK}&state=1"
    )
    # What does not parse as a URL cannot be masked piece by piece: all of it is.
    assert mask_url("redis://:pw@[bad/0") == MASK
    assert mask_url(" redis://:pw@cache/0") == MASK
    assert mask_url("plain: text") == "plain: text"
    socket_url = live_settings.replace(
        upload_url_exceptions={"*@a.example": "unix:///s.sock?password=socket-pw"}
    )
    row = next(r for r in settings_report(socket_url) if r.name == "upload_url_exceptions")
    assert row.masked and "socket-pw" not in row.value
    assert rows["oidc_op_issuer"].value == (settings.oidc_op_issuer or "")


@pytest.mark.gen_test(timeout=60)
async def test_only_superusers_see_the_status(http_client, base_url, runtime):
    page = await fetch_page(http_client, base_url, Caller.anonymous(), "/status/")
    assert page.status == 302 and page.location == "/oidc/authenticate/?next=%2Fstatus%2F"
    for groups in ((), ("Uploaders",), ("Upload Auditors",)):
        caller = await Caller.with_session(runtime, await make_user(runtime, groups=groups))
        page = await fetch_page(http_client, base_url, caller, "/status/")
        assert page.status == 403 and "for superusers" in page.text
        assert "DATABASE_URL" not in page.text
    # A superuser's token works, as for the API's superuser views.
    boss = await make_user(runtime, superuser=True)
    token = Caller.with_token(await token_of(runtime, boss, ("upload.view_all_uploads",)))
    assert (await fetch_page(http_client, base_url, token, "/status/")).status == 200


@pytest.mark.gen_test(timeout=60)
async def test_the_status_of_this_server(settings):
    secret = "status-page-secret-key-value"
    # The embedded PostgreSQL trusts its socket: a password in the URL is sent and not needed.
    database = settings.database_url.replace("postgres:@", "postgres:db-password-value@", 1)
    assert "db-password-value" in database
    server = served(
        settings.replace(
            secret_key=secret,
            oidc_rp_client_secret="oidc-client-secret-value",
            database_url=database,
        )
    )
    async with server as (client, base):
        rt = server.runtime
        boss = await Caller.with_session(rt, await make_user(rt, superuser=True))
        page = await fetch_page(client, base, boss, "/status/")
        assert page.status == 200 and page.h1() == "Status"
        text = page.text
        for declaration in declarations().values():
            assert declaration.env in text, declaration.env
        assert secret not in page.body and "oidc-client-secret-value" not in page.body
        assert "db-password-value" not in page.body and f"postgres:{MASK}@" in text
        assert MASK in text
        # Health checks, as /__heartbeat__ runs them.
        assert "check_database_connected" in text and "Every check passed." in text
        # Tables and their counts, migrations, versions.
        users = await rt.db.fetchval("SELECT count(*) FROM users")
        row = page.body.split("<code>users</code></td>", 1)[1].split("</tr>", 1)[0]
        assert f"{users:,}" in row
        assert "0001_initial" in text and "0004_sessions_and_audit" in text
        postgres = await rt.db.fetchval("SHOW server_version")
        assert postgres in text and tornado.version in text
        redis = (await rt.cache.client.info("server"))["redis_version"]
        assert redis in text
        assert "/__heartbeat__" in text  # the curl equivalent
