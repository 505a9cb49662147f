"""Trusted token issuers: their discovery documents and signing keys, and the verification of the JWTs
they sign (bearer tokens of machines, ID tokens at sign-in).

Each issuer's `/.well-known/openid-configuration` is read when first needed and kept for an hour; its
`issuer` must equal the configured URL exactly (OpenID Connect Discovery §4.3). Its JWKS is kept until a
token names a `kid` it does not hold: then it is fetched again, at most once per `REFETCH_INTERVAL`, so a
rotated key is picked up without a restart while a flood of made-up key ids costs one request per interval.
Fetches are single-flight and bounded in time; an issuer that cannot be reached is a 503 with
Retry-After, never "invalid token".

`verify(token, ...)` checks, in this order: the shape, the algorithm (asymmetric only, policy/tokens.py),
that `iss` names a trusted issuer, the signature with the issuer's key for `kid`, then `exp` (required),
`nbf`, `aud` and, for ID tokens, `nonce` — each failure its own refusal reason and message.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable, Mapping
from typing import Any

import httpx
from joserfc import jws, jwt
from joserfc.errors import BadSignatureError, JoseError
from joserfc.jwk import KeySet

from hokusai_registry.core.refusals import Reason, Refusal
from hokusai_registry.policy.tokens import ALGORITHMS

DISCOVERY_TTL = 3600.0
REFETCH_INTERVAL = 10.0
FETCH_TIMEOUT = 5.0
RETRY_AFTER_SECONDS = 5
MAX_DOCUMENT_BYTES = 1 << 20


def _unavailable(issuer: str, what: str) -> Refusal:
    return Refusal(
        Reason.ISSUER_UNAVAILABLE,
        f"the token issuer {issuer} could not be asked for its {what}; retry shortly.",
        [(b"retry-after", str(RETRY_AFTER_SECONDS).encode())],
    )


class Issuer:
    def __init__(self, url: str, client: httpx.AsyncClient) -> None:
        self.url = url
        self._client = client
        self._metadata: dict[str, Any] | None = None
        self._metadata_at = 0.0
        self._keys: KeySet | None = None
        self._keys_at = float("-inf")
        self._metadata_lock = asyncio.Lock()
        self._keys_lock = asyncio.Lock()

    async def _get(self, url: str, what: str) -> dict[str, Any]:
        try:
            response = await self._client.get(url, timeout=FETCH_TIMEOUT)
        except httpx.HTTPError:
            raise _unavailable(self.url, what) from None
        if response.status_code != 200 or len(response.content) > MAX_DOCUMENT_BYTES:
            raise _unavailable(self.url, f"{what} (HTTP {response.status_code})")
        try:
            document = json.loads(response.content)
        except ValueError:
            raise _unavailable(self.url, f"{what} (not JSON)") from None
        if not isinstance(document, dict):
            raise _unavailable(self.url, f"{what} (not a JSON object)")
        return document

    async def metadata(self) -> dict[str, Any]:
        """The discovery document (cached for an hour)."""
        if self._metadata is not None and time.monotonic() - self._metadata_at < DISCOVERY_TTL:
            return self._metadata
        async with self._metadata_lock:
            if self._metadata is not None and time.monotonic() - self._metadata_at < DISCOVERY_TTL:
                return self._metadata
            document = await self._get(
                self.url.rstrip("/") + "/.well-known/openid-configuration", "discovery"
            )
            if document.get("issuer") != self.url or not isinstance(document.get("jwks_uri"), str):
                raise _unavailable(
                    self.url, "discovery (its issuer differs from the configured one, or no jwks_uri)"
                )
            self._metadata, self._metadata_at = document, time.monotonic()
            return document

    def _keys_will_do(self, kid: str | None) -> KeySet | None:
        # Held keys answer when they have `kid`, or when they were fetched too recently to ask again.
        if self._keys is not None and (
            _holds(self._keys, kid) or time.monotonic() - self._keys_at < REFETCH_INTERVAL
        ):
            return self._keys
        return None

    async def key_set(self, kid: str | None) -> KeySet:
        """The issuer's keys, fetched again when they lack `kid` and the last fetch is old enough."""
        held = self._keys_will_do(kid)
        if held is not None:
            return held
        async with self._keys_lock:
            held = self._keys_will_do(kid)
            if held is not None:
                return held
            metadata = await self.metadata()
            document = await self._get(metadata["jwks_uri"], "signing keys")
            try:
                keys = KeySet.import_key_set(document)  # type: ignore[arg-type]
            except (JoseError, ValueError, TypeError, KeyError):
                raise _unavailable(self.url, "signing keys (not a valid JWKS)") from None
            self._keys, self._keys_at = keys, time.monotonic()
            return keys


def _holds(keys: KeySet, kid: str | None) -> bool:
    return kid is None or any(key.kid == kid for key in keys.keys)


