"""The admin REST API (/api/v1/keys) and its docs, on the session gateway, with the CLI on the same store."""

from __future__ import annotations

import json
import re
import subprocess
import time
from typing import Any

import pytest
import requests

from tests.helpers import HOKUSAI, GatewayProcess

SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"


@pytest.fixture(scope="module")
def admin(gateway: GatewayProcess) -> dict[str, str]:
    return {"Authorization": "Bearer " + gateway.create_key("keys-api-admin", admin=True)}


def api(gateway: GatewayProcess, method: str, path: str, headers: dict[str, str], **kwargs: Any) -> Any:
    return requests.request(method, gateway.url + path, headers=headers, timeout=10, **kwargs)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + key}


def cli(gateway: GatewayProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [HOKUSAI, "keys", *args, "--data-dir", str(gateway.data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_create_get_list_rotate_revoke(gateway: GatewayProcess, admin: dict[str, str]) -> None:
    spec = {"name": "api-trainer", "owner": "alice@example.com", "scope": "read", "expires_in": "30d"}
    created = api(gateway, "POST", "/api/v1/keys", admin, json=spec)
    assert created.status_code == 201, created.text
    body = created.json()
    key = body["key"]
    assert body["scopes"] == ["read"] and body["owner"] == body["user_id"] == "alice@example.com"
    assert body["status"] == "active" and body["expires_at"] and body["last_used_at"] is None
    assert api(gateway, "GET", SEARCH, bearer(key)).status_code == 200

    listed = api(gateway, "GET", "/api/v1/keys", admin)
    assert listed.status_code == 200 and key not in listed.text
    assert any(entry["key_id"] == body["key_id"] for entry in listed.json())
    one = api(gateway, "GET", f"/api/v1/keys/{body['key_id']}", admin).json()
    assert one["name"] == "api-trainer" and "key" not in one

    rotated = api(gateway, "POST", f"/api/v1/keys/{body['key_id']}/rotate", admin)
    assert rotated.status_code == 201
    new_key = rotated.json()["key"]
    assert rotated.json()["owner"] == "alice@example.com" and rotated.json()["scopes"] == ["read"]
    assert api(gateway, "GET", SEARCH, bearer(new_key)).status_code == 200
    # Refused at once by the gateway that revoked it (its cached check is dropped with the change).
    assert api(gateway, "GET", SEARCH, bearer(key)).json()["error_code"] == "UNAUTHENTICATED"

    revoked = api(gateway, "POST", f"/api/v1/keys/{rotated.json()['key_id']}/revoke", admin)
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
    assert api(gateway, "GET", SEARCH, bearer(new_key)).json()["error_code"] == "UNAUTHENTICATED"


def test_only_admin_keys_reach_the_api(gateway: GatewayProcess, api_key: str) -> None:
    refused = api(gateway, "GET", "/api/v1/keys", bearer(api_key))
    assert refused.status_code == 403
    assert (
        refused.json()["error_code"] == "PERMISSION_DENIED" and "'admin' scope" in refused.json()["message"]
    )
    missing = api(gateway, "POST", "/api/v1/keys", {}, json={"name": "x"})
    assert missing.status_code == 401 and missing.json()["error_code"] == "UNAUTHENTICATED"


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "x", "scope": "root"}, "scope"),
        ({"name": "x", "expires_in": "soon"}, "expires_in"),
        ({"name": "x", "service_ids": ["has space"]}, "service_ids"),
        ({"name": "x", "rate_limit_per_minute": -1}, "rate_limit_per_minute"),
        ({"name": "x", "surprise": 1}, "surprise"),
    ],
)
def test_bad_input_is_a_clear_400(
    gateway: GatewayProcess, admin: dict[str, str], spec: dict[str, Any], field: str
) -> None:
    response = api(gateway, "POST", "/api/v1/keys", admin, json=spec)
    assert response.status_code == 400
    assert response.json()["error_code"] == "INVALID_PARAMETER_VALUE" and field in response.json()["message"]


def test_unknown_and_duplicate_keys(gateway: GatewayProcess, admin: dict[str, str]) -> None:
    missing = api(gateway, "GET", "/api/v1/keys/AAAAAAAAAAAA", admin)
    assert missing.status_code == 404 and missing.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    not_an_id = api(gateway, "POST", "/api/v1/keys/hk_live_x/revoke", admin)
    assert not_an_id.status_code == 400 and "not the whole key" in not_an_id.json()["message"]
    assert api(gateway, "POST", "/api/v1/keys", admin, json={"name": "twice"}).status_code == 201
    again = api(gateway, "POST", "/api/v1/keys", admin, json={"name": "twice"})
    assert again.status_code == 400 and again.json()["error_code"] == "RESOURCE_ALREADY_EXISTS"
    nowhere = api(gateway, "GET", "/api/v1/nothing", admin)
    assert nowhere.status_code == 404 and nowhere.json()["error_code"] == "ENDPOINT_NOT_FOUND"


def test_cli_and_api_share_one_store(gateway: GatewayProcess, admin: dict[str, str]) -> None:
    made = cli(gateway, "create", "--name", "from-cli", "--owner", "bob", "--service-id", "mlflow")
    assert made.returncode == 0, made.stderr
    listed = {entry["name"]: entry for entry in api(gateway, "GET", "/api/v1/keys", admin).json()}
    assert listed["from-cli"]["owner"] == "bob" and listed["from-cli"]["service_ids"] == ["mlflow"]
    api(gateway, "POST", "/api/v1/keys", admin, json={"name": "from-api", "rate_limit_per_hour": 100})
    as_json = json.loads(cli(gateway, "list", "--json").stdout)
    assert {"from-cli", "from-api"} <= {entry["name"] for entry in as_json}
    assert next(e for e in as_json if e["name"] == "from-api")["rate_limit_per_hour"] == 100
    assert "hk_live_" not in cli(gateway, "list", "--json").stdout


def test_last_use_is_recorded_in_batches(gateway: GatewayProcess, admin: dict[str, str]) -> None:
    created = api(gateway, "POST", "/api/v1/keys", admin, json={"name": "used-later"}).json()
    before = time.time()
    for _ in range(20):
        assert api(gateway, "GET", SEARCH, bearer(created["key"])).status_code == 200
    deadline = time.monotonic() + 10  # the session gateway writes every 0.5 s
    while True:
        info = api(gateway, "GET", f"/api/v1/keys/{created['key_id']}", admin).json()
        if info["last_used_at"] or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert info["last_used_at"] is not None
    from datetime import datetime

    assert datetime.fromisoformat(info["last_used_at"]).timestamp() >= before - 1
    line = next(row for row in cli(gateway, "list").stdout.splitlines() if row.startswith(created["key_id"]))
    assert "never" not in line


def test_docs_are_served_without_external_assets(gateway: GatewayProcess) -> None:
    page = requests.get(gateway.url + "/docs", timeout=10)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assets = re.findall(r"""(?:src|href)=["']([^"']+)""", page.text)
    assert assets and all(asset.startswith("/docs/assets/") for asset in assets), assets
    for asset in assets:
        assert requests.get(gateway.url + asset, timeout=10).status_code == 200
    spec = requests.get(gateway.url + "/openapi.json", timeout=10).json()
    assert {"/api/v1/keys", "/api/v1/keys/{key_id}/rotate", "/api/v1/keys/validate"} <= set(spec["paths"])
