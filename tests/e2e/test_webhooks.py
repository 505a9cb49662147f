"""Registry events end to end: a real MLflow, gateway processes, the unmodified MLflow client through every
mount, a real loopback receiver, and `hokusai-registry webhooks ...` as users run it. Deliveries are
verified by their signature, retried through a receiver outage, and delivered exactly once after the
gateway is killed in the middle of its retries and started again."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from hokusai_registry.policy.webhooks import subscribed
from hokusai_registry.store.key_store import KeyStore
from hokusai_registry.store.webhook_store import WebhookStore
from tests.helpers import HOKUSAI, GatewayProcess
from tests.support.polling import eventually
from tests.support.receiver import Delivery, Receiver

FAST = {
    "HOKUSAI_WEBHOOK_RETRY_BASE": "0.3",
    "HOKUSAI_WEBHOOK_RETRY_MAX": "1",
    "HOKUSAI_WEBHOOK_POLL_INTERVAL": "0.2",
    "HOKUSAI_WEBHOOK_TIMEOUT": "3",
    # Retries every second at most: enough of them that no delivery fails for good while a test waits.
    "HOKUSAI_WEBHOOK_MAX_ATTEMPTS": "100",
}


@pytest.fixture(scope="module")
def hooked(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    process = GatewayProcess(mlflow_server, tmp_path_factory.mktemp("webhooks"), env=FAST)
    yield process
    process.stop()


@pytest.fixture(scope="module")
def admin_key(hooked: GatewayProcess) -> str:
    return hooked.create_key("webhooks-admin", admin=True)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    started = Receiver()
    yield started
    started.stop()


def cli(gateway: GatewayProcess, key: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOKUSAI_API_KEY": key, "HOKUSAI_GATEWAY_URL": gateway.url}
    return subprocess.run(
        [HOKUSAI, "webhooks", *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def add_webhook(gateway: GatewayProcess, key: str, url: str, events: str) -> tuple[str, str]:
    """A webhook added with the CLI: its id and the secret printed once."""
    added = cli(gateway, key, "add", "--url", url, "--events", events)
    assert added.returncode == 0, added.stderr
    webhook_id = added.stderr.split("Added webhook ", 1)[1].split(" ", 1)[0]
    return webhook_id, added.stdout.strip()


def deliveries(gateway: GatewayProcess, key: str, webhook_id: str) -> list[dict[str, Any]]:
    listed = cli(gateway, key, "deliveries", webhook_id, "--json", "--limit", "100")
    assert listed.returncode == 0, listed.stderr
    result: list[dict[str, Any]] = json.loads(listed.stdout)
    return result


def client_at(gateway: GatewayProcess, mount: str, key: str, env: pytest.MonkeyPatch) -> MlflowClient:
    env.setenv("MLFLOW_TRACKING_TOKEN", key)
    env.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    return MlflowClient(tracking_uri=gateway.url + mount, registry_uri=gateway.url + mount)


def one(receiver: Receiver, event: str, **data: Any) -> Delivery:
    """The one delivery of `event` whose data has these fields, once it has arrived."""

    def found() -> list[Delivery] | None:
        matching = [
            delivery
            for delivery in receiver.received(event)
            if all(delivery.json["data"].get(name) == value for name, value in data.items())
        ]
        return matching or None

    (delivery,) = eventually(found, 60, message=f"a delivery of {event} {data}")
    return delivery


def test_registry_writes_by_the_mlflow_client_arrive_signed_through_every_mount(
    hooked: GatewayProcess, admin_key: str, receiver: Receiver, client_env: pytest.MonkeyPatch
) -> None:
    _, secret = add_webhook(hooked, admin_key, receiver.url, "*")
    writer = hooked.create_key("registrar")
    bare, mounted, api_mounted = (
        client_at(hooked, mount, writer, client_env) for mount in ("", "/mlflow", "/api/mlflow")
    )
    experiment = mounted.create_experiment("webhook-events")
    run = mounted.create_run(experiment).info.run_id
    mounted.create_registered_model("hooked-model")
    version = mounted.create_model_version("hooked-model", f"runs:/{run}/model", run_id=run).version
    api_mounted.set_registered_model_alias("hooked-model", "champion", version)
    bare.transition_model_version_stage("hooked-model", version, "Staging")
    api_mounted.delete_registered_model_alias("hooked-model", "champion")

    created = one(receiver, "registered_model.created", name="hooked-model")
    registered = one(receiver, "model_version.created", name="hooked-model")
    aliased = one(receiver, "model_version_alias.created", name="hooked-model")
    staged = one(receiver, "model_version.stage_transitioned", name="hooked-model")
    unaliased = one(receiver, "model_version_alias.deleted", name="hooked-model")
    for delivery in (created, registered, aliased, staged, unaliased):
        assert delivery.verifies(secret), delivery.event
    assert registered.json["entity"] == "model_version" and registered.json["action"] == "created"
    data = registered.json["data"]
    assert data["version"] == str(version) and data["run_id"] == run and data["source"]
    assert data["actor"]["owner"] == "registrar"
    assert aliased.json["data"] | {"actor": None} == {
        "name": "hooked-model",
        "alias": "champion",
        "version": str(version),
        "actor": None,
    }
    assert staged.json["data"]["stage"] == "Staging" and staged.json["data"]["version"] == str(version)
    assert unaliased.json["data"]["alias"] == "champion"
    # Every mount's write made its event once.
    assert len({delivery.id for delivery in receiver.received()}) == len(receiver.received())
    # The secret never reaches the gateway's log (its deliveries are logged there).
    assert "delivered to http://127.0.0.1" in hooked.log() and secret not in hooked.log()


def test_a_promotion_applied_reaches_the_listeners_of_alias_moves(
    hooked: GatewayProcess, admin_key: str, receiver: Receiver, client_env: pytest.MonkeyPatch
) -> None:
    """The gateway moves a protected alias itself when a promotion is approved; a receiver that deploys on
    MLflow's `model_version_alias.created` hears of that move as of any other."""
    _, secret = add_webhook(hooked, admin_key, receiver.url, "model_version_alias.created")
    writer = hooked.create_key("promoter")
    client = client_at(hooked, "/mlflow", writer, client_env)
    run = client.create_run(client.create_experiment("promoting")).info.run_id
    client.create_registered_model("promoted-model")
    version = client.create_model_version("promoted-model", f"runs:/{run}/model", run_id=run).version

    def api(key: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        answer = requests.post(
            hooked.url + path, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30
        )
        assert answer.status_code in (200, 201), answer.text
        result: dict[str, Any] = answer.json()
        return result

    api(admin_key, "/api/v1/protections", {"model": "promoted-model", "alias": "production", "approvals": 1})
    asked = api(
        writer, "/api/v1/promotions", {"model": "promoted-model", "version": version, "alias": "production"}
    )
    assert api(admin_key, f"/api/v1/promotions/{asked['id']}/approve", {})["state"] == "applied"

    moved = one(receiver, "model_version_alias.created", name="promoted-model")
    assert moved.verifies(secret)
    data = moved.json["data"]
    assert (data["alias"], data["version"], data["promotion"]) == ("production", str(version), asked["id"])
    assert data["actor"]["owner"] == "webhooks-admin"  # who applied it: the approval that completed it
    assert client.get_model_version_by_alias("promoted-model", "production").version == str(version)


def test_a_refused_write_makes_no_event(
    hooked: GatewayProcess, admin_key: str, receiver: Receiver, client_env: pytest.MonkeyPatch
) -> None:
    add_webhook(hooked, admin_key, receiver.url, "model_version_alias.created,model_version_alias.deleted")
    client = client_at(hooked, "/mlflow", hooked.create_key("aliaser"), client_env)
    client.create_registered_model("refusing-model")
    with pytest.raises(MlflowException, match=r"RESOURCE_DOES_NOT_EXIST|INVALID_PARAMETER_VALUE"):
        client.set_registered_model_alias("refusing-model", "prod", "9")  # no version 9: MLflow refuses
    run = client.create_run(client.create_experiment("refusing")).info.run_id
    client.create_model_version("refusing-model", f"runs:/{run}/model", run_id=run)
    client.set_registered_model_alias("refusing-model", "prod", "1")
    one(receiver, "model_version_alias.created", name="refusing-model", version="1")
    # Events are queued in order: the refused write, earlier, made none.
    assert [delivery.json["data"]["version"] for delivery in receiver.received()] == ["1"]


def test_deliveries_survive_a_receiver_outage(
    hooked: GatewayProcess, admin_key: str, receiver: Receiver, client_env: pytest.MonkeyPatch
) -> None:
    webhook_id, secret = add_webhook(hooked, admin_key, receiver.url, "model_version.created")
    receiver.stop()
    client = client_at(hooked, "/mlflow", hooked.create_key("outage"), client_env)
    client.create_registered_model("outage-model")
    run = client.create_run(client.create_experiment("outage")).info.run_id
    client.create_model_version("outage-model", f"runs:/{run}/model", run_id=run)

    def failed_twice() -> list[dict[str, Any]] | None:
        log = deliveries(hooked, admin_key, webhook_id)
        return log if log and len(log[0]["log"]) >= 2 else None

    (pending,) = eventually(failed_twice, 60, 0.5, "two failed attempts while the receiver is down")
    assert pending["state"] == "pending" and pending["next_attempt_at"]
    assert all(entry["status_code"] is None and entry["error"] for entry in pending["log"])
    receiver.start()  # back, on the same port
    delivered = one(receiver, "model_version.created", name="outage-model")
    assert delivered.verifies(secret) and delivered.id == pending["id"]

    def settled() -> dict[str, Any] | None:
        (entry,) = deliveries(hooked, admin_key, webhook_id)
        return entry if entry["state"] == "delivered" else None

    record = eventually(settled, 30, 0.5, "the delivery recorded as delivered")
    assert record["log"][-1]["status_code"] == 200 and record["attempts"] == len(record["log"]) >= 3
    # Later attempts waited longer (exponential back-off; jitter is ±20%, the doubling more).
    starts = [entry["started_at"] for entry in record["log"]]
    assert starts == sorted(starts)


@pytest.mark.parametrize("ending", ["killed", "stopped"])
def test_a_gateway_ended_mid_retry_delivers_exactly_once_after_restart(
    ending: str, mlflow_server: str, tmp_path: Path, receiver: Receiver, client_env: pytest.MonkeyPatch
) -> None:
    slow = {**FAST, "HOKUSAI_WEBHOOK_RETRY_BASE": "1", "HOKUSAI_WEBHOOK_RETRY_MAX": "2"}
    data_dir = tmp_path / "gateway"
    first = GatewayProcess(mlflow_server, data_dir, env=slow)
    try:
        key = first.create_key("restart-admin", admin=True)
        webhook_id, secret = add_webhook(first, key, receiver.url, "model_version.created")
        receiver.stop()
        client = client_at(first, "/mlflow", first.create_key("restart"), client_env)
        client.create_registered_model(f"restart-model-{ending}")
        run = client.create_run(client.create_experiment(f"restart-{ending}")).info.run_id
        client.create_model_version(f"restart-model-{ending}", f"runs:/{run}/model", run_id=run)
        eventually(
            lambda: (log := deliveries(first, key, webhook_id)) and len(log[0]["log"]) >= 1,
            60,
            0.3,
            "a failed attempt",
        )
    finally:
        if ending == "killed":
            first.process.kill()  # no clean shutdown: whatever it held stays held
            first.process.wait(30)
        first.stop()
    receiver.start()
    second = GatewayProcess(mlflow_server, data_dir, env=slow)
    try:
        delivered = one(receiver, "model_version.created", name=f"restart-model-{ending}")
        assert delivered.verifies(secret)
        # A later delivery on the same queue arrives after it: by then a repeat would have come too.
        tested = cli(second, key, "test", webhook_id)
        assert tested.returncode == 0 and "Delivered" in tested.stdout, tested.stderr
        assert [delivery.id for delivery in receiver.received("model_version.created")] == [delivered.id]
        (record, _) = sorted(deliveries(second, key, webhook_id), key=lambda entry: entry["event"])
        assert record["id"] == delivered.id and record["state"] == "delivered"
    finally:
        second.stop()


def test_an_attempt_cut_short_by_a_crash_is_sent_again_when_its_lease_runs_out(
    mlflow_server: str, tmp_path: Path, receiver: Receiver, client_env: pytest.MonkeyPatch
) -> None:
    data_dir = tmp_path / "gateway"
    first = GatewayProcess(mlflow_server, data_dir, env=FAST)
    try:
        key = first.create_key("lease-admin", admin=True)
        webhook_id, secret = add_webhook(first, key, receiver.url, "model_version.created")
        receiver.hold = True  # the receiver takes the delivery and does not answer
        client = client_at(first, "/mlflow", first.create_key("lease"), client_env)
        client.create_registered_model("lease-model")
        run = client.create_run(client.create_experiment("lease")).info.run_id
        client.create_model_version("lease-model", f"runs:/{run}/model", run_id=run)
        (held,) = eventually(lambda: receiver.received(status=0) or None, 60, message="the attempt under way")
    finally:
        first.process.kill()  # mid-attempt: its lease is still on the delivery
        first.process.wait(30)
        first.stop()
    receiver.release()
    second = GatewayProcess(mlflow_server, data_dir, env=FAST)
    try:
        # Sent again once the lease (the timeout plus 10 s) ran out: at least once, with the same id.
        delivered = one(receiver, "model_version.created", name="lease-model")
        assert delivered.id == held.id and delivered.verifies(secret)
        (record,) = deliveries(second, key, webhook_id)
        assert record["state"] == "delivered" and record["attempts"] == 2
        assert [entry["attempt"] for entry in record["log"]] == [2]  # the cut-short attempt left no entry
    finally:
        second.stop()


def test_the_webhooks_command(
    hooked: GatewayProcess, admin_key: str, receiver: Receiver, tmp_path: Path
) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("a-secret-kept-in-a-file-0123\n")
    added = cli(
        hooked,
        admin_key,
        "add",
        "--url",
        receiver.url,
        "--events",
        "model_version.created",
        "--secret-file",
        str(secret_file),
    )
    assert added.returncode == 0 and added.stdout == "", added.stderr  # a secret from a file is not printed
    webhook_id = added.stderr.split("Added webhook ", 1)[1].split(" ", 1)[0]
    listed = cli(hooked, admin_key, "list", "--json")
    assert listed.returncode == 0 and "a-secret-kept" not in listed.stdout
    assert any(entry["id"] == webhook_id for entry in json.loads(listed.stdout))
    assert webhook_id in cli(hooked, admin_key, "list").stdout

    tested = cli(hooked, admin_key, "test", webhook_id)
    assert tested.returncode == 0 and "HTTP 200" in tested.stdout, tested.stderr
    (delivery,) = receiver.received("webhook.test")
    assert delivery.verifies("a-secret-kept-in-a-file-0123")
    log = cli(hooked, admin_key, "deliveries", webhook_id)
    assert "webhook.test  delivered" in log.stdout and "HTTP 200" in log.stdout

    receiver.status = 500
    failing = cli(hooked, admin_key, "test", webhook_id)
    assert failing.returncode == 1 and "HTTP 500" in failing.stderr

    removed = cli(hooked, admin_key, "remove", webhook_id)
    assert removed.returncode == 0 and webhook_id in removed.stdout
    again = cli(hooked, admin_key, "remove", webhook_id)
    assert again.returncode == 1 and "no webhook with id" in again.stderr

    refused = cli(hooked, admin_key, "add", "--url", "ftp://example.com/x", "--events", "*")
    assert refused.returncode == 2 and "http:// or https://" in refused.stderr
    unknown = cli(hooked, admin_key, "add", "--url", receiver.url, "--events", "model.made")
    assert unknown.returncode == 2 and "unknown event" in unknown.stderr
    writer = cli(hooked, hooked.create_key("not-admin"), "list")
    assert writer.returncode == 1 and "'admin' scope" in writer.stderr
    assert requests.get(hooked.url + "/api/v1/webhooks", timeout=10).status_code == 401


@pytest.fixture(params=["sqlite", "postgresql"])
def queue_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'keys.db'}"
    database: str = request.getfixturevalue("database")
    return database.replace("postgresql://", "postgresql+psycopg://", 1)