class Issuers:
    """The issuers whose tokens are accepted, by their exact URL."""

    def __init__(self, urls: Iterable[str], client: httpx.AsyncClient | None = None) -> None:
        self.client = client or httpx.AsyncClient(follow_redirects=False)
        self.by_url = {url: Issuer(url, self.client) for url in urls}

    def __bool__(self) -> bool:
        return bool(self.by_url)

    def only(self, url: str) -> Issuers:
        """These issuers narrowed to `url` (added when missing), sharing their caches and client."""
        narrowed = Issuers((), self.client)
        narrowed.by_url = {url: self.by_url.get(url) or Issuer(url, self.client)}
        return narrowed

    async def close(self) -> None:
        await self.client.aclose()


def _refused(what: str, reason: Reason, detail: str) -> Refusal:
    return Refusal(reason, f"the {what} was refused: {detail}.")


def _unverified(token: str, what: str) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    try:
        compact = jws.extract_compact(token.encode("ascii"))
        claims = json.loads(compact.payload)
    except (JoseError, ValueError, UnicodeError):
        raise _refused(what, Reason.TOKEN_MALFORMED, "it is not a well-formed signed JWT") from None
    if not isinstance(claims, dict):
        raise _refused(what, Reason.TOKEN_MALFORMED, "its payload is not a JSON object")
    return compact.headers(), claims


async def verify(
    token: str,
    issuers: Issuers,
    *,
    audience: str,
    leeway: float,
    nonce: str | None = None,
    now: float | None = None,
    what: str = "bearer token",
) -> dict[str, Any]:
    """The token's claims once it is proven (see the module's docstring), or a Refusal naming why not."""
    header, unverified = _unverified(token, what)
    algorithm = header.get("alg")
    if algorithm not in ALGORITHMS:
        raise _refused(
            what,
            Reason.TOKEN_ALGORITHM,
            f"its algorithm {str(algorithm)[:20]!r} is not accepted (only {', '.join(ALGORITHMS)})",
        )
    issuer = issuers.by_url.get(unverified.get("iss"))  # type: ignore[arg-type]
    if issuer is None:
        raise _refused(
            what,
            Reason.TOKEN_ISSUER,
            f"its issuer {str(unverified.get('iss'))[:100]!r} is not trusted here (HOKUSAI_OIDC_ISSUER, "
            "HOKUSAI_JWT_ISSUERS)",
        )
    kid = header.get("kid") if isinstance(header.get("kid"), str) else None
    keys = await issuer.key_set(kid)
    if not _holds(keys, kid):
        raise _refused(
            what,
            Reason.TOKEN_SIGNATURE,
            f"its signing key {str(kid)[:64]!r} is not one {issuer.url} publishes",
        )
    try:
        claims = jwt.decode(token, keys, algorithms=list(ALGORITHMS)).claims
    except BadSignatureError:
        raise _refused(what, Reason.TOKEN_SIGNATURE, "its signature does not verify") from None
    except JoseError as error:
        raise _refused(what, Reason.TOKEN_SIGNATURE, f"it could not be verified ({error.error})") from None
    _check_claims(claims, issuer.url, audience, leeway, nonce, time.time() if now is None else now, what)
    return dict(claims)


def _check_claims(
    claims: Mapping[str, Any],
    issuer: str,
    audience: str,
    leeway: float,
    nonce: str | None,
    now: float,
    what: str,
) -> None:
    if claims.get("iss") != issuer:  # signed by this issuer's key but naming another
        raise _refused(what, Reason.TOKEN_ISSUER, "its issuer does not match the key that signed it")
    expires = claims.get("exp")
    if not isinstance(expires, int | float) or isinstance(expires, bool):
        raise _refused(what, Reason.TOKEN_CLAIMS, "it has no expiry (`exp`)")
    if now > expires + leeway:
        raise _refused(
            what,
            Reason.TOKEN_EXPIRED,
            f"it expired {now - expires:.0f} s ago; get a new token from the issuer",
        )
    not_before = claims.get("nbf")
    if isinstance(not_before, int | float) and now + leeway < not_before:
        wait = f"it is not valid for another {not_before - now:.0f} s"
        raise _refused(what, Reason.TOKEN_NOT_YET_VALID, wait)
    audiences = claims.get("aud")
    listed = [audiences] if isinstance(audiences, str) else audiences if isinstance(audiences, list) else []
    if audience not in listed:
        raise _refused(
            what,
            Reason.TOKEN_AUDIENCE,
            f"its audience {str(audiences)[:100]!r} is not this gateway's ({audience!r}, "
            "HOKUSAI_OIDC_AUDIENCE); request the token for that audience",
        )
    if nonce is not None and claims.get("nonce") != nonce:
        raise _refused(what, Reason.TOKEN_CLAIMS, "its nonce is not the one this sign-in sent")
