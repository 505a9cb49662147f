"""The admin REST API's protections (`/api/v1/protections`, admin keys) and promotions
(`/api/v1/promotions`, any key in the headers): the same operations and JSON as `hokusai-registry
protect|promotions ... --json`, through the same `Promotions`. The gateway checks the caller before a
request gets here and passes its identity in the scope."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI, Request

from hokusai_registry.admin.promotion_models import (
    Decision,
    MovementInfo,
    PromotionInfo,
    PromotionSpec,
    RuleInfo,
    RuleSpec,
)
from hokusai_registry.admin.promotions import Promotions
from hokusai_registry.auth.authenticator import Identity


def add_promotion_routes(
    app: FastAPI, promotions: Promotions, identity_of: Callable[[Request], Identity]
) -> None:
    def actor(request: Request) -> str:
        return f"key:{identity_of(request).key_id}"

    @app.get("/api/v1/protections", response_model=list[RuleInfo], summary="List protection rules")
    async def list_rules() -> list[RuleInfo]:
        return [RuleInfo.of(rule) for rule in await promotions.rules()]

    @app.post(
        "/api/v1/protections",
        response_model=RuleInfo,
        status_code=201,
        summary="Protect aliases (or legacy stages) of models: changes then need approvals",
    )
    async def add_rule(spec: RuleSpec, request: Request) -> RuleInfo:
        return RuleInfo.of(await promotions.add_rule(spec, actor(request)))

    @app.delete("/api/v1/protections/{rule_id}", response_model=RuleInfo, summary="Remove a protection rule")
    async def remove_rule(rule_id: str, request: Request) -> RuleInfo:
        return RuleInfo.of(await promotions.remove_rule(rule_id, actor(request)))

    @app.get(
        "/api/v1/promotions",
        response_model=list[PromotionInfo],
        summary="Promotion requests on models the caller may read (admins: all), newest first",
    )
    async def list_promotions(request: Request, pending: bool = False) -> list[PromotionInfo]:
        found = await promotions.requests(identity_of(request), pending=pending)
        return [PromotionInfo.of(promotion) for promotion in found]

    @app.post(
        "/api/v1/promotions",
        response_model=PromotionInfo,
        status_code=201,
        summary="Ask for a protected alias (or stage) to point at a version",
    )
    async def request_promotion(spec: PromotionSpec, request: Request) -> PromotionInfo:
        return PromotionInfo.of(await promotions.request(spec, identity_of(request)))

    @app.get(
        "/api/v1/promotions/history",
        response_model=list[MovementInfo],
        summary="Every alias and stage movement through the gateway (promotions, overrides, direct), newest "
        "first",
    )
    async def history(request: Request, model: str | None = None) -> list[MovementInfo]:
        return [MovementInfo.of(entry) for entry in await promotions.history(identity_of(request), model)]

    @app.get("/api/v1/promotions/{request_id}", response_model=PromotionInfo, summary="One promotion request")
    async def get_promotion(request_id: str, request: Request) -> PromotionInfo:
        return PromotionInfo.of(await promotions.get(request_id, identity_of(request)))

    @app.post(
        "/api/v1/promotions/{request_id}/approve",
        response_model=PromotionInfo,
        summary="Approve (a member of the rule's team, not the requester); the last approval applies it",
    )
    async def approve(request_id: str, decision: Decision, request: Request) -> PromotionInfo:
        approved = await promotions.approve(request_id, identity_of(request), decision.comment)
        return PromotionInfo.of(approved)

    @app.post("/api/v1/promotions/{request_id}/reject", response_model=PromotionInfo, summary="Reject")
    async def reject(request_id: str, decision: Decision, request: Request) -> PromotionInfo:
        return PromotionInfo.of(await promotions.reject(request_id, identity_of(request), decision.comment))

    @app.post(
        "/api/v1/promotions/{request_id}/cancel",
        response_model=PromotionInfo,
        summary="Withdraw a request (its requester, or an admin)",
    )
    async def cancel(request_id: str, request: Request) -> PromotionInfo:
        return PromotionInfo.of(await promotions.cancel(request_id, identity_of(request)))
