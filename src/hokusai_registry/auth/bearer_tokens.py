"""Bearer tokens of machines and people (`Authorization: Bearer <JWT>`, so `MLFLOW_TRACKING_TOKEN=<jwt>`
with the unmodified MLflow client): verified against the trusted issuers (`issuers.py`), mapped to an
owner and scopes (policy/tokens.py), and recorded as single-sign-on users, so an admin can list and disable
them.

A verified token is cached under a MAC of it (never the token) until it expires or the key cache's TTL
passes, whichever is first, and dropped whenever keys or users change (the key store's revision), so a
disabled user's tokens stop working as fast as a revoked key does. Concurrent checks of one token are one
check. Tokens never change team membership: that follows the groups at browser sign-in.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
import time
from dataclasses import dataclass

from hokusai_registry.auth.authenticator import MAX_CACHE_ENTRIES, Identity, cache_key_of
from hokusai_registry.auth.issuers import Issuers, verify
from hokusai_registry.core.refusals import Reason, Refusal
from hokusai_registry.policy.tokens import TokenClaimsRefused, owner_of, scopes_of
from hokusai_registry.store.user_store import UserNotAllowed, UserStore

# Tokens whose users are gone or disabled are remembered as briefly as unknown keys.
NEGATIVE_TTL = 5.0


@dataclass(frozen=True, slots=True)
class TokenRules:
    audience: str
    leeway: float
    scope_claim: str
    username_claim: str
    default_scope: str  # "none", "read" or "write"
    allow_admin: bool
    create_users: bool
    cache_ttl: float


class BearerTokens:
    def __init__(self, issuers: Issuers, users: UserStore, rules: TokenRules) -> None:
        self.issuers = issuers
        self.users = users
        self.rules = rules
        self._cache_secret = secrets.token_bytes(32)
        self._cache: dict[bytes, tuple[float, Identity | Refusal]] = {}
        self._inflight: dict[bytes, asyncio.Future[Identity | Refusal]] = {}
        self._generation = 0

    def invalidate(self) -> None:
        self._generation += 1
        self._cache.clear()

    def _cache_key(self, presented: str) -> bytes:
        return cache_key_of(self._cache_secret, presented)

    def cached(self, presented: str) -> Identity | None:
        """The identity if this token passed a check that is still cached, else None."""
        cached = self._cache.get(self._cache_key(presented))
        if cached is None or cached[0] <= time.monotonic() or not isinstance(cached[1], Identity):
            return None
        return cached[1]

    async def authenticate(self, presented: str, client_ip: str = "") -> Identity:
        if not self.issuers:
            raise Refusal(
                Reason.TOKENS_NOT_ACCEPTED,
                "a bearer token (JWT) was sent, but this gateway accepts none: HOKUSAI_OIDC_ISSUER and "
                "HOKUSAI_JWT_ISSUERS are unset. Send an API key instead.",
            )
        cache_key = self._cache_key(presented)
        cached = self._cache.get(cache_key)
        if cached is not None and cached[0] > time.monotonic():
            return _identity_or_raise(cached[1])
        pending = self._inflight.get(cache_key)
        if pending is not None:
            return _identity_or_raise(await asyncio.shield(pending))
        pending = asyncio.get_running_loop().create_future()
        self._inflight[cache_key] = pending
        result: Identity | Refusal = Refusal(Reason.ISSUER_UNAVAILABLE, "the token check was interrupted")
        generation = self._generation
        try:
            result, until = await self._check(presented)
            unavailable = isinstance(result, Refusal) and result.code == "TEMPORARILY_UNAVAILABLE"
            if not unavailable and generation == self._generation:
                if len(self._cache) >= MAX_CACHE_ENTRIES:
                    self._cache.clear()
                self._cache[cache_key] = (until, result)
        finally:
            self._inflight.pop(cache_key, None)
            pending.set_result(result)
        return _identity_or_raise(result)

    async def _check(self, presented: str) -> tuple[Identity | Refusal, float]:
        rules = self.rules
        try:
            claims = await verify(presented, self.issuers, audience=rules.audience, leeway=rules.leeway)
        except Refusal as refused:
            return refused, time.monotonic() + NEGATIVE_TTL
        try:
            owner, person = owner_of(claims, rules.username_claim)
            scopes = scopes_of(
                claims.get(rules.scope_claim), default=rules.default_scope, allow_admin=rules.allow_admin
            )
        except TokenClaimsRefused as refused:
            return Refusal(Reason.TOKEN_CLAIMS, f"the bearer token was refused: {refused}."), (
                time.monotonic() + NEGATIVE_TTL
            )
        try:
            user = await asyncio.to_thread(
                self.users.seen,
                issuer=str(claims["iss"]),
                subject=str(claims.get("sub") or owner),
                name=owner,
                email=claims.get("email") if isinstance(claims.get("email"), str) else None,
                kind="person" if person else "service",
                scopes=scopes,
                groups=(),
                create=rules.create_users,
                sign_in=False,
            )
        except UserNotAllowed as refused:
            return Refusal(Reason.USER_DISABLED, f"the bearer token was refused: {refused}."), (
                time.monotonic() + NEGATIVE_TTL
            )
        except Exception:
            return Refusal(
                Reason.STORE_UNAVAILABLE,
                "the key store is unavailable; retry shortly.",
                [(b"retry-after", b"5")],
            ), 0.0
        lifetime = min(rules.cache_ttl, float(claims["exp"]) + rules.leeway - time.time())
        identity = Identity(
            key_id="u-" + user.id[:10],  # the user, not the token: rate limits and audit lines follow it
            name=user.name,
            scopes=scopes,
            user_id=user.name,
            expires_at=dt.datetime.fromtimestamp(float(claims["exp"]), dt.UTC),
            sso_user_id=user.id,
            from_provider=True,
        )
        return identity, time.monotonic() + max(0.0, lifetime)


def _identity_or_raise(result: Identity | Refusal) -> Identity:
    if isinstance(result, Refusal):
        raise result.copy()
    return result
