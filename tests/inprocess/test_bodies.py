"""Request bodies through the whole gateway in process: every outcome gives its bytes back to the byte
budget, a body over the budget is a 503 with Retry-After, and decoded OTLP goes on identity-coded."""

from __future__ import annotations

import gzip
import json

from tests.inprocess.conftest import GatewayFactory
from tests.support.inprocess import InProcessGateway
from tests.support.stub import StubUpstream


def auth(key: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **headers}


def test_every_outcome_gives_the_budget_back(gateway: InProcessGateway, key: str) -> None:
    budget = gateway.gateway.bodies.budget
    cases = [
        ("POST", "/mlflow/api/2.0/mlflow/runs/log-batch", {}, b'{"run_id": "r"}', 200),
        ("POST", "/mlflow/api/2.0/mlflow/runs/create", {}, b'{"experiment_id": "0"}', 200),
        ("POST", "/mlflow/api/2.0/mlflow/runs/create", {}, b"[1]", 400),
        ("POST", "/mlflow/api/2.0/mlflow/runs/log-batch", {}, b"x" * ((16 << 20) + 1), 413),
        ("POST", "/mlflow/api/2.0/mlflow/runs/log-batch", {"Content-Encoding": "br"}, b"{}", 415),
        ("POST", "/mlflow/v1/traces", {"Content-Encoding": "gzip"}, b"not gzip", 400),
        ("GET", "/mlflow/get-artifact?path=m&run_uuid=r", {}, b"{}", 413),
        (
            "POST",
            "/api/v1/keys/validate",
            {"Content-Type": "application/json"},
            b'{"service_id": "mlflow"}',
            200,
        ),
        ("POST", "/api/v1/keys/validate", {}, b"x" * (65 << 10), 413),
    ]
    for method, target, headers, body, status in cases:
        answered, _, payload = gateway.raw(method, target, auth(key, **headers), body)
        assert answered == status, (target, payload[:300])
        assert budget.used == 0, (target, budget.used)


def test_a_body_over_the_budget_is_503_with_retry_after(
    upstream: StubUpstream, new_gateway: GatewayFactory
) -> None:
    small = new_gateway(upstream.url, max_api_body_mb=1, body_buffer_mb=1)
    key = small.create_key("budget")
    small.gateway.bodies.budget.used = (1 << 20) - 10  # held by other requests
    status, headers, body = small.raw("POST", "/mlflow/api/2.0/mlflow/runs/log-batch", auth(key), b"{" * 11)
    assert status == 503 and headers["retry-after"] == "1"
    payload = json.loads(body)
    assert payload["reason"] == "body_buffer_full" and "HOKUSAI_BODY_BUFFER_MB" in payload["message"]
    assert small.gateway.bodies.budget.used == (1 << 20) - 10


def test_gzip_otlp_goes_on_decoded(gateway: InProcessGateway, key: str, upstream: StubUpstream) -> None:
    payload = b"\x0a\x00" * 1000
    headers = auth(key, **{"Content-Encoding": "gzip", "Content-Type": "application/x-protobuf"})
    status, _, _ = gateway.raw("POST", "/mlflow/v1/traces", headers, gzip.compress(payload))
    assert status == 200
    forwarded = upstream.requests[-1]
    assert forwarded.body == payload
    assert forwarded.header("Content-Encoding") == []
