"""Webhooks and their delivery queue in the key store's database (synchronous, like the key store; the
gateway calls it from worker threads).

The queue is the `webhook_deliveries` table. An event is written once per subscribed webhook when it is
emitted; a delivery worker claims due rows with a lease (`claim`), sends them and records the outcome
(`finish`). Claiming is one conditional UPDATE per row, so on SQLite and PostgreSQL alike two gateways (or
two workers of one) never hold the same row at once; a row whose lease ran out without an outcome (its
gateway died mid-attempt) is due again. Delivery is therefore at least once, and a receiver drops repeats
by the delivery id.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from hokusai_registry.store.key_store import KeyStore, as_utc
from hokusai_registry.store.schema import webhook_attempts, webhook_deliveries, webhooks

PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"
CANCELLED = "cancelled"


class WebhookNotFound(LookupError):
    pass


@dataclass(frozen=True, slots=True)
class WebhookRecord:
    id: str
    url: str
    events: tuple[str, ...]
    sealed_secret: str
    description: str | None
    created_at: dt.datetime
    created_by: str
    removed_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class Attempt:
    attempt: int
    started_at: dt.datetime
    status_code: int | None
    error: str | None
    duration_ms: float


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    id: str
    webhook_id: str
    event: str
    created_at: dt.datetime
    state: str
    attempts: int
    max_attempts: int
    next_attempt_at: dt.datetime
    finished_at: dt.datetime | None
    last_status: int | None
    last_error: str | None
    log: tuple[Attempt, ...] = ()


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery this worker holds the lease of, with what it needs to send it."""

    id: str
    webhook_id: str
    url: str
    sealed_secret: str
    event: str
    body: str
    attempt: int  # this attempt's number (1 = the first)
    max_attempts: int


@dataclass(frozen=True, slots=True)
class Outcome:
    """What an attempt came to: its status (None: no answer) or error, and whether the delivery is done
    (`retry_at` None) or due again then."""

    started_at: dt.datetime
    duration_ms: float
    status_code: int | None
    error: str | None
    delivered: bool
    retry_at: dt.datetime | None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _webhook(row: Any) -> WebhookRecord:
    return WebhookRecord(
        id=row.id,
        url=row.url,
        events=tuple(row.events.split()),
        sealed_secret=row.sealed_secret,
        description=row.description,
        created_at=as_utc(row.created_at),
        created_by=row.created_by,
        removed_at=as_utc(row.removed_at) if row.removed_at else None,
    )


def _delivery(row: Any, log: tuple[Attempt, ...] = ()) -> DeliveryRecord:
    return DeliveryRecord(
        id=row.id,
        webhook_id=row.webhook_id,
        event=row.event,
        created_at=as_utc(row.created_at),
        state=row.state,
        attempts=row.attempts,
        max_attempts=row.max_attempts,
        next_attempt_at=as_utc(row.next_attempt_at),
        finished_at=as_utc(row.finished_at) if row.finished_at else None,
        last_status=row.last_status,
        last_error=row.last_error,
        log=log,
    )


def _due(now: dt.datetime, *, scheduled: bool = True) -> sa.ColumnElement[bool]:
    """Pending and nobody's lease on it; and, when `scheduled`, its next attempt's time has come."""
    lease = webhook_deliveries.c.lease_until
    free = sa.and_(webhook_deliveries.c.state == PENDING, sa.or_(lease.is_(None), lease < now))
    return sa.and_(free, webhook_deliveries.c.next_attempt_at <= now) if scheduled else free


