"""The doctor's steps: prove, with the real MLflow client, that a data scientist can log, store and
register a model through the gateway; on any failure, gather evidence with plain HTTP and name the cause.

Each step creates what it needs under a unique name and the last one removes it all (unless --keep).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import logging
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from hokusai_registry.core.redaction import redact
from hokusai_registry.core.refusals import PRODUCT
from hokusai_registry.doctor.diagnosis import (
    Context,
    Diagnosis,
    acts_as_admin,
    artifact_location,
    auth_is_off,
    creator_lacks_manage,
    diagnose,
    keep_alive_stall,
    manage_refused,
    not_enforced,
    permissions_off,
)
from hokusai_registry.doctor.evidence import Answer, Http, connect, keep_alive_timings
from hokusai_registry.policy import keys
from hokusai_registry.policy.routes import MOUNTS

Status = Literal["pass", "fail", "warn", "skip"]
SMALL_BYTES = 64 * 1024
ARTIFACTS_PATH = "/api/2.0/mlflow-artifacts/artifacts"
CHUNK = 1 << 20
KEEP_ALIVE_SAMPLES = 8


@dataclass
class StepResult:
    name: str
    title: str
    status: Status = "pass"
    seconds: float = 0.0
    detail: str = ""
    diagnosis: Diagnosis | None = None
    evidence: list[str] = field(default_factory=list)


class StepFailed(Exception):
    """Ends a step as failed: what went wrong, and the diagnosis if already known."""

    def __init__(self, detail: str, diagnosis: Diagnosis | None = None, answer: Answer | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.diagnosis = diagnosis
        self.answer = answer


def gateway_root(url: str) -> str:
    """The gateway's root for any of the three tracking-URI styles (`/mlflow`, `/api/mlflow`, bare)."""
    url = url.rstrip("/")
    # Longest first: /api/mlflow also ends in /mlflow.
    for mount in sorted(MOUNTS, key=len, reverse=True):
        if url.endswith(mount):
            return url[: -len(mount)]
    return url


def parse_size(text: str) -> int:
    """`600MB`, `1GiB`, `512k`: bytes (decimal and binary units both accepted)."""
    units = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 10**6, "mb": 10**6, "mib": 1 << 20}
    units |= {"g": 10**9, "gb": 10**9, "gib": 1 << 30}
    number = text.strip().lower().rstrip("s")
    digits = number.rstrip("abcdefghijklmnopqrstuvwxyz ")
    unit = number[len(digits) :].strip()
    if not digits or unit not in units:
        raise ValueError(f"{text!r} is not a size; use e.g. 600MB or 1GiB")
    size = int(float(digits) * units[unit])
    if size <= 0:
        raise ValueError(f"{text!r} is not a size above zero")
    return size


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _write_random(path: Path, size: int) -> None:
    with path.open("wb") as sink:
        left = size
        while left:
            block = os.urandom(min(CHUNK, left))
            sink.write(block)
            left -= len(block)


@contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


