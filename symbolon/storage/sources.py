"""Symbol sources and upload destinations, parsed from URLs (docs/configuration.md,
"Symbol storage").

A URL such as ``https://s3-us-west-2.amazonaws.com/bucket/pfx?access=public`` names a bucket
(first path segment), an optional prefix (the rest of the path), whether objects are public, the
AWS region (from the host) or, for any non-AWS host, the endpoint of an S3-compatible server.

``file:///srv/symbols?access=public`` names a directory on this machine instead: its path takes the
place of the bucket, with no prefix.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit

from symbolon.conf import Settings, SettingsError

AWS_HOST = re.compile(r"^(?:.+\.)?s3[.-](?P<region>[a-z0-9-]+)\.amazonaws\.com$")
FILE_SCHEME = "file"
# Hex characters of a location id: enough that two locations of one configuration never share one.
LOCATION_ID_LENGTH = 16


@functools.cache
def _known_regions() -> frozenset[str]:
    import botocore.session

    session = botocore.session.get_session()
    regions: set[str] = set()
    for partition in session.get_available_partitions():
        regions.update(session.get_available_regions("s3", partition_name=partition))
    return frozenset(regions)


@dataclass(frozen=True)
class SymbolSource:
    """One storage location that symbols can be read from or written to."""

    url: str
    scheme: str
    netloc: str
    bucket: str
    prefix: str
    object_prefix: str
    public: bool
    region: str | None
    endpoint_url: str | None

    @classmethod
    def parse(cls, url: str, file_prefix: str = "v1") -> SymbolSource:
        parts = urlsplit(url)
        if parts.scheme == FILE_SCHEME:
            return cls(
                url=url,
                scheme=FILE_SCHEME,
                netloc="",
                bucket=_directory(url, parts.netloc, parts.path),
                prefix="",
                object_prefix=file_prefix,
                public="access=public" in parts.query,
                region=None,
                endpoint_url=None,
            )
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"{url!r} is not an http(s) URL with a host, nor a file:// URL")
        segments = parts.path.lstrip("/").split("/", 1)
        bucket = segments[0]
        if not bucket:
            raise ValueError(f"{url!r} names no bucket (the first path segment)")
        prefix = segments[1] if len(segments) > 1 else ""
        if prefix.endswith("/"):
            prefix = prefix[:-1]
        object_prefix = f"{prefix}/{file_prefix}" if prefix else file_prefix
        host = (parts.hostname or "").lower()
        region: str | None = None
        endpoint_url: str | None = None
        if host.endswith(".amazonaws.com"):
            match = AWS_HOST.match(host)
            if match:
                region = match.group("region")
                if region not in _known_regions():
                    raise ValueError(f"{url!r} names an unknown AWS region {region!r}")
        else:
            endpoint_url = f"{parts.scheme}://{parts.netloc}"
        return cls(
            url=url,
            scheme=parts.scheme,
            netloc=parts.netloc,
            bucket=bucket,
            prefix=prefix,
            object_prefix=object_prefix,
            public="access=public" in parts.query,
            region=region,
            endpoint_url=endpoint_url,
        )

    @property
    def is_directory(self) -> bool:
        """A directory on this machine (``file://``) rather than an S3 bucket."""
        return self.scheme == FILE_SCHEME

    @property
    def location_id(self) -> str:
        """A short stable name for the location in URLs (``/storage/<id>/…``); the query
        (``access=``) is left out, so it names the place, whoever may read it."""
        if self.is_directory:
            place = f"{FILE_SCHEME}://{self.bucket}"
        else:
            parts = urlsplit(self.url)
            place = urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
        return hashlib.sha256(place.encode()).hexdigest()[:LOCATION_ID_LENGTH]

    @property
    def base_url(self) -> str:
        if self.is_directory:
            return f"{FILE_SCHEME}://{self.bucket}"
        return f"{self.scheme}://{self.netloc}/{self.bucket}"

    def object_key(self, key: str) -> str:
        """The bucket key of a logical key ``<debug_file>/<debug_id>/<symbol_file>``."""
        return f"{self.object_prefix}/{key}"

    def public_url(self, key: str) -> str:
        return f"{self.base_url}/{self.object_key(key)}"


def _directory(url: str, host: str, path: str) -> str:
    """The absolute, normalised directory a ``file://`` URL names; ValueError naming the URL."""
    if host.lower() not in ("", "localhost"):
        raise ValueError(f"{url!r} names the host {host!r}: a file:// URL names this machine only")
    decoded = unquote(path)
    if not decoded.startswith("/"):
        raise ValueError(f"{url!r} is not an absolute path (file:///absolute/directory)")
    if "\x00" in decoded:
        raise ValueError(f"{url!r} has a NUL character in its path")
    segments = [s for s in decoded.split("/") if s]
    if any(s in (".", "..") for s in segments):
        raise ValueError(f"{url!r} has '.' or '..' segments: name the directory itself")
    if not segments:
        raise ValueError(f"{url!r} names the file-system root, not a directory of its own")
    return "/" + "/".join(segments)


def derive_try_url(upload_url: str) -> str:
    """Insert a ``try`` segment right after the bucket: ``/bucket/pfx`` → ``/bucket/try/pfx``.
    A directory's try location is its ``try`` subdirectory, a location of its own whose keys
    sit beside the directory's ``v1/``, as they do in a bucket."""
    parts = urlsplit(upload_url)
    if parts.scheme == FILE_SCHEME:
        path = f"{parts.path.rstrip('/')}/try"
        return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))
    segments = parts.path.lstrip("/").split("/", 1)
    rest = f"/{segments[1]}" if len(segments) > 1 and segments[1] else ""
    path = f"/{segments[0]}/try{rest}"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, parts.fragment))


