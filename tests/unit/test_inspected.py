"""Which request bodies the gateway reads, and what it makes of them: creators, reserved tags, audit
fields, GraphQL operations (pure)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hokusai_registry.core.refusals import Reason, Refusal
from hokusai_registry.policy.inspection import (
    CREATOR_KEY,
    Inspected,
    audit_fields,
    camel,
    inspect,
    inspection,
    parse,
)

FLAVOURS = ("/api/2.0", "/ajax-api/2.0", "/api/3.0", "/ajax-api/3.0")


def judge(method: str, path: str, body: Any, owner: str = "alice") -> Inspected:
    found = inspection(method, path)
    assert found is not None, (method, path)
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return inspect(found, path, raw, {}, owner=owner, graphql_max_tokens=2000)


def refusal(method: str, path: str, body: Any) -> Refusal:
    with pytest.raises(Refusal) as raised:
        judge(method, path, body)
    return raised.value


def test_run_creation_and_registry_writes_are_inspected_on_every_api_flavour() -> None:
    for prefix in FLAVOURS:
        assert inspection("POST", f"{prefix}/mlflow/runs/create") is not None
        alias = inspection("POST", f"{prefix}/mlflow/registered-models/alias")
        assert alias is not None and alias.event == "model_alias.set"
    assert inspection("DELETE", "/api/2.0/mlflow/registered-models/alias").event == "model_alias.deleted"  # type: ignore[union-attr]


def test_everything_else_streams_unread() -> None:
    assert inspection("GET", "/api/2.0/mlflow/runs/create") is None
    assert inspection("POST", "/api/2.0/mlflow/runs/log-metric") is None
    assert inspection("PUT", "/api/2.0/mlflow-artifacts/artifacts/0/x/model.pkl") is None
    assert inspection("POST", "/api/2.0/mlflow/runs/create/extra") is None
    assert inspection("GET", "/api/2.0/mlflow/logged-models/m-1") is None
    assert inspection("PATCH", "/api/2.0/mlflow/logged-models/m-1") is None
    assert inspection("POST", "/api/4.0/mlflow/runs/set-tag") is None
    assert inspection("PUT", "/graphql") is None


def test_rename_is_audited_on_the_method_mlflow_serves() -> None:
    found = inspection("POST", "/api/2.0/mlflow/registered-models/rename")
    assert found is not None and found.event == "registered_model.renamed"
    assert inspection("PATCH", "/api/2.0/mlflow/registered-models/rename") is None


tags = st.lists(
    st.fixed_dictionaries(
        {"key": st.sampled_from([CREATOR_KEY, "team", "mlflow.source.name"]), "value": st.text()}
    )
)


@given(claimed=st.text(), tags=tags, owner=st.text(min_size=1), camel_case=st.booleans())
def test_the_owner_is_the_run_user_whatever_the_client_claims(
    claimed: str, tags: list[dict[str, str]], owner: str, camel_case: bool
) -> None:
    body = {
        "experiment_id": "1",
        "userId" if camel_case else "user_id": claimed,
        "tags": tags,
        "run_name": "r",
    }
    rewritten = json.loads(judge("POST", "/api/2.0/mlflow/runs/create", body, owner).body)
    assert rewritten["user_id"] == owner and "userId" not in rewritten
    users = [tag["value"] for tag in rewritten["tags"] if tag["key"] == CREATOR_KEY]
    assert users == [owner]
    others = [tag for tag in tags if tag["key"] != CREATOR_KEY]
    assert [tag for tag in rewritten["tags"] if tag["key"] != CREATOR_KEY] == others
    assert rewritten["run_name"] == "r" and rewritten["experiment_id"] == "1"


def test_promptlab_runs_get_the_owner_and_an_audit_event() -> None:
    path = "/ajax-api/2.0/mlflow/runs/create-promptlab-run"
    done = judge("POST", path, {"experiment_id": "3", "user_id": "mallory", "run_name": "p", "tags": []})
    assert json.loads(done.body)["user_id"] == "alice"
    assert done.fields == {"experiment_id": "3", "run_name": "p"}
    assert inspection("POST", path).event == "promptlab_run.created"  # type: ignore[union-attr]
    assert json.loads(judge("POST", path, {"experiment_id": "3"}).body)["user_id"] == "alice"
    assert refusal(
        "POST", path, {"experiment_id": "3", "tags": [{"key": CREATOR_KEY, "value": "m"}]}
    ).reason is (Reason.RESERVED_TAG)


def test_logged_models_and_traces_are_created_by_the_owner() -> None:
    model = json.loads(
        judge("POST", "/api/2.0/mlflow/logged-models", {"experiment_id": "1", "name": "m"}).body
    )
    assert model["tags"] == [{"key": CREATOR_KEY, "value": "alice"}]
    v3 = {"trace": {"traceInfo": {"traceMetadata": {CREATOR_KEY: "root", "mlflow.trace.user": "customer-7"}}}}
    info = json.loads(judge("POST", "/api/3.0/mlflow/traces", v3).body)["trace"]["traceInfo"]
    # mlflow.trace.user is the application's end user: never the gateway's to change.
    assert info["traceMetadata"] == {CREATOR_KEY: "alice", "mlflow.trace.user": "customer-7"}
    assert info["tags"] == {CREATOR_KEY: "alice"} and "trace_metadata" not in info
    fresh = json.loads(judge("POST", "/ajax-api/3.0/mlflow/traces", {"trace": {}}).body)
    assert fresh["trace"]["trace_info"]["trace_metadata"] == {CREATOR_KEY: "alice"}
    v2 = {"experiment_id": "1", "request_metadata": [{"key": CREATOR_KEY, "value": "root"}]}
    started = json.loads(judge("POST", "/api/2.0/mlflow/traces", v2).body)
    assert started["request_metadata"] == [{"key": CREATOR_KEY, "value": "alice"}]
    assert "trace" not in started  # the v2 route gets no v3 fields, and the reverse
    assert "request_metadata" not in info


@pytest.mark.parametrize(
    ("method", "route", "body"),
    [
        ("POST", "runs/set-tag", {"run_id": "r", "key": CREATOR_KEY, "value": "m"}),
        ("POST", "runs/set-tag", {"run_uuid": "r", "key": CREATOR_KEY, "value": "m"}),
        ("POST", "runs/set-tag", {"runId": "r", "key": CREATOR_KEY}),
        ("POST", "runs/delete-tag", {"run_id": "r", "key": CREATOR_KEY}),
        (
            "POST",
            "runs/log-batch",
            {"run_id": "r", "tags": [{"key": "a", "value": "b"}, {"key": CREATOR_KEY}]},
        ),
        ("PATCH", "logged-models/m-1/tags", {"tags": [{"key": CREATOR_KEY, "value": "m"}]}),
        ("DELETE", "logged-models/m-1/tags/mlflow.user", b""),
        ("PATCH", "traces/tr-1/tags", {"key": CREATOR_KEY, "value": "m"}),
        ("DELETE", "traces/tr-1/tags", {"key": CREATOR_KEY}),
        ("PATCH", "traces/tr-1", {"requestMetadata": [{"key": CREATOR_KEY, "value": "m"}]}),
        ("PATCH", "traces/tr-1", {"tags": [{"key": CREATOR_KEY, "value": "m"}]}),
    ],
)
def test_the_creator_tag_cannot_be_set_changed_or_deleted(method: str, route: str, body: Any) -> None:
    for prefix in FLAVOURS:
        refused = refusal(method, f"{prefix}/mlflow/{route}", body)
        assert refused.reason is Reason.RESERVED_TAG and refused.http_status == 400
        assert f"'{CREATOR_KEY}'" in refused.message


def test_other_tags_pass_unchanged() -> None:
    body = {"run_id": "r", "metrics": [], "tags": [{"key": "mlflow.user.note", "value": "x"}]}
    raw = json.dumps(body).encode()
    assert judge("POST", "/api/2.0/mlflow/runs/log-batch", raw).body == raw
    assert judge("DELETE", "/api/2.0/mlflow/logged-models/m-1/tags/team", b"").body == b""
    assert judge("POST", "/api/2.0/mlflow/runs/set-tag", {"run_id": "r", "key": "MLflow.user"}).fields == {}


def test_bodies_that_are_not_json_objects_are_refused() -> None:
    assert parse(b"not json") is None and parse(b"[1, 2]") is None and parse(b'{"a": 1}') == {"a": 1}
    assert refusal("POST", "/api/2.0/mlflow/runs/set-tag", b'"{}"').reason is Reason.BODY_NOT_JSON
    assert refusal("POST", "/api/2.0/mlflow/runs/create", b"").reason is Reason.INVALID_REQUEST
    assert refusal("POST", "/api/3.0/mlflow/traces", {"trace": []}).reason is Reason.INVALID_REQUEST


def test_audit_fields_from_body_or_query_in_either_spelling() -> None:
    found = inspection("DELETE", "/api/2.0/mlflow/registered-models/alias")
    assert found is not None
    assert audit_fields(found, {"name": "m", "alias": "a", "other": "x"}, {}) == {"name": "m", "alias": "a"}
    assert audit_fields(found, None, {"name": "m", "alias": "b"}) == {"name": "m", "alias": "b"}
    rename = inspection("POST", "/api/2.0/mlflow/registered-models/rename")
    assert rename is not None
    assert audit_fields(rename, {"name": "a", "newName": "b"}, {}) == {"name": "a", "new_name": "b"}
    version = inspection("POST", "/api/2.0/mlflow/model-versions/create")
    assert version is not None
    assert audit_fields(version, {"name": "m", "runId": "r", "source": "s"}, {})["run_id"] == "r"


def test_camel_is_protobufs_json_name() -> None:
    assert camel("new_name") == "newName" and camel("run_id") == "runId" and camel("name") == "name"
    assert camel("trace_info") == "traceInfo" and camel("request_metadata") == "requestMetadata"


MUTATION = 'mutation { testMutation(inputString: "x") { output } }'


@pytest.mark.parametrize(
    ("body", "needs"),
    [
        ({"query": "query { a }"}, None),
        ({"query": "{ a }"}, None),
        ({"query": MUTATION}, "write"),
        ({"query": "subscription { s }"}, "write"),
        ({"query": "# first\n mutation M { a }", "operationName": "M"}, "write"),
        ({"query": f"query Q {{ a }} {MUTATION[:8]} M {{ b }}", "operationName": "Q"}, None),
        ({"query": "query Q { a } mutation M { b }", "operationName": "M"}, "write"),
        ({"query": "fragment F on T { a } mutation { ...F }"}, "write"),
    ],
)
def test_graphql_mutations_need_write(body: dict[str, Any], needs: str | None) -> None:
    for method in ("POST", "GET", "HEAD"):
        assert judge(method, "/graphql", body).needs == needs


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"query { a }",
        {"query": 1},
        {"variables": {}},
        {"query": "mutation {"},
        {"query": "query A { a } mutation B { b }"},
        {"query": "query A { a }", "operationName": "B"},
        {"query": "query A { a }", "operationName": 3},
        {"query": "fragment F on T { a }"},
        {"query": "query { " + "a " * 3000 + "}"},
    ],
)
def test_graphql_requests_the_gateway_cannot_judge_are_refused(body: Any) -> None:
    refused = refusal("POST", "/graphql", body)
    assert refused.reason is Reason.INVALID_GRAPHQL and refused.http_status == 400
    assert "GraphQL" in refused.message


def test_graphql_token_limit_names_its_setting() -> None:
    assert (
        "HOKUSAI_GRAPHQL_MAX_TOKENS"
        in refusal("POST", "/graphql", {"query": "{ " + "a " * 3000 + "}"}).message
    )
