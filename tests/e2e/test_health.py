"""Health endpoints over live HTTP in front of a real MLflow: judged healthy, with its version, and
degraded when it does not serve artifacts. (Shapes, readiness, a stopped or foreign upstream, translation
and caching are in tests/inprocess/test_health.py.)"""

from __future__ import annotations

from pathlib import Path

import requests

from tests.helpers import GatewayProcess


def get(url: str, key: str | None = None) -> requests.Response:
    return requests.get(url, headers={"Authorization": f"Bearer {key}"} if key else {}, timeout=30)


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
