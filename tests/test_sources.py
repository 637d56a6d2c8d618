import hashlib

import pytest

from symbolon.conf import SettingsError
from symbolon.storage.sources import SymbolSource, config_hash, derive_try_url
from tests.environment import storage

PUBLIC = "https://s3-us-west-2.amazonaws.com/org.mozilla.crash-stats.symbols-public/?access=public"


def test_public_aws_url_of_mozilla_public_symbols():
    s = SymbolSource.parse(PUBLIC)
    assert (s.scheme, s.netloc) == ("https", "s3-us-west-2.amazonaws.com")
    assert s.bucket == "org.mozilla.crash-stats.symbols-public"
    assert s.prefix == ""
    assert s.object_prefix == "v1"
    assert s.public is True
    assert s.region == "us-west-2"
    assert s.endpoint_url is None
    assert s.base_url == (
        "https://s3-us-west-2.amazonaws.com/org.mozilla.crash-stats.symbols-public"
    )


def test_dotted_region_host_is_recognised():
    assert SymbolSource.parse("https://s3.eu-central-1.amazonaws.com/b").region == "eu-central-1"


def test_aws_host_without_region():
    s = SymbolSource.parse("https://s3.amazonaws.com/bucket")
    assert s.region is None and s.endpoint_url is None


def test_private_is_the_default():
    assert SymbolSource.parse("https://s3.amazonaws.com/b").public is False
    assert SymbolSource.parse("https://s3.amazonaws.com/b?access=private").public is False


def test_public_is_a_substring_match_on_the_query():
    assert SymbolSource.parse("https://h/b?x=1&access=public&y=2").public is True


@pytest.mark.parametrize(
    ("url", "prefix", "object_prefix"),
    [
        ("http://s3.example.com/bucket", "", "v1"),
        ("http://s3.example.com/bucket/", "", "v1"),
        ("http://s3.example.com/bucket/try", "try", "try/v1"),
        ("http://s3.example.com/bucket/fail/", "fail", "fail/v1"),
        ("http://s3.example.com/bucket/rest/is/prefix", "rest/is/prefix", "rest/is/prefix/v1"),
    ],
)
def test_prefix_forms(url, prefix, object_prefix):
    s = SymbolSource.parse(url)
    assert s.bucket == "bucket"
    assert (s.prefix, s.object_prefix) == (prefix, object_prefix)


def test_non_aws_host_is_an_s3_compatible_endpoint():
    s = SymbolSource.parse("http://minio:9000/symbols/sub?access=public")
    assert s.endpoint_url == "http://minio:9000"
    assert s.region is None
    assert s.base_url == "http://minio:9000/symbols"


def test_object_key_and_public_url():
    s = SymbolSource.parse("http://minio:9000/symbols/try")
    key = "xul.pdb/44E4EC8C2F41492B9369D6B9A059577C2/xul.sym"
    assert s.object_key(key) == f"try/v1/{key}"
    assert s.public_url(key) == f"http://minio:9000/symbols/try/v1/{key}"


def test_custom_symbol_file_prefix():
    assert SymbolSource.parse("http://h/b/p", file_prefix="v2").object_prefix == "p/v2"


@pytest.mark.parametrize("url", ["http://h/", "http://h", "ftp://h/b", "/just/a/path"])
def test_urls_without_bucket_or_host_are_refused(url):
    with pytest.raises(ValueError):
        SymbolSource.parse(url)


@pytest.mark.parametrize(
    ("upload", "expected"),
    [
        ("https://host/bucket/pfx?access=public", "https://host/bucket/try/pfx?access=public"),
        ("https://host/bucket", "https://host/bucket/try"),
        ("https://host/bucket/", "https://host/bucket/try"),
    ],
)
def test_try_url_is_derived_by_inserting_try_after_the_bucket(upload, expected):
    assert derive_try_url(upload) == expected
    assert SymbolSource.parse(expected).object_prefix.startswith("try/")


def test_config_hash_is_five_hex_of_md5_of_the_joined_urls():
    urls = ["http://a/b", "http://c/d?access=public"]
    assert config_hash(urls) == hashlib.md5(b"http://a/bhttp://c/d?access=public").hexdigest()[:5]
    assert config_hash(urls) != config_hash(list(reversed(urls)))


def test_storage_config_keeps_source_order_and_derives_try():
    config = storage()
    assert [s.bucket for s in config.sources] == ["public", "private"]
    assert config.upload_default.bucket == "private"
    assert config.upload_try.url == "http://minio:9000/private/try"
    assert config.upload_try.object_prefix == "try/v1"
    assert config.hash == config_hash(
        ["http://minio:9000/public?access=public", "http://minio:9000/private"]
    )


def test_explicit_try_url_wins():
    config = storage(UPLOAD_TRY_SYMBOLS_URL="http://minio:9000/trybucket")
    assert config.upload_try.bucket == "trybucket"


def test_upload_exceptions_match_email_globs_case_insensitively():
    config = storage(
        UPLOAD_URL_EXCEPTIONS='{"*@Example.com": "http://minio:9000/partner", '
        '"boss@corp.org": "http://minio:9000/boss"}'
    )
    assert config.upload_destination("Someone@EXAMPLE.com").bucket == "partner"
    assert config.upload_destination("boss@corp.org").bucket == "boss"
    assert config.upload_destination("other@corp.org").bucket == "private"
    assert config.upload_destination("someone@example.com", try_symbols=True).bucket == "private"


