"""Teams and per-resource permissions tried as an attacker would (issue 16): a real MLflow with its auth
app, the real gateway process and the unmodified MLflow client.

- Default READ (the session MLflow): alice (team A) owns an experiment, a run with `model/weights`, a
  registered model with two versions and `prod`, a trace, a logged model and a prompt. Bob (team B), with
  a write key of his own, tries every cross-team change of the issue's list with the MLflow client and
  over raw HTTP on every alias the gateway forwards; each is refused with PERMISSION_DENIED and alice
  reads back the same objects, artifact bytes included. A teammate granted EDIT writes; a DENY beats the
  team's EDIT.
- NO_PERMISSIONS (an MLflow of this module's own): bob's searches, lists, GraphQL answers and the UI show
  none of alice's objects, and fetching them by id or name is refused.
- MLflow's own port refuses requests without a valid assertion; the gateway never forwards one a client
  sent.
- MLflow's permission client works through the gateway for an admin key and for an owner with MANAGE on
  her experiment, and is refused to bob.

Users, teams (MLflow roles) and grants are made with MLflow's permission client and an admin key
(`permission_world.py`), not with the gateway's own commands.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from mlflow.entities import ViewType

from hokusai_registry.policy.assertions import EMPTY_BODY, sign
from hokusai_registry.run.mlflow_process import mlflow_command
from hokusai_registry.settings import Settings
from tests.e2e.permission_attacks import client_attacks, parser_differentials, raw_attacks
from tests.e2e.permission_world import (
    API,
    REFUSED,
    TIMEOUT_S,
    Objects,
    Owner,
    World,
    acting_as,
    build_world,
    check_refused,
    create_objects,
    make_owner,
    make_teams,
    snapshot,
    tried,
)
from tests.helpers import GatewayProcess, assertion_secret, free_port, raw_request, running_mlflow, signed


@pytest.fixture(scope="module")
def world(gateway: GatewayProcess, tmp_path_factory: pytest.TempPathFactory) -> World:
    """Default READ: the session MLflow and gateway, the objects made once for the module."""
    return build_world(gateway, tmp_path_factory.mktemp("permissions"))


# -- Default READ: bob changes nothing of alice's


def test_bob_changes_nothing_of_alices_with_the_mlflow_client(world: World, tmp_path: Path) -> None:
    before = snapshot(world.alice, world.a)
    attacks = client_attacks(world, tmp_path)
    with acting_as(world.bob) as session:
        outcomes = [tried(name, functools.partial(attack, session.mlflow)) for name, attack in attacks]
    check_refused(outcomes, len(attacks))
    after = snapshot(world.alice, world.a)
    assert after["artifacts"]["model/weights"] == world.a.weights_sha256
    assert after == before


def test_bob_changes_nothing_of_alices_over_http_on_any_alias(world: World) -> None:
    """Each change on every mount, api and ajax-api, 2.0 and 3.0 (where MLflow serves only one, the
    other is refused as an unknown route: MLflow's auth app fails closed)."""
    before = snapshot(world.alice, world.a)
    attacks = raw_attacks(world)
    outcomes = [attack.send(world.bob, target) for attack in attacks for target in attack.targets()]
    check_refused(outcomes, sum(len(list(attack.targets())) for attack in attacks))
    assert snapshot(world.alice, world.a) == before


def test_the_spellings_mlflow_parsers_disagree_on_change_nothing(world: World) -> None:
    """The parser differentials of mlflow-oidc-auth's advisories, each aimed at alice's run, experiment
    or model with bob's own named where a parser might look instead."""
    before = snapshot(world.alice, world.a)
    cases = parser_differentials(world)
    outcomes = [case.send(world.bob) for case in cases]
    report = "\n".join(f"{o.line()} (expected {c.expected})" for o, c in zip(outcomes, cases, strict=True))
    assert all((o.status, o.error_code) == c.expected for o, c in zip(outcomes, cases, strict=True)), report
    assert max(o.seconds for o in outcomes) < TIMEOUT_S, report
    assert snapshot(world.alice, world.a) == before


def test_where_a_request_names_two_objects_mlflow_acts_on_the_one_it_authorized(world: World) -> None:
    """A query or body naming alice's object beside bob's own, or a body naming hers under his path:
    MLflow authorizes and changes bob's, never alice's."""
    a, b = world.a, world.b
    before = snapshot(world.alice, a)
    bob = world.bob
    metric = {"value": 0.5, "timestamp": 1, "step": 0}
    assessment = {
        "assessment_name": "x",
        "trace_id": a.trace_id,
        "source": {"source_type": "HUMAN", "source_id": "bob"},
    }
    sent = [
        bob.request(
            "POST",
            f"{API}/runs/log-metric",
            params={"run_id": a.run_id},
            json={"run_id": b.run_id, "key": "via_query", **metric},
        ),
        bob.request(
            "POST",
            f"{API}/runs/log-metric",
            json={"run_uuid": a.run_id, "run_id": b.run_id, "key": "via_uuid", **metric},
        ),
        bob.request(
            "PATCH",
            f"{API}/traces/{b.trace_id}/tags",
            json={"request_id": a.trace_id, "key": "k", "value": "v"},
        ),
        bob.request(
            "PATCH",
            f"{API}/logged-models/{b.logged_model_id}/tags",
            json={"model_id": a.logged_model_id, "tags": [{"key": "k", "value": "v"}]},
        ),
        bob.request(
            "POST",
            f"/api/3.0/mlflow/traces/{b.trace_id}/assessments",
            json={"assessment": {**assessment, "feedback": {"value": 1}}},
        ),
    ]
    assert [response.status_code for response in sent] == [200] * len(sent), [r.text[:200] for r in sent]
    bobs_run = bob.json("GET", f"{API}/runs/get", params={"run_id": b.run_id})["run"]["data"]["metrics"]
    assert {"via_query", "via_uuid"} <= {m["key"] for m in bobs_run}
    assert bob.json("GET", f"/api/3.0/mlflow/traces/{b.trace_id}")["trace"]["trace_info"]["tags"]["k"] == "v"
    assert snapshot(world.alice, a) == before


def test_a_delete_body_not_labelled_json_cannot_name_another_teams_model(world: World) -> None:
    """MLflow 3.17's auth app reads an unlabelled DELETE's parameters from the query (bob's own model)
    and its handlers from the body (alice's): without the gateway's check (`policy/delete_bodies.py`)
    bob deleted her alias, tag, version and model this way."""
    alice, bob, b = world.alice, world.bob, world.b
    victim = f"{alice.user}-victim"
    with acting_as(alice) as session:
        client = session.mlflow
        client.create_registered_model(victim, tags={"k": "v"})
        version = client.create_model_version(
            victim, f"mlflow-artifacts:/{world.a.artifact_root}/model", world.a.run_id
        )
        client.set_registered_model_alias(victim, "prod", version.version)
    with acting_as(bob) as session:
        session.mlflow.set_registered_model_tag(b.model, "k", "v")
    before = alice.json("GET", f"{API}/registered-models/get", params={"name": victim})
    cases = [
        ("registered-models/alias", {"name": b.model, "alias": "prod"}, {"name": victim, "alias": "prod"}),
        ("registered-models/delete-tag", {"name": b.model, "key": "k"}, {"name": victim, "key": "k"}),
        (
            "model-versions/delete",
            {"name": b.model, "version": b.versions[1]},
            {"name": victim, "version": "1"},
        ),
        ("registered-models/delete", {"name": b.model}, {"name": victim}),
    ]
    answers = []
    for content_type in ("text/plain", None):
        for path, query, body in cases:
            headers = {"Content-Type": content_type} if content_type else {}
            response = bob.request(
                "DELETE", f"{API}/{path}", params=query, data=json.dumps(body), headers=headers
            )
            answers.append((path, content_type, response.status_code, response.json().get("reason")))
    assert alice.json("GET", f"{API}/registered-models/get", params={"name": victim}) == before, answers
    assert all(status == 400 and reason == "body_not_json" for *_, status, reason in answers), answers
    # Bob's own model is untouched too: nothing was forwarded.
    assert bob.json("GET", f"{API}/registered-models/get", params={"name": b.model})["registered_model"][
        "aliases"
    ]


def test_dot_segments_in_artifact_paths_never_reach_mlflow_and_mlflow_refuses_them_too(
    world: World, mlflow_server: str
) -> None:
    """`DELETE .../artifacts/.` (the artifact root when a parent cannot be resolved), in any spelling,
    is refused by the gateway's path rules; sent straight to MLflow as bob it is refused by MLflow's."""
    before = snapshot(world.alice, world.a)
    root = f"/api/2.0/mlflow-artifacts/artifacts/{world.a.artifact_root}"
    bearer = {"Authorization": f"Bearer {world.bob.key}"}
    for tail in ("/.", "/./", "/model/..", "/%2e", "/model/%2E%2E", f"/../../{world.b.artifact_root}"):
        status, _, body = raw_request(world.bob.gateway, "DELETE", "/mlflow" + root + tail, bearer)
        assert (status, json.loads(body)["reason"]) == (400, "bad_path"), (tail, body)
    climbing = f"/api/2.0/mlflow-artifacts/artifacts/{world.b.artifact_root}/../../../{world.a.artifact_root}"
    for target in (root + "/.", root + "/model/..", climbing, root + "/model"):
        status, _, body = raw_request(
            mlflow_server, "DELETE", target, signed("DELETE", target, world.bob.user)
        )
        assert status == 403, (target, body)
    upload = f"/api/2.0/mlflow-artifacts/mpu/create/{world.a.artifact_root}/model/weights"
    body = json.dumps({"path": "weights", "num_parts": 1}).encode()
    answer = requests.post(
        mlflow_server + upload,
        data=body,
        headers={**signed("POST", upload, world.bob.user, body=body), "Content-Type": "application/json"},
        timeout=TIMEOUT_S,
    )
    assert answer.status_code == 403, answer.text
    assert snapshot(world.alice, world.a) == before


def test_graphql_has_no_mutation_that_writes(world: World) -> None:
    answer = world.bob.json(
        "POST", "/graphql", json={"query": "{ __schema { mutationType { fields { name } } } }"}
    )
    fields = {field["name"] for field in answer["data"]["__schema"]["mutationType"]["fields"]}
    # Two searches filed under mutations and an echo: there is no GraphQL route to a change.
    assert fields == {"mlflowSearchRuns", "mlflowSearchDatasets", "testMutation"}


# -- Teams and grants


def test_a_teammate_granted_edit_writes_and_a_deny_beats_the_teams_edit(world: World, tmp_path: Path) -> None:
    a = world.a
    with acting_as(world.admin) as session:
        permissions = session.permissions
        permissions.add_role_permission(world.teams[world.team_a], "experiment", a.experiment_id, "EDIT")
        permissions.grant_user_permission(world.dave.user, "experiment", a.experiment_id, "DENY")
        effective = {
            owner.user: permissions.get_user_permission(owner.user, "experiment", a.experiment_id).permission
            for owner in (world.carol, world.dave, world.bob)
        }
    assert effective == {world.carol.user: "EDIT", world.dave.user: "DENY", world.bob.user: "READ"}
    notes = tmp_path / "carol.txt"
    notes.write_text("reviewed\n")
    with acting_as(world.carol) as session:
        session.mlflow.log_metric(a.run_id, "reviewed_by_carol", 1.0)
        session.mlflow.log_artifact(a.run_id, str(notes), "review")
        session.mlflow.set_tag(a.run_id, "reviewer", world.carol.user)
    with acting_as(world.dave) as session:
        client = session.mlflow
        outcomes = [
            tried("dave logs into her run", lambda: client.log_metric(a.run_id, "dave", 1.0)),
            tried("dave uploads", lambda: client.log_artifact(a.run_id, str(notes), "review")),
            tried("dave reads her run", lambda: client.get_run(a.run_id)),  # DENY is no READ either
        ]
    check_refused(outcomes, 3)
    run = world.alice.json("GET", f"{API}/runs/get", params={"run_id": a.run_id})["run"]
    assert "reviewed_by_carol" in {m["key"] for m in run["data"]["metrics"]}
    assert "dave" not in {m["key"] for m in run["data"]["metrics"]}
    assert {t["key"]: t["value"] for t in run["data"]["tags"]}["reviewer"] == world.carol.user
    listed = world.alice.json("GET", f"{API}/artifacts/list", params={"run_id": a.run_id, "path": "review"})
    assert [entry["path"] for entry in listed["files"]] == ["review/carol.txt"]


def test_mlflow_permission_client_works_through_the_gateway_for_admins_and_owners(world: World) -> None:
    alice, bob = world.alice, world.bob
    with acting_as(world.admin) as session:
        permissions = session.permissions
        ids = {owner.user: permissions.get_user(owner.user).id for owner in (alice, world.carol, world.dave)}
        members = {
            assignment.user_id for assignment in permissions.list_role_users(world.teams[world.team_a])
        }
        assert members == set(ids.values())
        # Beside his team, the role MLflow keeps each user's own grants in (`__user_<id>__`).
        roles = [
            role.name for role in permissions.list_user_roles(bob.user) if not role.name.startswith("__user_")
        ]
        assert roles == [world.team_b]
    # Alice made her experiment, so she has MANAGE on it and grants on it herself.
    with acting_as(alice) as session:
        shared = session.mlflow.create_experiment(f"{alice.user}-shared")
        run_id = session.mlflow.create_run(shared).info.run_id
        session.permissions.grant_user_permission(bob.user, "experiment", shared, "EDIT")
        session.permissions.grant_user_permission(bob.user, "registered_model", world.a.model, "EDIT")
    with acting_as(bob) as session:
        assert session.permissions.get_user_permission(bob.user, "experiment", shared).permission == "EDIT"
        session.mlflow.log_metric(run_id, "helped_by_bob", 1.0)
        session.mlflow.set_model_version_tag(world.a.model, world.a.versions[1], "checked_by", bob.user)
    with acting_as(alice) as session:
        session.permissions.revoke_user_permission(bob.user, "experiment", shared)
        session.permissions.revoke_user_permission(bob.user, "registered_model", world.a.model)
        assert session.mlflow.get_run(run_id).data.metrics == {"helped_by_bob": 1.0}
    with acting_as(bob) as session:
        client = session.mlflow
        outcomes = [
            tried("bob logs after the revoke", lambda: client.log_metric(run_id, "again", 1.0)),
            tried(
                "bob tags after the revoke",
                lambda: client.set_model_version_tag(world.a.model, "2", "k", "v"),
            ),
        ]
        assert session.permissions.get_user_permission(bob.user, "experiment", shared).permission == "READ"
    check_refused(outcomes, 2)


def test_bob_cannot_grant_himself_or_his_team_anything(world: World) -> None:
    a, bob = world.a, world.bob
    team_a, team_b = world.teams[world.team_a], world.teams[world.team_b]
    with acting_as(bob) as session:
        p = session.permissions
        attempts: list[tuple[str, Callable[[], object]]] = [
            (
                "MANAGE on her experiment",
                lambda: p.grant_user_permission(bob.user, "experiment", a.experiment_id, "MANAGE"),
            ),
            (
                "EDIT on her model",
                lambda: p.grant_user_permission(bob.user, "registered_model", a.model, "EDIT"),
            ),
            (
                "revoke alice's own",
                lambda: p.revoke_user_permission(world.alice.user, "experiment", a.experiment_id),
            ),
            (
                "his team on her experiment",
                lambda: p.add_role_permission(team_b, "experiment", a.experiment_id, "EDIT"),
            ),
            ("everything to his team", lambda: p.add_role_permission(team_b, "experiment", "*", "MANAGE")),
            ("join her team", lambda: p.assign_role(bob.user, team_a)),
            ("a team of his own", lambda: p.create_role("default", f"{bob.user}-crew")),
            ("a user of his own", lambda: p.create_user(f"{bob.user}-sock", secrets.token_urlsafe(16))),
            ("her grants", lambda: p.get_user_permission(world.alice.user, "experiment", a.experiment_id)),
        ]
        outcomes = [tried(name, attempt) for name, attempt in attempts]
        # MLflow's grant API takes prompts from administrators only; everyone else gets a 400.
        on_prompt = tried(
            "EDIT on her prompt", lambda: p.grant_user_permission(bob.user, "prompt", a.prompt, "EDIT")
        )
    check_refused(outcomes, len(attempts))
    assert (on_prompt.status, on_prompt.error_code) == (400, "INVALID_PARAMETER_VALUE"), on_prompt.line()
    with acting_as(world.admin) as session:
        assert (
            session.permissions.get_user_permission(bob.user, "experiment", a.experiment_id).permission
            == "READ"
        )


@pytest.mark.xfail(
    strict=True,
    reason="MLflow 3.17 shows every role of a workspace, its members and its grants, to anyone with a "
    "role in it (validate_can_view_roles): every team sees every other team's grants.",
)
def test_bob_cannot_read_another_teams_grants(world: World) -> None:
    with acting_as(world.bob) as session:
        p = session.permissions
        team_a = world.teams[world.team_a]
        outcomes = [
            tried("her team", lambda: p.get_role(team_a)),
            tried("her team's grants", lambda: p.list_role_permissions(team_a)),
            tried("her team's members", lambda: p.list_role_users(team_a)),
        ]
    check_refused(outcomes, 3)


# -- MLflow's own port


def test_mlflow_refuses_requests_without_a_valid_assertion_and_the_gateway_request_works(
    world: World, mlflow_server: str
) -> None:
    path, query = f"{API}/experiments/get", f"experiment_id={world.a.experiment_id}"
    url = f"{mlflow_server}{path}?{query}"
    user = world.alice.user
    secret = assertion_secret()

    def assertion(
        key: bytes = secret, issued: float | None = None, target: tuple[str, str] = (path, query)
    ) -> dict[str, str]:
        nonce = os.urandom(9).hex()
        value = sign(key, user, "GET", *target, now=issued or time.time(), nonce=nonce, body=EMPTY_BODY)
        return {"X-Hokusai-Assertion": value.decode()}

    valid = assertion()
    refused = {
        "none": requests.get(url, timeout=TIMEOUT_S),
        "forged (another secret)": requests.get(
            url, headers=assertion(secrets.token_bytes(32)), timeout=TIMEOUT_S
        ),
        "expired (issued 60 s ago)": requests.get(
            url, headers=assertion(issued=time.time() - 60), timeout=TIMEOUT_S
        ),
        "signed for another request": requests.get(
            url, headers=assertion(target=(path, "experiment_id=0")), timeout=TIMEOUT_S
        ),
    }
    assert requests.get(url, headers=valid, timeout=TIMEOUT_S).status_code == 200
    refused["reused for another request"] = requests.get(
        f"{mlflow_server}{path}?experiment_id=0", headers=valid, timeout=TIMEOUT_S
    )
    refused["reused with another method"] = requests.post(
        mlflow_server + path, headers=valid, json={}, timeout=TIMEOUT_S
    )
    for why, response in refused.items():
        assert (response.status_code, response.json()["error_code"]) == (401, "UNAUTHENTICATED"), why
        assert "Hokusai Registry gateway authenticated" in response.json()["message"], why
    through = world.alice.json("GET", path, params={"experiment_id": world.a.experiment_id})
    assert through["experiment"]["name"] == world.a.experiment


def test_an_assertion_seen_on_the_wire_is_not_accepted_with_another_body(
    world: World, mlflow_server: str
) -> None:
    with acting_as(world.alice) as session:
        run_id = session.mlflow.create_run(world.a.experiment_id, run_name="replayed").info.run_id
    path = f"{API}/runs/log-metric"
    first = {"run_id": run_id, "key": "loss", "value": 0.2, "timestamp": 1, "step": 0}
    body = json.dumps(first).encode()
    seen = {**signed("POST", path, world.alice.user, body=body), "Content-Type": "application/json"}
    assert requests.post(mlflow_server + path, data=body, headers=seen, timeout=TIMEOUT_S).status_code == 200
    replayed = requests.post(
        mlflow_server + path, json={**first, "value": 99.0, "step": 1}, headers=seen, timeout=TIMEOUT_S
    )
    assert replayed.status_code == 401, replayed.text
    assert "not the one the gateway signed" in replayed.json()["message"]


def test_an_assertion_a_client_sends_is_never_forwarded(world: World) -> None:
    """Bob sends alice's assertion (as if seen on the wire) and a junk one spelled with underscores,
    which MLflow's WSGI bridge would join to the gateway's: he still acts as bob."""
    a, bob = world.a, world.bob
    path = f"{API}/experiments/update"
    stolen = signed("POST", path, world.alice.user)["X-Hokusai-Assertion"]
    for header in ("X-Hokusai-Assertion", "X_Hokusai_Assertion"):
        write = bob.request(
            "POST", path, json={"experiment_id": a.experiment_id, "new_name": "x"}, headers={header: stolen}
        )
        assert (write.status_code, write.json()["error_code"]) == REFUSED, (header, write.text)
        read = bob.request(
            "GET",
            f"{API}/experiments/get",
            params={"experiment_id": a.experiment_id},
            headers={header: "v1.junk"},
        )
        assert read.status_code == 200, (header, read.text)
    assert (
        world.alice.json("GET", f"{API}/experiments/get", params={"experiment_id": a.experiment_id})[
            "experiment"
        ]["name"]
        == a.experiment
    )


# -- NO_PERMISSIONS: bob sees nothing of alice's


@dataclass(frozen=True)
class Isolated:
    gateway: GatewayProcess
    alice: Owner
    bob: Owner
    a: Objects
    b: Objects

    def leaks(self, text: str) -> list[str]:
        """Alice's names and ids found in `text`."""
        a = self.a
        marks = (self.alice.user, a.run_id, a.trace_id, a.logged_model_id)  # her names start with her user
        return [mark for mark in marks if mark in text]


@pytest.fixture(scope="module")
def isolated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Isolated]:
    """An MLflow of its own with HOKUSAI_DEFAULT_PERMISSION=NO_PERMISSIONS and a gateway in front."""
    data_dir = tmp_path_factory.mktemp("no-permissions")
    port = free_port()
    with contextlib.ExitStack() as stack:
        with pytest.MonkeyPatch.context() as env:  # only while MLflow starts: it writes its auth config
            env.setenv("HOKUSAI_DEFAULT_PERMISSION", "NO_PERMISSIONS")
            env.setenv("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
            settings = Settings.load(data_dir=data_dir, mlflow_workers=1)
            assert settings.default_permission == "NO_PERMISSIONS"
            url = stack.enter_context(running_mlflow(mlflow_command(settings, port), data_dir, port))
        gateway = GatewayProcess(url, data_dir / "gateway", env={"HOKUSAI_AUTH_FAILURE_LIMIT": "0"})
        stack.callback(gateway.stop)
        suffix = uuid.uuid4().hex[:6]
        admin = make_owner(gateway, f"ops-{suffix}", admin=True)
        alice, bob = make_owner(gateway, f"alice-{suffix}"), make_owner(gateway, f"bob-{suffix}")
        make_teams(admin, {f"team-a-{suffix}": [alice], f"team-b-{suffix}": [bob]})
        workdir = data_dir / "objects"
        yield Isolated(gateway, alice, bob, create_objects(alice, workdir), create_objects(bob, workdir))


def test_bobs_searches_and_lists_show_none_of_alices_objects(isolated: Isolated) -> None:
    a, b = isolated.a, isolated.b
    with acting_as(isolated.bob) as session:
        c = session.mlflow
        seen = {
            "experiments": [e.name for e in c.search_experiments(view_type=ViewType.ALL)],
            "runs": [
                r.info.run_id
                for r in c.search_runs([b.experiment_id, a.experiment_id], run_view_type=ViewType.ALL)
            ],
            "her runs": [r.info.run_id for r in c.search_runs([a.experiment_id])],
            "registered models": [m.name for m in c.search_registered_models()],
            "model versions": sorted((v.name, str(v.version)) for v in c.search_model_versions()),
            "her model's versions": [v.version for v in c.search_model_versions(f"name = '{a.model}'")],
            "versions of her run": [v.version for v in c.search_model_versions(f"run_id = '{a.run_id}'")],
            "traces": [t.info.trace_id for t in c.search_traces(experiment_ids=[b.experiment_id])],
            "logged models": [
                m.model_id for m in c.search_logged_models(experiment_ids=[b.experiment_id, a.experiment_id])
            ],
            "prompts": [p.name for p in c.search_prompts()],
        }
        mixed_traces = tried(
            "traces in both experiments",
            lambda: c.search_traces(experiment_ids=[b.experiment_id, a.experiment_id]),
        )
    assert seen == {
        "experiments": [b.experiment],
        "runs": [b.run_id],
        "her runs": [],
        "registered models": [b.model],
        "model versions": sorted((b.model, version) for version in b.versions),
        "her model's versions": [],
        "versions of her run": [],
        "traces": [b.trace_id],
        "logged models": [b.logged_model_id],
        "prompts": [b.prompt],
    }
    check_refused([mixed_traces], 1)  # refused as a whole, not filtered
    bob = isolated.bob
    raw = [
        bob.request(
            "POST", "/ajax-api/2.0/mlflow/experiments/search", json={"max_results": 1000, "view_type": "ALL"}
        ),
        bob.request("GET", f"{API}/registered-models/search", params={"filter": f"name = '{a.model}'"}),
        bob.request(
            "GET",
            f"{API}/registered-models/search",
            params={"filter": "tags.`mlflow.prompt.is_prompt` = 'true'"},
        ),
        bob.request("GET", f"{API}/model-versions/search", params={"filter": f"name = '{a.prompt}'"}),
        bob.request(
            "POST", f"{API}/runs/search", json={"experiment_ids": [a.experiment_id, b.experiment_id]}
        ),
        bob.request("POST", f"{API}/logged-models/search", json={"experiment_ids": [a.experiment_id]}),
        bob.request("GET", f"{API}/traces", params={"experiment_ids": b.experiment_id}),
    ]
    assert [response.status_code for response in raw] == [200] * len(raw)
    assert [isolated.leaks(response.text) for response in raw] == [[]] * len(raw)


def gql(field: str, arguments: str, selection: str) -> str:
    return f"{{ {field}(input: {{{arguments}}}) {{ {selection} }} }}"


def test_graphql_shows_bob_none_of_alices_objects(isolated: Isolated) -> None:
    a, b = isolated.a, isolated.b
    both = f'["{b.experiment_id}", "{a.experiment_id}"]'
    queries = {
        "mlflowGetExperiment": gql(
            "mlflowGetExperiment", f'experimentId: "{a.experiment_id}"', "experiment { name }"
        ),
        "mlflowGetRun": gql("mlflowGetRun", f'runId: "{a.run_id}"', "run { info { runName } }"),
        "mlflowListArtifacts": gql("mlflowListArtifacts", f'runId: "{a.run_id}"', "files { path }"),
        "mlflowGetMetricHistoryBulkInterval": gql(
            "mlflowGetMetricHistoryBulkInterval",
            f'runIds: ["{a.run_id}"], metricKey: "accuracy"',
            "metrics { value }",
        ),
        "mlflowSearchModelVersions": gql("mlflowSearchModelVersions", "", "modelVersions { name version }"),
        "mlflowSearchRuns": gql(
            "mlflowSearchRuns",
            f"experimentIds: {both}",
            "runs { info { runId experimentId } experiment { name } modelVersions { name } }",
        ),
        "mutation mlflowSearchRuns": "mutation "
        + gql("mlflowSearchRuns", f'experimentIds: ["{a.experiment_id}"]', "runs { info { runId } }"),
        "mutation mlflowSearchDatasets": "mutation "
        + gql("mlflowSearchDatasets", f'experimentIds: ["{a.experiment_id}"]', "datasetSummaries { name }"),
    }
    answers = {
        name: isolated.bob.json("POST", "/graphql", json={"query": query}) for name, query in queries.items()
    }
    assert {name: isolated.leaks(json.dumps(answer)) for name, answer in answers.items()} == {
        name: [] for name in queries
    }
    for name in (
        "mlflowGetExperiment",
        "mlflowGetRun",
        "mlflowListArtifacts",
        "mlflowGetMetricHistoryBulkInterval",
    ):
        assert answers[name]["data"] == {name: None}, answers[name]
    versions = answers["mlflowSearchModelVersions"]["data"]["mlflowSearchModelVersions"]["modelVersions"]
    assert sorted((v["name"], v["version"]) for v in versions) == sorted((b.model, v) for v in b.versions)
    runs = answers["mlflowSearchRuns"]["data"]["mlflowSearchRuns"]["runs"]
    assert [run["info"]["runId"] for run in runs] == [b.run_id]


def test_fetching_alices_objects_by_id_or_name_is_refused(isolated: Isolated, tmp_path: Path) -> None:
    a, bob = isolated.a, isolated.bob
    with acting_as(bob) as session:
        c = session.mlflow
        fetches: list[tuple[str, Callable[[], object]]] = [
            ("experiment", lambda: c.get_experiment(a.experiment_id)),
            ("experiment by name", lambda: c.get_experiment_by_name(a.experiment)),
            ("run", lambda: c.get_run(a.run_id)),
            ("metric history", lambda: c.get_metric_history(a.run_id, "accuracy")),
            ("artifact list", lambda: c.list_artifacts(a.run_id)),
            ("artifact download", lambda: c.download_artifacts(a.run_id, "model/weights", str(tmp_path))),
            ("registered model", lambda: c.get_registered_model(a.model)),
            ("model version", lambda: c.get_model_version(a.model, a.versions[0])),
            ("version by alias", lambda: c.get_model_version_by_alias(a.model, "prod")),
            ("version download uri", lambda: c.get_model_version_download_uri(a.model, a.versions[0])),
            ("trace", lambda: c.get_trace(a.trace_id)),
            ("logged model", lambda: c.get_logged_model(a.logged_model_id)),
            ("prompt", lambda: c.load_prompt(f"prompts:/{a.prompt}/1")),
            ("prompt by alias", lambda: c.load_prompt(f"prompts:/{a.prompt}@prod")),
        ]
        outcomes = [tried(name, fetch) for name, fetch in fetches]
    check_refused(outcomes, len(fetches))
    # The same over HTTP, GET and HEAD (a route MLflow's auth app has no HEAD rule for fails closed).
    reads = [
        (f"{API}/experiments/get", {"experiment_id": a.experiment_id}),
        (f"{API}/runs/get", {"run_uuid": a.run_id}),
        (f"{API}/registered-models/get", {"name": a.model}),
        (f"{API}/registered-models/alias", {"name": a.model, "alias": "prod"}),
        (f"/api/2.0/mlflow-artifacts/artifacts/{a.artifact_root}/model/weights", None),
        ("/api/2.0/mlflow-artifacts/artifacts", {"path": a.artifact_root}),
        ("/get-artifact", {"run_id": a.run_id, "path": "model/weights"}),
        ("/model-versions/get-artifact", {"name": a.model, "version": a.versions[0], "path": "weights"}),
        (f"/api/3.0/mlflow/traces/{a.trace_id}", None),
        ("/ajax-api/3.0/mlflow/get-trace-artifact", {"request_id": a.trace_id}),
        (f"{API}/logged-models/{a.logged_model_id}", None),
    ]
    answers = {
        (method, path): bob.request(method, path, params=params).status_code
        for path, params in reads
        for method in ("GET", "HEAD")
    }
    assert {key: status for key, status in answers.items() if status != 403} == {}


def test_the_mlflow_ui_shows_bob_none_of_alices_experiments_or_models(isolated: Isolated) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    chromium = Path("/usr/bin/chromium")
    if not chromium.exists():
        pytest.skip(f"{chromium} is missing: `make test` installs Debian's chromium (apt-get, as root)")
    shots = Path(__file__).resolve().parents[2] / "test-output" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    b = isolated.b
    args = [
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-sync",
    ]
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), args=args)
        try:
            page = browser.new_page(base_url=isolated.gateway.url, viewport={"width": 1400, "height": 900})
            page.set_default_timeout(30_000)
            page.goto("/mlflow/")
            page.wait_for_url("**/login?**")
            page.get_by_label("API key").fill(isolated.bob.key)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(lambda url: "/login" not in url)
            page.goto("/mlflow/#/experiments")
            page.get_by_text(b.experiment).first.wait_for()
            page.screenshot(path=str(shots / "permissions-01-bobs-experiments.png"))
            assert isolated.leaks(page.content()) == []
            page.goto("/mlflow/#/models")
            page.get_by_text(b.model).first.wait_for()
            page.screenshot(path=str(shots / "permissions-02-bobs-models.png"))
            assert isolated.leaks(page.content()) == []
        finally:
            browser.close()