def config_hash(symbol_urls: Iterable[str]) -> str:
    """Five hex characters that change whenever the list of read locations changes."""
    return hashlib.md5("".join(symbol_urls).encode(), usedforsecurity=False).hexdigest()[:5]


def _access_conflicts(locations: Iterable[SymbolSource]) -> list[str]:
    """Directory locations that are one directory, or one inside the other, with different
    access: whichever the route served first would decide who reads the other's files."""
    directories = list({s.url: s for s in locations if s.is_directory}.values())
    problems = []
    for i, outer in enumerate(directories):
        for inner in directories[i + 1 :]:
            if outer.public == inner.public:
                continue
            a, b = sorted((outer, inner), key=lambda s: len(s.bucket))
            if a.bucket == b.bucket or b.bucket.startswith(a.bucket + "/"):
                problems.append(
                    f"{a.url!r} and {b.url!r} are the same directory or one inside the other, "
                    "but one is public (access=public) and the other private: give them the "
                    "same access"
                )
    return problems


@dataclass(frozen=True)
class StorageConfig:
    sources: tuple[SymbolSource, ...]
    upload_default: SymbolSource
    upload_try: SymbolSource
    upload_exceptions: tuple[tuple[str, SymbolSource], ...]
    hash: str

    @classmethod
    def from_settings(cls, settings: Settings) -> StorageConfig:
        """Parse and cross-check the storage variables; problems name the variable."""
        problems: list[str] = []
        prefix = settings.symbol_file_prefix

        def parse(name: str, url: str) -> SymbolSource | None:
            try:
                return SymbolSource.parse(url, prefix)
            except ValueError as exc:
                problems.append(f"{name}: {exc}")
                return None

        sources = [parse("SYMBOL_URLS", url) for url in settings.symbol_urls]
        default_url = settings.upload_default_url
        if not default_url:
            problems.append("UPLOAD_DEFAULT_URL: required")
        elif default_url not in settings.symbol_urls:
            problems.append(
                f"UPLOAD_DEFAULT_URL={default_url!r} is not one of SYMBOL_URLS "
                "(uploads would go to a location that downloads never read)"
            )
        default = parse("UPLOAD_DEFAULT_URL", default_url) if default_url else None
        try_url = settings.upload_try_symbols_url or (
            derive_try_url(default_url) if default_url else None
        )
        upload_try = parse("UPLOAD_TRY_SYMBOLS_URL", try_url) if try_url else None
        exceptions = []
        for pattern, url in settings.upload_url_exceptions.items():
            if not url.startswith(("http://", "https://", "file:")):
                problems.append(f"UPLOAD_URL_EXCEPTIONS: {url!r} (for {pattern!r}) is not a URL")
                continue
            source = parse("UPLOAD_URL_EXCEPTIONS", url)
            if source is not None:
                exceptions.append((pattern.lower(), source))
        configured = [*sources, default, upload_try, *(source for _, source in exceptions)]
        problems += _access_conflicts([s for s in configured if s is not None])
        if problems:
            raise SettingsError(problems)
        assert default is not None and upload_try is not None
        return cls(
            sources=tuple(s for s in sources if s is not None),
            upload_default=default,
            upload_try=upload_try,
            upload_exceptions=tuple(exceptions),
            hash=config_hash(settings.symbol_urls),
        )

    def upload_destination(self, email: str, try_symbols: bool = False) -> SymbolSource:
        """Where an upload goes (docs/upload.md): try, a matching exception, or the default."""
        if try_symbols:
            return self.upload_try
        for pattern, source in self.upload_exceptions:
            if fnmatch.fnmatchcase(email.lower(), pattern):
                return source
        return self.upload_default

    def possible_upload_sources(self, email: str, superuser: bool) -> list[SymbolSource]:
        """Where a user may choose to upload: matching exceptions, else the default."""
        matching = [
            source
            for pattern, source in self.upload_exceptions
            if superuser or fnmatch.fnmatchcase(email.lower(), pattern)
        ]
        return matching or [self.upload_default]

    def all_buckets(self) -> list[SymbolSource]:
        """Every distinct (endpoint, bucket) the configuration touches, first occurrence kept."""
        seen: set[tuple[str | None, str | None, str]] = set()
        result = []
        candidates = [*self.sources, self.upload_default, self.upload_try]
        candidates += [source for _, source in self.upload_exceptions]
        for source in candidates:
            ident = (source.endpoint_url, source.region, source.bucket)
            if ident not in seen:
                seen.add(ident)
                result.append(source)
        return result

    def writes_to(self, source: SymbolSource) -> bool:
        """True if uploads may write into this source's bucket."""
        writers = [self.upload_default, self.upload_try, *(s for _, s in self.upload_exceptions)]
        return any(
            (w.endpoint_url, w.region, w.bucket)
            == (source.endpoint_url, source.region, source.bucket)
            for w in writers
        )
