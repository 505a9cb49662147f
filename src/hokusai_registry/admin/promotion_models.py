"""What the protections and promotions API, CLI and pages take and answer (JSON shapes)."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, Field, model_validator

from hokusai_registry.policy.protection import Rule, valid_pattern
from hokusai_registry.store.protection_store import Movement, Promotion


class RuleSpec(BaseModel):
    model: str = Field(min_length=1, max_length=250, description="A glob of registered model names.")
    alias: str | None = Field(
        default=None, min_length=1, max_length=250, description="A glob of alias names, e.g. production."
    )
    stage: str | None = Field(
        default=None,
        min_length=1,
        max_length=250,
        description="A glob of legacy stages (Production, Staging), for clients that still transition.",
    )
    approvers: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="The team whose members approve; default: admins approve.",
    )
    approvals: int = Field(default=1, ge=1, le=10, description="Approvals needed, from distinct people.")

    @model_validator(mode="after")
    def one_target(self) -> RuleSpec:
        if (self.alias is None) == (self.stage is None):
            raise ValueError("give exactly one of alias and stage")
        for pattern in (self.model, self.alias, self.stage):
            if pattern is not None and not valid_pattern(pattern):
                raise ValueError(f"{pattern!r} is not a pattern (no control characters)")
        return self


class RuleInfo(BaseModel):
    id: str
    model: str
    alias: str | None
    stage: str | None
    approvers: str | None
    approvals: int

    @classmethod
    def of(cls, rule: Rule) -> RuleInfo:
        return cls(
            id=rule.id,
            model=rule.model,
            alias=rule.alias,
            stage=rule.stage,
            approvers=rule.approvers,
            approvals=rule.approvals,
        )


class PromotionSpec(BaseModel):
    model: str = Field(min_length=1, max_length=500)
    version: str = Field(min_length=1, max_length=32, pattern=r"^[0-9]+$")
    alias: str | None = Field(default=None, min_length=1, max_length=256)
    stage: str | None = Field(default=None, min_length=1, max_length=32)
    reason: str | None = Field(default=None, max_length=2000)

    @model_validator(mode="after")
    def one_target(self) -> PromotionSpec:
        if (self.alias is None) == (self.stage is None):
            raise ValueError("give exactly one of alias and stage")
        return self


class Decision(BaseModel):
    comment: str | None = Field(default=None, max_length=2000)


class ApprovalInfo(BaseModel):
    approver: str
    comment: str | None
    at: dt.datetime


class PromotionInfo(BaseModel):
    id: str
    model: str
    version: str
    alias: str | None
    stage: str | None
    rule_id: str
    approvers: str | None = Field(description="The team that approves; null: admins.")
    approvals_needed: int
    approvals: list[ApprovalInfo]
    requester: str
    reason: str | None
    state: str = Field(description="pending, applied, rejected, cancelled or stale")
    created_at: dt.datetime
    closed_at: dt.datetime | None
    closed_by: str | None
    note: str | None

    @classmethod
    def of(cls, promotion: Promotion) -> PromotionInfo:
        return cls(
            id=promotion.id,
            model=promotion.model,
            version=promotion.version,
            alias=promotion.alias,
            stage=promotion.stage,
            rule_id=promotion.rule_id,
            approvers=promotion.approvers,
            approvals_needed=promotion.approvals_needed,
            approvals=[
                ApprovalInfo(approver=entry.approver, comment=entry.comment, at=entry.created_at)
                for entry in promotion.approvals
            ],
            requester=promotion.requester,
            reason=promotion.reason,
            state=promotion.state,
            created_at=promotion.created_at,
            closed_at=promotion.closed_at,
            closed_by=promotion.closed_by,
            note=promotion.note,
        )


class MovementInfo(BaseModel):
    at: dt.datetime
    model: str
    alias: str | None
    stage: str | None
    version: str | None
    kind: str = Field(description="promotion, override or direct")
    action: str
    actor: str
    key_id: str
    requester: str | None
    approvers: list[str]
    request_id: str | None
    rule_id: str | None

    @classmethod
    def of(cls, movement: Movement) -> MovementInfo:
        return cls(
            at=movement.at,
            model=movement.model,
            alias=movement.alias,
            stage=movement.stage,
            version=movement.version,
            kind=movement.kind,
            action=movement.action,
            actor=movement.actor,
            key_id=movement.key_id,
            requester=movement.requester,
            approvers=list(movement.approvers),
            request_id=movement.request_id,
            rule_id=movement.rule_id,
        )
