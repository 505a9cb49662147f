"""From evidence to a named root cause (pure rules), and the doctor's small parsers."""

from __future__ import annotations

import pytest

from hokusai_registry.doctor.diagnosis import (
    Context,
    Diagnosis,
    artifact_location,
    auth_is_off,
    creator_lacks_manage,
    diagnose,
    keep_alive_stall,
    manage_refused,
    not_enforced,
)
from hokusai_registry.doctor.evidence import Answer, KeepAlive
from hokusai_registry.doctor.steps import gateway_root, parse_size

URL = "http://gw.example:8000/mlflow"


def gateway(
    status: int, code: str, message: str, reason: str | None = None, path: str = "/api/2.0/mlflow/runs/create"
) -> Answer:
    return Answer(
        "POST",
        path,
        status,
        from_gateway=True,
        content_type="application/json",
        error_code=code,
        message=message,
        reason=reason,
    )


def relayed(
    status: int, body: str, content_type: str = "text/plain", server: str = "", error_code: str | None = None
) -> Answer:
    return Answer(
        "PUT",
        "/api/2.0/mlflow-artifacts/artifacts/1/r/artifacts/x",
        status,
        body=body,
        content_type=content_type,
        headers={"x-request-id": "abc"},
        server=server,
        error_code=error_code,
    )


def cause(answer: Answer, step: str = "tracking", **context: object) -> str:
    return diagnose(answer, Context(step, URL, **context)).cause  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("network", "expected"),
    [
        ("dns", "does not resolve"),
        ("refused", "connection refused"),
        ("connect_timeout", "timed out"),
        ("tls", "TLS failed"),
        ("read_timeout", "no answer within"),
        ("reset", "connection broke"),
    ],
)
def test_network_failures_name_their_layer(network: str, expected: str) -> None:
    assert expected in cause(Answer("GET", "/health", network=network, network_detail="x"), "reach")


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("revoked", "the key was revoked"),
        ("expired", "the key has expired"),
        ("unknown", "not known"),
        ("malformed", "the key is malformed"),
        ("missing", "no key was sent"),
    ],
)
def test_401s_say_which_key_problem_by_reason_not_by_message(reason: str, expected: str) -> None:
    assert expected in cause(gateway(401, "UNAUTHENTICATED", "Hokusai Registry gateway: ...", reason), "auth")


def test_missing_scope_is_named() -> None:
    refused = gateway(
        403,
        "PERMISSION_DENIED",
        "Hokusai Registry gateway: key K (scopes: read) may not POST /api/2.0/mlflow/runs/create: that "
        "needs the 'write' scope. Ask an admin for a key with --scope write.",
        "scope",
    )
    found = diagnose(refused, Context("tracking", URL))
    assert "lacks the 'write' scope" in found.cause and "POST /api/2.0/mlflow/runs/create" in found.cause
    assert "--scope write" in found.next_check


def test_loop_502_504_and_key_store() -> None:
    assert "points back at the gateway" in cause(gateway(508, "INTERNAL_ERROR", "...", "loop"))
    unreachable = "Hokusai Registry gateway could not connect to MLflow at http://10.0.0.5:5000 (refused)."
    assert "cannot reach MLflow at http://10.0.0.5:5000" in cause(
        gateway(502, "TEMPORARILY_UNAVAILABLE", unreachable)
    )
    slow = "Hokusai Registry gateway: MLflow at http://m:5000 did not answer /x within 1 s (waiting ...)."
    assert "read timeout" in cause(gateway(504, "DEADLINE_EXCEEDED", slow, "upstream_timeout"))
    assert "artifact transfer" in cause(gateway(504, "DEADLINE_EXCEEDED", slow, "transfer_timeout"))
    connecting = "Hokusai Registry gateway timed out connecting to MLflow at http://m:5000 (no connection)."
    assert "connect timeout" in cause(
        gateway(504, "DEADLINE_EXCEEDED", connecting, "upstream_connect_timeout")
    )
    store = "Hokusai Registry gateway: the key store is unavailable; retry shortly."
    assert "cannot check keys" in cause(gateway(503, "TEMPORARILY_UNAVAILABLE", store))


