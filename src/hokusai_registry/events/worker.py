"""The delivery worker: claims due deliveries from the queue in the database, POSTs each to its webhook,
signed, and records the outcome; failed attempts are tried again with exponential back-off and jitter,
up to the delivery's attempts.

Every gateway process runs one (started and stopped with the gateway's lifespan). Claims are leased
(`store/webhook_store.py`), so several processes share the queue without sending a delivery twice at the
same time; a delivery whose gateway died mid-attempt is due again when its lease runs out. Requests go out
through httpx with a total timeout, no redirects followed (a 3xx is a failed attempt), no proxies or
`.netrc` from the environment (they could add credentials or send the delivery elsewhere), and the
answer's body is never read.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

from hokusai_registry import __version__
from hokusai_registry.events.sealing import Sealer, SecretUnreadable
from hokusai_registry.policy.webhooks import (
    DELIVERY_ID_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    delivered,
    retry_after,
    retry_delay,
    sign,
)
from hokusai_registry.store.webhook_store import Claimed, Outcome, WebhookStore

log = logging.getLogger(__name__)

# A lease outlives the attempt it covers by this much, so a slow attempt's outcome lands before anyone
# else may claim the row.
LEASE_MARGIN = 10.0
CLAIM_BATCH = 20
# How often finished deliveries older than the retention are forgotten.
PRUNE_EVERY = 3600.0


def display_url(url: str) -> str:
    """A webhook URL for logs and errors: without its query string (receivers put tokens there)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


@dataclass(frozen=True)
class Retries:
    max_attempts: int
    base: float
    cap: float
    jitter: float = 0.2


