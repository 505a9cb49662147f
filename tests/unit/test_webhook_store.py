"""The webhook store and delivery queue on SQLite: fan-out to subscribers, leased claims (never held twice,
due again when a lease runs out), outcomes in the log, removal; and sealed secrets."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from hokusai_registry.events.sealing import Sealer, SecretUnreadable, new_secret
from hokusai_registry.policy.webhooks import subscribed
from hokusai_registry.store.key_store import KeyStore
from hokusai_registry.store.webhook_store import Outcome, WebhookNotFound, WebhookStore

T0 = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def store(tmp_path: Path) -> WebhookStore:
    keys = KeyStore(f"sqlite:///{tmp_path / 'keys.db'}")
    keys.migrate()
    return WebhookStore(keys)


def _add(store: WebhookStore, webhook_id: str, events: tuple[str, ...]) -> None:
    store.create(
        webhook_id,
        url=f"http://127.0.0.1:9/{webhook_id}",
        events=events,
        sealed_secret="sealed",
        description=None,
        created_by="key:admin",
    )


def _enqueue(store: WebhookStore, event: str, when: dt.datetime = T0) -> list[str]:
    return store.enqueue([(event, json.dumps({"event": event}), when)], max_attempts=3, subscribed=subscribed)


def _failed(when: dt.datetime, retry_at: dt.datetime | None) -> Outcome:
    return Outcome(when, 12.5, 503, "HTTP 503", False, retry_at)


def test_events_fan_out_to_subscribed_webhooks_only(store: WebhookStore) -> None:
    _add(store, "wh-versions", ("model_version.created",))
    _add(store, "wh-all", ("*",))
    _add(store, "wh-aliases", ("model_version_alias.created",))
    assert len(_enqueue(store, "model_version.created")) == 2
    claimed = store.claim("w1", lease_seconds=30, limit=10, now=T0)
    assert sorted(one.webhook_id for one in claimed) == ["wh-all", "wh-versions"]
    assert all(
        one.attempt == 1 and json.loads(one.body) == {"event": "model_version.created"} for one in claimed
    )


def test_a_claimed_delivery_is_not_claimed_again_until_its_lease_runs_out(store: WebhookStore) -> None:
    _add(store, "wh", ("*",))
    _enqueue(store, "model_version.created")
    assert len(store.claim("w1", lease_seconds=30, limit=10, now=T0)) == 1
    assert store.claim("w2", lease_seconds=30, limit=10, now=T0 + dt.timedelta(seconds=29)) == []
    # w1 died mid-attempt: after the lease the row is due again, and the crashed attempt counted.
    again = store.claim("w2", lease_seconds=30, limit=10, now=T0 + dt.timedelta(seconds=31))
    assert len(again) == 1 and again[0].attempt == 2


def test_outcomes_settle_deliveries_and_are_logged(store: WebhookStore) -> None:
    _add(store, "wh", ("*",))
    _enqueue(store, "model_version.created")
    (first,) = store.claim("w1", lease_seconds=30, limit=10, now=T0)
    later = T0 + dt.timedelta(seconds=10)
    store.finish(first, _failed(T0, later))
    assert store.claim("w1", lease_seconds=30, limit=10, now=T0 + dt.timedelta(seconds=9)) == []
    (second,) = store.claim("w1", lease_seconds=30, limit=10, now=later)
    store.finish(second, Outcome(later, 3.0, 200, None, True, None))
    (delivery,) = store.deliveries("wh")
    assert delivery.state == "delivered" and delivery.attempts == 2 and delivery.last_status == 200
    assert [(entry.attempt, entry.status_code, entry.error) for entry in delivery.log] == [
        (1, 503, "HTTP 503"),
        (2, 200, None),
    ]
    assert store.claim("w1", lease_seconds=30, limit=10, now=later + dt.timedelta(days=1)) == []


def test_a_delivery_fails_for_good_without_a_retry_time(store: WebhookStore) -> None:
    _add(store, "wh", ("*",))
    _enqueue(store, "model_version.created")
    (claimed,) = store.claim("w1", lease_seconds=30, limit=10, now=T0)
    store.finish(claimed, _failed(T0, None))
    assert store.deliveries("wh")[0].state == "failed"
    assert store.next_due() is None


def test_released_leases_are_due_at_once(store: WebhookStore) -> None:
    _add(store, "wh", ("*",))
    _enqueue(store, "model_version.created")
    store.claim("w1", lease_seconds=3600, limit=10, now=T0)
    assert store.release("w1") == 1
    assert len(store.claim("w2", lease_seconds=30, limit=10, now=T0)) == 1


def test_removing_a_webhook_cancels_its_pending_deliveries(store: WebhookStore) -> None:
    _add(store, "wh", ("*",))
    _add(store, "other", ("*",))
    _enqueue(store, "model_version.created")
    removed, cancelled = store.remove("wh")
    assert removed.removed_at is not None and cancelled == 1
    assert [one.webhook_id for one in store.claim("w1", lease_seconds=30, limit=10, now=T0)] == ["other"]
    assert [webhook.id for webhook in store.all()] == ["other"]
    assert store.deliveries("wh")[0].state == "cancelled"
    with pytest.raises(WebhookNotFound, match="webhooks list"):
        store.remove("wh")
    assert _enqueue(store, "model_version.created") and len(store.deliveries("wh")) == 1


def test_claim_only_one_delivery(store: WebhookStore) -> None:
    _add(store, "wh", ("*",))
    _, second = _enqueue(store, "a.b") + _enqueue(store, "c.d")
    claimed = store.claim("w1", lease_seconds=30, limit=1, only=second, now=T0)
    assert [one.id for one in claimed] == [second]


def test_secrets_are_sealed_to_their_webhook(tmp_path: Path) -> None:
    sealer = Sealer("gateway key material")
    secret = new_secret()
    sealed = sealer.seal(secret, "wh1")
    assert secret not in sealed and sealer.unseal(sealed, "wh1") == secret
    with pytest.raises(SecretUnreadable, match="HOKUSAI_WEBHOOK_SECRET_KEY_FILE"):
        sealer.unseal(sealed, "wh2")
    with pytest.raises(SecretUnreadable):
        Sealer("another key").unseal(sealed, "wh1")


def test_the_webhook_key_comes_from_the_value_or_the_file(tmp_path: Path) -> None:
    from hokusai_registry.gateway.assembly import webhook_sealer
    from hokusai_registry.settings import ConfigError, Settings

    by_value = webhook_sealer(Settings.load(data_dir=tmp_path, webhook_secret_key=" " + "v" * 20 + " "))
    assert Sealer("v" * 20).unseal(by_value.seal("s", "wh"), "wh") == "s"
    assert not (tmp_path / "webhook-secret-key").exists()
    by_default = webhook_sealer(Settings.load(data_dir=tmp_path))  # the default file, created once
    created = (tmp_path / "webhook-secret-key").read_text().strip()
    assert Sealer(created).unseal(by_default.seal("s", "wh"), "wh") == "s"
    with pytest.raises(ConfigError, match="HOKUSAI_WEBHOOK_SECRET_KEY_FILE"):
        webhook_sealer(Settings.load(data_dir=tmp_path, webhook_secret_key_file=tmp_path / "missing"))
    with pytest.raises(ConfigError, match="HOKUSAI_WEBHOOK_SECRET_KEY"):
        Settings.load(data_dir=tmp_path, webhook_secret_key="short")


def test_a_delivery_named_by_id_is_claimed_before_its_time(store: WebhookStore) -> None:
    # `webhooks test`: sent at once by the gateway that queued it, and due for the others only much later.
    _add(store, "wh", ("*",))
    (test,) = store.enqueue([("webhook.test", "{}", T0)], max_attempts=1, subscribed=subscribed, delay=3600)
    assert store.claim("w1", lease_seconds=30, limit=10, now=T0) == []
    assert [one.id for one in store.claim("w1", lease_seconds=30, limit=10, only=test, now=T0)] == [test]
    assert store.claim("w2", lease_seconds=30, limit=10, only=test, now=T0) == []  # leased


def test_the_outbox_takes_events_from_any_thread_and_writes_them_by_its_stop(store: WebhookStore) -> None:
    import asyncio
    import threading

    from hokusai_registry.events.hub import Events
    from hokusai_registry.events.outbox import Outbox
    from hokusai_registry.events.worker import DeliveryWorker, Retries
    from hokusai_registry.ops.events import RegistryEvents

    _add(store, "wh", ("model_version_alias.created",))
    woken: list[bool] = []
    outbox = Outbox(store, max_attempts=3, written=lambda: woken.append(True))
    worker = DeliveryWorker(store, Sealer("k" * 20), timeout=1, retries=Retries(3, 1, 1), poll_interval=3600)
    sink: RegistryEvents = Events(outbox, worker)  # the seam the promotion workflow emits through
    sink.emit("model_version_alias.created", {"name": "m", "alias": "a", "version": "1"})  # before start

    async def run() -> None:
        await outbox.start()
        thread = threading.Thread(
            target=sink.emit,
            args=("model_version_alias.created", {"name": "m", "alias": "b", "version": "2"}),
        )
        thread.start()
        thread.join()
        sink.emit("model_version.created", {"name": "m"})  # nobody subscribed: no row
        await outbox.stop()

    asyncio.run(run())
    bodies = [json.loads(one.body) for one in store.claim("w", lease_seconds=30, limit=10)]
    assert sorted(body["data"]["alias"] for body in bodies) == ["a", "b"]
    assert all(body["event"] == "model_version_alias.created" for body in bodies) and woken


def test_finished_deliveries_are_pruned_after_the_retention(store: WebhookStore) -> None:
    _add(store, "wh", ("*",))
    done, waiting = _enqueue(store, "a.b") + _enqueue(store, "c.d")
    (claimed,) = store.claim("w", lease_seconds=30, limit=1, only=done, now=T0)
    store.finish(claimed, Outcome(T0, 1.0, 200, None, True, None))
    assert store.prune(dt.datetime.now(dt.UTC) - dt.timedelta(days=1)) == 0  # finished just now
    assert store.prune(dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)) == 1
    assert [delivery.id for delivery in store.deliveries("wh")] == [waiting]  # pending ones stay