def test_a_read_grant_from_alice_shows_bob_her_experiment_until_she_revokes_it(isolated: Isolated) -> None:
    """With NO_PERMISSIONS, alice (MANAGE as its creator) grants bob READ on her experiment with MLflow's
    permission client: it appears in his searches and opens; revoked, it is gone again."""
    a, alice, bob = isolated.a, isolated.alice, isolated.bob

    def bobs_view() -> tuple[list[str], int]:
        searched = bob.json("POST", f"{API}/experiments/search", json={"max_results": 1000})
        opened = bob.request("GET", f"{API}/experiments/get", params={"experiment_id": a.experiment_id})
        return sorted(e["name"] for e in searched.get("experiments", [])), opened.status_code

    with acting_as(alice) as session:
        session.permissions.grant_user_permission(bob.user, "experiment", a.experiment_id, "READ")
        try:
            assert bobs_view() == (sorted([a.experiment, isolated.b.experiment]), 200)
            with acting_as(bob) as his:
                refused = tried("bob logs with READ", lambda: his.mlflow.log_metric(a.run_id, "x", 1.0))
            check_refused([refused], 1)
        finally:
            session.permissions.revoke_user_permission(bob.user, "experiment", a.experiment_id)
    assert bobs_view() == ([isolated.b.experiment], 403)
