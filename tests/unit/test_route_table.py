"""The route table, the request parsed once, and the ordered checks (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from hokusai_registry.core.refusals import Reason, Refusal
from hokusai_registry.gateway.checks import (
    BEFORE_TARGET,
    ON_TARGET,
    Policy,
    first_refusal,
    no_key_in_url,
    not_looped,
    same_origin,
)
from hokusai_registry.policy.headers import LOOP_MARK, MAX_HEADER_COUNT
from hokusai_registry.policy.paths import Redirect, Target
from hokusai_registry.policy.request import Request, parse
from hokusai_registry.policy.routes import Caller, Family, Handler, own_route

POLICY = Policy(b"mark", None, direct_transfers=False, graphql_max_tokens=2000)


def scope(
    path: str, method: str = "GET", headers: list[tuple[bytes, bytes]] | None = None, **extra: Any
) -> dict[str, Any]:
    return {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": extra.pop("raw_path", path.encode()),
        "query_string": extra.pop("query", b""),
        "headers": headers if headers is not None else [(b"host", b"gw:8000")],
        **extra,
    }


@pytest.mark.parametrize(
    ("path", "handler", "caller"),
    [
        ("/health", Handler.LIVENESS, Caller.ANYONE),
        ("/ready", Handler.READINESS, Caller.ANYONE),
        ("/metrics", Handler.METRICS, Caller.KEY),
        ("/mlflow/health/mlflow", Handler.MLFLOW_HEALTH, Caller.ANYONE),
        ("/api/mlflow/health/mlflow/detailed", Handler.MLFLOW_HEALTH_DETAILED, Caller.KEY),
        ("/api/v1/keys", Handler.KEYS, Caller.OWN_KEYS),
        ("/api/v1/keys/AAAAAAAAAAAA/revoke", Handler.KEYS, Caller.OWN_KEYS),
        ("/api/v1/keys/validate", Handler.VALIDATE, Caller.ANYONE),
        ("/api/v1/keysfoo", Handler.NO_SUCH_API, Caller.ANYONE),
        ("/api/v1/teams", Handler.KEYS, Caller.ADMIN_KEY),
        ("/api/v1/teams/ml/members", Handler.KEYS, Caller.ADMIN_KEY),
        ("/api/v1/grants", Handler.KEYS, Caller.ADMIN_KEY),
        ("/api/v1/grants/remove", Handler.KEYS, Caller.ADMIN_KEY),
        ("/api/v1/protections", Handler.KEYS, Caller.ADMIN_KEY),
        ("/api/v1/protections/rule-1a2b3c4d", Handler.KEYS, Caller.ADMIN_KEY),
        ("/api/v1/promotions", Handler.KEYS, Caller.HEADER_KEY),
        ("/api/v1/promotions/pr-0a1b2c3d4e/approve", Handler.KEYS, Caller.HEADER_KEY),
        ("/api/v1/promotions/history", Handler.KEYS, Caller.HEADER_KEY),
        ("/api/v1/promotionsfoo", Handler.NO_SUCH_API, Caller.ANYONE),
        ("/api/v1/teamsfoo", Handler.NO_SUCH_API, Caller.ANYONE),
        ("/api/v1/webhooks", Handler.KEYS, Caller.ADMIN_KEY),
        ("/api/v1/webhooks/wh0123456789abcd/deliveries", Handler.KEYS, Caller.ADMIN_KEY),
        ("/api/v1/webhooksfoo", Handler.NO_SUCH_API, Caller.ANYONE),
        ("/api/v1/", Handler.NO_SUCH_API, Caller.ANYONE),
        ("/docs", Handler.DOCS, Caller.ANYONE),
        ("/openapi.json", Handler.DOCS, Caller.ANYONE),
        ("/docs/assets/swagger-ui.css", Handler.DOCS, Caller.ANYONE),
        ("/login", Handler.PAGES, Caller.ANYONE),
        ("/logout", Handler.PAGES, Caller.ANYONE),
        ("/admin/keys", Handler.PAGES, Caller.ANYONE),
        ("/assets/hokusai.css", Handler.PAGES, Caller.ANYONE),
        ("/admin/keys/AAAAAAAAAAAA/revoke", Handler.PAGES, Caller.ANYONE),
        ("/admin/keys/AAAAAAAAAAAA/rotate", Handler.PAGES, Caller.ANYONE),
        ("/admin/teams", Handler.PAGES, Caller.ANYONE),
        ("/admin/grants/remove", Handler.PAGES, Caller.ANYONE),
        ("/admin/protections", Handler.PAGES, Caller.ANYONE),
        ("/admin/protections/remove", Handler.PAGES, Caller.ANYONE),
        ("/promotions", Handler.PAGES, Caller.ANYONE),
        ("/promotions/approve", Handler.PAGES, Caller.ANYONE),
        ("/promotions/reject", Handler.PAGES, Caller.ANYONE),
    ],
)
def test_own_routes(path: str, handler: Handler, caller: Caller) -> None:
    route = own_route(path)
    assert route is not None and (route.handler, route.caller) == (handler, caller)


@pytest.mark.parametrize(
    "path",
    [
        "/mlflow/",
        "/health/mlflow",
        "/docs/assets",
        "/admin/keys/short/revoke",
        "/api/2.0/mlflow/runs/get",
        "/",
    ],
)
def test_everything_else_is_for_mlflow(path: str) -> None:
    assert own_route(path) is None


def test_own_routes_take_reads_unless_their_handler_answers_methods_itself() -> None:
    health, keys = own_route("/health"), own_route("/api/v1/keys")
    assert health is not None and health.methods == frozenset({"GET", "HEAD"})
    assert keys is not None and keys.methods is None and keys.local_keys_only
    # Teams and grants live in MLflow: managed here even where keys live in a remote auth service.
    for path in ("/api/v1/teams", "/api/v1/grants/remove"):
        route = own_route(path)
        assert route is not None and route.methods is None and not route.local_keys_only


def test_parse_finds_the_first_of_each_wanted_header_in_one_pass() -> None:
    request = parse(
        scope(
            "/mlflow/api/2.0/mlflow/runs/get",
            headers=[
                (b"host", b"gw"),
                (b"x-request-id", b"one"),
                (b"x-request-id", b"two"),
                (b"x-api-key", b"k"),
            ],
        )
    )
    assert request.header(b"x-request-id") == b"one" and request.sends_key
    assert request.target == Target("/mlflow", "/api/2.0/mlflow/runs/get", Family.REST)
    assert request.own is None and request.head_refusal is None


def head_reason(headers: list[tuple[bytes, bytes]]) -> Reason | None:
    refusal = parse(scope("/health", headers=headers)).head_refusal
    return None if refusal is None else refusal.reason


def test_head_limits() -> None:
    assert head_reason([(b"x-a", b"1")] * (MAX_HEADER_COUNT + 1)) is Reason.HEADERS_TOO_LARGE
    assert head_reason([(b"host", b"a"), (b"host", b"b")]) is Reason.BAD_HEADERS
    assert head_reason([(b"transfer-encoding", b"gzip, chunked")]) is Reason.BAD_HEADERS
    assert head_reason([(b"transfer-encoding", b"Chunked ")]) is None
    # Too many headers is found first, whatever else is wrong with them.
    many = [(b"transfer-encoding", b"gzip")] + [(b"x-a", b"1")] * MAX_HEADER_COUNT
    assert head_reason(many) is Reason.HEADERS_TOO_LARGE


def reasons(request: Request) -> Reason | None:
    refusal = first_refusal(BEFORE_TARGET, request, POLICY) or first_refusal(ON_TARGET, request, POLICY)
    return None if refusal is None else refusal.reason


def test_checks_in_order() -> None:
    looped_and_bad = parse(scope("/mlflow/a/../b", headers=[(LOOP_MARK, b"mark")]))
    assert reasons(looped_and_bad) is Reason.LOOP  # the loop guard comes before the path
    assert reasons(parse(scope("/mlflow/a/../b"))) is Reason.BAD_PATH
    assert reasons(parse(scope("/nothing-here"))) is Reason.NOT_AN_MLFLOW_PATH
    assert reasons(parse(scope("/mlflow/version", method="OPTIONS"))) is Reason.METHOD_NOT_ALLOWED
    keyed = parse(scope("/mlflow/version", method="TRACE", query=b"k=hk_live_x"))
    assert reasons(keyed) is Reason.METHOD_NOT_ALLOWED  # the method is refused before the URL is read
    assert reasons(parse(scope("/mlflow/version", query=b"k=%68k_live_x"))) is Reason.KEY_IN_URL
    assert reasons(parse(scope("/mlflow/get-artifact", query=b"path=../x"))) is Reason.UNSAFE_PATH_PARAMETER
    assert reasons(parse(scope("/mlflow/version"))) is None


def test_a_mount_without_its_slash_redirects_after_the_loop_guard() -> None:
    request = parse(scope("/mlflow"))
    assert request.target == Redirect("/mlflow/") and reasons(request) is None
    assert not_looped(parse(scope("/mlflow", headers=[(LOOP_MARK, b"other")])), POLICY) is None


def test_key_in_the_decoded_path() -> None:
    refusal = no_key_in_url(parse(scope("/mlflow/api/2.0/mlflow/%68k_live_abc")), POLICY)
    assert isinstance(refusal, Refusal) and refusal.reason is Reason.KEY_IN_URL


def test_session_writes_must_name_this_site() -> None:
    write = parse(scope("/mlflow/api/2.0/mlflow/runs/create", method="POST", headers=[(b"host", b"gw")]))
    assert same_origin(write, POLICY) is None  # an API client sends no Origin
    write.via_session = True
    refusal = same_origin(write, POLICY)
    assert refusal is not None and refusal.reason is Reason.CROSS_ORIGIN
