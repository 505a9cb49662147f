"""Refused keys: the unmodified MLflow client raises with UNAUTHENTICATED and the gateway's hint; key
changes made with the CLI; the real UI through the gateway. (X-API-Key, Basic without a password and
callers without credentials on UI paths are in tests/inprocess/test_auth.py.)"""

from __future__ import annotations

import subprocess

import pytest
import requests
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from hokusai_registry.policy import keys
from tests.helpers import HOKUSAI, GatewayProcess
from tests.support.polling import eventually


def client_error() -> str:
    with pytest.raises(MlflowException) as raised:
        MlflowClient().search_experiments()
    assert raised.value.error_code == "UNAUTHENTICATED"
    return str(raised.value)


def test_no_key(gateway_client: pytest.MonkeyPatch) -> None:
    message = client_error()
    assert "UNAUTHENTICATED" in message and "no API key was sent" in message
    assert "MLFLOW_TRACKING_TOKEN" in message


def test_unknown_key(gateway_client: pytest.MonkeyPatch) -> None:
    gateway_client.setenv("MLFLOW_TRACKING_TOKEN", keys.generate("live").text)
    message = client_error()
    assert "not recognised" in message


def test_wrong_secret_for_a_real_key_id(gateway_client: pytest.MonkeyPatch, api_key: str) -> None:
    other_secret = keys.generate("live").text.split("_")[3][: keys.SECRET_LENGTH]
    body = f"hk_live_{keys.parse(api_key).key_id}_{other_secret}"
    gateway_client.setenv("MLFLOW_TRACKING_TOKEN", body + keys.checksum(body))
    assert "not recognised" in client_error()


@pytest.mark.parametrize("mangle", ["typo", "truncated", "prefix"])
def test_malformed_key(mangle: str, gateway_client: pytest.MonkeyPatch, api_key: str) -> None:
    if mangle == "typo":
        bad = api_key[:-10] + ("A" if api_key[-10] != "A" else "B") + api_key[-9:]
    elif mangle == "truncated":
        bad = api_key[:-3]
    else:
        bad = "sk_" + api_key[3:]
    gateway_client.setenv("MLFLOW_TRACKING_TOKEN", bad)
    message = client_error()
    assert "malformed" in message
    assert bad not in message  # never echo a credential


def test_revoked_key_stops_working(gateway_client: pytest.MonkeyPatch, gateway: GatewayProcess) -> None:
    key = gateway.create_key("to-revoke")
    gateway_client.setenv("MLFLOW_TRACKING_TOKEN", key)
    assert MlflowClient().search_experiments() is not None  # cached as valid now
    subprocess.run(
        [HOKUSAI, "keys", "revoke", keys.parse(key).key_id, "--data-dir", str(gateway.data_dir)],
        check=True,
        capture_output=True,
        timeout=60,
    )

    def refusal() -> MlflowException | None:
        try:
            MlflowClient().search_experiments()
        except MlflowException as exc:
            return exc
        return None

    # The gateway polls the key store's revision every second (HOKUSAI_KEY_REVISION_POLL_INTERVAL).
    refused = eventually(refusal, message="revoked key still accepted")
    assert refused.error_code == "UNAUTHENTICATED"
    assert "was revoked" in str(refused)


def test_ui_page_and_assets_load_through_the_gateway(gateway: GatewayProcess, api_key: str) -> None:
    session = requests.Session()
    session.auth = ("anyone", api_key)
    page = session.get(gateway.url + "/mlflow/", timeout=10)
    assert page.status_code == 200 and "<html" in page.text.lower()
    asset = next(
        part.split('"')[0] for part in page.text.split('src="')[1:] if part.startswith("static-files/")
    )
    assert session.get(gateway.url + "/mlflow/" + asset, timeout=10).status_code == 200


def test_expired_key_gets_401_that_says_it_expired(
    gateway_client: pytest.MonkeyPatch, gateway: GatewayProcess
) -> None:
    import datetime as dt

    from tests.helpers import key_store

    store = key_store(gateway.data_dir)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    _, key = store.create("expired", environment="live", scopes=("read", "write"), expires_at=past)
    store.close()
    gateway_client.setenv("MLFLOW_TRACKING_TOKEN", key)
    assert "expired on" in client_error()


def test_keys_create_with_expiry_is_listed(gateway: GatewayProcess) -> None:
    args = ["--data-dir", str(gateway.data_dir)]
    created = subprocess.run(
        [HOKUSAI, "keys", "create", "--name", "month", "--expires-in", "30d", *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ", expires " in created.stderr
    listing = subprocess.run(
        [HOKUSAI, "keys", "list", *args], check=True, capture_output=True, text=True, timeout=60
    )
    assert "active, expires" in next(line for line in listing.stdout.splitlines() if " month " in line)
    bad = subprocess.run(
        [HOKUSAI, "keys", "create", "--name", "x", "--expires-in", "soon", *args],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "--expires-in: 'soon' is not a lifetime" in bad.stderr


def test_rotate_old_secret_fails_new_works(gateway: GatewayProcess) -> None:
    old = gateway.create_key("rotating")
    url = gateway.url + "/mlflow/api/2.0/mlflow/experiments/search"

    def status(key: str) -> int:
        return requests.post(url, json={"max_results": 1}, headers={"X-API-Key": key}, timeout=10).status_code

    assert status(old) == 200
    rotated = subprocess.run(
        [HOKUSAI, "keys", "rotate", keys.parse(old).key_id, "--data-dir", str(gateway.data_dir)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    new = rotated.stdout.strip()
    assert keys.parse(new).key_id != keys.parse(old).key_id
    assert status(new) == 200
    # The gateway sees key changes within HOKUSAI_KEY_REVISION_POLL_INTERVAL.
    eventually(lambda: status(old) == 401, message="rotated-out key still accepted")