def test_mlflow_allowed_hosts_and_front_proxy_limits() -> None:
    host = relayed(403, "Invalid Host header - possible DNS rebinding attack detected")
    assert "allowed-hosts" in cause(host)
    too_big = relayed(413, "<html>413 Request Entity Too Large</html>", "text/html", server="nginx")
    found = cause(too_big, "large", size_bytes=600 * 10**6)
    assert "in front of the gateway (nginx) limits request bodies" in found and "572.2 MiB" in found


def test_artifact_404_tells_no_serve_artifacts_from_a_misrouted_proxy() -> None:
    disabled = relayed(
        503,
        "Endpoint: /api/2.0/mlflow-artifacts/... disabled due to the mlflow server running with "
        "`--no-serve-artifacts`.",
    )
    assert "without --serve-artifacts" in cause(disabled, "artifacts", tracking_ok=True)
    mlflow_404 = relayed(
        404, '{"error_code": "ENDPOINT_NOT_FOUND"}', "application/json", error_code="ENDPOINT_NOT_FOUND"
    )
    assert "without --serve-artifacts" in cause(mlflow_404, "artifacts", tracking_ok=True)
    html_404 = relayed(404, "<html>Not Found</html>", "text/html")
    assert "routes artifact paths to the wrong upstream" in cause(html_404, "artifacts", tracking_ok=True)


def test_an_unknown_answer_still_gets_a_next_step() -> None:
    found = diagnose(relayed(418, "teapot"), Context("tracking", URL))
    assert "unexpected answer" in found.cause and "gateway log" in found.next_check


def test_artifact_locations_around_the_gateway_are_named() -> None:
    assert artifact_location("mlflow-artifacts:/3") is None
    found = artifact_location("s3://bucket/mlflow/3")
    assert (
        found is not None
        and "around the gateway" in found.cause
        and "--default-artifact-root" in found.next_check
    )


def test_auth_off_tells_direct_mlflow_from_a_broken_gateway() -> None:
    direct = Answer("GET", "/api/2.0/mlflow/experiments/search", 200)
    assert "reaches MLflow directly" in auth_is_off(direct).cause
    through = Answer("GET", "/api/2.0/mlflow/experiments/search", 200, headers={"x-request-id": "r"})
    assert "not enforced" in auth_is_off(through).cause


@pytest.mark.parametrize(
    ("url", "root"),
    [
        ("https://reg.example/mlflow", "https://reg.example"),
        ("https://reg.example/api/mlflow/", "https://reg.example"),
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("http://h/prefix/mlflow", "http://h/prefix"),
    ],
)
def test_gateway_root_of_each_tracking_uri_style(url: str, root: str) -> None:
    assert gateway_root(url) == root


def test_sizes() -> None:
    assert parse_size("600MB") == 600 * 10**6
    assert parse_size("1GiB") == 1 << 30
    assert parse_size("512k") == 512_000
    assert parse_size("20 MiB") == 20 << 20
    for bad in ("", "MB", "-5MB", "0", "12 parsecs"):
        with pytest.raises(ValueError, match="size"):
            parse_size(bad)


def stall(kept: list[float], fresh: list[float], *, from_gateway: bool = False) -> Diagnosis | None:
    return keep_alive_stall(KeepAlive(kept, fresh), "http://mlflow:5000", from_gateway=from_gateway)


def test_kept_alive_requests_waiting_for_delayed_acks_are_named_with_the_fix_for_mlflow() -> None:
    found = stall([52, 48, 55, 47, 51, 49, 60, 50], [11, 9, 12, 10, 14, 9, 10, 11])
    assert found is not None
    assert "Nagle's algorithm" in found.cause and "40 ms more than on a new connection" in found.cause
    assert "--uvicorn-opts '--loop uvloop'" in found.next_check and "uvicorn 0.55" in found.next_check


def test_a_stall_in_front_of_the_gateway_points_at_the_proxy() -> None:
    found = stall([48] * 8, [8] * 8, from_gateway=True)
    assert found is not None and "in front of the gateway" in found.cause
    assert "tcp_nodelay" in found.next_check


