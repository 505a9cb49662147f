"""Signing in with an OpenID Connect provider: the authorization code flow with PKCE (S256), `state`,
`nonce` and the issuer check of RFC 9207, for the browser sign-in (`admin/sign_in.py`).

authlib builds the authorization request and exchanges the code (client authentication, PKCE); the ID
token is verified by `issuers.verify` (joserfc, the issuer's JWKS) against the client id and the nonce;
the userinfo endpoint's claims (name, e-mail, groups: many providers put them only there) are merged under
the ID token's, and must name the same subject.

Between the redirect to the provider and its callback, the flow's secrets (state, nonce, PKCE verifier)
and the page to return to live in a short-lived HttpOnly cookie of their own: the callback is accepted
only from the browser that started it (the state must match the cookie), and only once.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import secrets
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from authlib.deprecate import AuthlibDeprecationWarning
from joserfc import jws
from joserfc.errors import JoseError

from hokusai_registry.auth.issuers import FETCH_TIMEOUT, Issuers, verify
from hokusai_registry.core.refusals import Refusal
from hokusai_registry.policy.routes import OIDC_CALLBACK_PATH

with warnings.catch_warnings():
    # authlib 1.9 announces a move from httpx to its fork httpx2 on stderr at import, which would be the
    # one line of a JSON log that is not JSON; httpx is the client it supports today.
    warnings.simplefilter("ignore", AuthlibDeprecationWarning)
    from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError

# The flow cookie lasts as long as a person may take at the provider's login page.
FLOW_MAX_AGE = 600


class SignInFailed(Exception):
    """A sign-in that cannot complete; the message is for the person (no secrets in it)."""


@dataclass(frozen=True, slots=True)
class Flow:
    """One sign-in in progress: what the callback must see again."""

    state: str
    nonce: str
    verifier: str
    next_path: str
    started_at: float

    def to_cookie(self) -> str:
        raw = json.dumps([self.state, self.nonce, self.verifier, self.next_path, self.started_at])
        return base64.urlsafe_b64encode(raw.encode()).decode("ascii").rstrip("=")

    @classmethod
    def from_cookie(cls, value: str | None) -> Flow | None:
        """The flow in the cookie, or None when it is missing, malformed or older than FLOW_MAX_AGE."""
        if not value or len(value) > 2048:
            return None
        try:
            raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
            state, nonce, verifier, next_path, started_at = json.loads(raw)
        except (binascii.Error, ValueError, TypeError):
            return None
        fields = (state, nonce, verifier, next_path)
        if not all(isinstance(field, str) for field in fields) or not isinstance(started_at, int | float):
            return None
        if not 0 <= time.time() - started_at <= FLOW_MAX_AGE:
            return None
        return cls(state, nonce, verifier, next_path, float(started_at))


@dataclass(frozen=True, slots=True)
class SignedIn:
    issuer: str
    subject: str
    claims: dict[str, Any]  # the ID token's, over the userinfo endpoint's
    id_token: str
    expires_at: float  # when the provider's tokens expire: the session ends no later


def authenticated_at(id_token: str) -> dt.datetime | None:
    """When the person entered their credentials at the provider (`auth_time`) by an ID token this
    gateway verified at sign-in and kept sealed; None when the provider did not say."""
    try:
        claims = json.loads(jws.extract_compact(id_token.encode("ascii")).payload)
    except (JoseError, ValueError, UnicodeError):
        return None
    at = claims.get("auth_time") if isinstance(claims, dict) else None
    if not isinstance(at, int | float) or isinstance(at, bool):
        return None
    return dt.datetime.fromtimestamp(at, dt.UTC)


class OidcSignIn:
    def __init__(
        self,
        issuers: Issuers,
        *,
        issuer: str,
        client_id: str,
        client_secret: str,
        scopes: str,
        leeway: float,
    ) -> None:
        # Only the configured issuer signs people in (the extra trusted issuers are for machines).
        self.issuers = issuers.only(issuer)
        self.issuer = self.issuers.by_url[issuer]
        self.client_id = client_id
        self._client_secret = client_secret
        self.scopes = scopes
        self.leeway = leeway

    def _client(self, redirect_uri: str) -> AsyncOAuth2Client:
        return AsyncOAuth2Client(
            client_id=self.client_id,
            client_secret=self._client_secret,
            scope=self.scopes,
            redirect_uri=redirect_uri,
            code_challenge_method="S256",
            timeout=FETCH_TIMEOUT,
            follow_redirects=False,
        )

    async def start(self, public_base: str, next_path: str, *, fresh: bool = False) -> tuple[str, Flow]:
        """Where to send the browser, and the flow to keep in its cookie. `fresh` asks the provider for a
        new login even when the person is signed in there (a step-up)."""
        metadata = await self._metadata()
        flow = Flow(
            state=secrets.token_urlsafe(32),
            nonce=secrets.token_urlsafe(32),
            verifier=secrets.token_urlsafe(48),
            next_path=next_path,
            started_at=time.time(),
        )
        extra = {"prompt": "login", "max_age": "0"} if fresh else {}
        async with self._client(public_base + OIDC_CALLBACK_PATH) as client:
            url, _ = client.create_authorization_url(
                metadata["authorization_endpoint"],
                state=flow.state,
                code_verifier=flow.verifier,
                nonce=flow.nonce,
                **extra,
            )
        return str(url), flow

    async def finish(self, public_base: str, query: Mapping[str, str], flow: Flow | None) -> SignedIn:
        """The person the provider's callback names, once every check holds; SignInFailed otherwise."""
        if flow is None:
            raise SignInFailed(
                "this sign-in was not started in this browser, or took longer than "
                f"{FLOW_MAX_AGE // 60} minutes. Start again."
            )
        if not secrets.compare_digest(query.get("state", "").encode(), flow.state.encode()):
            raise SignInFailed(
                "the provider's answer is not for the sign-in this browser started. Start again."
            )
        metadata = await self._metadata()
        self._check_response_issuer(metadata, query.get("iss"))
        if "error" in query:
            described = query.get("error_description") or query["error"]
            raise SignInFailed(f"the identity provider refused the sign-in: {described[:200]}")
        code = query.get("code")
        if not code:
            raise SignInFailed("the identity provider's answer carries no authorization code. Start again.")
        async with self._client(public_base + OIDC_CALLBACK_PATH) as client:
            try:
                token = await client.fetch_token(
                    metadata["token_endpoint"],
                    grant_type="authorization_code",
                    code=code,
                    code_verifier=flow.verifier,
                )
            except (OAuthError, ValueError) as error:
                raise SignInFailed(f"the identity provider did not exchange the code ({error})") from None
            except Exception as error:  # transport failures: httpx's and authlib's own
                failure = type(error).__name__
                raise SignInFailed(
                    f"the identity provider could not be reached to finish the sign-in ({failure})"
                ) from None
            id_token = token.get("id_token")
            if not isinstance(id_token, str):
                raise SignInFailed("the identity provider sent no ID token (is `openid` in the scopes?)")
            try:
                claims = await verify(
                    id_token,
                    self.issuers,
                    audience=self.client_id,
                    leeway=self.leeway,
                    nonce=flow.nonce,
                    what="ID token",
                )
            except Refusal as refusal:
                raise SignInFailed(refusal.plain) from None
            if isinstance(claims.get("aud"), list) and claims.get("azp", self.client_id) != self.client_id:
                raise SignInFailed("the ID token was issued to another client (azp)")
            userinfo = await self._userinfo(client, metadata, str(token.get("access_token", "")))
        if userinfo and userinfo.get("sub") != claims.get("sub"):
            raise SignInFailed("the provider's userinfo names another person than its ID token")
        expires_at = float(claims["exp"])
        expires_in = token.get("expires_in")
        if isinstance(expires_in, int | float) and not isinstance(expires_in, bool):
            expires_at = min(expires_at, time.time() + float(expires_in))
        return SignedIn(
            issuer=self.issuer.url,
            subject=str(claims["sub"]),
            claims={**userinfo, **claims},
            id_token=id_token,
            expires_at=expires_at,
        )

    def _check_response_issuer(self, metadata: Mapping[str, Any], iss: str | None) -> None:
        # RFC 9207: an answer naming another issuer is a mix-up attack; a provider that promises `iss`
        # must send it.
        if iss is not None and iss != self.issuer.url:
            raise SignInFailed(
                f"the answer names issuer {iss[:100]!r}, not {self.issuer.url} (RFC 9207): refused."
            )
        if iss is None and metadata.get("authorization_response_iss_parameter_supported") is True:
            raise SignInFailed(
                "the answer lacks the issuer (`iss`) its provider promises (RFC 9207): refused."
            )

    async def _userinfo(
        self, client: AsyncOAuth2Client, metadata: Mapping[str, Any], access_token: str
    ) -> dict[str, Any]:
        endpoint = metadata.get("userinfo_endpoint")
        if not isinstance(endpoint, str) or not access_token:
            return {}
        try:
            response = await client.get(endpoint, headers={"authorization": f"Bearer {access_token}"})
            document = response.json() if response.status_code == 200 else None
        except Exception as error:  # transport failures and a body that is not JSON
            raise SignInFailed(
                f"the identity provider's userinfo could not be read ({type(error).__name__})"
            ) from None
        if not isinstance(document, dict):
            raise SignInFailed(f"the identity provider's userinfo answered HTTP {response.status_code}")
        return document

    async def _metadata(self) -> dict[str, Any]:
        try:
            metadata = await self.issuer.metadata()
        except Refusal as refusal:
            raise SignInFailed(refusal.plain) from None
        for endpoint in ("authorization_endpoint", "token_endpoint"):
            if not isinstance(metadata.get(endpoint), str):
                raise SignInFailed(f"the identity provider's discovery document has no {endpoint}")
        return metadata

    async def logout_url(self, id_token: str | None, after: str) -> str | None:
        """The provider's end-session URL (RP-initiated logout) that returns to `after`, or None when the
        provider has none."""
        try:
            metadata = await self.issuer.metadata()
        except Refusal:
            return None
        endpoint = metadata.get("end_session_endpoint")
        if not isinstance(endpoint, str):
            return None
        query = {"client_id": self.client_id, "post_logout_redirect_uri": after}
        if id_token:
            query["id_token_hint"] = id_token
        return f"{endpoint}{'&' if '?' in endpoint else '?'}{urlencode(query)}"
