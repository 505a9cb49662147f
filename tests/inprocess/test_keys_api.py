"""The admin REST API (/api/v1/keys) and its docs, in process on the real gateway. (That the CLI and the
API share one store, and last use written in batches, are in tests/e2e/test_keys_api.py.)"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from tests.support.inprocess import InProcessGateway

SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"


@pytest.fixture(scope="module")
def admin(gateway: InProcessGateway) -> dict[str, str]:
    return {"Authorization": "Bearer " + gateway.create_key("keys-api-admin", admin=True)}


def api(
    gateway: InProcessGateway, method: str, path: str, headers: dict[str, str], **kwargs: Any
) -> httpx.Response:
    return gateway.request(method, path, headers=headers, **kwargs)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": "Bearer " + key}


def test_create_get_list_rotate_revoke(gateway: InProcessGateway, admin: dict[str, str]) -> None:
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


def test_only_admin_keys_reach_the_api(gateway: InProcessGateway, key: str) -> None:
    refused = api(gateway, "GET", "/api/v1/keys", bearer(key))
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
    gateway: InProcessGateway, admin: dict[str, str], spec: dict[str, Any], field: str
) -> None:
    response = api(gateway, "POST", "/api/v1/keys", admin, json=spec)
    assert response.status_code == 400
    assert response.json()["error_code"] == "INVALID_PARAMETER_VALUE" and field in response.json()["message"]


def test_unknown_and_duplicate_keys(gateway: InProcessGateway, admin: dict[str, str]) -> None:
    missing = api(gateway, "GET", "/api/v1/keys/AAAAAAAAAAAA", admin)
    assert missing.status_code == 404 and missing.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    not_an_id = api(gateway, "POST", "/api/v1/keys/hk_live_x/revoke", admin)
    assert not_an_id.status_code == 400 and "not the whole key" in not_an_id.json()["message"]
    assert api(gateway, "POST", "/api/v1/keys", admin, json={"name": "twice"}).status_code == 201
    again = api(gateway, "POST", "/api/v1/keys", admin, json={"name": "twice"})
    assert again.status_code == 400 and again.json()["error_code"] == "RESOURCE_ALREADY_EXISTS"
    nowhere = api(gateway, "GET", "/api/v1/nothing", admin)
    assert nowhere.status_code == 404 and nowhere.json()["error_code"] == "ENDPOINT_NOT_FOUND"


def test_docs_are_served_without_external_assets(gateway: InProcessGateway) -> None:
    page = gateway.request("GET", "/docs")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assets = re.findall(r"""(?:src|href)=["']([^"']+)""", page.text)
    assert assets and all(asset.startswith("/docs/assets/") for asset in assets), assets
    for asset in assets:
        assert gateway.request("GET", asset).status_code == 200
    spec = gateway.request("GET", "/openapi.json").json()
    assert {"/api/v1/keys", "/api/v1/keys/{key_id}/rotate", "/api/v1/keys/validate"} <= set(spec["paths"])
