"""Gateway worker processes (`--workers N`) as users run them: `/metrics` counts the requests of every
worker, a worker that dies leaves the live sums but not the counts, the workers' metrics directory is
private and gone after the stop, and a key revoked through one worker is refused by every worker.

Which worker answered a request is found from outside, as an operator would: the worker process holding
the server end of the request's connection (no response header names a worker)."""

from __future__ import annotations

import asyncio
import http.client
import os
import signal
import stat
import time
from pathlib import Path

import psutil
import requests
from aiohttp import web

from tests.e2e.test_hostile import Canary
from tests.e2e.test_metrics import scrape, value
from tests.e2e.test_syscalls import REQUESTS, WRITES, calls_per_request, requests_on
from tests.helpers import (
    HOKUSAI,
    GatewayProcess,
    Running,
    clear_of_minute_edge,
    free_port,
    processes_using,
)
from tests.support.polling import eventually
from tests.support.stub import Arrival, ThreadedStub

WORKERS = 2
SEARCH = "/mlflow/api/2.0/mlflow/experiments/search?max_results=10"
STALL = "/mlflow/api/2.0/mlflow/runs/get?run_id=stall"


def workers_of(gateway: GatewayProcess, count: int = WORKERS) -> list[psutil.Process]:
    def all_forked() -> list[psutil.Process] | None:
        children = psutil.Process(gateway.pid).children()
        return children if len(children) == count else None

    return eventually(all_forked, 30, 0.1, f"{count} workers")


def worker_holding(workers: list[psutil.Process], server_port: int, client_port: int) -> int:
    """The worker with the server end of the connection from `client_port`."""
    for worker in workers:
        for connection in worker.net_connections(kind="tcp"):
            if (
                connection.laddr.port == server_port
                and connection.raddr
                and connection.raddr.port == client_port
            ):
                pid: int = worker.pid  # psutil is untyped
                return pid
    raise AssertionError(f"no worker holds the connection from port {client_port}")


def answered_by(port: int, workers: list[psutil.Process], key: str) -> tuple[int, int]:
    """One request on a connection of its own: its status and the worker that answered it."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", SEARCH, headers={"Authorization": f"Bearer {key}"})
        response = connection.getresponse()
        response.read()  # kept alive: the worker still holds the connection
        assert connection.sock is not None
        return response.status, worker_holding(workers, port, connection.sock.getsockname()[1])
    finally:
        connection.close()


def until_every_worker_answered(port: int, workers: list[psutil.Process], key: str) -> dict[int, list[int]]:
    """Requests on new connections until each worker has answered some: the statuses, by worker."""
    answered: dict[int, list[int]] = {worker.pid: [] for worker in workers}

    def every_worker_answered() -> bool:
        status, pid = answered_by(port, workers, key)
        answered[pid].append(status)
        return all(answered.values())

    eventually(every_worker_answered, 120, 0, "every worker to answer a request")
    return answered


def in_flight_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("hokusai_requests_in_flight")]


def test_metrics_count_the_requests_of_every_worker(tmp_path: Path) -> None:
    upstream = ThreadedStub()
    gateway = GatewayProcess(upstream.url, tmp_path / "gw", env={"HOKUSAI_WORKERS": str(WORKERS)})
    try:
        workers = workers_of(gateway)
        key = gateway.create_key("workers")
        answered = until_every_worker_answered(gateway.port, workers, key)
        sent = sum(len(statuses) for statuses in answered.values())
        text = scrape(gateway.url, key)
        # The metrics directory: one the parent made for this run, private to its user.
        files = {Path(f.path) for worker in workers for f in worker.open_files() if f.path.endswith(".db")}
        directories = {path.parent for path in files if path.parent.name.startswith("hokusai-metrics-")}
        modes = {stat.S_IMODE(directory.stat().st_mode) for directory in directories}
    finally:
        gateway.stop()
        upstream.stop()
    assert all(statuses == [200] * len(statuses) for statuses in answered.values())
    ok = {"family": "rest", "method": "GET", "status_class": "2xx"}
    # One scrape, answered by one worker, counts what all of them answered.
    assert value(text, "hokusai_requests_total", **ok) == sent, (answered, text)
    assert value(text, "hokusai_upstream_response_seconds_count", family="rest") == sent
    assert in_flight_lines(text) == ["hokusai_requests_in_flight 1.0"]  # the scrape: summed, no pid label
    assert len(directories) == 1 and modes == {0o700}
    (directory,) = directories
    metric_files = {path.name for path in files if path.parent == directory}
    assert {name.rsplit("_", 1)[1] for name in metric_files} == {f"{worker.pid}.db" for worker in workers}
    assert not directory.exists()  # removed with the files when the gateway stopped


def test_one_worker_keeps_its_metrics_in_memory(tmp_path: Path) -> None:
    """Even when the environment names a multiprocess directory (set for some other program), one worker
    writes no metric files."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    upstream = ThreadedStub()
    gateway = GatewayProcess(upstream.url, tmp_path / "gw", env={"PROMETHEUS_MULTIPROC_DIR": str(elsewhere)})
    try:
        key = gateway.create_key("one")
        assert requests.get(gateway.url + SEARCH, headers={"Authorization": f"Bearer {key}"}, timeout=10).ok
        text = scrape(gateway.url, key)
    finally:
        gateway.stop()
        upstream.stop()
    assert value(text, "hokusai_requests_total", family="rest", method="GET", status_class="2xx") == 1
    assert list(elsewhere.iterdir()) == []


