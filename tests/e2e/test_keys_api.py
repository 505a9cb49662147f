"""The admin REST API next to the CLI on one store, on the session gateway (whose last-use writes are
batched every half second). The API's own answers are in tests/inprocess/test_keys_api.py."""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

import pytest
import requests

from tests.helpers import HOKUSAI, GatewayProcess
from tests.support.polling import eventually

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
    # The session gateway writes every 0.5 s.
    info = eventually(
        lambda: (
            found
            if (found := api(gateway, "GET", f"/api/v1/keys/{created['key_id']}", admin).json())[
                "last_used_at"
            ]
            else None
        )
    )
    assert info["last_used_at"] is not None
    from datetime import datetime

    assert datetime.fromisoformat(info["last_used_at"]).timestamp() >= before - 1
    line = next(row for row in cli(gateway, "list").stdout.splitlines() if row.startswith(created["key_id"]))
    assert "never" not in line
