"""`grants backfill`'s reasoning (admin/backfill.py), on evidence given to it: which audit lines count,
renames and deletions followed in time order, one proposal per owner and resource, owners no key has and
reserved names skipped, the table. The requests to MLflow are proven live (tests/e2e/test_backfill.py)."""

from __future__ import annotations

import json

from hokusai_registry.admin.backfill import (
    Attributions,
    Registry,
    Resource,
    _quoted,
    audit_attributions,
    audit_events,
    propose,
    table,
)

IRIS = Resource("experiment", "7", "iris")
OLD = Resource("experiment", "12", "old", deleted=True)
CLF = Resource("registered_model", "clf", "clf")
GREETING = Resource("prompt", "greeting", "greeting")
REGISTRY = Registry(
    experiments={"7": IRIS, "12": OLD},
    models={"clf": CLF, "greeting": GREETING},
)


def line(event: str, ts: str, status: int | None = 200, **fields: object) -> str:
    body: dict[str, object] = {"ts": ts, "audit": event, **fields}
    if status is not None:
        body["status"] = status
    return json.dumps(body)


def owners(found: Attributions) -> dict[tuple[str, str], list[str]]:
    return {(owner, resource.id): sorted(evidence) for (owner, resource), evidence in found.items()}


def test_only_successful_creation_lines_count_and_in_time_order() -> None:
    lines = [
        line("model_version.created", "2026-01-03T00:00:00", owner="bob", name="clf"),
        line("registered_model.created", "2026-01-01T00:00:00", owner="alice", name="clf"),
        line("registered_model.created", "2026-01-02T00:00:00", status=403, owner="mallory", name="x"),
        line("key.created", "2026-01-01T00:00:00", status=None, owner="carol", name="k"),
        line("auth.failed", "2026-01-01T00:00:00", status=None, path="/x"),
        "not json at all",
        "[1, 2]",
    ]
    events = audit_events(lines)
    assert [(event["audit"], event["owner"]) for event in events] == [
        ("registered_model.created", "alice"),
        ("model_version.created", "bob"),
    ]
    assert owners(audit_attributions(events, REGISTRY)) == {
        ("alice", "clf"): ["audit: created it"],
        ("bob", "clf"): ["audit: created versions"],
    }


def test_renames_carry_owners_and_a_recreated_name_starts_afresh() -> None:
    lines = [
        line("registered_model.created", "1", owner="alice", name="draft"),
        line("model_version.created", "2", owner="bob", name="draft"),
        line("registered_model.renamed", "3", owner="carol", name="draft", new_name="clf"),
        # A model deleted, then another made with its name: the first one's owners own nothing now.
        line("registered_model.created", "4", owner="dave", name="greeting"),
        line("registered_model.deleted", "5", owner="dave", name="greeting"),
        line("registered_model.created", "6", owner="erin", name="greeting"),
        line("registered_model.created", "7", owner="frank", name="gone"),  # no longer in MLflow
    ]
    found = audit_attributions(audit_events(lines), REGISTRY)
    assert owners(found) == {
        ("alice", "clf"): ["audit: created it"],
        ("bob", "clf"): ["audit: created versions"],
        ("erin", "greeting"): ["audit: created it"],
    }
    # The resource is what MLflow holds now: a prompt is granted as a prompt.
    assert {resource.kind for (_, resource) in found} == {"registered_model", "prompt"}


def test_experiments_from_their_creation_line_by_name_and_prompt_lab_runs_by_id() -> None:
    lines = [
        line("experiment.created", "1", owner="alice", name="iris"),
        line("experiment.created", "2", owner="bob", name="renamed-since"),  # not found by name now
        line("promptlab_run.created", "3", owner="carol", experiment_id="12", run_name="r"),
    ]
    assert owners(audit_attributions(audit_events(lines), REGISTRY)) == {
        ("alice", "7"): ["audit: created it"],
        ("carol", "12"): ["audit: prompt-lab runs"],
    }


def test_one_proposal_per_owner_and_resource_with_all_its_evidence() -> None:
    from_mlflow: Attributions = {("alice", IRIS): {"runs"}, ("bob", IRIS): {"runs"}, ("alice", CLF): {"x"}}
    from_audit: Attributions = {("alice", IRIS): {"audit: created it"}}
    proposals = propose(from_mlflow, from_audit, key_owners={"alice", "bob"})
    assert [(p.owner, p.resource.id, p.evidence, p.status) for p in proposals] == [
        ("alice", "7", ["audit: created it", "runs"], "new"),
        ("bob", "7", ["runs"], "new"),
        ("alice", "clf", ["x"], "new"),
    ]
    assert [p.owners_of_resource for p in proposals] == [2, 2, 1]


def test_experiments_in_numeric_order() -> None:
    found: Attributions = {("a", Resource("experiment", str(n), f"e{n}")): {"runs"} for n in (10, 2, 1)}
    assert [p.resource.id for p in propose(found, key_owners=None)] == ["1", "2", "10"]


def test_owners_no_key_has_are_skipped_unless_asked_and_reserved_names_always() -> None:
    found: Attributions = {
        ("alice", IRIS): {"runs"},
        ("jovyan", IRIS): {"runs"},  # the OS user a client claimed before the gateway attributed runs
        ("hokusai:admin", IRIS): {"runs"},
    }
    statuses = {p.owner: (p.status, p.detail) for p in propose(found, key_owners={"alice"})}
    assert statuses["alice"] == ("new", "")
    assert statuses["jovyan"][0] == "skipped" and "no key has this owner" in statuses["jovyan"][1]
    assert statuses["hokusai:admin"] == ("skipped", "a name reserved for the gateway")
    anyone = {p.owner: p.status for p in propose(found, key_owners={"alice"}, any_owner=True)}
    assert anyone == {"alice": "new", "jovyan": "new", "hokusai:admin": "skipped"}
    # Keys checked elsewhere (AUTH_SERVICE_URL): every owner counts.
    assert {p.owner: p.status for p in propose(found, key_owners=None)}["jovyan"] == "new"


def test_the_table_names_resources_and_shared_ones() -> None:
    found: Attributions = {("alice", OLD): {"runs"}, ("bob", OLD): {"runs"}, ("alice", GREETING): {"a"}}
    lines = list(table(propose(found, key_owners=None)))
    assert lines[0].split() == ["OWNER", "GRANT", "RESOURCE", "FROM", "STATUS"]
    assert lines[1].split()[:2] == ["alice", "MANAGE"]
    assert "experiment 12 (old) [deleted]" in lines[1] and "one of 2 owners: review" in lines[1]
    assert "prompt greeting" in lines[3] and "review" not in lines[3]
    assert "Nothing to propose" in next(table([]))


def test_filter_literals_quote_what_they_can() -> None:
    assert _quoted("alice") == "'alice'"
    assert _quoted("o'hara") == '"o\'hara"'
    assert _quoted("o'h\"x") is None
    assert _quoted("back\\slash") is None


def test_the_default_experiment_gets_edit_not_manage() -> None:
    """It was created by nobody: those who logged runs there keep logging and reading it, and none of them
    may delete it or grant on it."""
    default = Resource("experiment", "0", "Default")
    found: Attributions = {(owner, default): {"runs"} for owner in ("alice", "bob")}
    found[("alice", IRIS)] = {"runs"}
    levels = {(p.owner, p.resource.id): p.level for p in propose(found, key_owners=None)}
    assert levels == {("alice", "0"): "EDIT", ("bob", "0"): "EDIT", ("alice", "7"): "MANAGE"}
    assert propose(found, key_owners=None)[0].as_dict()["permission"] == "EDIT"
