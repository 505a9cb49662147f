"""The route → scope table covers every route of the installed MLflow and says what a human would."""

from __future__ import annotations

import pytest

from hokusai_registry.policy.routes import classify
from hokusai_registry.policy.scopes import expand, grants, required_scope
from tests.unit.test_routes import KNOWN_UNREACHABLE, _example, mlflow_routes


def test_every_forwarded_mlflow_route_has_a_scope() -> None:
    missing = sorted(
        (method, path)
        for method, path in mlflow_routes()
        if path not in KNOWN_UNREACHABLE
        and classify(_example(path)) is not None
        and required_scope(method, _example(path)) is None
    )
    assert missing == []


def test_reads_are_reads() -> None:
    for method, path in mlflow_routes():
        example = _example(path)
        if method == "GET" or (method == "POST" and example.endswith("/search")):
            assert required_scope(method, example) == "read", (method, path)


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
