"""The admin REST API's webhooks (`/api/v1/webhooks`): what `hokusai-registry webhooks ...` calls, through
`WebhookAdmin`, audited with the admin key as the actor. The gateway lets only admin keys (in the headers)
reach them."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from fastapi import FastAPI, Query, Request

from hokusai_registry.admin.webhooks import (
    CreatedWebhook,
    DeliveryInfo,
    TestResult,
    WebhookAdmin,
    WebhookInfo,
    WebhookSpec,
)
from hokusai_registry.policy.routes import WEBHOOKS_PATH


def add_webhook_routes(app: FastAPI, webhooks: WebhookAdmin, _actor: Callable[[Request], str]) -> None:
    """The routes on `app`; `_actor` names the admin key a request came with (`key:<id>`)."""

    @app.get(WEBHOOKS_PATH, response_model=list[WebhookInfo], summary="List webhooks (never their secrets)")
    def list_webhooks() -> list[WebhookInfo]:
        return webhooks.all()

    @app.post(
        WEBHOOKS_PATH,
        response_model=CreatedWebhook,
        status_code=201,
        summary="Add a webhook; its signing secret is in the answer, and only there",
    )
    def create_webhook(spec: WebhookSpec, request: Request) -> CreatedWebhook:
        return webhooks.create(spec, _actor(request))

    @app.get(WEBHOOKS_PATH + "/{webhook_id}", response_model=WebhookInfo, summary="One webhook")
    def get_webhook(webhook_id: str) -> WebhookInfo:
        return webhooks.get(webhook_id)

    @app.delete(
        WEBHOOKS_PATH + "/{webhook_id}",
        response_model=WebhookInfo,
        summary="Remove a webhook: its pending deliveries are cancelled, its delivery log kept",
    )
    def remove_webhook(webhook_id: str, request: Request) -> WebhookInfo:
        return webhooks.remove(webhook_id, _actor(request))

    @app.post(
        WEBHOOKS_PATH + "/{webhook_id}/test",
        response_model=TestResult,
        summary="Send a webhook.test event now, once, and say how the receiver answered",
    )
    async def test_webhook(webhook_id: str, request: Request) -> TestResult:
        return await webhooks.test(webhook_id, _actor(request))

    @app.get(
        WEBHOOKS_PATH + "/{webhook_id}/deliveries",
        response_model=list[DeliveryInfo],
        summary="A webhook's latest deliveries, newest first, each with its attempts",
    )
    async def deliveries(webhook_id: str, limit: int = Query(50, ge=1, le=1000)) -> list[DeliveryInfo]:
        return await asyncio.to_thread(webhooks.deliveries, webhook_id, limit)
