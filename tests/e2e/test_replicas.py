"""Two gateway replicas on different ports sharing PostgreSQL (keys) and Redis (limits) in front of one
MLflow on PostgreSQL with artifacts in S3 (moto): a key made through one works on the other, a revocation
through one is refused by the other within a second, a per-key limit is one count, and a model registered
through replica 1 loads through replica 2. Skips with the reason where PostgreSQL or Redis does not answer
on loopback."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pytest
import requests
from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]

from tests.conftest import POSTGRES_ADMIN_URL
from tests.e2e.conftest import s3_environment
from tests.helpers import (
    FrontProxy,
    GatewayProcess,
    clear_of_minute_edge,
    hokusai_mlflow,
    shared_key_store_with_admin,
    stated_requirements,
)


@dataclass
class Deployment:
    first: GatewayProcess
    second: GatewayProcess
    admin: str


@pytest.fixture
def mlflow_database(database: str) -> Iterator[str]:
    """A second fresh database, for MLflow's own tables."""
    import psycopg

    name = database.rsplit("/", 1)[1] + "_mlflow"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield database.rsplit("/", 1)[0] + "/" + name
        finally:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture
def deployment(
    database: str, mlflow_database: str, redis_url: str, s3: FrontProxy, tmp_path: Path
) -> Iterator[Deployment]:
    admin = shared_key_store_with_admin(database)
    shared = {"DATABASE_URL": database, "REDIS_URL": redis_url}
    destination = f"s3://artifacts/replicas-{tmp_path.name}"
    with (
        s3_environment(s3),
        hokusai_mlflow(
            tmp_path, "--backend-store-uri", mlflow_database, "--artifacts-destination", destination
        ) as url,
    ):
        replicas = [GatewayProcess(url, tmp_path / name, env=shared) for name in ("first", "second")]
        try:
            yield Deployment(replicas[0], replicas[1], admin)
        finally:
            for replica in replicas:
                replica.stop()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def search(gateway: GatewayProcess, key: str) -> int:
    url = gateway.url + "/api/2.0/mlflow/experiments/search?max_results=1"
    return requests.get(url, headers=bearer(key), timeout=10).status_code


def test_replicas_share_keys_revocations_limits_and_models(
    deployment: Deployment, client_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    first, second = deployment.first, deployment.second
    made = requests.post(
        first.url + "/api/v1/keys",
        json={"name": "shared-writer", "owner": "alice", "rate_limit_per_minute": 1000},
        headers=bearer(deployment.admin),
        timeout=10,
    ).json()
    key = made["key"]
    assert search(second, key) == 200  # created through one, works on the other

    # A model registered through replica 1 loads through replica 2.
    client_env.setenv("MLFLOW_TRACKING_TOKEN", key)
    client_env.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    mlflow.set_tracking_uri(first.url + "/mlflow")
    mlflow.set_experiment("replicas")
    model = LogisticRegression().fit(np.array([[0.0], [1.0]]), [0, 1])
    with mlflow.start_run():
        mlflow.sklearn.log_model(
            model, name="m", registered_model_name="replicated", pip_requirements=stated_requirements()
        )
    mlflow.set_tracking_uri(second.url + "/mlflow")
    loaded = mlflow.pyfunc.load_model("models:/replicated/1")
    assert list(loaded.predict(np.array([[1.0]]))) == [1]

    # One count for a per-key limit across both replicas.
    limited = requests.post(
        second.url + "/api/v1/keys",
        json={"name": "limited", "rate_limit_per_minute": 4},
        headers=bearer(deployment.admin),
        timeout=10,
    ).json()["key"]
    clear_of_minute_edge()
    statuses = [search(replica, limited) for replica in (first, second, first, second, first)]
    assert statuses == [200, 200, 200, 200, 429]

    # Revoked through one, refused by the other within a second (its revision poll).
    revoked = requests.post(
        first.url + f"/api/v1/keys/{made['key_id']}/revoke", headers=bearer(deployment.admin), timeout=10
    )
    assert revoked.status_code == 200
    revoked_at = time.monotonic()
    while search(second, key) == 200:
        assert time.monotonic() - revoked_at < 5, "replica 2 still accepts the revoked key"
        time.sleep(0.05)
    print(f"[replicas] replica 2 refused the revoked key {time.monotonic() - revoked_at:.2f} s later")
