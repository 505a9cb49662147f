"""What reaches the upstream, byte for byte, and what the gateway answers itself. A recording
upstream shows exactly what was forwarded; requests are sent raw so no client normalises them."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.helpers import HOKUSAI, GatewayProcess, RecordingUpstream, TcpServer, free_port, raw_request


@pytest.fixture(scope="module")
def upstream() -> Iterator[RecordingUpstream]:
    server = RecordingUpstream()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def echo_gateway(
    upstream: RecordingUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    process = GatewayProcess(upstream.url, tmp_path_factory.mktemp("echo-gateway"))
    yield process
    process.stop()


@pytest.fixture(scope="module")
def echo_key(echo_gateway: GatewayProcess) -> str:
    return echo_gateway.create_key("routing")


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_mlflow_error(body: bytes, code: str) -> dict[str, str]:
    payload: dict[str, str] = json.loads(body)
    assert payload["error_code"] == code
    assert "Hokusai Registry gateway" in payload["message"]
    return payload


TRAVERSALS = [
    "/mlflow/api/2.0/mlflow-artifacts/artifacts/1/../../../etc/passwd",
    "/mlflow/api/2.0/mlflow-artifacts/artifacts/1/%2e%2e/%2e%2e/secret",
    "/mlflow/api/2.0/mlflow-artifacts/artifacts/1/%2E%2E/secret",
    "/mlflow/api/2.0/mlflow-artifacts/artifacts/1/.%2e/secret",
    "/mlflow/api/2.0/mlflow-artifacts/artifacts/1/%2e./secret",
    "/mlflow/api/2.0/mlflow-artifacts/artifacts/1%2f..%2fsecret",
    "/mlflow/api/2.0/mlflow-artifacts/artifacts/1%2F..%2Fsecret",
    "/mlflow/api/2.0/mlflow-artifacts/artifacts/1/%252e%252e/secret",
    "/mlflow/api/2.0/mlflow-artifacts/artifacts/1/..%5c..%5csecret",
    "/mlflow/api/2.0/mlflow-artifacts/artifacts/1/..\\..\\secret",
    "/mlflow/api/2.0/mlflow-artifacts/artifacts/1/a%00b",
    "/mlflow/api/2.0/mlflow-artifacts/artifacts/1/%c0%ae%c0%ae/secret",
    "/mlflow/./api/2.0/mlflow/experiments/search",
    "/mlflow/api/2.0/mlflow/experiments/../runs/search",
    "/mlflow//api/2.0/mlflow/experiments/search",
    "/api/mlflow/api/2.0/mlflow-artifacts/artifacts/..",
    "/mlflow/api/2.0/mlflow-artifacts/artifacts/1/%zz",
]


@pytest.mark.parametrize("target", TRAVERSALS)
def test_traversal_is_rejected_and_never_forwarded(
    target: str, echo_gateway: GatewayProcess, echo_key: str, upstream: RecordingUpstream
) -> None:
    before = len(upstream.requests)
    status, headers, body = raw_request(echo_gateway.url, "GET", target, auth(echo_key))
    assert status == 400
    assert headers["x-hokusai-origin"] == "gateway"
    assert_mlflow_error(body, "INVALID_PARAMETER_VALUE")
    assert len(upstream.requests) == before


@pytest.mark.parametrize(
    "target",
    [
        "/admin",
        "/mlflow/etc/passwd",
        "/api/2.0mlflow/experiments/search",
        "/mlflow/api/2.0/other/x",
        "/api/v1/anything",
        "/mlflow/api/4.0/mlflow/runs/get",
    ],
)
def test_unknown_paths_get_json_404_and_are_not_forwarded(
    target: str, echo_gateway: GatewayProcess, echo_key: str, upstream: RecordingUpstream
) -> None:
    before = len(upstream.requests)
    status, _, body = raw_request(echo_gateway.url, "GET", target, auth(echo_key))
    assert status == 404
    assert_mlflow_error(body, "ENDPOINT_NOT_FOUND")
    assert len(upstream.requests) == before


@pytest.mark.parametrize(
    ("target", "forwarded"),
    [
        ("/mlflow/api/2.0/mlflow/experiments/search", "/api/2.0/mlflow/experiments/search"),
        ("/api/mlflow/api/3.0/mlflow/traces", "/api/3.0/mlflow/traces"),
        ("/ajax-api/2.0/mlflow/runs/search", "/ajax-api/2.0/mlflow/runs/search"),
        (
            "/mlflow/api/2.0/mlflow-artifacts/artifacts/1/r/artifacts/a%20b.txt",
            "/api/2.0/mlflow-artifacts/artifacts/1/r/artifacts/a%20b.txt",
        ),
        ("/mlflow/get-artifact?path=x&run_uuid=r", "/get-artifact?path=x&run_uuid=r"),
        (
            "/mlflow/model-versions/get-artifact?name=m&version=1&path=x",
            "/model-versions/get-artifact?name=m&version=1&path=x",
        ),
        ("/mlflow/graphql", "/graphql"),
        ("/mlflow/v1/traces", "/v1/traces"),
        ("/mlflow/version", "/version"),
        ("/mlflow/health", "/health"),
        ("/mlflow/ajax-api/3.0/jobs/search", "/ajax-api/3.0/jobs/search"),
        ("/mlflow/gateway/openai/v1/chat/completions", "/gateway/openai/v1/chat/completions"),
        ("/mlflow/static-files/static/js/main.js", "/static-files/static/js/main.js"),
        ("/mlflow/", "/"),
        # The artifact list call carries an encoded path in its query string, which stays as sent.
        (
            "/mlflow/api/2.0/mlflow-artifacts/artifacts?path=1%2Fmodels%2Fm-1%2Fartifacts",
            "/api/2.0/mlflow-artifacts/artifacts?path=1%2Fmodels%2Fm-1%2Fartifacts",
        ),
        (
            "/ajax-api/2.0/mlflow/metrics/get-history-bulk?run_id=a&run_id=b&run_id=a&metric_key=m",
            "/ajax-api/2.0/mlflow/metrics/get-history-bulk?run_id=a&run_id=b&run_id=a&metric_key=m",
        ),
    ],
)
def test_forwarded_path_is_exactly_the_authorized_one(
    target: str, forwarded: str, echo_gateway: GatewayProcess, echo_key: str, upstream: RecordingUpstream
) -> None:
    status, _, _ = raw_request(
        echo_gateway.url, "POST" if "graphql" in target else "GET", target, auth(echo_key)
    )
    assert status == 200
    assert upstream.requests[-1]["target"] == forwarded


MINTING = [
    (
        "POST",
        "/mlflow/api/2.0/mlflow-artifacts/mpu/create/1/r/artifacts",
        "/api/2.0/mlflow-artifacts/mpu/create/1/r/artifacts",
    ),
    (
        "GET",
        "/mlflow/api/2.0/mlflow-artifacts/presigned/1/r/artifacts/m",
        "/api/2.0/mlflow-artifacts/presigned/1/r/artifacts/m",
    ),
    (
        "POST",
        "/mlflow/api/2.0/mlflow/artifacts/presigned-upload-url",
        "/api/2.0/mlflow/artifacts/presigned-upload-url",
    ),
]


@pytest.mark.parametrize(("method", "target", "forwarded"), MINTING)
def test_presigned_minting_is_refused_by_default(
    method: str,
    target: str,
    forwarded: str,
    echo_gateway: GatewayProcess,
    echo_key: str,
    upstream: RecordingUpstream,
) -> None:
    before = len(upstream.requests)
    status, _, body = raw_request(echo_gateway.url, method, target, auth(echo_key), b"{}")
    assert (
        status == 403
        and "HOKUSAI_DIRECT_ARTIFACT_TRANSFERS" in assert_mlflow_error(body, "PERMISSION_DENIED")["message"]
    )
    assert len(upstream.requests) == before


def test_presigned_minting_is_forwarded_when_direct_transfers_are_on(
    upstream: RecordingUpstream, tmp_path_factory: pytest.TempPathFactory
) -> None:
    direct = GatewayProcess(
        upstream.url, tmp_path_factory.mktemp("direct"), env={"HOKUSAI_DIRECT_ARTIFACT_TRANSFERS": "true"}
    )
    try:
        key = direct.create_key("direct")
        for method, target, forwarded in MINTING:
            status, _, _ = raw_request(direct.url, method, target, auth(key), b"{}")
            assert status == 200
            assert upstream.requests[-1]["target"] == forwarded
    finally:
        direct.stop()


def test_request_line_of_60_kb_reaches_upstream_intact(
    echo_gateway: GatewayProcess, echo_key: str, upstream: RecordingUpstream
) -> None:
    query = "&".join(f"run_id={i:032x}" for i in range(1500))  # 60 KB, repeated parameters
    status, _, _ = raw_request(
        echo_gateway.url,
        "GET",
        "/mlflow/ajax-api/2.0/mlflow/metrics/get-history-bulk?" + query,
        auth(echo_key),
    )
    assert status == 200
    assert upstream.requests[-1]["target"] == "/ajax-api/2.0/mlflow/metrics/get-history-bulk?" + query


def test_header_rules_towards_upstream(
    echo_gateway: GatewayProcess, echo_key: str, upstream: RecordingUpstream
) -> None:
    status, response_headers, _ = raw_request(
        echo_gateway.url,
        "GET",
        "/mlflow/api/2.0/mlflow/experiments/search",
        {
            **auth(echo_key),
            "X-API-Key": "also-a-credential",
            "Cookie": "session=abc",
            "X-Forwarded-For": "6.6.6.6",
            "X-Forwarded-Host": "evil.example",
            "Forwarded": "for=6.6.6.6",
            "X-Hokusai-Key-Id": "forged",
            "Connection": "close, X-Drop-Me",
            "X-Drop-Me": "listed in Connection",
            "TE": "trailers",
            "Keep-Alive": "timeout=5",
            "X-Custom": "kept",
            "Accept-Encoding": "gzip",
        },
    )
    assert status == 200
    sent = {name.lower() for name, _ in upstream.requests[-1]["headers"]}  # type: ignore[union-attr]
    for dropped in ("authorization", "x-api-key", "cookie", "forwarded", "x-drop-me", "te", "keep-alive"):
        assert dropped not in sent
    # The test client is on loopback, a trusted proxy by default (HOKUSAI_FORWARDED_ALLOW_IPS), so its
    # X-Forwarded-For names the client; the gateway sends one value, never an appended chain.
    assert upstream.header(-1, "X-Forwarded-For") == ["6.6.6.6"]
    assert upstream.header(-1, "X-Forwarded-Host") == [f"127.0.0.1:{echo_gateway.port}"]
    assert upstream.header(-1, "X-Hokusai-Key-Id") == [echo_key.split("_")[2]]
    assert upstream.header(-1, "Host") == [f"127.0.0.1:{upstream.port}"]
    assert upstream.header(-1, "X-Custom") == ["kept"]
    assert upstream.header(-1, "Accept-Encoding") == ["gzip"]
    # Hop-by-hop headers from the upstream never reach the client.
    assert "x-upstream-hop" not in response_headers and "keep-alive" not in response_headers


def test_upstream_cookies_are_never_replayed(
    echo_gateway: GatewayProcess, echo_key: str, upstream: RecordingUpstream
) -> None:
    for _ in range(2):  # the upstream sets a cookie on every answer
        raw_request(echo_gateway.url, "GET", "/mlflow/api/2.0/mlflow/experiments/search", auth(echo_key))
    assert upstream.header(-1, "Cookie") == []


def test_connection_header_sent_by_client_is_dropped(
    echo_gateway: GatewayProcess, echo_key: str, upstream: RecordingUpstream
) -> None:
    # raw_request sends "Connection: close"; add a listed header through a real client as well.
    response = requests.get(
        echo_gateway.url + "/mlflow/api/2.0/mlflow/experiments/search",
        headers={**auth(echo_key), "Connection": "keep-alive, X-Secret-Hop", "X-Secret-Hop": "1"},
        timeout=10,
    )
    assert response.status_code == 200
    assert upstream.header(-1, "X-Secret-Hop") == []


@pytest.mark.parametrize(
    ("target", "location"), [("/mlflow", "/mlflow/"), ("/api/mlflow?x=1", "/api/mlflow/?x=1")]
)
def test_mount_without_slash_redirects(target: str, location: str, echo_gateway: GatewayProcess) -> None:
    status, headers, _ = raw_request(echo_gateway.url, "GET", target)
    assert status == 308
    assert headers["location"] == location


def test_key_in_query_string_is_refused(
    echo_gateway: GatewayProcess, echo_key: str, upstream: RecordingUpstream
) -> None:
    before = len(upstream.requests)
    status, _, body = raw_request(
        echo_gateway.url,
        "GET",
        f"/mlflow/api/2.0/mlflow/experiments/search?api_key={echo_key}",
        auth(echo_key),
    )
    assert status == 400
    assert echo_key not in body.decode()
    assert_mlflow_error(body, "INVALID_PARAMETER_VALUE")
    assert len(upstream.requests) == before


def test_cross_origin_write_is_refused_and_same_origin_write_loses_its_origin(
    echo_gateway: GatewayProcess, echo_key: str, upstream: RecordingUpstream
) -> None:
    target = "/mlflow/ajax-api/2.0/mlflow/experiments/create"
    status, _, body = raw_request(
        echo_gateway.url, "POST", target, {**auth(echo_key), "Origin": "https://evil.example"}, b"{}"
    )
    assert status == 403
    assert_mlflow_error(body, "PERMISSION_DENIED")
    status, _, _ = raw_request(
        echo_gateway.url,
        "POST",
        target,
        {**auth(echo_key), "Origin": f"http://127.0.0.1:{echo_gateway.port}"},
        b"{}",
    )
    assert status == 200
    assert upstream.header(-1, "Origin") == []
    assert upstream.requests[-1]["body_length"] == 2


@pytest.mark.parametrize("method", ["TRACE", "CONNECT", "OPTIONS"])
def test_other_methods_are_answered_by_the_gateway(
    method: str, echo_gateway: GatewayProcess, echo_key: str, upstream: RecordingUpstream
) -> None:
    before = len(upstream.requests)
    status, _, body = raw_request(
        echo_gateway.url, method, "/mlflow/api/2.0/mlflow/experiments/search", auth(echo_key)
    )
    assert status == 405
    assert_mlflow_error(body, "BAD_REQUEST")
    assert len(upstream.requests) == before


def search_through_new_gateway(
    upstream: str, tmp_path: Path, env: dict[str, str] | None = None, port: int | None = None
) -> tuple[int, dict[str, str]]:
    """Start a gateway in front of `upstream`, send one authenticated search, return status and JSON."""
    process = GatewayProcess(upstream, tmp_path / "gw", env=env, port=port)
    try:
        status, _, body = raw_request(
            process.url, "GET", "/mlflow/api/2.0/mlflow/experiments/search", auth(process.create_key("k"))
        )
    finally:
        process.stop()
    return status, json.loads(body)


def test_stopped_upstream_gives_502_naming_it(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    status, payload = search_through_new_gateway(dead, tmp_path)
    assert status == 502
    assert payload["error_code"] == "TEMPORARILY_UNAVAILABLE"
    assert dead in payload["message"] and "MLFLOW_SERVER_URL" in payload["message"]


def test_silent_upstream_gives_504_after_the_read_timeout(tmp_path: Path) -> None:
    silent = TcpServer()
    try:
        status, payload = search_through_new_gateway(
            silent.url, tmp_path, env={"HOKUSAI_UPSTREAM_READ_TIMEOUT": "1"}
        )
    finally:
        silent.stop()
    assert status == 504
    assert payload["error_code"] == "DEADLINE_EXCEEDED"
    assert "HOKUSAI_UPSTREAM_READ_TIMEOUT" in payload["message"]


def test_request_that_loops_back_gets_508(tmp_path: Path) -> None:
    # A "load balancer" that sends the gateway's upstream traffic back to the gateway itself.
    gateway_port = free_port()
    balancer = TcpServer(relay_to=gateway_port)
    try:
        status, payload = search_through_new_gateway(balancer.url, tmp_path, port=gateway_port)
    finally:
        balancer.stop()
    assert status == 508
    assert payload["error_code"] == "INTERNAL_ERROR"
    assert "MLFLOW_SERVER_URL points back at the gateway" in payload["message"]


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


def test_gateway_routes_are_answered_by_the_gateway(
    echo_gateway: GatewayProcess, echo_key: str, upstream: RecordingUpstream
) -> None:
    before = len(upstream.requests)
    status, headers, body = raw_request(echo_gateway.url, "GET", "/health")
    assert (status, json.loads(body)) == (200, {"status": "ok"})
    assert headers["x-hokusai-origin"] == "gateway"
    status, _, body = raw_request(echo_gateway.url, "POST", "/health", auth(echo_key))
    assert status == 405
    assert_mlflow_error(body, "BAD_REQUEST")
    assert len(upstream.requests) == before
    # Under a mount, /health is MLflow's own and is forwarded like any MLflow path.
    status, _, _ = raw_request(echo_gateway.url, "GET", "/mlflow/health", auth(echo_key))
    assert status == 200 and upstream.requests[-1]["target"] == "/health"


@pytest.mark.parametrize(
    "target",
    ["/mlflow/api/2.0/mlflow/experiments/get-by-name?experiment_name=caf\u00e9", "/mlflow/caf\u00e9"],
)
def test_raw_non_ascii_request_target_is_refused_by_the_http_parser(
    target: str, echo_gateway: GatewayProcess, echo_key: str, upstream: RecordingUpstream
) -> None:
    before = len(upstream.requests)
    status, _, _ = raw_request(echo_gateway.url, "GET", target.encode(), auth(echo_key))
    assert status == 400
    assert len(upstream.requests) == before
