"""Protection rules and promotion requests: the one implementation behind `/api/v1/protections`,
`/api/v1/promotions`, the `/admin/protections` and `/promotions` pages (and, for rules, `hokusai-registry
protect`).

A promotion asks for a protected alias (or legacy stage) to point at a version. Approvals come from
distinct members of the rule's team (MLflow roles: Step 11 teams, which follow identity-provider groups at
sign-in), or from admins when the rule names none; the requester never counts. When the count is reached,
the gateway makes the change on MLflow itself, as MLflow's administrator, inside the key-store transaction
that marks the request applied and writes the history row, and tags the version
`hokusai.promotion.<alias>` with who asked, who approved and when. A request is stale, and is not applied,
when the alias (or stage) no longer points where it did when asked, or the version changed stage or
status meanwhile.

Every change is audited and emitted as a registry event (`ops/events.py`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, TypeVar

from hokusai_registry.admin.mlflow_admin import MlflowError
from hokusai_registry.admin.permission_models import ChangeRefused
from hokusai_registry.admin.permissions import PermissionAdmin
from hokusai_registry.admin.promotion_models import PromotionSpec, RuleSpec
from hokusai_registry.admin.registry import (
    SET_ALIAS,
    SET_VERSION_TAG,
    TRANSITION_STAGE,
    Registry,
    Unreachable,
)
from hokusai_registry.auth.authenticator import Identity
from hokusai_registry.core.refusals import Reason
from hokusai_registry.ops.audit import audit
from hokusai_registry.ops.events import RegistryEvents, emit_safely
from hokusai_registry.policy.assertions import mlflow_user
from hokusai_registry.policy.protection import PROMOTION_TAG_PREFIX, Rule, alias_versions, stage_version
from hokusai_registry.policy.registry_events import write_event
from hokusai_registry.policy.scopes import grants
from hokusai_registry.store.protection_store import (
    CANCELLED,
    PENDING,
    REJECTED,
    STALE,
    AlreadyApproved,
    Movement,
    NotRecorded,
    Promotion,
    ProtectionStore,
    RequestClosed,
    RequestNotFound,
    RuleNotFound,
)

T = TypeVar("T")


def is_admin(identity: Identity) -> bool:
    return grants(identity.scopes, "admin")


def require_write(identity: Identity, verb: str) -> None:
    """Asking, approving, rejecting and cancelling change state: a `read` key only looks."""
    if not grants(identity.scopes, "write"):
        raise ChangeRefused(
            Reason.SCOPE,
            f"key {identity.key_id} (scopes: {' '.join(identity.scopes)}) may not {verb} promotions: that "
            "needs the 'write' scope. Use a key with --scope write.",
        )


def promotion_payload(promotion: Promotion, **extra: object) -> dict[str, object]:
    """The registry event's payload (docs/promotions.md)."""
    return {
        "request_id": promotion.id,
        "model_name": promotion.model,
        "version": promotion.version,
        "alias": promotion.alias,
        "stage": promotion.stage,
        "rule_id": promotion.rule_id,
        "requester": promotion.requester,
        "approvers": [entry.approver for entry in promotion.approvals],
        "approvals_needed": promotion.approvals_needed,
        "state": promotion.state,
        **extra,
    }


def request_hint(model: str, target: str, version: str = "VERSION") -> str:
    """How to ask for the change instead: the command and the REST call."""
    flag = f"--alias {target[1:]}" if target.startswith("@") else f"--stage {target.split(' ', 1)[-1]}"
    return (
        f"`hokusai-registry promotions request --model {model} --version {version} {flag}` "
        "(or POST /api/v1/promotions)"
    )


class RuleAdmin:
    """Protection rules, synchronously: for the CLI (`hokusai-registry protect`) and, from a worker thread,
    the API and pages. Every change audited."""

    def __init__(self, store: ProtectionStore) -> None:
        self.store = store

    def list(self) -> list[Rule]:
        return self.store.rules()

    def add(self, spec: RuleSpec, actor: str) -> Rule:
        rule = self.store.add_rule(
            model=spec.model,
            alias=spec.alias,
            stage=spec.stage,
            approvers=spec.approvers,
            approvals=spec.approvals,
            actor=actor,
        )
        audit(
            "protection.added",
            actor=actor,
            rule_id=rule.id,
            model=rule.model,
            alias=rule.alias,
            stage=rule.stage,
            approvers=rule.approvers,
            approvals=rule.approvals,
        )
        return rule

    def remove(self, rule_id: str, actor: str) -> Rule:
        rule = self.store.remove_rule(rule_id)
        audit("protection.removed", actor=actor, rule_id=rule.id, model=rule.model, target=rule.target)
        return rule


