"""Protection rules, promotion requests and their approvals, and the alias history, in the key store's
database.

Synchronous like the key store: the CLI calls it directly, the gateway from a worker thread. A change on
MLflow that must be recorded (a promotion applied, an override or a direct alias change let through) runs
inside the transaction that records it (`recorded`): the history row and the request's new state are
committed only once MLflow has made the change, and not at all when it did not.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from hokusai_registry.policy.protection import Rule
from hokusai_registry.store.key_store import as_utc
from hokusai_registry.store.schema import (
    alias_history,
    promotion_approvals,
    promotion_requests,
    protection_rules,
)

PENDING = "pending"
APPLIED = "applied"
REJECTED = "rejected"
CANCELLED = "cancelled"
STALE = "stale"
STATES = (PENDING, APPLIED, REJECTED, CANCELLED, STALE)
T = TypeVar("T")


class RuleNotFound(LookupError):
    pass


class RequestNotFound(LookupError):
    pass


class RequestClosed(ValueError):
    """The request is no longer pending (applied, rejected, cancelled or stale meanwhile)."""


class AlreadyApproved(ValueError):
    pass


class NotRecorded(Exception):
    """Raised by a recorded change's effect when MLflow did not make it: nothing is recorded."""


@dataclass(frozen=True, slots=True)
class Approval:
    approver: str
    key_id: str
    comment: str | None
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class Promotion:
    id: str
    model: str
    version: str
    alias: str | None
    stage: str | None
    rule_id: str
    approvers: str | None
    approvals_needed: int
    requester: str
    requester_key_id: str
    reason: str | None
    state: str
    created_at: dt.datetime
    closed_at: dt.datetime | None
    closed_by: str | None
    note: str | None
    target_before: str
    version_stage: str
    version_status: str
    approvals: tuple[Approval, ...] = ()

    @property
    def target(self) -> str:
        return f"@{self.alias}" if self.alias is not None else f"stage {self.stage}"


@dataclass(frozen=True, slots=True)
class Movement:
    """One row of the alias history."""

    model: str
    action: str
    kind: str  # promotion, override, direct
    actor: str
    key_id: str
    alias: str | None = None
    stage: str | None = None
    version: str | None = None
    requester: str | None = None
    approvers: tuple[str, ...] = ()
    request_id: str | None = None
    rule_id: str | None = None
    at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    id: int | None = None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _rule(row: Any) -> Rule:
    return Rule(
        id=row.id,
        model=row.model_pattern,
        alias=row.alias_pattern,
        stage=row.stage_pattern,
        approvers=row.approvers,
        approvals=int(row.approvals),
    )


def _approval(row: Any) -> Approval:
    return Approval(row.approver, row.key_id, row.comment, as_utc(row.created_at))


def _promotion(row: Any, approvals: tuple[Approval, ...]) -> Promotion:
    return Promotion(
        id=row.id,
        model=row.model,
        version=row.version,
        alias=row.alias,
        stage=row.stage,
        rule_id=row.rule_id,
        approvers=row.approvers,
        approvals_needed=int(row.approvals),
        requester=row.requester,
        requester_key_id=row.requester_key_id,
        reason=row.reason,
        state=row.state,
        created_at=as_utc(row.created_at),
        closed_at=as_utc(row.closed_at) if row.closed_at else None,
        closed_by=row.closed_by,
        note=row.note,
        target_before=row.target_before,
        version_stage=row.version_stage,
        version_status=row.version_status,
        approvals=approvals,
    )


def _movement(row: Any) -> Movement:
    return Movement(
        id=int(row.id),
        at=as_utc(row.at),
        model=row.model,
        alias=row.alias,
        stage=row.stage,
        version=row.version,
        kind=row.kind,
        action=row.action,
        actor=row.actor,
        key_id=row.key_id,
        requester=row.requester,
        approvers=tuple(json.loads(row.approvers)) if row.approvers else (),
        request_id=row.request_id,
        rule_id=row.rule_id,
    )


class ProtectionStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # Rules

    def add_rule(
        self,
        *,
        model: str,
        alias: str | None,
        stage: str | None,
        approvers: str | None,
        approvals: int,
        actor: str,
    ) -> Rule:
        rule_id = "rule-" + secrets.token_hex(4)
        with self.engine.begin() as connection:
            connection.execute(
                protection_rules.insert().values(
                    id=rule_id,
                    model_pattern=model,
                    alias_pattern=alias,
                    stage_pattern=stage,
                    approvers=approvers,
                    approvals=approvals,
                    created_at=_now(),
                    created_by=actor,
                )
            )
        return Rule(rule_id, model, alias, stage, approvers, approvals)

    def rules(self) -> list[Rule]:
        with self.engine.connect() as connection:
            rows = connection.execute(
                sa.select(protection_rules).order_by(protection_rules.c.created_at, protection_rules.c.id)
            )
            return [_rule(row) for row in rows]

    def rule(self, rule_id: str) -> Rule:
        with self.engine.connect() as connection:
            row = connection.execute(
                sa.select(protection_rules).where(protection_rules.c.id == rule_id)
            ).first()
        if row is None:
            raise RuleNotFound(
                f"there is no protection rule {rule_id!r} (see `hokusai-registry protect list`)."
            )
        return _rule(row)

    def remove_rule(self, rule_id: str) -> Rule:
        rule = self.rule(rule_id)
        with self.engine.begin() as connection:
            connection.execute(protection_rules.delete().where(protection_rules.c.id == rule_id))
        return rule

    # Promotion requests

    def create_request(
        self,
        *,
        model: str,
        version: str,
        alias: str | None,
        stage: str | None,
        rule: Rule,
        requester: str,
        requester_key_id: str,
        reason: str | None,
        target_before: str,
        version_stage: str,
        version_status: str,
    ) -> Promotion:
        request_id = "pr-" + secrets.token_hex(5)
        with self.engine.begin() as connection:
            connection.execute(
                promotion_requests.insert().values(
                    id=request_id,
                    model=model,
                    version=version,
                    alias=alias,
                    stage=stage,
                    rule_id=rule.id,
                    approvers=rule.approvers,
                    approvals=rule.approvals,
                    requester=requester,
                    requester_key_id=requester_key_id,
                    reason=reason,
                    state=PENDING,
                    created_at=_now(),
                    target_before=target_before,
                    version_stage=version_stage,
                    version_status=version_status,
                )
            )
        return self.request(request_id)

    def request(self, request_id: str) -> Promotion:
        with self.engine.connect() as connection:
            row = connection.execute(
                sa.select(promotion_requests).where(promotion_requests.c.id == request_id)
            ).first()
            if row is None:
                raise RequestNotFound(
                    f"there is no promotion request {request_id!r} (see `hokusai-registry promotions list`)."
                )
            approvals = connection.execute(
                sa.select(promotion_approvals)
                .where(promotion_approvals.c.request_id == request_id)
                .order_by(promotion_approvals.c.created_at)
            )
            return _promotion(row, tuple(_approval(entry) for entry in approvals))

    def requests(self, *, pending: bool = False, model: str | None = None) -> list[Promotion]:
        query = sa.select(promotion_requests).order_by(promotion_requests.c.created_at.desc())
        if pending:
            query = query.where(promotion_requests.c.state == PENDING)
        if model is not None:
            query = query.where(promotion_requests.c.model == model)
        with self.engine.connect() as connection:
            rows = list(connection.execute(query.limit(1000)))
            ids = [row.id for row in rows]
            approvals: dict[str, list[Approval]] = {}
            if ids:
                for entry in connection.execute(
                    sa.select(promotion_approvals)
                    .where(promotion_approvals.c.request_id.in_(ids))
                    .order_by(promotion_approvals.c.created_at)
                ):
                    approvals.setdefault(entry.request_id, []).append(_approval(entry))
        return [_promotion(row, tuple(approvals.get(row.id, ()))) for row in rows]

    def approve(self, request_id: str, approver: str, key_id: str, comment: str | None) -> Promotion:
        with self.engine.begin() as connection:
            state = connection.execute(
                sa.select(promotion_requests.c.state).where(promotion_requests.c.id == request_id)
            ).scalar()
            if state is None:
                raise RequestNotFound(f"there is no promotion request {request_id!r}.")
            if state != PENDING:
                raise RequestClosed(f"promotion request {request_id} is {state}.")
            try:
                connection.execute(
                    promotion_approvals.insert().values(
                        request_id=request_id,
                        approver=approver,
                        key_id=key_id,
                        comment=comment,
                        created_at=_now(),
                    )
                )
            except sa.exc.IntegrityError:
                raise AlreadyApproved(
                    f"{approver} has already approved promotion request {request_id}."
                ) from None
        return self.request(request_id)

    def close(self, request_id: str, state: str, by: str, note: str | None = None) -> Promotion:
        """Ends a pending request (rejected, cancelled, stale); RequestClosed when it is no longer
        pending."""
        with self.engine.begin() as connection:
            changed = connection.execute(
                promotion_requests.update()
                .where(promotion_requests.c.id == request_id, promotion_requests.c.state == PENDING)
                .values(state=state, closed_at=_now(), closed_by=by, note=note)
            ).rowcount
        if not changed:
            current = self.request(request_id)  # RequestNotFound when there is none
            raise RequestClosed(f"promotion request {request_id} is {current.state}.")
        return self.request(request_id)

    # Changes recorded with the history row

    def recorded(
        self, movement: Movement, effect: Callable[[], T], *, applies: str | None = None, by: str = ""
    ) -> T:
        """Runs `effect` (the change on MLflow) inside the transaction that writes `movement` and, with
        `applies`, marks that pending request applied: both committed when `effect` returns, neither when
        it raises (NotRecorded: MLflow did not make the change). RequestClosed when the request was no
        longer pending (another approval applied it meanwhile): `effect` is then not run."""
        with self.engine.begin() as connection:
            if applies is not None:
                changed = connection.execute(
                    promotion_requests.update()
                    .where(promotion_requests.c.id == applies, promotion_requests.c.state == PENDING)
                    .values(state=APPLIED, closed_at=_now(), closed_by=by)
                ).rowcount
                if not changed:
                    raise RequestClosed(f"promotion request {applies} is no longer pending.")
            connection.execute(
                alias_history.insert().values(
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
                    approvers=json.dumps(list(movement.approvers)) if movement.approvers else None,
                    request_id=movement.request_id,
                    rule_id=movement.rule_id,
                )
            )
            return effect()

    def record(self, movement: Movement) -> None:
        """A movement already made (a direct change of an unprotected alias): written on its own."""
        self.recorded(movement, lambda: None)

    def history(self, model: str | None = None, limit: int = 1000) -> list[Movement]:
        query = sa.select(alias_history).order_by(alias_history.c.id.desc()).limit(limit)
        if model is not None:
            query = query.where(alias_history.c.model == model)
        with self.engine.connect() as connection:
            return [_movement(row) for row in connection.execute(query)]
