"""Enforcing protected aliases and stages on requests to MLflow, after the caller's checks and once the
body is read (the decision is `policy/protection.py`'s; this adds the I/O it needs).

For a request that moves or removes an alias or stage (`protection.action`): the rules are read from
the key store (unreadable: 503 `protection_unchecked`, nothing forwarded), what the model or version holds
is asked of MLflow where the decision needs it (no answer: the same 503), and a change a rule covers is
refused with 403 `protected`, naming the rule and how to request a promotion, whoever asks, the model's
MANAGE holders included. An admin key's change goes through as an override: audited as
`protection.overridden` and emitted as a registry event. Every alias or stage change let through is
written to the alias history: an override in the transaction that waits for MLflow's answer, kept only
when MLflow made it (`ProtectionStore.recorded`); a change no rule covers once MLflow answered 200, so
everyday alias changes hold no lock on the store while MLflow works.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from hokusai_registry.admin.mlflow_admin import MlflowError
from hokusai_registry.admin.promotions import is_admin, request_hint
from hokusai_registry.admin.registry import Registry, Unreachable
from hokusai_registry.auth.authenticator import Identity
from hokusai_registry.core.record import RequestRecord
from hokusai_registry.core.refusals import Reason, Refusal
from hokusai_registry.ops.audit import audit
from hokusai_registry.ops.events import RegistryEvents, emit_safely
from hokusai_registry.policy.protection import (
    Action,
    Hit,
    Holdings,
    Touch,
    hit,
    model_holdings,
    needs_lookup,
    version_holdings,
)
from hokusai_registry.store.protection_store import Movement, NotRecorded, ProtectionStore

log = logging.getLogger(__name__)
RETRY_AFTER_SECONDS = 5
# Changes recorded in the history even when no rule covers them.
_RECORDED = frozenset({Action.SET_ALIAS, Action.DELETE_ALIAS, Action.TRANSITION_STAGE})


def unchecked(why: str) -> Refusal:
    return Refusal(
        Reason.PROTECTION_UNCHECKED,
        f"could not check whether this changes a protected alias or stage ({why}), so nothing was "
        "forwarded. Try again shortly.",
        [(b"retry-after", str(RETRY_AFTER_SECONDS).encode())],
    )


def protected(found: Hit, touch: Touch) -> Refusal:
    rule = found.rule
    target = f"@{touch.alias}" if touch.alias and rule.alias is not None else rule.target
    if rule.stage is not None and touch.stage:
        target = f"stage {touch.stage}"
    version = touch.version or "VERSION"
    return Refusal(
        Reason.PROTECTED,
        f"{found.what} is protected by rule {rule.id} (changes need {rule.who}); nothing was changed. "
        f"Request a promotion: {request_hint(touch.model or 'MODEL', target, version)}.",
    )


@dataclass(frozen=True, slots=True)
class Verdict:
    """A change that goes through: recorded in the history; `override` when a rule covered it."""

    touch: Touch
    override: Hit | None


class ProtectionGuard:
    def __init__(self, store: ProtectionStore, registry: Registry, events: RegistryEvents) -> None:
        self.store = store
        self.registry = registry
        self.events = events

    async def judge(self, touch: Touch, identity: Identity) -> Verdict | None:
        """None: forward as usual (nothing protected or recorded). A Verdict: forward through `forward`.
        Refusal: protected (403) or unchecked (503)."""
        try:
            rules = await asyncio.to_thread(self.store.rules)
        except Exception as exc:
            raise unchecked(f"the key store did not answer: {type(exc).__name__}") from None
        held = await self._holdings(touch) if needs_lookup(rules, touch) else None
        found = hit(rules, touch, held)
        if found is None:
            return Verdict(touch, None) if touch.action in _RECORDED else None
        if not is_admin(identity):
            raise protected(found, touch)
        return Verdict(touch, found)

    async def _holdings(self, touch: Touch) -> Holdings:
        try:
            if touch.action in (Action.DELETE_VERSION, Action.TRANSITION_STAGE):
                return version_holdings(await self.registry.version(touch.model, touch.version))
            return model_holdings(await self.registry.model(touch.model))
        except MlflowError as error:
            if error.code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return Holdings()  # nothing there to protect: MLflow refuses the change itself
            raise unchecked(f"MLflow answered {error.code}") from None
        except Unreachable as exc:
            raise unchecked(str(exc)) from None

    async def forward(
        self,
        verdict: Verdict,
        identity: Identity,
        record: RequestRecord,
        client: str,
        send_on: Callable[[], Coroutine[Any, Any, None]],
    ) -> None:
        """Forwards (`send_on`) inside the transaction that writes the history row, kept when MLflow
        answered 200; an override is audited and emitted once MLflow made it."""
        touch, override = verdict.touch, verdict.override
        movement = Movement(
            model=touch.model or f"workspace:{touch.workspace}",
            action=touch.action.value,
            kind="override" if override is not None else "direct",
            actor=identity.user_id,
            key_id=identity.key_id,
            alias=touch.alias or None,
            stage=touch.stage or None,
            version=touch.version or None,
            rule_id=override.rule.id if override is not None else None,
        )
        if override is None:
            # A change no rule covers: forwarded as usual (no lock held on the store meanwhile), recorded
            # once MLflow made it.
            await send_on()
            if record.status == 200:
                try:
                    await asyncio.to_thread(self.store.record, movement)
                except Exception as exc:  # the change is made; the history misses it, and says so here
                    log.warning(
                        "%s alias history: %s of %s not recorded: %s",
                        record.request_id.decode(),
                        touch.action.value,
                        touch.model,
                        type(exc).__name__,
                    )
            return
        loop = asyncio.get_running_loop()
        forwarded = False

        after: list[BaseException] = []

        def effect() -> None:
            nonlocal forwarded
            forwarded = True
            try:
                asyncio.run_coroutine_threadsafe(send_on(), loop).result()
            except Exception as exc:  # the client left while MLflow's answer was relayed
                after.append(exc)
            if record.status != 200:
                raise NotRecorded(f"MLflow answered {record.status}")

        try:
            await asyncio.to_thread(self.store.recorded, movement, effect)
        except NotRecorded:
            if after:
                raise after[0] from None
            return
        except Exception as exc:
            if forwarded:
                raise
            raise unchecked(f"the key store did not answer: {type(exc).__name__}") from None
        fields = {
            "rule_id": override.rule.id,
            "what": override.what,
            "model": touch.model or None,
            "alias": touch.alias or None,
            "stage": touch.stage or None,
            "version": touch.version or None,
            "workspace": touch.workspace or None,
            "action": touch.action.value,
        }
        self._overridden(fields, identity, record, client)
        if after:
            raise after[0]

    def _overridden(
        self, fields: dict[str, str | None], identity: Identity, record: RequestRecord, client: str
    ) -> None:
        audit(
            "protection.overridden",
            key_id=identity.key_id,
            owner=identity.user_id,
            client=client,
            request_id=record.request_id.decode(),
            status=record.status,
            **fields,
        )
        payload = {name: value for name, value in fields.items() if value is not None}
        emit_safely(self.events, "protection.overridden", {**payload, "actor": identity.user_id})
