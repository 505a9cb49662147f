"""The protection check in process (`gateway/protection.py`): the real gateway and key store in front of a
stub MLflow that answers what MLflow 3.17 answers the lookups. What reaches MLflow, what is refused with
which reason, what the history and the audit log record, the registry events emitted, and failing closed
when the rules or MLflow's answers cannot be read. The flows with the real MLflow and client are
tests/e2e/test_promotions.py."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
import sqlalchemy as sa

from hokusai_registry.auth.sessions import csrf_token
from hokusai_registry.ops.audit import AUDIT_LOGGER, AuditFormatter
from hokusai_registry.policy.assertions import ADMIN_USER, verify
from hokusai_registry.store.protection_store import ProtectionStore
from tests.helpers import assertion_secret
from tests.support.cookies import COOKIE, session_cookie_in
from tests.support.inprocess import InProcessGateway
from tests.support.logs import Lines, captured
from tests.support.stub import StubUpstream

GatewayFactory = Callable[..., InProcessGateway]
UpstreamFactory = Callable[..., StubUpstream]
JSON = "application/json"
MODEL = {
    "registered_model": {
        "name": "fraud",
        "aliases": [{"alias": "production", "version": "2"}],
        "latest_versions": [{"version": "2", "current_stage": "None"}],
    }
}
VERSION = {
    "model_version": {"name": "fraud", "version": "2", "aliases": ["production"], "current_stage": "None"}
}
ANSWERS = {
    "/api/2.0/mlflow/registered-models/get": (200, JSON, json.dumps(MODEL).encode()),
    "/api/2.0/mlflow/model-versions/get": (200, JSON, json.dumps(VERSION).encode()),
}


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, object]]] = []

    def emit(self, event: str, payload: Mapping[str, object]) -> None:
        self.events.append((event, dict(payload)))


@pytest.fixture
def audit() -> Iterator[Lines]:
    with captured(AUDIT_LOGGER, AuditFormatter()) as lines:
        yield lines


def audited(log: Lines, event: str) -> list[dict[str, Any]]:
    return [line for line in map(json.loads, log.lines) if line["audit"] == event]


@pytest.fixture
def world(
    new_gateway: GatewayFactory, new_upstream: UpstreamFactory
) -> tuple[InProcessGateway, StubUpstream, Recorder]:
    upstream = new_upstream(answers=ANSWERS)
    events = Recorder()
    gateway = new_gateway(upstream.url, events=events)
    ProtectionStore(gateway.store.engine).add_rule(
        model="fraud*", alias="prod*", stage=None, approvers="ml-leads", approvals=2, actor="cli:test"
    )
    return gateway, upstream, events


def send(gateway: InProcessGateway, key: str, method: str, path: str, body: dict[str, Any]) -> Any:
    return gateway.request(method, path, headers={"Authorization": f"Bearer {key}"}, json=body)


def forwarded(upstream: StubUpstream, path: str) -> list[str]:
    return [arrival.method for arrival in upstream.requests if arrival.target.split("?")[0] == path]


def test_a_protected_alias_is_refused_before_mlflow_sees_the_request(
    world: tuple[InProcessGateway, StubUpstream, Recorder], audit: Lines
) -> None:
    gateway, upstream, events = world
    key = gateway.create_key("writer", owner="alice")
    for mount in ("", "/mlflow", "/api/mlflow"):
        for prefix in ("api", "ajax-api"):
            response = send(
                gateway,
                key,
                "POST",
                f"{mount}/{prefix}/2.0/mlflow/registered-models/alias",
                {"name": "FRAUD-eu", "alias": "Production", "version": "3"},
            )
            assert response.status_code == 403
            body = response.json()
            assert (body["error_code"], body["reason"]) == ("PERMISSION_DENIED", "protected")
            assert "2 approvals from team ml-leads" in body["message"]
            assert (
                "hokusai-registry promotions request --model FRAUD-eu --version 3 --alias Production"
                in body["message"]
            )
    assert upstream.requests == []
    denied = audited(audit, "permission.denied")
    assert len(denied) == 6 and {line["reason"] for line in denied} == {"protected"}
    assert events.events == []


def test_a_version_holding_a_protected_alias_is_looked_up_as_mlflows_administrator(
    world: tuple[InProcessGateway, StubUpstream, Recorder],
) -> None:
    gateway, upstream, _ = world
    key = gateway.create_key("writer", owner="alice")
    response = send(
        gateway,
        key,
        "DELETE",
        "/mlflow/api/2.0/mlflow/model-versions/delete",
        {"name": "fraud", "version": "2"},
    )
    assert (response.status_code, response.json()["reason"]) == (403, "protected")
    assert "@production, held by version 2 of model 'fraud'" in response.json()["message"]
    (lookup,) = upstream.requests
    assert (
        lookup.method == "GET" and lookup.target == "/api/2.0/mlflow/model-versions/get?name=fraud&version=2"
    )
    asserted = verify(
        assertion_secret(),
        lookup.header("x-hokusai-assertion")[0],
        "GET",
        "/api/2.0/mlflow/model-versions/get",
        "name=fraud&version=2",
        now=time.time(),
    )
    assert asserted.user == ADMIN_USER
    # A model no rule covers is never looked up.
    upstream.requests.clear()
    response = send(
        gateway, key, "DELETE", "/mlflow/api/2.0/mlflow/registered-models/delete", {"name": "churn"}
    )
    assert response.status_code == 200
    assert [arrival.method for arrival in upstream.requests] == ["DELETE"]


def test_unprotected_alias_changes_go_through_and_are_recorded(
    world: tuple[InProcessGateway, StubUpstream, Recorder],
) -> None:
    gateway, upstream, events = world
    key_id, key = gateway.create_key_with_id("writer", owner="alice")
    response = send(
        gateway,
        key,
        "POST",
        "/mlflow/api/2.0/mlflow/registered-models/alias",
        {"name": "fraud", "alias": "candidate", "version": "3"},
    )
    assert response.status_code == 200
    assert forwarded(upstream, "/api/2.0/mlflow/registered-models/alias") == ["POST"]
    (moved,) = ProtectionStore(gateway.store.engine).history("fraud")
    assert (moved.kind, moved.action, moved.alias, moved.version, moved.actor, moved.key_id) == (
        "direct",
        "set_alias",
        "candidate",
        "3",
        "alice",
        key_id,
    )
    assert events.events == []


def test_an_admin_override_is_audited_recorded_and_emitted_once_mlflow_made_it(
    world: tuple[InProcessGateway, StubUpstream, Recorder], audit: Lines
) -> None:
    gateway, upstream, events = world
    key = gateway.create_key("ops", admin=True, owner="root")
    response = send(
        gateway,
        key,
        "DELETE",
        "/api/mlflow/ajax-api/2.0/mlflow/registered-models/alias",
        {"name": "fraud", "alias": "production"},
    )
    assert response.status_code == 200
    assert forwarded(upstream, "/ajax-api/2.0/mlflow/registered-models/alias") == ["DELETE"]
    (line,) = audited(audit, "protection.overridden")
    assert (line["owner"], line["alias"], line["action"], line["status"]) == (
        "root",
        "production",
        "delete_alias",
        200,
    )
    (moved,) = ProtectionStore(gateway.store.engine).history("fraud")
    assert (moved.kind, moved.rule_id) == ("override", line["rule_id"])
    assert events.events == [
        (
            "protection.overridden",
            {
                "rule_id": line["rule_id"],
                "what": "@production of model 'fraud'",
                "model": "fraud",
                "alias": "production",
                "action": "delete_alias",
                "actor": "root",
            },
        )
    ]


def test_a_change_mlflow_refused_is_not_recorded(
    new_gateway: GatewayFactory, new_upstream: UpstreamFactory, audit: Lines
) -> None:
    refusal = json.dumps({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no such model"}).encode()
    upstream = new_upstream(
        answers={**ANSWERS, "/api/2.0/mlflow/registered-models/alias": (404, JSON, refusal)}
    )
    gateway = new_gateway(upstream.url)
    store = ProtectionStore(gateway.store.engine)
    store.add_rule(model="*", alias="production", stage=None, approvers=None, approvals=1, actor="cli:test")
    key = gateway.create_key("ops", admin=True)
    response = send(
        gateway,
        key,
        "POST",
        "/api/2.0/mlflow/registered-models/alias",
        {"name": "gone", "alias": "production", "version": "1"},
    )
    assert response.status_code == 404
    assert store.history() == []
    assert audited(audit, "protection.overridden") == []


def test_deleting_a_workspace_while_rules_exist_is_an_override(
    world: tuple[InProcessGateway, StubUpstream, Recorder], audit: Lines
) -> None:
    gateway, _, _ = world
    key = gateway.create_key("ops", admin=True, owner="root")
    response = gateway.request(
        "DELETE",
        "/mlflow/api/3.0/mlflow/workspaces/team-a?mode=CASCADE",
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 200
    (line,) = audited(audit, "protection.overridden")
    assert (line["workspace"], line["action"]) == ("team-a", "delete_workspace")
    writer = gateway.create_key("writer")
    response = gateway.request(
        "DELETE", "/mlflow/api/3.0/mlflow/workspaces/team-a", headers={"Authorization": f"Bearer {writer}"}
    )
    assert (response.status_code, response.json()["reason"]) == (403, "scope")


def test_rules_that_cannot_be_read_fail_closed(
    new_gateway: GatewayFactory, new_upstream: UpstreamFactory
) -> None:
    upstream = new_upstream(answers=ANSWERS)
    gateway = new_gateway(upstream.url)
    key = gateway.create_key("ops", admin=True)
    with gateway.store.engine.begin() as connection:
        connection.execute(sa.text("DROP TABLE protection_rules"))
    response = send(
        gateway,
        key,
        "POST",
        "/mlflow/api/2.0/mlflow/registered-models/alias",
        {"name": "m", "alias": "a", "version": "1"},
    )
    body = response.json()
    assert (response.status_code, body["error_code"], body["reason"]) == (
        503,
        "TEMPORARILY_UNAVAILABLE",
        "protection_unchecked",
    )
    assert response.headers["retry-after"] == "5"
    assert upstream.requests == []


def test_an_unanswered_lookup_fails_closed(
    new_gateway: GatewayFactory, new_upstream: UpstreamFactory
) -> None:
    upstream = new_upstream(
        answers={"/api/2.0/mlflow/registered-models/get": (500, "text/html", b"<h1>oops</h1>")}
    )
    gateway = new_gateway(upstream.url)
    ProtectionStore(gateway.store.engine).add_rule(
        model="fraud", alias="production", stage=None, approvers=None, approvals=1, actor="cli:test"
    )
    key = gateway.create_key("writer")
    response = send(
        gateway, key, "POST", "/api/2.0/mlflow/registered-models/rename", {"name": "fraud", "newName": "x"}
    )
    assert (response.status_code, response.json()["reason"]) == (503, "protection_unchecked")
    assert [arrival.method for arrival in upstream.requests] == ["GET"]  # the lookup, nothing else


def test_the_protections_api_is_for_admin_keys_and_promotions_for_keys_in_headers(
    world: tuple[InProcessGateway, StubUpstream, Recorder], audit: Lines
) -> None:
    gateway, _, _ = world
    writer = gateway.create_key("writer")
    admin = gateway.create_key("ops", admin=True)
    response = gateway.request("GET", "/api/v1/protections", headers={"Authorization": f"Bearer {writer}"})
    assert (response.status_code, response.json()["reason"]) == (403, "scope")
    response = gateway.request(
        "POST",
        "/api/v1/protections",
        headers={"Authorization": f"Bearer {admin}"},
        json={"model": "churn", "stage": "Production", "approvals": 2},
    )
    assert response.status_code == 201, response.text
    rule = response.json()
    assert (rule["stage"], rule["alias"], rule["approvers"], rule["approvals"]) == (
        "Production",
        None,
        None,
        2,
    )
    (line,) = audited(audit, "protection.added")
    assert line["rule_id"] == rule["id"]
    response = gateway.request(
        "POST",
        "/api/v1/protections",
        headers={"Authorization": f"Bearer {admin}"},
        json={"model": "m", "alias": "a", "stage": "b"},
    )
    assert (response.status_code, response.json()["reason"]) == (400, "invalid_request")
    response = gateway.request("GET", "/api/v1/promotions")
    assert (response.status_code, response.json()["reason"]) == (401, "missing")
    response = gateway.request("GET", "/api/v1/promotions", headers={"Authorization": f"Bearer {admin}"})
    assert (response.status_code, response.json()) == (200, [])
    reader = gateway.create_key("reader", scopes=("read",))
    response = gateway.request(
        "POST",
        "/api/v1/promotions",
        headers={"Authorization": f"Bearer {reader}"},
        json={"model": "fraud", "version": "3", "alias": "production"},
    )
    assert (response.status_code, response.json()["reason"]) == (403, "scope")
    response = gateway.request("GET", "/api/v1/promotions", headers={"Authorization": f"Bearer {reader}"})
    assert response.status_code == 200
    response = gateway.request(
        "DELETE", f"/api/v1/protections/{rule['id']}", headers={"Authorization": f"Bearer {admin}"}
    )
    assert response.status_code == 200
    response = gateway.request(
        "DELETE", f"/api/v1/protections/{rule['id']}", headers={"Authorization": f"Bearer {admin}"}
    )
    assert (response.status_code, response.json()["reason"]) == (404, "not_found")


def test_nobody_sets_or_deletes_the_promotion_record_tag_through_the_gateway(
    world: tuple[InProcessGateway, StubUpstream, Recorder],
) -> None:
    gateway, upstream, _ = world
    admin = gateway.create_key("ops", admin=True)
    forged = {"name": "fraud", "version": "2", "key": "hokusai.promotion.production", "value": "{}"}
    for method, route, body in (
        ("POST", "model-versions/set-tag", forged),
        ("DELETE", "model-versions/delete-tag", {"name": "fraud", "version": "2", "key": forged["key"]}),
        (
            "POST",
            "model-versions/create",
            {"name": "fraud", "source": "s", "tags": [{"key": forged["key"], "value": "{}"}]},
        ),
    ):
        response = send(gateway, admin, method, f"/mlflow/ajax-api/2.0/mlflow/{route}", body)
        assert (response.status_code, response.json()["reason"]) == (400, "reserved_tag"), route
    assert upstream.requests == []
    response = send(
        gateway, admin, "POST", "/mlflow/api/2.0/mlflow/model-versions/set-tag", {**forged, "key": "note"}
    )
    assert response.status_code == 200


def test_an_approved_promotion_mlflow_failed_to_apply_stays_pending_and_applies_on_a_second_approval(
    new_gateway: GatewayFactory, new_upstream: UpstreamFactory, audit: Lines
) -> None:
    failure = json.dumps({"error_code": "INTERNAL_ERROR", "message": "database is locked"}).encode()
    alias = "/api/2.0/mlflow/registered-models/alias"
    upstream = new_upstream(answers={**ANSWERS, alias: (500, JSON, failure)})
    events = Recorder()
    gateway = new_gateway(upstream.url, events=events)
    store = ProtectionStore(gateway.store.engine)
    store.add_rule(
        model="fraud", alias="production", stage=None, approvers=None, approvals=1, actor="cli:test"
    )
    alice = gateway.create_key("alice", owner="alice")
    admin = gateway.create_key("ops", admin=True, owner="root")
    response = gateway.request(
        "POST",
        "/api/v1/promotions",
        headers={"Authorization": f"Bearer {alice}"},
        json={"model": "fraud", "version": "3", "alias": "production"},
    )
    assert response.status_code == 201, response.text
    promotion = response.json()
    approve = f"/api/v1/promotions/{promotion['id']}/approve"
    response = gateway.request("POST", approve, headers={"Authorization": f"Bearer {alice}"}, json={})
    assert (response.status_code, response.json()["reason"]) == (403, "self_approval")
    response = gateway.request("POST", approve, headers={"Authorization": f"Bearer {admin}"}, json={})
    assert (response.status_code, response.json()["reason"]) == (400, "mlflow_refused")
    assert store.request(promotion["id"]).state == "pending" and store.history() == []
    upstream.answers.pop(alias)  # MLflow recovers
    response = gateway.request("POST", approve, headers={"Authorization": f"Bearer {admin}"}, json={})
    assert (response.status_code, response.json()["state"]) == (200, "applied"), response.text
    (moved,) = store.history("fraud")
    assert (moved.kind, moved.requester, moved.approvers, moved.request_id) == (
        "promotion",
        "alice",
        ("root",),
        promotion["id"],
    )
    sets = [arrival for arrival in upstream.requests if arrival.target == alias]
    assert [json.loads(arrival.body) for arrival in sets][-1] == {
        "name": "fraud",
        "alias": "production",
        "version": "3",
    }
    tagged = next(
        arrival for arrival in upstream.requests if arrival.target.endswith("model-versions/set-tag")
    )
    tag = json.loads(tagged.body)
    assert tag["key"] == "hokusai.promotion.production" and json.loads(tag["value"])["approvers"] == ["root"]
    assert [event for event, _ in events.events] == [
        "promotion.requested",
        "promotion.approved",
        "model_version_alias.created",  # the alias moved: listeners of MLflow's event hear it too
        "promotion.applied",
    ]
    moved_alias = dict(events.events[2][1])
    actor = moved_alias.pop("actor")
    assert isinstance(actor, dict) and actor["owner"] == "root" and actor["key_id"] in admin
    assert moved_alias == {
        "name": "fraud",
        "alias": "production",
        "version": "3",
        "promotion": promotion["id"],
    }
    applied = events.events[-1][1]
    assert (
        applied["model_name"],
        applied["version"],
        applied["alias"],
        applied["requester"],
        applied["approvers"],
    ) == (
        "fraud",
        "3",
        "production",
        "alice",
        ["root"],
    )
    assert [
        line["audit"] for line in map(json.loads, audit.lines) if line["audit"].startswith("promotion.")
    ] == [
        "promotion.requested",
        "promotion.approved",
        "promotion.applied",
    ]


# The pages


def sign_in(gateway: InProcessGateway, key: str, next_path: str) -> str:
    response = gateway.request(
        "POST", "/login", data={"key": key, "next": next_path}, headers={"Origin": gateway.url}
    )
    assert response.status_code == 303, response.text
    found = session_cookie_in(response.headers.get_list("set-cookie"))
    assert found is not None
    return found[0]


def browse(
    gateway: InProcessGateway,
    method: str,
    path: str,
    cookie: str,
    *,
    origin: str | None = "same",
    **kwargs: Any,
) -> Any:
    headers = {"Cookie": f"{COOKIE}={cookie}", **kwargs.pop("headers", {})}
    if origin is not None:
        headers["Origin"] = gateway.url if origin == "same" else origin
    return gateway.request(method, path, headers=headers, **kwargs)


def test_the_protections_page_adds_and_removes_rules_only_with_the_admin_key_again(
    world: tuple[InProcessGateway, StubUpstream, Recorder],
) -> None:
    gateway, _, _ = world
    store = ProtectionStore(gateway.store.engine)
    admin = gateway.create_key("ops", admin=True)
    cookie = sign_in(gateway, admin, "/admin/protections")
    shown = browse(gateway, "GET", "/admin/protections", cookie, origin=None)
    assert (
        shown.status_code == 200 and "fraud*" in shown.text and "2 approvals from team ml-leads" in shown.text
    )
    csrf = csrf_token(cookie)
    form = {
        "model": "<b>churn</b>",
        "kind": "stage",
        "pattern": "Production",
        "approvers": "",
        "approvals": "1",
    }
    for attempt, origin in [
        ({**form, "csrf": csrf}, "same"),  # no key entered again
        ({**form, "csrf": csrf, "admin_key": admin}, "http://evil.example"),
        ({**form, "csrf": "0" * 64, "admin_key": admin}, "same"),
    ]:
        refused = browse(gateway, "POST", "/admin/protections", cookie, origin=origin, data=attempt)
        assert refused.status_code == 403, refused.text
    assert len(store.rules()) == 1
    added = browse(
        gateway, "POST", "/admin/protections", cookie, data={**form, "csrf": csrf, "admin_key": admin}
    )
    assert added.status_code == 200, added.text
    assert "&lt;b&gt;churn&lt;/b&gt;" in added.text and "<b>churn" not in added.text
    rule = store.rules()[-1]
    assert (rule.model, rule.stage, rule.alias, rule.approvers) == ("<b>churn</b>", "Production", None, None)
    confirm = browse(gateway, "GET", f"/admin/protections/remove?rule={rule.id}", cookie, origin=None)
    assert confirm.status_code == 200 and "Remove rule" in confirm.text
    removed = browse(
        gateway,
        "POST",
        "/admin/protections/remove",
        cookie,
        data={"rule": rule.id, "csrf": csrf, "admin_key": admin},
    )
    assert removed.status_code == 200 and f"Rule {rule.id} removed." in removed.text
    assert len(store.rules()) == 1
    writer = gateway.create_key("writer")
    assert (
        browse(
            gateway, "GET", "/admin/protections", sign_in(gateway, writer, "/promotions"), origin=None
        ).status_code
        == 403
    )


def test_the_promotions_page_is_for_signed_in_keys_and_decides_with_the_key_again(
    new_gateway: GatewayFactory, new_upstream: UpstreamFactory
) -> None:
    upstream = new_upstream(answers=ANSWERS)
    gateway = new_gateway(upstream.url)
    store = ProtectionStore(gateway.store.engine)
    store.add_rule(
        model="fraud", alias="production", stage=None, approvers=None, approvals=1, actor="cli:test"
    )
    alice = gateway.create_key("alice", owner="alice")
    admin = gateway.create_key("ops", admin=True, owner="root")
    asked = gateway.request(
        "POST",
        "/api/v1/promotions",
        headers={"Authorization": f"Bearer {alice}"},
        json={"model": "fraud", "version": "3", "alias": "production", "reason": "<script>x</script>"},
    ).json()
    assert gateway.request("GET", "/promotions").status_code == 303  # to sign in
    cookie = sign_in(gateway, admin, "/promotions")
    shown = browse(gateway, "GET", "/promotions", cookie, origin=None)
    assert shown.status_code == 200 and asked["id"] in shown.text
    assert "&lt;script&gt;x&lt;/script&gt;" in shown.text and "<script>" not in shown.text
    assert "content-security-policy" in shown.headers
    scripted = browse(gateway, "GET", "/promotions", cookie, origin=None, headers={"Sec-Fetch-Mode": "cors"})
    assert scripted.status_code == 403
    csrf = csrf_token(cookie)
    decision = {"request": asked["id"], "csrf": csrf, "comment": "ok"}
    refused = browse(gateway, "POST", "/promotions/approve", cookie, data={**decision, "admin_key": alice})
    assert refused.status_code == 403 and "entered again" in refused.text
    refused = browse(
        gateway,
        "POST",
        "/promotions/approve",
        cookie,
        origin="http://evil.example",
        data={**decision, "admin_key": admin},
    )
    assert refused.status_code == 403
    assert store.request(asked["id"]).state == "pending"
    approved = browse(gateway, "POST", "/promotions/approve", cookie, data={**decision, "admin_key": admin})
    assert approved.status_code == 200, approved.text
    assert "Approved: fraud @production is version 3 now." in approved.text
    assert store.request(asked["id"]).state == "applied"
    # Alice sees her request closed; she could not have approved it herself.
    again = gateway.request(
        "POST",
        "/api/v1/promotions",
        headers={"Authorization": f"Bearer {alice}"},
        json={"model": "fraud", "version": "4", "alias": "production"},
    ).json()
    hers = sign_in(gateway, alice, "/promotions")
    mine = browse(
        gateway,
        "POST",
        "/promotions/reject",
        hers,
        data={"request": again["id"], "csrf": csrf_token(hers), "admin_key": alice},
    )
    assert mine.status_code == 403 and "may not reject" in mine.text


def test_a_request_whose_model_is_gone_goes_stale(
    new_gateway: GatewayFactory, new_upstream: UpstreamFactory
) -> None:
    upstream = new_upstream(answers=dict(ANSWERS))
    gateway = new_gateway(upstream.url)
    ProtectionStore(gateway.store.engine).add_rule(
        model="fraud", alias="production", stage=None, approvers=None, approvals=1, actor="cli:test"
    )
    alice = gateway.create_key("alice", owner="alice")
    admin = gateway.create_key("ops", admin=True, owner="root")
    asked = gateway.request(
        "POST",
        "/api/v1/promotions",
        headers={"Authorization": f"Bearer {alice}"},
        json={"model": "fraud", "version": "3", "alias": "production"},
    ).json()
    gone = json.dumps(
        {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "Registered Model 'fraud' not found"}
    )
    upstream.answers["/api/2.0/mlflow/registered-models/get"] = (404, JSON, gone.encode())
    response = gateway.request(
        "POST",
        f"/api/v1/promotions/{asked['id']}/approve",
        headers={"Authorization": f"Bearer {admin}"},
        json={},
    )
    assert (response.status_code, response.json()["reason"]) == (400, "promotion_stale")
    closed = ProtectionStore(gateway.store.engine).request(asked["id"])
    assert closed.state == "stale" and closed.note == "model 'fraud' no longer exists (deleted or renamed)"
    assert not [arrival for arrival in upstream.requests if arrival.method == "POST"]


def test_the_mlflow_ui_with_a_browser_session_is_refused_the_same(
    world: tuple[InProcessGateway, StubUpstream, Recorder],
) -> None:
    """The UI sets aliases and stages through /mlflow/ajax-api with the session cookie."""
    gateway, upstream, _ = world
    writer = gateway.create_key("writer", owner="alice")
    cookie = sign_in(gateway, writer, "/mlflow/")
    for path, body in (
        ("registered-models/alias", {"name": "fraud", "alias": "production", "version": "3"}),
        ("model-versions/transition-stage", {"name": "fraud", "version": "2", "stage": "Archived"}),
    ):
        response = browse(gateway, "POST", f"/mlflow/ajax-api/2.0/mlflow/{path}", cookie, json=body)
        if path.endswith("alias"):
            assert (response.status_code, response.json()["reason"]) == (403, "protected"), response.text
        else:  # no stage rule here: the stage change is forwarded and recorded
            assert response.status_code == 200, response.text
    assert forwarded(upstream, "/ajax-api/2.0/mlflow/registered-models/alias") == []
    (moved,) = ProtectionStore(gateway.store.engine).history("fraud")
    assert (moved.action, moved.stage, moved.kind) == ("transition_stage", "Archived", "direct")


def test_protection_holds_with_permissions_off(
    new_gateway: GatewayFactory, new_upstream: UpstreamFactory
) -> None:
    upstream = new_upstream(answers=ANSWERS)
    gateway = new_gateway(upstream.url, permissions=False)
    ProtectionStore(gateway.store.engine).add_rule(
        model="fraud", alias="production", stage=None, approvers="ml-leads", approvals=1, actor="cli:test"
    )
    alice = gateway.create_key("alice", owner="alice")
    bob = gateway.create_key("bob", owner="bob")
    response = send(
        gateway, alice, "DELETE", "/api/2.0/mlflow/model-versions/delete", {"name": "fraud", "version": "2"}
    )
    assert (response.status_code, response.json()["reason"]) == (403, "protected")
    assert "x-hokusai-assertion" not in {name.lower() for name, _ in upstream.requests[0].headers}
    asked = gateway.request(
        "POST",
        "/api/v1/promotions",
        headers={"Authorization": f"Bearer {alice}"},
        json={"model": "fraud", "version": "3", "alias": "production"},
    ).json()
    response = gateway.request(
        "POST",
        f"/api/v1/promotions/{asked['id']}/approve",
        headers={"Authorization": f"Bearer {bob}"},
        json={},
    )
    assert (response.status_code, response.json()["reason"]) == (404, "permissions_off")
