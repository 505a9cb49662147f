"""The unmodified MLflow client registers and loads models through the gateway, for every
tracking-URI style and both credential styles, against a real `mlflow server --serve-artifacts`."""

from __future__ import annotations

import re
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient
from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]

from tests.helpers import GatewayProcess, stated_requirements

MOUNTS = {"mlflow": "/mlflow", "api-mlflow": "/api/mlflow", "bare": ""}


def register_and_load(tracking_uri: str, name: str, tmp_path: Path) -> str:
    """The data scientist's whole path; returns the run id."""
    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient()
    mlflow.set_experiment(f"experiment-{name}")
    X = np.array([[0.0], [1.0], [2.0], [3.0]])
    first = LogisticRegression().fit(X, np.array([0, 0, 1, 1]))
    second = LogisticRegression().fit(X, np.array([1, 1, 0, 0]))
    notes = tmp_path / "notes.txt"
    notes.write_text("hello through the gateway\n")
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "a.json").write_text('{"a": 1}')
    (bundle / "b with space.txt").write_text("b")
    with mlflow.start_run() as run:
        mlflow.log_param("alpha", "0.5")
        mlflow.log_metric("loss", 0.25, step=1)
        client.log_batch(
            run.info.run_id,
            metrics=[Metric("acc", 0.9, 0, 2), Metric("acc", 0.95, 0, 3)],
            params=[Param("beta", "2")],
        )
        mlflow.log_artifact(str(notes), "docs")
        mlflow.log_artifacts(str(bundle), "bundle")
        mlflow.sklearn.log_model(
            first, name="model", registered_model_name=name, pip_requirements=stated_requirements()
        )
        mlflow.sklearn.log_model(
            second, name="model-2", registered_model_name=name, pip_requirements=stated_requirements()
        )
    versions = client.search_model_versions(f"name = '{name}'")
    assert sorted(int(v.version) for v in versions) == [1, 2]
    client.set_registered_model_alias(name, "champion", "2")
    loaded = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    assert list(loaded.predict(X)) == list(second.predict(X))
    docs = Path(
        mlflow.artifacts.download_artifacts(
            run_id=run.info.run_id, artifact_path="docs", dst_path=str(tmp_path / "dl")
        )
    )
    assert (docs / "notes.txt").read_text() == "hello through the gateway\n"
    bundle_back = Path(
        mlflow.artifacts.download_artifacts(
            run_id=run.info.run_id, artifact_path="bundle", dst_path=str(tmp_path / "dl2")
        )
    )
    assert (bundle_back / "b with space.txt").read_text() == "b"
    runs = mlflow.search_runs(experiment_names=[f"experiment-{name}"])
    assert list(runs["run_id"]) == [run.info.run_id]
    assert runs["params.alpha"][0] == "0.5" and runs["params.beta"][0] == "2"
    assert client.get_metric_history(run.info.run_id, "acc")[-1].value == 0.95
    run_id: str = run.info.run_id
    return run_id


@pytest.mark.parametrize("style", MOUNTS)
def test_bearer_token_registers_and_loads_a_model(
    style: str, gateway: GatewayProcess, api_key: str, client_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    client_env.setenv("MLFLOW_TRACKING_TOKEN", api_key)
    run_id = register_and_load(gateway.url + MOUNTS[style], f"model-{style}", tmp_path)
    # The artifact bytes went through this gateway, under this mount, and were accepted.
    uploads = re.findall(
        rf"PUT {re.escape(MOUNTS[style])}/api/2\.0/mlflow-artifacts/artifacts/\d+/{run_id}/"
        r"artifacts/\S+ -> \S+ (\d+)",
        gateway.log(),
    )
    assert uploads and set(uploads) == {"200"}


def test_basic_credentials_register_and_load_a_model(
    gateway: GatewayProcess, api_key: str, client_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    client_env.setenv("MLFLOW_TRACKING_USERNAME", "data-scientist")
    client_env.setenv("MLFLOW_TRACKING_PASSWORD", api_key)
    register_and_load(gateway.url + "/mlflow", "model-basic", tmp_path)


def test_basic_wins_over_a_stale_token(
    gateway: GatewayProcess, api_key: str, client_env: pytest.MonkeyPatch
) -> None:
    # The MLflow client sends Basic when a user name and password are set, whatever the token says.
    client_env.setenv("MLFLOW_TRACKING_TOKEN", "hk_live_stale")
    client_env.setenv("MLFLOW_TRACKING_USERNAME", "someone")
    client_env.setenv("MLFLOW_TRACKING_PASSWORD", api_key)
    mlflow.set_tracking_uri(gateway.url + "/mlflow")
    assert MlflowClient().search_experiments()
