"""Webhooks in process on the real gateway (stub MLflow, a real loopback receiver): the admin API
(/api/v1/webhooks), registry writes MLflow answered 2xx delivered signed, refused writes not, retries after
failed attempts, and the test delivery."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.inprocess import InProcessGateway
from tests.support.polling import eventually
from tests.support.receiver import Receiver
from tests.support.stub import StubUpstream

GatewayFactory = Callable[..., InProcessGateway]
FAST = {
    "webhook_retry_base": 0.2,
    "webhook_retry_max": 1.0,
    "webhook_poll_interval": 0.1,
    "webhook_timeout": 5,
}
VERSION_ANSWER = {
    "model_version": {
        "name": "fraud",
        "version": "7",
        "source": "models:/m-abc",
        "run_id": "run1",
        "tags": [],
        "current_stage": "None",
    }
}


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    started = Receiver()
    yield started
    started.stop()


@pytest.fixture
def mlflow(new_upstream: Callable[..., StubUpstream]) -> StubUpstream:
    return new_upstream(
        answers={
            "/api/2.0/mlflow/model-versions/create": (
                200,
                "application/json",
                json.dumps(VERSION_ANSWER).encode(),
            ),
            "/api/2.0/mlflow/model-versions/transition-stage": (
                400,
                "application/json",
                b'{"error_code": "INVALID_PARAMETER_VALUE", "message": "no such stage"}',
            ),
        }
    )


@pytest.fixture
def hub(new_gateway: GatewayFactory, mlflow: StubUpstream) -> InProcessGateway:
    return new_gateway(mlflow.url, **FAST)


def admin(gateway: InProcessGateway) -> dict[str, str]:
    return {"Authorization": "Bearer " + gateway.create_key("hooks-admin", admin=True)}


def add(gateway: InProcessGateway, headers: dict[str, str], url: str, events: list[str], **extra: Any) -> Any:
    created = gateway.request(
        "POST", "/api/v1/webhooks", headers=headers, json={"url": url, "events": events, **extra}
    )
    assert created.status_code == 201, created.text
    return created.json()


def test_create_list_get_remove(hub: InProcessGateway, receiver: Receiver) -> None:
    headers = admin(hub)
    created = add(hub, headers, receiver.url, ["model_version.created"], description="ci")
    secret = created["secret"]
    assert secret.startswith("whsec_") and len(secret) > 40
    assert created["events"] == ["model_version.created"] and created["created_by"].startswith("key:")
    listed = hub.request("GET", "/api/v1/webhooks", headers=headers)
    assert listed.status_code == 200 and secret not in listed.text
    assert [entry["id"] for entry in listed.json()] == [created["id"]]
    one = hub.request("GET", f"/api/v1/webhooks/{created['id']}", headers=headers).json()
    assert one["url"] == receiver.url and "secret" not in one
    # Sealed at rest: the key store's files never hold the secret.
    raw = b"".join(path.read_bytes() for path in Path(hub.data_dir).glob("keys.db*"))
    assert secret.encode() not in raw

    given = add(hub, headers, receiver.url, ["*"], secret="my-own-secret-of-some-length")
    assert given["secret"] == "my-own-secret-of-some-length" and given["events"] == ["*"]

    removed = hub.request("DELETE", f"/api/v1/webhooks/{created['id']}", headers=headers)
    assert removed.status_code == 200 and removed.json()["removed_at"]
    assert [entry["id"] for entry in hub.request("GET", "/api/v1/webhooks", headers=headers).json()] == [
        given["id"]
    ]
    gone = hub.request("DELETE", f"/api/v1/webhooks/{created['id']}", headers=headers)
    assert gone.status_code == 404 and gone.json()["reason"] == "webhook_not_found"
    assert gone.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    missing = hub.request("GET", "/api/v1/webhooks/whnope/deliveries", headers=headers)
    assert missing.status_code == 404 and "webhooks list" in missing.json()["message"]


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ({"url": "ftp://x/hook", "events": ["*"]}, "http:// or https://"),
        ({"url": "https://u:p@x/hook", "events": ["*"]}, "user name or password"),
        ({"url": "https://x/hook", "events": ["model.made"]}, "unknown event"),
        ({"url": "https://x/hook", "events": []}, "events"),
        ({"url": "https://x/hook", "events": ["*"], "secret": "short"}, "at least 16"),
        ({"url": "https://x/hook", "events": ["*"], "surprise": 1}, "surprise"),
    ],
)
def test_invalid_webhooks_are_refused(hub: InProcessGateway, spec: dict[str, Any], problem: str) -> None:
    refused = hub.request("POST", "/api/v1/webhooks", headers=admin(hub), json=spec)
    assert refused.status_code == 400 and refused.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert problem in refused.json()["message"]


def test_only_admin_keys_manage_webhooks(hub: InProcessGateway) -> None:
    writer = {"Authorization": "Bearer " + hub.create_key("writer")}
    refused = hub.request("GET", "/api/v1/webhooks", headers=writer)
    assert refused.status_code == 403 and refused.json()["error_code"] == "PERMISSION_DENIED"
    assert hub.request("POST", "/api/v1/webhooks", json={}).status_code == 401


def test_answered_writes_are_delivered_signed_and_refused_ones_not(
    hub: InProcessGateway, receiver: Receiver
) -> None:
    headers = admin(hub)
    secret = add(hub, headers, receiver.url, ["*"])["secret"]
    writer_id, writer = hub.create_key_with_id("trainer", owner="alice")
    write = {"Authorization": "Bearer " + writer}
    # MLflow refuses this one (400): no event.
    stage = {"name": "fraud", "version": "7", "stage": "Nowhere"}
    assert (
        hub.request(
            "POST", "/api/2.0/mlflow/model-versions/transition-stage", headers=write, json=stage
        ).status_code
        == 400
    )
    made = hub.request(
        "POST",
        "/mlflow/api/2.0/mlflow/model-versions/create",
        headers=write,
        json={"name": "fraud", "source": "models:/m-abc"},
    )
    assert made.status_code == 200 and made.json() == VERSION_ANSWER  # relayed whole
    (delivery,) = eventually(
        lambda: receiver.received("model_version.created") or None, message="the delivery"
    )
    assert delivery.verifies(secret) and not delivery.verifies("another-secret-entirely")
    assert delivery.json["entity"] == "model_version" and delivery.json["action"] == "created"
    assert delivery.json["data"] == {
        "name": "fraud",
        "version": "7",
        "source": "models:/m-abc",
        "run_id": "run1",
        "tags": {},
        "description": None,
        "actor": {"owner": "alice", "key_id": writer_id},
    }
    assert delivery.headers["content-type"] == "application/json"
    assert delivery.headers["user-agent"].startswith("hokusai-registry-webhooks/")
    # Events go out in order: the refused write, before it, made none.
    assert [one.event for one in receiver.received()] == ["model_version.created"]


def test_failed_attempts_are_retried_until_delivered(hub: InProcessGateway, receiver: Receiver) -> None:
    headers = admin(hub)
    webhook = add(hub, headers, receiver.url, ["model_version.created"])
    receiver.status = 503
    write = {"Authorization": "Bearer " + hub.create_key("trainer")}
    hub.request(
        "POST", "/api/2.0/mlflow/model-versions/create", headers=write, json={"name": "fraud", "source": "s"}
    )
    eventually(lambda: len(receiver.received(status=503)) >= 2, message="two failed attempts")
    receiver.status = 200
    (delivered,) = eventually(lambda: receiver.received(status=200) or None, message="the retry that lands")
    assert {one.id for one in receiver.received(status=None)} == {delivered.id}  # one delivery id throughout

    def settled() -> Any:
        listed = hub.request("GET", f"/api/v1/webhooks/{webhook['id']}/deliveries", headers=headers).json()
        return listed if listed and listed[0]["state"] == "delivered" else None

    (record,) = eventually(settled, message="the delivery recorded as delivered")
    assert record["id"] == delivered.id and record["attempts"] == len(record["log"]) >= 3
    assert [entry["status_code"] for entry in record["log"]][-1] == 200
    assert all(entry["status_code"] == 503 and entry["error"] == "HTTP 503" for entry in record["log"][:-1])
    metrics = hub.request("GET", "/metrics", headers=write).text
    assert 'hokusai_webhook_attempts_total{outcome="delivered"} 1.0' in metrics
    assert f'hokusai_webhook_attempts_total{{outcome="retry"}} {len(record["log"]) - 1}.0' in metrics


def test_the_test_delivery_says_how_the_receiver_answered(hub: InProcessGateway, receiver: Receiver) -> None:
    headers = admin(hub)
    webhook = add(hub, headers, receiver.url, ["model_version_alias.created"])
    tested = hub.request("POST", f"/api/v1/webhooks/{webhook['id']}/test", headers=headers)
    assert tested.status_code == 200, tested.text
    assert tested.json()["delivered"] is True and tested.json()["status_code"] == 200
    (delivery,) = receiver.received("webhook.test")
    assert delivery.verifies(webhook["secret"]) and delivery.id == tested.json()["delivery_id"]

    receiver.status = 500
    failed = hub.request("POST", f"/api/v1/webhooks/{webhook['id']}/test", headers=headers).json()
    assert failed["delivered"] is False and failed["status_code"] == 500 and failed["error"] == "HTTP 500"
    log = hub.request("GET", f"/api/v1/webhooks/{webhook['id']}/deliveries", headers=headers).json()
    assert [(entry["event"], entry["state"]) for entry in log] == [
        ("webhook.test", "failed"),  # a test is tried once
        ("webhook.test", "delivered"),
    ]


def test_redirects_are_not_followed(hub: InProcessGateway, receiver: Receiver) -> None:
    headers = admin(hub)
    webhook = add(hub, headers, receiver.url, ["*"])
    receiver.status = 307
    receiver.headers = {"location": "http://127.0.0.1:9/elsewhere"}
    failed = hub.request("POST", f"/api/v1/webhooks/{webhook['id']}/test", headers=headers).json()
    assert failed["delivered"] is False and "redirects are not followed" in failed["error"]
    assert len(receiver.received(status=None)) == 1
