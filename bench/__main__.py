"""`make bench`: the gateway against its references (direct upstream, nginx), measured in one run.

Every figure is the median of several runs taken in the same run as its reference, so the ratios
hold on whatever machine runs this. Writes docs/benchmarks.md and docs/benchmarks.png.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from bench import report
from bench.load import Rate, RssSampler, Target, download, median_rate, upload, wrk
from bench.model import (
    PERMISSIONS_OFF_PATH,
    PERMISSIONS_ON_PATH,
    PERMISSIONS_READER_PATH,
    Plan,
    Results,
)
from bench.stack import PERMISSIONS_OFF, free_port, gateway, make_key, nginx_config, running, wait_http
from bench.token_costs import token_costs
from hokusai_registry.auth.authenticator import Authenticator
from hokusai_registry.auth.local_keys import LocalKeys
from hokusai_registry.auth.rate_limits import RateLimits
from hokusai_registry.auth.throttle import Guard
from hokusai_registry.policy.assertions import EMPTY_BODY, sign, verify
from hokusai_registry.run.mlflow_process import (
    MlflowProcess,
    mlflow_command,
    mlflow_environment,
    wait_until_healthy,
)
from hokusai_registry.settings import Settings
from hokusai_registry.store.key_store import DEFAULT_SCOPES, KeyStore

ROOT = Path(__file__).resolve().parents[1]


def say(text: str) -> None:
    print(text, flush=True)


def ensure_tools() -> list[str]:
    """wrk and nginx from Debian's packages when missing (root only); returns what is still missing."""
    missing = [
        tool for tool in ("wrk", "nginx") if not shutil.which(tool) and not Path("/usr/sbin/nginx").exists()
    ]
    if missing and os.geteuid() == 0 and shutil.which("apt-get"):
        say(f"Installing {' and '.join(missing)} from Debian's packages (apt-get) ...")
        subprocess.run(["apt-get", "update", "-qq"], check=False, capture_output=True)
        packages = ["wrk" if tool == "wrk" else "nginx-light" for tool in missing]
        subprocess.run(["apt-get", "install", "-y", "-qq", *packages], check=False, capture_output=True)
    return [
        tool for tool in ("wrk", "nginx") if not (shutil.which(tool) or Path(f"/usr/sbin/{tool}").exists())
    ]


def machine() -> dict[str, str]:
    model = "unknown"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    import mlflow  # only to report its version

    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load": load_average(),
        "cores": str(os.cpu_count()),
        "cpu": model,
        "python": platform.python_version(),
        "mlflow": mlflow.__version__,
        "nginx": subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip().split("/")[-1]
        if shutil.which("nginx") or Path("/usr/sbin/nginx").exists()
        else "-",
    }


def load_average() -> str:
    """The 1, 5 and 15 minute load averages: on a shared machine, what else ran beside the benchmark."""
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def rounds(
    plan: Plan, targets: dict[str, Target], connections: int, headers: dict[str, str] | None = None
) -> dict[str, Rate]:
    """Median of `plan.runs` runs per target, taking the targets in turn so drift hits all alike;
    `headers` are added to every target's own."""
    samples: dict[str, list[Rate]] = {name: [] for name in targets}
    for _ in range(plan.runs):
        for name, target in targets.items():
            samples[name].append(wrk(target, connections, plan.seconds, headers))
    return {name: median_rate(rates) for name, rates in samples.items()}


def nginx_binary() -> str:
    return shutil.which("nginx") or "/usr/sbin/nginx"


def small_requests(plan: Plan, results: Results, workdir: Path) -> None:
    with running(workdir) as processes:
        stub_port, proxy_port = free_port(), free_port()
        config = nginx_config(
            workdir, "nginx-stub", proxy_port=proxy_port, upstream_port=stub_port, stub_port=stub_port
        )
        processes.start("nginx-stub", [nginx_binary(), "-c", str(config)])
        stub = f"http://127.0.0.1:{stub_port}"
        wait_http(stub + "/")
        data_dir = workdir / "gateway-small"
        key = make_key(data_dir)
        one, _ = gateway(processes, "gateway-1", stub, data_dir, workers=1)
        two, _ = gateway(processes, "gateway-2", stub, data_dir, workers=2)
        path = "/api/2.0/mlflow/experiments/get?experiment_id=1"
        auth = {"Authorization": f"Bearer {key}"}
        targets = {
            "direct": Target(stub + path),
            "nginx": Target(f"http://127.0.0.1:{proxy_port}" + path),
            "gateway": Target(one + path, auth),
        }
        for connections in (1, 32):
            say(f"  small requests, {connections} connection(s) ...")
            for name, rate in rounds(plan, targets, connections).items():
                results.small.setdefault(name, {})[connections] = rate
        say("  gateway workers ...")
        workers = rounds(plan, {"1": Target(one + path, auth), "2": Target(two + path, auth)}, 32)
        results.workers = {int(name): rate for name, rate in workers.items()}


