"""Scopes with the real MLflow client: a read key reads, and is refused every write by the gateway."""

from __future__ import annotations

import subprocess
from pathlib import Path

import mlflow
import numpy as np
import pytest
import requests
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]

from tests.helpers import HOKUSAI, GatewayProcess, stated_requirements


def read_key(gateway: GatewayProcess) -> str:
    return subprocess.run(
        [
            HOKUSAI,
            "keys",
            "create",
            "--name",
            "ci-reader",
            "--scope",
            "read",
            "--data-dir",
            str(gateway.data_dir),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()


def test_read_key_reads_but_cannot_write(
    gateway_client: pytest.MonkeyPatch, gateway: GatewayProcess, api_key: str, tmp_path: Path
) -> None:
    # A trainer with a write key logs a run and a model first.
    gateway_client.setenv("MLFLOW_TRACKING_TOKEN", api_key)
    mlflow.set_experiment("scopes")
    notes = tmp_path / "notes.txt"
    notes.write_text("read me")
    with mlflow.start_run() as run:
        mlflow.log_artifact(str(notes))
        model = mlflow.sklearn.log_model(
            LogisticRegression().fit(np.array([[0.0], [1.0]]), [0, 1]),
            name="m",
            pip_requirements=stated_requirements(),
        )

    gateway_client.setenv("MLFLOW_TRACKING_TOKEN", read_key(gateway))
    client = MlflowClient()
    assert client.search_runs([run.info.experiment_id])[0].info.run_id == run.info.run_id
    assert (
        Path(
            mlflow.artifacts.download_artifacts(
                run_id=run.info.run_id, artifact_path="notes.txt", dst_path=str(tmp_path / "dl")
            )
        ).read_text()
        == "read me"
    )
    with pytest.raises(MlflowException) as denied:
        mlflow.start_run(experiment_id=run.info.experiment_id)
    assert denied.value.error_code == "PERMISSION_DENIED"
    assert "needs the 'write' scope" in str(denied.value)
    with pytest.raises(requests.HTTPError) as upload:
        client.log_artifact(run.info.run_id, str(notes))
    refused = upload.value.response
    assert refused is not None and refused.status_code == 403 and "PERMISSION_DENIED" in refused.text
    with pytest.raises(MlflowException) as register:
        mlflow.register_model(model.model_uri, "read-key-model")
    assert register.value.error_code == "PERMISSION_DENIED"
