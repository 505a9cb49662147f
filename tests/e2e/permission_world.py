"""Owners, teams and the objects the permission tests attack (tests/e2e/test_permissions.py).

Users, roles (teams) and grants are made with MLflow's own permission client through the gateway with an
admin-scope key, not with the gateway's commands; an owner's objects with the MLflow client and the
owner's key. `snapshot` is what an owner reads back (artifact bytes as sha256) to show that an attack
changed nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pytest
import requests
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.server import get_app_client
from mlflow.server.auth.client import AuthServiceClient

from hokusai_registry.store.key_store import ADMIN_SCOPES, DEFAULT_SCOPES
from tests.helpers import GatewayProcess, key_store
from tests.support.polling import eventually

# Every request an attack makes, and every attack as a whole, is answered within this.
TIMEOUT_S = 10.0
REFUSED = (403, "PERMISSION_DENIED")
MOUNT = "/mlflow"
API = "/api/2.0/mlflow"
# The MLflow client fails at once instead of retrying a refusal; traces are written before it returns.
CLIENT_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": str(int(TIMEOUT_S)),
    "MLFLOW_ENABLE_ASYNC_TRACE_LOGGING": "false",
}


@dataclass(frozen=True)
class Owner:
    """A key's owner: the MLflow user its requests act as."""

    user: str
    key: str
    gateway: str  # the gateway's URL

    @property
    def tracking_uri(self) -> str:
        return self.gateway + MOUNT

    def request(self, method: str, target: str, *, mount: str = MOUNT, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.key}", **kwargs.pop("headers", {})}
        return requests.request(
            method, self.gateway + mount + target, headers=headers, timeout=TIMEOUT_S, **kwargs
        )

    def json(self, method: str, target: str, **kwargs: Any) -> dict[str, Any]:
        response = self.request(method, target, **kwargs)
        assert response.status_code == 200, f"{self.user}: {method} {target}: {response.text[:300]}"
        answer: dict[str, Any] = response.json()
        return answer


def make_owner(gateway: GatewayProcess, user: str, *, admin: bool = False) -> Owner:
    store = key_store(gateway.data_dir)
    try:
        scopes = ADMIN_SCOPES if admin else DEFAULT_SCOPES
        _, key = store.create(f"{user}-key", environment="live", scopes=scopes, owner=user)
    finally:
        store.close()
    return Owner(user, key, gateway.url)


@dataclass(frozen=True)
class Session:
    mlflow: MlflowClient
    permissions: AuthServiceClient  # MLflow's permission client (`get_app_client("basic-auth")`)


@contextlib.contextmanager
def acting_as(owner: Owner) -> Iterator[Session]:
    """The unmodified MLflow clients as `owner`, through the gateway: the key is MLflow's token."""
    with pytest.MonkeyPatch.context() as env:
        for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
            env.delenv(name, raising=False)
        env.setenv("MLFLOW_TRACKING_TOKEN", owner.key)
        for name, value in CLIENT_ENV.items():
            env.setenv(name, value)
        mlflow.set_tracking_uri(owner.tracking_uri)
        try:
            permissions = get_app_client("basic-auth", tracking_uri=owner.tracking_uri)
            assert isinstance(permissions, AuthServiceClient)
            yield Session(MlflowClient(owner.tracking_uri, owner.tracking_uri), permissions)
        finally:
            mlflow.set_tracking_uri(None)  # type: ignore[arg-type]  # None is MLflow's default


def make_teams(admin: Owner, teams: dict[str, list[Owner]]) -> dict[str, int]:
    """MLflow users for every member and one MLflow role per team, as an administrator makes them with
    MLflow's permission client; returns the role ids."""
    ids = {}
    with acting_as(admin) as session:
        client = session.permissions
        for member in {owner.user for members in teams.values() for owner in members}:
            # Nobody signs in with it: the gateway authenticates, MLflow only needs one.
            client.create_user(member, secrets.token_urlsafe(24))
        for team, members in teams.items():
            role = client.create_role("default", team, description=f"team {team}")
            for owner in members:
                client.assign_role(owner.user, role.id)
            ids[team] = role.id
    return ids


