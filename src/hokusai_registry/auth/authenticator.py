"""Key checks with an in-process cache, so a request with a known key does no database or network work.

Where keys are checked is a `KeySource`: the local key store (`local_keys.py`) or a remote auth service
(`remote_keys.py`). This module holds what both share: cache entries keyed by a MAC of the presented
key under a per-process random key (never the key itself), a short negative cache, and one lookup for
concurrent checks of the same key (single-flight). An unavailable source is never cached and never
turns into "invalid key": it is a 503 with Retry-After.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from hokusai_registry.core.refusals import Reason, Refusal
from hokusai_registry.policy import keys

# Unknown and revoked keys are remembered briefly so a flood of them does not reach the source.
NEGATIVE_TTL = 5.0
# Bounds memory when someone sends many well-formed but unknown keys.
MAX_CACHE_ENTRIES = 100_000
# What a client is told to wait when the key source is down.
RETRY_AFTER_SECONDS = 5


@dataclass(frozen=True, slots=True)
class Identity:
    key_id: str
    name: str
    scopes: tuple[str, ...]
    expires_at: dt.datetime | None = None
    # Who requests with the key act as (MLflow's user for runs): the owner, or else the name.
    user_id: str = ""
    service_ids: tuple[str, ...] = ()  # empty: any service
    rate_limit_per_minute: int | None = None  # None: the gateway's default
    rate_limit_per_hour: int | None = None
    # The single-sign-on user behind the key, session or bearer token (store.user_store); None for keys
    # an admin issued.
    sso_user_id: str | None = None
    # Proven by the identity provider just now (a bearer token it signed, or the key of a session begun
    # there), not by a key the user made: only such callers make new keys for themselves, so a key can
    # never outlive its maximum lifetime by making its successor.
    from_provider: bool = False


def service_denied(identity: Identity, service_id: str) -> Refusal | None:
    """The refusal for a key limited to other services, or None when it may be used for this one."""
    if not identity.service_ids or service_id in identity.service_ids:
        return None
    return Refusal(
        Reason.SERVICE,
        f"key {identity.key_id} is not allowed for service {service_id!r} "
        f"(it is limited to: {', '.join(identity.service_ids)}). Check AUTH_SERVICE_ID, or ask an admin "
        "for a key for this service.",
    )


class CredentialCheck(Protocol):
    """What the failure throttle checks a presented credential with: keys (`Authenticator`) or bearer
    tokens (`bearer_tokens.BearerTokens`)."""

    def cached(self, presented: str) -> Identity | None: ...

    async def authenticate(self, presented: str, client_ip: str = "") -> Identity: ...


class KeySource(Protocol):
    """Where presented keys are looked up."""

    async def start(self, invalidate: Callable[[], None]) -> None:
        """Begin background work; call `invalidate` whenever cached results may be wrong."""

    async def stop(self) -> None: ...

    async def lookup(self, parsed: keys.ParsedKey, client_ip: str) -> Identity | Refusal:
        """The identity, a refusal, or `unavailable(...)` when the source cannot answer."""
        ...

    def record_use(self, key_id: str) -> None:
        """A request was authenticated with this key (cheap: called on every request)."""

    async def check(self) -> None:
        """Raise if the source cannot answer (readiness)."""


def unavailable(what: str, reason: Reason = Reason.STORE_UNAVAILABLE) -> Refusal:
    return Refusal(reason, f"{what}; retry shortly.", [(b"retry-after", str(RETRY_AFTER_SECONDS).encode())])


def not_recognised() -> Refusal:
    return Refusal(
        Reason.UNKNOWN_KEY,
        "the API key is not recognised. Check that MLFLOW_TRACKING_TOKEN holds a current key "
        "for this registry, or ask an admin for one.",
    )


def cache_key_of(secret: bytes, presented: str) -> bytes:
    """What a cache of checked credentials knows one by: a MAC of it under the cache's own random
    `secret`, never the credential itself. Keyed BLAKE2s (a MAC by design) costs a quarter of what
    HMAC-SHA256 does on a key's length, and every request computes one."""
    return hashlib.blake2s(presented.encode("utf-8", "surrogatepass"), key=secret).digest()


