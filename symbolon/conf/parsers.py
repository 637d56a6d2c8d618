"""How a setting's text becomes a value, and what to tell the operator when it cannot."""

from __future__ import annotations

import ast
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TRUE_WORDS = frozenset({"true", "yes", "1", "on"})
FALSE_WORDS = frozenset({"false", "no", "0", "off"})
LOG_LEVELS = frozenset({"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"})
# "none" is never accepted: an unsigned ID token proves nothing.
OIDC_SIGN_ALGORITHMS = frozenset(
    {"HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "ES256", "PS256"}
)
# The reference collector's class paths are accepted for its two stores.
CRASH_STORAGE_NAMES = {
    "s3": "s3",
    "antenna.ext.s3.crashstorage.S3CrashStorage": "s3",
    "fs": "fs",
    "antenna.ext.fs.crashstorage.FSCrashStorage": "fs",
}


@dataclass(frozen=True)
class Parser:
    """``parse`` raises ValueError (or SyntaxError, TypeError) for text it cannot use;
    ``expected`` completes "NAME='value': expected …"."""

    parse: Callable[[str], Any]
    expected: str


def _bounded(kind: type, minimum: float) -> Callable[[str], Any]:
    def parse(value: str) -> Any:
        number = kind(value)
        if number < minimum or (kind is float and number <= 0):
            raise ValueError("out of range")
        return number

    return parse


def integer(minimum: int = 0) -> Parser:
    return Parser(_bounded(int, minimum), f"a whole number >= {minimum}")


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


def _parse_location_url(value: str) -> str:
    # A symbol location may also be a directory; its form is checked with the storage settings.
    if not value.startswith(("http://", "https://", "file:")):
        raise ValueError(f"{value!r} does not start with http://, https:// or file://")
    return value


def _parse_location_url_list(value: str) -> tuple[str, ...]:
    return tuple(_parse_location_url(part.strip()) for part in value.split(",") if part.strip())


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


def choice(choices: frozenset[str]) -> Parser:
    def parse(value: str) -> str:
        if value.upper() in choices:
            return value.upper()
        if value.lower() in choices:
            return value.lower()
        raise ValueError("")

    return Parser(parse, "one of " + ", ".join(sorted(choices)))


def listing(expected: str) -> Parser:
    return Parser(_parse_list, expected)


def _starting_with(*schemes: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if not value.startswith(schemes):
            raise ValueError("")
        return value

    return parse


def _parse_name(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9._-]*", value):
        raise ValueError("")
    return value


def _parse_regex(value: str) -> str:
    try:
        re.compile(value)
    except re.error as exc:
        raise ValueError(str(exc)) from None
    return value


def _parse_crash_storage(value: str) -> str:
    if value not in CRASH_STORAGE_NAMES:
        raise ValueError("")
    return CRASH_STORAGE_NAMES[value]


text = Parser(str, "text")
path = Parser(Path, "a directory")
boolean = Parser(_parse_bool, "true or false")
seconds = Parser(_bounded(float, 0.0), "a number of seconds > 0")
positive = Parser(_bounded(float, 0.0), "a number > 0")
url = Parser(_parse_url, "an http(s) URL")
url_list = Parser(_parse_url_list, "comma-separated http(s) URLs")
location_url = Parser(_parse_location_url, "an http(s) or file:// URL")
location_url_list = Parser(_parse_location_url_list, "comma-separated http(s) or file:// URLs")
str_dict = Parser(_parse_str_dict, 'a dict literal like {"key": "value"}')
networks = Parser(_parse_networks, "comma-separated CIDRs")
key_prefix = Parser(lambda value: value.strip("/"), "text")
postgres_url = Parser(_starting_with("postgres://", "postgresql://"), "a postgresql:// URL")
redis_url = Parser(
    _starting_with("redis://", "rediss://", "unix://"), "a redis://, rediss:// or unix:// URL"
)
queue_name = Parser(_parse_name, "a queue name of letters, digits, '.', '_' and '-'")
actor_name = Parser(_parse_name, "an actor name of letters, digits, '.', '_' and '-'")
regex = Parser(_parse_regex, "a Python regular expression")
crash_storage = Parser(
    _parse_crash_storage, "s3, fs, or the reference's S3CrashStorage/FSCrashStorage class path"
)
