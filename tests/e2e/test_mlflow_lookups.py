"""What MLflow's auth app looks up per request, looked up less often (mlflow_app/lookups.py): against
MLflow's own auth store on SQLite in Flask request contexts, and through MLflow's whole Flask app with its
auth app (bench/permission_checks.py, in child processes: MLflow's modules keep one configuration per
process). In this folder because it imports Flask and MLflow."""

from __future__ import annotations

import inspect
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST
from mlflow.server.auth.sqlalchemy_store import SqlAlchemyStore

from bench.permission_checks import measure_in_child
from hokusai_registry.mlflow_app.lookups import (
    MEMOIZED,
    RunExperiments,
    TrackingStoreForAuth,
    keep_reads_per_request,
)

APP = Flask("mlflow-like")
WORKSPACE = "default"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[tuple[SqlAlchemyStore, Counter[str]]]:
    """MLflow's auth store with one user, its reads counted as they reach the database."""
    auth = SqlAlchemyStore()
    auth.init_db(f"sqlite:///{tmp_path / 'auth.db'}")  # type: ignore[no-untyped-call]
    auth.create_user("alice", "a-long-enough-password", is_admin=False)
    reached: Counter[str] = Counter()
    for name in MEMOIZED:
        read = getattr(auth, name)

        def counted(*args: Any, _read: Any = read, _name: str = name, **kwargs: Any) -> Any:
            reached[_name] += 1
            return _read(*args, **kwargs)

        setattr(auth, name, counted)
    keep_reads_per_request(auth)
    yield auth, reached
    auth.engine.dispose()


def test_mlflow_has_what_is_kept() -> None:
    from mlflow.server import auth

    for name in MEMOIZED:
        assert callable(getattr(SqlAlchemyStore, name, None)), f"MLflow's auth store has no {name}"
    assert callable(vars(auth).get("_get_tracking_store"))
    # Every run the auth app loads is read for its experiment only (what TrackingStoreForAuth keeps).
    source = inspect.getsource(auth).splitlines()
    uses = [number for number, line in enumerate(source) if re.search(r"\bget_run\b", line)]
    assert uses, "the auth app no longer loads runs: TrackingStoreForAuth has nothing to do"
    for number in uses:
        following = "\n".join(source[number : number + 4])
        assert "info.experiment_id" in following, following
        assert not re.search(r"\brun\.(data|inputs|outputs)\b|\brun\.info\.(?!experiment_id)", following), (
            following
        )


def test_a_request_asks_the_store_once_for_the_same_read(store: tuple[SqlAlchemyStore, Counter[str]]) -> None:
    auth, reached = store
    with APP.test_request_context("/api/2.0/mlflow/runs/search", method="POST"):
        first, second = auth.get_user("alice"), auth.get_user("alice")
        user_id = first.id
        grants = [auth.list_grants(user_id, WORKSPACE, {"experiment"}) for _ in range(3)]
    assert first.username == second.username == "alice"
    assert grants == [[], [], []]
    assert reached == {"get_user": 1, "list_grants": 1}
    with APP.test_request_context("/api/2.0/mlflow/runs/search", method="POST"):
        for _ in range(2):  # the same read asked by keyword: kept as well
            auth.list_grants(user_id=user_id, workspace=WORKSPACE, resource_types={"experiment"})
    assert reached == {"get_user": 1, "list_grants": 2}


def test_nothing_is_kept_across_requests_or_outside_one(store: tuple[SqlAlchemyStore, Counter[str]]) -> None:
    auth, reached = store
    with APP.test_request_context("/"):
        assert auth.get_user("alice").is_admin is False
    auth.update_user("alice", is_admin=True)  # between requests: the next one sees it
    with APP.test_request_context("/"):
        assert auth.get_user("alice").is_admin is True
    auth.get_user("alice")
    auth.get_user("alice")  # no request: each call reads
    assert reached["get_user"] == 4


