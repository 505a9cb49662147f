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
from pathlib import Path

import requests

from bench import report
from bench.load import Rate, RssSampler, download, median_rate, upload, wrk
from bench.model import Plan, Results
from bench.stack import free_port, gateway, make_key, nginx_config, running, wait_http
from hokusai_registry.auth.authenticator import Authenticator
from hokusai_registry.auth.local_keys import LocalKeys
from hokusai_registry.auth.rate_limits import RateLimits
from hokusai_registry.auth.throttle import Guard
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
        "cores": str(os.cpu_count()),
        "cpu": model,
        "python": platform.python_version(),
        "mlflow": mlflow.__version__,
        "nginx": subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip().split("/")[-1]
        if shutil.which("nginx") or Path("/usr/sbin/nginx").exists()
        else "-",
    }


def rounds(
    plan: Plan, targets: dict[str, str], connections: int, headers: dict[str, str], script: Path | None = None
) -> dict[str, Rate]:
    """Median of `plan.runs` runs per target, taking the targets in turn so drift hits all alike."""
    samples: dict[str, list[Rate]] = {name: [] for name in targets}
    for _ in range(plan.runs):
        for name, url in targets.items():
            samples[name].append(wrk(url, connections, plan.seconds, headers, script))
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
        targets = {
            "direct": stub + path,
            "nginx": f"http://127.0.0.1:{proxy_port}" + path,
            "gateway": one + path,
        }
        auth = {"Authorization": f"Bearer {key}"}
        for connections in (1, 32):
            say(f"  small requests, {connections} connection(s) ...")
            for name, rate in rounds(plan, targets, connections, auth).items():
                results.small.setdefault(name, {})[connections] = rate
        say("  gateway workers ...")
        workers = rounds(plan, {"1": one + path, "2": two + path}, 32, auth)
        results.workers = {int(name): rate for name, rate in workers.items()}


def start_mlflow(
    workdir: Path, name: str = "mlflow", workers: int | None = None
) -> tuple[str, MlflowProcess]:
    """MLflow started the way `serve` starts it (`workers` overrides HOKUSAI_MLFLOW_WORKERS)."""
    settings = Settings.load(
        data_dir=workdir / name, **({} if workers is None else {"mlflow_workers": workers})
    )
    port = free_port()
    command = mlflow_command(settings, port)
    process = MlflowProcess(
        command, workdir / f"{name}.log", "127.0.0.1", port, env=mlflow_environment(settings)
    )
    process.start()
    say(f"  starting {name} (15-30 s) ...")
    asyncio.run(wait_until_healthy(process, 300))
    return process.url, process


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
                url, process = start_mlflow(workdir, f"mlflow-{workers}-worker", workers)
                upstreams[f"{workers} worker{'s' if workers > 1 else ''}"] = url
                own.append(process)
            port = free_port()
            command = mlflow_command(Settings.load(data_dir=workdir / "mlflow-nagle", mlflow_workers=2), port)
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
            targets: dict[str, str] = {}
            for label, url in upstreams.items():
                created = requests.post(
                    f"{url}{api}/experiments/create", json={"name": f"bench-{time.time_ns()}"}, timeout=30
                )
                path = f"{api}/experiments/get?experiment_id={created.json()['experiment_id']}"
                gateway_url, _ = gateway(processes, f"gateway-{len(targets)}", url, data_dir)
                targets[f"{label}|direct"] = url + path
                targets[f"{label}|gateway"] = gateway_url + "/mlflow" + path
            auth = {"Authorization": f"Bearer {key}"}
            say("  kept-alive connections to MLflow ...")
            kept = rounds(plan, targets, 1, auth)
            say("  fresh connections to MLflow ...")
            fresh = rounds(plan, targets, 1, {**auth, "Connection": "close"})
            for name in targets:
                label, path = name.split("|")
                results.keepalive.setdefault(label, {})[f"{path} kept-alive"] = kept[name]
                results.keepalive[label][f"{path} fresh"] = fresh[name]
        finally:
            for process in own:
                process.stop()