def start_mlflow(
    workdir: Path, name: str, *, permissions: bool, workers: int | None = None
) -> tuple[str, MlflowProcess, Settings]:
    """MLflow started the way `serve` starts it (`workers` overrides HOKUSAI_MLFLOW_WORKERS), with its
    auth app (permissions on: READ by default, signed requests only) or without."""
    settings = Settings.load(
        data_dir=workdir / name,
        permissions=permissions,
        default_permission="READ",
        **({} if workers is None else {"mlflow_workers": workers}),
    )
    port = free_port()
    command = mlflow_command(settings, port)
    process = MlflowProcess(
        command, workdir / f"{name}.log", "127.0.0.1", port, env=mlflow_environment(settings)
    )
    process.start()
    say(f"  starting {name} (15-30 s) ...")
    asyncio.run(wait_until_healthy(process, 300))
    return process.url, process, settings


# On an MLflow's PYTHONPATH: uvicorn binds its listener as uvicorn <= 0.54 did (no IPPROTO_TCP).
LEGACY_LISTENER = ROOT / "tests" / "support" / "legacy_listener"


def keepalive(plan: Plan, results: Results, workdir: Path) -> None:
    """experiments/get on one connection, kept alive or fresh for every request (`Connection: close`),
    direct and through the gateway, to MLflows side by side so drift hits all alike: the product's with
    one and with two workers, and one started by someone else that leaves Nagle's algorithm on (two
    workers, uvicorn's listener as in <= 0.54, the asyncio loop)."""
    own: list[MlflowProcess] = []
    with running(workdir) as processes:
        try:
            upstreams: dict[str, str] = {}
            for workers in (1, 2):
                url, process, _ = start_mlflow(
                    workdir, f"mlflow-{workers}-worker", permissions=False, workers=workers
                )
                upstreams[f"{workers} worker{'s' if workers > 1 else ''}"] = url
                own.append(process)
            port = free_port()
            nagle = Settings.load(data_dir=workdir / "mlflow-nagle", mlflow_workers=2, permissions=False)
            command = mlflow_command(nagle, port)
            if "--uvicorn-opts" in command:  # the product's choice of loop, replaced
                at = command.index("--uvicorn-opts")
                del command[at : at + 2]
            say("  starting an MLflow with Nagle's algorithm on (15-30 s) ...")
            legacy = f"http://127.0.0.1:{port}"
            pythonpath = os.pathsep.join([str(LEGACY_LISTENER), os.environ.get("PYTHONPATH", "")])
            processes.start(
                "mlflow-nagle", [*command, "--uvicorn-opts", "--loop asyncio"], {"PYTHONPATH": pythonpath}
            )
            wait_http(legacy + "/health", timeout=300)
            upstreams["2 workers, Nagle on (not the product's)"] = legacy
            data_dir = workdir / "gateway-keepalive"
            key = make_key(data_dir)
            api = "/api/2.0/mlflow"
            auth = {"Authorization": f"Bearer {key}"}
            targets: dict[str, Target] = {}
            for label, url in upstreams.items():
                experiment = post(f"{url}{api}/experiments/create", {"name": f"bench-{time.time_ns()}"})
                path = f"{api}/experiments/get?experiment_id={experiment['experiment_id']}"
                gateway_url, _ = gateway(
                    processes, f"gateway-{len(targets)}", url, data_dir, env=PERMISSIONS_OFF
                )
                targets[f"{label}|direct"] = Target(url + path)
                targets[f"{label}|gateway"] = Target(gateway_url + "/mlflow" + path, auth)
            say("  kept-alive connections to MLflow ...")
            kept = rounds(plan, targets, 1)
            say("  fresh connections to MLflow ...")
            fresh = rounds(plan, targets, 1, {"Connection": "close"})
            for name in targets:
                label, path = name.split("|")
                results.keepalive.setdefault(label, {})[f"{path} kept-alive"] = kept[name]
                results.keepalive[label][f"{path} fresh"] = fresh[name]
        finally:
            for process in own:
                process.stop()


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
    """The calls to two MLflows of one kind side by side: one without the auth app (direct, through nginx,
    through a gateway with permissions off) and one with it, behind a gateway with permissions on."""
    own: list[MlflowProcess] = []
    with running(workdir) as processes:
        try:
            if plan.mlflow_url:
                plain = plan.mlflow_url
                expect_enforcing(plain, False, "--mlflow-url")
            else:
                plain, process, _ = start_mlflow(workdir, "mlflow", permissions=False)
                own.append(process)
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
            references = {
                "direct": (plain, {}),
                "nginx": (nginx_url, {}),
                PERMISSIONS_OFF_PATH: (gateway_url + "/mlflow", auth),
            }
            permitted = {
                PERMISSIONS_ON_PATH: (permissions_url + "/mlflow", owner),
                PERMISSIONS_READER_PATH: (permissions_url + "/mlflow", reader),
            }
            plain_objects = populate(plain, {})
            owned = calls(populate(permissions_url + "/mlflow", owner))
            for name, call in calls(plain_objects).items():
                targets = {
                    path: call.target(base, headers, workdir / f"{name.replace('/', '-')}-{index}.lua")
                    for index, (path, (base, headers)) in enumerate(references.items())
                }
                for index, (path, (base, headers)) in enumerate(permitted.items()):
                    if path == PERMISSIONS_READER_PATH and call.writes:
                        continue  # READ by default: the other owner may not write (403)
                    script = workdir / f"{name.replace('/', '-')}-on-{index}.lua"
                    targets[path] = owned[name].target(base, headers, script)
                say(f"  MLflow {name} ...")
                results.mlflow[name] = rounds(plan, targets, 8)
            artifacts(plan, results, workdir, references, gateway_process.pid, plain_objects)
        finally:
            for process in own:
                process.stop()