def _cacheable(result: Identity | Refusal) -> bool:
    return not (isinstance(result, Refusal) and result.code == "TEMPORARILY_UNAVAILABLE")


class Authenticator:
    def __init__(self, source: KeySource, *, cache_ttl: float) -> None:
        self.source = source
        self._cache_ttl = cache_ttl
        self._cache_secret = secrets.token_bytes(32)
        self._cache: dict[bytes, tuple[float, Identity | Refusal]] = {}
        self._inflight: dict[bytes, asyncio.Future[Identity | Refusal]] = {}
        # Bumped whenever the cache is dropped, so a lookup that began before a key change is not cached.
        self._generation = 0
        # Other caches of checked credentials (bearer tokens) that a key or user change must drop too.
        self._also_invalidate: list[Callable[[], None]] = []

    def on_invalidate(self, invalidate: Callable[[], None]) -> None:
        self._also_invalidate.append(invalidate)

    async def start(self) -> None:
        await self.source.start(self.invalidate)

    async def stop(self) -> None:
        await self.source.stop()

    def invalidate(self) -> None:
        self._generation += 1
        self._cache.clear()
        for invalidate in self._also_invalidate:
            invalidate()

    async def check_store(self) -> None:
        """Proof that the key source answers (readiness)."""
        await self.source.check()

    async def authenticate(self, presented: str, client_ip: str = "") -> Identity:
        """The identity behind a presented key, or a Refusal (401, or 503 if the source is down)."""
        identity = await self._identity(presented, client_ip)
        self.source.record_use(identity.key_id)
        return identity

    def cached(self, presented: str) -> Identity | None:
        """The identity if this key passed a check that is still cached (no lookup), else None."""
        cache_key = cache_key_of(self._cache_secret, presented)
        cached = self._cache.get(cache_key)
        if cached is None or cached[0] <= time.monotonic() or not isinstance(cached[1], Identity):
            return None
        self.source.record_use(cached[1].key_id)
        return cached[1]

    async def _identity(self, presented: str, client_ip: str) -> Identity:
        # Only well-formed keys are ever cached, so a hit needs no parsing.
        cache_key = cache_key_of(self._cache_secret, presented)
        cached = self._cache.get(cache_key)
        if cached is not None and cached[0] > time.monotonic():
            return _identity_or_raise(cached[1])
        try:
            parsed = keys.parse(presented)
        except keys.KeyFormatError as exc:
            raise Refusal(
                Reason.MALFORMED_KEY,
                f"the API key is malformed: {exc}. Copy the whole key as printed by "
                "`hokusai-registry keys create`.",
            ) from None
        pending = self._inflight.get(cache_key)
        if pending is not None:
            return _identity_or_raise(await asyncio.shield(pending))
        pending = asyncio.get_running_loop().create_future()
        self._inflight[cache_key] = pending
        result: Identity | Refusal = unavailable("the key check was interrupted")
        generation = self._generation
        try:
            result = await self.source.lookup(parsed, client_ip)
            if _cacheable(result) and generation == self._generation:
                if len(self._cache) >= MAX_CACHE_ENTRIES:
                    self._cache.clear()
                ttl = self._cache_ttl if isinstance(result, Identity) else NEGATIVE_TTL
                if isinstance(result, Identity) and result.expires_at is not None:
                    # A cached check must not outlive the key.
                    ttl = min(ttl, (result.expires_at - dt.datetime.now(dt.UTC)).total_seconds())
                self._cache[cache_key] = (time.monotonic() + ttl, result)
        finally:
            self._inflight.pop(cache_key, None)
            # Waiters must never hang, even if this request was cancelled mid-lookup.
            pending.set_result(result)
        return _identity_or_raise(result)


def _identity_or_raise(result: Identity | Refusal) -> Identity:
    if isinstance(result, Refusal):
        # A fresh exception each time: re-raising a shared one would grow its traceback forever.
        raise result.copy()
    return result
