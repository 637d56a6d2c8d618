"""Every setting, declared once: its field, environment variable, default, parser and meaning.

``load_settings`` (in ``symbolon.conf``) walks these declarations; docs/configuration.md lists
the same variables for operators, and a test keeps the two in step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from symbolon.conf import parsers as p
from symbolon.conf.parsers import Parser

T = TypeVar("T")


@dataclass(frozen=True)
class Declaration:
    env: str
    parse: Parser
    doc: str
    aliases: tuple[str, ...] = ()
    # A default that depends on other settings' values (after parsing).
    derive: Callable[[Mapping[str, Any]], Any] | None = None


def setting(
    env: str,
    default: T,
    parse: Parser,
    doc: str,
    aliases: tuple[str, ...] = (),
    derive: Callable[[Mapping[str, Any]], Any] | None = None,
) -> T:
    """A Settings field read from the environment variable ``env``."""
    metadata = {"setting": Declaration(env, parse, doc, aliases, derive)}
    if isinstance(default, dict):
        frozen = dict(default)
        made: Any = field(default_factory=lambda: dict(frozen), metadata=metadata)
    else:
        made = field(default=default, metadata=metadata)
    return made


@dataclass(frozen=True)
class Settings:
    # Where and how to serve.
    host: str = setting("HOST", "127.0.0.1", p.text, "address to listen on")
    port: int = setting("PORT", 8000, p.integer(0), "port to listen on")
    data_dir: Path = setting(
        "SYMBOLON_DATA_DIR",
        Path(".data"),
        p.path,
        "state of the embedded services, and the generated `SECRET_KEY`",
    )
    base_dir: Path = setting(
        "BASEDIR", Path("."), p.path, "where `/__version__` looks for `version.json`"
    )
    debug: bool = setting(
        "DEBUG",
        False,
        p.boolean,
        "accepted for compatibility with the original services; changes nothing",
    )
    local_dev_env: bool = setting(
        "LOCAL_DEV_ENV",
        False,
        p.boolean,
        "a developer's machine: human-readable logs, session cookies without `Secure`",
    )
    secret_key: str | None = setting(
        "SECRET_KEY",
        None,
        p.text,
        "signing key; **required** when `DATABASE_URL` is set (unless `LOCAL_DEV_ENV=true`)",
    )
    request_max_body_size: int = setting(
        "REQUEST_MAX_BODY_SIZE",
        1024**2,
        p.integer(1),
        "largest body of a request other than an upload, a crash report or a symbolication; "
        "above it `413`, decided from `Content-Length` (chunked bodies: while reading)",
    )
    secure_content_type_nosniff: bool = setting(
        "SECURE_CONTENT_TYPE_NOSNIFF",
        True,
        p.boolean,
        "send `X-Content-Type-Options: nosniff` on every response",
    )
    x_frame_options: str = setting(
        "X_FRAME_OPTIONS",
        "DENY",
        p.choice(frozenset({"DENY", "SAMEORIGIN", "OFF"})),
        "`X-Frame-Options` on every response, with the matching CSP `frame-ancestors` "
        "(`'none'`, `'self'`); `OFF` sends neither",
    )
    secure_hsts_seconds: int = setting(
        "SECURE_HSTS_SECONDS",
        31536000,
        p.integer(0),
        "`Strict-Transport-Security: max-age=…` on responses to HTTPS requests (as the request "
        "arrived, or as `X-Forwarded-Proto` says); `0` sends none",
    )

    # Backing services. None means "start the embedded one".
    database_url: str | None = setting(
        "DATABASE_URL", None, p.postgres_url, "`postgresql://user:password@host:port/db`"
    )
    database_pool_max: int = setting(
        "DATABASE_POOL_MAX", 10, p.integer(1), "connections per process"
    )
    redis_url: str | None = setting(
        "REDIS_URL",
        None,
        p.redis_url,
        "the general cache and the task broker; must not evict (`noeviction`)",
    )
    redis_store_url: str | None = setting(
        "REDIS_STORE_URL",
        None,
        p.redis_url,
        "the LRU store; configure it with `maxmemory-policy allkeys-lru`",
    )
    redis_ignore_exceptions: bool = setting(
        "REDIS_IGNORE_EXCEPTIONS",
        True,
        p.boolean,
        "log and swallow cache errors; `false` lets them fail requests",
    )
    redis_socket_connect_timeout: float = setting(
        "REDIS_SOCKET_CONNECT_TIMEOUT", 1.0, p.seconds, "seconds"
    )
    redis_socket_timeout: float = setting(
        "REDIS_SOCKET_TIMEOUT",
        2.0,
        p.seconds,
        "seconds; a paused Redis costs a request at most this long",
    )

    # Symbol storage (docs/download.md, docs/upload.md).
    symbol_urls: tuple[str, ...] = setting(
        "SYMBOL_URLS", (), p.location_url_list, "comma-separated read locations, tried in order"
    )
    upload_default_url: str | None = setting(
        "UPLOAD_DEFAULT_URL", None, p.location_url, "where uploads go; must be one of `SYMBOL_URLS`"
    )
    upload_try_symbols_url: str | None = setting(
        "UPLOAD_TRY_SYMBOLS_URL",
        None,
        p.location_url,
        "where try uploads go; default: `UPLOAD_DEFAULT_URL` with `try` inserted after the bucket",
    )
    upload_url_exceptions: Mapping[str, str] = setting(
        "UPLOAD_URL_EXCEPTIONS",
        {},
        p.str_dict,
        'dict literal, e-mail or glob → upload URL: `{"*@partner.com": "https://…/partner"}`',
    )
    symbol_file_prefix: str = setting(
        "SYMBOL_FILE_PREFIX", "v1", p.key_prefix, "key prefix inside each location"
    )
    s3_lookup_connect_timeout: float = setting(
        "S3_LOOKUP_CONNECT_TIMEOUT", 2.0, p.seconds, "seconds, for existence checks"
    )
    s3_lookup_read_timeout: float = setting(
        "S3_LOOKUP_READ_TIMEOUT", 4.0, p.seconds, "seconds, for existence checks"
    )
    s3_put_connect_timeout: float = setting(
        "S3_PUT_CONNECT_TIMEOUT", 10.0, p.seconds, "seconds, for writes"
    )
    s3_put_read_timeout: float = setting(
        "S3_PUT_READ_TIMEOUT", 30.0, p.seconds, "seconds, for writes"
    )
    aws_access_key_id: str | None = setting(
        "AWS_ACCESS_KEY_ID", None, p.text, "S3 access key, for every symbol location"
    )
    aws_secret_access_key: str | None = setting(
        "AWS_SECRET_ACCESS_KEY", None, p.text, "S3 secret key"
    )
    aws_default_region: str | None = setting("AWS_DEFAULT_REGION", None, p.text, "S3 region")
    embedded_storage_kind: str = setting(
        "EMBEDDED_STORAGE",
        "directory",
        p.choice(frozenset({"directory", "s3"})),
        "without `SYMBOL_URLS`: `directory` keeps symbols and crashes under `SYMBOLON_DATA_DIR`;"
        " `s3` on the embedded S3 emulator, for an S3 endpoint to develop against",
    )
    # Set when the locations are the embedded ones, the only ones we create.
    storage_is_embedded: bool = False

    # Download (docs/download.md).
    download_file_extensions_allowed: tuple[str, ...] = setting(
        "DOWNLOAD_FILE_EXTENSIONS_ALLOWED",
        (
            ".sym",
            ".dl_",
            ".ex_",
            ".pd_",
            ".dbg.gz",
            ".tar.bz2",
        ),
        p.listing("comma-separated file endings such as .sym,.pd_"),
        "other endings are answered `404` without a lookup (case-sensitive)",
    )
    symboldownload_exists_ttl_seconds: int = setting(
        "SYMBOLDOWNLOAD_EXISTS_TTL_SECONDS",
        21600,
        p.integer(1),
        "how long a source's found / not-found answer is cached",
    )
    download_presigned_url_expiry_seconds: int = setting(
        "DOWNLOAD_PRESIGNED_URL_EXPIRY_SECONDS",
        3600,
        p.integer(60),
        "validity of redirects to private sources",
    )
    download_local_cache_size: int = setting(
        "DOWNLOAD_LOCAL_CACHE_SIZE",
        100_000,
        p.integer(0),
        "answers each process keeps in memory in front of Redis; `0` turns that off",
    )
    enable_store_missing_symbols: bool = setting(
        "ENABLE_STORE_MISSING_SYMBOLS", True, p.boolean, "count `GET`s that end in `404`"
    )
    memoize_log_missing_symbols_seconds: int = setting(
        "MEMOIZE_LOG_MISSING_SYMBOLS_SECONDS",
        86400,
        p.integer(1),
        "one missing symbol is written at most once per this",
    )

    # Upload (docs/upload.md).
    upload_max_size: int = setting(
        "UPLOAD_MAX_SIZE",
        2 * 1024**3,
        p.integer(1),
        "largest request body, bytes; above it `413`, decided from `Content-Length`",
    )
    upload_tempdir: Path | None = setting(
        "UPLOAD_TEMPDIR", None, p.path, "staging of received archives"
    )
    upload_staging_url: str | None = setting(
        "UPLOAD_STAGING_URL",
        None,
        p.url,
        "S3 location for received archives, when workers run on other machines",
    )
    upload_staging_sweep_seconds: float = setting(
        "UPLOAD_STAGING_SWEEP_AGE",
        86400.0,
        p.seconds,
        "staged archives this old that no unfinished upload refers to are deleted",
    )
    try_symbols_expiry_days: int = setting(
        "TRY_SYMBOLS_EXPIRY_DAYS", 28, p.integer(1), "try symbols older than this are deleted"
    )
    upload_wait_seconds: float = setting(
        "UPLOAD_WAIT_SECONDS",
        300.0,
        p.seconds,
        "how long `POST /upload/` waits for processing before answering `202`",
    )
    upload_file_upload_max_workers: int = setting(
        "UPLOAD_FILE_UPLOAD_MAX_WORKERS", 8, p.integer(1), "members stored at once, per upload"
    )
    upload_max_members: int = setting(
        "UPLOAD_MAX_MEMBERS", 100_000, p.integer(1), "files in one archive"
    )
    upload_max_uncompressed_size: int = setting(
        "UPLOAD_MAX_UNCOMPRESSED_SIZE",
        20 * 1024**3,
        p.integer(1),
        "bytes inflated from one archive",
    )
    upload_max_compression_ratio: float = setting(
        "UPLOAD_MAX_COMPRESSION_RATIO",
        200.0,
        p.positive,
        "a member (over 1 MiB), an archive's members together (over 16 MiB), or a file sent "
        "gzipped with upload v2 (over 1 MiB), inflating more than this many times its compressed "
        "size is refused as a compression bomb",
    )
    upload_v2_plan_concurrency: int = setting(
        "UPLOAD_V2_PLAN_CONCURRENCY",
        16,
        p.integer(1),
        "storage look-ups at once while `POST /upload/v2/` plans one request",
    )
    upload_v2_verify_concurrency: int = setting(
        "UPLOAD_V2_VERIFY_CONCURRENCY",
        4,
        p.integer(1),
        "files read back at once while one upload v2 is completed",
    )
    upload_v2_pending_expiry_seconds: int = setting(
        "UPLOAD_V2_PENDING_EXPIRY_SECONDS",
        86400,
        p.integer(60),
        "an upload v2 not completed this long after it began is failed and its PUT files deleted",
    )
    disallowed_symbols_snippets: tuple[str, ...] = setting(
        "DISALLOWED_SYMBOLS_SNIPPETS",
        ("qcom/proprietary",),
        p.listing("comma-separated text"),
        "member paths containing one of these are refused",
    )
    compress_extensions: tuple[str, ...] = setting(
        "COMPRESS_EXTENSIONS",
        ("sym",),
        p.listing("comma-separated extensions such as sym"),
        "stored gzipped",
    )
    mime_overrides: Mapping[str, str] = setting(
        "MIME_OVERRIDES",
        {"sym": "text/plain"},
        p.str_dict,
        "content type by extension (dict literal)",
    )
    allow_upload_by_download_domains: tuple[str, ...] = setting(
        "ALLOW_UPLOAD_BY_DOWNLOAD_DOMAINS",
        (
            "queue.taskcluster.net",
            "firefox-ci-tc.services.mozilla.com",
            "stage.taskcluster.nonprod.cloudops.mozgcp.net",
        ),
        p.listing("comma-separated host names"),
        "hosts that upload by URL may fetch from (every redirect too)",
    )
    allow_upload_by_any_domain: bool = setting(
        "ALLOW_UPLOAD_BY_ANY_DOMAIN",
        False,
        p.boolean,
        "development only: any scheme, host and address for upload by URL",
    )
    upload_by_download_allowed_networks: tuple[str, ...] = setting(
        "UPLOAD_BY_DOWNLOAD_ALLOWED_NETWORKS",
        (),
        p.networks,
        "CIDRs that upload by URL may reach although not public (an internal artifact server)",
    )
    upload_by_download_deadline_seconds: float = setting(
        "UPLOAD_BY_DOWNLOAD_DEADLINE",
        900.0,
        p.seconds,
        "seconds an upload by URL has to download its archive, redirects included",
    )
    upload_by_download_min_rate: int = setting(
        "UPLOAD_BY_DOWNLOAD_MIN_RATE",
        16 * 1024,
        p.integer(0),
        "bytes per second an upload by URL's download must average after its first 30 s "
        "(`0`: no minimum)",
    )

    # Accounts.
    tokens_default_expiration_days: int = setting(
        "TOKENS_DEFAULT_EXPIRATION_DAYS", 365, p.integer(1), "lifetime of a new API token"
    )
    # Browser sign-in with OpenID Connect (docs/accounts.md). Endpoints left unset are
    # discovered from the issuer when OIDC_OP_ISSUER is set.
    oidc_rp_client_id: str | None = setting(
        "OIDC_RP_CLIENT_ID",
        None,
        p.text,
        "the OpenID Connect client id; browser sign-in is off while it is unset",
    )
    oidc_rp_client_secret: str | None = setting(
        "OIDC_RP_CLIENT_SECRET",
        None,
        p.text,
        "the OpenID Connect client secret",
    )
    oidc_op_issuer: str | None = setting(
        "OIDC_OP_ISSUER",
        None,
        p.url,
        "the provider's issuer URL: endpoints are discovered from "
        "`<issuer>/.well-known/openid-configuration`, and ID tokens must name it",
    )
    oidc_op_authorization_endpoint: str | None = setting(
        "OIDC_OP_AUTHORIZATION_ENDPOINT",
        None,
        p.url,
        "the provider's endpoints; required without `OIDC_OP_ISSUER`, and override discovered ones",
    )
    oidc_op_token_endpoint: str | None = setting(
        "OIDC_OP_TOKEN_ENDPOINT",
        None,
        p.url,
        "the provider's endpoints; required without `OIDC_OP_ISSUER`, and override discovered ones",
    )
    oidc_op_user_endpoint: str | None = setting(
        "OIDC_OP_USER_ENDPOINT",
        None,
        p.url,
        "the provider's endpoints; required without `OIDC_OP_ISSUER`, and override discovered ones",
    )
    oidc_op_jwks_endpoint: str | None = setting(
        "OIDC_OP_JWKS_ENDPOINT",
        None,
        p.url,
        "the provider's public keys; needed for `RS256` and other public-key algorithms",
    )
    oidc_rp_sign_algo: str = setting(
        "OIDC_RP_SIGN_ALGO",
        "HS256",
        p.choice(p.OIDC_SIGN_ALGORITHMS),
        "the one algorithm ID tokens may be signed with: `HS256`/`HS384`/`HS512` (client secret), "
        "`RS256`/`RS384`/`RS512`/`ES256`/`PS256` (JWKS)",
    )
    oidc_rp_scopes: str = setting(
        "OIDC_RP_SCOPES", "openid email", p.text, "scopes asked for at sign-in"
    )
    oidc_verify_ssl: bool = setting(
        "OIDC_VERIFY_SSL",
        True,
        p.boolean,
        "verify the provider's TLS certificate (turn off only for local development)",
    )
    oidc_timeout: float = setting(
        "OIDC_TIMEOUT", 10.0, p.seconds, "seconds, for each call to the provider"
    )
    session_cookie_age: int = setting(
        "SESSION_COOKIE_AGE", 31_536_000, p.integer(60), "session lifetime in seconds (a year)"
    )
    session_cookie_secure: bool = setting(
        "SESSION_COOKIE_SECURE",
        True,
        p.boolean,
        "send the session cookie over https only; default: true unless `LOCAL_DEV_ENV=true`",
        derive=lambda values: not values["local_dev_env"],
    )
    # The "blocked in Auth0" check (docs/accounts.md).
    enable_auth0_blocked_check: bool = setting(
        "ENABLE_AUTH0_BLOCKED_CHECK",
        False,
        p.boolean,
        "ask Auth0's management API whether users are blocked, and deactivate them if so (needs "
        "`OIDC_OP_USER_ENDPOINT` and the client credentials)",
    )
    not_blocked_in_auth0_interval_seconds: int = setting(
        "NOT_BLOCKED_IN_AUTH0_INTERVAL_SECONDS",
        86400,
        p.integer(1),
        'how long a "not blocked" answer is trusted, per user',
    )

    # Crash collector (docs/crashes.md). Without SYMBOL_URLS, crashes are kept where symbols are.
    enable_crash_collector: bool = setting(
        "ENABLE_CRASH_COLLECTOR",
        True,
        p.boolean,
        "`false` removes `POST /submit` and its start-up checks",
    )
    crash_storage: str = setting(
        "CRASHMOVER_CRASHSTORAGE_CLASS",
        "s3",
        p.crash_storage,
        "`s3`, or `fs` for a local directory; the reference's "
        "`antenna.ext.s3.crashstorage.S3CrashStorage` and "
        "`antenna.ext.fs.crashstorage.FSCrashStorage` are accepted",
    )
    crash_bucket_name: str | None = setting(
        "CRASHMOVER_CRASHSTORAGE_BUCKET_NAME",
        None,
        p.text,
        "the crash bucket; **required** with `s3` when `SYMBOL_URLS` is set. Never created, except"
        " on the embedded server",
    )
    crash_region: str = setting(
        "CRASHMOVER_CRASHSTORAGE_REGION",
        "us-west-2",
        p.text,
        "the bucket's region",
        aliases=("S3_REGION",),
    )
    crash_endpoint_url: str | None = setting(
        "CRASHMOVER_CRASHSTORAGE_ENDPOINT_URL",
        None,
        p.url,
        "an S3-compatible server (MinIO, …)",
        aliases=("S3_ENDPOINT_URL",),
    )
    crash_access_key: str | None = setting(
        "CRASHMOVER_CRASHSTORAGE_ACCESS_KEY", None, p.text, "access key for the crash bucket only"
    )
    crash_secret_access_key: str | None = setting(
        "CRASHMOVER_CRASHSTORAGE_SECRET_ACCESS_KEY",
        None,
        p.text,
        "secret key for the crash bucket only",
    )
    crash_fs_root: Path | None = setting(
        "CRASHMOVER_CRASHSTORAGE_FS_ROOT", None, p.path, "the directory of `fs` storage"
    )
    crash_fs_fsync: bool = setting(
        "CRASHMOVER_CRASHSTORAGE_FS_FSYNC",
        False,
        p.boolean,
        "`true` syncs every file before answering: survives a machine crash, costs throughput",
    )
    # Set when the crash bucket is the embedded S3 server's, the only one we create.
    crash_storage_is_embedded: bool = False
    crashmover_max_attempts: int = setting(
        "CRASHMOVER_MAX_ATTEMPTS",
        5,
        p.integer(1),
        "attempts to save one crash before answering `503`",
    )
    crashmover_retry_sleep_seconds: float = setting(
        "CRASHMOVER_RETRY_SLEEP_SECONDS", 2.0, p.seconds, "pause between attempts"
    )
    crashmover_concurrent_crashmovers: int = setting(
        "CRASHMOVER_CONCURRENT_CRASHMOVERS",
        8,
        p.integer(1),
        "crashes saved at once per process; requests waiting for a slot are the save queue "
        "(`save_queue_size`)",
    )
    crashpublish_queue_name: str = setting(
        "CRASHMOVER_CRASHPUBLISH_QUEUE_NAME",
        "socorro.standard",
        p.queue_name,
        "the task queue crash ids are published to",
    )
    crashpublish_actor_name: str = setting(
        "CRASHMOVER_CRASHPUBLISH_ACTOR_NAME",
        "process_crash",
        p.actor_name,
        "the actor name in the published messages",
    )
    crashpublish_retry_seconds: float = setting(
        "CRASHMOVER_CRASHPUBLISH_RETRY_SECONDS",
        30.0,
        p.seconds,
        "how often each process publishes ids a broker outage left unpublished",
    )
    breakpad_stage_submitter_bearer_token: str | None = setting(
        "BREAKPAD_STAGE_SUBMITTER_BEARER_TOKEN",
        None,
        p.text,
        "`Authorization: Bearer <token>` that may submit reports with their own `uuid`; unset: "
        "nobody",
    )
    breakpad_throttler_rules: str = setting(
        "BREAKPAD_THROTTLER_RULES",
        "accept_all",
        p.text,
        "`accept_all`, `mozilla`, the reference's names, or a rules file: see "
        "[throttling.md](throttling.md)",
    )
    breakpad_throttler_products: str = setting(
        "BREAKPAD_THROTTLER_PRODUCTS",
        "all",
        p.text,
        "`all`, `mozilla`, or a comma-separated product list",
    )
    breakpad_throttler_product_packagenames: str = setting(
        "BREAKPAD_THROTTLER_PRODUCT_PACKAGENAMES", "all", p.text, "`all` or `mozilla`"
    )
    collector_max_body_size: int = setting(
        "COLLECTOR_MAX_BODY_SIZE",
        25 * 1024**2,
        p.integer(1),
        "largest report on the wire (25 MiB, inclusive); above it `413`",
    )
    collector_max_decompressed_size: int = setting(
        "COLLECTOR_MAX_DECOMPRESSED_SIZE",
        8 * 25 * 1024**2,
        p.integer(1),
        "largest report once a gzip body is inflated; above it `413`",
    )
    collector_spool_budget: int = setting(
        "COLLECTOR_SPOOL_BUDGET",
        1024**3,
        p.integer(1),
        "temporary disk the reports one process is receiving may use together (each keeps what "
        "is past 4 MiB in a file); a report that finds it taken is answered `503` with "
        "`Retry-After`, one larger than it alone `413`",
    )
    collector_body_timeout: float = setting(
        "COLLECTOR_BODY_TIMEOUT",
        70.0,
        p.seconds,
        "seconds a client may send nothing in the middle of a body before the request is answered "
        "`408` and closed",
        aliases=("CLIENT_BODY_TIMEOUT",),
    )

    # Crash processing (docs/processing.md).
    enable_crash_processor: bool = setting(
        "ENABLE_CRASH_PROCESSOR",
        True,
        p.boolean,
        "take crash ids from the processing queue in `serve`'s worker and in `worker`; `false` "
        "for a site whose own processor consumes that queue",
    )
    processor_walk_processes: int = setting(
        "PROCESSOR_WALK_PROCESSES",
        0,
        p.integer(0),
        "stack-walking processes per worker process; `0`: one per core",
    )
    processor_walk_timeout_seconds: float = setting(
        "PROCESSOR_WALK_TIMEOUT",
        60.0,
        p.seconds,
        "seconds one dump may take to walk (waiting for symbols not counted); past it its process "
        "is killed and the crash is `failed`",
    )
    processor_walk_deadline_seconds: float = setting(
        "PROCESSOR_WALK_DEADLINE",
        300.0,
        p.seconds,
        "wall-clock seconds one dump's walk may take with the symbols it asks for fetched; past "
        "it the crash is `failed`",
    )
    processor_walk_symbol_modules: int = setting(
        "PROCESSOR_WALK_SYMBOL_MODULES",
        300,
        p.integer(1),
        "most modules whose symbols one crash's processing fetches; beyond them only symbols "
        "already in the caches are used, and the processor notes say so",
    )
    processor_walk_memory: int = setting(
        "PROCESSOR_WALK_MEMORY",
        2 * 1024**3,
        p.integer(256 * 1024**2),
        "address space of a walking process; a dump that needs more is `failed`",
    )
    processor_signature_frames: int = setting(
        "PROCESSOR_SIGNATURE_FRAMES",
        10,
        p.integer(1),
        "most frames a signature joins",
    )
    processor_signature_prefix: str | None = setting(
        "PROCESSOR_SIGNATURE_PREFIX",
        None,
        p.regex,
        "frames that are not the crash's cause but lead to it: the signature goes on to the next "
        "frame; unset: the built-in list of [processing.md](processing.md#signatures)",
    )
    processor_signature_irrelevant: str | None = setting(
        "PROCESSOR_SIGNATURE_IRRELEVANT",
        None,
        p.regex,
        "frames left out of signatures; unset: the built-in list",
    )
    processor_minidump_max_body_size: int = setting(
        "PROCESSOR_MINIDUMP_MAX_BODY_SIZE",
        25 * 1024**2,
        p.integer(1),
        "largest body of `POST /minidump`; above it `413`",
    )
    processor_minidump_budget: int = setting(
        "PROCESSOR_MINIDUMP_BUDGET",
        256 * 1024**2,
        p.integer(1),
        "bytes the `POST /minidump` bodies one process is receiving may hold together; a request "
        "that finds them taken is answered `503` with `Retry-After`",
    )
    processor_reprocess_per_upload: int = setting(
        "PROCESSOR_REPROCESS_PER_UPLOAD",
        1000,
        p.integer(0),
        "crashes queued for processing again when an upload brings a module they lacked (the most "
        "recent first; `0`: none)",
    )

    processor_requeue_pending_seconds: float = setting(
        "PROCESSOR_REQUEUE_PENDING_AFTER",
        3600.0,
        p.seconds,
        "seconds after which a crash still `pending` (its processing died, or its task gave up) "
        "is queued for processing again by the hourly task, 1000 a run at most",
    )

    # Symbolication (docs/symbolication.md).
    symbolication_symbol_urls: tuple[str, ...] = setting(
        "SYMBOLICATION_SYMBOL_URLS",
        (),
        p.url_list,
        "comma-separated upstream symbol servers asked after this server's own storage, e.g. "
        "`https://symbols.mozilla.org/try/`",
        aliases=("ELIOT_SYMBOLS_URLS",),
    )
    symbolication_max_body_size: int = setting(
        "SYMBOLICATION_MAX_BODY_SIZE",
        64 * 1024**2,
        p.integer(1),
        "largest symbolication request body; above it `413`, decided from `Content-Length`",
    )
    symbolication_include_try_symbols: bool = setting(
        "SYMBOLICATION_INCLUDE_TRY_SYMBOLS",
        True,
        p.boolean,
        "also read try symbols from own storage (after the regular ones)",
    )
    symbols_cache_dir: Path | None = setting(
        "SYMBOLS_CACHE_DIR",
        None,
        p.path,
        "disk cache of symcaches, shared by the processes of a machine",
    )
    symbols_cache_max_size: int = setting(
        "SYMBOLS_CACHE_MAX_SIZE",
        1024**3,
        p.integer(1),
        "its byte budget; least recently used entries are evicted (underscores allowed: "
        "`1_000_000_000`)",
    )
    symbolication_store_symcaches: bool = setting(
        "SYMBOLICATION_STORE_SYMCACHES",
        True,
        p.boolean,
        "also keep symcaches in the Redis LRU store, for other machines",
    )
    symbolication_miss_ttl_seconds: int = setting(
        "SYMBOLICATION_MISS_TTL_SECONDS",
        60,
        p.integer(0),
        "how long a module found nowhere is remembered (`0`: not at all); an upload forgets it",
    )
    symbolication_open_symcaches: int = setting(
        "SYMBOLICATION_OPEN_SYMCACHES",
        64,
        p.integer(1),
        "symcaches each process keeps open (memory-mapped)",
    )
    # Per source: a sym file larger than this (as received) or slower than this is an error.
    symbolication_max_sym_size: int = setting(
        "SYMBOLICATION_MAX_SYM_SIZE",
        4 * 1024**3,
        p.integer(1),
        "bytes (as received, so compressed if sent so) beyond which a source's sym file is refused",
    )
    symbolication_fetch_deadline_seconds: float = setting(
        "SYMBOLICATION_FETCH_DEADLINE",
        600.0,
        p.seconds,
        "seconds each source has for its whole answer, retries included",
    )
    symbolication_parse_workers: int = setting(
        "SYMBOLICATION_PARSE_WORKERS",
        0,
        p.integer(0),
        "parse processes per web process; `0`: the cores shared out among `WEB_PROCESSES`",
    )
    symbolication_parse_memory: int = setting(
        "SYMBOLICATION_PARSE_MEMORY",
        0,
        p.integer(0),
        "bytes the parses in flight on this machine may take together (shared out among "
        "`WEB_PROCESSES`); `0`: half the machine's memory",
    )

    # Task queue: worker threads embedded in `serve` (0 disables them).
    worker_threads: int = setting(
        "WORKER_THREADS",
        2,
        p.integer(0),
        "task-worker threads inside `serve` (0 disables them); default for `worker`",
    )
    # Web processes of `serve`, forked after binding a socket for each.
    web_processes: int = setting(
        "WEB_PROCESSES",
        1,
        p.integer(1),
        "web processes of `serve` (`--processes`), each on a socket of its own, keep-alive "
        "connections spread evenly (operations.md): one per core for busy collectors; only the "
        "first embeds the task worker, and one that dies is replaced",
    )
    # The event loop of `serve`: uvloop, or the standard library's.
    event_loop: str = setting(
        "EVENT_LOOP",
        "uvloop",
        p.choice(frozenset({"uvloop", "asyncio"})),
        "event loop of `serve`: `uvloop`, or `asyncio` for the standard library's (needed on "
        "Windows)",
    )

    # Observability.
    logging_level: str = setting(
        "LOGGING_LEVEL",
        "INFO",
        p.choice(p.LOG_LEVELS),
        "`DEBUG` … `CRITICAL`",
        aliases=("LOGGING_DEFAULT_LEVEL",),
    )
    log_format: str = setting(
        "LOG_FORMAT",
        "auto",
        p.choice(frozenset({"auto", "json", "text"})),
        "`json` (one object per line), `text`, or `auto`: text in a terminal, JSON otherwise",
    )
    statsd_host: str | None = setting(
        "STATSD_HOST",
        None,
        p.text,
        "metrics go to statsd at this host when set, to the log (at `LOGGING_LEVEL=DEBUG`) "
        "otherwise",
    )
    statsd_port: int = setting(
        "STATSD_PORT",
        8125,
        p.integer(1),
        "the statsd port",
    )
    statsd_namespace: str = setting(
        "STATSD_NAMESPACE",
        "",
        p.text,
        "a prefix for every metric name",
    )
    sentry_dsn: str | None = setting(
        "SENTRY_DSN",
        None,
        p.text,
        "error reporting; tokens, cookies, client addresses and request bodies are scrubbed",
        aliases=("SECRET_SENTRY_DSN",),
    )

    @property
    def embedded_postgres(self) -> bool:
        return self.database_url is None

    @property
    def embedded_redis(self) -> bool:
        return self.redis_url is None or self.redis_store_url is None

    @property
    def embedded_storage(self) -> bool:
        return not self.symbol_urls

    @property
    def fully_embedded(self) -> bool:
        return self.embedded_postgres and self.redis_url is None and self.embedded_storage

    @property
    def crash_dir(self) -> Path:
        return self.crash_fs_root or self.data_dir / "crashes"

    @property
    def staging_dir(self) -> Path:
        return self.upload_tempdir or self.data_dir / "uploads"

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def declarations() -> dict[str, Declaration]:
    """Field name → declaration, for every setting read from the environment."""
    return {
        f.name: f.metadata["setting"]
        for f in dataclasses.fields(Settings)
        if "setting" in f.metadata
    }
