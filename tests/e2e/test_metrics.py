"""/metrics over live HTTP: protected by a key, counters move with traffic, no key in the output."""

from __future__ import annotations

import re
from pathlib import Path

import requests

from tests.helpers import GatewayProcess, TcpServer, free_port, mistyped, raw_request
from tests.support.stub import ThreadedStub


def scrape(url: str, key: str) -> str:
    """The metrics of the gateway at `url`, read with `key`."""
    response = requests.get(url + "/metrics", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return response.text


def value(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
            if all(found.get(k) == v for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_need_a_key_and_move_with_traffic(tmp_path: Path) -> None:
    upstream = ThreadedStub()
    process = GatewayProcess(upstream.url, tmp_path / "gw")
    try:
        key = process.create_key("metrics")
        refused = requests.get(process.url + "/metrics", timeout=10)
        assert refused.status_code == 401 and refused.json()["error_code"] == "UNAUTHENTICATED"
        before = scrape(process.url, key)
        path = "/mlflow/api/2.0/mlflow/experiments/search"
        for _ in range(3):
            raw_request(process.url, "GET", path, {"Authorization": f"Bearer {key}"})
        raw_request(process.url, "POST", path, {"Authorization": f"Bearer {key}"}, b'{"max_results": 5}')
        raw_request(process.url, "GET", path)  # no key
        raw_request(process.url, "GET", path, {"Authorization": f"Bearer {mistyped(key)}"})  # typo
        raw_request(process.url, "GET", "/elsewhere", {"Authorization": f"Bearer {key}"})
        after = scrape(process.url, key)
    finally:
        process.stop()
        upstream.stop()
    ok = {"family": "rest", "method": "GET", "status_class": "2xx"}
    assert value(after, "hokusai_requests_total", **ok) - value(before, "hokusai_requests_total", **ok) == 3
    assert value(after, "hokusai_requests_total", family="rest", method="POST", status_class="2xx") == 1
    assert value(after, "hokusai_requests_total", family="none", method="GET", status_class="4xx") == 1
    assert value(after, "hokusai_auth_failures_total", reason="missing") >= 1
    assert value(after, "hokusai_auth_failures_total", reason="malformed") == 1
    assert value(after, "hokusai_body_bytes_total", direction="in") >= 18
    assert value(after, "hokusai_body_bytes_total", direction="out") > value(
        before, "hokusai_body_bytes_total", direction="out"
    )
    assert value(after, "hokusai_upstream_response_seconds_count", family="rest") == 4
    assert value(after, "hokusai_requests_in_flight") == 1  # the scrape itself
    assert key not in after and key.split("_")[3] not in after and key.split("_")[2] not in after


def test_upstream_errors_by_kind(tmp_path: Path) -> None:
    balancer = TcpServer()  # sends the gateway's own traffic back to it: a loop
    process = GatewayProcess(balancer.url, tmp_path / "loop")
    balancer.relay_to = process.port
    dead = GatewayProcess(f"http://127.0.0.1:{free_port()}", tmp_path / "dead")
    try:
        loop_key, dead_key = process.create_key("k"), dead.create_key("k")
        path = "/mlflow/api/2.0/mlflow/experiments/search"
        assert raw_request(process.url, "GET", path, {"Authorization": f"Bearer {loop_key}"})[0] == 508
        assert raw_request(dead.url, "GET", path, {"Authorization": f"Bearer {dead_key}"})[0] == 502
        assert value(scrape(process.url, loop_key), "hokusai_upstream_errors_total", kind="loop") == 1
        assert value(scrape(dead.url, dead_key), "hokusai_upstream_errors_total", kind="refused") == 1
    finally:
        process.stop()
        dead.stop()
        balancer.stop()
