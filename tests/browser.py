"""A real browser for the web UI's tests (docs/web.md): Debian's Chromium driven by Playwright,
against ``symbolon serve`` on the test session's embedded services, signing in at the real
OpenID Connect provider of tests/oidc_provider.py.

A test module imports the fixtures it uses (``from tests.browser import site, chromium, journey``)
and walks a ``Journey``: ``journey.go("/path")``, ``journey.sign_in(email)``, Playwright's
``journey.page`` for the rest, and ``journey.shots("name")`` for screenshots at phone and desktop
widths, written under the test's tmp path and, when ``TEST_ARTIFACTS`` is set, copied to
``test-artifacts/screenshots/`` in the repository. Without a Chromium the tests skip, saying so.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from symbolon.conf import Settings
from symbolon.conf.settings import declarations
from tests.cli import as_variable, env_for
from tests.conftest import free_port, repo_root

CHROMIUM_NAMES = ("chromium", "chromium-browser")
NO_CHROMIUM = (
    "no Chromium to drive: install Debian's (apt-get install --no-install-recommends chromium) "
    "or set CHROMIUM_PATH to a Chromium binary"
)
NO_PLAYWRIGHT = "Playwright for Python is not installed: pip install -e '.[test]'"
OIDC_SETTINGS = (
    "oidc_rp_client_id",
    "oidc_rp_client_secret",
    "oidc_op_issuer",
    "oidc_rp_sign_algo",
    "session_cookie_secure",
)
# serve starts no embedded service here (the session's are given), then migrates and checks.
SERVE_WITHIN = 120
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}
WAIT_MS = 30_000


def chromium_path() -> str | None:
    configured = os.environ.get("CHROMIUM_PATH")
    if configured:
        return configured if Path(configured).exists() else None
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def artifacts_dir() -> Path | None:
    """Where screenshots are also copied: ``test-artifacts/screenshots`` when asked for."""
    if not os.environ.get("TEST_ARTIFACTS"):
        return None
    return repo_root() / "test-artifacts" / "screenshots"


@dataclass
class Site:
    """``symbolon serve`` running for the browser tests."""

    url: str
    env: dict[str, str]
    issuer: str
    log: Path

    def symbolon(self, *args: str) -> subprocess.CompletedProcess:
        """Run a ``symbolon`` command against the site's services, as an operator would."""
        done = subprocess.run(
            [sys.executable, "-m", "symbolon.admin_cli.main", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        """A plain HTTP GET, no redirects followed: (status, body)."""

        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args: Any, **kwargs: Any) -> None:
                return None

        opener = urllib.request.build_opener(NoRedirect)
        request = urllib.request.Request(self.url + path, headers=headers or {})
        try:
            with opener.open(request, timeout=30) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()


@pytest.fixture(scope="module")
def site(live_settings: Settings, oidc_provider: Any, tmp_path_factory: Any) -> Iterator[Site]:
    """``symbolon serve`` on the session's embedded services, signing in at the provider."""
    port = free_port()
    signing_in = oidc_provider.settings(live_settings)
    declared = declarations()
    oidc_env = {
        declared[name].env: as_variable(getattr(signing_in, name)) for name in OIDC_SETTINGS
    }
    env = env_for(live_settings, PORT=str(port), HOST="127.0.0.1", **oidc_env)
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "symbolon.admin_cli.main", "serve"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    # The provider sends browsers back to 127.0.0.1 (its clients' redirect URI).
    found = Site(f"http://127.0.0.1:{port}", env, oidc_provider.issuer, log)
    try:
        _wait_until_serving(found, proc)
        yield found
    finally:
        proc.send_signal(2)  # Ctrl-C: serve finishes requests in flight and stops
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_until_serving(site: Site, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + SERVE_WITHIN
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited early:\n{site.log.read_text()}")
        try:
            if site.get("/__lbheartbeat__")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"serve did not answer in time:\n{site.log.read_text()}")


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """A headless Chromium (the system's), one per test module."""
    path = chromium_path()
    if path is None:
        pytest.skip(NO_CHROMIUM)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip(NO_PLAYWRIGHT)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, headless=True)
        try:
            yield browser
        finally:
            browser.close()


class Journey:
    """One person's visit: a browser context of its own (cookies), on ``site``."""

    def __init__(self, site: Site, browser: Any, shots_dir: Path):
        self.site = site
        self.context = browser.new_context(viewport=DESKTOP)
        self.context.set_default_timeout(WAIT_MS)
        self.page = self.context.new_page()
        self.shots_dir = shots_dir
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on("console", self._console)
        self.page.on("response", self._response)

    def _console(self, message: Any) -> None:
        # Only this site's: the provider's pages load fonts from elsewhere. A page answered
        # with an error status is logged too, and is what some steps expect: _response judges.
        text = message.text
        if (
            message.type == "error"
            and message.location.get("url", "").startswith(self.site.url)
            and not text.startswith("Failed to load resource")
        ):
            self.errors.append(f"{message.location.get('url')}: {text}")

    def _response(self, response: Any) -> None:
        """A stylesheet, script or image of this site that fails is an error of the page."""
        request = response.request
        if (
            response.url.startswith(self.site.url)
            and request.resource_type != "document"
            and response.status >= 400
        ):
            self.errors.append(f"{response.url}: {response.status}")

    def go(self, path: str) -> Any:
        return self.page.goto(self.site.url + path)

    def sign_in(self, login: str) -> None:
        """Follow the page's "Sign in" link and sign in at the provider's login page."""
        self.page.get_by_role("link", name="Sign in").first.click()
        self.page.wait_for_url(re.compile("^" + re.escape(self.site.issuer)))
        for _ in range(5):
            # The provider's login page, then its "authorize this client" page.
            if self.page.locator('input[name="login"]').count():
                self.page.fill('input[name="login"]', login)
                self.page.fill('input[name="password"]', "any")
            self.page.locator('button[type="submit"]').first.click()
            self.page.wait_for_load_state()
            if self.page.url.startswith(self.site.url):
                return
        raise AssertionError(f"the provider never sent the browser back: {self.page.url}")

    def shots(self, name: str) -> list[Path]:
        """Screenshots of the whole page at phone and desktop widths."""
        taken = []
        for label, size in (("phone", PHONE), ("desktop", DESKTOP)):
            self.page.set_viewport_size(size)
            path = self.shots_dir / f"{name}-{label}.png"
            self.page.screenshot(path=str(path), full_page=True)
            taken.append(path)
            copy_to = artifacts_dir()
            if copy_to is not None:
                copy_to.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, copy_to / path.name)
        self.page.set_viewport_size(DESKTOP)
        return taken

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def journey(chromium: Any, site: Site, tmp_path: Path) -> Iterator[Journey]:
    # chromium first: without one the test skips before serve is started.
    shots = tmp_path / "screenshots"
    shots.mkdir()
    walk = Journey(site, chromium, shots)
    yield walk
    walk.close()
