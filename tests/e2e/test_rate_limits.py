"""Rate limits on real gateway processes in front of a real MLflow: a key's own limit and the default
from the environment answer 429 RESOURCE_EXHAUSTED with rate-limit headers (the MLflow client stops at
it), repeated failed authentications throttle the address except for keys already checked, two gateways
on one Redis share a key's count, and a gateway whose Redis is down keeps serving and limiting.

Without Redis, windows are aligned to the clock minute, so tests that count to a limit first step clear
of a minute's last seconds (`clear_of_minute_edge`).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from hokusai_registry.policy import keys
from hokusai_registry.store.key_store import DEFAULT_SCOPES
from tests.helpers import HOKUSAI, GatewayProcess, clear_of_minute_edge, free_port, key_store, mistyped

StartGateway = Callable[..., GatewayProcess]


def create_key(data_dir: Path, name: str, per_minute: int | None = None) -> str:
    store = key_store(data_dir)
    try:
        _, key = store.create(
            name, environment="live", scopes=DEFAULT_SCOPES, rate_limit_per_minute=per_minute
        )
    finally:
        store.close()
    return key


def search(gateway: GatewayProcess, key: str, forwarded_for: str | None = None) -> requests.Response:
    """A read with this key; `forwarded_for` sets the client address, as a trusted proxy would."""
    headers = {"Authorization": f"Bearer {key}"}
    if forwarded_for:
        headers["X-Forwarded-For"] = forwarded_for
    return requests.get(
        f"{gateway.url}/api/2.0/mlflow/experiments/search",
        params={"max_results": 1},
        headers=headers,
        timeout=30,
    )


def statuses(gateway: GatewayProcess, key: str, count: int) -> list[int]:
    return [search(gateway, key).status_code for _ in range(count)]


def assert_rate_limited(response: requests.Response, limit: int) -> None:
    """A 429 made by the gateway, in MLflow's error JSON, with all the rate-limit headers."""
    assert response.status_code == 429, response.text
    body = response.json()
    assert body["error_code"] == "RESOURCE_EXHAUSTED"
    assert f"over its limit of {limit} requests per minute" in body["message"]
    headers = response.headers
    assert headers["X-Hokusai-Origin"] == "gateway"
    assert 1 <= int(headers["Retry-After"]) <= 60
    assert int(headers["X-RateLimit-Limit"].partition(";")[0]) == limit
    assert headers["X-RateLimit-Remaining"] == "0"
    assert 1 <= int(headers["X-RateLimit-Reset"]) <= 60


def gateway_env(**env: str) -> dict[str, str]:
    """Only the limits a test sets (none by default), counted in memory, whatever the outer environment."""
    base = {
        "HOKUSAI_RATE_LIMIT_PER_MINUTE": "0",
        "HOKUSAI_RATE_LIMIT_PER_HOUR": "0",
        "HOKUSAI_AUTH_FAILURE_LIMIT": "0",
        "REDIS_URL": "",
    }
    return {**base, **env}


@pytest.fixture
def start_gateway(mlflow_server: str, tmp_path: Path) -> Iterator[StartGateway]:
    """Starts gateways for one test (data directory tmp_path/NAME); all are stopped afterwards."""
    started: list[GatewayProcess] = []

    def start(name: str, **env: str) -> GatewayProcess:
        gateway = GatewayProcess(mlflow_server, tmp_path / name, env=gateway_env(**env))
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()


