"""Real MLflow calls and artifacts through every path, in the same interleaved rounds: MLflow direct (the
reference), nginx, the gateway with permissions off and on, and the peers (bench/peers.py)."""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from bench.load import RssSampler, Target, download, upload
from bench.model import (
    CALLS,
    LATENCY_CALL,
    PERMISSIONS_OFF_PATH,
    PERMISSIONS_ON_PATH,
    PERMISSIONS_READER_PATH,
    Plan,
    Results,
)
from bench.peers import Launch, launch_peers, ready_peers
from bench.rounds import rounds
from bench.stack import (
    PERMISSIONS_OFF,
    free_port,
    gateway,
    make_key,
    nginx_binary,
    nginx_config,
    running,
    say,
    start_mlflow,
    wait_http,
)
from hokusai_registry.run.mlflow_process import MlflowProcess
from hokusai_registry.settings import Settings

API = "/api/2.0/mlflow"
# runs/search asks for 10 of this many runs in one experiment.
SEARCHED_RUNS = 20


def post(url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
    """A set-up request that must succeed: a key, a secret or a permission gone wrong stops the run here
    rather than showing up as wrk's error counts."""
    response = requests.post(url, json=body, headers=headers or {}, timeout=30)
    if response.status_code != 200:
        raise RuntimeError(f"POST {url}: {response.status_code} {response.text[:300]}")
    answer: dict[str, Any] = response.json()
    return answer


@dataclass(frozen=True)
class Objects:
    """What the calls to one MLflow read and write: an experiment with SEARCHED_RUNS runs; log-batch
    writes to the first."""

    experiment: str
    run: str


def populate(base: str, headers: dict[str, str]) -> Objects:
    """Objects created through `base` by whoever `headers` authenticate (with permissions on, its creator
    gets MANAGE on the experiment)."""
    experiment = post(f"{base}{API}/experiments/create", {"name": f"bench-{time.time_ns()}"}, headers)
    experiment_id = experiment["experiment_id"]
    runs = [
        post(f"{base}{API}/runs/create", {"experiment_id": experiment_id}, headers)["run"]["info"]["run_id"]
        for _ in range(SEARCHED_RUNS)
    ]
    return Objects(experiment_id, runs[0])


@dataclass(frozen=True)
class Call:
    """One measured MLflow call: a GET, or a POST with a JSON body (sent from a wrk script)."""

    path: str
    body: dict[str, Any] | None = None
    writes: bool = False

    def target(self, base: str, headers: dict[str, str], script: Path) -> Target:
        """The call to `base` as `headers` authenticate, once answered 200 before it is measured."""
        url = base + self.path
        if self.body is None:
            response = requests.get(url, headers=headers, timeout=30)
            if response.status_code != 200:
                raise RuntimeError(f"GET {url}: {response.status_code} {response.text[:300]}")
            return Target(url, headers)
        post(url, self.body, headers)
        script.write_text(
            'wrk.method = "POST"\n'
            f"wrk.body = {json.dumps(json.dumps(self.body))}\n"
            'wrk.headers["Content-Type"] = "application/json"\n'
        )
        return Target(url, headers, script)


def calls(objects: Objects) -> dict[str, Call]:
    batch = {
        "run_id": objects.run,
        "metrics": [{"key": f"m{i}", "value": i * 0.5, "timestamp": 1, "step": 0} for i in range(10)],
    }
    search = {
        "experiment_ids": [objects.experiment],
        "filter": "attributes.status = 'RUNNING'",
        "max_results": 10,
    }
    return {
        "experiments/get": Call(f"{API}/experiments/get?experiment_id={objects.experiment}"),
        "runs/log-batch": Call(f"{API}/runs/log-batch", batch, writes=True),
        "runs/search": Call(f"{API}/runs/search", search),
    }


@dataclass(frozen=True)
class Route:
    """One path to an MLflow: where the calls go, as whom, on which objects; `writes`: whether this
    caller may write (the other owner, READ by default, may not)."""

    base: str
    headers: dict[str, str]
    objects: Objects
    writes: bool = True


def expect_enforcing(url: str, enforcing: bool, flag: str) -> None:
    """Refuse an MLflow URL of the wrong kind: with its auth app, MLflow refuses unsigned requests."""
    status = requests.get(f"{url}{API}/experiments/search?max_results=1", timeout=30).status_code
    if (status == 401) != enforcing:
        kind = "runs MLflow's auth app" if status == 401 else "answers unsigned requests"
        wanted = (
            "MLflow with the auth app (`hokusai-registry mlflow`, permissions on)"
            if enforcing
            else "MLflow without it (`HOKUSAI_PERMISSIONS=off hokusai-registry mlflow`)"
        )
        raise SystemExit(f"{flag} {url} {kind} ({status}); {flag} names {wanted}")


def real_mlflow(plan: Plan, results: Results, workdir: Path) -> None:
    """The calls to MLflows of one kind side by side: one without the auth app (direct, through nginx,
    through a gateway with permissions off), one with it behind a gateway with permissions on, and with
    `plan.peers` each peer in front of its own (nginx auth_basic in front of the direct one)."""
    own: list[MlflowProcess] = []
    with running(workdir) as processes:
        try:
            launches: dict[str, Launch] = {}
            if plan.mlflow_url:
                plain = plan.mlflow_url
                expect_enforcing(plain, False, "--mlflow-url")
            else:
                plain, process, _ = start_mlflow(workdir, "mlflow", permissions=False)
                own.append(process)
            if plan.peers and plan.mlflow_url:
                results.peer_skipped["all peers"] = (
                    "an MLflow URL was given (--mlflow-url); the peers are compared with the direct MLflow "
                    "bench starts beside them"
                )
            elif plan.peers:
                say("  starting the peers (MLflow's basic-auth, mlflow-oidc-auth, nginx auth_basic) ...")
                launches, results.peer_skipped = launch_peers(processes, workdir, plain)
            if plan.permissions_mlflow_url:
                enforcing = plan.permissions_mlflow_url
                expect_enforcing(enforcing, True, "--permissions-mlflow-url")
                secret = Settings.load().mlflow_assertion_secret_file
                if secret is None:
                    raise SystemExit(
                        "--permissions-mlflow-url needs HOKUSAI_MLFLOW_ASSERTION_SECRET_FILE: the file with "
                        "the secret that MLflow checks the gateway's assertions with"
                    )
            else:
                enforcing, process, settings = start_mlflow(workdir, "mlflow-permissions", permissions=True)
                own.append(process)
                secret = settings.assertion_secret_path
            data_dir = workdir / "gateway-mlflow"
            auth = {"Authorization": f"Bearer {make_key(data_dir)}"}
            gateway_url, gateway_process = gateway(
                processes, "gateway-mlflow", plain, data_dir, env=PERMISSIONS_OFF
            )
            permissions_dir = workdir / "gateway-permissions"
            owner = {"Authorization": f"Bearer {make_key(permissions_dir, 'bench-owner')}"}
            reader = {"Authorization": f"Bearer {make_key(permissions_dir, 'bench-reader')}"}
            permissions_url, _ = gateway(
                processes,
                "gateway-permissions",
                enforcing,
                permissions_dir,
                env={
                    "HOKUSAI_PERMISSIONS": "on",
                    "HOKUSAI_MLFLOW_ASSERTION_SECRET_FILE": str(secret.resolve()),
                },
            )
            wait_http(permissions_url + "/ready", timeout=60)  # MLflow enforces, and takes its signatures
            nginx_port = free_port()
            config = nginx_config(
                workdir, "nginx-mlflow", proxy_port=nginx_port, upstream_port=int(plain.rsplit(":", 1)[1])
            )
            processes.start("nginx-mlflow", [nginx_binary(), "-c", str(config)])
            nginx_url = f"http://127.0.0.1:{nginx_port}"
            wait_http(nginx_url + "/health")
            plain_objects = populate(plain, {})
            permitted = permissions_url + "/mlflow"
            owned = populate(permitted, owner)
            routes = {
                "direct": Route(plain, {}, plain_objects),
                "nginx": Route(nginx_url, {}, plain_objects),
                PERMISSIONS_OFF_PATH: Route(gateway_url + "/mlflow", auth, plain_objects),
                PERMISSIONS_ON_PATH: Route(permitted, owner, owned),
                PERMISSIONS_READER_PATH: Route(permitted, reader, owned, writes=False),
            }
            targets = {path: route_targets(route, workdir, path) for path, route in routes.items()}
            if launches:
                say("  waiting for the peers ...")
                for name, peer in ready_peers(launches, results.peer_skipped).items():
                    try:
                        routes[name] = Route(peer.base, peer.headers, populate(peer.base, peer.headers))
                        targets[name] = route_targets(routes[name], workdir, name)
                    except (RuntimeError, requests.RequestException) as refused:
                        routes.pop(name, None)
                        results.peer_skipped[name] = f"its calls failed: {refused}"
                        continue
                    results.peers[name] = peer.how
            measure_calls(plan, results, targets)
            artifacts(plan, results, workdir, routes, gateway_process.pid)
        finally:
            for process in own:
                process.stop()


def route_targets(route: Route, workdir: Path, path: str) -> dict[str, Target]:
    """The calls this route may make, each answered 200 once (a failure raises); POST bodies in wrk
    scripts named after the route."""
    targets: dict[str, Target] = {}
    for name, call in calls(route.objects).items():
        if call.writes and not route.writes:
            continue  # READ by default: the other owner may not write (403)
        slug = "".join(char if char.isalnum() else "-" for char in f"{name}-{path}")
        targets[name] = call.target(route.base, route.headers, workdir / f"{slug}.lua")
    return targets


def measure_calls(plan: Plan, results: Results, targets: dict[str, dict[str, Target]]) -> None:
    """Each call through every route that makes it (`targets`: route -> call -> target), at c=8, the
    routes in turn; then LATENCY_CALL at c=1."""
    for name in CALLS:
        say(f"  MLflow {name} ...")
        results.mlflow[name] = rounds(
            plan, {path: by_call[name] for path, by_call in targets.items() if name in by_call}, 8
        )
    say(f"  MLflow {LATENCY_CALL} on one connection ...")
    results.latency = rounds(plan, {path: by_call[LATENCY_CALL] for path, by_call in targets.items()}, 1)


def artifacts(
    plan: Plan, results: Results, workdir: Path, routes: dict[str, Route], gateway_pid: int
) -> None:
    """One streamed PUT and GET per route that may write, per run; the gateway's (permissions off) peak
    RSS sampled during its own."""
    size = plan.artifact_mb * 2**20
    blob = workdir / "blob.bin"
    say(f"  writing a {plan.artifact_mb} MiB test file ...")
    with blob.open("wb") as handle:
        for _ in range(plan.artifact_mb):
            handle.write(os.urandom(2**20))
    writers = {name: route for name, route in routes.items() if route.writes}
    speeds: dict[str, dict[str, list[float]]] = {name: {"PUT": [], "GET": []} for name in writers}
    peak = 0.0
    for attempt in range(plan.artifact_runs):
        for index, (name, route) in enumerate(writers.items()):
            if name not in speeds:
                continue  # a peer whose transfer failed
            say(f"  artifacts {plan.artifact_mb} MiB through {name}, run {attempt + 1} ...")
            objects = route.objects
            url = (
                f"{route.base}/api/2.0/mlflow-artifacts/artifacts/{objects.experiment}/{objects.run}"
                f"/artifacts/blob-{index}-{attempt}.bin"
            )
            sampled = name == PERMISSIONS_OFF_PATH
            try:
                with RssSampler(gateway_pid) if sampled else contextlib.nullcontext() as sampler:
                    speeds[name]["PUT"].append(upload(url, blob, route.headers))
                    speeds[name]["GET"].append(download(url, route.headers, size))
            except (RuntimeError, requests.RequestException) as failed:
                if name not in results.peers:
                    raise
                del speeds[name]
                results.peer_skipped[f"{name}, artifacts"] = f"the transfer failed: {failed}"
                continue
            if isinstance(sampler, RssSampler):
                peak = max(peak, sampler.peak_mb)
    results.artifacts = {
        name: {method: statistics.median(values) for method, values in by_method.items()}
        for name, by_method in speeds.items()
    }
    results.artifact_ranges = {
        name: {method: (min(values), max(values)) for method, values in by_method.items()}
        for name, by_method in speeds.items()
    }
    results.gateway_peak_rss_mb = peak
    blob.unlink()
