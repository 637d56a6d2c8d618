"""Browser sign-in with OpenID Connect, authorization-code flow (docs/accounts.md).

Any standards-compliant provider works, configured by its endpoints (``OIDC_OP_*``) or discovered
from its issuer (``OIDC_OP_ISSUER``). oauthlib builds and parses the OAuth 2.0 messages; PyJWT
verifies the ID token: HS256 (or HS384/512) with the client secret, or RS256 and other public-key
algorithms with the provider's JWKS. Only the configured algorithm is accepted, never ``none``.

Two kinds of failure are kept apart: ``SignInFailed`` is about this sign-in (a wrong state, a
replayed code, a bad signature or nonce), and sends the browser back with ``?signin=failed``;
``ProviderUnavailable`` means the provider could not be reached or is not configured, which the
user cannot fix by trying again at once, and gets an error page that says so.
"""

from __future__ import annotations

import hmac
import json
import logging
from dataclasses import dataclass
from typing import Any

import jwt
import tornado.httpclient
from oauthlib.common import add_params_to_uri
from oauthlib.oauth2 import OAuth2Error, WebApplicationClient

from symbolon.conf import Settings

logger = logging.getLogger(__name__)
LEEWAY_SECONDS = 60  # clock skew between us and the provider


class SignInFailed(Exception):
    """This sign-in cannot succeed; the message is for the log, not for the browser."""


class ProviderUnavailable(Exception):
    """The provider could not be reached, answered with a server error, or is not configured."""


async def provider_fetch(
    settings: Settings,
    url: str,
    method: str = "GET",
    body: str | None = None,
    headers: dict[str, str] | None = None,
) -> tornado.httpclient.HTTPResponse:
    """One call to an identity provider with the OIDC timeouts and TLS setting; any status is
    returned, network failures raise (OSError or HTTPClientError)."""
    request = tornado.httpclient.HTTPRequest(
        url,
        method=method,
        body=body,
        headers=headers,
        connect_timeout=settings.oidc_timeout,
        request_timeout=settings.oidc_timeout,
        validate_cert=settings.oidc_verify_ssl,
        follow_redirects=False,
    )
    return await tornado.httpclient.AsyncHTTPClient().fetch(request, raise_error=False)


@dataclass(frozen=True)
class Endpoints:
    issuer: str | None
    authorization: str
    token: str
    userinfo: str
    jwks: str | None


@dataclass(frozen=True)
class Identity:
    email: str
    subject: str


