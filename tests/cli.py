"""Run the real ``symbolon`` command line in a subprocess, as an operator would."""

from __future__ import annotations

import os
import subprocess
import sys

from symbolon.conf import Settings

# The operator's own configuration must not leak into the commands the tests run.
OPERATOR_CONFIGURATION = (
    *("DATABASE_URL", "REDIS_", "SYMBOL", "UPLOAD_", "DJANGO_", "ELIOT_", "CRASHMOVER_"),
    *("OIDC_", "SESSION_COOKIE_", "ENABLE_AUTH0_", "NOT_BLOCKED_IN_AUTH0_"),
)


def env_for(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(OPERATOR_CONFIGURATION)}
    env.update(
        DATABASE_URL=settings.database_url or "",
        REDIS_URL=settings.redis_url or "",
        REDIS_STORE_URL=settings.redis_store_url or "",
        SYMBOL_URLS=",".join(settings.symbol_urls),
        UPLOAD_DEFAULT_URL=settings.upload_default_url or "",
        AWS_ACCESS_KEY_ID=settings.aws_access_key_id or "",
        AWS_SECRET_ACCESS_KEY=settings.aws_secret_access_key or "",
        CRASHMOVER_CRASHSTORAGE_BUCKET_NAME=settings.crash_bucket_name or "",
        CRASHMOVER_CRASHSTORAGE_ENDPOINT_URL=settings.crash_endpoint_url or "",
        CRASHMOVER_CRASHSTORAGE_REGION=settings.crash_region,
        CRASHMOVER_CRASHSTORAGE_ACCESS_KEY=settings.crash_access_key or "",
        CRASHMOVER_CRASHSTORAGE_SECRET_ACCESS_KEY=settings.crash_secret_access_key or "",
        SECRET_KEY="test-secret",
        LOG_FORMAT="text",
    )
    env.update(extra)
    return env


def symbolon(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "symbolon.admin_cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
