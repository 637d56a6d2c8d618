from pathlib import Path

import pytest

from symbolon.conf import load_settings
from symbolon.conf.settings import declarations
from tests.conftest import repo_root
from tests.environment import REAL, load, problems


def test_defaults_are_the_embedded_development_setup():
    s = load({})
    assert (s.host, s.port) == ("127.0.0.1", 8000)
    assert s.data_dir == Path(".data")
    assert s.embedded_postgres and s.embedded_redis and s.embedded_storage and s.fully_embedded
    assert s.redis_ignore_exceptions is True
    assert (s.redis_socket_connect_timeout, s.redis_socket_timeout) == (1.0, 2.0)
    assert s.symbol_file_prefix == "v1"
    assert s.tokens_default_expiration_days == 365


def test_production_values_are_parsed_into_types():
    s = load({**REAL, "PORT": "9000", "REDIS_IGNORE_EXCEPTIONS": "false", "WORKER_THREADS": "0"})
    assert s.port == 9000 and s.worker_threads == 0
    assert s.redis_ignore_exceptions is False
    assert s.symbol_urls == (
        "https://s3-us-west-2.amazonaws.com/pub/?access=public",
        "https://minio:9000/priv",
    )
    assert not s.embedded_postgres and not s.embedded_redis and not s.embedded_storage


@pytest.mark.parametrize("prefix", ["DJANGO_", "ELIOT_"])
def test_prefixed_spellings_are_aliases(prefix):
    env = {prefix + k: v for k, v in REAL.items()}
    s = load(env)
    assert s.database_url == REAL["DATABASE_URL"]
    assert s.upload_default_url == REAL["UPLOAD_DEFAULT_URL"]


def test_unprefixed_name_wins_over_alias():
    s = load({**REAL, "PORT": "9001", "DJANGO_PORT": "9002"})
    assert s.port == 9001


def test_reference_names_for_logging_and_sentry():
    s = load({"LOGGING_DEFAULT_LEVEL": "debug", "SECRET_SENTRY_DSN": "https://k@sentry/1"})
    assert s.logging_level == "DEBUG"
    assert s.sentry_dsn == "https://k@sentry/1"


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("PORT", "eighty", "PORT='eighty': expected a whole number >= 0"),
        (
            "REDIS_IGNORE_EXCEPTIONS",
            "maybe",
            "REDIS_IGNORE_EXCEPTIONS='maybe': expected true or false",
        ),
        (
            "REDIS_SOCKET_TIMEOUT",
            "-1",
            "REDIS_SOCKET_TIMEOUT='-1': expected a number of seconds > 0",
        ),
        ("LOGGING_LEVEL", "LOUD", "LOGGING_LEVEL='LOUD': expected one of"),
        ("DATABASE_URL", "mysql://x", "DATABASE_URL='mysql://x': expected a postgresql:// URL"),
        (
            "UPLOAD_URL_EXCEPTIONS",
            "[1, 2]",
            "UPLOAD_URL_EXCEPTIONS='[1, 2]': expected a dict literal",
        ),
        (
            "UPLOAD_URL_EXCEPTIONS",
            "{oops",
            "UPLOAD_URL_EXCEPTIONS='{oops': expected a dict literal",
        ),
        (
            "SYMBOL_URLS",
            "s3://bucket",
            "SYMBOL_URLS='s3://bucket': expected comma-separated http(s)",
        ),
    ],
)
def test_bad_value_names_the_variable_and_what_was_expected(name, value, expected):
    found = problems({name: value})
    assert any(p.startswith(expected) for p in found), found


def test_the_prefixed_spelling_is_named_when_it_is_the_bad_one():
    assert problems({"DJANGO_PORT": "x"})[0].startswith("DJANGO_PORT='x'")


def test_every_problem_is_reported_at_once():
    found = problems({"PORT": "x", "WORKER_THREADS": "-2", "DEBUG": "perhaps"})
    assert len(found) == 3


def test_redis_urls_come_in_pairs():
    found = problems({"REDIS_URL": "redis://cache"})
    assert any("REDIS_STORE_URL" in p for p in found)


def test_upload_default_url_must_be_a_read_location():
    env = {**REAL, "UPLOAD_DEFAULT_URL": "https://minio:9000/elsewhere"}
    assert any(p.startswith("UPLOAD_DEFAULT_URL=") and "SYMBOL_URLS" in p for p in problems(env))


def test_upload_default_url_is_required_with_symbol_urls():
    env = {k: v for k, v in REAL.items() if k != "UPLOAD_DEFAULT_URL"}
    assert any(p.startswith("UPLOAD_DEFAULT_URL") for p in problems(env))


def test_upload_url_without_symbol_urls_is_refused():
    assert any("SYMBOL_URLS" in p for p in problems({"UPLOAD_DEFAULT_URL": "http://h/b"}))


