"""The real OpenID Connect provider of the sign-in tests, and a browser that signs in through it.

``tests/oidc/provider.js`` runs panva's certified ``oidc-provider`` under Node (``make test``
installs it into ``tests/oidc/node_modules``). Its development login page accepts any login; the
``Browser`` below fills it in as a person would, keeping each site's cookies.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from tornado.testing import bind_unused_port

from symbolon.conf import Settings

OIDC_DIR = Path(__file__).resolve().parent / "oidc"
CLIENT_SECRET = "symbolon-test-client-secret-0123456789abcdef"


@dataclass(frozen=True)
class Provider:
    issuer: str
    log: Path

    def settings(self, base: Settings, algorithm: str = "RS256", **changes: Any) -> Settings:
        """Settings for a client of this provider: discovery from the issuer by default."""
        values: dict[str, Any] = {
            "oidc_rp_client_id": f"symbolon-{algorithm.lower()}",
            "oidc_rp_client_secret": CLIENT_SECRET,
            "oidc_op_issuer": self.issuer,
            "oidc_rp_sign_algo": algorithm,
            "session_cookie_secure": False,  # plain http in tests; the flag is tested on its own
        }
        return base.replace(**{**values, **changes})

    def tamper(self, on: bool) -> None:
        """Make the token endpoint hand out ID tokens with a broken signature, or stop."""
        with urllib.request.urlopen(f"{self.issuer}/__control?tamper={int(on)}", timeout=10):
            pass


@contextmanager
def running_provider() -> Iterator[Provider]:
    if not (OIDC_DIR / "node_modules" / "oidc-provider").is_dir():
        raise RuntimeError(
            "the test OpenID Connect provider is not installed: run `make test`, or "
            "`npm ci --prefix tests/oidc`"
        )
    sock, port = bind_unused_port()
    sock.close()
    log = Path(tempfile.mkdtemp(prefix="symbolon-oidc-")) / "provider.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            ["node", "provider.js", str(port)],
            cwd=OIDC_DIR,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    issuer = f"http://127.0.0.1:{port}"
    try:
        _wait_until_serving(proc, issuer, log)
        yield Provider(issuer, log)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(log.parent, ignore_errors=True)


def _wait_until_serving(proc: subprocess.Popen, issuer: str, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"oidc-provider exited: {log.read_text()}")
        try:
            with urllib.request.urlopen(f"{issuer}/.well-known/openid-configuration", timeout=2):
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    raise RuntimeError(f"oidc-provider did not start: {log.read_text()}")


class Browser:
    """Follows redirects by hand and keeps cookies per site, like a browser would."""

    def __init__(self) -> None:
        self._http: aiohttp.ClientSession | None = None

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._http is None:  # made on first use: it needs the running event loop
            # unsafe=True: keep cookies of IP-address hosts such as 127.0.0.1.
            self._http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        return self._http

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    async def __aenter__(self) -> Browser:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def request(self, method: str, url: str, **kw: Any) -> aiohttp.ClientResponse:
        response = await self.http.request(method, url, allow_redirects=False, **kw)
        await response.read()
        return response

    async def sign_in(
        self,
        base: str,
        login: str,
        next_path: str | None = None,
        rewrite: Callable[[str], str] | None = None,
    ) -> aiohttp.ClientResponse:
        """Start at ``/oidc/authenticate/``, sign in at the provider as ``login`` and return our
        callback's answer. ``rewrite`` may change the URL the browser is sent to at the
        provider (to tamper with its parameters)."""
        query = f"?{urllib.parse.urlencode({'next': next_path})}" if next_path else ""
        start = await self.request("GET", f"{base}/oidc/authenticate/{query}")
        assert start.status == 302, await start.text()
        url = start.headers["Location"]
        if rewrite is not None:
            url = rewrite(url)
        method, data = "GET", None
        for _ in range(10):
            response = await self.request(method, url, data=data)
            if response.status in (302, 303):
                url = urllib.parse.urljoin(url, response.headers["Location"])
                method, data = "GET", None
                if url.startswith(f"{base}/oidc/callback/"):
                    return await self.request("GET", url)
                continue
            page = await response.text()
            assert response.status == 200, page
            # The provider's sign-in page, or its "authorize this client" page.
            action = re.search(r'action="([^"]+)"', page)
            prompt = re.search(r'name="prompt" value="([a-z]+)"', page)
            assert action and prompt, page
            url = urllib.parse.urljoin(url, action.group(1))
            method, data = "POST", {"prompt": prompt.group(1)}
            if prompt.group(1) == "login":
                data.update(login=login, password="any")
        raise AssertionError("the provider never sent the browser back")

    def cookie(self, name: str) -> str | None:
        if self._http is None:
            return None
        for cookie in self._http.cookie_jar:
            if cookie.key == name:
                return cookie.value
        return None
