import json
import subprocess

import pytest

from symbolon import health
from symbolon.runtime import Runtime
from symbolon.server.app import make_app
from tests.conftest import repo_root, s3_endpoint, served

# Long enough for a loaded machine: the heartbeat answers once its checks have.
HEARTBEAT_WITHIN = 120


async def fetch(http_client, base_url, path, method="GET"):
    return await http_client.fetch(
        base_url + path, method=method, raise_error=False, allow_nonstandard_methods=True
    )


@pytest.mark.gen_test
async def test_lbheartbeat_is_an_empty_200(http_client, base_url):
    response = await fetch(http_client, base_url, "/__lbheartbeat__")
    assert response.code == 200
    assert response.body == b""
    assert response.headers["Content-Type"] == "application/json; charset=utf-8"


@pytest.mark.gen_test
async def test_heartbeat_lists_every_check(http_client, base_url):
    response = await fetch(http_client, base_url, "/__heartbeat__")
    body = json.loads(response.body)
    assert response.code == 200, body
    assert body["status"] == "ok"
    assert body["checks"] == {
        "check_database_connected": "ok",
        "check_migrations_applied": "ok",
        "check_redis_connected": "ok",
        "check_redis_store_connected": "ok",
        "check_storage_urls": "ok",
        "check_crash_storage": "ok",
    }
    assert body["details"] == {}


@pytest.fixture
def missing_bucket_settings(live_settings):
    url = f"{s3_endpoint(live_settings)}/no-such-bucket"
    return live_settings.replace(symbol_urls=(url,), upload_default_url=url)


@pytest.mark.gen_test(timeout=2 * HEARTBEAT_WITHIN)
async def test_heartbeat_is_500_naming_a_missing_bucket(missing_bucket_settings):
    body, code = await heartbeat_of(missing_bucket_settings)
    assert code == 500
    assert body["status"] == "error"
    assert body["checks"]["check_storage_urls"] == "error"
    assert body["checks"]["check_database_connected"] == "ok"
    detail = body["details"]["check_storage_urls"]
    assert detail["level"] == 40
    url = missing_bucket_settings.symbol_urls[0]
    assert detail["messages"]["symbolon.health.E001"] == (
        f"Unable to connect to {url} (bucket='no-such-bucket'), because bucket not found"
    )


async def heartbeat_of(settings, **create):
    """Serve the app for these settings on a port of its own and ask it for its heartbeat."""
    async with served(settings, **create) as (client, base):
        response = await client.fetch(
            f"{base}/__heartbeat__", raise_error=False, request_timeout=HEARTBEAT_WITHIN
        )
    return json.loads(response.body), response.code


@pytest.mark.gen_test(timeout=2 * HEARTBEAT_WITHIN)
async def test_heartbeat_is_500_when_the_store_redis_is_unreachable(
    live_settings, tmp_path, monkeypatch
):
    # The store's socket does not exist, so its PING fails at once, whatever the load. The
    # services that are up get all the time they need, so that a loaded machine's slow answer
    # (a timed-out PING or check) is not mistaken for them being down.
    monkeypatch.setattr(health, "CHECK_TIMEOUT_SECONDS", HEARTBEAT_WITHIN / 2)
    dead = live_settings.replace(
        redis_store_url=f"unix://{tmp_path}/nobody.sock",
        redis_socket_connect_timeout=HEARTBEAT_WITHIN / 2,
        redis_socket_timeout=HEARTBEAT_WITHIN / 2,
    )
    body, code = await heartbeat_of(dead)
    assert code == 500
    assert body["checks"]["check_redis_store_connected"] == "error"
    assert body["checks"]["check_redis_connected"] == "ok"
    assert "symbolon.health.E021" in body["details"]["check_redis_store_connected"]["messages"]


@pytest.mark.gen_test(timeout=2 * HEARTBEAT_WITHIN)
async def test_unapplied_migrations_are_a_warning_not_an_error(live_settings, fresh_database):
    body, code = await heartbeat_of(
        live_settings.replace(database_url=fresh_database), apply_migrations=False
    )
    assert code == 200
    assert body["status"] == "warning"
    assert body["checks"]["check_migrations_applied"] == "warning"
    assert (
        "0001_initial"
        in body["details"]["check_migrations_applied"]["messages"]["symbolon.health.W001"]
    )


@pytest.fixture
def git_head() -> str:
    return subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo_root(), capture_output=True, text=True
    ).stdout.strip()


@pytest.mark.gen_test
async def test_version_without_version_json_is_built_from_package_and_git(settings, git_head):
    import symbolon

    runtime = await Runtime.create(settings.replace(base_dir=repo_root()))
    try:
        version = make_app(runtime).settings["version_info"]
    finally:
        await runtime.close()
    assert version["version"] == symbolon.__version__
    assert version["commit"] == git_head
    assert set(version) == {"source", "version", "commit", "build"}


@pytest.fixture
def versioned_settings(live_settings, tmp_path):
    (tmp_path / "version.json").write_text(
        json.dumps({"source": "s", "version": "1.2.3", "commit": "abc", "build": "b"})
    )
    return live_settings.replace(base_dir=tmp_path)


@pytest.mark.gen_test
async def test_version_echoes_version_json(versioned_settings):
    runtime = await Runtime.create(versioned_settings)
    try:
        assert make_app(runtime).settings["version_info"] == {
            "source": "s",
            "version": "1.2.3",
            "commit": "abc",
            "build": "b",
        }
    finally:
        await runtime.close()


@pytest.mark.gen_test
async def test_version_endpoint_answers_json(http_client, base_url):
    response = await fetch(http_client, base_url, "/__version__")
    assert response.code == 200
    assert set(json.loads(response.body)) == {"source", "version", "commit", "build"}


@pytest.mark.gen_test
async def test_broken_answers_500_json(http_client, base_url):
    response = await fetch(http_client, base_url, "/__broken__")
    assert response.code == 500
    assert json.loads(response.body) == {"error": "Internal Server Error"}


@pytest.mark.gen_test
async def test_wrong_method_is_405_with_allow(http_client, base_url):
    response = await fetch(http_client, base_url, "/__heartbeat__", method="POST")
    assert response.code == 405
    assert response.headers["Allow"] == "GET"
    assert json.loads(response.body) == {"error": "Method Not Allowed (POST): /__heartbeat__"}


@pytest.mark.gen_test
async def test_unknown_path_is_a_json_404(http_client, base_url):
    response = await fetch(http_client, base_url, "/no/such/thing")
    assert response.code == 404
    assert json.loads(response.body) == {"error": "Not Found", "path": "/no/such/thing"}
