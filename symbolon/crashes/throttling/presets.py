"""Named rule sets and lists, and the throttler the three ``BREAKPAD_THROTTLER_*`` settings make.

Each setting takes a built-in name (the reference's own names work too) or, for the rules, the
path of a rules file; docs/throttling.md ("Settings") lists the accepted values.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from symbolon.crashes.throttling.engine import Result, Rule, Throttler, always_match
from symbolon.crashes.throttling.mozilla import (
    MOZILLA_PRODUCT_PACKAGENAMES,
    MOZILLA_PRODUCTS,
    MOZILLA_RULES,
)
from symbolon.crashes.throttling.rule_files import load_rules_file

ALL_PRODUCTS: tuple[str, ...] = ()
ALL_PRODUCT_PACKAGENAMES: Mapping[str, tuple[str, ...]] = MappingProxyType({})
ACCEPT_ALL: tuple[Rule, ...] = (Rule("accept_everything", "*", always_match, Result.ACCEPT),)

RULE_SETS: Mapping[str, tuple[Rule, ...]] = MappingProxyType(
    {
        "accept_all": ACCEPT_ALL,
        "antenna.throttler.ACCEPT_ALL": ACCEPT_ALL,
        "mozilla": MOZILLA_RULES,
        "antenna.throttler.MOZILLA_RULES": MOZILLA_RULES,
    }
)
PRODUCT_LISTS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "all": ALL_PRODUCTS,
        "antenna.throttler.ALL_PRODUCTS": ALL_PRODUCTS,
        "mozilla": MOZILLA_PRODUCTS,
        "antenna.throttler.MOZILLA_PRODUCTS": MOZILLA_PRODUCTS,
    }
)
PACKAGENAME_MAPS: Mapping[str, Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        "all": ALL_PRODUCT_PACKAGENAMES,
        "antenna.throttler.ALL_PRODUCT_PACKAGENAMES": ALL_PRODUCT_PACKAGENAMES,
        "mozilla": MOZILLA_PRODUCT_PACKAGENAMES,
        "antenna.throttler.MOZILLA_PRODUCT_PACKAGENAMES": MOZILLA_PRODUCT_PACKAGENAMES,
    }
)


def _choices(names: Iterable[str]) -> str:
    return ", ".join(names)


def rules_from_setting(value: str) -> tuple[Rule, ...]:
    """``BREAKPAD_THROTTLER_RULES``: a built-in rule set name, or the path of a rules file."""
    value = value.strip()
    if value in RULE_SETS:
        return RULE_SETS[value]
    path = Path(value)
    if value and path.is_file():
        return load_rules_file(path)
    message = (
        f"{value!r} is neither a built-in rule set ({_choices(RULE_SETS)}) "
        "nor the path of an existing rules file"
    )
    if value and "/" not in value and not value.endswith(".toml") and "." in value:
        message += (
            "; Python rule modules cannot be loaded, write the rules as a TOML file "
            "(docs/throttling.md)"
        )
    raise ValueError(message)


def products_from_setting(value: str) -> tuple[str, ...]:
    """``BREAKPAD_THROTTLER_PRODUCTS``: ``all``, ``mozilla`` or comma-separated product names."""
    value = value.strip()
    if value in PRODUCT_LISTS:
        return PRODUCT_LISTS[value]
    if value.startswith("antenna."):
        # Most likely a misspelt reference name; as a product name it would reject everything.
        raise ValueError(
            f"{value!r} is not a product list of the reference; use one of "
            f"{_choices(PRODUCT_LISTS)}, or comma-separated product names"
        )
    names = tuple(dict.fromkeys(name.strip() for name in value.split(",") if name.strip()))
    if not names:
        raise ValueError(
            f"{value!r} names no product; use 'all' to accept every product, or one of "
            f"{_choices(PRODUCT_LISTS)}, or comma-separated product names"
        )
    return names


def packagenames_from_setting(value: str) -> Mapping[str, tuple[str, ...]]:
    """``BREAKPAD_THROTTLER_PRODUCT_PACKAGENAMES``: ``all`` (no check) or ``mozilla``."""
    value = value.strip()
    if value in PACKAGENAME_MAPS:
        return PACKAGENAME_MAPS[value]
    raise ValueError(
        f"{value!r} is not one of {_choices(PACKAGENAME_MAPS)}; other package checks can be "
        "written as rules in a rules file"
    )


def load_throttler(rules: str, products: str, packagenames: str) -> Throttler:
    """A throttler from the three settings' values; errors name the setting at fault."""
    parsed: list[Any] = []
    for setting, parse, value in (
        ("BREAKPAD_THROTTLER_RULES", rules_from_setting, rules),
        ("BREAKPAD_THROTTLER_PRODUCTS", products_from_setting, products),
        ("BREAKPAD_THROTTLER_PRODUCT_PACKAGENAMES", packagenames_from_setting, packagenames),
    ):
        try:
            parsed.append(parse(value))
        except ValueError as exc:
            raise ValueError(f"{setting}: {exc}") from None
    return Throttler(parsed[0], parsed[1], parsed[2])
