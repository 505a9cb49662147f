"""Routing where a real socket matters: the HTTP parser's limits on the request line, the read timeout
towards a silent upstream, and startup refusals. Everything else about what reaches the upstream is in
tests/inprocess/test_routing.py."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import HOKUSAI, GatewayProcess, TcpServer, free_port, raw_request
from tests.support.stub import ThreadedStub


@pytest.fixture(scope="module")
def upstream() -> Iterator[ThreadedStub]:
    server = ThreadedStub()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def echo_gateway(
    upstream: ThreadedStub, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    process = GatewayProcess(upstream.url, tmp_path_factory.mktemp("echo-gateway"))
    yield process
    process.stop()


@pytest.fixture(scope="module")
def echo_key(echo_gateway: GatewayProcess) -> str:
    return echo_gateway.create_key("routing")


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_request_line_of_60_kb_reaches_upstream_intact(
    echo_gateway: GatewayProcess, echo_key: str, upstream: ThreadedStub
) -> None:
    query = "&".join(f"run_id={i:032x}" for i in range(1500))  # 60 KB, repeated parameters
    status, _, _ = raw_request(
        echo_gateway.url,
        "GET",
        "/mlflow/ajax-api/2.0/mlflow/metrics/get-history-bulk?" + query,
        auth(echo_key),
    )
    assert status == 200
    assert upstream.requests[-1].target == "/ajax-api/2.0/mlflow/metrics/get-history-bulk?" + query


def test_silent_upstream_gives_504_after_the_read_timeout(tmp_path: Path) -> None:
    silent = TcpServer()
    process = GatewayProcess(silent.url, tmp_path / "gw", env={"HOKUSAI_UPSTREAM_READ_TIMEOUT": "1"})
    try:
        status, _, body = raw_request(
            process.url, "GET", "/mlflow/api/2.0/mlflow/experiments/search", auth(process.create_key("k"))
        )
    finally:
        process.stop()
        silent.stop()
    payload = json.loads(body)
    assert status == 504
    assert payload["error_code"] == "DEADLINE_EXCEEDED"
    assert "HOKUSAI_UPSTREAM_READ_TIMEOUT" in payload["message"]


@pytest.mark.parametrize("public", [False, True])
def test_startup_refuses_an_upstream_that_is_the_gateway_itself(public: bool, tmp_path: Path) -> None:
    port = free_port()
    args = ["--mlflow-url", f"http://localhost:{port}", "--port", str(port)]
    if public:
        args = [
            "--mlflow-url",
            "https://registry.example.com/mlflow",
            "--public-url",
            "https://registry.example.com",
            "--port",
            str(port),
        ]
    result = subprocess.run(
        [HOKUSAI, "gateway", *args, "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "MLFLOW_SERVER_URL" in result.stderr
    assert re.search(r"loop through the gateway", result.stderr)


def test_gateway_without_upstream_says_which_variable(tmp_path: Path) -> None:
    result = subprocess.run(
        [HOKUSAI, "gateway", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2
    assert "MLFLOW_SERVER_URL is not set" in result.stderr


@pytest.mark.parametrize(
    "target",
    ["/mlflow/api/2.0/mlflow/experiments/get-by-name?experiment_name=caf\u00e9", "/mlflow/caf\u00e9"],
)
def test_raw_non_ascii_request_target_is_refused_by_the_http_parser(
    target: str, echo_gateway: GatewayProcess, echo_key: str, upstream: ThreadedStub
) -> None:
    before = len(upstream.requests)
    status, _, _ = raw_request(echo_gateway.url, "GET", target.encode(), auth(echo_key))
    assert status == 400
    assert len(upstream.requests) == before
