"""The route → scope table says what a human would (that it covers every route of the installed MLflow
is checked in tests/contract/test_mlflow_routes.py)."""

from __future__ import annotations

import pytest

from hokusai_registry.policy.scopes import expand, grants, required_scope


@pytest.mark.parametrize(
    ("method", "path", "scope"),
    [
        ("GET", "/api/2.0/mlflow/runs/get", "read"),
        ("HEAD", "/api/2.0/mlflow-artifacts/artifacts/1/r/artifacts/m", "read"),
        ("POST", "/api/2.0/mlflow/runs/search", "read"),
        ("POST", "/ajax-api/2.0/mlflow/experiments/search", "read"),
        ("POST", "/api/3.0/mlflow/traces/search", "read"),
        ("POST", "/api/2.0/mlflow/registered-models/get-latest-versions", "read"),
        ("POST", "/graphql", "read"),
        ("POST", "/api/2.0/mlflow/runs/create", "write"),
        ("POST", "/api/2.0/mlflow/runs/log-batch", "write"),
        ("PUT", "/api/2.0/mlflow-artifacts/artifacts/1/r/artifacts/model.pkl", "write"),
        ("DELETE", "/api/2.0/mlflow-artifacts/artifacts/1/r/artifacts/model.pkl", "write"),
        ("POST", "/api/2.0/mlflow-artifacts/mpu/create/1/r/artifacts", "write"),
        ("POST", "/api/2.0/mlflow/registered-models/create", "write"),
        ("POST", "/api/2.0/mlflow/model-versions/create", "write"),
        ("POST", "/api/2.0/mlflow/registered-models/alias", "write"),
        ("PATCH", "/api/2.0/mlflow/logged-models/m-1", "write"),
        ("POST", "/v1/traces", "write"),
        ("POST", "/api/2.0/mlflow/webhooks", "admin"),
        ("POST", "/api/3.0/mlflow/gateway/secrets/create", "admin"),
        ("DELETE", "/ajax-api/3.0/mlflow/workspaces/team-a", "admin"),
        ("OPTIONS", "/api/2.0/mlflow/runs/get", None),
        ("TRACE", "/api/2.0/mlflow/runs/get", None),
    ],
)
def test_table(method: str, path: str, scope: str | None) -> None:
    assert required_scope(method, path) == scope


def test_scopes_imply_the_ones_before() -> None:
    assert expand("read") == ("read",)
    assert grants(expand("write"), "read") and not grants(expand("write"), "admin")
    assert all(grants(expand("admin"), needed) for needed in ("read", "write", "admin"))
