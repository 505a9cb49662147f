"""`make bench`: the gateway against its references (direct upstream, nginx, a bare ASGI hello world) and its
peers (MLflow's basic-auth, mlflow-oidc-auth, nginx auth_basic), measured in one run.

Every figure is the median of several runs taken in the same run as its reference, so the ratios
hold on whatever machine runs this. Writes docs/benchmarks.md and docs/benchmarks.png.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench import report
from bench.load import Target, wrk
from bench.mlflow_calls import API, post, real_mlflow
from bench.model import Plan, Results
from bench.rounds import rounds
from bench.stack import (
    PERMISSIONS_OFF,
    STUB_PATH,
    free_port,
    gateway,
    make_key,
    running,
    say,
    start_mlflow,
    stub_servers,
    wait_http,
)
from bench.syscalls import request_cost, strace_unavailable
from bench.token_costs import token_costs
from hokusai_registry.auth.authenticator import Authenticator
from hokusai_registry.auth.local_keys import LocalKeys
from hokusai_registry.auth.rate_limits import RateLimits
from hokusai_registry.auth.throttle import Guard
from hokusai_registry.policy.assertions import EMPTY_BODY, sign, verify
from hokusai_registry.run.mlflow_process import MlflowProcess, mlflow_command
from hokusai_registry.settings import Settings
from hokusai_registry.store.key_store import DEFAULT_SCOPES, KeyStore

ROOT = Path(__file__).resolve().parents[1]


def ensure_tools() -> list[str]:
    """wrk, nginx and strace from Debian's packages when missing (root only); returns what is still missing
    of wrk and nginx (without strace, only the system calls per request go unmeasured, and say why)."""

    def absent(tool: str) -> bool:
        return not (shutil.which(tool) or Path(f"/usr/sbin/{tool}").exists())

    packages = {"wrk": "wrk", "nginx": "nginx-light", "strace": "strace"}
    missing = [tool for tool in packages if absent(tool)]
    if missing and os.geteuid() == 0 and shutil.which("apt-get"):
        say(f"Installing {', '.join(missing)} from Debian's packages (apt-get) ...")
        subprocess.run(["apt-get", "update", "-qq"], check=False, capture_output=True)
        wanted = [packages[tool] for tool in missing]
        subprocess.run(["apt-get", "install", "-y", "-qq", *wanted], check=False, capture_output=True)
    return [tool for tool in ("wrk", "nginx") if absent(tool)]


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


WORKER_COUNTS = (1, 2, 4)
# More connections than for one worker: the kernel spreads them over the workers unevenly.
WORKER_CONNECTIONS = 64


def small_requests(plan: Plan, results: Results, workdir: Path) -> None:
    """The stub, nginx, the hello world, the bare proxy and the gateway at c=1 and c=32 in the same rounds,
    the gateway's workers, and what a request costs each server (CPU, system calls)."""
    with running(workdir) as processes:
        servers = stub_servers(processes, workdir)
        stub = servers["direct"].target.url.removesuffix(STUB_PATH)
        auth = servers["gateway"].target.headers
        by_count = {1: servers["gateway"].target.url.removesuffix(STUB_PATH)}
        for count in WORKER_COUNTS[1:]:
            by_count[count], _ = gateway(
                processes, f"gateway-{count}", stub, workdir / "gateway-small", workers=count
            )
        targets = {name: server.target for name, server in servers.items()}
        for connections in (1, 32):
            say(f"  small requests, {connections} connection(s) ...")
            for name, rate in rounds(plan, targets, connections).items():
                results.small.setdefault(name, {})[connections] = rate
        say("  gateway workers ...")
        by_workers = {str(count): Target(url + STUB_PATH, auth) for count, url in by_count.items()}
        for target in by_workers.values():  # /health answers once one worker is up; the rest start after
            wrk(target, WORKER_CONNECTIONS, 2)
        workers = rounds(plan, by_workers, WORKER_CONNECTIONS)
        results.workers = {int(name): rate for name, rate in workers.items()}
        reason = strace_unavailable()
        for name in COSTED:
            say(f"  CPU and system calls per request, {name} ...")
            server = servers[name]
            results.costs[name] = request_cost(server.target, server.pid, 32, plan.seconds, reason)


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


# The sections of a run, for `--only`.
SECTIONS = ("auth", "small", "mlflow", "keepalive")
# The small-request servers whose cost per request is measured.
COSTED = ("nginx", "hello world", "bare proxy", "gateway")


def main() -> None:
    parser = argparse.ArgumentParser(prog="make bench", description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="seconds instead of minutes, no peers: proves the harness"
    )
    parser.add_argument("--runs", type=int, default=None, help="runs per figure (median); default 5, quick 1")
    parser.add_argument("--seconds", type=float, default=None, help="seconds per wrk run; default 5, quick 1")
    parser.add_argument("--artifact-mb", type=int, default=None, help="artifact size; default 256, quick 16")
    parser.add_argument(
        "--peers",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="measure the peers (MLflow's basic-auth, mlflow-oidc-auth, nginx auth_basic) with the MLflow "
        "calls; default on, off with --quick",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=SECTIONS,
        default=[],
        help="run only this section (repeatable); the report then holds only what was measured",
    )
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
        artifact_mb=args.artifact_mb or (16 if args.quick else 256),
        # Each artifact run moves 4 GiB (PUT and GET over eight paths): three keep `make bench` short.
        artifact_runs=min(3, args.runs or (1 if args.quick else 5)),
        output=args.output,
        mlflow_url=args.mlflow_url,
        permissions_mlflow_url=args.permissions_mlflow_url,
        peers=not args.quick if args.peers is None else args.peers,
        only=frozenset(args.only),
    )
    started = time.monotonic()
    results = Results()
    missing = ensure_tools()
    results.machine = machine()
    say(f"Benchmark on {results.machine['cores']} cores ({results.machine['cpu']}); report: {plan.output}")
    with tempfile.TemporaryDirectory(prefix="hokusai-bench-") as tmp:
        workdir = Path(tmp)
        if plan.runs_section("auth"):
            say("Auth check cost ...")
            auth_costs(results, workdir, 2000 if args.quick else 200_000)
        if missing:
            results.skipped.append(f"request-rate scenarios: {', '.join(missing)} not available")
            say(f"Skipping request-rate scenarios: {', '.join(missing)} not available")
        else:
            if plan.runs_section("small"):
                say("Small requests against a fast stub ...")
                small_requests(plan, results, workdir)
            if plan.runs_section("mlflow"):
                say("Real MLflow and artifacts" + (", with the peers ..." if plan.peers else " ..."))
                real_mlflow(plan, results, workdir)
            given = plan.mlflow_url or plan.permissions_mlflow_url
            if plan.runs_section("keepalive") and given:
                results.skipped.append("kept-alive and fresh connections to MLflow: an MLflow URL given")
            elif plan.runs_section("keepalive"):
                say("Kept-alive and fresh connections to MLflow ...")
                keepalive(plan, results, workdir)
    results.machine["load_end"] = load_average()
    plan.output.parent.mkdir(parents=True, exist_ok=True)
    chart = plan.output.with_suffix(".png")
    report.chart(results, chart)
    peers_chart = plan.output.with_name(report.peers_chart_name(chart.name))
    if report.peers_chart(results, peers_chart):
        say(f"Wrote {peers_chart}")
    previous = plan.output.read_text() if plan.output.exists() else ""
    plan.output.write_text(
        report.markdown(results, plan, chart.name, time.monotonic() - started)
        + report.kept_sections(previous)
    )
    say(report.summary(results))
    say(f"Wrote {plan.output} and {chart} in {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