def test_unknown_aws_region_stops_start_up():
    env = {
        **REAL,
        "SYMBOL_URLS": "https://s3-moon-1.amazonaws.com/b",
        "UPLOAD_DEFAULT_URL": "https://s3-moon-1.amazonaws.com/b",
    }
    assert any("unknown AWS region 'moon-1'" in p for p in problems(env))


def test_secret_key_is_required_outside_the_embedded_setup():
    env = {k: v for k, v in REAL.items() if k != "SECRET_KEY"}
    assert any(p.startswith("SECRET_KEY") for p in problems(env))
    assert load({**env, "LOCAL_DEV_ENV": "true"}).secret_key is None


def test_dotenv_file_fills_what_the_environment_lacks(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text("PORT=9100\nHOST=0.0.0.0\n")
    s = load_settings({"PORT": "9200"}, dotenv_path=dotenv)
    assert s.port == 9200  # the environment wins
    assert s.host == "0.0.0.0"


def test_crash_settings_default_to_a_collector_that_accepts_everything():
    s = load({})
    assert s.enable_crash_collector and s.crash_storage == "s3"
    assert (s.breakpad_throttler_rules, s.breakpad_throttler_products) == ("accept_all", "all")
    assert s.collector_max_body_size == 26_214_400
    assert (s.crashmover_max_attempts, s.crashmover_retry_sleep_seconds) == (5, 2.0)
    assert s.crashpublish_queue_name == "socorro.standard"
    assert s.crash_dir == Path(".data/crashes")


def test_a_crash_bucket_is_required_beside_real_symbol_storage():
    env = {k: v for k, v in REAL.items() if k != "CRASHMOVER_CRASHSTORAGE_BUCKET_NAME"}
    assert any(p.startswith("CRASHMOVER_CRASHSTORAGE_BUCKET_NAME") for p in problems(env))
    assert not load({**env, "ENABLE_CRASH_COLLECTOR": "false"}).enable_crash_collector
    fs = load(
        {**env, "CRASHMOVER_CRASHSTORAGE_CLASS": "antenna.ext.fs.crashstorage.FSCrashStorage"}
    )
    assert fs.crash_storage == "fs"


def test_crash_storage_settings_accept_the_reference_aliases():
    s = load(
        {
            **REAL,
            "CRASHMOVER_CRASHSTORAGE_CLASS": "antenna.ext.s3.crashstorage.S3CrashStorage",
            "S3_REGION": "eu-central-1",
            "S3_ENDPOINT_URL": "http://minio:9000",
        }
    )
    assert (s.crash_storage, s.crash_region) == ("s3", "eu-central-1")
    assert s.crash_endpoint_url == "http://minio:9000"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CRASHMOVER_CRASHSTORAGE_CLASS", "antenna.ext.crashstorage_base.NoOpCrashStorage"),
        ("CRASHMOVER_CRASHPUBLISH_QUEUE_NAME", "no spaces"),
        ("CRASHMOVER_CONCURRENT_CRASHMOVERS", "0"),
        ("CRASHMOVER_MAX_ATTEMPTS", "0"),
        ("BREAKPAD_THROTTLER_RULES", "antenna.throttler.NO_SUCH_RULES"),
        ("BREAKPAD_THROTTLER_PRODUCTS", ","),
    ],
)
def test_bad_crash_settings_stop_start_up(name, value):
    assert any(name.split("_")[0] in p for p in problems({name: value}))


def test_every_problem_is_reported_at_once_values_storage_and_throttling_alike():
    found = problems(
        {
            **REAL,
            "PORT": "eighty",
            "UPLOAD_URL_EXCEPTIONS": '{"*@x.com": "not a url"}',
            "BREAKPAD_THROTTLER_RULES": "antenna.throttler.NO_SUCH_RULES",
        }
    )
    for name in ("PORT=", "UPLOAD_URL_EXCEPTIONS", "BREAKPAD_THROTTLER_RULES"):
        assert any(p.startswith(name) for p in found), (name, found)


def test_the_settings_package_alone_leaves_domain_checks_to_the_runtime():
    # Reading values needs nothing of the storage or throttling code.
    s = load_settings({**REAL, "BREAKPAD_THROTTLER_RULES": "NO_SUCH_RULES"}, dotenv_path=None)
    assert s.breakpad_throttler_rules == "NO_SUCH_RULES"


def test_each_variable_is_declared_once():
    names = [d.env for d in declarations().values()]
    names += [alias for d in declarations().values() for alias in d.aliases]
    assert sorted(n for n in set(names) if names.count(n) > 1) == []


def test_every_declared_variable_is_documented_for_operators():
    page = (repo_root() / "docs" / "configuration.md").read_text()
    missing = [d.env for d in declarations().values() if f"`{d.env}`" not in page]
    assert missing == []


def test_a_derived_default_follows_its_setting_unless_given():
    assert load({}).session_cookie_secure is True
    assert load({"LOCAL_DEV_ENV": "true"}).session_cookie_secure is False
    assert load({"LOCAL_DEV_ENV": "true", "SESSION_COOKIE_SECURE": "true"}).session_cookie_secure
