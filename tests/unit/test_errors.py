"""Every code the gateway uses is a real MLflow ErrorCode, so the client shows it as sent."""

from __future__ import annotations

import json

import pytest

from hokusai_registry.core.refusals import STATUS_BY_CODE, GatewayError, error_body


def test_codes_exist_in_mlflow() -> None:
    protos = pytest.importorskip("mlflow.protos.databricks_pb2")
    for code in STATUS_BY_CODE:
        assert protos.ErrorCode.Value(code) is not None


def test_statuses_agree_with_mlflow() -> None:
    exceptions = pytest.importorskip("mlflow.exceptions")
    for code, status in STATUS_BY_CODE.items():
        assert exceptions.ERROR_CODE_TO_HTTP_STATUS[code] == status


def test_body_parses_as_a_rest_exception() -> None:
    rest = pytest.importorskip("mlflow.exceptions")
    error = GatewayError("UNAUTHENTICATED", "Hokusai Registry gateway: nope")
    parsed = rest.RestException(json.loads(error_body(error.code, error.message)))
    assert parsed.error_code == "UNAUTHENTICATED"
    assert "UNAUTHENTICATED: Hokusai Registry gateway: nope" in str(parsed)


def test_status_override() -> None:
    assert GatewayError("TEMPORARILY_UNAVAILABLE", "x", status=502).http_status == 502
    assert GatewayError("TEMPORARILY_UNAVAILABLE", "x").http_status == 503
