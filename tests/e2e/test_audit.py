"""Audit lines and run attribution, with the real MLflow client through a gateway writing its audit log
to a file, and the CLI's own audit log. (Refusals and key changes made through the API are in
tests/inprocess/test_audit.py.)"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
import requests
from mlflow.tracking import MlflowClient
from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]

from tests.helpers import HOKUSAI, GatewayProcess, key_store, stated_requirements
from tests.support.polling import eventually


@pytest.fixture(scope="module")
def audited(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    data_dir = tmp_path_factory.mktemp("audited")
    process = GatewayProcess(mlflow_server, data_dir, env={"HOKUSAI_AUDIT_LOG": str(data_dir / "audit.log")})
    yield process
    process.stop()


def audit_lines(gateway: GatewayProcess, event: str, **match: Any) -> list[dict[str, Any]]:
    """Audit lines of one event with the given fields, waiting briefly for the write."""
    path = gateway.data_dir / "audit.log"

    def found() -> list[dict[str, Any]] | None:
        lines = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        matching = [
            line
            for line in lines
            if line["audit"] == event and all(line.get(k) == v for k, v in match.items())
        ]
        return matching or None

    return eventually(found, 10, 0.1, f"an audit line {event} with {match}")


def owned_key(gateway: GatewayProcess, name: str, owner: str, scopes: tuple[str, ...]) -> tuple[str, str]:
    store = key_store(gateway.data_dir)
    try:
        record, key = store.create(name, environment="live", scopes=scopes, owner=owner)
    finally:
        store.close()
    return record.key_id, key


def test_runs_are_attributed_to_the_key_owner(
    client_env: pytest.MonkeyPatch, audited: GatewayProcess
) -> None:
    _, key = owned_key(audited, "attributed", "alice@example.com", ("read", "write"))
    client_env.setenv("MLFLOW_TRACKING_TOKEN", key)
    client_env.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    mlflow.set_tracking_uri(audited.url + "/mlflow")
    mlflow.set_experiment("attribution")
    # The client claims another user in both places MLflow records one.
    with mlflow.start_run(tags={"mlflow.user": "mallory"}) as run:
        pass
    stored = MlflowClient().get_run(run.info.run_id)
    assert stored.info.user_id == "alice@example.com"
    assert stored.data.tags["mlflow.user"] == "alice@example.com"


def test_registry_writes_are_audited_with_key_and_owner(
    client_env: pytest.MonkeyPatch, audited: GatewayProcess
) -> None:
    key_id, key = owned_key(audited, "registrar", "bob@example.com", ("read", "write"))
    client_env.setenv("MLFLOW_TRACKING_TOKEN", key)
    client_env.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    mlflow.set_tracking_uri(audited.url + "/mlflow")
    mlflow.set_experiment("audited-registry")
    with mlflow.start_run():
        mlflow.sklearn.log_model(
            LogisticRegression().fit(np.array([[0.0], [1.0]]), [0, 1]),
            name="m",
            registered_model_name="audited",
            pip_requirements=stated_requirements(),
        )
    client = MlflowClient()
    client.set_registered_model_alias("audited", "champion", "1")
    client.transition_model_version_stage("audited", "1", "Staging")
    client.delete_registered_model_alias("audited", "champion")
    who = {"key_id": key_id, "owner": "bob@example.com"}
    assert audit_lines(audited, "experiment.created", name="audited-registry", status=200, **who)
    assert audit_lines(audited, "registered_model.created", name="audited", status=200, **who)
    created = audit_lines(audited, "model_version.created", name="audited", **who)
    assert created and created[0]["source"].startswith(("models:/", "mlflow-artifacts:"))
    assert audit_lines(audited, "model_alias.set", name="audited", alias="champion", version="1", **who)
    assert audit_lines(audited, "model_version.stage_changed", name="audited", stage="Staging", **who)
    assert audit_lines(audited, "model_alias.deleted", name="audited", alias="champion", **who)
    assert key not in (audited.data_dir / "audit.log").read_text()


def test_key_revoked_with_the_cli_is_audited(audited: GatewayProcess, tmp_path: Path) -> None:
    _, admin = owned_key(audited, "auditor", "dana", ("read", "write", "admin"))
    made = requests.post(
        audited.url + "/api/v1/keys",
        json={"name": "via-api"},
        headers={"Authorization": "Bearer " + admin},
        timeout=10,
    ).json()
    cli_log = tmp_path / "cli-audit.log"
    revoked = subprocess.run(
        [
            HOKUSAI,
            "keys",
            "revoke",
            made["key_id"],
            "--data-dir",
            str(audited.data_dir),
            "--audit-log",
            str(cli_log),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert revoked.returncode == 0, revoked.stderr
    line = json.loads(cli_log.read_text().splitlines()[-1])
    assert (
        line["audit"] == "key.revoked"
        and line["key_id"] == made["key_id"]
        and line["actor"].startswith("cli:")
    )
    assert made["key"] not in cli_log.read_text()