@dataclass(frozen=True)
class Objects:
    """What one owner made: an experiment with a run (metrics, params, artifacts under `model/`), a
    registered model with two versions and `prod` on the first, a trace, a logged model and a prompt."""

    experiment_id: str
    experiment: str
    run_id: str
    run_name: str
    artifact_root: str  # the run's artifacts under mlflow-artifacts/artifacts/
    weights_sha256: str
    model: str
    versions: tuple[str, str]
    trace_id: str
    logged_model_id: str
    prompt: str


def create_objects(owner: Owner, workdir: Path) -> Objects:
    prefix = owner.user
    model_dir = workdir / prefix / "model"
    model_dir.mkdir(parents=True)
    weights = secrets.token_bytes(64 * 1024)
    (model_dir / "weights").write_bytes(weights)
    (model_dir / "MLmodel").write_text("artifact_path: model\nflavors: {}\n")
    with acting_as(owner) as session:
        client = session.mlflow
        experiment_id = client.create_experiment(f"{prefix}-experiment")
        run = client.create_run(experiment_id, run_name=f"{prefix}-run")
        run_id = run.info.run_id
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric("accuracy", 0.91, now, 0)], params=[Param("alpha", "0.5")])
        client.log_artifacts(run_id, str(model_dir), "model")
        client.set_terminated(run_id)
        model = f"{prefix}-model"
        client.create_registered_model(model)
        source = f"{run.info.artifact_uri}/model"
        first, second = (str(client.create_model_version(model, source, run_id).version) for _ in range(2))
        client.set_registered_model_alias(model, "prod", first)
        span = client.start_trace(f"{prefix}-trace", experiment_id=experiment_id, inputs={"question": "q"})
        client.end_trace(span.trace_id, outputs={"answer": "a"})
        mlflow.flush_trace_async_logging()
        logged = client.create_logged_model(experiment_id, name=f"{prefix}-logged-model")
        prompt = f"{prefix}-prompt"
        client.register_prompt(prompt, "Hello {{name}}")
        client.set_prompt_alias(prompt, "prod", 1)
    objects = Objects(
        experiment_id=experiment_id,
        experiment=f"{prefix}-experiment",
        run_id=run_id,
        run_name=f"{prefix}-run",
        artifact_root=f"{experiment_id}/{run_id}/artifacts",
        weights_sha256=hashlib.sha256(weights).hexdigest(),
        model=model,
        versions=(first, second),
        trace_id=span.trace_id,
        logged_model_id=logged.model_id,
        prompt=prompt,
    )
    trace = f"/api/3.0/mlflow/traces/{objects.trace_id}"
    eventually(lambda: owner.request("GET", trace).status_code == 200, 30, 0.2, f"{trace} to be stored")
    return objects


def artifact_digests(owner: Owner, objects: Objects, path: str = "") -> dict[str, str]:
    """sha256 of every artifact of the run, by path, downloaded through the gateway."""
    listed = owner.json("GET", f"{API}/artifacts/list", params={"run_id": objects.run_id, "path": path})
    digests = {}
    for entry in listed.get("files", []):
        if entry.get("is_dir"):
            digests.update(artifact_digests(owner, objects, entry["path"]))
            continue
        target = f"/api/2.0/mlflow-artifacts/artifacts/{objects.artifact_root}/{entry['path']}"
        download = owner.request("GET", target)
        assert download.status_code == 200, download.text[:300]
        digests[entry["path"]] = hashlib.sha256(download.content).hexdigest()
    return digests


