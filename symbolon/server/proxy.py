"""What the proxy in front of ``serve`` says about a request it forwards: the client's address
(``X-Real-Ip``, else the last ``X-Forwarded-For`` entry) and the scheme it was asked in
(``X-Scheme``, else the last ``X-Forwarded-Proto`` entry). These are the rules of Tornado's
``xheaders`` option, applied to the request object itself: the option costs every request a
wrapping delegate and a ``getaddrinfo`` call to check the peer's own address, even when no
proxy header came."""

from __future__ import annotations

import functools
import ipaddress

from tornado import httputil

SCHEMES = ("http", "https")
# As HTTPHeaders spells names it holds.
PROXY_HEADERS = frozenset({"X-Real-Ip", "X-Forwarded-For", "X-Scheme", "X-Forwarded-Proto"})
# The longest address written out: an IPv6 one ending in IPv4 form.
LONGEST_ADDRESS = 45


def is_ip_address(text: str) -> bool:
    """A plain IPv4 or IPv6 address. Not a scoped one (``fe80::1%eth0``): ``ipaddress`` takes any
    text after the ``%``, and the address is written into log lines."""
    return len(text) <= LONGEST_ADDRESS and "%" not in text and _parses(text)


@functools.lru_cache(maxsize=1024)  # a proxy forwards the same few addresses again and again
def _parses(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def believe_proxy_headers(request: httputil.HTTPServerRequest) -> None:
    headers = request.headers
    if PROXY_HEADERS.isdisjoint(headers):
        return  # most requests: four lookups, each a KeyError inside HTTPHeaders, spared
    address = headers.get("X-Real-Ip")
    if address is None:
        forwarded_for = headers.get("X-Forwarded-For")
        if forwarded_for is not None:
            address = forwarded_for.rsplit(",", 1)[-1].strip()
    if address is not None and is_ip_address(address):
        request.remote_ip = address
    scheme = headers.get("X-Scheme")
    if scheme is None:
        scheme = headers.get("X-Forwarded-Proto")
    if scheme:
        scheme = scheme.rsplit(",", 1)[-1].strip()
        if scheme in SCHEMES:
            request.protocol = scheme
