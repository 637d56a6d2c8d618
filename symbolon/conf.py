"""Settings: environment variables (optionally from ``.env``) parsed once into a typed object.

Names follow the seed documents without the ``DJANGO_``/``ELIOT_`` prefixes; the prefixed
spellings are accepted too, so an old deployment's environment keeps working. A bad value stops
start-up with a message that names the variable and says what was expected.
"""

from __future__ import annotations

import ast
import dataclasses
import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from dotenv import dotenv_values

T = TypeVar("T")

LEGACY_PREFIXES = ("DJANGO_", "ELIOT_")
TRUE_WORDS = {"true", "yes", "1", "on"}
FALSE_WORDS = {"false", "no", "0", "off"}
LOG_LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}
# "none" is never accepted: an unsigned ID token proves nothing.
OIDC_SIGN_ALGORITHMS = {"HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "PS256"}


class SettingsError(Exception):
    """One or more environment variables have values we cannot use."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass(frozen=True)
class Settings:
    # Where and how to serve.
    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path(".data")
    base_dir: Path = Path(".")
    debug: bool = False
    local_dev_env: bool = False
    secret_key: str | None = None

    # Backing services. None means "start the embedded one".
    database_url: str | None = None
    database_pool_max: int = 10
    redis_url: str | None = None
    redis_store_url: str | None = None
    redis_ignore_exceptions: bool = True
    redis_socket_connect_timeout: float = 1.0
    redis_socket_timeout: float = 2.0

    # Symbol storage (spec/symbols.md §3).
    symbol_urls: tuple[str, ...] = ()
    upload_default_url: str | None = None
    upload_try_symbols_url: str | None = None
    upload_url_exceptions: Mapping[str, str] = field(default_factory=dict)
    symbol_file_prefix: str = "v1"
    s3_lookup_connect_timeout: float = 2.0
    s3_lookup_read_timeout: float = 4.0
    s3_put_connect_timeout: float = 10.0
    s3_put_read_timeout: float = 30.0
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    aws_default_region: str | None = None
    # Set when SYMBOL_URLS point at the embedded S3 server, the only one we create buckets in.
    storage_is_embedded: bool = False

    # Download (spec/symbols.md §4).
    download_file_extensions_allowed: tuple[str, ...] = (
        ".sym",
        ".dl_",
        ".ex_",
        ".pd_",
        ".dbg.gz",
        ".tar.bz2",
    )
    symboldownload_exists_ttl_seconds: int = 21600
    download_presigned_url_expiry_seconds: int = 3600
    download_local_cache_size: int = 100_000
    enable_store_missing_symbols: bool = True
    memoize_log_missing_symbols_seconds: int = 86400

    # Upload (spec/symbols.md §5).
    upload_max_size: int = 2 * 1024**3
    upload_tempdir: Path | None = None  # default: <data dir>/uploads
    upload_staging_url: str | None = None  # an S3 location, for workers on other machines
    try_symbols_expiry_days: int = 28
    upload_wait_seconds: float = 300.0
    upload_file_upload_max_workers: int = 8
    upload_max_members: int = 100_000
    upload_max_uncompressed_size: int = 20 * 1024**3
    upload_max_compression_ratio: float = 200.0
    disallowed_symbols_snippets: tuple[str, ...] = ("qcom/proprietary",)
    compress_extensions: tuple[str, ...] = ("sym",)
    mime_overrides: Mapping[str, str] = field(default_factory=lambda: {"sym": "text/plain"})
    allow_upload_by_download_domains: tuple[str, ...] = (
        "queue.taskcluster.net",
        "firefox-ci-tc.services.mozilla.com",
        "stage.taskcluster.nonprod.cloudops.mozgcp.net",
    )
    allow_upload_by_any_domain: bool = False
    upload_by_download_allowed_networks: tuple[str, ...] = ()

    # Accounts.
    tokens_default_expiration_days: int = 365
    # Browser sign-in with OpenID Connect (spec/symbols.md §8.6). Endpoints left unset are
    # discovered from the issuer when OIDC_OP_ISSUER is set.
    oidc_rp_client_id: str | None = None
    oidc_rp_client_secret: str | None = None
    oidc_op_issuer: str | None = None
    oidc_op_authorization_endpoint: str | None = None
    oidc_op_token_endpoint: str | None = None
    oidc_op_user_endpoint: str | None = None
    oidc_op_jwks_endpoint: str | None = None
    oidc_rp_sign_algo: str = "HS256"
    oidc_rp_scopes: str = "openid email"
    oidc_verify_ssl: bool = True
    oidc_timeout: float = 10.0
    session_cookie_age: int = 31_536_000
    session_cookie_secure: bool = True
    # The "blocked in Auth0" check (spec/symbols.md §8.5).
    enable_auth0_blocked_check: bool = False
    not_blocked_in_auth0_interval_seconds: int = 86400

    # Crash collector (spec/crashes.md). The bucket defaults to the embedded S3 server's.
    enable_crash_collector: bool = True
    crash_storage: str = "s3"  # or "fs"
    crash_bucket_name: str | None = None
    crash_region: str = "us-west-2"
    crash_endpoint_url: str | None = None
    crash_access_key: str | None = None
    crash_secret_access_key: str | None = None
    crash_fs_root: Path | None = None  # default: <data dir>/crashes
    crash_fs_fsync: bool = False
    # Set when the crash bucket is the embedded S3 server's, the only one we create.
    crash_storage_is_embedded: bool = False
    crashmover_max_attempts: int = 5
    crashmover_retry_sleep_seconds: float = 2.0
    crashmover_concurrent_crashmovers: int = 8
    crashpublish_queue_name: str = "socorro.standard"
    crashpublish_actor_name: str = "process_crash"
    crashpublish_retry_seconds: float = 30.0
    breakpad_stage_submitter_bearer_token: str | None = None
    breakpad_throttler_rules: str = "accept_all"
    breakpad_throttler_products: str = "all"
    breakpad_throttler_product_packagenames: str = "all"
    collector_max_body_size: int = 25 * 1024**2
    collector_max_decompressed_size: int = 8 * 25 * 1024**2
    collector_body_timeout: float = 70.0

    # Symbolication (spec/symbolication.md §8, §9, §11).
    symbolication_symbol_urls: tuple[str, ...] = ()  # upstream symbol servers, after our own
    symbolication_include_try_symbols: bool = True
    symbols_cache_dir: Path | None = None  # default: <data dir>/symcache
    symbols_cache_max_size: int = 1024**3
    symbolication_store_symcaches: bool = True
    symbolication_miss_ttl_seconds: int = 60
    symbolication_open_symcaches: int = 64
    # Per source: a sym file larger than this (as received) or slower than this is an error.
    symbolication_max_sym_size: int = 4 * 1024**3
    symbolication_fetch_deadline_seconds: float = 600.0
    symbolication_parse_workers: int = 0  # 0: one per core
    symbolication_parse_memory: int = 0  # bytes; 0: half of the machine's memory

    # Task queue: worker threads embedded in `serve` (0 disables them).
    worker_threads: int = 2
    # Web processes of `serve`, forked after binding one socket.
    web_processes: int = 1
    # The event loop of `serve`: uvloop, or the standard library's.
    event_loop: str = "uvloop"

    # Observability.
    logging_level: str = "INFO"
    log_format: str = "auto"
    statsd_host: str | None = None
    statsd_port: int = 8125
    statsd_namespace: str = ""
    sentry_dsn: str | None = None

    @property
    def embedded_postgres(self) -> bool:
        return self.database_url is None

    @property
    def embedded_redis(self) -> bool:
        return self.redis_url is None or self.redis_store_url is None

    @property
    def embedded_s3(self) -> bool:
        return not self.symbol_urls

    @property
    def fully_embedded(self) -> bool:
        return self.embedded_postgres and self.redis_url is None and self.embedded_s3

    @property
    def crash_dir(self) -> Path:
        return self.crash_fs_root or self.data_dir / "crashes"

    @property
    def staging_dir(self) -> Path:
        return self.upload_tempdir or self.data_dir / "uploads"

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


class _Reader:
    """Reads variables by name (or legacy alias), collecting every problem before failing."""

    def __init__(self, environ: Mapping[str, str]):
        self.environ = environ
        self.problems: list[str] = []

    def raw(self, name: str, aliases: tuple[str, ...] = ()) -> tuple[str, str] | None:
        names = (name, *(p + name for p in LEGACY_PREFIXES), *aliases)
        for candidate in names:
            value = self.environ.get(candidate)
            if value is not None and value.strip() != "":
                return candidate, value.strip()
        return None

    def get(
        self,
        name: str,
        default: T,
        parse: Callable[[str], Any] = str,
        expected: str = "",
        aliases: tuple[str, ...] = (),
    ) -> Any:
        found = self.raw(name, aliases)
        if found is None:
            return default
        used, value = found
        try:
            return parse(value)
        except (ValueError, SyntaxError, TypeError) as exc:
            detail = f" ({exc})" if str(exc) else ""
            self.problems.append(f"{used}={value!r}: expected {expected}{detail}")
            return default

    def text(self, name: str, default: str | None = None, **kw: Any) -> Any:
        return self.get(name, default, str, "text", **kw)

    def integer(self, name: str, default: int, minimum: int = 0, **kw: Any) -> int:
        return self.get(name, default, _bounded(int, minimum), f"a whole number >= {minimum}", **kw)

    def number(self, name: str, default: float, **kw: Any) -> float:
        return self.get(name, default, _bounded(float, 0.0), "a number of seconds > 0", **kw)

    def boolean(self, name: str, default: bool, **kw: Any) -> bool:
        return self.get(name, default, _parse_bool, "true or false", **kw)

    def url_list(self, name: str, **kw: Any) -> tuple[str, ...]:
        return self.get(name, (), _parse_url_list, "comma-separated http(s) URLs", **kw)

    def url(self, name: str, **kw: Any) -> str | None:
        return self.get(name, None, _parse_url, "an http(s) URL", **kw)

    def literal_dict(self, name: str, **kw: Any) -> dict[str, str]:
        return self.get(name, {}, _parse_str_dict, 'a dict literal like {"key": "value"}', **kw)

    def choice(self, name: str, default: str, choices: set[str], **kw: Any) -> str:
        expected = "one of " + ", ".join(sorted(choices))
        return self.get(name, default, _one_of(choices), expected, **kw)


def _bounded(kind: type, minimum: float) -> Callable[[str], Any]:
    def parse(value: str) -> Any:
        number = kind(value)
        if number < minimum or (kind is float and number <= 0):
            raise ValueError("out of range")
        return number

    return parse


def _parse_bool(value: str) -> bool:
    lowered = value.lower()
    if lowered in TRUE_WORDS:
        return True
    if lowered in FALSE_WORDS:
        return False
    raise ValueError("")


def _parse_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"{value!r} does not start with http:// or https://")
    return value


def _parse_url_list(value: str) -> tuple[str, ...]:
    return tuple(_parse_url(part.strip()) for part in value.split(",") if part.strip())


def _parse_list(value: str) -> tuple[str, ...]:
    items = tuple(part.strip() for part in value.split(",") if part.strip())
    if not items:
        raise ValueError("empty list")
    return items


def _parse_networks(value: str) -> tuple[str, ...]:
    networks = _parse_list(value)
    for network in networks:
        ipaddress.ip_network(network)  # raises ValueError for a bad one
    return networks


def _parse_str_dict(value: str) -> dict[str, str]:
    parsed = ast.literal_eval(value)
    if not isinstance(parsed, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in parsed.items()
    ):
        raise ValueError("not a dict of strings")
    return parsed


def _one_of(choices: set[str]) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value.upper() in choices:
            return value.upper()
        if value.lower() in choices:
            return value.lower()
        raise ValueError("")

    return parse


def load_settings(
    environ: Mapping[str, str] | None = None, dotenv_path: str | Path | None = ".env"
) -> Settings:
    """Parse the environment (plus ``.env`` for names the environment lacks) into Settings."""
    env: dict[str, str] = {}
    if dotenv_path is not None and Path(dotenv_path).is_file():
        env.update({k: v for k, v in dotenv_values(dotenv_path).items() if v is not None})
    env.update(os.environ if environ is None else environ)
    r = _Reader(env)
    local_dev_env = r.boolean("LOCAL_DEV_ENV", False)

    settings = Settings(
        host=r.text("HOST", "127.0.0.1"),
        port=r.integer("PORT", 8000),
        data_dir=Path(r.text("SYMBOLON_DATA_DIR", ".data")),
        base_dir=Path(r.text("BASEDIR", ".")),
        debug=r.boolean("DEBUG", False),
        local_dev_env=local_dev_env,
        secret_key=r.text("SECRET_KEY"),
        database_url=r.get("DATABASE_URL", None, _parse_pg_url, "a postgresql:// URL"),
        database_pool_max=r.integer("DATABASE_POOL_MAX", 10, minimum=1),
        redis_url=r.get(
            "REDIS_URL", None, _parse_redis_url, "a redis://, rediss:// or unix:// URL"
        ),
        redis_store_url=r.get(
            "REDIS_STORE_URL", None, _parse_redis_url, "a redis://, rediss:// or unix:// URL"
        ),
        redis_ignore_exceptions=r.boolean("REDIS_IGNORE_EXCEPTIONS", True),
        redis_socket_connect_timeout=r.number("REDIS_SOCKET_CONNECT_TIMEOUT", 1.0),
        redis_socket_timeout=r.number("REDIS_SOCKET_TIMEOUT", 2.0),
        symbol_urls=r.url_list("SYMBOL_URLS"),
        upload_default_url=r.url("UPLOAD_DEFAULT_URL"),
        upload_try_symbols_url=r.url("UPLOAD_TRY_SYMBOLS_URL"),
        upload_url_exceptions=r.literal_dict("UPLOAD_URL_EXCEPTIONS"),
        symbol_file_prefix=r.text("SYMBOL_FILE_PREFIX", "v1").strip("/"),
        s3_lookup_connect_timeout=r.number("S3_LOOKUP_CONNECT_TIMEOUT", 2.0),
        s3_lookup_read_timeout=r.number("S3_LOOKUP_READ_TIMEOUT", 4.0),
        s3_put_connect_timeout=r.number("S3_PUT_CONNECT_TIMEOUT", 10.0),
        s3_put_read_timeout=r.number("S3_PUT_READ_TIMEOUT", 30.0),
        aws_access_key_id=r.text("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=r.text("AWS_SECRET_ACCESS_KEY"),
        aws_default_region=r.text("AWS_DEFAULT_REGION"),
        download_file_extensions_allowed=r.get(
            "DOWNLOAD_FILE_EXTENSIONS_ALLOWED",
            Settings.download_file_extensions_allowed,
            _parse_list,
            "comma-separated file endings such as .sym,.pd_",
        ),
        symboldownload_exists_ttl_seconds=r.integer(
            "SYMBOLDOWNLOAD_EXISTS_TTL_SECONDS", 21600, minimum=1
        ),
        download_presigned_url_expiry_seconds=r.integer(
            "DOWNLOAD_PRESIGNED_URL_EXPIRY_SECONDS", 3600, minimum=60
        ),
        download_local_cache_size=r.integer("DOWNLOAD_LOCAL_CACHE_SIZE", 100_000),
        enable_store_missing_symbols=r.boolean("ENABLE_STORE_MISSING_SYMBOLS", True),
        memoize_log_missing_symbols_seconds=r.integer(
            "MEMOIZE_LOG_MISSING_SYMBOLS_SECONDS", 86400, minimum=1
        ),
        upload_max_size=r.integer("UPLOAD_MAX_SIZE", 2 * 1024**3, minimum=1),
        upload_tempdir=r.get("UPLOAD_TEMPDIR", None, Path, "a directory"),
        upload_staging_url=r.url("UPLOAD_STAGING_URL"),
        try_symbols_expiry_days=r.integer("TRY_SYMBOLS_EXPIRY_DAYS", 28, minimum=1),
        upload_wait_seconds=r.number("UPLOAD_WAIT_SECONDS", 300.0),
        upload_file_upload_max_workers=r.integer("UPLOAD_FILE_UPLOAD_MAX_WORKERS", 8, minimum=1),
        upload_max_members=r.integer("UPLOAD_MAX_MEMBERS", 100_000, minimum=1),
        upload_max_uncompressed_size=r.integer(
            "UPLOAD_MAX_UNCOMPRESSED_SIZE", 20 * 1024**3, minimum=1
        ),
        upload_max_compression_ratio=r.number("UPLOAD_MAX_COMPRESSION_RATIO", 200.0),
        disallowed_symbols_snippets=r.get(
            "DISALLOWED_SYMBOLS_SNIPPETS",
            ("qcom/proprietary",),
            _parse_list,
            "comma-separated text",
        ),
        compress_extensions=r.get(
            "COMPRESS_EXTENSIONS", ("sym",), _parse_list, "comma-separated extensions such as sym"
        ),
        mime_overrides=r.literal_dict("MIME_OVERRIDES") or {"sym": "text/plain"},
        allow_upload_by_download_domains=r.get(
            "ALLOW_UPLOAD_BY_DOWNLOAD_DOMAINS",
            Settings.allow_upload_by_download_domains,
            _parse_list,
            "comma-separated host names",
        ),
        allow_upload_by_any_domain=r.boolean("ALLOW_UPLOAD_BY_ANY_DOMAIN", False),
        upload_by_download_allowed_networks=r.get(
            "UPLOAD_BY_DOWNLOAD_ALLOWED_NETWORKS", (), _parse_networks, "comma-separated CIDRs"
        ),
        tokens_default_expiration_days=r.integer("TOKENS_DEFAULT_EXPIRATION_DAYS", 365, minimum=1),
        enable_crash_collector=r.boolean("ENABLE_CRASH_COLLECTOR", True),
        crash_storage=r.get(
            "CRASHMOVER_CRASHSTORAGE_CLASS",
            "s3",
            _parse_crash_storage,
            "s3, fs, or the reference's S3CrashStorage/FSCrashStorage class path",
        ),
        crash_bucket_name=r.text("CRASHMOVER_CRASHSTORAGE_BUCKET_NAME"),
        crash_region=r.text("CRASHMOVER_CRASHSTORAGE_REGION", "us-west-2", aliases=("S3_REGION",)),
        crash_endpoint_url=r.get(
            "CRASHMOVER_CRASHSTORAGE_ENDPOINT_URL",
            None,
            _parse_url,
            "an http(s) URL",
            aliases=("S3_ENDPOINT_URL",),
        ),
        crash_access_key=r.text("CRASHMOVER_CRASHSTORAGE_ACCESS_KEY"),
        crash_secret_access_key=r.text("CRASHMOVER_CRASHSTORAGE_SECRET_ACCESS_KEY"),
        crash_fs_root=r.get("CRASHMOVER_CRASHSTORAGE_FS_ROOT", None, Path, "a directory"),
        crash_fs_fsync=r.boolean("CRASHMOVER_CRASHSTORAGE_FS_FSYNC", False),
        crashmover_max_attempts=r.integer("CRASHMOVER_MAX_ATTEMPTS", 5, minimum=1),
        crashmover_retry_sleep_seconds=r.number("CRASHMOVER_RETRY_SLEEP_SECONDS", 2.0),
        crashmover_concurrent_crashmovers=r.integer(
            "CRASHMOVER_CONCURRENT_CRASHMOVERS", 8, minimum=1
        ),
        crashpublish_queue_name=r.get(
            "CRASHMOVER_CRASHPUBLISH_QUEUE_NAME",
            "socorro.standard",
            _parse_queue_name,
            "a queue name of letters, digits, '.', '_' and '-'",
        ),
        crashpublish_actor_name=r.get(
            "CRASHMOVER_CRASHPUBLISH_ACTOR_NAME",
            "process_crash",
            _parse_queue_name,
            "an actor name of letters, digits, '.', '_' and '-'",
        ),
        crashpublish_retry_seconds=r.number("CRASHMOVER_CRASHPUBLISH_RETRY_SECONDS", 30.0),
        breakpad_stage_submitter_bearer_token=r.text("BREAKPAD_STAGE_SUBMITTER_BEARER_TOKEN"),
        breakpad_throttler_rules=r.text("BREAKPAD_THROTTLER_RULES", "accept_all"),
        breakpad_throttler_products=r.text("BREAKPAD_THROTTLER_PRODUCTS", "all"),
        breakpad_throttler_product_packagenames=r.text(
            "BREAKPAD_THROTTLER_PRODUCT_PACKAGENAMES", "all"
        ),
        collector_max_body_size=r.integer("COLLECTOR_MAX_BODY_SIZE", 25 * 1024**2, minimum=1),
        collector_max_decompressed_size=r.integer(
            "COLLECTOR_MAX_DECOMPRESSED_SIZE", 8 * 25 * 1024**2, minimum=1
        ),
        collector_body_timeout=r.number(
            "COLLECTOR_BODY_TIMEOUT", 70.0, aliases=("CLIENT_BODY_TIMEOUT",)
        ),
        oidc_rp_client_id=r.text("OIDC_RP_CLIENT_ID"),
        oidc_rp_client_secret=r.text("OIDC_RP_CLIENT_SECRET"),
        oidc_op_issuer=r.url("OIDC_OP_ISSUER"),
        oidc_op_authorization_endpoint=r.url("OIDC_OP_AUTHORIZATION_ENDPOINT"),
        oidc_op_token_endpoint=r.url("OIDC_OP_TOKEN_ENDPOINT"),
        oidc_op_user_endpoint=r.url("OIDC_OP_USER_ENDPOINT"),
        oidc_op_jwks_endpoint=r.url("OIDC_OP_JWKS_ENDPOINT"),
        oidc_rp_sign_algo=r.choice("OIDC_RP_SIGN_ALGO", "HS256", OIDC_SIGN_ALGORITHMS),
        oidc_rp_scopes=r.text("OIDC_RP_SCOPES", "openid email"),
        oidc_verify_ssl=r.boolean("OIDC_VERIFY_SSL", True),
        oidc_timeout=r.number("OIDC_TIMEOUT", 10.0),
        session_cookie_age=r.integer("SESSION_COOKIE_AGE", 31_536_000, minimum=60),
        session_cookie_secure=r.boolean("SESSION_COOKIE_SECURE", not local_dev_env),
        enable_auth0_blocked_check=r.boolean("ENABLE_AUTH0_BLOCKED_CHECK", False),
        not_blocked_in_auth0_interval_seconds=r.integer(
            "NOT_BLOCKED_IN_AUTH0_INTERVAL_SECONDS", 86400, minimum=1
        ),
        # The seed's ELIOT_SYMBOL_URLS is not an alias: with the prefix dropped it is SYMBOL_URLS.
        symbolication_symbol_urls=r.url_list(
            "SYMBOLICATION_SYMBOL_URLS", aliases=("ELIOT_SYMBOLS_URLS",)
        ),
        symbolication_include_try_symbols=r.boolean("SYMBOLICATION_INCLUDE_TRY_SYMBOLS", True),
        symbols_cache_dir=r.get("SYMBOLS_CACHE_DIR", None, Path, "a directory"),
        symbols_cache_max_size=r.integer("SYMBOLS_CACHE_MAX_SIZE", 1024**3, minimum=1),
        symbolication_store_symcaches=r.boolean("SYMBOLICATION_STORE_SYMCACHES", True),
        symbolication_miss_ttl_seconds=r.integer("SYMBOLICATION_MISS_TTL_SECONDS", 60),
        symbolication_open_symcaches=r.integer("SYMBOLICATION_OPEN_SYMCACHES", 64, minimum=1),
        symbolication_max_sym_size=r.integer("SYMBOLICATION_MAX_SYM_SIZE", 4 * 1024**3, minimum=1),
        symbolication_fetch_deadline_seconds=r.number("SYMBOLICATION_FETCH_DEADLINE", 600.0),
        symbolication_parse_workers=r.integer("SYMBOLICATION_PARSE_WORKERS", 0),
        symbolication_parse_memory=r.integer("SYMBOLICATION_PARSE_MEMORY", 0),
        worker_threads=r.integer("WORKER_THREADS", 2),
        web_processes=r.integer("WEB_PROCESSES", 1, minimum=1),
        event_loop=r.choice("EVENT_LOOP", "uvloop", {"uvloop", "asyncio"}),
        logging_level=r.choice(
            "LOGGING_LEVEL", "INFO", LOG_LEVELS, aliases=("LOGGING_DEFAULT_LEVEL",)
        ),
        log_format=r.choice("LOG_FORMAT", "auto", {"auto", "json", "text"}),
        statsd_host=r.text("STATSD_HOST"),
        statsd_port=r.integer("STATSD_PORT", 8125, minimum=1),
        statsd_namespace=r.text("STATSD_NAMESPACE", ""),
        sentry_dsn=r.text("SENTRY_DSN", aliases=("SECRET_SENTRY_DSN",)),
    )
    _check_combinations(settings, r)
    _check_crash_settings(settings, r)
    if r.problems:
        raise SettingsError(r.problems)
    if settings.symbol_urls:
        # Imported here: the storage module depends on Settings.
        from symbolon.storage.sources import StorageConfig

        StorageConfig.from_settings(settings)
    return settings


def _check_combinations(s: Settings, r: _Reader) -> None:
    if (s.redis_url is None) != (s.redis_store_url is None):
        r.problems.append(
            "REDIS_URL and REDIS_STORE_URL: set both (two separate Redis servers; the store "
            "needs maxmemory-policy allkeys-lru) or neither (embedded Redis)"
        )
    if not s.symbol_urls and (s.upload_default_url or s.upload_try_symbols_url):
        r.problems.append(
            "UPLOAD_DEFAULT_URL/UPLOAD_TRY_SYMBOLS_URL are set but SYMBOL_URLS is not: "
            "set SYMBOL_URLS too, or unset them to use the embedded S3 server"
        )
    if s.symbol_urls and not s.upload_default_url:
        r.problems.append("UPLOAD_DEFAULT_URL: required when SYMBOL_URLS is set")
    _check_oidc(s, r)
    # With the embedded database this is a development setup: a key is generated and kept in
    # the data dir. A real database means a real deployment, which must set its own.
    if s.secret_key is None and not s.embedded_postgres and not s.local_dev_env:
        r.problems.append(
            "SECRET_KEY: required when DATABASE_URL is set "
            '(generate one with: python -c "import secrets; print(secrets.token_hex(32))")'
        )


CRASH_STORAGE_NAMES = {
    "s3": "s3",
    "antenna.ext.s3.crashstorage.S3CrashStorage": "s3",
    "fs": "fs",
    "antenna.ext.fs.crashstorage.FSCrashStorage": "fs",
}


def _parse_crash_storage(value: str) -> str:
    if value not in CRASH_STORAGE_NAMES:
        raise ValueError("")
    return CRASH_STORAGE_NAMES[value]


def _parse_queue_name(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9._-]*", value):
        raise ValueError("")
    return value


def _check_crash_settings(s: Settings, r: _Reader) -> None:
    if not s.enable_crash_collector:
        return
    if s.crash_storage == "s3" and not s.crash_bucket_name and not s.embedded_s3:
        r.problems.append(
            "CRASHMOVER_CRASHSTORAGE_BUCKET_NAME: required for crash storage in S3 when "
            "SYMBOL_URLS is set (or set CRASHMOVER_CRASHSTORAGE_CLASS=fs, or "
            "ENABLE_CRASH_COLLECTOR=false)"
        )
    # Imported here: the throttler is a domain module that must not depend on settings.
    from symbolon.crashes.throttling.presets import load_throttler

    try:
        load_throttler(
            s.breakpad_throttler_rules,
            s.breakpad_throttler_products,
            s.breakpad_throttler_product_packagenames,
        )
    except (ValueError, OSError) as exc:
        r.problems.append(str(exc))  # names the setting itself


def _check_oidc(s: Settings, r: _Reader) -> None:
    if s.enable_auth0_blocked_check and not (
        s.oidc_op_user_endpoint and s.oidc_rp_client_id and s.oidc_rp_client_secret
    ):
        r.problems.append(
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
        r.problems.append(
            f"OIDC_RP_CLIENT_ID is set, so sign-in needs its provider: set OIDC_OP_ISSUER "
            f"(endpoints are discovered) or {missing}"
        )
    if not s.oidc_rp_client_secret:
        r.problems.append("OIDC_RP_CLIENT_SECRET: required when OIDC_RP_CLIENT_ID is set")
    asymmetric = not s.oidc_rp_sign_algo.startswith("HS")
    if asymmetric and not (s.oidc_op_jwks_endpoint or s.oidc_op_issuer):
        r.problems.append(
            f"OIDC_RP_SIGN_ALGO={s.oidc_rp_sign_algo} needs the provider's keys: set "
            "OIDC_OP_JWKS_ENDPOINT or OIDC_OP_ISSUER"
        )
    if not s.local_dev_env:
        named = {"OIDC_OP_ISSUER": s.oidc_op_issuer, **endpoints}
        named["OIDC_OP_JWKS_ENDPOINT"] = s.oidc_op_jwks_endpoint
        for name, value in named.items():
            if value and not _secure_or_loopback(value):
                r.problems.append(
                    f"{name}={value!r}: the provider must be reached over https "
                    "(plain http only on 127.0.0.1/localhost, or with LOCAL_DEV_ENV=true)"
                )


def _secure_or_loopback(url: str) -> bool:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.scheme == "https" or parts.hostname in ("127.0.0.1", "::1", "localhost")


def _parse_pg_url(value: str) -> str:
    if not value.startswith(("postgres://", "postgresql://")):
        raise ValueError("")
    return value


def _parse_redis_url(value: str) -> str:
    if not value.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("")
    return value
