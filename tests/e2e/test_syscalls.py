"""System calls a live gateway makes per request, counted by strace attached to it: for a small answer,
one write to MLflow and one to the client (head and body together), and no socket options, no address
lookups, no process-id lookups and no random bytes from the kernel on the way. Counts, not times: they
hold on any machine."""

from __future__ import annotations

import http.client
from collections.abc import Callable, Iterator

import pytest

from bench.syscalls import count_syscalls, strace_unavailable
from tests.e2e.test_hostile import Canary
from tests.helpers import GatewayProcess

REQUESTS = 400
WRITES = ("write", "writev", "sendto", "sendmsg")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, str]]:
    canary = Canary()
    gateway = GatewayProcess(canary.url, tmp_path_factory.mktemp("syscalls"))
    try:
        yield gateway, gateway.create_key("counted")
    finally:
        gateway.stop()
        canary.stop()


@pytest.fixture(scope="module")
def mlflow_gateway(
    mlflow_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GatewayProcess, str]]:
    """A gateway of its own in front of the real MLflow, which writes an answer's head and body apart."""
    gateway = GatewayProcess(mlflow_server, tmp_path_factory.mktemp("syscalls-mlflow"))
    try:
        yield gateway, gateway.create_key("counted")
    finally:
        gateway.stop()


def requests_on(
    connection: http.client.HTTPConnection, key: str, count: int, experiment_id: str = "1"
) -> None:
    """`count` small requests, one after the other, on one kept-alive connection."""
    for _ in range(count):
        connection.request(
            "GET",
            f"/api/2.0/mlflow/experiments/get?experiment_id={experiment_id}",
            headers={"X-API-Key": key},
        )
        answer = connection.getresponse()
        assert answer.status == 200, answer.read()
        answer.read()


def calls_per_request(pid: int, requests: Callable[[], None]) -> dict[str, float]:
    """Calls of each system call per request made by `pid` and its threads while `requests` sends
    REQUESTS requests (bench's strace counter: it waits until every thread is traced)."""
    reason = strace_unavailable()
    if reason:
        pytest.skip(reason)
    counts, _ = count_syscalls(pid, requests)
    return {name: calls / REQUESTS for name, calls in counts.items()}


def counted_requests(process: GatewayProcess, key: str, experiment_id: str = "1") -> dict[str, float]:
    """Calls per request while REQUESTS requests go one after the other on one kept-alive connection,
    after 20 that open the connection to MLflow and warm the caches; printed, most frequent first."""
    connection = http.client.HTTPConnection("127.0.0.1", process.port, timeout=30)
    try:
        requests_on(connection, key, 20, experiment_id)
        counts = calls_per_request(process.pid, lambda: requests_on(connection, key, REQUESTS, experiment_id))
    finally:
        connection.close()
    print(", ".join(f"{name} {calls:.2f}" for name, calls in sorted(counts.items(), key=lambda c: -c[1])))
    return counts


def test_a_small_answer_costs_one_write_each_way_and_nothing_else_per_request(
    gateway: tuple[GatewayProcess, str],
) -> None:
    counts = counted_requests(*gateway)
    writes = sum(counts.get(name, 0.0) for name in WRITES)
    # Before head and body were gathered (uvicorn writes them apart): 3 writes, 2 setsockopt and 2
    # getsockname calls (quick-ack mode set twice, through uvloop's socket stand-in), 1 getpid (the
    # process id logging records for each access line) and 1 getrandom (the nonce of the assertion it
    # signs for MLflow; permissions are on by default). The margins are for what does not come with
    # requests but with time (batches of log lines, the key store's revision poll in SQLite), which a
    # slow machine spreads over fewer requests.
    assert writes < 2.5, counts
    assert counts.get("read", 0.0) < 2.5, counts  # one from the client, one from MLflow
    assert counts.get("setsockopt", 0.0) < 0.5, counts
    assert counts.get("getsockname", 0.0) < 0.5, counts
    assert counts.get("getpid", 0.0) < 0.5, counts
    assert counts.get("getrandom", 0.0) < 0.5, counts


def test_a_small_mlflow_answer_written_in_two_pieces_reaches_the_client_in_one_write(
    mlflow_gateway: tuple[GatewayProcess, str],
) -> None:
    counts = counted_requests(*mlflow_gateway, experiment_id="0")  # the Default experiment
    # MLflow (uvicorn) writes the head, then the body. Sending the head on as it came cost a write of its
    # own: 3 writes per request. Now the head waits for the body (up to 64 KiB), and they go out together.
    assert sum(counts.get(name, 0.0) for name in WRITES) < 2.5, counts
