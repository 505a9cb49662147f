"""What the gateway says when MLflow's permissions refuse a request (pure): the level MLflow's model
asks for the kind of request, and the kind of resource it names."""

from __future__ import annotations

import pytest

from hokusai_registry.policy.permissions import denial_message, needed_level, resource_kind


@pytest.mark.parametrize(
    ("method", "path", "level"),
    [
        ("GET", "/api/2.0/mlflow/experiments/get", "READ"),
        ("HEAD", "/get-artifact", "READ"),
        ("POST", "/api/2.0/mlflow/runs/search", "READ"),
        ("POST", "/graphql", "READ"),
        ("POST", "/api/2.0/mlflow/runs/log-batch", "EDIT"),
        ("PUT", "/api/2.0/mlflow-artifacts/artifacts/1/x", "EDIT"),
        ("POST", "/api/2.0/mlflow/registered-models/alias", "EDIT"),
        ("POST", "/api/2.0/mlflow/experiments/delete", "MANAGE"),
        ("DELETE", "/api/2.0/mlflow/registered-models/delete", "MANAGE"),
        ("DELETE", "/api/2.0/mlflow-artifacts/artifacts/1/x", "MANAGE"),
        ("POST", "/api/2.0/mlflow/experiments/permissions/create", "MANAGE"),
        ("POST", "/api/3.0/mlflow/users/permissions/grant", "MANAGE"),
        ("POST", "/gateway/chat/mlflow/invocations", "USE"),
    ],
)
def test_the_level_asked_for(method: str, path: str, level: str) -> None:
    assert needed_level(method, path) == level


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/api/2.0/mlflow/runs/log-batch", "experiment"),
        ("/api/2.0/mlflow-artifacts/artifacts/1/x", "experiment"),
        ("/api/2.0/mlflow/registered-models/delete", "registered model"),
        ("/api/2.0/mlflow/model-versions/update", "registered model"),
        ("/model-versions/get-artifact", "registered model"),
        ("/gateway/chat/mlflow/invocations", "AI-gateway endpoint"),
        ("/api/3.0/mlflow/scorers/get", "scorer"),
    ],
)
def test_the_resource_named(path: str, kind: str) -> None:
    assert resource_kind(path) == kind


def test_the_message_says_who_what_and_how_to_get_it() -> None:
    message = denial_message("bob", "POST", "/api/2.0/mlflow/runs/log-batch")
    assert message.startswith(
        "bob may not POST /api/2.0/mlflow/runs/log-batch: that needs EDIT on the experiment"
    )
    assert "hokusai-registry grants add" in message and "nothing was changed" in message