class OIDCClient:
    """One per process: it remembers the discovered endpoints and the provider's keys."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._endpoints: Endpoints | None = None
        self._keys: list[jwt.PyJWK] | None = None

    @property
    def configured(self) -> bool:
        s = self.settings
        return bool(s.oidc_rp_client_id and s.oidc_rp_client_secret)

    def _client(self) -> WebApplicationClient:
        return WebApplicationClient(self.settings.oidc_rp_client_id)

    @staticmethod
    def pkce_pair() -> tuple[str, str]:
        """A PKCE code verifier and its S256 challenge (RFC 7636): a stolen code is useless."""
        client = WebApplicationClient(None)
        verifier = client.create_code_verifier(64)
        return verifier, client.create_code_challenge(verifier, "S256")

    async def endpoints(self) -> Endpoints:
        if self._endpoints is not None:
            return self._endpoints
        if not self.configured:
            raise ProviderUnavailable(
                "sign-in is not configured on this server (OIDC_RP_CLIENT_ID, "
                "OIDC_RP_CLIENT_SECRET and the provider's endpoints)"
            )
        s = self.settings
        found: dict[str, Any] = {}
        if s.oidc_op_issuer:
            found = await self._discover(s.oidc_op_issuer)
        try:
            self._endpoints = Endpoints(
                issuer=s.oidc_op_issuer or None,
                authorization=s.oidc_op_authorization_endpoint or found["authorization_endpoint"],
                token=s.oidc_op_token_endpoint or found["token_endpoint"],
                userinfo=s.oidc_op_user_endpoint or found["userinfo_endpoint"],
                jwks=s.oidc_op_jwks_endpoint or found.get("jwks_uri"),
            )
        except KeyError as exc:
            raise ProviderUnavailable(f"the provider's discovery document lacks {exc}") from None
        return self._endpoints

    async def _discover(self, issuer: str) -> dict[str, Any]:
        url = issuer.rstrip("/") + "/.well-known/openid-configuration"
        response = await self._fetch("discovery", url)
        if response.code != 200:
            raise ProviderUnavailable(f"discovery at {url} answered {response.code}")
        document = _json(response.body, "discovery document")
        if document.get("issuer", "").rstrip("/") != issuer.rstrip("/"):
            raise ProviderUnavailable(
                f"discovery at {url} names the issuer {document.get('issuer')!r}, "
                f"not {issuer!r} (OIDC_OP_ISSUER)"
            )
        return document

    async def authorization_url(
        self, redirect_uri: str, state: str, nonce: str, code_challenge: str
    ) -> str:
        endpoints = await self.endpoints()
        # oauthlib's own builder refuses plain-http providers outright; which providers are
        # acceptable is decided by the settings instead (https, or loopback in development).
        params = [
            ("response_type", "code"),
            ("client_id", self.settings.oidc_rp_client_id),
            ("redirect_uri", redirect_uri),
            ("scope", self.settings.oidc_rp_scopes),
            ("state", state),
            ("nonce", nonce),
            ("code_challenge", code_challenge),
            ("code_challenge_method", "S256"),
        ]
        return add_params_to_uri(endpoints.authorization, params)

    async def sign_in(
        self,
        code: str,
        redirect_uri: str,
        nonce: str,
        code_verifier: str,
        response_issuer: str | None = None,
    ) -> Identity:
        """Exchange the code, verify the ID token, and ask the user-info endpoint who it is."""
        endpoints = await self.endpoints()
        # RFC 9207: a response that says it comes from another issuer is a mix-up attack.
        if (
            response_issuer is not None
            and endpoints.issuer is not None
            and response_issuer.rstrip("/") != endpoints.issuer.rstrip("/")
        ):
            raise SignInFailed(f"the response names the issuer {response_issuer!r}")
        tokens = await self._exchange(endpoints, code, redirect_uri, code_verifier)
        claims = await self._verify_id_token(endpoints, tokens.get("id_token"), nonce)
        info = await self._userinfo(endpoints, tokens["access_token"])
        # OpenID Connect Core 5.3.2: the user-info response must name the same subject.
        if info.get("sub") != claims["sub"]:
            raise SignInFailed("the user-info subject differs from the ID token's")
        email = info.get("email")
        if not isinstance(email, str) or not email.strip():
            raise SignInFailed("the provider gave no e-mail address (scope 'email'?)")
        # Accounts are found by e-mail, so an address the provider has not verified could claim
        # someone else's account. Providers that do not say are trusted, as the reference did.
        if info.get("email_verified") is False or claims.get("email_verified") is False:
            raise SignInFailed(f"the provider has not verified the address {email!r}")
        return Identity(email=email.strip(), subject=str(claims["sub"]))

    async def _exchange(
        self, endpoints: Endpoints, code: str, redirect_uri: str, code_verifier: str
    ) -> dict[str, Any]:
        client = self._client()
        body = client.prepare_request_body(
            code=code,
            redirect_uri=redirect_uri,
            include_client_id=True,
            code_verifier=code_verifier,
            client_secret=self.settings.oidc_rp_client_secret,
        )
        response = await self._fetch(
            "token endpoint",
            endpoints.token,
            method="POST",
            body=body,
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "Accept": "application/json",
            },
        )
        text = (response.body or b"").decode("utf-8", "replace")
        try:
            return dict(client.parse_request_body_response(text))
        except (OAuth2Error, ValueError) as exc:
            raise SignInFailed(f"token endpoint answered {response.code}: {exc}") from None

    async def _verify_id_token(
        self, endpoints: Endpoints, id_token: Any, nonce: str
    ) -> dict[str, Any]:
        if not isinstance(id_token, str):
            raise SignInFailed("the token response has no ID token (scope 'openid'?)")
        algorithm = self.settings.oidc_rp_sign_algo
        try:
            header = jwt.get_unverified_header(id_token)
        except jwt.PyJWTError as exc:
            raise SignInFailed(f"unreadable ID token: {exc}") from None
        if header.get("alg") != algorithm:
            raise SignInFailed(
                f"ID token signed with {header.get('alg')!r}, expected {algorithm} "
                "(OIDC_RP_SIGN_ALGO)"
            )
        key: Any
        if algorithm.startswith("HS"):
            key = self.settings.oidc_rp_client_secret
        else:
            key = await self._public_key(endpoints, header.get("kid"))
        required = ["exp", "iat", "aud", "sub"] + (["iss"] if endpoints.issuer else [])
        try:
            claims = jwt.decode(
                id_token,
                key,
                algorithms=[algorithm],
                audience=self.settings.oidc_rp_client_id,
                issuer=endpoints.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": required},
            )
        except jwt.PyJWTError as exc:
            raise SignInFailed(f"ID token rejected: {exc}") from None
        audience = claims["aud"]
        several = isinstance(audience, list) and len(audience) > 1
        if several and claims.get("azp") != self.settings.oidc_rp_client_id:
            raise SignInFailed("ID token for several audiences, not authorized for us")
        if not hmac.compare_digest(str(claims.get("nonce", "")), nonce):
            raise SignInFailed("ID token nonce does not match this sign-in")
        return claims

    async def _public_key(self, endpoints: Endpoints, kid: str | None) -> jwt.PyJWK:
        if endpoints.jwks is None:
            raise ProviderUnavailable("no JWKS endpoint (OIDC_OP_JWKS_ENDPOINT or discovery)")
        # Keys are remembered; an unknown key id means the provider rotated: fetch once more.
        for refresh in (self._keys is None, True):
            if refresh:
                self._keys = await self._fetch_keys(endpoints.jwks)
            assert self._keys is not None
            signing = [k for k in self._keys if k.public_key_use in (None, "sig")]
            if kid is None and len(signing) == 1:
                return signing[0]
            for candidate in signing:
                if candidate.key_id == kid:
                    return candidate
        raise SignInFailed(f"the provider's JWKS has no key {kid!r}")

    async def _fetch_keys(self, url: str) -> list[jwt.PyJWK]:
        response = await self._fetch("JWKS", url)
        if response.code != 200:
            raise ProviderUnavailable(f"JWKS at {url} answered {response.code}")
        try:
            return list(jwt.PyJWKSet.from_dict(_json(response.body, "JWKS")).keys)
        except jwt.PyJWTError as exc:
            raise ProviderUnavailable(f"JWKS at {url} has no usable key: {exc}") from None

    async def _userinfo(self, endpoints: Endpoints, access_token: str) -> dict[str, Any]:
        response = await self._fetch(
            "user-info endpoint",
            endpoints.userinfo,
            headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json"},
        )
        if response.code != 200:
            raise SignInFailed(f"user-info endpoint answered {response.code}")
        return _json(response.body, "user info", SignInFailed)

    async def _fetch(
        self,
        what: str,
        url: str,
        method: str = "GET",
        body: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tornado.httpclient.HTTPResponse:
        """A response below 500; anything else means the provider is not working."""
        try:
            response = await provider_fetch(self.settings, url, method, body, headers)
        except (OSError, tornado.httpclient.HTTPClientError) as exc:
            raise ProviderUnavailable(f"{what} at {url} could not be reached: {exc}") from None
        if response.code >= 500:
            raise ProviderUnavailable(f"{what} at {url} answered {response.code}")
        return response


def _json(
    body: bytes | None, what: str, error: type[Exception] = ProviderUnavailable
) -> dict[str, Any]:
    try:
        data = json.loads(body or b"")
    except ValueError:
        raise error(f"the {what} is not JSON") from None
    if not isinstance(data, dict):
        raise error(f"the {what} is not a JSON object")
    return data
