"""Keys checked against this gateway's own key store (the default).

The store is synchronous (the CLI shares it), so lookups run in a worker thread. A background task
watches the store's revision counter and invalidates cached checks when any key changes, so a key
revoked by another process stops working within `key_revision_poll_interval` seconds. Last use is
collected in memory and written in one batch per `last_used_interval`, never once per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hmac
import logging
import time
from collections.abc import Callable
from dataclasses import replace

from hokusai_registry.auth.authenticator import Identity, not_recognised, unavailable
from hokusai_registry.core.refusals import Reason, Refusal
from hokusai_registry.policy import keys
from hokusai_registry.store.key_store import SIGN_IN, KeyRecord, KeyStore

log = logging.getLogger(__name__)


def identity_of(record: KeyRecord) -> Identity:
    return Identity(
        key_id=record.key_id,
        name=record.name,
        scopes=record.scopes,
        expires_at=record.expires_at,
        user_id=record.user_id,
        service_ids=record.service_ids,
        rate_limit_per_minute=record.rate_limit_per_minute,
        rate_limit_per_hour=record.rate_limit_per_hour,
        sso_user_id=record.sso_user_id,
        from_provider=record.purpose == SIGN_IN,
    )


def check_record(record: KeyRecord | None, parsed: keys.ParsedKey) -> Identity | Refusal:
    """The verdict on a presented key given its stored record (pure)."""
    if record is None or not hmac.compare_digest(record.secret_hash, keys.digest(parsed.text)):
        return not_recognised()
    if record.revoked_at is not None:
        return Refusal(
            Reason.REVOKED_KEY,
            f"the API key {record.key_id} was revoked on {record.revoked_at:%Y-%m-%d %H:%M} UTC. "
            "Ask an admin for a new key.",
        )
    if record.expires_at is not None and record.expires_at <= dt.datetime.now(dt.UTC):
        return Refusal(
            Reason.EXPIRED_KEY,
            f"the API key {record.key_id} expired on {record.expires_at:%Y-%m-%d %H:%M} UTC. "
            "Ask an admin for a new key.",
        )
    if record.user_disabled:
        return Refusal(
            Reason.USER_DISABLED,
            f"the API key {record.key_id} belongs to {record.user_id}, whose user is disabled. Ask an admin.",
        )
    if record.user_scopes is not None:
        # Never above its user's rights as they are now (an admin who left the admin group, say).
        held = set(record.user_scopes)
        return identity_of(replace(record, scopes=tuple(scope for scope in record.scopes if scope in held)))
    return identity_of(record)


class LocalKeys:
    def __init__(self, store: KeyStore, *, poll_interval: float, last_used_interval: float) -> None:
        self.store = store
        self._poll_interval = poll_interval
        self._last_used_interval = last_used_interval
        self._revision: int | None = None
        self._used: dict[str, float] = {}
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, invalidate: Callable[[], None]) -> None:
        self._revision = await asyncio.to_thread(self.store.revision)
        self._tasks = [
            asyncio.create_task(self._watch_revision(invalidate)),
            asyncio.create_task(self._write_last_used()),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.flush_last_used()

    async def check(self) -> None:
        await asyncio.to_thread(self.store.revision)

    async def lookup(self, parsed: keys.ParsedKey, client_ip: str) -> Identity | Refusal:
        try:
            record = await asyncio.to_thread(self.store.get, parsed.key_id)
        except Exception as exc:
            log.warning("key store lookup failed: %s", type(exc).__name__)
            return unavailable("the key store is unavailable")
        return check_record(record, parsed)

    def record_use(self, key_id: str) -> None:
        self._used[key_id] = time.time()

    async def flush_last_used(self) -> None:
        used, self._used = self._used, {}
        if not used:
            return
        batch = {key_id: dt.datetime.fromtimestamp(when, dt.UTC) for key_id, when in used.items()}
        try:
            await asyncio.to_thread(self.store.touch, batch)
        except Exception as exc:
            log.warning("could not record keys' last use: %s", type(exc).__name__)
            for key_id, when in used.items():  # kept for the next attempt, unless newer use came in
                self._used.setdefault(key_id, when)

    async def _write_last_used(self) -> None:
        while True:
            await asyncio.sleep(self._last_used_interval)
            await self.flush_last_used()

    async def _watch_revision(self, invalidate: Callable[[], None]) -> None:
        while True:
            await asyncio.sleep(self._poll_interval)
            try:
                revision = await asyncio.to_thread(self.store.revision)
            except Exception as exc:
                log.warning("key store revision check failed: %s", type(exc).__name__)
                continue
            if revision != self._revision:
                self._revision = revision
                invalidate()