def test_workers_count_requests_without_a_system_call(tmp_path: Path) -> None:
    """A worker's metric files are memory-mapped, so counting adds no system call per request; in
    particular no process-id lookup, which prometheus-client makes at every update unless told the id
    (six a request). strace on the worker holding a kept-alive connection, as tests/e2e/test_syscalls.py
    does for one process."""
    canary = Canary()
    gateway = GatewayProcess(canary.url, tmp_path / "gw", env={"HOKUSAI_WORKERS": str(WORKERS)})
    connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=30)
    try:
        workers = workers_of(gateway)
        key = gateway.create_key("counted")

        requests_on(connection, key, 20)  # connections to MLflow made, caches warm
        assert connection.sock is not None
        holder = worker_holding(workers, gateway.port, connection.sock.getsockname()[1])

        counts = calls_per_request(holder, lambda: requests_on(connection, key, REQUESTS))
        text = scrape(gateway.url, key)
    finally:
        connection.close()
        gateway.stop()
        canary.stop()
    print(", ".join(f"{name} {calls:.2f}" for name, calls in sorted(counts.items(), key=lambda c: -c[1])))
    assert counts.get("getpid", 0.0) < 0.5, counts
    assert sum(counts.get(name, 0.0) for name in WRITES) < 2.5, counts  # as with one worker
    assert (
        value(text, "hokusai_requests_total", family="rest", method="GET", status_class="2xx")
        == 20 + REQUESTS
    )


def test_a_dead_worker_leaves_the_requests_in_flight_but_not_the_counts(tmp_path: Path) -> None:
    release = asyncio.Event()

    async def answer(arrival: Arrival, request: web.Request) -> web.StreamResponse:
        if "stall" in arrival.target:
            await release.wait()
        return web.json_response({"experiments": []})

    upstream = ThreadedStub(handler=answer)
    gateway = GatewayProcess(upstream.url, tmp_path / "gw", env={"HOKUSAI_WORKERS": str(WORKERS)})
    stalled = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=60)
    try:
        workers = workers_of(gateway)
        key = gateway.create_key("dies")
        answered = until_every_worker_answered(gateway.port, workers, key)
        sent = sum(len(statuses) for statuses in answered.values())
        stalled.request("GET", STALL, headers={"Authorization": f"Bearer {key}"})
        eventually(lambda: any("stall" in arrival.target for arrival in upstream.requests), 30)
        assert stalled.sock is not None
        holder = worker_holding(workers, gateway.port, stalled.sock.getsockname()[1])
        # The stalled request and the scrape, whichever worker answers it.
        eventually(
            lambda: in_flight_lines(scrape(gateway.url, key)) == ["hokusai_requests_in_flight 2.0"], 30
        )

        os.kill(holder, signal.SIGKILL)

        def only_the_scrape_in_flight() -> str | None:
            text = scrape(gateway.url, key)
            return text if in_flight_lines(text) == ["hokusai_requests_in_flight 1.0"] else None

        text = eventually(only_the_scrape_in_flight, 30, 0.2, "the dead worker's request to leave the sum")
        survivor = next(worker for worker in workers if worker.pid != holder)
        assert answered_by(gateway.port, [survivor], key)[0] == 200
    finally:
        upstream.loop.call_soon_threadsafe(release.set)
        stalled.close()
        gateway.stop()
        upstream.stop()
    ok = {"family": "rest", "method": "GET", "status_class": "2xx"}
    assert value(text, "hokusai_requests_total", **ok) == sent  # the dead worker's counts stay
    assert gateway.process.returncode == 128 + signal.SIGKILL  # the worst of its workers' ends


def test_a_key_revoked_through_one_worker_is_refused_by_every_worker(tmp_path: Path) -> None:
    """With a key cache far longer than the test, only the store's revision counter, polled by each
    worker every HOKUSAI_KEY_REVISION_POLL_INTERVAL, can end the cached checks."""
    workers_count = 3
    upstream = ThreadedStub()
    gateway = GatewayProcess(
        upstream.url,
        tmp_path / "gw",
        env={"HOKUSAI_WORKERS": str(workers_count), "HOKUSAI_KEY_CACHE_TTL": "3600"},
    )
    try:
        workers = workers_of(gateway, workers_count)
        admin = gateway.create_key("admin", admin=True)
        key = gateway.create_key("revoked")
        before = until_every_worker_answered(gateway.port, workers, key)  # each worker has the key cached
        key_id = key.split("_")[2]
        revoked = requests.post(
            gateway.url + f"/api/v1/keys/{key_id}/revoke",
            headers={"Authorization": f"Bearer {admin}"},
            timeout=10,
        )
        assert revoked.status_code == 200, revoked.text
        after = until_every_worker_refused(gateway.port, workers, key)
    finally:
        gateway.stop()
        upstream.stop()
    assert all(statuses == [200] * len(statuses) for statuses in before.values())
    for statuses in after.values():
        # Once a worker has refused the key, it never accepts it again.
        assert 401 in statuses and 200 not in statuses[statuses.index(401) :], after


