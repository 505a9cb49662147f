"""Remote key validation with real processes: gateway B (`AUTH_SERVICE_URL` = gateway A) checks every key
through A's `POST /api/v1/keys/validate`; both stand in front of the session's real MLflow.

Keys are created only in A's store. What is proved: the unmodified MLflow client works through B with
A's key; B reports A's refusals (401 with A's reason, 403 naming B's service id); the validate contract
itself; an outage of A is a 503 with Retry-After for keys B has not seen (never a 401) while keys B
checked recently keep working, and recovery once A is back; B has no key admin API of its own.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pytest
import requests
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from hokusai_registry.policy import keys
from hokusai_registry.policy.routes import VALIDATE_PATH
from hokusai_registry.store.key_store import ADMIN_SCOPES, DEFAULT_SCOPES
from tests.helpers import HOKUSAI, GatewayProcess, key_store

B_SERVICE_ID = "hokusai-b"
# Tests send bad keys from 127.0.0.1 on purpose: the failure throttle has its own tests.
NO_THROTTLE = {"HOKUSAI_AUTH_FAILURE_LIMIT": "0"}
SEARCH = "/mlflow/api/2.0/mlflow/experiments/search"
PREFIX = "Hokusai Registry gateway: "


class Pair:
    """Auth gateway A (keys in its own data dir) and gateway B validating keys through A."""

    def __init__(self, upstream: str, root: Path, service_id: str = B_SERVICE_ID) -> None:
        self.upstream = upstream
        self.auth = GatewayProcess(upstream, root / "auth", env=NO_THROTTLE)
        self.gateway: GatewayProcess | None = None
        try:
            self.gateway = GatewayProcess(
                upstream,
                root / "gateway",
                env={
                    **NO_THROTTLE,
                    "AUTH_SERVICE_URL": self.auth.url,
                    "AUTH_SERVICE_ID": service_id,
                    "HOKUSAI_KEY_CACHE_TTL": "600",  # the outage test relies on B's cache outliving it
                },
            )
        except BaseException:
            self.auth.stop()
            raise

    @property
    def b(self) -> GatewayProcess:
        assert self.gateway is not None
        return self.gateway

    def restart_auth(self) -> None:
        """A again, on the same port and key store."""
        self.auth = GatewayProcess(self.upstream, self.auth.data_dir, env=NO_THROTTLE, port=self.auth.port)

    def create_key(self, name: str, scopes: tuple[str, ...] = DEFAULT_SCOPES, **options: Any) -> str:
        """A key in A's store; `options` as `KeyStore.create` takes them."""
        store = key_store(self.auth.data_dir)
        try:
            _, key = store.create(name, environment="live", scopes=scopes, **options)
        finally:
            store.close()
        return key

    def stop(self) -> None:
        try:
            if self.gateway is not None:
                self.gateway.stop()
        finally:
            self.auth.stop()


@contextlib.contextmanager
def running_pair(upstream: str, root: Path, service_id: str = B_SERVICE_ID) -> Iterator[Pair]:
    pair = Pair(upstream, root, service_id)
    try:
        yield pair
    finally:
        pair.stop()


