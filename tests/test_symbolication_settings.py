"""Symbolication settings (docs/configuration.md): names, the reference's aliases, checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from symbolon.conf import SettingsError, load_settings


def load(env: dict[str, str]):
    return load_settings(env, dotenv_path=None)


def test_defaults():
    s = load({})
    assert s.symbolication_symbol_urls == ()  # own storage only, unless told otherwise
    assert s.symbols_cache_dir is None  # <data dir>/symcache
    assert s.symbols_cache_max_size == 1073741824
    assert s.symbolication_miss_ttl_seconds == 60
    assert s.symbolication_store_symcaches is True
    assert s.symbolication_include_try_symbols is True


@pytest.mark.parametrize("name", ["SYMBOLICATION_SYMBOL_URLS", "ELIOT_SYMBOLS_URLS"])
def test_upstream_urls_and_the_references_spellings(name):
    s = load({name: "https://symbols.mozilla.org/try/,http://127.0.0.1:9/x"})
    assert s.symbolication_symbol_urls == (
        "https://symbols.mozilla.org/try/",
        "http://127.0.0.1:9/x",
    )


def test_cache_settings_accept_the_eliot_names_and_digit_separators():
    s = load(
        {"ELIOT_SYMBOLS_CACHE_DIR": "/var/cache/sym", "ELIOT_SYMBOLS_CACHE_MAX_SIZE": "400_000_000"}
    )
    assert s.symbols_cache_dir == Path("/var/cache/sym")
    assert s.symbols_cache_max_size == 400_000_000


def test_bad_values_name_the_variable():
    with pytest.raises(SettingsError) as info:
        load({"SYMBOLICATION_SYMBOL_URLS": "ftp://nope", "SYMBOLS_CACHE_MAX_SIZE": "big"})
    text = "\n".join(info.value.problems)
    assert "SYMBOLICATION_SYMBOL_URLS='ftp://nope'" in text
    assert "SYMBOLS_CACHE_MAX_SIZE='big'" in text
