"""Signed tokens for machines: the unmodified MLflow client with `MLFLOW_TRACKING_TOKEN=<JWT>` from a real
OIDC provider on loopback, through a gateway that trusts it, against the session's real MLflow (permissions
on); and every way a token is refused, with its reason."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import mlflow
import pytest
import requests
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from hokusai_registry.store.user_store import UserStore
from tests.e2e.test_mlflow_client import register_and_load
from tests.helpers import GatewayProcess, key_store
from tests.support.oidc_provider import AUDIENCE, BOT_CLIENT, OidcProvider
from tests.support.polling import eventually

SEARCH = "/api/2.0/mlflow/experiments/search"


@pytest.fixture(scope="module")
def token_gateway(
    mlflow_server: str, oidc_provider: OidcProvider, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    env = {
        "HOKUSAI_JWT_ISSUERS": oidc_provider.issuer,
        "HOKUSAI_OIDC_AUDIENCE": AUDIENCE,
        "HOKUSAI_AUTH_FAILURE_LIMIT": "0",  # these tests send bad tokens on purpose
    }
    process = GatewayProcess(mlflow_server, tmp_path_factory.mktemp("token-gateway"), env=env)
    yield process
    process.stop()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(provider: OidcProvider, **changes: object) -> dict[str, object]:
    now = int(time.time())
    claims: dict[str, object] = {
        "iss": provider.issuer,
        "sub": BOT_CLIENT,
        "client_id": BOT_CLIENT,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 600,
        "scope": "mlflow.write",
    }
    claims.update(changes)
    return {name: value for name, value in claims.items() if value is not None}


def _unsigned(claims: dict[str, object]) -> str:
    return f"{_b64(json.dumps({'alg': 'none', 'typ': 'JWT'}).encode())}.{_b64(json.dumps(claims).encode())}."


def _hmac_with_public_key(provider: OidcProvider) -> str:
    # The classic key-confusion attack: HS256 keyed with the issuer's published RSA public key.
    public = (provider.directory / "keys" / "rsa_public.pem").read_bytes()
    signing_input = (
        f"{_b64(json.dumps({'alg': 'HS256', 'typ': 'JWT'}).encode())}."
        f"{_b64(json.dumps(_claims(provider)).encode())}"
    )
    return f"{signing_input}.{_b64(hmac.digest(public, signing_input.encode(), hashlib.sha256))}"


def _tampered(provider: OidcProvider) -> str:
    header, _, signature = provider.client_credentials_token(scope="mlflow.read").split(".")
    raised = _b64(json.dumps(_claims(provider, scope="mlflow.admin")).encode())
    return f"{header}.{raised}.{signature}"


REFUSALS: dict[str, tuple[Callable[[OidcProvider], str], str, str]] = {
    "expired": (lambda p: p.sign(_claims(p, exp=int(time.time()) - 120)), "token_expired", "expired"),
    "not yet valid": (
        lambda p: p.sign(_claims(p, nbf=int(time.time()) + 600)),
        "token_not_yet_valid",
        "not valid for another",
    ),
    "wrong audience": (
        lambda p: p.client_credentials_token(resource="https://elsewhere.example"),
        "token_audience",
        "audience",
    ),
    "wrong issuer": (
        lambda p: p.sign(_claims(p, iss="https://issuer.invalid")),
        "token_issuer",
        "is not trusted here",
    ),
    "alg none": (lambda p: _unsigned(_claims(p)), "token_algorithm", "algorithm 'none'"),
    "HMAC with the public key": (_hmac_with_public_key, "token_algorithm", "algorithm 'HS256'"),
    "tampered payload": (_tampered, "token_signature", "signature does not verify"),
    "no expiry": (lambda p: p.sign(_claims(p, exp=None)), "token_claims", "no expiry"),
    "no mlflow scope": (
        lambda p: p.client_credentials_token(scope="openid"),
        "token_claims",
        "no mlflow.read or mlflow.write scope",
    ),
    "reserved owner": (
        lambda p: p.sign(_claims(p, client_id="hokusai:admin", sub="hokusai:admin")),
        "token_claims",
        "reserved for the gateway",
    ),
    "malformed": (lambda p: "eyJhbGciOi.eyJzdWIi.c2ln", "token_malformed", "not a well-formed"),
}


@pytest.mark.parametrize("case", REFUSALS)
def test_a_refused_token_says_why(
    case: str, token_gateway: GatewayProcess, oidc_provider: OidcProvider
) -> None:
    make, reason, message = REFUSALS[case]
    answer = requests.get(
        token_gateway.url + SEARCH,
        params={"max_results": "1"},
        headers={"Authorization": f"Bearer {make(oidc_provider)}"},
        timeout=10,
    )
    assert answer.status_code == 401, answer.text
    body = answer.json()
    assert (body["error_code"], body["reason"]) == ("UNAUTHENTICATED", reason)
    assert message in body["message"]


def test_a_machine_token_logs_registers_and_loads_a_model(
    token_gateway: GatewayProcess, oidc_provider: OidcProvider, client_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    client_env.setenv("MLFLOW_TRACKING_TOKEN", oidc_provider.client_credentials_token(scope="mlflow.write"))
    run_id = register_and_load(token_gateway.url, "jwt-model", tmp_path)
    assert MlflowClient().get_run(run_id).info.user_id == BOT_CLIENT  # the token's owner, not the OS user
    store = key_store(token_gateway.data_dir)
    try:
        user = UserStore(store).named(BOT_CLIENT)
    finally:
        store.close()
    assert user is not None and (user.kind, user.issuer) == ("service", oidc_provider.issuer)


def test_a_read_token_reads_and_cannot_write(
    token_gateway: GatewayProcess, oidc_provider: OidcProvider, client_env: pytest.MonkeyPatch
) -> None:
    client_env.setenv("MLFLOW_TRACKING_TOKEN", oidc_provider.client_credentials_token(scope="mlflow.read"))
    mlflow.set_tracking_uri(token_gateway.url)
    MlflowClient().search_experiments(max_results=1)
    with pytest.raises(MlflowException, match="PERMISSION_DENIED") as refused:
        MlflowClient().create_experiment("read-token-cannot-create")
    assert "scope" in str(refused.value)


def test_a_rotated_signing_key_is_picked_up_without_a_restart(
    token_gateway: GatewayProcess, oidc_provider: OidcProvider
) -> None:
    def searched(token: str) -> requests.Response:
        return requests.get(
            token_gateway.url + SEARCH,
            params={"max_results": "1"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )

    assert searched(oidc_provider.client_credentials_token()).status_code == 200
    oidc_provider.rotate_signing_key()
    fresh = oidc_provider.client_credentials_token()
    # The gateway asks the issuer again for an unknown key id at most every 10 s (a flood of made-up ids
    # costs the issuer one request per interval), so the new key works within that.
    eventually(lambda: searched(fresh).status_code == 200, 15, 0.5, "the rotated key to be accepted")


def test_a_disabled_machine_user_is_refused_until_enabled(
    token_gateway: GatewayProcess, oidc_provider: OidcProvider
) -> None:
    token = oidc_provider.client_credentials_token()

    def search() -> requests.Response:
        return requests.get(
            token_gateway.url + SEARCH,
            headers={"Authorization": f"Bearer {token}"},
            params={"max_results": "1"},
            timeout=10,
        )

    assert search().status_code == 200
    store = key_store(token_gateway.data_dir)
    users = UserStore(store)
    user = users.named(BOT_CLIENT)
    assert user is not None
    try:
        users.disable(user.id)

        def refused_now() -> requests.Response | None:
            answer = search()
            return answer if answer.status_code == 401 else None

        refused = eventually(refused_now, 10, 0.2, "the disabled user's token to be refused")
        assert refused.json()["reason"] == "user_disabled"
        assert "disabled" in refused.json()["message"]
    finally:
        users.enable(user.id)
        store.close()
    assert eventually(lambda: search().status_code == 200, 10, 0.2, "the enabled user's token to work")
