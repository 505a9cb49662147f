"""The upgrade path, live: a registry that ran with HOKUSAI_PERMISSIONS=off (MLflow and gateway, as before
permissions) where two owners made experiments, runs and models is restarted with permissions on over the
same backend store and `HOKUSAI_DEFAULT_PERMISSION=NO_PERMISSIONS`. Without a backfill the owners cannot see
their own things; `grants backfill` proposes MANAGE grants (EDIT on the Default experiment) from what the
registry knows (runs' owners, model versions' runs, the audit log) and changes nothing; `--apply` makes them,
after which each owner sees and edits their own things again (and still not the other's); a second `--apply`
changes nothing."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mlflow.exceptions import RestException
from mlflow.tracking import MlflowClient

from tests.helpers import HOKUSAI, GatewayProcess, hokusai_mlflow, key_store


@dataclass
class Deployment:
    gateway: GatewayProcess
    mlflow_url: str


@contextlib.contextmanager
def registry(data_dir: Path, gateway_dir: Path, **env: str) -> Iterator[Deployment]:
    """`hokusai-registry mlflow` and a gateway in front of it, both with `env` (as a deployment sets it)."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        with hokusai_mlflow(data_dir) as url:
            audit_log = str(gateway_dir / "audit.log")
            gateway = GatewayProcess(url, gateway_dir, env={"HOKUSAI_AUDIT_LOG": audit_log})
            try:
                yield Deployment(gateway, url)
            finally:
                gateway.stop()


def as_owner(deployment: Deployment, key: str, env: pytest.MonkeyPatch) -> MlflowClient:
    env.setenv("MLFLOW_TRACKING_TOKEN", key)
    uri = deployment.gateway.url + "/mlflow"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def backfill(deployment: Deployment, *args: str) -> dict[str, Any]:
    """`grants backfill --json` as an operator runs it where the gateway runs (its data directory and
    audit log), asking MLflow directly."""
    done = subprocess.run(
        [
            HOKUSAI,
            "grants",
            "backfill",
            "--json",
            "--mlflow-url",
            deployment.mlflow_url,
            "--data-dir",
            str(deployment.gateway.data_dir),
            "--audit-log",
            str(deployment.gateway.data_dir / "audit.log"),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={name: value for name, value in os.environ.items() if name != "MLFLOW_SERVER_URL"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def refused(call: Any) -> bool:
    try:
        call()
    except RestException as exc:
        return bool(exc.error_code == "PERMISSION_DENIED")
    return False


def test_an_upgrade_from_permissions_off_locks_nobody_out(
    tmp_path: Path, client_env: pytest.MonkeyPatch
) -> None:
    client_env.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    data_dir, gateway_dir = tmp_path / "mlflow", tmp_path / "gateway"
    gateway_dir.mkdir()
    store = key_store(gateway_dir)
    try:
        alice = store.create("alice", environment="live", scopes=("read", "write"))[1]
        bob = store.create("bob", environment="live", scopes=("read", "write"))[1]
    finally:
        store.close()

    # Before: permissions off (an older version, or HOKUSAI_PERMISSIONS=off).
    with registry(data_dir, gateway_dir, HOKUSAI_PERMISSIONS="false") as before:
        mine = as_owner(before, alice, client_env)
        experiment = mine.create_experiment("alice-exp")
        empty = mine.create_experiment("alice-empty")  # no runs: known from the audit log only
        run = mine.create_run(experiment).info.run_id
        mine.log_metric(run, "accuracy", 0.9)
        mine.create_registered_model("alice-model")
        mine.create_model_version("alice-model", f"runs:/{run}/model", run_id=run)
        theirs = as_owner(before, bob, client_env)
        bob_experiment = theirs.create_experiment("bob-exp")
        theirs.create_run(bob_experiment)
        in_default = theirs.create_run("0").info.run_id  # the Default experiment, which nobody created
        theirs.create_registered_model("bob-model")  # no versions: known from the audit log only

    # After: permissions on over the same backend store, teams isolated.
    with registry(data_dir, gateway_dir, HOKUSAI_DEFAULT_PERMISSION="NO_PERMISSIONS") as after:
        mine = as_owner(after, alice, client_env)
        assert refused(lambda: mine.get_experiment(experiment))
        assert refused(lambda: mine.get_registered_model("alice-model"))
        assert "alice-exp" not in {found.name for found in mine.search_experiments()}

        proposed = backfill(after)
        rows = {
            (row["owner"], row["resource_type"], row["resource_name"]): row for row in proposed["proposals"]
        }
        assert set(rows) == {
            ("alice", "experiment", "alice-exp"),
            ("alice", "experiment", "alice-empty"),
            ("alice", "registered_model", "alice-model"),
            ("bob", "experiment", "bob-exp"),
            ("bob", "experiment", "Default"),
            ("bob", "registered_model", "bob-model"),
        }, proposed
        levels = {name: row["permission"] for (_, _, name), row in rows.items()}
        assert levels.pop("Default") == "EDIT" and set(levels.values()) == {"MANAGE"}
        assert {row["status"] for row in rows.values()} == {"new"}
        assert rows["alice", "experiment", "alice-exp"]["evidence"] == ["audit: created it", "runs"]
        assert rows["alice", "experiment", "alice-empty"]["evidence"] == ["audit: created it"]
        assert "model versions (their runs)" in rows["alice", "registered_model", "alice-model"]["evidence"]
        assert rows["bob", "registered_model", "bob-model"]["evidence"] == ["audit: created it"]
        assert refused(lambda: mine.get_experiment(experiment))  # a proposal changes nothing

        applied = backfill(after, "--apply")
        assert applied["counts"] == {"new": 0, "applied": 6, "exists": 0, "skipped": 0, "failed": 0}

        # Each owner sees and edits their own things again, and still not the other's.
        mine = as_owner(after, alice, client_env)
        assert mine.get_experiment(experiment).name == "alice-exp"
        assert "alice-exp" in {found.name for found in mine.search_experiments()}
        mine.log_metric(run, "accuracy", 0.95)
        mine.rename_experiment(experiment, "alice-exp-v2")
        mine.delete_experiment(empty)  # MANAGE
        mine.create_model_version("alice-model", f"runs:/{run}/model", run_id=run)
        mine.set_registered_model_alias("alice-model", "prod", "2")
        assert refused(lambda: mine.get_experiment(bob_experiment))
        assert refused(lambda: mine.get_registered_model("bob-model"))
        theirs = as_owner(after, bob, client_env)
        theirs.update_registered_model("bob-model", description="still mine")
        theirs.log_metric(in_default, "loss", 0.1)  # EDIT on Default: still logging there
        assert refused(lambda: theirs.delete_experiment("0"))  # but it is nobody's to delete
        assert refused(lambda: theirs.get_experiment(experiment))

        again = backfill(after, "--apply")
        assert again["counts"] == {"new": 0, "applied": 0, "exists": 6, "skipped": 0, "failed": 0}

    grants = [
        json.loads(line)
        for line in (gateway_dir / "audit.log").read_text().splitlines()
        if '"grant.added"' in line
    ]
    assert len(grants) == 6
    assert {line["via"] for line in grants} == {"backfill"}
    assert all(line["actor"].startswith("cli:") for line in grants)
    assert sorted(line["permission"] for line in grants) == ["EDIT"] + ["MANAGE"] * 5
