"""`make soak`: many real MLflow clients through one gateway for minutes, nothing lost.

Clients (threads in a few worker processes, each with the real MLflow client and the gateway URL) repeat a
realistic mix: create runs, log metric batches, upload and download artifacts of random size with sha256
checks, register models, search. Every failure is classed by who caused it: the gateway (its own answers
carry "Hokusai Registry gateway") or MLflow/the network. The gateway's RSS and open descriptors are sampled
after warm-up and at the end. Writes docs/soak.md (or --output).
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import multiprocessing
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from bench.stack import gateway, make_key, running, start_mlflow
from hokusai_registry.settings import Settings
from soak.clients import Plan, worker

ROOT = Path(__file__).resolve().parents[1]


ACCESS_LINE = re.compile(r" -> (\S+) (\d{3}) in=")


def server_errors(log: Path) -> dict[str, collections.Counter[int]]:
    """5xx answers in the gateway's access log: made by the gateway itself (nothing forwarded, upstream
    "-") or relayed from MLflow. The MLflow client reports a 503 without its body, so this is the evidence
    of who answered."""
    found: dict[str, collections.Counter[int]] = {
        "gateway": collections.Counter(),
        "mlflow": collections.Counter(),
    }
    for line in log.read_text(errors="replace").splitlines():
        match = ACCESS_LINE.search(line)
        if match and int(match.group(2)) >= 500:
            found["gateway" if match.group(1) == "-" else "mlflow"][int(match.group(2))] += 1
    return found


def gateway_usage(pid: int) -> tuple[float, int]:
    process = psutil.Process(pid)
    return process.memory_info().rss / 2**20, process.num_fds()


def soak(plan: Plan, workdir: Path, mlflow_url: str | None) -> dict[str, Any]:
    with running(workdir) as processes:
        own = None
        # With permissions on, as the product runs: the gateway signs with the secret of the MLflow it fronts.
        secret = Settings.load().mlflow_assertion_secret_file
        if mlflow_url is None:
            mlflow_url, own, settings = start_mlflow(workdir, "mlflow", permissions=True)
            secret = settings.assertion_secret_path
        if secret is None:
            raise SystemExit(
                "--mlflow-url needs HOKUSAI_MLFLOW_ASSERTION_SECRET_FILE (the secret that MLflow checks)"
            )
        try:
            data_dir = workdir / "gateway"
            key = make_key(data_dir)
            env = {"HOKUSAI_MLFLOW_ASSERTION_SECRET_FILE": str(secret.resolve())}
            gateway_url, gateway_process = gateway(processes, "gateway", mlflow_url, data_dir, env=env)
            results: Any = multiprocessing.get_context("spawn").Queue()
            per_process = [plan.clients // plan.processes] * plan.processes
            for index in range(plan.clients % plan.processes):
                per_process[index] += 1
            workers = [
                multiprocessing.get_context("spawn").Process(
                    target=worker, args=(index, plan, count, gateway_url + "/mlflow", key, results)
                )
                for index, count in enumerate(per_process)
                if count
            ]
            started = time.monotonic()
            for process in workers:
                process.start()
            time.sleep(min(plan.warmup, plan.seconds / 2))
            after_warmup = gateway_usage(gateway_process.pid)
            samples = [after_warmup]
            while any(process.is_alive() for process in workers):
                time.sleep(1)
                if time.monotonic() - started < plan.seconds:
                    samples.append(gateway_usage(gateway_process.pid))
            tallies = [results.get(timeout=60) for _ in workers]
            for process in workers:
                process.join()
            elapsed = time.monotonic() - started
            time.sleep(5)  # idle kept-alive upstream connections expire (4 s)
            end = gateway_usage(gateway_process.pid)
            processes.stop(gateway_process)  # flushes its log
            answered_5xx = server_errors(workdir / "gateway.log")
        finally:
            if own is not None:
                own.stop()
    operations: collections.Counter[str] = collections.Counter()
    errors: collections.Counter[str] = collections.Counter()
    for tally in tallies:
        operations.update(tally["operations"])
        errors.update(tally["errors"])
    return {
        "clients": plan.clients,
        "processes": len(workers),
        "seconds": round(elapsed, 1),
        "operations": dict(operations),
        "operations_total": sum(operations.values()),
        "errors": dict(errors),
        "gateway_errors": sum(count for cause, count in errors.items() if cause.startswith("gateway"))
        + sum(answered_5xx["gateway"].values()),
        "gateway_5xx": dict(answered_5xx["gateway"]),
        "mlflow_5xx": dict(answered_5xx["mlflow"]),
        "upstream_errors": sum(count for cause, count in errors.items() if cause.startswith("upstream")),
        "examples": [example for tally in tallies for example in tally["examples"]][:20],
        "artifacts_uploaded": sum(tally["uploaded"] for tally in tallies),
        "artifacts_verified": sum(tally["verified"] for tally in tallies),
        "artifact_gb": round(sum(tally["bytes"] for tally in tallies) / 2**30, 2),
        "rss_mb": {"after_warmup": round(after_warmup[0], 1), "end": round(end[0], 1)},
        "fds": {"after_warmup": after_warmup[1], "peak": max(fds for _, fds in samples), "end": end[1]},
    }


def report(result: dict[str, Any], plan: Plan) -> str:
    rss = result["rss_mb"]
    growth = (rss["end"] - rss["after_warmup"]) / rss["after_warmup"] * 100
    fds = result["fds"]
    checks = [
        ("gateway-caused errors", str(result["gateway_errors"]), result["gateway_errors"] == 0),
        (
            "artifacts byte-identical",
            f"{result['artifacts_verified']} of {result['artifacts_uploaded']}",
            result["artifacts_verified"] == result["artifacts_uploaded"],
        ),
        ("gateway RSS growth after warm-up < 10%", f"{growth:+.1f}%", growth < 10),
        (
            "no descriptor growth after warm-up",
            f"{fds['after_warmup']} → {fds['end']}",
            fds["end"] <= fds["after_warmup"],
        ),
    ]
    lines = [
        "# Soak",
        "",
        f"`make soak` on {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC: {result['clients']} concurrent MLflow "
        f"clients ({result['processes']} processes) for {result['seconds']:.0f} s through one gateway worker "
        f"in front of MLflow ({os.cpu_count()} cores). Artifacts {plan.min_mb:g}–{plan.max_mb:g} MB, "
        f"{result['artifact_gb']} GiB up and down in all.",
        "",
        "| Target | Measured | |",
        "|---|---|---|",
        *(f"| {name} | {value} | {'✅' if ok else '❌'} |" for name, value, ok in checks),
        "",
        f"Operations: {result['operations_total']} "
        f"({', '.join(f'{name} {count}' for name, count in sorted(result['operations'].items()))}).",
        f"Failed client operations: {sum(result['errors'].values())}"
        + (f" ({json.dumps(result['errors'])})" if result["errors"] else "")
        + ". 5xx answers in the gateway's access log: made by the gateway "
        f"{json.dumps(result['gateway_5xx'])}, relayed from MLflow {json.dumps(result['mlflow_5xx'])} (the "
        "MLflow client reports a 5xx without its body, so the access log says who answered).",
        f"Gateway RSS after warm-up {rss['after_warmup']} MB, at the end {rss['end']} MB; open descriptors "
        f"after warm-up {fds['after_warmup']}, peak {fds['peak']}, at the end {fds['end']}.",
        "",
    ]
    if result["examples"]:
        lines += ["Examples of failures:", "", *(f"- `{example}`" for example in result["examples"]), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="make soak", description=__doc__)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--warmup", type=float, default=30)
    parser.add_argument("--min-mb", type=float, default=1)
    parser.add_argument("--max-mb", type=float, default=50)
    parser.add_argument("--mlflow-url", default=None, help="use this running MLflow instead of starting one")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "soak.md")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw figures here")
    args = parser.parse_args()
    plan = Plan(args.clients, args.processes, args.seconds, args.warmup, args.min_mb, args.max_mb)
    # MLflow's own database pool (5 + 10 by default) is the first thing 100 clients exhaust.
    os.environ.setdefault("MLFLOW_SQLALCHEMYSTORE_POOL_SIZE", "20")
    os.environ.setdefault("MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW", "100")
    os.environ.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    with tempfile.TemporaryDirectory(prefix="hokusai-soak-") as workdir:
        result = soak(plan, Path(workdir), args.mlflow_url)
    text = report(result, plan)
    args.output.write_text(text, encoding="utf-8")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(text)
    sys.exit(
        0
        if result["gateway_errors"] == 0 and result["artifacts_verified"] == result["artifacts_uploaded"]
        else 1
    )


if __name__ == "__main__":
    main()