class Promotions:
    def __init__(
        self,
        store: ProtectionStore,
        registry: Registry,
        permissions: PermissionAdmin,
        events: RegistryEvents,
    ) -> None:
        self.store = store
        self.registry = registry
        self.permissions = permissions
        self.events = events

    async def _stored(self, work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        try:
            return await asyncio.to_thread(work, *args, **kwargs)
        except RuleNotFound as missing:
            raise ChangeRefused(Reason.NOT_FOUND, str(missing)) from None
        except RequestNotFound as missing:
            raise ChangeRefused(Reason.NOT_FOUND, str(missing)) from None
        except RequestClosed as closed:
            raise ChangeRefused(Reason.PROMOTION_CLOSED, str(closed)) from None
        except AlreadyApproved as again:
            raise ChangeRefused(Reason.ALREADY_APPROVED, str(again)) from None

    async def _mlflow(self, call: Coroutine[Any, Any, T]) -> T:
        try:
            return await call
        except Unreachable as exc:
            raise ChangeRefused(Reason.UPSTREAM_REFUSED, f"{exc}; nothing was changed.") from None

    # Rules

    async def rules(self) -> list[Rule]:
        return await self._stored(self.store.rules)

    async def add_rule(self, spec: RuleSpec, actor: str) -> Rule:
        return await self._stored(RuleAdmin(self.store).add, spec, actor)

    async def remove_rule(self, rule_id: str, actor: str) -> Rule:
        return await self._stored(RuleAdmin(self.store).remove, rule_id, actor)

    # Requests

    async def request(self, spec: PromotionSpec, identity: Identity) -> Promotion:
        require_write(identity, "request")
        rules = await self.rules()
        model, target_alias, stage = spec.model, spec.alias, spec.stage
        if target_alias is not None:
            rule = next((rule for rule in rules if rule.covers_alias(model, target_alias)), None)
            target = f"@{target_alias}"
        else:
            rule = next((rule for rule in rules if rule.covers_stage(model, str(stage))), None)
            target = f"stage {stage}"
        if rule is None:
            raise ChangeRefused(
                Reason.NOT_PROTECTED,
                f"no protection rule covers {target} of model {model!r}: whoever may edit the model sets it "
                "directly (see `hokusai-registry protect list`).",
            )
        user = mlflow_user(identity.user_id, admin=is_admin(identity))
        if not await self._mlflow(self.registry.may_read_model(model, user)):
            raise ChangeRefused(
                Reason.NOT_FOUND, f"there is no registered model {model!r} that {identity.user_id} may read."
            )
        version = str(int(spec.version))
        registered, found = await self._mlflow(self._state(model, version))
        if found is None:
            raise ChangeRefused(Reason.NOT_FOUND, f"model {model!r} has no version {version}.")
        if target_alias is not None:
            before = alias_versions(registered).get(target_alias, "")
        else:
            before = stage_version(registered, str(stage))
            # MLflow names stages in one spelling: keep it, so the request shows what MLflow shows.
            stage = {
                "production": "Production",
                "staging": "Staging",
                "archived": "Archived",
                "none": "None",
            }.get(str(stage).casefold(), stage)
        already = (
            before == version
            if target_alias is not None
            else str(found.get("current_stage") or "").casefold() == str(stage).casefold()
        )
        if already:
            raise ChangeRefused(
                Reason.INVALID_REQUEST, f"{target} of model {model!r} is version {version} already."
            )
        promotion = await self._stored(
            self.store.create_request,
            model=model,
            version=version,
            alias=target_alias,
            stage=stage,
            rule=rule,
            requester=identity.user_id,
            requester_key_id=identity.key_id,
            reason=spec.reason,
            target_before=before,
            version_stage=str(found.get("current_stage") or ""),
            version_status=str(found.get("status") or ""),
        )
        self._report("promotion.requested", promotion, identity, reason=spec.reason)
        return promotion

    async def _state(self, model: str, version: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """The model (registered-models/get) and the version (None when there is none)."""
        try:
            registered = await self.registry.model(model)
        except MlflowError as error:
            if error.code == "RESOURCE_DOES_NOT_EXIST":
                raise ChangeRefused(Reason.NOT_FOUND, f"there is no registered model {model!r}.") from None
            raise error.refusal() from None
        try:
            found = (await self.registry.version(model, version)).get("model_version") or {}
        except MlflowError as error:
            if error.code == "RESOURCE_DOES_NOT_EXIST":
                return registered, None
            raise error.refusal() from None
        return registered, found

    async def get(self, request_id: str, identity: Identity) -> Promotion:
        promotion = await self._stored(self.store.request, request_id)
        if not await self._readable(identity, [promotion.model]):
            raise ChangeRefused(Reason.NOT_FOUND, f"there is no promotion request {request_id!r}.")
        return promotion

    async def requests(self, identity: Identity, *, pending: bool = False) -> list[Promotion]:
        """The requests on models the caller may read (MLflow's permissions decide; admins read all)."""
        found = await self._stored(self.store.requests, pending=pending)
        readable = await self._readable_models(identity, {promotion.model for promotion in found})
        return [promotion for promotion in found if promotion.model in readable]

    async def history(self, identity: Identity, model: str | None) -> list[Movement]:
        found = await self._stored(self.store.history, model)
        readable = await self._readable_models(identity, {movement.model for movement in found})
        return [movement for movement in found if movement.model in readable]

    async def _readable(self, identity: Identity, models: Iterable[str]) -> bool:
        wanted = set(models)
        return await self._readable_models(identity, wanted) == wanted

    async def _readable_models(self, identity: Identity, models: set[str]) -> set[str]:
        if is_admin(identity):
            return models
        user = mlflow_user(identity.user_id, admin=False)
        readable = set()
        for model in sorted(models):
            if await self._mlflow(self.registry.may_read_model(model, user)):
                readable.add(model)
        return readable

    # Decisions

    async def _may_decide(self, promotion: Promotion, identity: Identity, verb: str) -> None:
        require_write(identity, verb)
        if promotion.state != PENDING:
            raise ChangeRefused(
                Reason.PROMOTION_CLOSED, f"promotion request {promotion.id} is {promotion.state}."
            )
        if identity.user_id == promotion.requester:
            raise ChangeRefused(
                Reason.SELF_APPROVAL,
                f"{identity.user_id} asked for promotion {promotion.id} and may not {verb} it: approvals "
                f"come from others ({self._approvers(promotion)}).",
            )
        team = promotion.approvers
        if team is None:
            if not is_admin(identity):
                raise ChangeRefused(
                    Reason.NOT_AN_APPROVER,
                    f"promotion {promotion.id} is approved by admins; key {identity.key_id} is not an admin "
                    "key.",
                )
            return
        members = (await self.permissions.team(team)).members
        if identity.user_id not in members:
            raise ChangeRefused(
                Reason.NOT_AN_APPROVER,
                f"{identity.user_id} is not in team {team}, which approves promotion {promotion.id}.",
            )

    @staticmethod
    def _approvers(promotion: Promotion) -> str:
        return f"team {promotion.approvers}" if promotion.approvers else "admins"

    async def approve(self, request_id: str, identity: Identity, comment: str | None) -> Promotion:
        promotion = await self.get(request_id, identity)
        await self._may_decide(promotion, identity, "approve")
        approved_before = identity.user_id in {entry.approver for entry in promotion.approvals}
        if approved_before and self._approved(promotion):
            # Approved, not applied (MLflow failed then): a second approval of an approver applies it.
            return await self._apply(promotion, identity)
        promotion = await self._stored(
            self.store.approve, request_id, identity.user_id, identity.key_id, comment
        )
        self._report("promotion.approved", promotion, identity, approver=identity.user_id, comment=comment)
        if not self._approved(promotion):
            return promotion
        return await self._apply(promotion, identity)

    @staticmethod
    def _approved(promotion: Promotion) -> bool:
        approvers = {entry.approver for entry in promotion.approvals} - {promotion.requester}
        return len(approvers) >= promotion.approvals_needed

    async def reject(self, request_id: str, identity: Identity, comment: str | None) -> Promotion:
        promotion = await self.get(request_id, identity)
        await self._may_decide(promotion, identity, "reject")
        closed = await self._stored(self.store.close, request_id, REJECTED, identity.user_id, comment)
        self._report("promotion.rejected", closed, identity, comment=comment)
        return closed

    async def cancel(self, request_id: str, identity: Identity) -> Promotion:
        require_write(identity, "cancel")
        promotion = await self.get(request_id, identity)
        if identity.user_id != promotion.requester and not is_admin(identity):
            raise ChangeRefused(
                Reason.NOT_THE_REQUESTER,
                f"only {promotion.requester}, who asked, or an admin may cancel promotion {promotion.id}.",
            )
        closed = await self._stored(self.store.close, request_id, CANCELLED, identity.user_id)
        self._report("promotion.cancelled", closed, identity)
        return closed

    async def _apply(self, promotion: Promotion, identity: Identity) -> Promotion:
        """The change, made on MLflow inside the transaction that records it; stale requests closed."""
        try:
            registered, found = await self._mlflow(self._state(promotion.model, promotion.version))
        except ChangeRefused as missing:
            if missing.reason is not Reason.NOT_FOUND:
                raise
            registered, found = {}, None  # the model is gone (deleted or renamed): stale
        stale = self._staleness(promotion, registered, found)
        if stale is not None:
            closed = await self._stored(self.store.close, promotion.id, STALE, identity.user_id, stale)
            self._report("promotion.stale", closed, identity, why=stale)
            raise ChangeRefused(
                Reason.PROMOTION_STALE,
                f"promotion {promotion.id} is stale and was not applied: {stale}. Ask again if it still "
                "should be.",
            )
        approvers = tuple(entry.approver for entry in promotion.approvals)
        at = dt.datetime.now(dt.UTC)
        movement = Movement(
            model=promotion.model,
            action="set_alias" if promotion.alias is not None else "transition_stage",
            kind="promotion",
            actor=identity.user_id,
            key_id=identity.key_id,
            alias=promotion.alias,
            stage=promotion.stage,
            version=promotion.version,
            requester=promotion.requester,
            approvers=approvers,
            request_id=promotion.id,
            rule_id=promotion.rule_id,
            at=at,
        )
        loop = asyncio.get_running_loop()

        def change() -> None:
            asyncio.run_coroutine_threadsafe(self._change(promotion, approvers, at), loop).result()

        await self._stored(self.store.recorded, movement, change, applies=promotion.id, by=identity.user_id)
        applied = await self._stored(self.store.request, promotion.id)
        made = write_event("POST", *self._change_request(promotion), {})
        if made is not None:  # the alias moved (or the stage changed), as a forwarded write reports it
            event, data = made
            data["actor"] = {"owner": identity.user_id, "key_id": identity.key_id}
            data["promotion"] = promotion.id
            emit_safely(self.events, event, data)
        self._report("promotion.applied", applied, identity, applied_at=at.isoformat())
        return applied

    @staticmethod
    def _change_request(promotion: Promotion) -> tuple[str, dict[str, Any]]:
        """The MLflow call that applies a promotion: its path and body."""
        name, version = promotion.model, promotion.version
        if promotion.alias is not None:
            return SET_ALIAS, {"name": name, "alias": promotion.alias, "version": version}
        body = {"name": name, "version": version, "stage": promotion.stage, "archive_existing_versions": True}
        return TRANSITION_STAGE, body

    async def _change(self, promotion: Promotion, approvers: tuple[str, ...], at: dt.datetime) -> None:
        name, version = promotion.model, promotion.version
        path, body = self._change_request(promotion)
        try:
            await self.registry.call("POST", path, body=body)
        except MlflowError as error:
            raise error.refusal() from None
        except Unreachable as exc:
            raise NotRecorded(str(exc)) from None
        record = {
            "request": promotion.id,
            "requester": promotion.requester,
            "approvers": list(approvers),
            "at": at.isoformat(timespec="seconds"),
            "rule": promotion.rule_id,
        }
        label = promotion.alias if promotion.alias is not None else str(promotion.stage)
        tag = {
            "name": name,
            "version": version,
            "key": PROMOTION_TAG_PREFIX + label,
            "value": json.dumps(record),
        }
        try:
            await self.registry.call("POST", SET_VERSION_TAG, body=tag)
        except (MlflowError, Unreachable) as exc:
            # The alias has moved: the history row records it either way; the tag is for the MLflow UI.
            audit("promotion.tag_failed", request_id=promotion.id, error=str(exc)[:200])

    @staticmethod
    def _staleness(
        promotion: Promotion, registered: dict[str, Any], found: dict[str, Any] | None
    ) -> str | None:
        if not registered:
            return f"model {promotion.model!r} no longer exists (deleted or renamed)"
        if found is None:
            return f"version {promotion.version} no longer exists"
        if promotion.alias is not None:
            now = alias_versions(registered).get(promotion.alias, "")
            if now != promotion.target_before:
                was = f"version {promotion.target_before}" if promotion.target_before else "unset"
                is_now = f"version {now}" if now else "unset"
                return f"@{promotion.alias} moved since the request (was {was}, is {is_now})"
        else:
            now = stage_version(registered, str(promotion.stage))
            if now != promotion.target_before:
                return f"stage {promotion.stage} changed since the request"
        stage, status = str(found.get("current_stage") or ""), str(found.get("status") or "")
        if (stage, status) != (promotion.version_stage, promotion.version_status):
            return (
                f"version {promotion.version} changed since the request (stage "
                f"{promotion.version_stage or '-'} → {stage or '-'}, status "
                f"{promotion.version_status or '-'} → {status or '-'})"
            )
        return None

    def _report(self, event: str, promotion: Promotion, identity: Identity, **extra: Any) -> None:
        audit(
            event,
            key_id=identity.key_id,
            owner=identity.user_id,
            request_id=promotion.id,
            model=promotion.model,
            version=promotion.version,
            alias=promotion.alias,
            stage=promotion.stage,
            state=promotion.state,
            **{name: value for name, value in extra.items() if value is not None},
        )
        emit_safely(self.events, event, promotion_payload(promotion, actor=identity.user_id, **extra))
