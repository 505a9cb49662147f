"""Two gateway replicas on PostgreSQL (keys) in front of one `hokusai-registry mlflow` with its backend store
and its auth database (`HOKUSAI_MLFLOW_AUTH_DATABASE_URI`) on PostgreSQL, as a container runs it: the
assertion secret given as a value (`HOKUSAI_MLFLOW_ASSERTION_SECRET`, as ECS hands secrets over) to MLflow
and replica 2, and as a file to replica 1; `MLFLOW_AUTH_ADMIN_USERNAME` left over in the environment. The
replicas agree on permissions: a grant made through one is enforced by the other at once, and so is its
revocation. Skips with the reason where PostgreSQL does not answer on loopback."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from hokusai_registry.policy.assertions import SECRET_ENV, SECRET_FILE_ENV
from tests.conftest import POSTGRES_ADMIN_URL
from tests.helpers import GatewayProcess, hokusai_mlflow, shared_key_store_with_admin, signed


@dataclass
class Deployment:
    first: GatewayProcess
    second: GatewayProcess
    mlflow_url: str
    admin: str


@pytest.fixture
def more_databases(database: str) -> Iterator[tuple[str, str]]:
    """Two more fresh databases beside the key store's: MLflow's backend store and its auth database."""
    import psycopg

    base, name = database.rsplit("/", 1)
    names = [f"{name}_mlflow", f"{name}_mlflow_auth"]
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        for made in names:
            admin.execute(f'CREATE DATABASE "{made}"')
        try:
            yield f"{base}/{names[0]}", f"{base}/{names[1]}"
        finally:
            for made in names:
                admin.execute(f'DROP DATABASE "{made}" WITH (FORCE)')


@pytest.fixture
def deployment(
    database: str, more_databases: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Deployment]:
    backend, auth = more_databases
    admin = shared_key_store_with_admin(database)
    secret = secrets.token_urlsafe(32)
    secret_file = tmp_path / "assertion-secret"
    secret_file.write_text(secret + "\n")
    # MLflow's container environment: the secret as a value, the auth database, isolated teams, and an
    # administrator name left over from an earlier basic-auth setup (which must not win).
    monkeypatch.setenv(SECRET_ENV, secret)
    monkeypatch.setenv("HOKUSAI_MLFLOW_AUTH_DATABASE_URI", auth)
    monkeypatch.setenv("HOKUSAI_DEFAULT_PERMISSION", "NO_PERMISSIONS")
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_USERNAME", "admin")
    with hokusai_mlflow(tmp_path / "mlflow", "--backend-store-uri", backend) as url:
        keys = {"DATABASE_URL": database}
        # Replica 1 reads the secret from a file (HOKUSAI_MLFLOW_ASSERTION_SECRET empty: unset), replica 2
        # gets it as a value.
        first = GatewayProcess(
            url, tmp_path / "first", env={**keys, SECRET_ENV: "", SECRET_FILE_ENV: str(secret_file)}
        )
        try:
            second = GatewayProcess(url, tmp_path / "second", env=keys)
            try:
                yield Deployment(first, second, url, admin)
            finally:
                second.stop()
        finally:
            first.stop()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def api(replica: GatewayProcess, method: str, route: str, key: str, **kwargs: Any) -> requests.Response:
    return requests.request(
        method, f"{replica.url}/mlflow/api/{route}", headers=bearer(key), timeout=10, **kwargs
    )


def test_replicas_agree_on_permissions_at_once(deployment: Deployment) -> None:
    first, second, admin = deployment.first, deployment.second, deployment.admin
    made = {
        owner: requests.post(
            first.url + "/api/v1/keys",
            json={"name": owner, "owner": owner},
            headers=bearer(admin),
            timeout=10,
        ).json()["key"]
        for owner in ("alice", "bob")
    }
    alice, bob = made["alice"], made["bob"]
    # Admin-scope keys act as MLflow's administrator through either replica, whatever the environment said.
    for replica in (first, second):
        me = api(replica, "GET", "2.0/mlflow/users/current", admin).json()["user"]
        assert (me["username"], me["is_admin"]) == ("hokusai:admin", True)

    created = api(first, "POST", "2.0/mlflow/experiments/create", alice, json={"name": "alice-exp"})
    experiment_id = created.json()["experiment_id"]
    get = f"2.0/mlflow/experiments/get?experiment_id={experiment_id}"
    assert api(second, "GET", get, alice).status_code == 200  # the creator's MANAGE, on the other replica
    refused = api(second, "GET", get, bob)
    assert refused.status_code == 403 and refused.json()["error_code"] == "PERMISSION_DENIED"

    # Granted through replica 1: replica 2 lets bob read at once, and still not write.
    grant = {"username": "bob", "resource_type": "experiment", "resource_id": experiment_id}
    granted = api(
        first, "POST", "3.0/mlflow/users/permissions/grant", admin, json={**grant, "permission": "READ"}
    )
    assert granted.status_code == 200, granted.text
    assert api(second, "GET", get, bob).json()["experiment"]["name"] == "alice-exp"
    run = {"experiment_id": experiment_id}
    assert api(second, "POST", "2.0/mlflow/runs/create", bob, json=run).status_code == 403
    listed = api(second, "GET", "2.0/mlflow/experiments/search?max_results=100", bob).json()
    assert [found["name"] for found in listed.get("experiments", [])] == ["alice-exp"]

    # Revoked through replica 2: replica 1 refuses bob at once.
    revoked = api(second, "POST", "3.0/mlflow/users/permissions/revoke", admin, json=grant)
    assert revoked.status_code == 200, revoked.text
    assert api(first, "GET", get, bob).status_code == 403

    # MLflow itself: nothing unsigned, nothing signed with another secret (the suite's file): the value won.
    direct = deployment.mlflow_url + "/api/2.0/mlflow/experiments/search?max_results=1"
    assert requests.get(direct, timeout=10).status_code == 401
    other = signed("GET", "/api/2.0/mlflow/experiments/search?max_results=1")
    assert requests.get(direct, headers=other, timeout=10).status_code == 401