def test_a_request_that_writes_reads_what_it_wrote(store: tuple[SqlAlchemyStore, Counter[str]]) -> None:
    auth, reached = store
    with APP.test_request_context("/api/3.0/mlflow/roles/create", method="POST"):
        user = auth.get_user("alice")
        assert auth.list_grants(user.id, WORKSPACE, {"experiment"}) == []
        role = auth.create_role("readers", WORKSPACE)
        auth.add_role_permission(role.id, "experiment", "*", "READ")
        auth.assign_role_to_user(user.id, role.id)
        grants = auth.list_grants(user.id, WORKSPACE, {"experiment"})
        auth.update_user("alice", is_admin=True)
        assert auth.get_user("alice").is_admin is True
    assert [(grant.resource_type, grant.resource_pattern, grant.permission) for grant in grants] == [
        ("experiment", "*", "READ")
    ]
    assert reached == {"get_user": 2, "list_grants": 2}


def test_a_list_handed_out_is_the_callers_own(store: tuple[SqlAlchemyStore, Counter[str]]) -> None:
    auth, _ = store
    with APP.test_request_context("/"):
        user_id = auth.get_user("alice").id
        handed: list[Any] = auth.list_grants(user_id, WORKSPACE, {"experiment"})
        handed.append("changed by a caller")
        assert auth.list_grants(user_id, WORKSPACE, {"experiment"}) == []


class Runs:
    """A tracking store's get_run as MLflow's answers it: a run, or RESOURCE_DOES_NOT_EXIST."""

    def __init__(self, experiments: dict[str, str]) -> None:
        self.experiments = experiments
        self.loaded: list[str] = []

    def get_run(self, run_id: str) -> Any:
        self.loaded.append(run_id)
        if run_id not in self.experiments:
            raise MlflowException(f"Run '{run_id}' not found", RESOURCE_DOES_NOT_EXIST)
        info = type("Info", (), {"experiment_id": self.experiments[run_id], "status": "RUNNING"})
        return type("Run", (), {"info": info})

    def get_experiment(self, experiment_id: str) -> str:
        return f"experiment {experiment_id}"


def test_a_run_is_loaded_once_for_its_experiment_and_a_missing_one_every_time() -> None:
    tracking = Runs({"r1": "7"})
    runs = RunExperiments()
    for _ in range(3):
        assert TrackingStoreForAuth(tracking, runs).get_run("r1").info.experiment_id == "7"
    for _ in range(2):
        with pytest.raises(MlflowException):
            TrackingStoreForAuth(tracking, runs).get_run("r2")
    tracking.experiments["r2"] = "8"  # created since
    assert TrackingStoreForAuth(tracking, runs).get_run("r2").info.experiment_id == "8"
    with pytest.raises(MlflowException):  # not a string: MLflow's own answer, every time
        TrackingStoreForAuth(tracking, runs).get_run(None)  # type: ignore[arg-type]
    assert tracking.loaded == ["r1", "r2", "r2", "r2", None]
    # What the auth app does not read of a kept run is not there to be read stale.
    with pytest.raises(AttributeError):
        _ = TrackingStoreForAuth(tracking, runs).get_run("r1").info.status
    assert TrackingStoreForAuth(tracking, runs).get_experiment("7") == "experiment 7"


def test_runs_kept_stay_within_the_limit_oldest_first() -> None:
    runs = RunExperiments(limit=2)
    for number in range(3):
        runs.remember(f"r{number}", str(number))
    assert [runs.get(f"r{number}") for number in range(3)] == [None, "1", "2"]


def test_mlflow_with_its_auth_app_looks_up_the_user_once_and_no_run_per_request(tmp_path: Path) -> None:
    off, on = measure_in_child("off", tmp_path / "off", 3), measure_in_child("on", tmp_path / "on", 3)
    assert set(on) == {
        "experiments/get|bench-owner",
        "runs/log-batch|bench-owner",
        "runs/search|bench-owner",
        "experiments/get|bench-reader",
        "runs/search|bench-reader",
    }
    for call, figures in on.items():
        # Before: 2 user lookups (4 for runs/search); log-batch loaded its run (19 statements, not 9).
        assert figures["get_user calls"] == 1, call
        assert figures["list_grants calls"] == 1, call
        assert figures["tracking db statements"] == off[call]["tracking db statements"], call