@pytest.mark.parametrize(
    ("kept", "fresh"),
    [
        ([9, 8, 10, 9, 11, 8, 9, 10], [11, 9, 12, 10, 14, 9, 10, 11]),  # healthy: kept-alive is faster
        ([9, 8, 60, 9, 11, 70, 9, 10], [11, 9, 12, 10, 14, 9, 10, 11]),  # two slow requests are not a pattern
        ([52, 48, 55, 47, 51, 49, 60, 8], [11, 9, 12, 10, 14, 9, 10, 11][:0]),  # nothing to compare with
        ([52, 48], [11, 9]),  # too few to call it consistent
        ([90, 95, 92, 91], [80, 85, 79, 82]),  # a slow server, slow either way
    ],
)
def test_no_stall_is_reported_without_a_consistent_delay(kept: list[float], fresh: list[float]) -> None:
    assert stall(kept, fresh) is None


# -- permissions


def test_a_permission_refusal_names_mlflows_decision_and_how_to_get_a_grant() -> None:
    message = "bob may not POST /api/2.0/mlflow/runs/log-batch: that needs EDIT on the experiment it names"
    said = "Hokusai Registry gateway: " + message  # as the gateway's refusal reads
    found = diagnose(gateway(403, "PERMISSION_DENIED", said, "permission"), Context("tracking", URL))
    assert found.cause == f"MLflow's permissions refuse this owner: {message}"
    assert "grants add" in found.next_check and "grants backfill" in found.next_check


def test_mlflow_refusing_the_gateways_signature_is_the_secret_not_an_unreachable_mlflow() -> None:
    refused = gateway(502, "INTERNAL_ERROR", ": MLflow at http://m:5000 refused", "assertion_refused")
    found = diagnose(refused, Context("auth", URL))
    assert "different assertion secrets" in found.cause and "cannot reach" not in found.cause
    assert "HOKUSAI_MLFLOW_ASSERTION_SECRET_FILE" in found.next_check
    assert "HOKUSAI_MLFLOW_ASSERTION_SECRET)" in found.next_check and "NTP" in found.next_check


def test_an_unsigning_gateway_in_front_of_an_enforcing_mlflow_is_named() -> None:
    body = (
        '{"error_code": "UNAUTHENTICATED", "message": "MLflow accepts only requests a Hokusai Registry '
        'gateway authenticated: the request carries no gateway assertion."}'
    )
    answer = relayed(401, body, content_type="application/json", error_code="UNAUTHENTICATED")
    found = diagnose(answer, Context("auth", URL))
    assert "HOKUSAI_PERMISSIONS is off on the gateway but on for MLflow" in found.cause
    assert "the same for MLflow and every gateway" in found.next_check


def test_an_mlflow_that_does_not_enforce_is_named_with_how_to_start_it() -> None:
    check = {
        "status": "failed",
        "http_status": 200,
        "detail": "answered 200 to a request the gateway did not",
    }
    found = not_enforced(check)
    assert "answered 200 to a request the gateway did not sign" in found.cause
    assert "anyone who reaches its address can act as anyone" in found.cause
    assert "hokusai-registry mlflow" in found.next_check and "HOKUSAI_PERMISSIONS=off" in found.next_check
    unknown = not_enforced({"status": "failed", "http_status": None, "detail": "no answer within 5 s"})
    assert unknown.cause.endswith("no answer within 5 s") and "MLFLOW_SERVER_URL" in unknown.next_check


def test_a_creator_without_manage_is_named_with_what_it_holds() -> None:
    found = creator_lacks_manage("alice", "READ", "5")
    assert found.cause.startswith("alice created experiment 5 but holds READ on it")
    assert "hokusai-registry mlflow" in found.next_check and "grants list --owner alice" in found.next_check
    assert "holds no grant" in creator_lacks_manage("alice", None, "5").cause
    denied = Answer("POST", "/x", 403, error_code="PERMISSION_DENIED", message="alice may not POST /x")
    assert manage_refused("alice", "delete", denied).cause.startswith(
        "alice may not delete the experiment it just created (403 PERMISSION_DENIED: alice may not POST /x)"
    )