def real_mlflow(plan: Plan, results: Results, workdir: Path) -> None:
    own: MlflowProcess | None = None
    with running(workdir) as processes:
        try:
            if plan.mlflow_url:
                mlflow_url = plan.mlflow_url
            else:
                mlflow_url, own = start_mlflow(workdir)
            data_dir = workdir / "gateway-mlflow"
            key = make_key(data_dir)
            gateway_url, gateway_process = gateway(processes, "gateway-mlflow", mlflow_url, data_dir)
            nginx_port = free_port()
            config = nginx_config(
                workdir,
                "nginx-mlflow",
                proxy_port=nginx_port,
                upstream_port=int(mlflow_url.rsplit(":", 1)[1]),
            )
            processes.start("nginx-mlflow", [nginx_binary(), "-c", str(config)])
            nginx_url = f"http://127.0.0.1:{nginx_port}"
            wait_http(nginx_url + "/health")
            references = {"direct": mlflow_url, "nginx": nginx_url, "gateway": gateway_url + "/mlflow"}
            auth = {"Authorization": f"Bearer {key}"}
            api = "/api/2.0/mlflow"
            created = requests.post(
                f"{mlflow_url}{api}/experiments/create", json={"name": f"bench-{time.time_ns()}"}, timeout=30
            )
            experiment = created.json()["experiment_id"]
            run = requests.post(
                f"{mlflow_url}{api}/runs/create", json={"experiment_id": experiment}, timeout=30
            ).json()["run"]["info"]["run_id"]
            say("  MLflow experiments/get ...")
            get_path = f"{api}/experiments/get?experiment_id={experiment}"
            results.mlflow["experiments/get"] = rounds(
                plan, {name: base + get_path for name, base in references.items()}, 8, auth
            )
            say("  MLflow runs/log-batch ...")
            script = workdir / "log-batch.lua"
            batch = {
                "run_id": run,
                "metrics": [{"key": f"m{i}", "value": i * 0.5, "timestamp": 1, "step": 0} for i in range(10)],
            }
            script.write_text(
                'wrk.method = "POST"\n'
                f"wrk.body = {json.dumps(json.dumps(batch))}\n"
                'wrk.headers["Content-Type"] = "application/json"\n'
            )
            batch_path = f"{api}/runs/log-batch"
            results.mlflow["runs/log-batch"] = rounds(
                plan, {name: base + batch_path for name, base in references.items()}, 8, auth, script
            )
            artifacts(plan, results, workdir, references, gateway_process.pid, experiment, run, auth)
        finally:
            if own:
                own.stop()


def artifacts(
    plan: Plan,
    results: Results,
    workdir: Path,
    references: dict[str, str],
    gateway_pid: int,
    experiment: str,
    run: str,
    auth: dict[str, str],
) -> None:
    size = plan.artifact_mb * 2**20
    blob = workdir / "blob.bin"
    say(f"  writing a {plan.artifact_mb} MiB test file ...")
    with blob.open("wb") as handle:
        for _ in range(plan.artifact_mb):
            handle.write(os.urandom(2**20))
    base = f"/api/2.0/mlflow-artifacts/artifacts/{experiment}/{run}/artifacts"
    speeds: dict[str, dict[str, list[float]]] = {name: {"PUT": [], "GET": []} for name in references}
    peak = 0.0
    for attempt in range(plan.artifact_runs):
        for name, prefix in references.items():
            headers = auth if name == "gateway" else {}
            say(f"  artifacts {plan.artifact_mb} MiB through {name}, run {attempt + 1} ...")
            url = f"{prefix}{base}/blob-{name}-{attempt}.bin"
            with RssSampler(gateway_pid) as sampler:
                speeds[name]["PUT"].append(upload(url, blob, headers))
                speeds[name]["GET"].append(download(url, headers, size))
            if name == "gateway":
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
    }
    store.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="make bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="seconds instead of minutes: proves the harness")
    parser.add_argument("--runs", type=int, default=None, help="runs per figure (median); default 5, quick 1")
    parser.add_argument("--seconds", type=float, default=None, help="seconds per wrk run; default 5, quick 1")
    parser.add_argument("--artifact-mb", type=int, default=None, help="artifact size; default 1024, quick 16")
    parser.add_argument("--mlflow-url", default=None, help="use this running MLflow instead of starting one")
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
            if plan.mlflow_url:
                results.skipped.append("kept-alive and fresh connections to MLflow: --mlflow-url given")
            else:
                say("Kept-alive and fresh connections to MLflow ...")
                keepalive(plan, results, workdir)
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