@contextmanager
def client_environment(key: str | None, timeout: float) -> Iterator[list[str]]:
    """The MLflow client's variables for the doctor's own calls: the key as token, no retries, a timeout.
    Restored afterwards; yields warnings about what the user's own client would send instead."""
    names = (
        "MLFLOW_TRACKING_TOKEN",
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
        "MLFLOW_HTTP_REQUEST_TIMEOUT",
    )
    saved = {name: os.environ.get(name) for name in names}
    warnings = []
    credentials = Path.home() / ".mlflow" / "credentials"
    if saved["MLFLOW_TRACKING_USERNAME"] and saved["MLFLOW_TRACKING_PASSWORD"]:
        warnings.append(
            "MLFLOW_TRACKING_USERNAME/PASSWORD are set: the MLflow client sends them as Basic credentials "
            "instead of MLFLOW_TRACKING_TOKEN (the password must then be the key)"
        )
    elif credentials.exists() and "password" in credentials.read_text(errors="replace"):
        warnings.append(
            f"{credentials} holds a password: the MLflow client sends it as Basic credentials instead of "
            "MLFLOW_TRACKING_TOKEN (it must then be the key)"
        )
    try:
        for name in names:
            os.environ.pop(name, None)
        if key:
            os.environ["MLFLOW_TRACKING_TOKEN"] = key
            # Wins over a credentials file, and carries the same key.
            os.environ["MLFLOW_TRACKING_USERNAME"] = "hokusai-doctor"
            os.environ["MLFLOW_TRACKING_PASSWORD"] = key
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
        os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(int(max(timeout, 1)))
        yield warnings
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def from_client_error(exc: Exception) -> Answer | None:
    """The gateway's own refusals reach the MLflow client intact (MLflow JSON with a valid error code);
    those need no second request. Anything else is found out with the step's direct requests."""
    from mlflow.exceptions import RestException

    if not isinstance(exc, RestException) or PRODUCT not in exc.message:
        return None
    reason = exc.json.get("reason")
    return Answer(
        "MLflow client",
        "",
        exc.get_http_status_code(),  # type: ignore[no-untyped-call]
        from_gateway=True,
        content_type="application/json",
        error_code=exc.error_code,
        message=redact(
            exc.message.split(": ", 1)[-1] if exc.message.startswith(exc.error_code) else exc.message
        ),
        reason=reason if isinstance(reason, str) else None,
    )


