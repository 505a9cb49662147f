"""Logs that tell the truth: request ids, debug mode, JSON lines, and no key in any output."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import GatewayProcess, mistyped, raw_request
from tests.support.stub import ThreadedStub


@pytest.fixture(scope="module")
def upstream() -> Iterator[ThreadedStub]:
    server = ThreadedStub()
    yield server
    server.stop()


def start(upstream: ThreadedStub, directory: Path, **env: str) -> tuple[GatewayProcess, str]:
    process = GatewayProcess(upstream.url, directory, env=env)
    return process, process.create_key("observed")


def traffic(process: GatewayProcess, key: str) -> None:
    """Every way a key can arrive, including ways the gateway refuses."""
    path = "/mlflow/api/2.0/mlflow/experiments/search"
    basic = base64.b64encode(f"user:{key}".encode()).decode()
    for headers in (
        {"Authorization": f"Bearer {key}"},
        {"Authorization": f"Basic {basic}"},
        {"X-API-Key": key},
        {"Authorization": f"Bearer {mistyped(key)}"},  # mistyped
        {"Authorization": f"Bearer {key}", "Cookie": f"session={key}"},
    ):
        raw_request(process.url, "GET", path, headers)
    raw_request(process.url, "GET", f"{path}?api_key={key}", {"Authorization": f"Bearer {key}"})
    raw_request(
        process.url, "POST", path, {"Authorization": f"Bearer {key}"}, json.dumps({"k": key}).encode()
    )


def test_request_id_is_kept_or_made_and_travels_both_ways(upstream: ThreadedStub, tmp_path: Path) -> None:
    process, key = start(upstream, tmp_path / "gw")
    try:
        status, headers, _ = raw_request(
            process.url,
            "GET",
            "/mlflow/api/2.0/mlflow/experiments/search",
            {"Authorization": f"Bearer {key}", "X-Request-ID": "trace-42.a:b_c"},
        )
        assert status == 200 and headers["x-request-id"] == "trace-42.a:b_c"
        assert upstream.header(-1, "X-Request-ID") == ["trace-42.a:b_c"]
        # A malformed id is replaced, not passed on.
        status, headers, _ = raw_request(
            process.url,
            "GET",
            "/mlflow/api/2.0/mlflow/experiments/search",
            {"Authorization": f"Bearer {key}", "X-Request-ID": "x" * 200},
        )
        made = headers["x-request-id"]
        assert len(made) == 32 and upstream.header(-1, "X-Request-ID") == [made]
        # Gateway-made answers carry it too, and the access line names it.
        status, headers, _ = raw_request(process.url, "GET", "/nowhere", {"X-Request-ID": "lost-1"})
        assert status == 404 and headers["x-request-id"] == "lost-1"
    finally:
        process.stop()
    assert "lost-1 127.0.0.1 GET /nowhere -> - 404" in process.log()
    upstream_path = "/api/2.0/mlflow/experiments/search"
    assert f"{made} 127.0.0.1 GET /mlflow{upstream_path} -> {upstream_path} 200" in process.log()


def test_debug_mode_adds_rewrite_headers_and_timing(upstream: ThreadedStub, tmp_path: Path) -> None:
    quiet, quiet_key = start(upstream, tmp_path / "quiet")
    loud, loud_key = start(upstream, tmp_path / "loud", MLFLOW_PROXY_DEBUG="true")
    try:
        traffic(quiet, quiet_key)
        traffic(loud, loud_key)
    finally:
        quiet.stop()
        loud.stop()
    for marker in (
        "rewrite: /mlflow/api/2.0/mlflow/experiments/search -> mount '/mlflow'",
        "forwarded headers:",
        "upstream answered 200: head after",
    ):
        assert marker in loud.log()
        assert marker not in quiet.log()
    assert "set-cookie: [redacted]" in loud.log().lower()  # the upstream's cookie, in the response headers


def test_json_lines(upstream: ThreadedStub, tmp_path: Path) -> None:
    process, key = start(upstream, tmp_path / "gw", LOG_FORMAT="json", MLFLOW_PROXY_DEBUG="true")
    try:
        traffic(process, key)
    finally:
        process.stop()
    # Everything but the start-up banner on standard output is a JSON object.
    banner = ("Hokusai Registry ", "No API keys yet")
    lines = [
        json.loads(line)
        for line in process.log().splitlines()
        if line.strip() and not line.startswith(banner)
    ]
    access = [line for line in lines if line["logger"] == "hokusai_registry.access"]
    assert {line["status"] for line in access} >= {200, 400, 401}
    first = next(line for line in access if line["status"] == 200 and line["path"].startswith("/mlflow/"))
    assert first["key_id"] == key.split("_")[2] and first["upstream"] == "/api/2.0/mlflow/experiments/search"
    assert first["bytes_out"] > 0 and first["duration_ms"] >= 0 and len(first["request_id"]) == 32


@pytest.mark.parametrize(
    "env", [{}, {"MLFLOW_PROXY_DEBUG": "true"}, {"LOG_FORMAT": "json", "MLFLOW_PROXY_DEBUG": "1"}]
)
def test_a_key_never_reaches_the_logs(env: dict[str, str], upstream: ThreadedStub, tmp_path: Path) -> None:
    process, key = start(upstream, tmp_path / "gw", **env)
    try:
        traffic(process, key)
    finally:
        process.stop()
    log = process.log()
    secret = key.split("_")[3]
    assert key not in log and secret not in log and secret[:12] not in log