def snapshot(owner: Owner, objects: Objects) -> dict[str, Any]:
    """Everything of `objects` its owner can read back, as MLflow answers it."""
    run = owner.json("GET", f"{API}/runs/get", params={"run_id": objects.run_id})["run"]
    histories = {
        metric["key"]: owner.json(
            "GET",
            f"{API}/metrics/get-history",
            params={"run_id": objects.run_id, "metric_key": metric["key"]},
        )
        for metric in run["data"].get("metrics", [])
    }
    versions = {"filter": f"name='{objects.model}'"}
    prompt_versions = {"filter": f"name='{objects.prompt}'"}
    return {
        "experiment": owner.json(
            "GET", f"{API}/experiments/get", params={"experiment_id": objects.experiment_id}
        ),
        "run": run,
        "metric_histories": histories,
        "artifacts": artifact_digests(owner, objects),
        "model": owner.json("GET", f"{API}/registered-models/get", params={"name": objects.model}),
        "versions": owner.json("GET", f"{API}/model-versions/search", params=versions),
        "trace": owner.json("GET", f"/api/3.0/mlflow/traces/{objects.trace_id}"),
        "logged_model": owner.json("GET", f"{API}/logged-models/{objects.logged_model_id}"),
        "prompt": owner.json("GET", f"{API}/registered-models/get", params={"name": objects.prompt}),
        "prompt_versions": owner.json("GET", f"{API}/model-versions/search", params=prompt_versions),
    }


@dataclass
class Outcome:
    """One attack: what answered it and how long it took."""

    name: str
    status: int | None
    error_code: str | None
    seconds: float

    def line(self) -> str:
        return f"{self.name}: {self.status} {self.error_code} in {self.seconds:.2f} s"


def tried(name: str, attack: Callable[[], object]) -> Outcome:
    """Runs `attack` (an MLflow client call) and records the refusal it met, if any."""
    started = time.perf_counter()
    status: int | None = 200
    code: str | None = None
    try:
        attack()
    except MlflowException as refused:
        code = refused.error_code
        status = refused.get_http_status_code()  # type: ignore[no-untyped-call]
    except requests.HTTPError as refused:  # the artifact repository's uploads and deletes
        status = refused.response.status_code if refused.response is not None else None
        with contextlib.suppress(ValueError, AttributeError):
            code = refused.response.json().get("error_code")  # type: ignore[union-attr]
    return Outcome(name, status, code, time.perf_counter() - started)


def answered(name: str, response: requests.Response) -> Outcome:
    code = None
    with contextlib.suppress(ValueError):
        body = response.json()
        code = body.get("error_code") if isinstance(body, dict) else None
    return Outcome(name, response.status_code, code, response.elapsed.total_seconds())


def check_refused(outcomes: list[Outcome], expected: int) -> None:
    """Every attack ran, was refused with PERMISSION_DENIED, and was answered in time."""
    report = "\n".join(outcome.line() for outcome in outcomes)
    assert len(outcomes) == expected, report
    assert [o for o in outcomes if (o.status, o.error_code) != REFUSED] == [], report
    assert max(o.seconds for o in outcomes) < TIMEOUT_S, report


@dataclass(frozen=True)
class World:
    """Two owners in two teams and their objects, with two of alice's teammates and an administrator."""

    alice: Owner
    bob: Owner
    carol: Owner  # alice's teammate
    dave: Owner  # alice's teammate, to be denied her experiment
    admin: Owner  # an admin-scope key: MLflow's administrator
    team_a: str
    team_b: str
    teams: dict[str, int]  # MLflow role ids
    a: Objects  # alice's
    b: Objects  # bob's own, for the requests that name both


def build_world(gateway: GatewayProcess, workdir: Path) -> World:
    suffix = uuid.uuid4().hex[:6]  # the session MLflow is shared: names unique to this world
    admin = make_owner(gateway, f"ops-{suffix}", admin=True)
    alice, bob, carol, dave = (
        make_owner(gateway, f"{name}-{suffix}") for name in ("alice", "bob", "carol", "dave")
    )
    team_a, team_b = f"team-a-{suffix}", f"team-b-{suffix}"
    teams = make_teams(admin, {team_a: [alice, carol, dave], team_b: [bob]})
    a, b = create_objects(alice, workdir), create_objects(bob, workdir)
    return World(alice, bob, carol, dave, admin, team_a, team_b, teams, a, b)
