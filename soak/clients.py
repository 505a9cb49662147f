"""What one soak client does, and the worker process that runs many of them (importable, so worker
processes can be spawned)."""

from __future__ import annotations

import collections
import hashlib
import os
import random
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Weighted mix of what a client does next.
MIX = (("run_and_metrics", 40), ("search", 25), ("artifact", 20), ("register", 15))
GATEWAY_MARK = "Hokusai Registry gateway"


@dataclass
class Plan:
    clients: int
    processes: int
    seconds: float
    warmup: float
    min_mb: float
    max_mb: float


@dataclass
class Tally:
    """What one worker process did."""

    operations: collections.Counter[str] = field(default_factory=collections.Counter)
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    examples: list[str] = field(default_factory=list)
    artifacts_uploaded: int = 0
    artifacts_verified: int = 0
    artifact_bytes: int = 0


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def record_failure(tally: Tally, lock: threading.Lock, operation: str, exc: Exception) -> None:
    """Counts a failure under who caused it: the gateway marks every answer it makes itself."""
    text = f"{type(exc).__name__}: {exc}"
    cause = "gateway" if GATEWAY_MARK in text else "upstream"
    with lock:
        tally.errors[f"{cause}: {operation}"] += 1
        if len(tally.examples) < 20:
            tally.examples.append(f"{operation}: {text[:300]}")


class Client:
    """One simulated data scientist: an experiment of its own and the real MLflow client."""

    def __init__(self, name: str, plan: Plan, scratch: Path, tally: Tally, lock: threading.Lock) -> None:
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient()
        self.name = name
        self.plan = plan
        self.scratch = scratch
        self.tally = tally
        self.lock = lock
        self.random = random.Random(name)  # noqa: S311 - a workload mix, not a secret
        self.experiment_id = self.client.create_experiment(f"soak-{name}-{time.time_ns()}")
        self.run_id = self.client.create_run(self.experiment_id).info.run_id
        self.models = 0
        self.registered = False  # the registered model exists (its creation may fail and be retried)

    def step(self) -> None:
        operation = self.random.choices([name for name, _ in MIX], [weight for _, weight in MIX])[0]
        try:
            getattr(self, operation)()
        except Exception as exc:  # classed, counted, and the client carries on
            record_failure(self.tally, self.lock, operation, exc)
            return
        with self.lock:
            self.tally.operations[operation] += 1

    def run_and_metrics(self) -> None:
        from mlflow.entities import Metric, Param

        run_id = self.client.create_run(self.experiment_id).info.run_id
        now = int(time.time() * 1000)
        metrics = [Metric(f"m{index % 5}", self.random.random(), now, index) for index in range(100)]
        self.client.log_batch(run_id, metrics=metrics, params=[Param("client", self.name)])
        self.client.set_terminated(run_id)

    def search(self) -> None:
        self.client.search_runs([self.experiment_id], max_results=20)
        self.client.search_registered_models(max_results=10)

    def artifact(self) -> None:
        import mlflow

        size = int(self.random.uniform(self.plan.min_mb, self.plan.max_mb) * 2**20)
        name = f"blob-{time.time_ns()}.bin"
        source = self.scratch / name
        with source.open("wb") as sink:
            left = size
            while left:
                block = os.urandom(min(left, 1 << 20))
                sink.write(block)
                left -= len(block)
        sent = _sha256(source)
        self.client.log_artifact(self.run_id, str(source))
        source.unlink()
        with self.lock:
            self.tally.artifacts_uploaded += 1
            self.tally.artifact_bytes += size
        back = Path(
            mlflow.artifacts.download_artifacts(
                run_id=self.run_id, artifact_path=name, dst_path=str(self.scratch / "down")
            )
        )
        matches = _sha256(back) == sent
        back.unlink()
        if not matches:
            raise RuntimeError(f"{name} came back different ({size} bytes)")
        with self.lock:
            self.tally.artifacts_verified += 1

    def register(self) -> None:
        import mlflow
        import numpy as np
        from sklearn.linear_model import LogisticRegression  # type: ignore[import-untyped]

        self.models += 1
        saved = self.scratch / f"model-{self.models}"
        model = LogisticRegression().fit(np.array([[0.0], [1.0]]), [0, 1])
        mlflow.sklearn.save_model(model, str(saved), pip_requirements=["scikit-learn"])
        self.client.log_artifacts(self.run_id, str(saved), f"model-{self.models}")
        name = f"soak-{self.name}"
        if not self.registered:
            self.client.create_registered_model(name)
            self.registered = True
        self.client.create_model_version(
            name, f"runs:/{self.run_id}/model-{self.models}", run_id=self.run_id, await_creation_for=0
        )
        for path in sorted(saved.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
        saved.rmdir()


def worker(index: int, plan: Plan, clients: int, tracking_uri: str, key: str, results: Any) -> None:
    """One process with `clients` threads; puts its Tally (as a dict) on `results`."""
    os.environ.update(
        MLFLOW_TRACKING_URI=tracking_uri,
        MLFLOW_TRACKING_TOKEN=key,
        MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",  # every failure counts; the client would hide it by retrying
        MLFLOW_HTTP_REQUEST_TIMEOUT="300",
    )
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - the MLflow client prints a link per finished run
    tally = Tally()
    lock = threading.Lock()
    deadline = time.monotonic() + plan.seconds

    def loop(number: int) -> None:
        with tempfile.TemporaryDirectory(prefix="soak-") as scratch:
            client = None
            while client is None and time.monotonic() < deadline:
                try:
                    client = Client(f"p{index}c{number}", plan, Path(scratch), tally, lock)
                except Exception as exc:  # e.g. MLflow's database pool exhausted: counted, tried again
                    record_failure(tally, lock, "setup", exc)
                    time.sleep(1)
            while client is not None and time.monotonic() < deadline:
                client.step()

    threads = [threading.Thread(target=loop, args=(number,)) for number in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    results.put(
        {
            "operations": dict(tally.operations),
            "errors": dict(tally.errors),
            "examples": tally.examples,
            "uploaded": tally.artifacts_uploaded,
            "verified": tally.artifacts_verified,
            "bytes": tally.artifact_bytes,
        }
    )