@pytest.fixture(scope="module")
def pair(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    with running_pair(mlflow_server, tmp_path_factory.mktemp("remote")) as running:
        yield running


@pytest.fixture
def through_b(client_env: pytest.MonkeyPatch, pair: Pair) -> pytest.MonkeyPatch:
    """The MLflow client pointed at B, failing at once instead of retrying refusals."""
    client_env.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    mlflow.set_tracking_uri(pair.b.url + "/mlflow")
    return client_env


def client_refusal(code: str) -> str:
    """The MLflow client's error for a search through the current tracking URI, checked to be `code`."""
    with pytest.raises(MlflowException) as raised:
        MlflowClient().search_experiments()
    assert raised.value.error_code == code, str(raised.value)
    return str(raised.value)


def validate(
    gateway: GatewayProcess, key: str | None, service_id: str = B_SERVICE_ID, client_ip: str = "198.51.100.7"
) -> requests.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = {"service_id": service_id, "client_ip": client_ip}
    return requests.post(gateway.url + VALIDATE_PATH, json=body, headers=headers, timeout=10)


def search(gateway: GatewayProcess, key: str) -> requests.Response:
    headers = {"Authorization": f"Bearer {key}"}
    return requests.post(gateway.url + SEARCH, json={"max_results": 1}, headers=headers, timeout=30)


def revoked_key(pair: Pair, name: str) -> str:
    key = pair.create_key(name)
    store = key_store(pair.auth.data_dir)
    try:
        store.revoke(keys.parse(key).key_id)
    finally:
        store.close()
    return key


def bad_key(pair: Pair, case: str) -> str | None:
    if case == "unknown":
        return keys.generate("live").text
    if case == "revoked":
        return revoked_key(pair, f"revoked-{uuid.uuid4().hex[:6]}")
    if case == "malformed":
        return keys.generate("live").text[:-2]
    return None  # missing


# Through B with the real MLflow client


def test_mlflow_client_works_through_b_with_a_key_from_a(through_b: pytest.MonkeyPatch, pair: Pair) -> None:
    through_b.setenv("MLFLOW_TRACKING_TOKEN", pair.create_key("scientist"))
    client = MlflowClient()
    name = f"remote-{uuid.uuid4().hex[:8]}"
    experiment_id = client.create_experiment(name)
    run = client.create_run(experiment_id)
    client.log_metric(run.info.run_id, "loss", 0.25)
    client.set_terminated(run.info.run_id)

    [found] = client.search_experiments(filter_string=f"name = '{name}'")
    assert found.experiment_id == experiment_id
    [listed] = client.search_runs([experiment_id])
    assert listed.info.run_id == run.info.run_id and listed.data.metrics == {"loss": 0.25}
    # B attributed the run to the identity A returned (the key's name, as it has no owner).
    assert listed.info.user_id == "scientist"
    assert key_store(pair.b.data_dir).count() == 0  # B's own store played no part


def test_revoked_key_through_b_is_401_with_as_reason(through_b: pytest.MonkeyPatch, pair: Pair) -> None:
    key = revoked_key(pair, "revoked-via-b")
    assert search(pair.b, key).status_code == 401
    through_b.setenv("MLFLOW_TRACKING_TOKEN", key)
    message = client_refusal("UNAUTHENTICATED")
    assert "was revoked on" in message
    assert message.count(PREFIX) == 1  # A's message, not wrapped twice


def test_unknown_key_through_b_is_401(through_b: pytest.MonkeyPatch) -> None:
    through_b.setenv("MLFLOW_TRACKING_TOKEN", keys.generate("live").text)
    assert "not recognised" in client_refusal("UNAUTHENTICATED")


def test_key_for_another_service_through_b_is_403_naming_bs_service_id(
    through_b: pytest.MonkeyPatch, pair: Pair
) -> None:
    through_b.setenv("MLFLOW_TRACKING_TOKEN", pair.create_key("billing-only", service_ids=("billing",)))
    message = client_refusal("PERMISSION_DENIED")
    assert f"not allowed for service {B_SERVICE_ID!r}" in message and "billing" in message


def test_b_has_no_key_admin_api(pair: Pair) -> None:
    admin = pair.create_key("admin-via-b", scopes=ADMIN_SCOPES)
    for method, path in [("GET", "/api/v1/keys"), ("POST", "/api/v1/keys"), ("GET", "/api/v1/keys/abc")]:
        for headers in ({}, {"Authorization": f"Bearer {admin}"}):
            response = requests.request(method, pair.b.url + path, headers=headers, json={}, timeout=10)
            assert response.status_code == 404, response.text
            body = response.json()
            assert body["error_code"] == "ENDPOINT_NOT_FOUND"
            # Answered before any key is checked: the auth service's address is not named.
            assert "AUTH_SERVICE_URL" in body["message"] and pair.auth.url not in body["message"]
    as_admin = {"Authorization": f"Bearer {admin}"}
    assert requests.get(pair.auth.url + "/api/v1/keys", headers=as_admin, timeout=10).status_code == 200


# The validate contract, directly against A


def test_validate_answers_the_identity(pair: Pair) -> None:
    expires = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).replace(microsecond=0)
    key = pair.create_key(
        "contract",
        owner="alice",
        rate_limit_per_minute=60,
        rate_limit_per_hour=600,
        expires_at=expires,
        service_ids=(B_SERVICE_ID, "billing"),
    )
    response = validate(pair.auth, key)
    assert response.status_code == 200, response.text
    body = response.json()
    assert dt.datetime.fromisoformat(body.pop("expires_at")) == expires
    assert body == {
        "valid": True,
        "key_id": keys.parse(key).key_id,
        "name": "contract",
        "user_id": "alice",
        "scopes": list(DEFAULT_SCOPES),
        "service_id": B_SERVICE_ID,
        "service_ids": [B_SERVICE_ID, "billing"],
        "rate_limit_per_minute": 60,
        "rate_limit_per_hour": 600,
    }


