"""The protection store on PostgreSQL (the shared key store of several gateways): migrated by `db upgrade`,
rules made by `protect add`, and a promotion applied exactly once when two approvals race (the second
finds it no longer pending and changes nothing); the history row is kept only when the change was made."""

from __future__ import annotations

import os
import subprocess
import threading

import pytest

from hokusai_registry.policy.protection import Rule
from hokusai_registry.store.key_store import KeyStore
from hokusai_registry.store.protection_store import Movement, NotRecorded, ProtectionStore, RequestClosed
from tests.helpers import HOKUSAI


def hokusai(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [HOKUSAI, *args], env={**os.environ, "DATABASE_URL": url}, capture_output=True, text=True, timeout=120
    )


def test_promotions_on_postgres_apply_once_and_record_only_what_was_made(database: str) -> None:
    assert hokusai("db", "upgrade", url=database).returncode == 0
    added = hokusai("protect", "add", "--model", "fraud-*", "--alias", "production", url=database)
    assert added.returncode == 0, added.stderr
    store = KeyStore(database)
    try:
        protections = ProtectionStore(store.engine)
        (rule,) = protections.rules()
        assert isinstance(rule, Rule) and rule.covers_alias("fraud-eu", "production")
        promotion = protections.create_request(
            model="fraud-eu",
            version="7",
            alias="production",
            stage=None,
            rule=rule,
            requester="alice",
            requester_key_id="k1",
            reason=None,
            target_before="",
            version_stage="None",
            version_status="READY",
        )
        protections.approve(promotion.id, "bob", "k2", None)
        movement = Movement(model="fraud-eu", action="set_alias", kind="promotion", actor="bob", key_id="k2")

        def refused() -> None:
            raise NotRecorded("MLflow answered 500")

        with pytest.raises(NotRecorded):
            protections.recorded(movement, refused, applies=promotion.id, by="bob")
        assert protections.request(promotion.id).state == "pending" and protections.history() == []

        entered, release = threading.Event(), threading.Event()
        made: list[str] = []
        outcomes: list[BaseException | None] = []

        def slow_change() -> None:
            entered.set()
            release.wait(10)
            made.append("first")

        def first() -> None:
            try:
                protections.recorded(movement, slow_change, applies=promotion.id, by="bob")
                outcomes.append(None)
            except BaseException as exc:  # reported below
                outcomes.append(exc)

        racer = threading.Thread(target=first)
        racer.start()
        assert entered.wait(10)
        second: list[BaseException] = []

        def second_approval() -> None:
            try:
                protections.recorded(
                    movement, lambda: made.append("second"), applies=promotion.id, by="carol"
                )
            except RequestClosed as exc:
                second.append(exc)

        other = threading.Thread(target=second_approval)
        other.start()
        other.join(1)
        assert other.is_alive()  # waits for the first transaction's row lock
        release.set()
        racer.join(10)
        other.join(10)
        assert outcomes == [None] and len(second) == 1 and made == ["first"]
        assert protections.request(promotion.id).state == "applied"
        assert [entry.actor for entry in protections.history("fraud-eu")] == ["bob"]
    finally:
        store.close()
