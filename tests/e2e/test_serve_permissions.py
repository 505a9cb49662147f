"""`serve` on SQLite has permissions on by default: it writes MLflow's auth configuration and the assertion
secret into the data directory, MLflow refuses what no gateway signed, and an owner gets MANAGE on what it
creates through the gateway."""

from __future__ import annotations

import configparser
import stat
import time
from pathlib import Path

import pytest
import requests

from hokusai_registry.policy.assertions import ADMIN_USER, EMPTY_BODY, SECRET_FILE_ENV, sign
from tests.helpers import HOKUSAI, Running, free_port, processes_using


def test_serve_on_sqlite_enforces_permissions_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The suite shares one secret file among its processes; `serve` alone makes its own in the data dir.
    monkeypatch.delenv(SECRET_FILE_ENV, raising=False)
    data_dir = tmp_path / "data"
    port, mlflow_port = free_port(), free_port()
    env = {
        "HOKUSAI_DATA_DIR": str(data_dir),
        "HOKUSAI_PORT": str(port),
        "HOKUSAI_MLFLOW_PORT": str(mlflow_port),
        "HOKUSAI_MLFLOW_WORKERS": "1",
    }
    running = Running([HOKUSAI, "serve"], env)
    try:
        running.wait_for("Press Ctrl-C to stop.")
        admin = next(
            line.split("=", 1)[1].strip() for line in running.seen if "MLFLOW_TRACKING_TOKEN=" in line
        )

        ini = data_dir / "mlflow-auth.ini"
        assert stat.S_IMODE(ini.stat().st_mode) == 0o600  # it names the auth database
        config = configparser.ConfigParser(interpolation=None)
        config.read(ini)
        assert dict(config["mlflow"]) == {
            "default_permission": "READ",
            "database_uri": f"sqlite:///{data_dir.resolve() / 'mlflow-auth.db'}",
            "admin_username": ADMIN_USER,
            "authorization_function": "hokusai_registry.mlflow_app.authorization:authenticate",
        }
        assert (data_dir / "mlflow-auth.db").is_file()
        secret_file = data_dir / "mlflow-assertion-secret"
        assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600

        # On MLflow's own port: unsigned refused, signed with the data directory's secret accepted.
        path = "/api/2.0/mlflow/experiments/search"
        direct = f"http://127.0.0.1:{mlflow_port}{path}?max_results=1"
        unsigned = requests.get(direct, timeout=10)
        assert unsigned.status_code == 401 and "a Hokusai Registry gateway authenticated" in unsigned.text
        secret = secret_file.read_text().strip().encode()
        value = sign(
            secret, ADMIN_USER, "GET", path, "max_results=1", now=time.time(), nonce="serve", body=EMPTY_BODY
        )
        assert requests.get(direct, headers={"X-Hokusai-Assertion": value.decode()}, timeout=10).ok

        # Through the gateway: ready (MLflow enforces), and an owner manages what it creates.
        gateway = f"http://127.0.0.1:{port}"
        assert requests.get(gateway + "/ready", timeout=10).json() == {"status": "ready", "problems": []}
        made = requests.post(
            gateway + "/api/v1/keys",
            json={"name": "alice-key", "owner": "alice"},
            headers={"Authorization": f"Bearer {admin}"},
            timeout=10,
        )
        alice = {"Authorization": f"Bearer {made.json()['key']}"}
        created = requests.post(
            gateway + "/mlflow/api/2.0/mlflow/experiments/create",
            json={"name": "mine"},
            headers=alice,
            timeout=10,
        )
        experiment_id = created.json()["experiment_id"]
        grants = requests.get(
            gateway + "/mlflow/api/3.0/mlflow/users/current/permissions", headers=alice, timeout=10
        ).json()["permissions"]
        mine = [row for row in grants if row["resource_pattern"] == experiment_id]
        assert [(row["resource_type"], row["permission"]) for row in mine] == [("experiment", "MANAGE")]
    finally:
        assert running.terminate() == 0
    assert processes_using(data_dir) == []