@pytest.mark.parametrize(
    "case",
    [
        "unknown",
        "revoked",
        "malformed",
        "missing",
    ],
)
def test_validate_refuses_bad_keys_with_401_and_a_reason(pair: Pair, case: str) -> None:
    presented = bad_key(pair, case)
    response = validate(pair.auth, presented)
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["error_code"] == "UNAUTHENTICATED" and body.get("reason") == case
    assert body["message"].startswith(PREFIX)
    assert response.headers["x-hokusai-origin"] == "gateway"
    if presented:
        assert presented not in body["message"]  # never echo a credential


def test_validate_refuses_a_key_for_another_service_with_403(pair: Pair) -> None:
    # Created the way an admin would, with the CLI.
    in_a = ["--data-dir", str(pair.auth.data_dir)]
    key = subprocess.run(
        [HOKUSAI, "keys", "create", "--name", "cli-billing", "--service-id", "billing", *in_a],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.strip()
    refused = validate(pair.auth, key, service_id=B_SERVICE_ID)
    assert refused.status_code == 403, refused.text
    assert refused.json()["error_code"] == "PERMISSION_DENIED"
    assert f"service {B_SERVICE_ID!r}" in refused.json()["message"]
    allowed = validate(pair.auth, key, service_id="billing")
    assert allowed.status_code == 200 and allowed.json()["service_id"] == "billing"


# Outage of A


def test_outage_of_the_auth_service(
    mlflow_server: str, tmp_path: Path, client_env: pytest.MonkeyPatch
) -> None:
    with running_pair(mlflow_server, tmp_path) as own:
        checked, unseen = own.create_key("k1"), own.create_key("k2")
        client_env.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        client_env.setenv("MLFLOW_TRACKING_TOKEN", checked)
        mlflow.set_tracking_uri(own.b.url + "/mlflow")
        MlflowClient().search_experiments()  # B has now validated K1 through A

        own.auth.stop()
        assert MlflowClient().search_experiments() is not None  # K1: from B's cache
        for key in (unseen, keys.generate("live").text):  # B cannot tell a new key from a bad one
            for _ in range(2):  # and does not remember the outage as a verdict
                response = search(own.b, key)
                assert response.status_code == 503, response.text
                assert response.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
                assert int(response.headers["Retry-After"]) > 0
                # Whoever gets this has no valid key: the service is not named; the log names it.
                assert "auth service did not answer" in response.json()["message"]
                assert own.auth.url not in response.text
        assert f"auth service {own.auth.url} did not answer" in own.b.log()

        own.restart_auth()
        assert search(own.b, unseen).status_code == 200
        assert MlflowClient().search_experiments() is not None


# Service ids on a remote-mode gateway


def test_a_remote_mode_gateway_does_not_answer_validations(pair: Pair) -> None:
    """It could only answer for its own service id: validations belong to the auth service."""
    only_b = pair.create_key("only-b", service_ids=(B_SERVICE_ID,))
    response = validate(pair.b, only_b, service_id="other")
    assert response.status_code == 404 and response.json()["error_code"] == "ENDPOINT_NOT_FOUND"
    assert "AUTH_SERVICE_URL" in response.json()["message"] and pair.auth.url not in response.text


def test_an_empty_service_id_is_a_configuration_error(mlflow_server: str, tmp_path: Path) -> None:
    started = subprocess.run(
        [HOKUSAI, "gateway", "--mlflow-url", mlflow_server, "--data-dir", str(tmp_path), "--port", "0"],
        env={**os.environ, "AUTH_SERVICE_ID": ""},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert started.returncode == 2 and "AUTH_SERVICE_ID" in started.stderr


def test_validate_refuses_an_empty_service_id(pair: Pair) -> None:
    response = validate(pair.auth, pair.create_key("any-service"), service_id="")
    assert response.status_code == 400 and "service_id" in response.json()["message"]


def test_validate_without_a_service_id_lists_the_keys_services(pair: Pair) -> None:
    billing = pair.create_key("billing-listed", service_ids=("billing",))
    response = requests.post(
        pair.auth.url + VALIDATE_PATH, json={}, headers={"Authorization": f"Bearer {billing}"}, timeout=10
    )
    assert response.status_code == 200 and response.json()["service_ids"] == ["billing"]
