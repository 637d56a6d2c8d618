"""Upload by download: fetch an archive from a URL, safely (docs/upload.md, "Upload by URL").

Every URL on the way, the first and each redirect, must be https on an allowed domain, and the
addresses a host resolves to are checked when connecting: loopback, private, link-local and other
special addresses are refused unless a network is explicitly allowed. So an uploader cannot make
the server fetch from inside its own network (SSRF), neither directly nor through a redirect nor
through a DNS answer that changes between check and use.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from symbolon.conf import Settings

MAX_REDIRECTS = 5
CHUNK = 1 << 20
# A download's average rate is held to the minimum only after this long: connections start slowly.
RATE_GRACE_SECONDS = 30.0
# Browsers read a host whose last label is a number as an IPv4 address ("127.1", "2130706433").
NUMERIC_LABEL = re.compile(r"(0x[0-9a-f]*|[0-9]+)")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class FetchError(Exception):
    """Answered with ``status`` and ``{"error": message}``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class FetchPolicy:
    allowed_domains: frozenset[str] | None  # None: any domain (local development)
    require_https: bool = True
    allow_private: bool = False
    allowed_networks: tuple[Network, ...] = field(default_factory=tuple)
    deadline: float = 900.0  # seconds for the whole download, redirects included
    min_rate: int = 0  # bytes per second, averaged, after rate_grace seconds; 0: none
    rate_grace: float = RATE_GRACE_SECONDS

    @classmethod
    def from_settings(cls, settings: Settings) -> FetchPolicy:
        deadline = settings.upload_by_download_deadline_seconds
        min_rate = settings.upload_by_download_min_rate
        if settings.allow_upload_by_any_domain:
            return cls(
                allowed_domains=None,
                require_https=False,
                allow_private=True,
                deadline=deadline,
                min_rate=min_rate,
            )
        return cls(
            allowed_domains=frozenset(d.lower() for d in settings.allow_upload_by_download_domains),
            allowed_networks=tuple(
                ipaddress.ip_network(n) for n in settings.upload_by_download_allowed_networks
            ),
            deadline=deadline,
            min_rate=min_rate,
        )

    def check_url(self, url: str) -> None:
        """The scheme and domain rules, for the first URL and every redirect."""
        try:
            parts = urlsplit(url)
            hostname = parts.hostname
        except ValueError:  # an unclosed "[" of an IPv6 address, a bad port…
            raise FetchError(400, "Enter a valid URL.") from None
        if parts.scheme not in ("http", "https") or not hostname:
            raise FetchError(400, "Enter a valid URL.")
        if self.require_https and parts.scheme != "https":
            raise FetchError(400, "Insecure URL")
        host = hostname.lower()
        if "\x00" in url:
            raise FetchError(400, "Enter a valid URL: it contains a NUL character.")
        if _shorthand_ipv4(host):
            raise FetchError(
                400,
                f"Enter a valid URL: {host!r} is neither a host name nor an IP address written "
                "as four decimal numbers (a.b.c.d).",
            )
        if self.allowed_domains is not None and host not in self.allowed_domains:
            raise FetchError(400, f"Not an allowed domain ({host!r}) to download from.")
        # An address in the URL itself is never resolved, so check it here; a name (ValueError
        # from ip_address) is checked when it is resolved.
        with suppress(ValueError):
            self.check_address(host, host)

    def check_address(self, host: str, address: str) -> None:
        ip = ipaddress.ip_address(address)
        if self.allow_private or any(ip in network for network in self.allowed_networks):
            return
        if not ip.is_global or ip.is_multicast:
            raise FetchError(
                400, f"Refusing to download from {host}: it resolves to a non-public address ({ip})"
            )


def _shorthand_ipv4(host: str) -> bool:
    """Whether ``host`` ends in a number but is not a plain dotted-quad: a form ("127.1",
    "2130706433", "0x7f.1") that resolvers read differently, so it is refused, not guessed."""
    if ":" in host:
        return False  # IPv6, checked as an address
    if not NUMERIC_LABEL.fullmatch(host.rstrip(".").rsplit(".", 1)[-1]):
        return False
    try:
        return not isinstance(ipaddress.ip_address(host), ipaddress.IPv4Address)
    except ValueError:
        return True


