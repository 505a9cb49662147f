"""No secret leaves the gateway: the whole registration flow with the real MLflow client through a gateway
process with debug logging and JSON logs on, and the key, its secret part and its stored hash appear in no
log or audit line or request MLflow received. (The usual mistakes, a mistyped key, a key in the URL, Basic
auth, and the gateway's own endpoints are in tests/inprocess/test_secrets.py.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]

from hokusai_registry.policy import keys
from tests.helpers import FrontProxy, GatewayProcess, stated_requirements


@pytest.fixture(scope="module")
def recorded_upstream(mlflow_server: str) -> Iterator[FrontProxy]:
    """MLflow behind a relay that keeps every request the gateway sends it."""
    relay = FrontProxy(mlflow_server, record=True)
    yield relay
    relay.stop()


@pytest.fixture(scope="module")
def loud(recorded_upstream: FrontProxy, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    data_dir = tmp_path_factory.mktemp("loud")
    env = {
        "LOG_FORMAT": "json",
        "MLFLOW_PROXY_DEBUG": "true",
        "HOKUSAI_AUDIT_LOG": str(data_dir / "audit.log"),
        "HOKUSAI_LAST_USED_INTERVAL": "0.2",
    }
    process = GatewayProcess(recorded_upstream.url, data_dir, env=env)
    yield process
    process.stop()


def test_no_secret_in_logs_or_upstream_requests_of_the_whole_flow(
    client_env: pytest.MonkeyPatch, loud: GatewayProcess, recorded_upstream: FrontProxy, tmp_path: Path
) -> None:
    key = loud.create_key("leak-check", admin=True)
    secrets = {
        "key": key,
        "secret": key.split("_", 3)[3],
        "hash": keys.digest(key),
    }
    seen: dict[str, str] = {}

    # The whole flow with the real client.
    client_env.setenv("MLFLOW_TRACKING_TOKEN", key)
    mlflow.set_tracking_uri(loud.url + "/mlflow")
    mlflow.set_experiment("no-leaks")
    notes = tmp_path / "notes.txt"
    notes.write_text("artifact")
    with mlflow.start_run() as run:
        mlflow.log_param("p", 1)
        mlflow.log_metric("m", 0.5)
        mlflow.log_artifact(str(notes))
        model = LogisticRegression().fit(np.array([[0.0], [1.0]]), [0, 1])
        mlflow.sklearn.log_model(
            model, name="m", registered_model_name="no-leaks", pip_requirements=stated_requirements()
        )
    client = MlflowClient()
    client.set_registered_model_alias("no-leaks", "champion", "1")
    assert list(mlflow.pyfunc.load_model("models:/no-leaks@champion").predict(np.array([[1.0]]))) == [1]
    mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path="notes.txt", dst_path=str(tmp_path)
    )

    loud.stop()  # flushes every log line
    seen["gateway log"] = loud.log()
    seen["audit log"] = (loud.data_dir / "audit.log").read_text()
    assert recorded_upstream.recorded
    seen["upstream requests"] = "\n".join(
        f"{method} {target} {headers} {body.decode('latin-1')}"
        for method, target, headers, body in recorded_upstream.recorded
    )

    assert '"level": "debug"' in seen["gateway log"]  # debug logging really was on
    assert '"audit": "registered_model.created"' in seen["audit log"]
    for where, text in seen.items():
        for what, secret in secrets.items():
            assert secret not in text, f"the {what} appears in the {where}"
