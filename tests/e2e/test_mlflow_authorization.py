"""The authorization function MLflow's auth app calls (mlflow_app/authorization.py), in Flask request
contexts as MLflow makes them, without a socket: the live suite's MLflow runs it for real, without
coverage (tests/helpers.py), so its branches are proven here. In this folder because it imports Flask and,
for the user store, MLflow."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from werkzeug.datastructures import Authorization

from hokusai_registry.mlflow_app import authorization
from hokusai_registry.policy.assertions import UNBOUND_BODY, body_digest, sign
from tests.helpers import assertion_secret

APP = Flask("mlflow-like")
PATH = "/api/2.0/mlflow/runs/log-metric"
BODY = b'{"run_id": "r1", "key": "loss", "value": 0.5, "timestamp": 1}'


@pytest.fixture(autouse=True)
def users(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Users the function makes sure of, instead of MLflow's auth store."""
    seen: list[str] = []
    monkeypatch.setattr(authorization._users, "ensure", lambda user, now: seen.append(user))
    monkeypatch.setattr(authorization, "_nonces", authorization._Nonces())
    yield seen


def header(user: str = "alice", path: str = PATH, query: str = "", body: str | None = None, **kw: Any) -> str:
    value = sign(
        assertion_secret(),
        user,
        kw.get("method", "POST"),
        path,
        query,
        now=kw.get("now", time.time()),
        nonce=kw.get("nonce", "n-" + str(time.monotonic_ns())),
        body=body_digest(BODY) if body is None else body,
    )
    return value.decode()


def call(value: str | None, *, path: str = PATH, data: bytes = BODY, bridge: bool = False) -> Any:
    headers = {"X-Hokusai-Assertion": value} if value else {}
    with APP.test_request_context(path=path, method="POST", headers=headers, data=data):
        from flask import request

        if not bridge:  # MLflow's Flask routes run under starlette's WSGI environ, which has no RAW_URI
            request.environ.pop("RAW_URI", None)
        return authorization.authenticate()


def refusal(answer: Any) -> str:
    assert not isinstance(answer, Authorization), answer
    assert answer.status_code == 401
    payload = json.loads(answer.get_data())
    assert payload["error_code"] == "UNAUTHENTICATED"
    return str(payload["message"])


def test_the_asserted_user_is_the_caller_and_exists(users: list[str]) -> None:
    answer = call(header())
    assert isinstance(answer, Authorization) and answer.username == "alice"
    assert users == ["alice"]


def test_without_a_valid_assertion_the_answer_is_mlflow_json_401() -> None:
    assert "carries no gateway assertion" in refusal(call(None))
    assert "not valid for this request" in refusal(call(header(path="/other")))
    assert "expired" in refusal(call(header(now=time.time() - 120)))


def test_the_body_must_be_the_one_signed() -> None:
    assert "not the one the gateway signed" in refusal(call(header(), data=BODY.replace(b"0.5", b"99")))


def test_a_streamed_body_and_mlflows_fastapi_bridge_check_no_body() -> None:
    assert isinstance(call(header(body=UNBOUND_BODY), data=b"any bytes"), Authorization)
    # MLflow's FastAPI routes call the function in a context of their own without the body.
    assert isinstance(call(header(), data=b"", bridge=True), Authorization)


def test_a_nonce_is_good_again_for_its_request_only() -> None:
    value = header(nonce="once")
    assert isinstance(call(value), Authorization)
    assert isinstance(call(value), Authorization)  # MLflow checks again within the same request
    other = header(nonce="once", path="/api/2.0/mlflow/runs/delete")
    assert "already used for another request" in refusal(call(other, path="/api/2.0/mlflow/runs/delete"))


def test_the_answer_is_kept_for_the_request(users: list[str]) -> None:
    with APP.test_request_context(
        path=PATH, method="POST", headers={"X-Hokusai-Assertion": header()}, data=BODY
    ):
        first = authorization.authenticate()
        second = authorization.authenticate()
    assert first is second and users == ["alice"]
