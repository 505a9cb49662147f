"""Key checks with an in-process cache, so a request with a known key does no database work.

Cache entries are keyed by an HMAC of the presented key under a per-process random key (never the
key itself). Concurrent checks of the same unknown key share one lookup. A background task watches
the key store's revision counter and drops every cached result when any key changes, so a key
revoked by another process stops working within `key_revision_poll_interval` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass

from hokusai_registry.auth import keys
from hokusai_registry.auth.credentials import unauthenticated
from hokusai_registry.auth.store import KeyStore
from hokusai_registry.errors import GatewayError

log = logging.getLogger(__name__)

# Unknown and revoked keys are remembered briefly so a flood of them does not reach the store.
NEGATIVE_TTL = 5.0
# Bounds memory when someone sends many well-formed but unknown keys.
MAX_CACHE_ENTRIES = 100_000


@dataclass(frozen=True, slots=True)
class Identity:
    key_id: str
    name: str
    scopes: tuple[str, ...]
    expires_at: dt.datetime | None = None


class Authenticator:
    def __init__(self, store: KeyStore, *, cache_ttl: float, poll_interval: float) -> None:
        self._store = store
        self._cache_ttl = cache_ttl
        self._poll_interval = poll_interval
        self._cache_secret = secrets.token_bytes(32)
        self._cache: dict[bytes, tuple[float, Identity | GatewayError]] = {}
        self._inflight: dict[bytes, asyncio.Future[Identity | GatewayError]] = {}
        self._revision: int | None = None
        # Bumped whenever the cache is dropped, so a lookup that began before a key change is not cached.
        self._generation = 0
        self._watcher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._revision = await asyncio.to_thread(self._store.revision)
        self._watcher = asyncio.create_task(self._watch_revision())

    async def stop(self) -> None:
        if self._watcher:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher

    async def check_store(self) -> int:
        """Asks the key store for its revision: proof that it answers (readiness)."""
        return await asyncio.to_thread(self._store.revision)

    async def authenticate(self, presented: str) -> Identity:
        """The identity behind a presented key, or an UNAUTHENTICATED GatewayError."""
        # Only well-formed keys are ever cached, so a hit needs no parsing.
        cache_key = hmac.digest(self._cache_secret, presented.encode("latin-1"), hashlib.sha256)
        cached = self._cache.get(cache_key)
        if cached is not None and cached[0] > time.monotonic():
            return _identity_or_raise(cached[1])
        try:
            parsed = keys.parse(presented)
        except keys.KeyFormatError as exc:
            raise unauthenticated(
                f"the API key is malformed: {exc}. Copy the whole key as printed by "
                "`hokusai-registry keys create`.",
                "malformed",
            ) from None
        pending = self._inflight.get(cache_key)
        if pending is not None:
            return _identity_or_raise(await asyncio.shield(pending))
        pending = asyncio.get_running_loop().create_future()
        self._inflight[cache_key] = pending
        result: Identity | GatewayError = _STORE_UNAVAILABLE
        generation = self._generation
        try:
            result = await self._lookup(parsed)
            if result is not _STORE_UNAVAILABLE and generation == self._generation:
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

    async def _lookup(self, parsed: keys.ParsedKey) -> Identity | GatewayError:
        try:
            return await asyncio.to_thread(self._check, parsed)
        except Exception as exc:
            log.warning("key store lookup failed: %s", type(exc).__name__)
            return _STORE_UNAVAILABLE

    def _check(self, parsed: keys.ParsedKey) -> Identity | GatewayError:
        record = self._store.get(parsed.key_id)
        if record is None or not hmac.compare_digest(record.secret_hash, keys.digest(parsed.text)):
            return unauthenticated(
                "the API key is not recognised. Check that MLFLOW_TRACKING_TOKEN holds a current key "
                "for this registry, or ask an admin for one.",
                "unknown",
            )
        if record.revoked_at is not None:
            return unauthenticated(
                f"the API key {record.key_id} was revoked on {record.revoked_at:%Y-%m-%d %H:%M} UTC. "
                "Ask an admin for a new key.",
                "revoked",
            )
        if record.expires_at is not None and record.expires_at <= dt.datetime.now(dt.UTC):
            return unauthenticated(
                f"the API key {record.key_id} expired on {record.expires_at:%Y-%m-%d %H:%M} UTC. "
                "Ask an admin for a new key.",
                "expired",
            )
        return Identity(record.key_id, record.name, record.scopes, record.expires_at)

    async def _watch_revision(self) -> None:
        while True:
            await asyncio.sleep(self._poll_interval)
            try:
                revision = await asyncio.to_thread(self._store.revision)
            except Exception as exc:
                log.warning("key store revision check failed: %s", type(exc).__name__)
                continue
            if revision != self._revision:
                self._revision = revision
                self._generation += 1
                self._cache.clear()


_STORE_UNAVAILABLE = GatewayError(
    "TEMPORARILY_UNAVAILABLE",
    "Hokusai Registry gateway: the key store is unavailable; retry shortly.",
    kind="store_unavailable",
)


def _identity_or_raise(result: Identity | GatewayError) -> Identity:
    if isinstance(result, GatewayError):
        # A fresh exception each time: re-raising a shared one would grow its traceback forever.
        raise GatewayError(result.code, result.message, result.http_status, result.kind)
    return result
