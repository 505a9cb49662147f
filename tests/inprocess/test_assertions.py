"""What the gateway tells MLflow about who is calling (permissions on), in process: every forwarded
request carries an assertion the MLflow side accepts for exactly that request and user; a client's own
assertion never reaches MLflow; MLflow's bare 403 becomes MLflow error JSON naming what is needed; and
MLflow refusing the gateway's signature is reported as the misconfiguration it is."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

from hokusai_registry.policy.assertions import (
    ADMIN_USER,
    UNBOUND_BODY,
    Asserted,
    AssertionRejected,
    body_digest,
    verify,
)
from hokusai_registry.store.key_store import ADMIN_SCOPES
from tests.helpers import assertion_secret
from tests.support.inprocess import InProcessGateway
from tests.support.stub import StubUpstream

GatewayFactory = Callable[..., InProcessGateway]
UpstreamFactory = Callable[..., StubUpstream]


def asserted(upstream: StubUpstream, index: int = -1) -> Asserted:
    arrival = upstream.requests[index]
    path, _, query = arrival.target.partition("?")
    (value,) = arrival.header("x-hokusai-assertion")
    return verify(assertion_secret(), value, arrival.method, path, query, now=time.time())


def asserted_user(upstream: StubUpstream, index: int = -1) -> str:
    return asserted(upstream, index).user


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/mlflow/api/2.0/mlflow/experiments/get?experiment_id=7"),
        ("GET", "/api/2.0/mlflow/experiments/get?experiment_id=7"),
        ("POST", "/mlflow/ajax-api/2.0/mlflow/runs/update"),
        ("PUT", "/mlflow/api/2.0/mlflow-artifacts/artifacts/1/a%20b/model+1.pkl"),
        ("DELETE", "/mlflow/api/2.0/mlflow-artifacts/artifacts/1/x"),
        ("HEAD", "/mlflow/get-artifact?path=model%2FMLmodel&run_uuid=abc"),
    ],
)
def test_every_forwarded_request_is_asserted_for_its_owner_and_only_for_itself(
    method: str, path: str, new_upstream: UpstreamFactory, new_gateway: GatewayFactory
) -> None:
    upstream = new_upstream()
    gateway = new_gateway(upstream.url)
    key = gateway.create_key("trainer", owner="alice")
    body = b"{}" if method in ("POST", "PUT") else b""
    gateway.raw(method, path, {"Authorization": f"Bearer {key}", "X-Hokusai-Assertion": "v1.forged"}, body)
    arrival = upstream.requests[-1]
    assert arrival.header("x-hokusai-assertion") != ["v1.forged"]  # the client's own never passes
    assert asserted_user(upstream) == "alice"
    (value,) = arrival.header("x-hokusai-assertion")
    target_path, _, query = arrival.target.partition("?")
    for other_method, other_path in [("PATCH", target_path), (method, target_path + "x")]:
        with pytest.raises(AssertionRejected):
            verify(assertion_secret(), value, other_method, other_path, query, now=time.time())
    with pytest.raises(AssertionRejected, match="expired"):
        verify(assertion_secret(), value, method, target_path, query, now=time.time() + 60)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        (
            "POST",
            "/api/2.0/mlflow/runs/log-metric",
            b'{"run_id": "r", "key": "m", "value": 1, "timestamp": 1}',
        ),
        # Rewritten by the gateway (the owner is set as mlflow.user): the digest is of what MLflow gets.
        ("POST", "/api/2.0/mlflow/runs/create", b'{"experiment_id": "1"}'),
        ("GET", "/api/2.0/mlflow/runs/get?run_id=r", b""),
    ],
)
def test_the_assertion_binds_the_body_mlflow_receives(
    method: str, path: str, body: bytes, new_upstream: UpstreamFactory, new_gateway: GatewayFactory
) -> None:
    upstream = new_upstream()
    gateway = new_gateway(upstream.url)
    key = gateway.create_key("trainer", owner="alice")
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    gateway.raw(method, path, headers, body)
    arrival = upstream.requests[-1]
    assert asserted(upstream).body == body_digest(arrival.body)
    if "runs/create" in path:
        assert b"alice" in arrival.body


def test_a_streamed_upload_is_asserted_without_its_body(
    new_upstream: UpstreamFactory, new_gateway: GatewayFactory
) -> None:
    upstream = new_upstream()
    gateway = new_gateway(upstream.url)
    key = gateway.create_key("trainer")
    gateway.raw(
        "PUT",
        "/api/2.0/mlflow-artifacts/artifacts/1/r/model.pkl",
        {"Authorization": f"Bearer {key}"},
        b"x" * 9,
    )
    assert asserted(upstream).body == UNBOUND_BODY


def test_admin_keys_act_as_mlflow_administrator_and_reserved_owners_are_refused(
    new_upstream: UpstreamFactory, new_gateway: GatewayFactory
) -> None:
    upstream = new_upstream()
    gateway = new_gateway(upstream.url)
    admin = gateway.create_key("ops", owner="carol", scopes=ADMIN_SCOPES)
    gateway.raw(
        "GET", "/api/2.0/mlflow/experiments/get?experiment_id=1", {"Authorization": f"Bearer {admin}"}
    )
    assert asserted_user(upstream) == ADMIN_USER
    seen = len(upstream.requests)
    impostor = gateway.create_key("x", owner="hokusai:admin")
    status, _, body = gateway.raw(
        "GET", "/api/2.0/mlflow/experiments/get?experiment_id=1", {"Authorization": f"Bearer {impostor}"}
    )
    assert status == 403 and "reserved for the gateway" in json.loads(body)["message"]
    assert len(upstream.requests) == seen


@pytest.mark.parametrize("prefix", ["/api/2.0", "/ajax-api/2.0", "/mlflow/api/2.0"])
@pytest.mark.parametrize("route", ["users/update-admin", "users/update-password"])
def test_mlflow_admin_and_password_changes_are_refused(
    prefix: str, route: str, new_upstream: UpstreamFactory, new_gateway: GatewayFactory
) -> None:
    upstream = new_upstream()
    gateway = new_gateway(upstream.url)
    admin = gateway.create_key("ops", scopes=ADMIN_SCOPES)
    status, _, body = gateway.raw(
        "PATCH", f"{prefix}/mlflow/{route}", {"Authorization": f"Bearer {admin}"}, b'{"username": "bob"}'
    )
    assert status == 403
    assert json.loads(body)["reason"] == "identity_by_gateway"
    assert upstream.requests == []


def test_mlflow_permission_refusals_name_user_request_and_level(
    new_upstream: UpstreamFactory, new_gateway: GatewayFactory
) -> None:
    upstream = new_upstream(
        answers={"/api/2.0/mlflow/experiments/delete": (403, "text/plain", b"Permission denied")}
    )
    gateway = new_gateway(upstream.url)
    key = gateway.create_key("trainer", owner="bob")
    status, _, body = gateway.raw(
        "POST",
        "/api/2.0/mlflow/experiments/delete",
        {"Authorization": f"Bearer {key}"},
        b'{"experiment_id": "1"}',
    )
    error = json.loads(body)
    assert status == 403 and error["error_code"] == "PERMISSION_DENIED" and error["reason"] == "permission"
    assert (
        "bob may not POST /api/2.0/mlflow/experiments/delete: that needs MANAGE on the experiment"
        in error["message"]
    )


def test_an_mlflow_refusing_the_gateways_signature_is_a_502_that_names_the_setting(
    new_upstream: UpstreamFactory, new_gateway: GatewayFactory
) -> None:
    refusal = (
        b'{"error_code": "UNAUTHENTICATED", "message": "MLflow accepts only requests a Hokusai Registry '
        b'gateway authenticated: the gateway assertion is not valid for this request."}'
    )
    upstream = new_upstream(answers={"/api/2.0/mlflow/runs/get": (401, "application/json", refusal)})
    gateway = new_gateway(upstream.url)
    key = gateway.create_key("trainer")
    status, _, body = gateway.raw(
        "GET", "/api/2.0/mlflow/runs/get?run_id=1", {"Authorization": f"Bearer {key}"}
    )
    assert status == 502
    assert "HOKUSAI_MLFLOW_ASSERTION_SECRET_FILE" in json.loads(body)["message"]


def test_other_refusals_of_mlflow_are_relayed_unchanged(
    new_upstream: UpstreamFactory, new_gateway: GatewayFactory
) -> None:
    upstream = new_upstream(
        answers={
            "/api/2.0/mlflow/runs/get": (403, "application/json", b'{"error_code": "PERMISSION_DENIED"}')
        }
    )
    gateway = new_gateway(upstream.url)
    key = gateway.create_key("trainer")
    status, headers, body = gateway.raw(
        "GET", "/api/2.0/mlflow/runs/get?run_id=1", {"Authorization": f"Bearer {key}"}
    )
    assert (status, body) == (403, b'{"error_code": "PERMISSION_DENIED"}')
    assert headers["content-type"] == "application/json"


def test_without_permissions_nothing_is_asserted(
    new_upstream: UpstreamFactory, new_gateway: GatewayFactory
) -> None:
    upstream = new_upstream()
    gateway = new_gateway(upstream.url, permissions=False)
    key = gateway.create_key("trainer")
    gateway.raw("GET", "/api/2.0/mlflow/runs/get?run_id=1", {"Authorization": f"Bearer {key}"})
    assert upstream.requests[-1].header("x-hokusai-assertion") == []
