"""Audit lines the gateway writes for refusals and key changes made through its API, in process: the lines
of the audit channel (`hokusai_registry.audit`) as its own formatter writes them. (Run attribution,
registry writes with the real MLflow client, and key changes made with the CLI stay in
tests/e2e/test_audit.py.)"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from hokusai_registry.ops.audit import AUDIT_LOGGER, AuditFormatter
from tests.helpers import mistyped
from tests.support.inprocess import InProcessGateway
from tests.support.logs import Lines, captured
from tests.support.polling import eventually
from tests.support.stub import StubUpstream


@pytest.fixture(scope="module", autouse=True)
def audit_log() -> Iterator[Lines]:
    with captured(AUDIT_LOGGER, AuditFormatter()) as lines:
        yield lines


def audit_lines(log: Lines, event: str, **match: Any) -> list[dict[str, Any]]:
    """Audit lines of one event with the given fields, waiting briefly for the write."""

    def found() -> list[dict[str, Any]] | None:
        lines = [json.loads(line) for line in log.lines]
        matching = [
            line
            for line in lines
            if line["audit"] == event and all(line.get(k) == v for k, v in match.items())
        ]
        return matching or None

    return eventually(found, message=f"an audit line {event} with {match}")


def test_refusals_are_audited_without_secrets(gateway: InProcessGateway, audit_log: Lines) -> None:
    key_id, key = gateway.create_key_with_id("reader", owner="carol", scopes=("read",))
    wrong = mistyped(key)
    url = "/api/2.0/mlflow/experiments/create"
    assert gateway.request("POST", url, json={"name": "x"}, headers={"X-API-Key": wrong}).status_code == 401
    assert gateway.request("POST", url, json={"name": "x"}, headers={"X-API-Key": key}).status_code == 403
    failed = audit_lines(audit_log, "auth.failed", key_id=key_id, reason="malformed")  # checksum
    assert failed and failed[0]["client"] == "127.0.0.1" and failed[0]["path"].endswith("/experiments/create")
    assert audit_lines(audit_log, "permission.denied", key_id=key_id, reason="scope")
    secret = key.split("_")[3]
    assert secret not in audit_log.text() and wrong.split("_")[3] not in audit_log.text()


def test_key_created_through_the_api_is_audited(gateway: InProcessGateway, audit_log: Lines) -> None:
    admin_id, admin = gateway.create_key_with_id("auditor", owner="dana", admin=True)
    made = gateway.request(
        "POST", "/api/v1/keys", json={"name": "via-api"}, headers={"Authorization": "Bearer " + admin}
    ).json()
    assert audit_lines(audit_log, "key.created", key_id=made["key_id"], actor=f"key:{admin_id}")
    assert made["key"] not in audit_log.text()


def test_a_key_limited_to_another_service_is_refused_here(
    gateway: InProcessGateway, audit_log: Lines
) -> None:
    key = gateway.create_key("billing-only", scopes=("read",), service_ids=("billing",))
    response = gateway.request(
        "GET", "/api/2.0/mlflow/experiments/search?max_results=1", headers={"X-API-Key": key}
    )
    assert response.status_code == 403
    assert response.json()["error_code"] == "PERMISSION_DENIED" and "'mlflow'" in response.json()["message"]
    assert audit_lines(audit_log, "permission.denied", reason="service")


def test_permission_refusals_of_mlflow_are_audited(
    new_upstream: Callable[..., StubUpstream], new_gateway: Callable[..., InProcessGateway], audit_log: Lines
) -> None:
    upstream = new_upstream(
        answers={"/api/2.0/mlflow/runs/delete": (403, "text/plain", b"Permission denied")}
    )
    gateway = new_gateway(upstream.url)
    key_id, key = gateway.create_key_with_id("trainer", owner="bob")
    status, _, _ = gateway.raw(
        "POST", "/api/2.0/mlflow/runs/delete", {"Authorization": f"Bearer {key}"}, b'{"run_id": "r1"}'
    )
    assert status == 403
    assert audit_lines(
        audit_log, "permission.denied", key_id=key_id, reason="permission", path="/api/2.0/mlflow/runs/delete"
    )
