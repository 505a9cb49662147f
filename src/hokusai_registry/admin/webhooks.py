"""Webhook management: the one implementation behind `/api/v1/webhooks` (which `hokusai-registry webhooks`
calls). A webhook's secret is shown once, when it is created, and never again; every change is written to
the audit log with who made it."""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets

from pydantic import BaseModel, ConfigDict, Field, field_validator

from hokusai_registry.events.sealing import Sealer, new_secret
from hokusai_registry.events.worker import DeliveryWorker
from hokusai_registry.ops.audit import audit
from hokusai_registry.policy import webhooks as rules
from hokusai_registry.store.webhook_store import DeliveryRecord, WebhookRecord, WebhookStore

TEST_ATTEMPTS = 1
# A test delivery is sent by the gateway that queued it, at once; the queue's own schedule (for one whose
# gateway died in between) is this much later.
TEST_DELAY = 3600.0


class WebhookSpec(BaseModel):
    """Where events go and which."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        description="http:// or https:// URL the gateway POSTs each event to (no user name or password in "
        "it). Only admins configure webhooks: see docs/webhooks.md on what the gateway can reach."
    )
    events: list[str] = Field(
        description="Event names (docs/webhooks.md), or ['*'] for every event.", min_length=1
    )
    secret: str | None = Field(
        default=None,
        description="The signing secret (at least 16 characters); default: a new random one, returned once.",
    )
    description: str | None = Field(default=None, max_length=500)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return rules.check_url(value)

    @field_validator("events")
    @classmethod
    def _events(cls, value: list[str]) -> list[str]:
        return list(rules.parse_events(value))

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: str | None) -> str | None:
        return None if value is None else rules.check_secret(value)


class WebhookInfo(BaseModel):
    id: str
    url: str
    events: list[str]
    description: str | None
    created_at: dt.datetime
    created_by: str
    removed_at: dt.datetime | None = None


class CreatedWebhook(WebhookInfo):
    secret: str = Field(description="The signing secret: shown only this once.")


class AttemptInfo(BaseModel):
    attempt: int
    started_at: dt.datetime
    status_code: int | None
    error: str | None
    duration_ms: float


class DeliveryInfo(BaseModel):
    id: str
    webhook_id: str
    event: str
    created_at: dt.datetime
    state: str = Field(description="pending, delivered, failed (attempts used up) or cancelled (removed).")
    attempts: int
    max_attempts: int
    next_attempt_at: dt.datetime | None
    finished_at: dt.datetime | None
    last_status: int | None
    last_error: str | None
    log: list[AttemptInfo] = Field(default_factory=list)


class TestResult(BaseModel):
    delivery_id: str
    delivered: bool
    status_code: int | None
    error: str | None
    duration_ms: float | None


def _info(record: WebhookRecord) -> WebhookInfo:
    return WebhookInfo(
        id=record.id,
        url=record.url,
        events=list(record.events),
        description=record.description,
        created_at=record.created_at,
        created_by=record.created_by,
        removed_at=record.removed_at,
    )


def _delivery(record: DeliveryRecord) -> DeliveryInfo:
    return DeliveryInfo(
        id=record.id,
        webhook_id=record.webhook_id,
        event=record.event,
        created_at=record.created_at,
        state=record.state,
        attempts=record.attempts,
        max_attempts=record.max_attempts,
        next_attempt_at=record.next_attempt_at if record.state == "pending" else None,
        finished_at=record.finished_at,
        last_status=record.last_status,
        last_error=record.last_error,
        log=[
            AttemptInfo(
                attempt=entry.attempt,
                started_at=entry.started_at,
                status_code=entry.status_code,
                error=entry.error,
                duration_ms=entry.duration_ms,
            )
            for entry in record.log
        ],
    )


class WebhookAdmin:
    def __init__(self, store: WebhookStore, sealer: Sealer, worker: DeliveryWorker) -> None:
        self.store = store
        self.sealer = sealer
        self.worker = worker

    def create(self, spec: WebhookSpec, actor: str) -> CreatedWebhook:
        webhook_id = "wh" + secrets.token_hex(7)
        secret = spec.secret or new_secret()
        record = self.store.create(
            webhook_id,
            url=spec.url,
            events=tuple(spec.events),
            sealed_secret=self.sealer.seal(secret, webhook_id),
            description=spec.description,
            created_by=actor,
        )
        audit("webhook.created", actor=actor, webhook_id=webhook_id, events=" ".join(spec.events))
        return CreatedWebhook(**_info(record).model_dump(), secret=secret)

    def all(self) -> list[WebhookInfo]:
        return [_info(record) for record in self.store.all()]

    def get(self, webhook_id: str) -> WebhookInfo:
        return _info(self.store.get(webhook_id))

    def remove(self, webhook_id: str, actor: str) -> WebhookInfo:
        record, cancelled = self.store.remove(webhook_id)
        audit("webhook.removed", actor=actor, webhook_id=webhook_id, cancelled_deliveries=cancelled)
        return _info(record)

    def deliveries(self, webhook_id: str, limit: int) -> list[DeliveryInfo]:
        return [_delivery(record) for record in self.store.deliveries(webhook_id, limit=limit)]

    async def test(self, webhook_id: str, actor: str) -> TestResult:
        """Send a `webhook.test` event to one webhook now, once (no retries), and say how it went; it is
        in the webhook's delivery log like any other."""
        record = await asyncio.to_thread(self.store.get, webhook_id)
        if record.removed_at is not None:
            await asyncio.to_thread(self.store.remove, webhook_id)  # raises WebhookNotFound
        now = dt.datetime.now(dt.UTC)
        body = rules.envelope(
            rules.TEST,
            {"webhook_id": webhook_id, "message": "a test delivery from hokusai-registry", "actor": actor},
            now.isoformat(),
        )
        ids = await asyncio.to_thread(
            self.store.enqueue,
            [(rules.TEST, body, now)],
            max_attempts=TEST_ATTEMPTS,
            subscribed=rules.subscribed,
            only=webhook_id,
            delay=TEST_DELAY,
        )
        audit("webhook.tested", actor=actor, webhook_id=webhook_id)
        outcome = await self.worker.deliver_now(ids[0])
        if outcome is None:  # another gateway's worker took it first: its outcome is in the log
            return TestResult(
                delivery_id=ids[0], delivered=False, status_code=None, error="queued", duration_ms=None
            )
        return TestResult(
            delivery_id=ids[0],
            delivered=outcome.delivered,
            status_code=outcome.status_code,
            error=outcome.error,
            duration_ms=outcome.duration_ms,
        )
