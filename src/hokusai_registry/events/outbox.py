"""The outbox: where events are emitted. `emit` never blocks and never fails the caller: it renders the
event's body and queues it in memory; a task writes queued events to the delivery queue in the database
(`store/webhook_store.py`), one row per subscribed webhook, and wakes the delivery worker.

`emit` may be called from the event loop or from any thread (the admin API's endpoints run in worker
threads). An event emitted in the last moments before the process is killed (not stopped: a stop writes
what is queued) may be lost before it reaches the database; once written, it survives restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import threading
from collections.abc import Callable, Mapping

from hokusai_registry.policy.webhooks import EVENTS, TEST, envelope, subscribed
from hokusai_registry.store.webhook_store import WebhookStore

log = logging.getLogger(__name__)

# Events waiting for the database; past this, new ones are dropped (and logged) rather than held without end.
QUEUE_LIMIT = 10_000
RETRY_WRITE_SECONDS = 1.0

Queued = tuple[str, str, dt.datetime]


class Outbox:
    """The `emit(event, payload)` seam: registry writes on the forward path and the promotion workflow
    call it."""

    def __init__(self, store: WebhookStore, *, max_attempts: int, written: Callable[[], None]) -> None:
        self._store = store
        self._max_attempts = max_attempts
        self._written = written
        self._lock = threading.Lock()
        self._queued: list[Queued] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Future[None] | None = None
        self._stopping = False

    def emit(self, event: str, payload: Mapping[str, object]) -> None:
        if event not in EVENTS and event != TEST:
            log.warning(
                "event %r is not in the catalogue (policy/webhooks.py); only '*' webhooks get it", event
            )
        now = dt.datetime.now(dt.UTC)
        try:
            body = envelope(event, payload, now.isoformat())
        except (TypeError, ValueError) as exc:
            log.error("event %s dropped: its payload is not JSON (%s)", event, exc)
            return
        with self._lock:
            if len(self._queued) >= QUEUE_LIMIT:
                log.error("event %s dropped: %d events wait for the database already", event, QUEUE_LIMIT)
                return
            self._queued.append((event, body, now))
        self._notify()

    def _notify(self) -> None:
        loop, wake = self._loop, self._wake
        if loop is None or wake is None:
            return  # written once started
        with contextlib.suppress(RuntimeError):  # the loop is closed: the process is ending
            loop.call_soon_threadsafe(wake.set)

    async def start(self) -> None:
        self._stopping = False
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._wake.set()  # anything emitted before the start
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        """Write what is queued (a write under way finishes), then stop."""
        self._stopping = True
        if self._task is not None and self._wake is not None:
            self._wake.set()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._write()

    async def _run(self) -> None:
        assert self._wake is not None  # nosec B101 - set by start
        while not self._stopping:
            await self._wake.wait()
            self._wake.clear()
            if not await self._write() and not self._stopping:
                await asyncio.sleep(RETRY_WRITE_SECONDS)
                self._wake.set()

    async def _write(self) -> bool:
        """Write the queued events; False (and they stay queued) when the database failed."""
        with self._lock:
            batch, self._queued = self._queued, []
        if not batch:
            return True
        try:
            await asyncio.to_thread(
                self._store.enqueue, batch, max_attempts=self._max_attempts, subscribed=subscribed
            )
        except Exception as exc:
            log.error("could not queue %d event(s) for webhooks (%s); trying again", len(batch), exc)
            with self._lock:
                self._queued[:0] = batch
            return False
        self._written()
        return True
