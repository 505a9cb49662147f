"""Which request bodies the gateway reads, and the run attribution rewrite (pure)."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from hokusai_registry.policy.inspection import attribute_run, audit_fields, inspection, parse


def test_run_creation_and_registry_writes_are_inspected_on_every_api_flavour() -> None:
    for prefix in ("/api/2.0", "/ajax-api/2.0", "/api/3.0"):
        found = inspection("POST", f"{prefix}/mlflow/runs/create")
        assert found is not None and found.attribute and not found.audited
        alias = inspection("POST", f"{prefix}/mlflow/registered-models/alias")
        assert alias is not None and alias.event == "model_alias.set" and alias.audited
    assert inspection("DELETE", "/api/2.0/mlflow/registered-models/alias").event == "model_alias.deleted"  # type: ignore[union-attr]


def test_everything_else_streams_unread() -> None:
    assert inspection("GET", "/api/2.0/mlflow/runs/create") is None
    assert inspection("POST", "/api/2.0/mlflow/runs/log-batch") is None
    assert inspection("PUT", "/api/2.0/mlflow-artifacts/artifacts/0/x/model.pkl") is None
    assert inspection("POST", "/api/2.0/mlflow/runs/create/extra") is None


tags = st.lists(
    st.fixed_dictionaries(
        {"key": st.sampled_from(["mlflow.user", "team", "mlflow.source.name"]), "value": st.text()}
    )
)


@given(claimed=st.text(), tags=tags, owner=st.text(min_size=1))
def test_the_owner_is_the_run_user_whatever_the_client_claims(
    claimed: str, tags: list[dict[str, str]], owner: str
) -> None:
    body = {"experiment_id": "1", "user_id": claimed, "tags": tags, "run_name": "r"}
    rewritten = json.loads(attribute_run(dict(body), owner))
    assert rewritten["user_id"] == owner
    users = [tag["value"] for tag in rewritten["tags"] if tag["key"] == "mlflow.user"]
    assert users == [owner]
    others = [tag for tag in tags if tag["key"] != "mlflow.user"]
    assert [tag for tag in rewritten["tags"] if tag["key"] != "mlflow.user"] == others
    assert rewritten["run_name"] == "r" and rewritten["experiment_id"] == "1"


def test_bodies_that_are_not_json_objects_pass_unchanged() -> None:
    assert parse(b"not json") is None and parse(b"[1, 2]") is None and parse(b'{"a": 1}') == {"a": 1}


def test_audit_fields_from_body_or_query() -> None:
    found = inspection("DELETE", "/api/2.0/mlflow/registered-models/alias")
    assert found is not None
    assert audit_fields(found, {"name": "m", "alias": "a", "other": "x"}, {}) == {"name": "m", "alias": "a"}
    assert audit_fields(found, None, {"name": "m", "alias": "b"}) == {"name": "m", "alias": "b"}
