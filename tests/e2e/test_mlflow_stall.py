"""No ~40 ms wait on kept-alive connections to a multi-worker MLflow.

An MLflow whose uvicorn binds its multi-worker listener without IPPROTO_TCP (uvicorn <= 0.54,
Kludex/uvicorn#3149) and runs the asyncio loop leaves Nagle's algorithm on: each response goes out in more
than one piece, the rest waits for the ACK of the first, and on a kept-alive connection Linux delays that ACK
by ~40 ms. tests/support/legacy_listener recreates that listener on today's uvicorn, for a real MLflow
3.17.2 with two workers. The gateway must not pay the wait in front of such an MLflow started by someone
else (it enters quick-ack mode once a request is out), the MLflow the product starts must not have it even
there (uvloop, which sets TCP_NODELAY on every accepted connection), and the doctor must name it where it
sees it. Medians of many requests on live processes, with generous bounds; the figures are in `make bench`.
"""

from __future__ import annotations

import http.client
import json
import os
import statistics
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from hokusai_registry.run.mlflow_process import mlflow_command, mlflow_executable
from hokusai_registry.settings import Settings
from tests.helpers import HOKUSAI, GatewayProcess, free_port, running_mlflows

LEGACY_LISTENER = Path(__file__).resolve().parents[1] / "support" / "legacy_listener"
# MLflow's cheapest call (its answer goes out in two writes, like any other): load moves it least.
GET = "/version"
SAMPLES = 30
STALL_MS = 25.0  # the delayed ACK is ~40 ms


def p50s(url: str, headers: dict[str, str] | None = None) -> tuple[float, float]:
    """Median ms of GET `url`: back to back on one kept-alive connection, then on a new connection each."""
    parts = urlsplit(url)
    target = parts.path + (f"?{parts.query}" if parts.query else "")

    def once(connection: http.client.HTTPConnection, extra: dict[str, str]) -> float:
        started = time.perf_counter()
        connection.request("GET", target, headers={**(headers or {}), **extra})
        response = connection.getresponse()
        response.read()
        assert response.status == 200, response.status
        return (time.perf_counter() - started) * 1000

    kept = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    once(kept, {})
    kept_ms = [once(kept, {}) for _ in range(SAMPLES)]
    kept.close()
    fresh_ms = []
    for _ in range(SAMPLES):
        fresh = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
        fresh_ms.append(once(fresh, {"Connection": "close"}))
        fresh.close()
    return statistics.median(kept_ms), statistics.median(fresh_ms)


@pytest.fixture(scope="module")
def legacy_environment() -> Iterator[None]:
    """MLflow's processes get uvicorn's listener as in uvicorn <= 0.54, and ask for the asyncio loop."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PYTHONPATH", os.pathsep.join([str(LEGACY_LISTENER), os.environ.get("PYTHONPATH", "")]))
        env.setenv("MLFLOW_UVICORN_OPTS", "--loop asyncio")
        env.setenv("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")  # a faster start
        yield


@pytest.fixture(scope="module")
def stall_mlflows(
    legacy_environment: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, str]]:
    """Two MLflows with two workers on that environment, started side by side: `nagle`, `mlflow server` as
    someone else starts it, and `product`, as the product starts it."""
    nagle_dir, nagle_port = tmp_path_factory.mktemp("nagle-mlflow"), free_port()
    nagle = [
        mlflow_executable(),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(nagle_port),
        "--workers",
        "2",
        "--backend-store-uri",
        f"sqlite:///{nagle_dir / 'mlflow.db'}",
    ]
    product_dir, product_port = tmp_path_factory.mktemp("product-mlflow"), free_port()
    # Permissions off: requests go straight to MLflow, unsigned (the stall is in TCP, not in auth).
    product = mlflow_command(
        Settings.load(data_dir=product_dir, mlflow_workers=2, permissions=False), product_port
    )
    servers = {"nagle": (nagle, nagle_dir, nagle_port), "product": (product, product_dir, product_port)}
    with running_mlflows(servers) as urls:
        yield urls


@pytest.fixture(scope="module")
def nagle_mlflow(stall_mlflows: dict[str, str]) -> str:
    url = stall_mlflows["nagle"]
    kept, fresh = p50s(url + GET)
    # The condition under test: without this the tests below prove nothing.
    assert kept - fresh >= STALL_MS, (
        f"this MLflow does not stall: kept-alive {kept:.1f} ms, fresh {fresh:.1f}"
    )
    return url


def test_gateway_does_not_wait_for_delayed_acks_of_an_mlflow_with_nagle_on(
    nagle_mlflow: str, tmp_path: Path
) -> None:
    gateway = GatewayProcess(nagle_mlflow, tmp_path)
    try:
        key = gateway.create_key("stall")
        through, _ = p50s(gateway.url + "/mlflow" + GET, {"Authorization": f"Bearer {key}"})
    finally:
        gateway.stop()
    direct_kept, direct_fresh = p50s(nagle_mlflow + GET)
    print(
        f"gateway kept-alive {through:.1f} ms; direct kept-alive {direct_kept:.1f}, fresh {direct_fresh:.1f}"
    )
    # Before: the gateway's pooled connection waited like any kept-alive one (~direct_kept).
    assert through < direct_kept - STALL_MS / 2, (
        f"through the gateway {through:.1f} ms; MLflow direct: kept-alive {direct_kept:.1f}, "
        f"fresh {direct_fresh:.1f}"
    )


def test_mlflow_started_by_the_product_has_no_stall_with_two_workers(stall_mlflows: dict[str, str]) -> None:
    kept, fresh = p50s(stall_mlflows["product"] + GET)
    print(f"product's MLflow, 2 workers: kept-alive {kept:.1f} ms, fresh {fresh:.1f} ms")
    assert kept - fresh < STALL_MS / 2, f"kept-alive {kept:.1f} ms, fresh {fresh:.1f} ms"


def test_doctor_names_the_stall_and_how_to_fix_that_mlflow(nagle_mlflow: str) -> None:
    env = {name: value for name, value in os.environ.items() if not name.startswith(("MLFLOW_", "HOKUSAI_"))}
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    env["PYTHONPATH"] = os.pathsep.join(path for path in paths if path != str(LEGACY_LISTENER))
    done = subprocess.run(
        [HOKUSAI, "doctor", "--url", nagle_mlflow, "--json", "--api-key", "hk_live_not-a-key"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    reach = next(step for step in json.loads(done.stdout)["steps"] if step["name"] == "reach")
    assert reach["status"] == "warn", reach
    assert "Nagle's algorithm" in reach["diagnosis"]["cause"], reach
    assert "--uvicorn-opts '--loop uvloop'" in reach["diagnosis"]["next_check"]
    assert any("kept-alive" in line for line in reach["evidence"])
