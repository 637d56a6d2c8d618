"""Environments the tests configure Symbolon with, and what they must not inherit from
whoever runs them."""

from __future__ import annotations

import pytest

from symbolon.conf import SettingsError, load_settings
from symbolon.runtime import load_checked_settings
from symbolon.storage.sources import StorageConfig

# Prefixes of the settings' environment names: removed from the test process at start-up
# (conftest.py) and from the environments commands run with (cli.py).
OPERATOR_CONFIGURATION = (
    *("DATABASE_URL", "REDIS_", "SYMBOL", "UPLOAD_", "DJANGO_", "ELIOT_"),
    *("CRASHMOVER_", "BREAKPAD_", "COLLECTOR_", "ENABLE_CRASH_COLLECTOR"),
    *("OIDC_", "SESSION_COOKIE_", "ENABLE_AUTH0_", "NOT_BLOCKED_IN_AUTH0_", "LOCAL_DEV_ENV"),
)

# A production-like environment: real services by URL, nothing embedded.
REAL = {
    "DATABASE_URL": "postgresql://u:p@db/symbolon",
    "REDIS_URL": "redis://cache:6379/0",
    "REDIS_STORE_URL": "redis://store:6379/0",
    "SYMBOL_URLS": "https://s3-us-west-2.amazonaws.com/pub/?access=public,https://minio:9000/priv",
    "UPLOAD_DEFAULT_URL": "https://minio:9000/priv",
    "SECRET_KEY": "x" * 32,
    "CRASHMOVER_CRASHSTORAGE_BUCKET_NAME": "crashes",
}


def load(env: dict[str, str]):
    """As every command loads them: the values, then what storage and throttling make of them."""
    return load_checked_settings(env, dotenv_path=None)


def problems(env: dict[str, str]) -> list[str]:
    with pytest.raises(SettingsError) as info:
        load(env)
    return info.value.problems


def storage(**env):
    base = {
        "SYMBOL_URLS": "http://minio:9000/public?access=public,http://minio:9000/private",
        "UPLOAD_DEFAULT_URL": "http://minio:9000/private",
        # Symbol storage only: the crash collector would want a bucket of its own.
        "ENABLE_CRASH_COLLECTOR": "false",
    }
    return StorageConfig.from_settings(load_settings({**base, **env}, dotenv_path=None))
