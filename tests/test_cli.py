import hashlib
import re
import subprocess
import sys
from importlib.metadata import entry_points

import pytest

from tests.cli import env_for, invoke, symbolon
from tests.conftest import unique_email
from tests.database import query

KEY = re.compile(r"^[0-9a-f]{32}$")


@pytest.fixture
def env(live_settings):
    return env_for(live_settings)


def test_superuser_creates_the_user_then_reports_it_already_is(env, live_settings):
    email = unique_email("boss")
    first = invoke("superuser", email, env=env)
    assert first.returncode == 0, first.stderr
    assert f"created user {email}" in first.stdout
    assert f"{email} is now a superuser" in first.stdout
    again = invoke("superuser", email.upper(), env=env)
    assert again.returncode == 0
    assert "already a superuser" in again.stdout
    rows = query(live_settings, "SELECT * FROM users WHERE lower(email) = lower($1)", email)
    assert len(rows) == 1
    assert rows[0]["is_superuser"] and rows[0]["is_staff"] and rows[0]["is_active"]


@pytest.mark.parametrize("bad", ["no-at-sign", "two@@example.com", "has space@example.com"])
def test_superuser_refuses_what_is_not_an_email(env, bad):
    result = invoke("superuser", bad, env=env)
    assert result.returncode != 0
    assert "is not an e-mail address" in result.stderr


def test_token_create_prints_the_secret_last_and_stores_only_its_hash(env, live_settings):
    email = unique_email("admin")
    assert invoke("superuser", email, env=env).returncode == 0
    result = invoke(
        "token", "create", email,
        "--permission", "upload_symbols",
        "--permission", "upload.view_all_uploads",
        "--expires-days", "10",
        "--notes", "CI uploads",
        env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    key = lines[-1]
    assert KEY.match(key)
    assert sum(key in line for line in lines) == 1  # shown once, as the last line
    rows = query(
        live_settings,
        """SELECT t.*, array_agg(p.codename ORDER BY p.codename) AS perms FROM tokens t
           JOIN users u ON u.id = t.user_id
           JOIN token_permissions tp ON tp.token_id = t.id
           JOIN permissions p ON p.id = tp.permission_id
           WHERE u.email = $1 GROUP BY t.id""",
        email,
    )
    assert len(rows) == 1
    row = rows[0]
    assert row["key_hash"] == hashlib.sha256(key.encode()).hexdigest()
    assert key not in {str(v) for v in row.values()}
    assert row["perms"] == ["upload.upload_symbols", "upload.view_all_uploads"]
    assert row["notes"] == "CI uploads"
    lifetime = row["expires_at"] - row["created_at"]
    assert 9.9 < lifetime.total_seconds() / 86400 < 10.1


def test_token_create_makes_the_user_but_refuses_permissions_they_lack(env, live_settings):
    email = unique_email("newbie")
    result = invoke("token", "create", email, "--permission", "upload_symbols", env=env)
    assert result.returncode != 0
    assert f"{email} does not hold upload.upload_symbols" in result.stderr
    assert not KEY.search(result.stdout)
    # Refused as a whole: neither the user nor a token was left behind.
    assert query(live_settings, "SELECT 1 FROM users WHERE email = $1", email) == []
    plain = invoke("token", "create", email, env=env)
    assert plain.returncode == 0, plain.stderr
    assert f"created user {email}" in plain.stdout
    assert KEY.match(plain.stdout.strip().splitlines()[-1])


def test_group_membership_grants_token_permissions(env, live_settings):
    email = unique_email("uploader")
    assert invoke("token", "create", email, env=env).returncode == 0
    query(
        live_settings,
        """INSERT INTO user_groups (user_id, group_id)
           SELECT u.id, g.id FROM users u, groups g WHERE u.email = $1 AND g.name = 'Uploaders'""",
        email,
    )
    ok = invoke("token", "create", email, "--permission", "upload_try_symbols", env=env)
    assert ok.returncode == 0, ok.stderr
    refused = invoke("token", "create", email, "--permission", "view_all_uploads", env=env)
    assert refused.returncode != 0
    assert "does not hold upload.view_all_uploads" in refused.stderr


def test_token_create_refuses_unknown_and_conflicting_permissions(env):
    email = unique_email("admin")
    invoke("superuser", email, env=env)
    unknown = invoke("token", "create", email, "--permission", "fly", env=env)
    assert unknown.returncode != 0 and "unknown permission 'fly'" in unknown.stderr
    both = invoke(
        "token", "create", email,
        "--permission", "upload_symbols", "--permission", "upload_try_symbols",
        env=env,
    )  # fmt: skip
    assert both.returncode != 0 and "may not carry both" in both.stderr


def test_token_list_shows_prefixes_never_secrets_and_revoke_by_id_or_key(env):
    email = unique_email("lister")
    invoke("superuser", email, env=env)
    keys = []
    for note in ("first", "second"):
        made = invoke("token", "create", email, "--notes", note, env=env)
        keys.append(made.stdout.strip().splitlines()[-1])
    listed = invoke("token", "list", email, env=env)
    assert listed.returncode == 0
    lines = listed.stdout.strip().splitlines()
    assert len(lines) == 2
    for key, line in zip(keys, lines, strict=True):
        assert key not in line
        assert f"{key[:8]}…" in line
    first_id = lines[0].split("\t")[0]

    by_id = invoke("token", "revoke", first_id, env=env)
    assert by_id.returncode == 0 and f"revoked token {first_id}" in by_id.stdout
    by_key = invoke("token", "revoke", f"{keys[1]}-ci-label", env=env)
    assert by_key.returncode == 0, by_key.stderr
    assert invoke("token", "list", email, env=env).stdout.strip() == "no tokens"
    again = invoke("token", "revoke", keys[1], env=env)
    assert again.returncode != 0 and "no token matches" in again.stderr


def test_the_entry_point_lists_the_commands():
    result = subprocess.run(
        [sys.executable, "-m", "symbolon.admin_cli.main", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    assert "Usage: symbolon" in result.stdout
    for command in ("serve", "worker", "migrate", "superuser", "token", "user", "crashes"):
        assert f"  {command} " in result.stdout


def test_the_installed_command_imports_no_server_until_it_runs():
    """A process started with multiprocessing's spawn (parse processes, crash walkers) imports
    its parent's main module again: for ``symbolon serve``, the installed script, which imports
    the entry point's module. Nothing of the server may come with it."""
    (point,) = entry_points(group="console_scripts", name="symbolon")
    assert point.attr == "main"
    heavy = ("tornado", "click", "asyncpg", "symbolon.server", "symbolon.admin_cli.commands")
    code = f"import sys, {point.module}; print([m for m in sys.modules if m.startswith({heavy})])"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"


def test_migrate_reports_an_up_to_date_database(env):
    # A real process, as an operator runs it: the other tests run the commands in this one.
    result = symbolon("migrate", env=env)
    assert result.returncode == 0, result.stderr
    assert "the database is up to date" in result.stdout


def test_bad_configuration_stops_the_command_with_the_variable_named(env):
    result = invoke("migrate", env={**env, "PORT": "lots"})
    assert result.returncode != 0
    assert "PORT='lots'" in result.stderr