class DeliveryWorker:
    def __init__(
        self,
        store: WebhookStore,
        sealer: Sealer,
        *,
        timeout: float,
        retries: Retries,
        poll_interval: float,
        retention_days: float = 30.0,
        concurrency: int = 4,
        client: httpx.AsyncClient | None = None,
        counted: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self.sealer = sealer
        self.timeout = timeout
        self.retries = retries
        self.poll_interval = poll_interval
        self.retention = dt.timedelta(days=retention_days)
        self._pruned_at = -PRUNE_EVERY
        self.lease_seconds = timeout + LEASE_MARGIN
        # Whose leases are whose: one id per process (and restart).
        self.owner = secrets.token_hex(8)
        self._client = client
        # Told each attempt's outcome (delivered, retry, failed): the gateway's metrics.
        self._counted = counted
        self._slots = asyncio.Semaphore(concurrency)
        self._task: asyncio.Future[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stopping = False

    def wake(self) -> None:
        """New deliveries were queued (from any thread): look now instead of at the next poll."""
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(wake.set)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(self.timeout),
                follow_redirects=False,
                trust_env=False,
                headers={"user-agent": f"hokusai-registry-webhooks/{__version__}"},
            )
        self._stopping = False
        self._task = asyncio.ensure_future(self._run())

    async def stop(self, grace: float = 5.0) -> None:
        """Let attempts under way finish (at most `grace` seconds), then give up the leases still held so
        the next gateway to start sends them at once."""
        self._stopping = True
        if self._wake is not None:
            self._wake.set()
        if self._task is not None:
            done, _ = await asyncio.wait({self._task}, timeout=grace)
            if not done:
                self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self.store.release, self.owner)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _run(self) -> None:
        assert self._wake is not None  # nosec B101 - set by start
        while not self._stopping:
            self._wake.clear()
            await self._prune()
            try:
                claimed = await asyncio.to_thread(
                    self.store.claim, self.owner, lease_seconds=self.lease_seconds, limit=CLAIM_BATCH
                )
            except Exception as exc:
                log.error("webhook deliveries could not be claimed: %s", exc)
                claimed = []
            if claimed:
                await asyncio.gather(*(self._in_slot(one) for one in claimed))
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)

    async def _prune(self) -> None:
        """Keep the delivery log to its retention (HOKUSAI_WEBHOOK_RETENTION_DAYS), once an hour."""
        if time.monotonic() - self._pruned_at < PRUNE_EVERY:
            return
        self._pruned_at = time.monotonic()
        try:
            pruned = await asyncio.to_thread(self.store.prune, dt.datetime.now(dt.UTC) - self.retention)
        except Exception as exc:
            log.warning("old webhook deliveries could not be pruned: %s", exc)
            return
        if pruned:
            log.info("forgot %d webhook deliveries finished more than %s ago", pruned, self.retention)

    async def _in_slot(self, claimed: Claimed) -> None:
        async with self._slots:
            try:
                await self.deliver(claimed)
            except Exception:  # a bug must not stop the worker; the lease makes it due again
                log.exception("webhook delivery %s failed unexpectedly", claimed.id)

    async def deliver_now(self, delivery_id: str) -> Outcome | None:
        """Claim and send one delivery at once (`webhooks test`); None if it was not due or another worker
        took it first."""
        claimed = await asyncio.to_thread(
            self.store.claim, self.owner, lease_seconds=self.lease_seconds, limit=1, only=delivery_id
        )
        return await self.deliver(claimed[0]) if claimed else None

    async def deliver(self, claimed: Claimed) -> Outcome:
        """One attempt: sign, send, record."""
        started = dt.datetime.now(dt.UTC)
        clock = time.perf_counter()
        status: int | None = None
        error: str | None = None
        wait_at_least: float | None = None
        try:
            secret = self.sealer.unseal(claimed.sealed_secret, claimed.webhook_id)
        except SecretUnreadable as exc:
            error = str(exc)
        else:
            status, error, wait_at_least = await self._send(claimed, secret)
        duration = (time.perf_counter() - clock) * 1000
        outcome = self._outcome(claimed, started, duration, status, error, wait_at_least)
        await asyncio.to_thread(self.store.finish, claimed, outcome)
        self._log(claimed, outcome)
        if self._counted is not None:
            self._counted(
                "delivered" if outcome.delivered else "retry" if outcome.retry_at is not None else "failed"
            )
        return outcome

    async def _send(self, claimed: Claimed, secret: str) -> tuple[int | None, str | None, float | None]:
        assert self._client is not None  # nosec B101 - set by start
        timestamp = str(int(time.time()))
        headers = {
            "content-type": "application/json",
            DELIVERY_ID_HEADER: claimed.id,
            TIMESTAMP_HEADER: timestamp,
            SIGNATURE_HEADER: sign(secret, claimed.id, timestamp, claimed.body),
            EVENT_HEADER: claimed.event,
        }
        try:
            async with asyncio.timeout(self.timeout):
                request = self._client.build_request(
                    "POST", claimed.url, content=claimed.body.encode("utf-8"), headers=headers
                )
                # The answer's body is never read: only its status counts.
                response = await self._client.send(request, stream=True)
                await response.aclose()
        except TimeoutError:
            return None, f"no answer within {self.timeout:g} s (HOKUSAI_WEBHOOK_TIMEOUT)", None
        except httpx.HTTPError as exc:
            detail = str(exc) or type(exc).__name__
            return None, f"{type(exc).__name__}: {detail}"[:500], None
        status = response.status_code
        if delivered(status):
            return status, None, None
        location = " (redirects are not followed)" if 300 <= status < 400 else ""
        return (
            status,
            f"HTTP {status}{location}",
            retry_after(response.headers.get("retry-after"), cap=self.retries.cap),
        )

    def _outcome(
        self,
        claimed: Claimed,
        started: dt.datetime,
        duration: float,
        status: int | None,
        error: str | None,
        wait_at_least: float | None,
    ) -> Outcome:
        if status is not None and error is None:
            return Outcome(started, duration, status, None, True, None)
        if claimed.attempt >= claimed.max_attempts:
            return Outcome(started, duration, status, error, False, None)
        delay = retry_delay(
            claimed.attempt,
            base=self.retries.base,
            cap=self.retries.cap,
            jitter=self.retries.jitter,
            random=secrets.randbelow(1_000_000) / 1_000_000,
        )
        delay = max(delay, wait_at_least or 0.0)
        retry_at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=delay)
        return Outcome(started, duration, status, error, False, retry_at)

    def _log(self, claimed: Claimed, outcome: Outcome) -> None:
        where = display_url(claimed.url)
        if outcome.delivered:
            log.info(
                "webhook %s: %s delivery %s delivered to %s (attempt %d, HTTP %s)",
                claimed.webhook_id,
                claimed.event,
                claimed.id,
                where,
                claimed.attempt,
                outcome.status_code,
            )
        elif outcome.retry_at is not None:
            log.warning(
                "webhook %s: %s delivery %s to %s failed (attempt %d of %d: %s); next attempt at %s",
                claimed.webhook_id,
                claimed.event,
                claimed.id,
                where,
                claimed.attempt,
                claimed.max_attempts,
                outcome.error,
                outcome.retry_at.isoformat(timespec="seconds"),
            )
        else:
            log.error(
                "webhook %s: %s delivery %s to %s failed for good after %d attempt(s): %s",
                claimed.webhook_id,
                claimed.event,
                claimed.id,
                where,
                claimed.attempt,
                outcome.error,
            )