class Doctor:
    def __init__(
        self,
        url: str,
        key: str | None,
        *,
        timeout: float = 30.0,
        large: int | None = None,
        keep: bool = False,
        progress: Callable[[int, int, StepResult, bool], None] | None = None,
    ) -> None:
        self.tracking_uri = url.rstrip("/")
        self.root = gateway_root(url)
        self.key = key
        self.large = large
        self.keep = keep
        self.http = Http(key, timeout)
        self.timeout = timeout
        self.progress = progress or (lambda *_: None)
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
        self.name = f"hokusai-doctor-{stamp}-{secrets.token_hex(3)}"
        self.health: dict[str, Any] | None = None
        self.versions: dict[str, str] = {}
        self.tracking_ok = False
        self.warnings: list[str] = []
        # What the steps created, for cleanup.
        self.experiment_id: str | None = None
        self.run_id: str | None = None
        self.model_name: str | None = None
        self.logged_model_id: str | None = None
        self.workdir = Path(tempfile.mkdtemp(prefix="hokusai-doctor-"))

    # -- running

    def run(self) -> list[StepResult]:
        steps: list[tuple[str, str, Callable[[StepResult], None]]] = [
            ("reach", "Gateway reachable", self.reach),
            ("auth", "Authentication", self.auth),
            ("permissions", "Permissions: enforced by MLflow, the owner manages its own", self.permissions),
            ("tracking", "Tracking: experiment, run, params, metrics", self.tracking),
            ("artifacts", "Artifacts: upload, list, download, sha256", self.artifacts),
        ]
        if self.large:
            steps.append(("large", f"Large artifact ({self.large / 1e6:.0f} MB)", self.large_artifact))
        steps.append(("registry", "Registry: log, register, READY, alias, load, predict", self.registry))
        steps.append(("cleanup", "Cleanup" if not self.keep else "Cleanup (skipped: --keep)", self.cleanup))
        results: list[StepResult] = []
        blocked: str | None = None
        with self._workdir(), client_environment(self.key, self.timeout) as warnings:
            self.warnings = warnings
            for index, (name, title, step) in enumerate(steps, 1):
                result = StepResult(name, title)
                if blocked and name != "cleanup":
                    result.status = "skip"
                    result.detail = f"skipped: {blocked}"
                else:
                    self.progress(index, len(steps), result, False)
                    self._run_step(step, result)
                    if result.status == "fail" and name in ("reach", "auth", "tracking", "artifacts"):
                        # Each later step needs this one (models are artifacts).
                        blocked = f"step {index} ({title}) failed"
                results.append(result)
                self.progress(index, len(steps), result, True)
        return results

    @contextmanager
    def _workdir(self) -> Iterator[None]:
        try:
            yield
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _run_step(self, step: Callable[[StepResult], None], result: StepResult) -> None:
        started = time.perf_counter()
        try:
            # The MLflow client prints run links and registration notes; the doctor reports instead.
            with (
                contextlib.redirect_stdout(io.StringIO()),
                contextlib.redirect_stderr(io.StringIO()),
                _quiet("mlflow"),
            ):
                step(result)
        except StepFailed as failure:
            result.status = "fail"
            result.detail = redact(failure.detail)
            result.diagnosis = failure.diagnosis
            if failure.answer is not None:
                result.evidence.append(failure.answer.summary())
                if result.diagnosis is None:
                    result.diagnosis = diagnose(failure.answer, self._context(result.name))
        except Exception as exc:  # the MLflow client's errors: find out why with plain HTTP
            result.status = "fail"
            result.detail = redact(f"{type(exc).__name__}: {str(exc)[:400]}")
            answer = from_client_error(exc) or self._evidence(result.name)
            if answer is not None:
                result.evidence.append(answer.summary())
                result.diagnosis = diagnose(answer, self._context(result.name))
            else:
                result.diagnosis = Diagnosis(
                    "the MLflow client failed, but the doctor's direct requests for this step succeed",
                    "run the gateway with MLFLOW_PROXY_DEBUG=true and find this step's requests in its log",
                )
        result.seconds = time.perf_counter() - started

    def _context(self, step: str, size: int = 0) -> Context:
        return Context(step, self.tracking_uri, self.tracking_ok, self.health, size)

    def _api(self, path: str) -> str:
        return f"{self.tracking_uri}/api/2.0/mlflow/{path}"

    def _artifact_url(self, name: str) -> str:
        run = f"{self.experiment_id}/{self.run_id}/artifacts"
        return f"{self.tracking_uri}{ARTIFACTS_PATH}/{run}/{name}"

    def _client(self) -> Any:
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    # -- evidence: the step's essential request made directly, when the client failed

    def _evidence(self, step: str) -> Answer | None:
        probes: list[Callable[[], Answer]] = []
        if step == "tracking":
            search = {"max_results": 1}
            probes.append(
                lambda: self.http.request("POST", self._api("experiments/search"), json_body=search)
            )
            probes.append(self._probe_experiment_create)
        elif step in ("artifacts", "large") and self.experiment_id and self.run_id:
            path = self.workdir / ("large.bin" if step == "large" else "small.bin")
            probes.append(lambda: self._probe_upload(path))
            probes.append(lambda: self.http.request("GET", self._artifact_url("").rstrip("/")))
        elif step == "registry":
            probes.append(lambda: self.http.request("GET", self._api("registered-models/search")))
            probes.append(self._probe_model_create)
        for probe in probes:
            answer = probe()
            if answer.network or (answer.status or 0) >= 400:
                return answer
        return None

    def _probe_experiment_create(self) -> Answer:
        answer = self.http.request(
            "POST", self._api("experiments/create"), json_body={"name": self.name + "-probe"}
        )
        if answer.status == 200 and answer.data:
            self.http.request(
                "POST",
                self._api("experiments/delete"),
                json_body={"experiment_id": answer.data["experiment_id"]},
            )
        return answer

    def _probe_model_create(self) -> Answer:
        name = self.name + "-probe"
        answer = self.http.request("POST", self._api("registered-models/create"), json_body={"name": name})
        if answer.status == 200:
            self.http.request("DELETE", self._api("registered-models/delete"), json_body={"name": name})
        return answer

    def _probe_upload(self, path: Path) -> Answer:
        if not path.exists():
            _write_random(path, SMALL_BYTES)
        with path.open("rb") as body:
            return self.http.request(
                "PUT", self._artifact_url("doctor-probe.bin"), data=body, timeout=max(self.timeout, 600)
            )

    # -- the steps

    def reach(self, result: StepResult) -> None:
        connection = connect(self.root, self.timeout)
        if connection.stage != "ok":
            layer = {"dns": "DNS", "tcp": "TCP", "tls": "TLS"}[connection.stage]
            tls_hint = "a certificate problem: check its host name, chain and expiry"
            if "wrong version number" in connection.detail:
                tls_hint = "that port does not speak TLS: use http://, or put TLS in front of the gateway"
            raise StepFailed(
                f"{layer} failed: {connection.detail}",
                Diagnosis(
                    f"{layer} failed: {connection.detail}",
                    {
                        "DNS": "check the host name and its DNS record from this machine",
                        "TCP": "check that the gateway runs and listens there, and firewalls in between",
                        "TLS": tls_hint,
                    }[layer],
                ),
            )
        live = self.http.request("GET", self.root + "/health", key=None)
        if live.status != 200:
            raise StepFailed(f"/health answered {live.status}", answer=live)
        if not live.from_gateway:
            result.status = "warn"
            self.warnings.append(
                f"{self.root}/health is not answered by a Hokusai gateway (no X-Hokusai-Origin)"
            )
        facts = [connection.detail + (f" ({connection.tls_version})" if connection.tls_version else "")]
        timings = keep_alive_timings(self.root + "/health", KEEP_ALIVE_SAMPLES, self.timeout)
        if timings is not None:
            stall = keep_alive_stall(timings, self.root, from_gateway=live.from_gateway)
            if stall is not None:
                result.status = "warn"
                result.diagnosis = stall
                result.evidence.append(
                    f"GET /health, ms: kept-alive {[round(ms) for ms in timings.kept_ms]}, "
                    f"new connections {[round(ms) for ms in timings.fresh_ms]}"
                )
        detailed = self.http.request("GET", self.root + "/mlflow/health/mlflow/detailed")
        if detailed.data and "checks" in detailed.data:
            self.health = detailed.data
            self.versions = {
                "gateway": str(detailed.data.get("gateway_version")),
                "mlflow": str(detailed.data.get("mlflow_version")),
            }
            checks = detailed.data["checks"]
            facts.append(
                "MLflow checks: "
                + ", ".join(
                    f"{name} {c['status']} ({c['response_time_ms']:.0f} ms)" for name, c in checks.items()
                )
            )
            if detailed.data.get("status") != "healthy":
                result.status = "warn"
                bad = [f"{name}: {c['detail']}" for name, c in checks.items() if c["status"] != "ok"]
                result.evidence.append("detailed health: " + "; ".join(bad))
                if checks.get("artifacts", {}).get("status") == "disabled":
                    result.diagnosis = diagnose(
                        Answer(
                            "GET", "/api/2.0/mlflow-artifacts/artifacts", 503, body="--no-serve-artifacts"
                        ),
                        self._context("artifacts"),
                    )
        else:
            facts.append(f"detailed health not readable ({detailed.status}); continuing")
        result.detail = "; ".join(facts)

    def auth(self, result: StepResult) -> None:
        if not self.key:
            raise StepFailed(
                "no key given",
                Diagnosis(
                    "no API key to test with",
                    "pass --api-key, or set HOKUSAI_API_KEY or MLFLOW_TRACKING_TOKEN",
                ),
            )
        search = self.http.request("GET", self._api("experiments/search"), params={"max_results": "1"})
        if search.status != 200:
            raise StepFailed(f"experiments/search with the key answered {search.status}", answer=search)
        invalid = keys.generate("live").text
        refused = self.http.request(
            "GET", self._api("experiments/search"), key=invalid, params={"max_results": "1"}
        )
        if refused.status == 200:
            raise StepFailed("a key that does not exist was accepted", auth_is_off(refused), refused)
        if refused.status != 401:
            raise StepFailed(f"an invalid key got {refused.status}, expected 401", answer=refused)
        result.detail = "key accepted; an invalid key is refused with 401"
        if self.warnings:
            result.status = "warn"
            result.detail += "; " + "; ".join(self.warnings)

    def permissions(self, result: StepResult) -> None:
        """MLflow refuses what the gateway did not sign (the gateway's own `permissions` health check), and
        the key's owner gets MANAGE on an experiment it creates: it can rename and delete it."""
        if self.health is None:
            result.status = "warn"
            result.detail = "the gateway's detailed health could not be read; permissions not checked"
            return
        check = (self.health.get("checks") or {}).get("permissions")
        if not isinstance(check, dict):
            result.status = "warn"
            result.detail = permissions_off()
            return
        if check.get("status") != "ok":
            raise StepFailed(f"the gateway's permissions check: {check.get('detail')}", not_enforced(check))
        me = self.http.request("GET", self._api("users/current"))
        user = str(((me.data or {}).get("user") or {}).get("username") or "")
        if me.status != 200 or not user:
            raise StepFailed(f"users/current answered {me.status}", answer=me)
        facts = ["MLflow refuses requests the gateway did not sign"]
        if acts_as_admin(user):
            result.detail = "; ".join(
                [
                    *facts,
                    f"the key acts as MLflow's administrator ({user}), which sees and changes everything",
                ]
            )
            return
        created = self.http.request(
            "POST", self._api("experiments/create"), json_body={"name": self.name + "-permissions"}
        )
        if created.status != 200 or not created.data:
            if created.reason == "scope":
                result.status = "warn"
                result.detail = "; ".join([*facts, f"{user}'s key may not create (read scope): not checked"])
                return
            raise StepFailed(f"experiments/create answered {created.status}", answer=created)
        experiment_id = str(created.data["experiment_id"])
        try:
            self._owner_manages(user, experiment_id)
        except StepFailed:
            # The scratch experiment goes whatever the owner could not do (if the key may delete it at all).
            self.http.request(
                "POST", self._api("experiments/delete"), json_body={"experiment_id": experiment_id}
            )
            raise
        result.detail = "; ".join(
            [*facts, f"{user} holds MANAGE on experiment {experiment_id} it created: renamed and deleted it"]
        )

    def _owner_manages(self, user: str, experiment_id: str) -> None:
        listed = self.http.request("GET", f"{self.tracking_uri}/api/3.0/mlflow/users/current/permissions")
        if listed.status != 200 or listed.data is None:
            raise StepFailed(f"users/current/permissions answered {listed.status}", answer=listed)
        rows = listed.data.get("permissions") or []
        level = next(
            (
                str(row.get("permission"))
                for row in rows
                if isinstance(row, dict)
                and row.get("resource_type") == "experiment"
                and str(row.get("resource_pattern")) == experiment_id
            ),
            None,
        )
        if level != "MANAGE":
            raise StepFailed(
                f"{user} holds {level or 'nothing'} on its new experiment {experiment_id}",
                creator_lacks_manage(user, level, experiment_id),
            )
        renamed = self.http.request(
            "POST",
            self._api("experiments/update"),
            json_body={"experiment_id": experiment_id, "new_name": self.name + "-permissions-renamed"},
        )
        if renamed.status != 200:
            raise StepFailed(
                f"experiments/update answered {renamed.status}", manage_refused(user, "rename", renamed)
            )
        deleted = self.http.request(
            "POST", self._api("experiments/delete"), json_body={"experiment_id": experiment_id}
        )
        if deleted.status != 200:
            raise StepFailed(
                f"experiments/delete answered {deleted.status}", manage_refused(user, "delete", deleted)
            )

    def tracking(self, result: StepResult) -> None:
        from mlflow.entities import Metric, Param

        client = self._client()
        self.experiment_id = client.create_experiment(self.name)
        experiment = client.get_experiment(self.experiment_id)
        run = client.create_run(self.experiment_id, run_name="hokusai-doctor")
        self.run_id = run.info.run_id
        now = int(time.time() * 1000)
        client.log_batch(
            self.run_id,
            metrics=[Metric("doctor_metric", 0.5, now, step) for step in range(3)],
            params=[Param("doctor_param", "ok")],
        )
        stored = client.get_run(self.run_id)
        if stored.data.params.get("doctor_param") != "ok" or stored.data.metrics.get("doctor_metric") != 0.5:
            raise StepFailed("params or metrics did not read back as logged")
        self.tracking_ok = True
        wrong_location = artifact_location(experiment.artifact_location)
        if wrong_location is not None:
            raise StepFailed(f"artifact location {experiment.artifact_location}", wrong_location)
        result.detail = (
            f"experiment {self.experiment_id}, run {self.run_id}; artifacts at {experiment.artifact_location}"
        )

    def _round_trip(self, name: str, size: int) -> str:
        import mlflow

        source = self.workdir / name
        _write_random(source, size)
        client = self._client()
        client.log_artifact(self.run_id, str(source))
        listed = {entry.path: entry.file_size for entry in client.list_artifacts(self.run_id)}
        if listed.get(name) != size:
            raise StepFailed(f"{name} is listed as {listed.get(name)} bytes, uploaded {size}")
        target = self.workdir / "download"
        downloaded = Path(
            mlflow.artifacts.download_artifacts(
                run_id=self.run_id, artifact_path=name, dst_path=str(target), tracking_uri=self.tracking_uri
            )
        )
        sent, back = _sha256(source), _sha256(downloaded)
        downloaded.unlink()
        if sent != back:
            raise StepFailed(f"{name} came back different: sha256 {back[:16]}... instead of {sent[:16]}...")
        return sent

    def artifacts(self, result: StepResult) -> None:
        started = time.perf_counter()
        digest = self._round_trip("small.bin", SMALL_BYTES)
        elapsed = time.perf_counter() - started
        result.detail = f"64 KiB up, listed, down in {elapsed:.2f} s; sha256 {digest[:16]}... matches"

    def large_artifact(self, result: StepResult) -> None:
        size = self.large or 0
        started = time.perf_counter()
        try:
            digest = self._round_trip("large.bin", size)
        except StepFailed:
            raise
        except Exception as exc:
            answer = self._evidence("large")
            raise StepFailed(
                f"{type(exc).__name__}: {str(exc)[:300]}",
                diagnose(answer, self._context("large", size)) if answer else None,
                answer,
            ) from None
        elapsed = time.perf_counter() - started
        rate = 2 * size / elapsed / 1e6
        result.detail = (
            f"{size / 1e6:.0f} MB up and down in {elapsed:.1f} s ({rate:.0f} MB/s); "
            f"sha256 {digest[:16]}... matches"
        )

    def registry(self, result: StepResult) -> None:
        import mlflow
        import numpy as np
        import sklearn  # type: ignore[import-untyped]
        from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]

        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        features = np.array([[0.0], [1.0], [2.0], [3.0]])
        model = LogisticRegression().fit(features, [0, 0, 1, 1])
        with mlflow.start_run(run_id=self.run_id):
            # Stated requirements: inferring them starts a subprocess and takes seconds.
            info = mlflow.sklearn.log_model(
                model, name="model", pip_requirements=[f"scikit-learn=={sklearn.__version__}"]
            )
        self.logged_model_id = getattr(info, "model_id", None)
        self.model_name = self.name
        version = mlflow.register_model(info.model_uri, self.model_name, await_registration_for=0)
        client = self._client()
        deadline = time.monotonic() + 60
        while (status := client.get_model_version(self.model_name, version.version).status) != "READY":
            if status == "FAILED_REGISTRATION" or time.monotonic() > deadline:
                raise StepFailed(f"model version {version.version} is {status}, not READY")
            time.sleep(0.5)
        client.set_registered_model_alias(self.model_name, "doctor", version.version)
        loaded = mlflow.pyfunc.load_model(f"models:/{self.model_name}@doctor")
        predicted = list(loaded.predict(features))
        if predicted != list(model.predict(features)):
            raise StepFailed(f"the model loaded by alias predicts {predicted}, not what was logged")
        result.detail = (
            f"model {self.model_name} version {version.version} READY, alias 'doctor', predictions match"
        )

    def cleanup(self, result: StepResult) -> None:
        if self.keep:
            result.status = "skip"
            result.detail = (
                f"kept: experiment {self.experiment_id}, run {self.run_id}, model {self.model_name}"
            )
            return
        if not (self.model_name or self.logged_model_id or self.run_id or self.experiment_id):
            # Nothing to remove, and no client to import for it.
            result.detail = "removed nothing (nothing was created)"
            return
        client = self._client()
        removed = []
        if self.model_name:
            client.delete_registered_model(self.model_name)
            removed.append(f"model {self.model_name} (all versions)")
        if self.logged_model_id:
            client.delete_logged_model(self.logged_model_id)
        if self.run_id:
            client.delete_run(self.run_id)
            removed.append(f"run {self.run_id}")
        if self.experiment_id:
            client.delete_experiment(self.experiment_id)
            removed.append(f"experiment {self.experiment_id}")
        result.detail = "removed " + ", ".join(removed)
