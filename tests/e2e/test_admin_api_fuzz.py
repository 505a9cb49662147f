"""Schemathesis against the admin API's own OpenAPI, on a live gateway process: generated requests to every
endpoint, with an admin key, never get a 5xx."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Err

from tests.helpers import GatewayProcess


@pytest.fixture(scope="module")
def fuzzed(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    # Generated bad keys would trip the failure throttle; it has its own tests.
    process = GatewayProcess(
        mlflow_server, tmp_path_factory.mktemp("fuzzed"), env={"HOKUSAI_AUTH_FAILURE_LIMIT": "0"}
    )
    yield process
    process.stop()


def test_no_generated_request_gets_a_server_error(fuzzed: GatewayProcess) -> None:
    admin = {"Authorization": "Bearer " + fuzzed.create_key("fuzz-admin", admin=True)}
    schema = schemathesis.openapi.from_url(fuzzed.url + "/openapi.json")
    results = list(schema.get_all_operations())
    unreadable = [result.err() for result in results if isinstance(result, Err)]
    assert not unreadable, unreadable  # every operation in the spec must load
    operations = [result.ok() for result in results if not isinstance(result, Err)]
    assert len(operations) >= 6  # list, create, get, revoke, rotate, validate

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=25, suppress_health_check=list(HealthCheck), deadline=None)
        def generated(case: schemathesis.Case[Any]) -> None:
            response = case.call(headers=admin)
            case.validate_response(response, checks=[not_a_server_error])

        generated()
