"""Where MLflow's permission checks spend a request's time (docs/benchmarks.md, "Per-resource permissions").

`python -m bench.permission_checks` runs MLflow's Flask app in a child process twice, as `hokusai-registry
mlflow` configures it (SQLite; with permissions on, its auth app with this package's assertion check and
READ by default), sends the calls `make bench` measures through Flask's test client, and counts, per
request: CPU time in the app, in the auth app's hooks (before and after the request), in the assertion
check and in the auth store's lookups, and the SQL statements on each database with their time. No
sockets, no workers: what one request costs a worker's CPU, without HTTP; CPU time rather than wall time,
so other work on a shared machine moves the figures little.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

API = "/api/2.0/mlflow"
CALLS = ("experiments/get", "runs/log-batch", "runs/search")
# What the other owner (READ by default) is asked to do: it may not write.
READER_CALLS = ("experiments/get", "runs/search")


class Meter:
    """CPU seconds (this thread's: what a request costs a worker, whatever else the machine runs), calls
    and SQL statements per phase of the requests being measured."""

    def __init__(self) -> None:
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self.calls: Counter[str] = Counter()
        self.statements: Counter[str] = Counter()

    def clear(self) -> None:
        self.seconds.clear()
        self.calls.clear()
        self.statements.clear()

    def timed(self, phase: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            self.calls[phase] += 1
            started = time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[phase] += time.thread_time() - started

        wrapper.__name__ = getattr(function, "__name__", phase)
        return wrapper


def measure_one(data_dir: Path, permissions: bool, requests: int) -> dict[str, dict[str, float]]:
    """In this process (its MLflow modules keep global state: one configuration per process)."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from hokusai_registry.policy.assertions import body_digest, sign
    from hokusai_registry.run.mlflow_process import mlflow_environment
    from hokusai_registry.settings import Settings

    settings = Settings.load(data_dir=data_dir, permissions=permissions, default_permission="READ")
    os.environ.update(mlflow_environment(settings))
    os.environ.update(
        {
            "_MLFLOW_SERVER_FILE_STORE": f"sqlite:///{data_dir.resolve() / 'mlflow.db'}",
            "_MLFLOW_SERVER_SERVE_ARTIFACTS": "true",
            "_MLFLOW_SERVER_ARTIFACT_DESTINATION": str(data_dir.resolve() / "artifacts"),
            "_MLFLOW_SERVER_ARTIFACT_ROOT": "mlflow-artifacts:/",
        }
    )
    meter = Meter()
    started_at: dict[int, float] = {}

    def before(conn: Any, cursor: Any, *_: Any) -> None:
        started_at[id(cursor)] = time.thread_time()

    def after(conn: Any, cursor: Any, *_: Any) -> None:
        database = "auth db" if "mlflow-auth" in str(conn.engine.url) else "tracking db"
        meter.statements[database] += 1
        meter.seconds[database] += time.thread_time() - started_at.pop(id(cursor), time.thread_time())

    event.listen(Engine, "before_cursor_execute", before)
    event.listen(Engine, "after_cursor_execute", after)

    from mlflow.server import app

    if permissions:
        from mlflow.server import auth

        import hokusai_registry.mlflow_app.authorization as authorization

        # Wrapped before MLflow resolves `authorization_function` (it imports it on first use).
        authorization.authenticate = meter.timed("assertion check", authorization.authenticate)
        auth.create_app(app)
        # The auth store's lookups (each its own session): the user (with its admin flag), the user's and
        # roles' grants.
        for method in ("get_user", "list_grants"):
            setattr(auth.store, method, meter.timed(method, getattr(auth.store, method)))
        hooks: Any
        for hooks in (app.before_request_funcs, app.after_request_funcs):
            hooks[None] = [
                meter.timed("auth hooks", hook)
                if hook in (auth._before_request, auth._after_request)
                else hook
                for hook in hooks[None]
            ]
    secret = settings.assertion_secret_path.read_bytes().strip() if permissions else b""
    client = app.test_client()

    def call(method: str, path: str, body: dict[str, Any] | None, user: str, query: str = "") -> Any:
        headers = {"Content-Type": "application/json"}
        data = json.dumps(body).encode() if body is not None else b""
        if permissions:
            nonce = secrets.token_hex(9)
            value = sign(
                secret, user, method, path, query, now=time.time(), nonce=nonce, body=body_digest(data)
            )
            headers["X-Hokusai-Assertion"] = value.decode()
        response = client.open(path, method=method, query_string=query, data=data, headers=headers)
        if response.status_code != 200:
            raise RuntimeError(
                f"{method} {path} as {user}: {response.status_code} {response.get_data()[:300]!r}"
            )
        return response.get_json()

    owner, reader = "bench-owner", "bench-reader"
    experiment = call("POST", f"{API}/experiments/create", {"name": "bench"}, owner)["experiment_id"]
    runs = [
        call("POST", f"{API}/runs/create", {"experiment_id": experiment}, owner)["run"]["info"]["run_id"]
        for _ in range(20)
    ]
    batch = {
        "run_id": runs[0],
        "metrics": [{"key": f"m{i}", "value": i * 0.5, "timestamp": 1, "step": 0} for i in range(10)],
    }
    search = {"experiment_ids": [experiment], "filter": "attributes.status = 'RUNNING'", "max_results": 10}
    requests_of: dict[str, Callable[[str], Any]] = {
        "experiments/get": lambda user: call(
            "GET", f"{API}/experiments/get", None, user, f"experiment_id={experiment}"
        ),
        "runs/log-batch": lambda user: call("POST", f"{API}/runs/log-batch", batch, user),
        "runs/search": lambda user: call("POST", f"{API}/runs/search", search, user),
    }
    cases = [(name, owner) for name in CALLS] + [(name, reader) for name in READER_CALLS]
    figures: dict[str, dict[str, float]] = {}
    for name, user in cases:
        send = requests_of[name]
        for _ in range(20):  # warm: users created, caches filled
            send(user)
        totals: list[float] = []
        meter.clear()
        for _ in range(requests):
            started = time.thread_time()
            answer = send(user)
            totals.append(time.thread_time() - started)
        if name == "runs/search" and len(answer["runs"]) != 10:
            raise RuntimeError(f"runs/search as {user} found {len(answer['runs'])} runs, not 10")
        figures[f"{name}|{user}"] = {
            "request ms": statistics.median(totals) * 1e3,
            **{f"{phase} ms": seconds / requests * 1e3 for phase, seconds in meter.seconds.items()},
            **{f"{phase} calls": calls / requests for phase, calls in meter.calls.items()},
            **{f"{database} statements": count / requests for database, count in meter.statements.items()},
        }
    return figures


def table(off: dict[str, dict[str, float]], on: dict[str, dict[str, float]]) -> list[str]:
    """Per call and caller: ms per request off and on; with permissions on, the auth app's hooks, the
    assertion check, the auth store's lookups (calls, ms), the statements on each database (ms in them)."""
    rows = [
        "| Call | Caller | off CPU ms | on CPU ms | before/after hooks ms | assertion check ms "
        "| `get_user` calls (ms) | `list_grants` calls (ms) | auth DB statements (ms) "
        "| tracking DB statements off / on |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for case, figures in on.items():
        name, user = case.split("|")
        baseline = off[case]
        caller = "owner (MANAGE)" if user == "bench-owner" else "other owner (READ by default)"

        def calls(phase: str, figures: dict[str, float] = figures) -> str:
            return f"{figures.get(phase + ' calls', 0):.0f} ({figures.get(phase + ' ms', 0):.2f})"

        rows.append(
            f"| `{name}` | {caller} | {baseline['request ms']:.2f} | {figures['request ms']:.2f} "
            f"| {figures.get('auth hooks ms', 0):.2f} | {figures.get('assertion check ms', 0):.2f} "
            f"| {calls('get_user')} | {calls('list_grants')} "
            f"| {figures.get('auth db statements', 0):.0f} ({figures.get('auth db ms', 0):.2f}) "
            f"| {baseline.get('tracking db statements', 0):.0f} "
            f"/ {figures.get('tracking db statements', 0):.0f} |"
        )
    return rows


def measure_in_child(mode: str, data_dir: Path, requests: int) -> dict[str, dict[str, float]]:
    """`measure_one` with permissions `mode` ("on" or "off") in a child process of its own: MLflow's
    modules keep one configuration per process."""
    child = subprocess.run(  # nosec B603 - this interpreter, this module
        [
            sys.executable,
            "-m",
            "bench.permission_checks",
            "--one",
            mode,
            "--requests",
            str(requests),
            "--data-dir",
            str(data_dir),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=Path(__file__).resolve().parents[1],
    )
    if child.returncode:
        raise RuntimeError(child.stderr[-3000:])
    figures: dict[str, dict[str, float]] = json.loads(child.stdout.strip().splitlines()[-1])
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.permission_checks", description=__doc__)
    parser.add_argument("--requests", type=int, default=300, help="requests per call and caller")
    parser.add_argument("--one", choices=("on", "off"), help=argparse.SUPPRESS)  # the child
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure_one(args.data_dir, args.one == "on", args.requests)))
        return
    figures: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="hokusai-permission-checks-") as tmp:
        for mode in ("off", "on"):
            try:
                figures[mode] = measure_in_child(mode, Path(tmp) / mode, args.requests)
            except RuntimeError as failed:  # the child's stderr, as the command's own message
                raise SystemExit(str(failed)) from None
    print("\n".join(table(figures["off"], figures["on"])))
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