def test_upload_exception_with_a_bad_url_names_the_variable():
    with pytest.raises(SettingsError) as info:
        storage(UPLOAD_URL_EXCEPTIONS='{"*@x.com": "not a url"}')
    assert info.value.problems[0].startswith("UPLOAD_URL_EXCEPTIONS")


def test_all_buckets_lists_each_bucket_once():
    config = storage(UPLOAD_URL_EXCEPTIONS='{"*@x.com": "http://minio:9000/partner"}')
    assert [b.bucket for b in config.all_buckets()] == ["public", "private", "partner"]
    assert config.writes_to(config.sources[1])
    assert not config.writes_to(config.sources[0])


# -- directories on this machine (file:// URLs)


@pytest.mark.parametrize(
    ("url", "directory", "public"),
    [
        ("file:///srv/symbols", "/srv/symbols", False),
        ("file:///srv/symbols/", "/srv/symbols", False),
        ("file://localhost/srv/symbols?access=public", "/srv/symbols", True),
        ("file://LOCALHOST/srv//symbols", "/srv/symbols", False),
        ("file:///srv/my%20symbols", "/srv/my symbols", False),
    ],
)
def test_a_file_url_names_a_directory_in_place_of_the_bucket(url, directory, public):
    s = SymbolSource.parse(url)
    assert s.is_directory
    assert (s.bucket, s.prefix, s.object_prefix) == (directory, "", "v1")
    assert (s.endpoint_url, s.region, s.public) == (None, None, public)
    assert s.url == url
    assert SymbolSource.parse(url, file_prefix="v2").object_prefix == "v2"
    assert s.object_key("a.pdb/ID/a.sym") == "v1/a.pdb/ID/a.sym"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("file://host/srv/symbols", "names the host 'host'"),
        ("file://symbols", "names the host 'symbols'"),
        ("file:symbols", "not an absolute path"),
        ("file:///srv/../etc", "'..' segments"),
        ("file:///srv/%2e%2e/etc", "'..' segments"),
        ("file:///srv/./symbols", "'.' or '..' segments"),
        ("file:///", "file-system root"),
        ("file:///srv/a%00b", "NUL"),
    ],
)
def test_a_file_url_that_is_not_an_absolute_local_directory_is_refused_by_name(url, reason):
    with pytest.raises(ValueError) as info:
        SymbolSource.parse(url)
    assert repr(url) in str(info.value) and reason in str(info.value)


def test_a_location_id_is_short_stable_and_ignores_the_query():
    a = SymbolSource.parse("file:///srv/symbols?access=public")
    assert len(a.location_id) == 16 and int(a.location_id, 16) >= 0
    assert a.location_id == SymbolSource.parse("file://localhost/srv/symbols/").location_id
    assert a.location_id == hashlib.sha256(b"file:///srv/symbols").hexdigest()[:16]
    assert a.location_id != SymbolSource.parse("file:///srv/symbols/try").location_id
    bucket = SymbolSource.parse("http://minio:9000/symbols?access=public")
    assert bucket.location_id == SymbolSource.parse("http://minio:9000/symbols/").location_id
    assert bucket.location_id != SymbolSource.parse("http://minio:9000/other").location_id


@pytest.mark.parametrize(
    ("upload", "expected"),
    [
        ("file:///srv/symbols", "file:///srv/symbols/try"),
        ("file:///srv/symbols/?access=public", "file:///srv/symbols/try?access=public"),
        ("file://localhost/srv/symbols", "file://localhost/srv/symbols/try"),
    ],
)
def test_a_directory_try_location_is_its_try_subdirectory(upload, expected):
    assert derive_try_url(upload) == expected
    default, try_ = SymbolSource.parse(upload), SymbolSource.parse(expected)
    # As in a bucket: the try keys sit beside the default's v1/, not inside it.
    assert try_.bucket == default.bucket + "/try"
    assert f"{try_.bucket}/{try_.object_key('k')}" == f"{default.bucket}/try/v1/k"


def test_storage_settings_take_directories_everywhere_a_bucket_goes():
    config = storage(
        SYMBOL_URLS="file:///srv/public?access=public,file:///srv/private",
        UPLOAD_DEFAULT_URL="file:///srv/private",
        UPLOAD_URL_EXCEPTIONS='{"*@partner.example": "file:///srv/partner"}',
    )
    assert [s.bucket for s in config.sources] == ["/srv/public", "/srv/private"]
    assert config.upload_try.bucket == "/srv/private/try"
    assert config.upload_destination("a@partner.example").bucket == "/srv/partner"
    assert [b.bucket for b in config.all_buckets()] == [
        "/srv/public",
        "/srv/private",
        "/srv/private/try",
        "/srv/partner",
    ]
    assert storage(UPLOAD_TRY_SYMBOLS_URL="file:///srv/try").upload_try.bucket == "/srv/try"


def test_a_bad_directory_url_in_the_settings_names_the_variable_and_the_url():
    with pytest.raises(SettingsError) as info:
        storage(UPLOAD_URL_EXCEPTIONS='{"*@x.com": "file://elsewhere/srv"}')
    assert info.value.problems[0].startswith("UPLOAD_URL_EXCEPTIONS: 'file://elsewhere/srv'")
    with pytest.raises(SettingsError) as info:
        storage(SYMBOL_URLS="file:///srv/../x", UPLOAD_DEFAULT_URL="file:///srv/../x")
    assert info.value.problems[0].startswith("SYMBOL_URLS: 'file:///srv/../x'")