def test_workers_counting_in_redis_share_one_limit_per_key(redis_url: str, tmp_path: Path) -> None:
    """Without REDIS_URL each worker counts a key's requests on its own (docs/deployment.md); with it,
    a limit of 3 a minute allows 3 requests however they spread over the workers."""
    upstream = ThreadedStub()
    env = {"HOKUSAI_WORKERS": str(WORKERS), "REDIS_URL": redis_url, "HOKUSAI_RATE_LIMIT_PER_MINUTE": "3"}
    gateway = GatewayProcess(upstream.url, tmp_path / "gw", env=env)
    try:
        workers = workers_of(gateway)
        key = gateway.create_key("limited")
        clear_of_minute_edge()
        answered = until_every_worker_answered(gateway.port, workers, key)
        while sum(len(statuses) for statuses in answered.values()) < 8:
            status, pid = answered_by(gateway.port, workers, key)
            answered[pid].append(status)
    finally:
        gateway.stop()
        upstream.stop()
    statuses = [status for answers in answered.values() for status in answers]
    assert statuses.count(200) == 3 and statuses.count(429) == len(statuses) - 3, answered


def until_every_worker_refused(port: int, workers: list[psutil.Process], key: str) -> dict[int, list[int]]:
    """Requests on new connections until each worker has refused the key: the statuses, by worker. Prints
    when the last request accepted after the revocation was sent (a measure, not a test: no timing
    assertion), against HOKUSAI_KEY_REVISION_POLL_INTERVAL."""
    answered: dict[int, list[int]] = {worker.pid: [] for worker in workers}
    started = time.monotonic()
    last_accepted = 0.0

    def every_worker_refused() -> bool:
        nonlocal last_accepted
        sent = time.monotonic() - started
        status, pid = answered_by(port, workers, key)
        answered[pid].append(status)
        if status == 200:
            last_accepted = sent
        return all(401 in statuses for statuses in answered.values())

    eventually(every_worker_refused, 120, 0.02, "every worker to refuse the revoked key")
    print(
        f"[workers] last request accepted after the revocation: sent {last_accepted:.2f} s after it; "
        f"every worker seen refusing {time.monotonic() - started:.2f} s after it"
    )
    return answered


def test_serve_with_workers_runs_mlflow_once_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    """`serve --workers 2`: one MLflow, two gateway workers in front of it counted by one scrape, and
    Ctrl-C (SIGINT to the terminal's process group) stops the workers, then MLflow, and leaves nothing."""
    data_dir = tmp_path / "data"
    port = free_port()
    env = {
        "HOKUSAI_MLFLOW_WORKERS": "1",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "MLFLOW_CRYPTO_KEK_PASSPHRASE": "",
    }
    command = [HOKUSAI, "serve", "--workers", str(WORKERS), "--port", str(port), "--data-dir", str(data_dir)]
    running = Running(command, env, new_session=True)
    try:
        running.wait_for("Press Ctrl-C to stop.")
        key = next(line.split("=", 1)[1].strip() for line in running.seen if "MLFLOW_TRACKING_TOKEN=" in line)
        parent = psutil.Process(running.process.pid)
        children = parent.children()
        workers = [child for child in children if child.cmdline() == parent.cmdline()]
        others = [" ".join(child.cmdline()) for child in children if child not in workers]
        answered = until_every_worker_answered(port, workers, key)
        text = scrape(f"http://127.0.0.1:{port}", key)
    finally:
        code = running.terminate(signal.SIGINT, group=True)
    output = "".join(running.seen)
    assert f"Gateway:   http://127.0.0.1:{port} ({WORKERS} worker processes)" in output
    assert "First start: an admin key was created" in output
    assert len(workers) == WORKERS and len(others) == 1 and " server " in others[0]  # one `mlflow server`
    assert all(statuses == [200] * len(statuses) for statuses in answered.values()), (
        answered
    )  # MLflow answered
    sent = sum(len(statuses) for statuses in answered.values())
    assert value(text, "hokusai_requests_total", family="rest", method="GET", status_class="2xx") == sent
    assert code == 0 and "Stopping MLflow ..." in output and "Stopped." in output
    assert processes_using(data_dir) == []
    assert not (data_dir / "mlflow-url").exists()
