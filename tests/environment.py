"""The configuration tests must not inherit from whoever runs them."""

from __future__ import annotations

# Prefixes of the settings' environment names: removed from the test process at start-up
# (conftest.py) and from the environments commands run with (cli.py).
OPERATOR_CONFIGURATION = (
    *("DATABASE_URL", "REDIS_", "SYMBOL", "UPLOAD_", "DJANGO_", "ELIOT_"),
    *("CRASHMOVER_", "BREAKPAD_", "COLLECTOR_", "ENABLE_CRASH_COLLECTOR"),
    *("OIDC_", "SESSION_COOKIE_", "ENABLE_AUTH0_", "NOT_BLOCKED_IN_AUTH0_", "LOCAL_DEV_ENV"),
)