def test_concurrent_claims_never_share_a_delivery(queue_url: str) -> None:
    keys = KeyStore(queue_url)
    keys.migrate()
    store = WebhookStore(keys)
    try:
        store.create(
            "wh",
            url="http://127.0.0.1:9/",
            events=("*",),
            sealed_secret="s",
            description=None,
            created_by="t",
        )
        now = dt.datetime.now(dt.UTC)
        ids = store.enqueue(
            [("model_version.created", "{}", now)] * 60, max_attempts=3, subscribed=subscribed
        )
        claimed: list[list[str]] = [[] for _ in range(4)]

        def claim_all(mine: list[str]) -> None:
            owner = f"worker-{id(mine)}"
            while taken := store.claim(owner, lease_seconds=600, limit=5):
                mine.extend(one.id for one in taken)

        threads = [threading.Thread(target=claim_all, args=(mine,)) for mine in claimed]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        every = [delivery for mine in claimed for delivery in mine]
        assert sorted(every) == sorted(ids)  # each claimed once, by one worker
    finally:
        keys.close()


def test_gateway_workers_share_the_queue_without_sending_twice(
    mlflow_server: str, tmp_path: Path, receiver: Receiver, client_env: pytest.MonkeyPatch
) -> None:
    gateway = GatewayProcess(mlflow_server, tmp_path / "workers", env={**FAST, "HOKUSAI_WORKERS": "3"})
    try:
        key = gateway.create_key("workers-admin", admin=True)
        webhook_id, secret = add_webhook(gateway, key, receiver.url, "model_version.created")
        receiver.stop()  # everything queues up first; then every worker finds it due at once
        client = client_at(gateway, "/mlflow", gateway.create_key("workers"), client_env)
        client.create_registered_model("workers-model")
        run = client.create_run(client.create_experiment("workers")).info.run_id
        for _ in range(8):
            client.create_model_version("workers-model", f"runs:/{run}/model", run_id=run)
        eventually(
            lambda: len(deliveries(gateway, key, webhook_id)) == 8 or None, 60, 0.3, "eight queued deliveries"
        )
        receiver.start()
        eventually(
            lambda: (
                all(entry["state"] == "delivered" for entry in deliveries(gateway, key, webhook_id)) or None
            ),
            90,
            0.5,
            "every delivery delivered",
        )
        received = receiver.received("model_version.created")
        assert sorted(delivery.json["data"]["version"] for delivery in received) == sorted(
            str(n) for n in range(1, 9)
        )
        assert len({delivery.id for delivery in received}) == 8 and all(d.verifies(secret) for d in received)
    finally:
        gateway.stop()
