"""Audit lines and run attribution, with the real MLflow client through a gateway writing its audit log
to a file."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
import requests
from mlflow.tracking import MlflowClient
from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]

from tests.helpers import HOKUSAI, GatewayProcess, key_store, mistyped


@pytest.fixture(scope="module")
def audited(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    data_dir = tmp_path_factory.mktemp("audited")
    process = GatewayProcess(mlflow_server, data_dir, env={"HOKUSAI_AUDIT_LOG": str(data_dir / "audit.log")})
    yield process
    process.stop()


def audit_lines(gateway: GatewayProcess, event: str, **match: Any) -> list[dict[str, Any]]:
    """Audit lines of one event with the given fields, waiting briefly for the write."""
    deadline = time.monotonic() + 10
    while True:
        path = gateway.data_dir / "audit.log"
        lines = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        found = [
            line
            for line in lines
            if line["audit"] == event and all(line.get(k) == v for k, v in match.items())
        ]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


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
        )
    client = MlflowClient()
    client.set_registered_model_alias("audited", "champion", "1")
    client.transition_model_version_stage("audited", "1", "Staging")
    client.delete_registered_model_alias("audited", "champion")
    who = {"key_id": key_id, "owner": "bob@example.com"}
    assert audit_lines(audited, "registered_model.created", name="audited", status=200, **who)
    created = audit_lines(audited, "model_version.created", name="audited", **who)
    assert created and created[0]["source"].startswith(("models:/", "mlflow-artifacts:"))
    assert audit_lines(audited, "model_alias.set", name="audited", alias="champion", version="1", **who)
    assert audit_lines(audited, "model_version.stage_changed", name="audited", stage="Staging", **who)
    assert audit_lines(audited, "model_alias.deleted", name="audited", alias="champion", **who)
    assert key not in (audited.data_dir / "audit.log").read_text()


def test_refusals_are_audited_without_secrets(audited: GatewayProcess) -> None:
    key_id, key = owned_key(audited, "reader", "carol", ("read",))
    wrong = mistyped(key)
    url = audited.url + "/api/2.0/mlflow/experiments/create"
    assert requests.post(url, json={"name": "x"}, headers={"X-API-Key": wrong}, timeout=10).status_code == 401
    assert requests.post(url, json={"name": "x"}, headers={"X-API-Key": key}, timeout=10).status_code == 403
    failed = audit_lines(audited, "auth.failed", key_id=key_id, reason="malformed")  # checksum
    assert failed and failed[0]["client"] == "127.0.0.1" and failed[0]["path"].endswith("/experiments/create")
    assert audit_lines(audited, "permission.denied", key_id=key_id, reason="scope")
    text = (audited.data_dir / "audit.log").read_text()
    secret = key.split("_")[3]
    assert secret not in text and wrong.split("_")[3] not in text


def test_key_changes_are_audited_from_cli_and_api(audited: GatewayProcess, tmp_path: Path) -> None:
    admin_id, admin = owned_key(audited, "auditor", "dana", ("read", "write", "admin"))
    made = requests.post(
        audited.url + "/api/v1/keys",
        json={"name": "via-api"},
        headers={"Authorization": "Bearer " + admin},
        timeout=10,
    ).json()
    assert audit_lines(audited, "key.created", key_id=made["key_id"], actor=f"key:{admin_id}")
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


def test_a_key_limited_to_another_service_is_refused_here(audited: GatewayProcess) -> None:
    store = key_store(audited.data_dir)
    try:
        _, key = store.create("billing-only", environment="live", scopes=("read",), service_ids=("billing",))
    finally:
        store.close()
    response = requests.get(
        audited.url + "/api/2.0/mlflow/experiments/search?max_results=1",
        headers={"X-API-Key": key},
        timeout=10,
    )
    assert response.status_code == 403
    assert response.json()["error_code"] == "PERMISSION_DENIED" and "'mlflow'" in response.json()["message"]
    assert audit_lines(audited, "permission.denied", reason="service")
