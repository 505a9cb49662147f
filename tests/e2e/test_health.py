"""Health endpoints over live HTTP: healthy, degraded and unhealthy MLflows, readiness, caching."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from hokusai_registry.run.mlflow_process import mlflow_command
from hokusai_registry.settings import Settings
from tests.helpers import GatewayProcess, free_port, running_mlflow
from tests.support.stub import ThreadedStub

MOUNTED = ("/mlflow/health/mlflow", "/api/mlflow/health/mlflow")


@pytest.fixture(scope="module")
def mlflow_without_artifacts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real MLflow started with --no-serve-artifacts: what a misconfigured deployment runs."""
    data_dir = tmp_path_factory.mktemp("no-artifacts")
    port = free_port()
    command = mlflow_command(Settings.load(data_dir=data_dir, mlflow_workers=1), port)
    command[command.index("--serve-artifacts")] = "--no-serve-artifacts"
    destination = command.index("--artifacts-destination")
    command[destination : destination + 2] = ["--default-artifact-root", str(data_dir / "artifacts")]
    with running_mlflow(command, data_dir, port) as url:
        yield url


@pytest.fixture
def not_mlflow(tmp_path: Path) -> Iterator[str]:
    """Some other HTTP server at the upstream address: 404 for everything."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def get(url: str, key: str | None = None) -> requests.Response:
    return requests.get(url, headers={"Authorization": f"Bearer {key}"} if key else {}, timeout=30)


@pytest.mark.parametrize("path", MOUNTED)
def test_healthy_through_the_gateway(path: str, gateway: GatewayProcess, api_key: str) -> None:
    summary = get(gateway.url + path)
    assert summary.status_code == 200
    assert summary.json() == {
        "status": "healthy",
        "checks": {
            name: {"status": "ok", "http_status": 200}
            for name in ("mlflow", "experiments", "registered_models", "artifacts")
        },
    }
    assert summary.headers["x-hokusai-origin"] == "gateway"


def test_detailed_needs_a_key_and_has_a_number_per_check(
    gateway: GatewayProcess, api_key: str, mlflow_server: str
) -> None:
    refused = get(gateway.url + "/mlflow/health/mlflow/detailed")
    assert refused.status_code == 401 and refused.json()["error_code"] == "UNAUTHENTICATED"
    detailed = get(gateway.url + "/api/mlflow/health/mlflow/detailed", api_key)
    assert detailed.status_code == 200
    body = detailed.json()
    assert body["status"] == "healthy" and body["key_store"] == "ok"
    for check in body["checks"].values():
        assert isinstance(check["response_time_ms"], float) and check["response_time_ms"] >= 0
    assert body["mlflow_version"] == "3.17.2"
    assert body["gateway_version"]
    assert body["routing"]["upstream"] == mlflow_server and body["routing"]["upstream_is_internal"] is True
    assert body["routing"]["path_translation"] == "off"
    assert body["routing"]["loop_guard"]["mark_header"] == "x-hokusai-gateway"
    assert body["checked_at"].endswith("+00:00")
    assert api_key not in detailed.text


def test_liveness_and_readiness_with_mlflow_up(gateway: GatewayProcess) -> None:
    assert get(gateway.url + "/health").json() == {"status": "ok"}
    ready = get(gateway.url + "/ready")
    assert ready.status_code == 200 and ready.json() == {"status": "ready", "problems": []}


def test_unhealthy_and_not_ready_with_mlflow_stopped(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    process = GatewayProcess(dead, tmp_path / "gw")
    try:
        assert get(process.url + "/health").status_code == 200  # liveness never asks MLflow
        summary = get(process.url + "/mlflow/health/mlflow")
        assert summary.status_code == 503 and summary.json()["status"] == "unhealthy"
        assert {c["status"] for c in summary.json()["checks"].values()} == {"failed"}
        ready = get(process.url + "/ready")
        assert ready.status_code == 503
        assert dead in ready.json()["problems"][0]
    finally:
        process.stop()


def test_degraded_when_mlflow_does_not_serve_artifacts(mlflow_without_artifacts: str, tmp_path: Path) -> None:
    process = GatewayProcess(mlflow_without_artifacts, tmp_path / "gw")
    try:
        summary = get(process.url + "/mlflow/health/mlflow")
        assert summary.status_code == 200
        assert summary.json()["status"] == "degraded"
        assert summary.json()["checks"]["artifacts"] == {"status": "disabled", "http_status": 503}
        detail = get(process.url + "/mlflow/health/mlflow/detailed", process.create_key("k")).json()
        assert "--serve-artifacts" in detail["checks"]["artifacts"]["detail"]
    finally:
        process.stop()


def test_a_404_is_never_healthy(not_mlflow: str, tmp_path: Path) -> None:
    process = GatewayProcess(not_mlflow, tmp_path / "gw")
    try:
        summary = get(process.url + "/mlflow/health/mlflow")
        assert summary.status_code == 503 and summary.json()["status"] == "unhealthy"
        assert {c["status"] for c in summary.json()["checks"].values()} == {"failed"}
        assert summary.json()["checks"]["registered_models"]["http_status"] == 404
        detail = get(process.url + "/mlflow/health/mlflow/detailed", process.create_key("k")).json()
        assert "not an MLflow endpoint" in detail["checks"]["registered_models"]["detail"]
    finally:
        process.stop()


def test_checks_use_the_forwarders_translation_and_are_cached(tmp_path: Path) -> None:
    upstream = ThreadedStub()
    process = GatewayProcess(upstream.url, tmp_path / "gw", env={"MLFLOW_UPSTREAM_API_PREFIX": "ajax-api"})
    try:
        for _ in range(10):
            get(process.url + "/mlflow/health/mlflow")
        targets = [r.target for r in upstream.requests]
        # One round of checks for ten calls (the result is cached for HOKUSAI_HEALTH_CACHE_SECONDS).
        assert len(targets) == 5
        assert "/ajax-api/2.0/mlflow/experiments/search" in targets
        assert "/ajax-api/2.0/mlflow-artifacts/artifacts" in targets
        # The recording upstream answers JSON to everything, so only MLflow's plain-text /health fails.
        summary = get(process.url + "/mlflow/health/mlflow").json()
        assert summary["status"] == "unhealthy" and summary["checks"]["mlflow"]["status"] == "failed"
    finally:
        process.stop()
        upstream.stop()
