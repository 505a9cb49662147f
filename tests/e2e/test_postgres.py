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

from hokusai_registry.policy import keys
from tests.helpers import HOKUSAI, GatewayProcess, free_port, hokusai_mlflow
from tests.support.stub import ThreadedStub


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
    upstream = ThreadedStub()
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


def _sign_in(gateway: GatewayProcess, key: str) -> str:
    response = requests.post(
        gateway.url + "/login",
        data={"key": key, "next": "/mlflow/"},
        headers={"Origin": gateway.url},
        allow_redirects=False,
        timeout=10,
    )
    assert response.status_code == 303, response.text
    cookie = response.cookies.get("hokusai_session")
    assert cookie is not None, response.headers
    return cookie


def test_browser_sessions_are_shared_by_gateways_on_one_database(database: str, tmp_path: Path) -> None:
    assert hokusai("db", "upgrade", url=database).returncode == 0
    key = hokusai("keys", "create", "--name", "pg-browser", url=database).stdout.strip()
    upstream = ThreadedStub()
    env = {"DATABASE_URL": database}
    first = GatewayProcess(upstream.url, tmp_path / "a", env=env)
    second = GatewayProcess(upstream.url, tmp_path / "b", env=env)
    search = "/mlflow/ajax-api/2.0/mlflow/experiments/search?max_results=1"
    try:
        # Signed in on one replica, the session works on the other (behind a load balancer, either answers).
        session = _sign_in(first, key)
        cookies = {"hokusai_session": session}
        assert requests.get(second.url + search, cookies=cookies, timeout=10).status_code == 200
        # Signed out on the other replica: over everywhere.
        page = requests.get(second.url + "/logout", cookies=cookies, timeout=10).text
        csrf = page.split('name="csrf" value="')[1].split('"')[0]
        signed_out = requests.post(
            second.url + "/logout",
            data={"csrf": csrf},
            cookies=cookies,
            headers={"Origin": second.url},
            allow_redirects=False,
            timeout=10,
        )
        assert signed_out.status_code == 303
        assert requests.get(first.url + search, cookies=cookies, timeout=10).status_code == 401

        # Revoked with the CLI: every replica refuses the key's sessions at the next request.
        cookies = {"hokusai_session": _sign_in(second, key)}
        key_id = keys.parse(key).key_id
        assert hokusai("keys", "revoke", key_id, url=database).returncode == 0
        for gateway in (first, second):
            refused = requests.get(gateway.url + search, cookies=cookies, timeout=10)
            assert refused.status_code == 401 and refused.json()["error_code"] == "UNAUTHENTICATED"
    finally:
        first.stop()
        second.stop()
        upstream.stop()
