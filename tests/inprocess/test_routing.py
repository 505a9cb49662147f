"""What reaches the upstream, byte for byte, and what the gateway answers itself, in process: the real
gateway in front of a recording stub. Requests carry their target as given, so no client normalises the
paths under test. (The HTTP parser's own limits, timeouts and startup refusals stay in
tests/e2e/test_routing.py.)"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web

from tests.support.inprocess import InProcessGateway, exchange
from tests.support.stub import Arrival, StubUpstream

GatewayFactory = Callable[..., InProcessGateway]
UpstreamFactory = Callable[..., StubUpstream]
SEARCH = "/mlflow/api/2.0/mlflow/experiments/search"


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
    target: str, gateway: InProcessGateway, key: str, upstream: StubUpstream
) -> None:
    before = len(upstream.requests)
    status, headers, body = gateway.raw("GET", target, auth(key))
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
    target: str, gateway: InProcessGateway, key: str, upstream: StubUpstream
) -> None:
    before = len(upstream.requests)
    status, _, body = gateway.raw("GET", target, auth(key))
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
    target: str, forwarded: str, gateway: InProcessGateway, key: str, upstream: StubUpstream
) -> None:
    if "graphql" in target:  # the gateway reads GraphQL bodies to tell queries from mutations
        status, _, _ = gateway.raw("POST", target, auth(key), b'{"query": "{ test { output } }"}')
    else:
        status, _, _ = gateway.raw("GET", target, auth(key))
    assert status == 200
    assert upstream.requests[-1].target == forwarded


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
    method: str, target: str, forwarded: str, gateway: InProcessGateway, key: str, upstream: StubUpstream
) -> None:
    before = len(upstream.requests)
    status, _, body = gateway.raw(method, target, auth(key), b"{}")
    assert (
        status == 403
        and "HOKUSAI_DIRECT_ARTIFACT_TRANSFERS" in assert_mlflow_error(body, "PERMISSION_DENIED")["message"]
    )
    assert len(upstream.requests) == before


def test_presigned_minting_is_forwarded_when_direct_transfers_are_on(
    upstream: StubUpstream, new_gateway: GatewayFactory
) -> None:
    direct = new_gateway(upstream.url, direct_artifact_transfers=True)
    key = direct.create_key("direct")
    for method, target, forwarded in MINTING:
        # The presigned download is a GET on a transfer route: it takes no body.
        status, _, _ = direct.raw(method, target, auth(key), b"" if method == "GET" else b"{}")
        assert status == 200
        assert upstream.requests[-1].target == forwarded


def test_header_rules_towards_upstream(gateway: InProcessGateway, key: str, upstream: StubUpstream) -> None:
    status, response_headers, _ = gateway.raw(
        "GET",
        SEARCH,
        {
            **auth(key),
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
    sent = {name.lower() for name, _ in upstream.requests[-1].headers}
    for dropped in ("authorization", "x-api-key", "cookie", "forwarded", "x-drop-me", "te", "keep-alive"):
        assert dropped not in sent
    # The caller is on loopback, a trusted proxy by default (HOKUSAI_FORWARDED_ALLOW_IPS), so its
    # X-Forwarded-For names the client; the gateway sends one value, never an appended chain.
    assert upstream.header(-1, "X-Forwarded-For") == ["6.6.6.6"]
    assert upstream.header(-1, "X-Forwarded-Host") == [gateway.url.removeprefix("http://")]
    assert upstream.header(-1, "X-Hokusai-Key-Id") == [key.split("_")[2]]
    assert upstream.header(-1, "Host") == [f"127.0.0.1:{upstream.port}"]
    assert upstream.header(-1, "X-Custom") == ["kept"]
    assert upstream.header(-1, "Accept-Encoding") == ["gzip"]
    # Hop-by-hop headers from the upstream never reach the client.
    assert "x-upstream-hop" not in response_headers and "keep-alive" not in response_headers


def test_upstream_cookies_are_never_replayed(
    gateway: InProcessGateway, key: str, upstream: StubUpstream
) -> None:
    for _ in range(2):  # the upstream sets a cookie on every answer
        gateway.raw("GET", SEARCH, auth(key))
    assert upstream.header(-1, "Cookie") == []


def test_connection_header_sent_by_client_is_dropped(
    gateway: InProcessGateway, key: str, upstream: StubUpstream
) -> None:
    response = gateway.request(
        "GET", SEARCH, headers={**auth(key), "Connection": "keep-alive, X-Secret-Hop", "X-Secret-Hop": "1"}
    )
    assert response.status_code == 200
    assert upstream.header(-1, "X-Secret-Hop") == []


@pytest.mark.parametrize(
    ("target", "location"), [("/mlflow", "/mlflow/"), ("/api/mlflow?x=1", "/api/mlflow/?x=1")]
)
def test_mount_without_slash_redirects(target: str, location: str, gateway: InProcessGateway) -> None:
    status, headers, _ = gateway.raw("GET", target)
    assert status == 308
    assert headers["location"] == location


def test_key_in_query_string_is_refused(gateway: InProcessGateway, key: str, upstream: StubUpstream) -> None:
    before = len(upstream.requests)
    status, _, body = gateway.raw("GET", f"{SEARCH}?api_key={key}", auth(key))
    assert status == 400
    assert key not in body.decode()
    assert_mlflow_error(body, "INVALID_PARAMETER_VALUE")
    assert len(upstream.requests) == before


def test_cross_origin_write_is_refused_and_same_origin_write_loses_its_origin(
    gateway: InProcessGateway, key: str, upstream: StubUpstream
) -> None:
    target = "/mlflow/ajax-api/2.0/mlflow/experiments/create"
    status, _, body = gateway.raw("POST", target, {**auth(key), "Origin": "https://evil.example"}, b"{}")
    assert status == 403
    assert_mlflow_error(body, "PERMISSION_DENIED")
    status, _, _ = gateway.raw("POST", target, {**auth(key), "Origin": gateway.url}, b"{}")
    assert status == 200
    assert upstream.header(-1, "Origin") == []
    assert upstream.requests[-1].body == b"{}"


@pytest.mark.parametrize("method", ["TRACE", "CONNECT", "OPTIONS"])
def test_other_methods_are_answered_by_the_gateway(
    method: str, gateway: InProcessGateway, key: str, upstream: StubUpstream
) -> None:
    before = len(upstream.requests)
    status, _, body = gateway.raw(method, SEARCH, auth(key))
    assert status == 405
    assert_mlflow_error(body, "BAD_REQUEST")
    assert len(upstream.requests) == before


def search(gateway: InProcessGateway) -> tuple[int, dict[str, Any]]:
    status, _, body = gateway.raw("GET", SEARCH, auth(gateway.create_key("k")))
    return status, json.loads(body)


def test_stopped_upstream_gives_502_naming_it(
    new_upstream: UpstreamFactory, new_gateway: GatewayFactory, loop: Any
) -> None:
    stopped = new_upstream()
    loop.run(stopped.stop())  # its port is closed now, and stays ours until the test ends
    status, payload = search(new_gateway(stopped.url))
    assert status == 502
    assert payload["error_code"] == "TEMPORARILY_UNAVAILABLE"
    assert stopped.url in payload["message"] and "MLFLOW_SERVER_URL" in payload["message"]


def test_a_small_answer_that_stops_short_gives_502_not_a_short_body(
    new_upstream: UpstreamFactory, new_gateway: GatewayFactory
) -> None:
    """MLflow declares a small body, sends part of it and goes away: the gateway holds a small answer's
    head until the body is whole, so the client gets an error it can read instead of a cut answer."""

    async def short(arrival: Arrival, request: web.Request) -> web.StreamResponse:
        answer = web.StreamResponse(headers={"Content-Type": "application/json"})
        answer.content_length = 100
        await answer.prepare(request)
        await answer.write(b'{"experiments": [')
        assert request.transport is not None
        request.transport.close()
        return answer

    status, payload = search(new_gateway(new_upstream(handler=short).url))
    assert status == 502
    assert payload["error_code"] == "TEMPORARILY_UNAVAILABLE"
    assert "lost the connection to MLflow" in payload["message"]


def test_request_that_loops_back_gets_508(new_upstream: UpstreamFactory, new_gateway: GatewayFactory) -> None:
    """A "load balancer" that sends the gateway's upstream traffic back into the gateway itself."""
    looped: list[InProcessGateway] = []

    async def back_into_the_gateway(arrival: Arrival, request: web.Request) -> web.StreamResponse:
        headers = [(name.lower().encode(), value.encode()) for name, value in arrival.headers]
        status, answer_headers, body = await exchange(
            looped[0].app, arrival.method, arrival.target.encode(), headers, arrival.body
        )
        content_type = dict(answer_headers).get(b"content-type", b"application/json").decode()
        return web.Response(status=status, body=body, headers={"Content-Type": content_type})

    balancer = new_upstream(handler=back_into_the_gateway)
    looped.append(new_gateway(balancer.url))
    status, payload = search(looped[0])
    assert status == 508
    assert payload["error_code"] == "INTERNAL_ERROR"
    assert "MLFLOW_SERVER_URL points back at the gateway" in payload["message"]
    assert len(balancer.requests) == 1  # refused on its first return, not relayed round and round


def test_gateway_routes_are_answered_by_the_gateway(
    gateway: InProcessGateway, key: str, upstream: StubUpstream
) -> None:
    before = len(upstream.requests)
    status, headers, body = gateway.raw("GET", "/health")
    assert (status, json.loads(body)) == (200, {"status": "ok"})
    assert headers["x-hokusai-origin"] == "gateway"
    status, _, body = gateway.raw("POST", "/health", auth(key))
    assert status == 405
    assert_mlflow_error(body, "BAD_REQUEST")
    assert len(upstream.requests) == before
    # Under a mount, /health is MLflow's own and is forwarded like any MLflow path.
    status, _, _ = gateway.raw("GET", "/mlflow/health", auth(key))
    assert status == 200 and upstream.requests[-1].target == "/health"