@pytest.fixture(scope="module")
def limited(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """A gateway with a default of 2 requests per minute per key; each test uses keys of its own."""
    gateway = GatewayProcess(
        mlflow_server, tmp_path_factory.mktemp("limited"), env=gateway_env(HOKUSAI_RATE_LIMIT_PER_MINUTE="2")
    )
    try:
        yield gateway
    finally:
        gateway.stop()


# Per-key limits.


def test_key_over_its_own_limit_gets_429_with_headers(limited: GatewayProcess) -> None:
    """A key's own limit (3) beats the default (2); other keys keep their own count."""
    key, other = create_key(limited.data_dir, "three", per_minute=3), create_key(limited.data_dir, "other")
    clear_of_minute_edge()

    assert statuses(limited, key, 3) == [200] * 3
    assert_rate_limited(search(limited, key), limit=3)
    assert_rate_limited(search(limited, key), limit=3)
    assert search(limited, other).status_code == 200


def test_default_limit_from_the_environment(limited: GatewayProcess) -> None:
    default = create_key(limited.data_dir, "default")
    unlimited = create_key(limited.data_dir, "unlimited", per_minute=0)
    clear_of_minute_edge()

    assert statuses(limited, default, 2) == [200] * 2
    assert_rate_limited(search(limited, default), limit=2)
    assert statuses(limited, unlimited, 6) == [200] * 6


def exhausted_client(gateway: GatewayProcess, client_env: pytest.MonkeyPatch, name: str) -> MlflowClient:
    """The MLflow client, not retrying, with a new key that has just used up its limit of 1 per minute."""
    key = create_key(gateway.data_dir, name, per_minute=1)
    clear_of_minute_edge()
    assert search(gateway, key).status_code == 200
    client_env.setenv("MLFLOW_TRACKING_TOKEN", key)
    client_env.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    return MlflowClient(tracking_uri=gateway.url + "/mlflow")


def test_mlflow_client_stops_at_the_429(limited: GatewayProcess, client_env: pytest.MonkeyPatch) -> None:
    client = exhausted_client(limited, client_env, "client-429")
    with pytest.raises(MlflowException) as raised:
        client.search_experiments()
    assert "429" in str(raised.value)


# The throttle on failed authentications.


def throttle(gateway: GatewayProcess, limit: int) -> requests.Response:
    """Sends unknown keys from 127.0.0.1: exactly `limit` are checked (401), the next one is not."""
    unknown = keys.generate("live").text
    assert statuses(gateway, unknown, limit) == [401] * limit
    return search(gateway, unknown)


def assert_throttled(response: requests.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["error_code"] == "RESOURCE_EXHAUSTED"
    assert "too many failed authentications from this address" in response.json()["message"]
    assert 1 <= int(response.headers["Retry-After"]) <= 60


def throttled_gateway(
    start_gateway: StartGateway, data_dir: Path, **env: str
) -> tuple[GatewayProcess, str, str]:
    """A gateway throttling after 3 failures, with two valid keys: one used once, one never used. Both are
    created before it starts (a key change while it runs drops its cache of checked keys)."""
    data_dir.mkdir()
    used, unused = create_key(data_dir, "used"), create_key(data_dir, "unused")
    gateway = start_gateway(data_dir.name, HOKUSAI_AUTH_FAILURE_LIMIT="3", **env)
    clear_of_minute_edge()
    assert search(gateway, used).status_code == 200
    return gateway, used, unused


def test_failed_authentications_throttle_the_address(start_gateway: StartGateway, tmp_path: Path) -> None:
    """Unknown keys from 127.0.0.1 get 401, then 429; a key checked before the throttle still works from
    there, a valid key not checked before is refused like a guess, and so is a mistyped one."""
    gateway, used, unused = throttled_gateway(start_gateway, tmp_path / "gateway")

    assert_throttled(throttle(gateway, limit=3))
    assert statuses(gateway, used, 3) == [200] * 3
    assert_throttled(search(gateway, unused))
    assert_throttled(search(gateway, mistyped(used)))
    assert search(gateway, unused, forwarded_for="192.0.2.7").status_code == 200  # other addresses are not


# Counting in Redis.


def test_gateways_sharing_redis_share_a_key_count(
    redis_url: str, start_gateway: StartGateway, tmp_path: Path
) -> None:
    # One key store for both gateways, so the same key (and key id) is valid on each.
    shared = tmp_path / "shared"
    shared.mkdir()
    key = create_key(shared, "shared", per_minute=3)
    env = {"DATABASE_URL": f"sqlite:///{shared / 'keys.db'}", "REDIS_URL": redis_url}
    first, second = start_gateway("first", **env), start_gateway("second", **env)

    assert [search(gateway, key).status_code for gateway in (first, second, first)] == [200, 200, 200]
    assert_rate_limited(search(second, key), limit=3)
    assert_rate_limited(search(first, key), limit=3)
    assert "unavailable for rate limits" not in first.log() + second.log()


def test_gateway_with_unreachable_redis_serves_and_limits_locally(start_gateway: StartGateway) -> None:
    gateway = start_gateway("gateway", REDIS_URL=f"redis://:s3cret@127.0.0.1:{free_port()}/0")
    key = create_key(gateway.data_dir, "limited", per_minute=2)
    clear_of_minute_edge()

    assert statuses(gateway, key, 2) == [200, 200]
    assert_rate_limited(search(gateway, key), limit=2)
    assert requests.get(gateway.url + "/health", timeout=30).status_code == 200
    assert "unavailable for rate limits" in gateway.log()
    assert "s3cret" not in gateway.log()


# Configuration.


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("HOKUSAI_RATE_LIMIT_PER_MINUTE", "-1"),
        ("HOKUSAI_AUTH_FAILURE_LIMIT", "-1"),
        ("REDIS_URL", "localhost:6379"),
    ],
)
def test_bad_limit_settings_are_configuration_errors(variable: str, value: str, tmp_path: Path) -> None:
    """The gateway refuses to start (exit 2) with a message naming the variable, not a traceback."""
    command = [HOKUSAI, "gateway", "--mlflow-url", "http://127.0.0.1:1", "--port", "0"]
    result = subprocess.run(
        [*command, "--data-dir", str(tmp_path)],
        env={**os.environ, **gateway_env(**{variable: value})},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, "Traceback" in result.stderr) == (2, False), result.stderr
    assert variable in result.stderr
