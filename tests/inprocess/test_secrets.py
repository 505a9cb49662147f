"""No secret leaves the gateway on the usual mistakes (a mistyped key, a key in the URL, Basic auth, two
credentials at once) or from its own endpoints (metrics, detailed health, the key API, validate), in
process: the key, its secret part, its stored hash and the mistyped secret appear in no log line (debug
level, JSON as with LOG_FORMAT=json, and text), audit line, answer the gateway made, or request the stub
MLflow received. (The whole registration flow with the real MLflow client, through a gateway process, is
in tests/e2e/test_secrets.py.)"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Iterator

import pytest

from hokusai_registry.ops import logs
from hokusai_registry.ops.audit import AUDIT_LOGGER, AuditFormatter
from hokusai_registry.policy import keys
from tests.helpers import mistyped
from tests.support.inprocess import InProcessGateway
from tests.support.logs import captured
from tests.support.loop import LoopThread
from tests.support.stub import MLFLOW_HEALTH_ANSWERS, StubUpstream

GatewayFactory = Callable[..., InProcessGateway]


@pytest.fixture(scope="module")
def upstream(loop: LoopThread) -> Iterator[StubUpstream]:
    """A healthy MLflow to the health checks (the detailed health answer is then a 200)."""
    stub = StubUpstream(MLFLOW_HEALTH_ANSWERS)
    loop.run(stub.start())
    yield stub
    loop.run(stub.stop())


def test_no_secret_in_logs_answers_or_upstream_requests(
    new_gateway: GatewayFactory, upstream: StubUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Access lines carry their JSON fields only once LOG_FORMAT=json has been configured.
    monkeypatch.setattr(logs, "_json_lines", True)
    seen: dict[str, str] = {}
    search = "/api/2.0/mlflow/experiments/search?max_results=1"
    with (
        captured("hokusai_registry", logs.JsonFormatter(), logging.DEBUG) as json_log,
        captured("hokusai_registry", logs.TextFormatter(), logging.DEBUG) as text_log,
        captured(AUDIT_LOGGER, AuditFormatter()) as audit_log,
    ):
        # Built at debug level, as MLFLOW_PROXY_DEBUG=true starts it: the forwarder logs its rewrites.
        gateway = new_gateway(upstream.url)
        key = gateway.create_key("leak-check", admin=True)
        wrong = mistyped(key)
        secrets = {
            "key": key,
            "secret": key.split("_", 3)[3],
            "hash": keys.digest(key),
            "mistyped secret": wrong.split("_", 3)[3],
        }
        basic = base64.b64encode(f"me:{key}".encode()).decode()
        answers = [
            gateway.request("GET", search, headers={"Authorization": f"Bearer {wrong}"}),
            gateway.request("GET", search + f"&token={key}"),
            gateway.request("GET", search, headers={"Authorization": f"Basic {basic}"}),
            gateway.request("GET", search, headers={"X-API-Key": key, "Authorization": "Token nope"}),
            gateway.request("GET", "/metrics", headers={"X-API-Key": key}),
            gateway.request("GET", "/mlflow/health/mlflow/detailed", headers={"X-API-Key": key}),
            gateway.request("GET", "/api/v1/keys", headers={"X-API-Key": key}),
            gateway.request(
                "POST", "/api/v1/keys/validate", json={}, headers={"Authorization": f"Bearer {wrong}"}
            ),
        ]
    assert [answer.status_code for answer in answers] == [401, 400, 200, 401, 200, 200, 200, 401]
    for number, answer in enumerate(answers):
        seen[f"answer {number}"] = answer.text + str(answer.headers)
    seen["gateway log (json)"] = json_log.text()
    seen["gateway log (text)"] = text_log.text()
    seen["audit log"] = audit_log.text()
    assert upstream.requests
    seen["upstream requests"] = "\n".join(
        f"{arrival.method} {arrival.target} {arrival.headers} {arrival.body.decode('latin-1')}"
        for arrival in upstream.requests
    )

    assert '"level": "debug"' in seen["gateway log (json)"]  # debug lines really were written
    assert '"logger": "hokusai_registry.access"' in seen["gateway log (json)"]
    assert '"audit": "auth.failed"' in seen["audit log"]
    for where, text in seen.items():
        for what, secret in secrets.items():
            assert secret not in text, f"the {what} appears in the {where}"