class CheckedResolver(AbstractResolver):
    """Resolves as usual, then refuses addresses the policy does not allow."""

    def __init__(self, policy: FetchPolicy):
        self.policy = policy
        self.inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self.inner.resolve(host, port, family)
        for result in results:
            self.policy.check_address(host, result["host"])
        return results

    async def close(self) -> None:
        await self.inner.close()


@dataclass
class Fetched:
    size: int
    redirect_urls: list[str]


def session(policy: FetchPolicy, timeout: float = 300.0) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(resolver=CheckedResolver(policy), use_dns_cache=False),
        timeout=aiohttp.ClientTimeout(total=None, connect=5, sock_read=timeout),
        headers={"User-Agent": "symbolon/1.0"},
    )


async def _follow(
    http: aiohttp.ClientSession, policy: FetchPolicy, method: str, url: str, seen: list[str]
) -> Any:
    """Send ``method``, following redirects by hand so that each hop is checked."""
    current = url
    for _ in range(MAX_REDIRECTS + 1):
        policy.check_url(current)
        try:
            response = await http.request(method, current, allow_redirects=False)
        except FetchError:
            raise
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise FetchError(500, f"ConnectionError trying to open {url}") from exc
        if response.status in (301, 302, 303, 307, 308) and "Location" in response.headers:
            response.release()
            current = urljoin(current, response.headers["Location"])
            seen.append(current)
            continue
        return response
    raise FetchError(400, f"Too many redirects trying to open {url}")


async def fetch_to_file(url: str, path: Path, policy: FetchPolicy, max_size: int) -> Fetched:
    """HEAD then GET ``url`` (both with checked redirects), streaming the body into ``path``,
    within the policy's deadline and minimum rate: a slow server must not hold a worker."""
    try:
        async with asyncio.timeout(policy.deadline):
            return await _fetch(url, path, policy, max_size)
    except TimeoutError:
        raise FetchError(
            504, f"Downloading {url} took longer than the limit of {policy.deadline:g} seconds"
        ) from None


async def _fetch(url: str, path: Path, policy: FetchPolicy, max_size: int) -> Fetched:
    redirects: list[str] = []
    async with session(policy) as http:
        head = await _follow(http, policy, "HEAD", url, redirects)
        head.release()
        if head.status >= 500:
            raise FetchError(500, f"{url} errored ({head.status})")
        if head.status >= 400:
            raise FetchError(400, f"{url} can't be found ({head.status})")
        response = await _follow(http, policy, "GET", url, [])
        try:
            if response.status != 200:
                raise FetchError(400, f"non-200 status code when retrieving {url}")
            size = 0
            loop = asyncio.get_running_loop()
            started = loop.time()
            with open(path, "wb") as out:  # noqa: ASYNC230 - local disk, chunk by chunk
                while True:
                    chunk = await _read(response, policy, started, size, url)
                    if not chunk:
                        break
                    size += len(chunk)
                    if size > max_size:
                        raise FetchError(
                            400, f"{url} is larger than the upload limit ({max_size} bytes)"
                        )
                    out.write(chunk)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise FetchError(500, f"ConnectionError trying to open {url}") from exc
        finally:
            response.release()
    return Fetched(size=size, redirect_urls=redirects)


async def _read(response: Any, policy: FetchPolicy, started: float, size: int, url: str) -> bytes:
    """The next chunk, or FetchError when waiting for it would bring the average rate below
    the policy's minimum."""
    if not policy.min_rate:
        return await response.content.read(CHUNK)
    loop = asyncio.get_running_loop()
    # The moment by which more than ``size`` bytes must have arrived.
    due = started + policy.rate_grace + size / policy.min_rate
    try:
        async with asyncio.timeout_at(max(due, loop.time())) as pace:
            return await response.content.read(CHUNK)
    except TimeoutError:
        if not pace.expired():
            raise  # the connection's own read timeout
    raise FetchError(
        504,
        f"Downloading {url} was too slow: {size} bytes in {loop.time() - started:.0f} seconds, "
        f"the minimum is {policy.min_rate} bytes per second",
    )


def archive_name(url: str) -> str:
    return urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1]