def artifacts(
    plan: Plan,
    results: Results,
    workdir: Path,
    references: dict[str, tuple[str, dict[str, str]]],
    gateway_pid: int,
    objects: Objects,
) -> None:
    size = plan.artifact_mb * 2**20
    blob = workdir / "blob.bin"
    say(f"  writing a {plan.artifact_mb} MiB test file ...")
    with blob.open("wb") as handle:
        for _ in range(plan.artifact_mb):
            handle.write(os.urandom(2**20))
    base = f"/api/2.0/mlflow-artifacts/artifacts/{objects.experiment}/{objects.run}/artifacts"
    speeds: dict[str, dict[str, list[float]]] = {name: {"PUT": [], "GET": []} for name in references}
    peak = 0.0
    for attempt in range(plan.artifact_runs):
        for name, (prefix, headers) in references.items():
            say(f"  artifacts {plan.artifact_mb} MiB through {name}, run {attempt + 1} ...")
            url = f"{prefix}{base}/blob-{name}-{attempt}.bin"
            with RssSampler(gateway_pid) as sampler:
                speeds[name]["PUT"].append(upload(url, blob, headers))
                speeds[name]["GET"].append(download(url, headers, size))
            if name == PERMISSIONS_OFF_PATH:
                peak = max(peak, sampler.peak_mb)
    results.artifacts = {
        name: {method: statistics.median(values) for method, values in by_method.items()}
        for name, by_method in speeds.items()
    }
    results.gateway_peak_rss_mb = peak
    blob.unlink()


