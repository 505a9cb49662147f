"""Health endpoints in process: the summary's shape for a healthy MLflow, liveness and readiness, a stopped
upstream, a server that is not MLflow, and that the checks take the forwarder's path translation and are
cached, against stub upstreams. (A real MLflow judged healthy, with its version, and one without
--serve-artifacts stay in tests/e2e/test_health.py.)"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from aiohttp import web

from tests.support.inprocess import InProcessGateway
from tests.support.loop import LoopThread
from tests.support.stub import MLFLOW_HEALTH_ANSWERS, Arrival, StubUpstream

GatewayFactory = Callable[..., InProcessGateway]
UpstreamFactory = Callable[..., StubUpstream]
MOUNTED = ("/mlflow/health/mlflow", "/api/mlflow/health/mlflow")


@pytest.fixture(scope="module")
def upstream(loop: LoopThread) -> Iterator[StubUpstream]:
    """A stub that answers the health probes as a healthy MLflow does."""
    stub = StubUpstream(MLFLOW_HEALTH_ANSWERS)
    loop.run(stub.start())
    yield stub
    loop.run(stub.stop())


def get(gateway: InProcessGateway, path: str, key: str | None = None) -> tuple[int, dict[str, str], Any]:
    status, headers, body = gateway.raw("GET", path, {"Authorization": f"Bearer {key}"} if key else {})
    return status, headers, json.loads(body)


@pytest.mark.parametrize("path", MOUNTED)
def test_healthy_through_the_gateway(path: str, gateway: InProcessGateway) -> None:
    status, headers, summary = get(gateway, path)
    assert status == 200
    assert summary == {
        "status": "healthy",
        "checks": {
            **{
                name: {"status": "ok", "http_status": 200}
                for name in ("mlflow", "experiments", "registered_models", "artifacts")
            },
            "permissions": {"status": "ok", "http_status": 401},
        },
    }
    assert headers["x-hokusai-origin"] == "gateway"


def test_not_ready_in_front_of_an_mlflow_that_does_not_enforce_permissions(
    new_upstream: UpstreamFactory, new_gateway: GatewayFactory
) -> None:
    answers = dict(MLFLOW_HEALTH_ANSWERS)
    answers["/api/2.0/mlflow/experiments/get"] = (200, "application/json", b'{"experiment": {}}')
    upstream = new_upstream(answers=answers)
    gateway = new_gateway(upstream.url)
    status, _, ready = get(gateway, "/ready")
    assert status == 503
    (problem,) = ready["problems"]
    assert problem.startswith(
        "MLflow: answered 200 to a request the gateway did not sign: this MLflow does not enforce "
        "permissions. Start it with `hokusai-registry mlflow`"
    )
    assert get(gateway, "/mlflow/health/mlflow")[2]["status"] == "unhealthy"
    # Without permissions the same MLflow is fine.
    assert get(new_gateway(upstream.url, permissions=False), "/ready")[0] == 200


def test_liveness_and_readiness_with_mlflow_up(gateway: InProcessGateway) -> None:
    assert get(gateway, "/health")[2] == {"status": "ok"}
    status, _, ready = get(gateway, "/ready")
    assert status == 200 and ready == {"status": "ready", "problems": []}


def test_unhealthy_and_not_ready_with_mlflow_stopped(
    new_upstream: UpstreamFactory, new_gateway: GatewayFactory, loop: LoopThread
) -> None:
    stopped = new_upstream()
    loop.run(stopped.stop())  # its port is closed now, and stays ours until the test ends
    gateway = new_gateway(stopped.url)
    assert get(gateway, "/health")[0] == 200  # liveness never asks MLflow
    status, _, summary = get(gateway, "/mlflow/health/mlflow")
    assert status == 503 and summary["status"] == "unhealthy"
    assert {c["status"] for c in summary["checks"].values()} == {"failed"}
    status, _, ready = get(gateway, "/ready")
    assert status == 503
    # It needs no key, so it says what failed without naming the internal address.
    assert ready["problems"][0].startswith("MLflow: no answer") and stopped.url not in json.dumps(ready)


async def not_found(arrival: Arrival, request: web.Request) -> web.StreamResponse:
    """Some other HTTP server at the upstream address: an HTML 404 for everything."""
    return web.Response(status=404, text="<html><body>Not Found</body></html>", content_type="text/html")


def test_a_404_is_never_healthy(new_upstream: UpstreamFactory, new_gateway: GatewayFactory) -> None:
    gateway = new_gateway(new_upstream(handler=not_found).url)
    status, _, summary = get(gateway, "/mlflow/health/mlflow")
    assert status == 503 and summary["status"] == "unhealthy"
    assert {c["status"] for c in summary["checks"].values()} == {"failed"}
    assert summary["checks"]["registered_models"]["http_status"] == 404
    detail = get(gateway, "/mlflow/health/mlflow/detailed", gateway.create_key("k"))[2]
    assert "not an MLflow endpoint" in detail["checks"]["registered_models"]["detail"]


def test_checks_use_the_forwarders_translation_and_are_cached(
    new_upstream: UpstreamFactory, new_gateway: GatewayFactory
) -> None:
    upstream = new_upstream()
    gateway = new_gateway(upstream.url, upstream_api_prefix="ajax-api")
    for _ in range(10):
        get(gateway, "/mlflow/health/mlflow")
    targets = [r.target for r in upstream.requests]
    # One round of checks for ten calls (the result is cached for HOKUSAI_HEALTH_CACHE_SECONDS).
    # The enforcement check (permissions on) is the sixth, sent without the gateway's assertion.
    assert len(targets) == 6
    assert "/ajax-api/2.0/mlflow/experiments/get?experiment_id=0" in targets
    assert "/ajax-api/2.0/mlflow/experiments/search" in targets
    assert "/ajax-api/2.0/mlflow-artifacts/artifacts" in targets
    # The recording upstream answers JSON to everything, so only MLflow's plain-text /health fails.
    summary = get(gateway, "/mlflow/health/mlflow")[2]
    assert summary["status"] == "unhealthy" and summary["checks"]["mlflow"]["status"] == "failed"
