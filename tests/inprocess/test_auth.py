"""Credentials the gateway judges before anything is forwarded, in process in front of a stub MLflow:
X-API-Key, Basic without a password, and callers without credentials on UI pages (sent to /login) and UI
calls (a 401 in JSON). (What the unmodified MLflow client shows for a refused key, and key changes made
with the CLI, stay in tests/e2e/test_auth.py.)"""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import urlencode

import pytest

from tests.support.inprocess import InProcessGateway
from tests.support.loop import LoopThread
from tests.support.stub import StubUpstream

SEARCH = "/api/2.0/mlflow/experiments/search"


@pytest.fixture(scope="module")
def upstream(loop: LoopThread) -> Iterator[StubUpstream]:
    stub = StubUpstream({SEARCH: (200, "application/json", b'{"experiments": []}')})
    loop.run(stub.start())
    yield stub
    loop.run(stub.stop())


def test_basic_without_password_explains(gateway: InProcessGateway, upstream: StubUpstream) -> None:
    # An empty password makes the MLflow client skip Basic; sent by hand, as a misconfigured tool would.
    before = len(upstream.requests)
    response = gateway.request("GET", "/mlflow" + SEARCH, auth=("me", ""))
    assert response.status_code == 401
    assert response.json()["error_code"] == "UNAUTHENTICATED"
    assert "MLFLOW_TRACKING_PASSWORD" in response.json()["message"]
    assert len(upstream.requests) == before


def test_x_api_key_header_works(gateway: InProcessGateway, key: str, upstream: StubUpstream) -> None:
    response = gateway.request(
        "POST", "/api/mlflow" + SEARCH, json={"max_results": 1}, headers={"X-API-Key": key}
    )
    assert response.status_code == 200
    assert "experiments" in response.json()
    assert upstream.requests[-1].target == SEARCH and upstream.header(-1, "X-API-Key") == []


def test_ui_page_without_credentials_goes_to_the_login_page(
    gateway: InProcessGateway, upstream: StubUpstream
) -> None:
    before = len(upstream.requests)
    for mount in ("/mlflow/", "/api/mlflow/", "/"):
        status, headers, _ = gateway.raw("GET", mount)
        assert status == 303, mount
        assert headers["location"] == "/login?" + urlencode({"next": mount}), mount
        assert "www-authenticate" not in headers
    assert len(upstream.requests) == before


def test_ui_calls_without_credentials_get_401_json_never_a_redirect(
    gateway: InProcessGateway, upstream: StubUpstream
) -> None:
    before = len(upstream.requests)
    for path in (
        "/mlflow/ajax-api/2.0/mlflow/experiments/search?max_results=1",
        "/mlflow/static-files/static/js/main.js",
        "/mlflow/graphql",
        "/mlflow/get-artifact?path=x&run_uuid=y",
    ):
        status, headers, body = gateway.raw("GET", path)
        assert status == 401, path
        assert "location" not in headers
        assert json.loads(body)["error_code"] == "UNAUTHENTICATED"
    assert len(upstream.requests) == before