def auth_costs(results: Results, workdir: Path, iterations: int) -> None:
    """One cached and one uncached key check, in-process (µs per check)."""
    store = KeyStore(f"sqlite:///{workdir / 'auth-keys.db'}")
    store.migrate()
    _, key = store.create("bench", environment="test", scopes=DEFAULT_SCOPES)

    async def measure(ttl: float, count: int, per_minute: int = 0) -> float:
        """µs per check; with `per_minute`, the whole per-request path: failure throttle, key check and
        a per-key rate limit counted in memory."""
        authenticator = Authenticator(
            LocalKeys(store, poll_interval=3600, last_used_interval=3600), cache_ttl=ttl
        )
        guard = Guard(
            RateLimits(per_minute=per_minute, per_hour=0, auth_failures_per_minute=30, redis_url=None)
        )
        await authenticator.start()
        await authenticator.authenticate(key)
        started = time.perf_counter()
        for _ in range(count):
            identity = await guard.authenticate(authenticator, key, "127.0.0.1")
            if per_minute:
                await guard.rate_limits.check_key(identity)
        elapsed = time.perf_counter() - started
        await authenticator.stop()
        return elapsed / count * 1e6

    # A TTL of zero makes every check a miss: a key-store lookup in a worker thread.
    results.auth_us = {
        "cached": asyncio.run(measure(3600, iterations)),
        "cached_rate_limited": asyncio.run(measure(3600, iterations, per_minute=10**9)),
        "uncached": asyncio.run(measure(0, max(200, iterations // 100))),
        **assertion_costs(iterations),
        **token_costs(workdir, max(200, iterations // 20)),
    }
    store.close()


def assertion_costs(iterations: int) -> dict[str, float]:
    """µs to sign a request's assertion (the gateway, permissions on) and to verify it (MLflow)."""
    secret, path, query = os.urandom(32), f"{API}/experiments/get", "experiment_id=1"
    started = time.perf_counter()
    for index in range(iterations):
        sign(
            secret, "bench-owner", "GET", path, query, now=time.time(), nonce=f"{index:018x}", body=EMPTY_BODY
        )
    signed = time.perf_counter() - started
    value = sign(
        secret, "bench-owner", "GET", path, query, now=time.time(), nonce="0" * 18, body=EMPTY_BODY
    ).decode()
    started = time.perf_counter()
    for _ in range(iterations):
        verify(secret, value, "GET", path, query, now=time.time())
    verified = time.perf_counter() - started
    return {"assertion_sign": signed / iterations * 1e6, "assertion_verify": verified / iterations * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(prog="make bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="seconds instead of minutes: proves the harness")
    parser.add_argument("--runs", type=int, default=None, help="runs per figure (median); default 5, quick 1")
    parser.add_argument("--seconds", type=float, default=None, help="seconds per wrk run; default 5, quick 1")
    parser.add_argument("--artifact-mb", type=int, default=None, help="artifact size; default 1024, quick 16")
    parser.add_argument(
        "--mlflow-url",
        default=None,
        help="use this running MLflow without the auth app (permissions off) instead of starting one",
    )
    parser.add_argument(
        "--permissions-mlflow-url",
        default=None,
        help="use this running MLflow with the auth app (permissions on) instead of starting one; "
        "HOKUSAI_MLFLOW_ASSERTION_SECRET_FILE names the secret it checks assertions with",
    )
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()
    plan = Plan(
        seconds=args.seconds or (1 if args.quick else 5),
        runs=args.runs or (1 if args.quick else 5),
        artifact_mb=args.artifact_mb or (16 if args.quick else 1024),
        # Each artifact run moves 6 GiB (PUT and GET over three paths): three keep `make bench` short.
        artifact_runs=min(3, args.runs or (1 if args.quick else 5)),
        output=args.output,
        mlflow_url=args.mlflow_url,
        permissions_mlflow_url=args.permissions_mlflow_url,
    )
    started = time.monotonic()
    results = Results()
    missing = ensure_tools()
    results.machine = machine()
    say(f"Benchmark on {results.machine['cores']} cores ({results.machine['cpu']}); report: {plan.output}")
    with tempfile.TemporaryDirectory(prefix="hokusai-bench-") as tmp:
        workdir = Path(tmp)
        say("Auth check cost ...")
        auth_costs(results, workdir, 2000 if args.quick else 200_000)
        if missing:
            results.skipped.append(f"request-rate scenarios: {', '.join(missing)} not available")
            say(f"Skipping request-rate scenarios: {', '.join(missing)} not available")
        else:
            say("Small requests against a fast stub ...")
            small_requests(plan, results, workdir)
            say("Real MLflow and artifacts ...")
            real_mlflow(plan, results, workdir)
            if plan.mlflow_url or plan.permissions_mlflow_url:
                results.skipped.append("kept-alive and fresh connections to MLflow: an MLflow URL given")
            else:
                say("Kept-alive and fresh connections to MLflow ...")
                keepalive(plan, results, workdir)
    results.machine["load_end"] = load_average()
    plan.output.parent.mkdir(parents=True, exist_ok=True)
    chart = plan.output.with_suffix(".png")
    report.chart(results, chart)
    previous = plan.output.read_text() if plan.output.exists() else ""
    plan.output.write_text(
        report.markdown(results, plan, chart.name, time.monotonic() - started)
        + report.kept_sections(previous)
    )
    say(report.summary(results))
    say(f"Wrote {plan.output} and {chart} in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
