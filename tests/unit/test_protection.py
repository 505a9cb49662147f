"""Protected aliases and stages, the pure part (`policy/protection.py`): which requests move or remove an
alias or stage holder, in every spelling MLflow reads, and which rule they run into."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hokusai_registry.policy.protection import (
    Action,
    Holdings,
    Rule,
    Touch,
    action,
    alias_versions,
    glob,
    hit,
    model_holdings,
    names_promotion_tag,
    needs_lookup,
    stage_version,
    tags_versions,
    touched,
    version_holdings,
)
from hokusai_registry.policy.routes import MOUNTS

ALIAS = Rule("rule-a", "fraud-*", alias="prod*", approvers="ml-leads", approvals=2)
STAGE = Rule("rule-s", "fraud-*", stage="Production")
ROOTS = [f"/{prefix}/{version}/mlflow" for prefix in ("api", "ajax-api") for version in ("2.0", "3.0")]
MOVES = [
    ("POST", "registered-models/alias", Action.SET_ALIAS),
    ("DELETE", "registered-models/alias", Action.DELETE_ALIAS),
    ("POST", "model-versions/transition-stage", Action.TRANSITION_STAGE),
    ("DELETE", "model-versions/delete", Action.DELETE_VERSION),
    ("POST", "registered-models/rename", Action.RENAME_MODEL),
    ("DELETE", "registered-models/delete", Action.DELETE_MODEL),
]


@pytest.mark.parametrize(("method", "route", "expected"), MOVES)
@pytest.mark.parametrize("root", ROOTS)
def test_every_route_that_moves_an_alias_under_every_api_root(
    method: str, route: str, expected: Action, root: str
) -> None:
    assert action(method, f"{root}/{route}") is expected


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/2.0/mlflow/registered-models/alias"),  # reads the alias
        ("POST", "/api/2.0/mlflow/registered-models/delete"),  # MLflow takes DELETE only
        ("POST", "/api/2.0/mlflow/model-versions/create"),
        ("PATCH", "/api/2.0/mlflow/registered-models/update"),
        ("POST", "/api/2.0/mlflowx/registered-models/alias"),
        ("POST", "/api/4.0/mlflow/registered-models/alias"),
        ("POST", "/mlflow/api/2.0/mlflow/registered-models/alias"),  # paths arrive with the mount removed
    ],
)
def test_other_requests_move_nothing(method: str, path: str) -> None:
    assert action(method, path) is None


@pytest.mark.parametrize("prefix", ["api", "ajax-api"])
def test_deleting_a_workspace_deletes_or_moves_its_models(prefix: str) -> None:
    path = f"/{prefix}/3.0/mlflow/workspaces/team-a"
    assert action("DELETE", path) is Action.DELETE_WORKSPACE
    assert action("GET", path) is None
    touch = touched("DELETE", path, None)
    assert touch == Touch(Action.DELETE_WORKSPACE, workspace="team-a")
    assert hit([STAGE], touch) is not None  # any rule: the gateway cannot cheaply know what it holds
    assert hit([], touch) is None


def test_both_spellings_of_a_field_are_read() -> None:
    path = "/api/2.0/mlflow/registered-models/rename"
    assert touched("POST", path, {"name": "fraud-a", "newName": "x"}) == Touch(Action.RENAME_MODEL, "fraud-a")
    stage = touched(
        "POST",
        "/ajax-api/2.0/mlflow/model-versions/transition-stage",
        {"name": "m", "version": 3, "stage": "x"},
    )
    assert stage == Touch(Action.TRANSITION_STAGE, "m", version="3", stage="x")
    assert touched("DELETE", "/api/2.0/mlflow/registered-models/alias", None) == Touch(Action.DELETE_ALIAS)


def test_alias_rules_match_globs_without_regard_to_case() -> None:
    for alias in ("prod", "production", "PRODUCTION", "Prod-eu"):
        set_alias = Touch(Action.SET_ALIAS, "FRAUD-eu", alias=alias)
        found = hit([STAGE, ALIAS], set_alias)
        assert found is not None and found.rule is ALIAS
        assert found.what == f"@{alias} of model 'FRAUD-eu'"
    assert hit([ALIAS], Touch(Action.SET_ALIAS, "fraud-eu", alias="champion")) is None
    assert hit([ALIAS], Touch(Action.DELETE_ALIAS, "churn", alias="production")) is None


def test_stage_rules_cover_moving_into_and_out_of_the_stage() -> None:
    into = Touch(Action.TRANSITION_STAGE, "fraud-eu", version="2", stage="production")
    assert hit([STAGE], into) is not None
    out = Touch(Action.TRANSITION_STAGE, "fraud-eu", version="2", stage="Archived")
    assert hit([STAGE], out, Holdings(stages=("Production",))) is not None
    assert hit([STAGE], out, Holdings(stages=("Staging",))) is None
    assert hit([ALIAS], into) is None  # a stage transition moves no alias


@pytest.mark.parametrize("kind", [Action.DELETE_VERSION, Action.RENAME_MODEL, Action.DELETE_MODEL])
def test_deleting_or_renaming_what_holds_a_protected_alias_or_stage(kind: Action) -> None:
    touch = Touch(kind, "fraud-eu", version="4")
    assert hit([ALIAS, STAGE], touch, Holdings(aliases=("champion",))) is None
    by_alias = hit([ALIAS, STAGE], touch, Holdings(aliases=("champion", "production")))
    assert by_alias is not None and by_alias.rule is ALIAS and "@production" in by_alias.what
    by_stage = hit([ALIAS, STAGE], touch, Holdings(stages=("Production",)))
    assert by_stage is not None and by_stage.rule is STAGE
    assert hit([ALIAS, STAGE], Touch(kind, "churn"), Holdings(aliases=("production",))) is None


def test_lookups_only_where_a_rule_covers_the_model() -> None:
    assert needs_lookup([ALIAS], Touch(Action.DELETE_VERSION, "fraud-x", version="1"))
    assert not needs_lookup([ALIAS], Touch(Action.DELETE_VERSION, "churn", version="1"))
    assert not needs_lookup([ALIAS], Touch(Action.SET_ALIAS, "fraud-x", alias="production"))
    assert not needs_lookup([], Touch(Action.DELETE_MODEL, "fraud-x"))


def test_holdings_from_mlflows_answers() -> None:
    version = {"model_version": {"version": "3", "aliases": ["production", "x"], "current_stage": "Staging"}}
    assert version_holdings(version) == Holdings(("production", "x"), ("Staging",))
    assert version_holdings({}) == Holdings()
    model = {
        "registered_model": {
            "name": "m",
            "aliases": [{"alias": "production", "version": "3"}],
            "latest_versions": [
                {"version": "3", "current_stage": "None"},
                {"version": "2", "current_stage": "Production"},
            ],
        }
    }
    assert model_holdings(model) == Holdings(("production",), ("None", "Production"))
    assert alias_versions(model) == {"production": "3"}
    assert stage_version(model, "production") == "2"
    assert stage_version(model, "Staging") == ""


NAMES = st.text(st.characters(codec="ascii", categories=("L", "N")), min_size=1, max_size=12)


@given(model=NAMES, alias=NAMES)
def test_a_rule_naming_exactly_the_alias_covers_it_in_every_case(model: str, alias: str) -> None:
    rule = Rule("r", model, alias=alias)
    for spelled_model, spelled_alias in itertools.product((model, model.upper()), (alias, alias.lower())):
        assert rule.covers_alias(spelled_model, spelled_alias)
        assert hit([rule], Touch(Action.DELETE_ALIAS, spelled_model, alias=spelled_alias)) is not None
    assert not rule.covers_alias(model + "x", alias)
    assert glob("*", model) and glob(model[0] + "*", model)


@given(model=NAMES, alias=NAMES, other=NAMES)
def test_deleting_a_model_is_protected_exactly_when_it_holds_a_covered_alias(
    model: str, alias: str, other: str
) -> None:
    rule = Rule("r", "*", alias=alias)
    holdings = Holdings(aliases=(other,))
    found = hit([rule], Touch(Action.DELETE_MODEL, model), holdings)
    assert (found is not None) == (other.casefold() == alias.casefold())


def test_every_mount_is_removed_before_matching() -> None:
    # The route table's mounts: the canonical path the checks see never starts with one.
    assert MOUNTS == ("/mlflow", "/api/mlflow")


@pytest.mark.parametrize("root", ROOTS)
def test_the_promotion_record_tag_is_named_in_every_way_a_version_tag_is_written(root: str) -> None:
    set_tag, delete_tag, create = (
        f"{root}/model-versions/{route}" for route in ("set-tag", "delete-tag", "create")
    )
    assert (
        tags_versions("POST", set_tag)
        and tags_versions("DELETE", delete_tag)
        and tags_versions("POST", create)
    )
    assert not tags_versions("POST", f"{root}/registered-models/set-tag")
    for key in ("hokusai.promotion.production", "HOKUSAI.Promotion.x"):
        assert names_promotion_tag("POST", set_tag, {"name": "m", "version": "1", "key": key, "value": "{}"})
        assert names_promotion_tag("DELETE", delete_tag, {"name": "m", "version": "1", "key": key})
        assert names_promotion_tag("POST", create, {"name": "m", "tags": [{"key": "a"}, {"key": key}]})
    assert not names_promotion_tag("POST", set_tag, {"name": "m", "key": "hokusai.note"})
    assert not names_promotion_tag("POST", create, {"name": "m", "tags": "not a list"})
    assert not names_promotion_tag("POST", set_tag, None)
