"""The refusal vocabulary: every code is a real MLflow ErrorCode (so the client shows it as sent), every
reason is distinct, and the message and JSON are rendered in one way."""

from __future__ import annotations

import json

import pytest

from hokusai_registry.core.refusals import PRODUCT, STATUS_BY_CODE, Reason, Refusal


def test_codes_exist_in_mlflow() -> None:
    protos = pytest.importorskip("mlflow.protos.databricks_pb2")
    for code in STATUS_BY_CODE:
        assert protos.ErrorCode.Value(code) is not None
    assert {reason.code for reason in Reason} <= set(STATUS_BY_CODE)


def test_statuses_agree_with_mlflow() -> None:
    exceptions = pytest.importorskip("mlflow.exceptions")
    for code, status in STATUS_BY_CODE.items():
        assert exceptions.ERROR_CODE_TO_HTTP_STATUS[code] == status


def test_reasons_are_distinct() -> None:
    # An Enum silently turns a repeated value into an alias of the first member.
    assert len(Reason.__members__) == len(list(Reason))


def test_caller_reasons_keep_the_values_audit_lines_and_metrics_carry() -> None:
    assert {reason.value for reason in Reason if reason.caller} == {
        "missing",
        "malformed",
        "unknown",
        "revoked",
        "expired",
        "bad_basic",
        "unsupported_scheme",
        "session_ended",
        "step_up_failed",
        "service",
        "scope",
        "transfer_policy",
        "identity_by_gateway",
        "permission",
        "own_keys_only",
        "throttled",
        "rate_limited",
        "store_unavailable",
        "auth_service_unavailable",
        "tokens_not_accepted",
        "token_malformed",
        "token_algorithm",
        "token_issuer",
        "token_signature",
        "token_expired",
        "token_not_yet_valid",
        "token_audience",
        "token_claims",
        "user_disabled",
        "issuer_unavailable",
        "protected",
    }


def test_body_parses_as_a_rest_exception_and_carries_the_reason() -> None:
    rest = pytest.importorskip("mlflow.exceptions")
    error = Refusal(Reason.UNKNOWN_KEY, "nope")
    body = json.loads(error.body())
    parsed = rest.RestException(body)
    assert parsed.error_code == "UNAUTHENTICATED"
    assert f"UNAUTHENTICATED: {PRODUCT}: nope" in str(parsed)
    assert body["reason"] == "unknown"


def test_message_joins_a_sentence_with_a_colon_and_a_verb_phrase_with_a_space() -> None:
    assert Refusal(Reason.BAD_PATH, "it is bad.").message == f"{PRODUCT}: it is bad."
    assert (
        Refusal(Reason.LOOP, " received its own request.").message == f"{PRODUCT} received its own request."
    )
    assert Refusal(Reason.LOOP, " received its own request.").plain == "Received its own request."


def test_statuses_come_from_the_reason() -> None:
    assert Refusal(Reason.UPSTREAM_REFUSED, "x").http_status == 502
    assert Refusal(Reason.STORE_UNAVAILABLE, "x").http_status == 503
    assert Refusal(Reason.HEADERS_TOO_LARGE, "x").http_status == 431
    assert Refusal(Reason.LOOP, "x").http_status == 508
