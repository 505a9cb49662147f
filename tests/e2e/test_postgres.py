"""The key store on PostgreSQL (127.0.0.1:5432, as on this project's machines and CI), in a database of its
own: migrated only by `db upgrade`, refused at start until then, and then the same keys for the CLI and the
gateway. Skips with the reason where no PostgreSQL answers."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests.helpers import HOKUSAI, GatewayProcess, RecordingUpstream, free_port, hokusai_mlflow


def hokusai(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [HOKUSAI, *args],
        env={**os.environ, "DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_gateway_refuses_an_unmigrated_database_until_db_upgrade(database: str) -> None:
    command = ["gateway", "--mlflow-url", "http://127.0.0.1:9", "--port", str(free_port())]
    refused = hokusai(*command, url=database)
    assert refused.returncode == 2
    assert "schema none" in refused.stderr and "hokusai-registry db upgrade" in refused.stderr

    upgraded = hokusai("db", "upgrade", url=database)
    assert upgraded.returncode == 0, upgraded.stderr
    assert "empty -> schema" in upgraded.stdout
    again = hokusai("db", "upgrade", url=database)
    assert "already at schema" in again.stdout


def test_keys_on_postgres_work_for_cli_and_gateway(database: str, tmp_path: Path) -> None:
    assert hokusai("db", "upgrade", url=database).returncode == 0
    created = hokusai("keys", "create", "--name", "pg-admin", "--admin", url=database)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    upstream = RecordingUpstream()
    gateway = GatewayProcess(
        upstream.url, tmp_path / "gw", env={"DATABASE_URL": database, "HOKUSAI_LAST_USED_INTERVAL": "0.2"}
    )
    try:
        search = gateway.url + "/api/2.0/mlflow/experiments/search?max_results=1"
        assert requests.get(search, headers={"X-API-Key": key}, timeout=10).status_code == 200
        listed = requests.get(gateway.url + "/api/v1/keys", headers={"X-API-Key": key}, timeout=10).json()
        assert [entry["name"] for entry in listed] == ["pg-admin"]
        key_id = listed[0]["key_id"]
        assert hokusai("keys", "revoke", key_id, url=database).returncode == 0
        refused = None
        for _ in range(50):  # the revision poll (1 s) drops the cached check
            refused = requests.get(search, headers={"X-API-Key": key}, timeout=10)
            if refused.status_code == 401:
                break
            time.sleep(0.1)
        assert refused is not None and refused.status_code == 401 and "revoked" in refused.json()["message"]
        info = hokusai("keys", "list", "--json", url=database)
        assert '"last_used_at": null' not in info.stdout
    finally:
        gateway.stop()
        upstream.stop()


def test_mlflow_on_postgres_through_the_gateway(
    database: str, tmp_path: Path, client_env: pytest.MonkeyPatch
) -> None:
    """`hokusai-registry mlflow --backend-store-uri postgresql://...` as the container runs it."""
    from mlflow.tracking import MlflowClient

    password_url = database.replace("postgres@", "postgres:s3cret@")  # trust auth ignores the password
    with hokusai_mlflow(tmp_path, "--backend-store-uri", password_url) as url:
        gateway = GatewayProcess(url, tmp_path / "gw")
        try:
            client_env.setenv("MLFLOW_TRACKING_TOKEN", gateway.create_key("pg-writer"))
            client = MlflowClient(tracking_uri=gateway.url + "/mlflow")
            experiment = client.create_experiment("on-postgres")
            run = client.create_run(experiment)
            client.log_param(run.info.run_id, "backend", "postgresql")
            assert client.get_run(run.info.run_id).data.params == {"backend": "postgresql"}
            assert "s3cret" not in (tmp_path / "mlflow.log").read_text()
        finally:
            gateway.stop()
