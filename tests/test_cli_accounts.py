"""The account commands: user list/activate/deactivate/groups, token revoke --user."""

from __future__ import annotations

import pytest

from tests.cli import env_for, invoke
from tests.conftest import unique_email
from tests.database import query


@pytest.fixture
def env(live_settings):
    return env_for(live_settings)


def ok(*args, env):
    result = invoke(*args, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_user_groups_set_show_and_clear(env, live_settings):
    email = unique_email("grouped")
    ok("token", "create", email, env=env)  # makes the user
    assert f"{email} groups: (none)" in ok("user", "groups", email, env=env)
    out = ok("user", "groups", email, "Uploaders", "upload auditors", env=env)
    assert f"{email} groups now: Uploaders, Upload Auditors" in out
    listing = ok("user", "list", env=env)
    (line,) = [line for line in listing.splitlines() if line.startswith(email)]
    assert line.split("\t")[1:4] == ["active", "no", "Uploaders,Upload Auditors"]
    assert f"{email} groups now: (none)" in ok("user", "groups", email, "--clear", env=env)

    unknown = invoke("user", "groups", email, "Admins", env=env)
    assert unknown.returncode != 0
    assert "unknown group 'Admins' (known: Upload Auditors, Uploaders)" in unknown.stderr
    actions = query(
        live_settings,
        """SELECT a.actor, a.action FROM audit_log a JOIN users u ON u.id = a.user_id
           WHERE lower(u.email) = lower($1) ORDER BY a.id""",
        email,
    )
    assert [tuple(r) for r in actions] == [("command line", "groups")] * 2


def test_user_deactivate_and_activate(env, live_settings):
    email = unique_email("leaver")
    ok("token", "create", email, env=env)
    out = ok("user", "deactivate", email, env=env)
    assert f"{email} is now inactive" in out
    assert f"{email} was already inactive" in ok("user", "deactivate", email, env=env)
    (row,) = query(live_settings, "SELECT * FROM users WHERE lower(email) = lower($1)", email)
    assert (row["is_active"], row["inactive_reason"]) == (False, "admin")
    listing = ok("user", "list", env=env)
    assert any(
        line.startswith(email) and "INACTIVE (admin)" in line for line in listing.splitlines()
    )
    assert f"{email} is now active" in ok("user", "activate", email, env=env)
    missing = invoke("user", "activate", unique_email("nobody"), env=env)
    assert missing.returncode != 0 and "no user" in missing.stderr


def test_token_revoke_every_token_of_a_user(env, live_settings):
    email = unique_email("many")
    ok("token", "create", email, env=env)
    ok("token", "create", email, env=env)
    other = unique_email("kept")
    ok("token", "create", other, env=env)
    out = ok("token", "revoke", "--user", email, env=env)
    assert f"2 token(s) of {email} revoked" in out
    count = query(
        live_settings,
        """SELECT count(*) FROM tokens t JOIN users u ON u.id = t.user_id
           WHERE lower(u.email) = lower($1)""",
        email,
    )
    assert count[0][0] == 0
    assert ok("token", "list", other, env=env).count(other) == 1

    both = invoke("token", "revoke", "1", "--user", email, env=env)
    assert both.returncode != 0 and "not both" in both.stderr
    neither = invoke("token", "revoke", env=env)
    assert neither.returncode != 0