class WebhookStore:
    def __init__(self, keys: KeyStore) -> None:
        self.engine = keys.engine

    # Webhooks

    def create(
        self,
        webhook_id: str,
        *,
        url: str,
        events: tuple[str, ...],
        sealed_secret: str,
        description: str | None,
        created_by: str,
    ) -> WebhookRecord:
        record = WebhookRecord(
            id=webhook_id,
            url=url,
            events=events,
            sealed_secret=sealed_secret,
            description=description,
            created_at=_now(),
            created_by=created_by,
            removed_at=None,
        )
        with self.engine.begin() as connection:
            connection.execute(
                webhooks.insert().values(
                    id=record.id,
                    url=record.url,
                    events=" ".join(record.events),
                    sealed_secret=record.sealed_secret,
                    description=record.description,
                    created_at=record.created_at,
                    created_by=record.created_by,
                    removed_at=None,
                )
            )
        return record

    def all(self, *, removed: bool = False) -> list[WebhookRecord]:
        statement = sa.select(webhooks).order_by(webhooks.c.created_at)
        if not removed:
            statement = statement.where(webhooks.c.removed_at.is_(None))
        with self.engine.connect() as connection:
            return [_webhook(row) for row in connection.execute(statement).all()]

    def get(self, webhook_id: str) -> WebhookRecord:
        with self.engine.connect() as connection:
            row = connection.execute(sa.select(webhooks).where(webhooks.c.id == webhook_id)).first()
        if row is None:
            raise WebhookNotFound(f"no webhook with id {webhook_id!r} (see `hokusai-registry webhooks list`)")
        return _webhook(row)

    def remove(self, webhook_id: str) -> tuple[WebhookRecord, int]:
        """Remove a webhook (its row and log stay, marked removed) and cancel its pending deliveries; the
        webhook and how many were cancelled."""
        now = _now()
        with self.engine.begin() as connection:
            row = connection.execute(sa.select(webhooks).where(webhooks.c.id == webhook_id)).first()
            if row is None or row.removed_at is not None:
                raise WebhookNotFound(
                    f"no webhook with id {webhook_id!r} (see `hokusai-registry webhooks list`)"
                )
            connection.execute(webhooks.update().where(webhooks.c.id == webhook_id).values(removed_at=now))
            cancelled = connection.execute(
                webhook_deliveries.update()
                .where(webhook_deliveries.c.webhook_id == webhook_id, webhook_deliveries.c.state == PENDING)
                .values(state=CANCELLED, finished_at=now, lease_owner=None, lease_until=None)
            ).rowcount
            row = connection.execute(sa.select(webhooks).where(webhooks.c.id == webhook_id)).one()
        return _webhook(row), int(cancelled)

    # The queue

    def enqueue(
        self,
        events: Iterable[tuple[str, str, dt.datetime]],
        *,
        max_attempts: int,
        subscribed: Any,
        only: str | None = None,
        delay: float = 0.0,
    ) -> list[str]:
        """Write (event, body, when) rows for every active webhook `subscribed(webhook_events, event)`
        says gets them (or only webhook `only`), in one transaction, due `delay` seconds after `when`; the
        new delivery ids."""
        events = list(events)
        if not events:
            return []
        with self.engine.begin() as connection:
            statement = sa.select(webhooks.c.id, webhooks.c.events).where(webhooks.c.removed_at.is_(None))
            if only is not None:
                statement = statement.where(webhooks.c.id == only)
            targets = [(row.id, tuple(row.events.split())) for row in connection.execute(statement).all()]
            rows = [
                {
                    "id": str(uuid.uuid4()),
                    "webhook_id": webhook_id,
                    "event": event,
                    "body": body,
                    "created_at": when,
                    "state": PENDING,
                    "attempts": 0,
                    "max_attempts": max_attempts,
                    "next_attempt_at": when + dt.timedelta(seconds=delay),
                    "lease_owner": None,
                    "lease_until": None,
                    "finished_at": None,
                    "last_status": None,
                    "last_error": None,
                }
                for event, body, when in events
                for webhook_id, subscriptions in targets
                if subscribed(subscriptions, event)
            ]
            if rows:
                connection.execute(webhook_deliveries.insert(), rows)
        return [row["id"] for row in rows]

    def claim(
        self,
        owner: str,
        *,
        lease_seconds: float,
        limit: int,
        only: str | None = None,
        now: dt.datetime | None = None,
    ) -> list[Claimed]:
        """Take the lease of up to `limit` due deliveries (or of delivery `only`, whenever it is due, if
        pending and free). Each is its own conditional UPDATE: a row another worker took meanwhile is
        skipped, never sent twice at once. Deliveries of a removed webhook are cancelled instead."""
        now = now or _now()
        until = now + dt.timedelta(seconds=lease_seconds)
        due = _due(now, scheduled=only is None)
        candidates = (
            sa.select(webhook_deliveries.c.id)
            .where(due)
            .order_by(webhook_deliveries.c.next_attempt_at)
            .limit(limit)
        )
        if only is not None:
            candidates = candidates.where(webhook_deliveries.c.id == only)
        claimed: list[Claimed] = []
        with self.engine.begin() as connection:
            ids = [row.id for row in connection.execute(candidates).all()]
        for delivery_id in ids:
            with self.engine.begin() as connection:
                taken = connection.execute(
                    webhook_deliveries.update()
                    .where(webhook_deliveries.c.id == delivery_id, due)
                    .values(
                        lease_owner=owner,
                        lease_until=until,
                        attempts=webhook_deliveries.c.attempts + 1,
                    )
                ).rowcount
                if taken != 1:
                    continue
                row = connection.execute(
                    sa.select(
                        webhook_deliveries, webhooks.c.url, webhooks.c.sealed_secret, webhooks.c.removed_at
                    )
                    .join(webhooks, webhooks.c.id == webhook_deliveries.c.webhook_id, isouter=True)
                    .where(webhook_deliveries.c.id == delivery_id)
                ).one()
                if row.url is None or row.removed_at is not None:
                    connection.execute(
                        webhook_deliveries.update()
                        .where(webhook_deliveries.c.id == delivery_id)
                        .values(state=CANCELLED, finished_at=now, lease_owner=None, lease_until=None)
                    )
                    continue
            claimed.append(
                Claimed(
                    id=row.id,
                    webhook_id=row.webhook_id,
                    url=row.url,
                    sealed_secret=row.sealed_secret,
                    event=row.event,
                    body=row.body,
                    attempt=row.attempts,
                    max_attempts=row.max_attempts,
                )
            )
        return claimed

    def finish(self, claimed: Claimed, outcome: Outcome) -> None:
        """Log the attempt and settle the delivery: delivered, due again at `retry_at`, or failed. (Should
        the lease have run out and another worker be sending it too, the receiver sees it twice: at least
        once, never lost.)"""
        if outcome.delivered:
            values: dict[str, Any] = {"state": DELIVERED, "finished_at": _now()}
        elif outcome.retry_at is None:
            values = {"state": FAILED, "finished_at": _now()}
        else:
            values = {"next_attempt_at": outcome.retry_at}
        error = outcome.error[:500] if outcome.error else None
        with self.engine.begin() as connection:
            connection.execute(
                webhook_attempts.insert().values(
                    delivery_id=claimed.id,
                    attempt=claimed.attempt,
                    started_at=outcome.started_at,
                    status_code=outcome.status_code,
                    error=error,
                    duration_ms=outcome.duration_ms,
                )
            )
            connection.execute(
                webhook_deliveries.update()
                .where(webhook_deliveries.c.id == claimed.id, webhook_deliveries.c.state == PENDING)
                .values(
                    **values,
                    lease_owner=None,
                    lease_until=None,
                    last_status=outcome.status_code,
                    last_error=error,
                )
            )

    def release(self, owner: str) -> int:
        """Give up this worker's leases at once (a clean shutdown): the rows are due again for whoever
        claims next, instead of after the lease runs out."""
        with self.engine.begin() as connection:
            return int(
                connection.execute(
                    webhook_deliveries.update()
                    .where(webhook_deliveries.c.lease_owner == owner, webhook_deliveries.c.state == PENDING)
                    .values(lease_owner=None, lease_until=None)
                ).rowcount
            )

    def prune(self, before: dt.datetime) -> int:
        """Forget deliveries that finished (delivered, failed or cancelled) before `before`, with their
        attempts; how many."""
        finished = sa.select(webhook_deliveries.c.id).where(
            webhook_deliveries.c.state != PENDING, webhook_deliveries.c.finished_at < before
        )
        with self.engine.begin() as connection:
            connection.execute(webhook_attempts.delete().where(webhook_attempts.c.delivery_id.in_(finished)))
            return int(
                connection.execute(
                    webhook_deliveries.delete().where(
                        webhook_deliveries.c.state != PENDING, webhook_deliveries.c.finished_at < before
                    )
                ).rowcount
            )

    def next_due(self) -> dt.datetime | None:
        """When the earliest pending delivery is due (None: none pending)."""
        with self.engine.connect() as connection:
            when = connection.execute(
                sa.select(sa.func.min(webhook_deliveries.c.next_attempt_at)).where(
                    webhook_deliveries.c.state == PENDING
                )
            ).scalar_one_or_none()
        return as_utc(when) if when is not None else None

    def deliveries(self, webhook_id: str, *, limit: int = 50) -> list[DeliveryRecord]:
        """A webhook's latest deliveries, newest first, each with its attempts."""
        self.get(webhook_id)
        with self.engine.connect() as connection:
            rows = connection.execute(
                sa.select(webhook_deliveries)
                .where(webhook_deliveries.c.webhook_id == webhook_id)
                .order_by(webhook_deliveries.c.created_at.desc(), webhook_deliveries.c.id)
                .limit(limit)
            ).all()
            ids = [row.id for row in rows]
            logs: dict[str, list[Attempt]] = {delivery_id: [] for delivery_id in ids}
            if ids:
                for entry in connection.execute(
                    sa.select(webhook_attempts)
                    .where(webhook_attempts.c.delivery_id.in_(ids))
                    .order_by(webhook_attempts.c.attempt, webhook_attempts.c.id)
                ).all():
                    logs[entry.delivery_id].append(
                        Attempt(
                            attempt=entry.attempt,
                            started_at=as_utc(entry.started_at),
                            status_code=entry.status_code,
                            error=entry.error,
                            duration_ms=entry.duration_ms,
                        )
                    )
        return [_delivery(row, tuple(logs[row.id])) for row in rows]

    def delivery(self, delivery_id: str) -> DeliveryRecord:
        with self.engine.connect() as connection:
            row = connection.execute(
                sa.select(webhook_deliveries).where(webhook_deliveries.c.id == delivery_id)
            ).one()
        return _delivery(row)
