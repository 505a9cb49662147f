"""Protected aliases and promotions (issue 18) with the real MLflow (its auth app on), a gateway process of
this module's own (audit log in a file) and the unmodified MLflow client.

Alice owns a registered model (MANAGE: she created it) with four versions; alice, bob and carol are the
team `ml-leads-<id>`; dave is in no team and is denied the model. A rule protects `@production` (one
approval from the team) and another the legacy stage Production. Every route that can move or remove an
alias is tried on every mount and API prefix, in both spellings MLflow reads.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from mlflow.exceptions import MlflowException

from tests.e2e.permission_world import API, Owner, acting_as, make_owner, make_teams
from tests.helpers import HOKUSAI, GatewayProcess
from tests.support.polling import eventually

TIMEOUT = 30
PROTECTED = (403, "protected")


@dataclass(frozen=True)
class World:
    gateway: GatewayProcess
    admin: Owner
    alice: Owner
    bob: Owner
    carol: Owner
    dave: Owner
    team: str
    model: str
    versions: tuple[str, ...]
    alias_rule: str
    stage_rule: str
    run_id: str


def call(owner: Owner, method: str, path: str, body: dict[str, Any] | None = None, **params: Any) -> Any:
    response = requests.request(
        method,
        owner.gateway + path,
        headers={"Authorization": f"Bearer {owner.key}"},
        json=body,
        params=params or None,
        timeout=TIMEOUT,
    )
    return response.status_code, response.json()


@pytest.fixture(scope="module")
def world(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    data_dir = tmp_path_factory.mktemp("promotions")
    gateway = GatewayProcess(
        mlflow_server,
        data_dir,
        env={"HOKUSAI_AUDIT_LOG": str(data_dir / "audit.log"), "HOKUSAI_AUTH_FAILURE_LIMIT": "0"},
    )
    try:
        suffix = uuid.uuid4().hex[:8]
        admin = make_owner(gateway, f"admin-{suffix}", admin=True)
        alice, bob, carol, dave = (
            make_owner(gateway, f"{name}-{suffix}") for name in ("alice", "bob", "carol", "dave")
        )
        team = f"ml-leads-{suffix}"
        make_teams(admin, {team: [alice, bob, carol], f"others-{suffix}": [dave]})
        model = f"fraud-{suffix}"
        with acting_as(alice) as session:
            client = session.mlflow
            experiment = client.create_experiment(f"promotions-{suffix}")
            run = client.create_run(experiment)
            client.log_metric(run.info.run_id, "auc", 0.93)
            client.set_terminated(run.info.run_id)
            client.create_registered_model(model)
            versions = tuple(
                str(
                    client.create_model_version(
                        model, f"{run.info.artifact_uri}/model", run.info.run_id
                    ).version
                )
                for _ in range(4)
            )
        status, _ = call(
            admin, "POST", "/api/v1/grants", {"owner": dave.user, "model": model, "level": "DENY"}
        )
        assert status == 201
        status, alias_rule = call(
            admin,
            "POST",
            "/api/v1/protections",
            {"model": "fraud-*", "alias": "production", "approvers": team},
        )
        assert status == 201, alias_rule
        status, stage_rule = call(
            admin, "POST", "/api/v1/protections", {"model": model, "stage": "Production", "approvers": team}
        )
        assert status == 201, stage_rule
        yield World(
            gateway,
            admin,
            alice,
            bob,
            carol,
            dave,
            team,
            model,
            versions,
            alias_rule["id"],
            stage_rule["id"],
            run.info.run_id,
        )
    finally:
        gateway.stop()


def aliases(world: World) -> dict[str, str]:
    _, answer = call(world.admin, "GET", f"/mlflow{API}/registered-models/get", name=world.model)
    return {entry["alias"]: entry["version"] for entry in answer["registered_model"].get("aliases", [])}


def audit_lines(world: World, event: str) -> list[dict[str, Any]]:
    path = world.gateway.data_dir / "audit.log"
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [line for line in lines if line["audit"] == event]


def request_promotion(owner: Owner, world: World, version: str, **target: str) -> dict[str, Any]:
    status, answer = call(
        owner,
        "POST",
        "/api/v1/promotions",
        {"model": world.model, "version": version, **target, "reason": "better auc"},
    )
    assert status == 201, answer
    assert answer["state"] == "pending"
    return answer  # type: ignore[no-any-return]


def test_a_write_key_cannot_set_a_protected_alias_even_as_the_models_manager(world: World) -> None:
    with acting_as(world.alice) as session, pytest.raises(MlflowException) as refused:
        session.mlflow.set_registered_model_alias(world.model, "production", world.versions[0])
    message = str(refused.value)
    assert "PERMISSION_DENIED" in message
    assert world.alias_rule in message and "hokusai-registry promotions request" in message
    assert "production" not in aliases(world)
    # An alias no rule covers is hers to set, and the history records it.
    with acting_as(world.alice) as session:
        session.mlflow.set_registered_model_alias(world.model, "candidate", world.versions[0])
    assert aliases(world)["candidate"] == world.versions[0]
    _, history = call(world.alice, "GET", "/api/v1/promotions/history", model=world.model)
    assert any(entry["alias"] == "candidate" and entry["kind"] == "direct" for entry in history)


def test_a_request_and_one_approval_from_another_member_move_it_and_self_approval_is_refused(
    world: World,
) -> None:
    promotion = request_promotion(world.alice, world, world.versions[0], alias="production")
    status, refused = call(world.alice, "POST", f"/api/v1/promotions/{promotion['id']}/approve", {})
    assert (status, refused["reason"]) == (403, "self_approval")
    status, refused = call(world.dave, "POST", f"/api/v1/promotions/{promotion['id']}/approve", {})
    assert status in (403, 404), refused  # dave may not even read the model
    assert "production" not in aliases(world)
    status, applied = call(
        world.bob, "POST", f"/api/v1/promotions/{promotion['id']}/approve", {"comment": "lgtm"}
    )
    assert status == 200, applied
    assert applied["state"] == "applied" and [a["approver"] for a in applied["approvals"]] == [world.bob.user]
    assert aliases(world)["production"] == world.versions[0]
    with acting_as(world.alice) as session:
        version = session.mlflow.get_model_version_by_alias(world.model, "production")
    recorded = json.loads(version.tags["hokusai.promotion.production"])
    assert recorded["requester"] == world.alice.user and recorded["approvers"] == [world.bob.user]
    _, history = call(world.bob, "GET", "/api/v1/promotions/history", model=world.model)
    moved = next(entry for entry in history if entry["request_id"] == promotion["id"])
    assert moved["kind"] == "promotion" and moved["requester"] == world.alice.user
    assert moved["approvers"] == [world.bob.user] and moved["version"] == world.versions[0]
    events = [line["audit"] for line in audit_lines(world, "promotion.applied")]
    assert events


def test_a_second_request_for_a_moved_alias_goes_stale(world: World) -> None:
    before = aliases(world).get("production")
    first = request_promotion(world.alice, world, world.versions[1], alias="production")
    second = request_promotion(world.carol, world, world.versions[2], alias="production")
    status, applied = call(world.bob, "POST", f"/api/v1/promotions/{first['id']}/approve", {})
    assert (status, applied["state"]) == (200, "applied"), applied
    assert aliases(world)["production"] == world.versions[1] != before
    status, stale = call(world.bob, "POST", f"/api/v1/promotions/{second['id']}/approve", {})
    assert (status, stale["reason"]) == (400, "promotion_stale"), stale
    assert aliases(world)["production"] == world.versions[1]
    _, shown = call(world.carol, "GET", f"/api/v1/promotions/{second['id']}")
    assert shown["state"] == "stale" and "moved" in shown["note"]


def test_deleting_renaming_or_deleting_the_model_of_the_aliased_version_is_refused(world: World) -> None:
    holder = aliases(world)["production"]
    with acting_as(world.alice) as session:
        client = session.mlflow
        for attempt in (
            lambda: client.delete_model_version(world.model, holder),
            lambda: client.rename_registered_model(world.model, world.model + "-renamed"),
            lambda: client.delete_registered_model(world.model),
            lambda: client.delete_registered_model_alias(world.model, "production"),
        ):
            with pytest.raises(MlflowException, match="PERMISSION_DENIED"):
                attempt()
        assert client.get_model_version(world.model, holder).version == holder
    assert aliases(world)["production"] == holder


def test_an_admin_override_goes_through_and_is_audited(world: World) -> None:
    with acting_as(world.admin) as session:
        session.mlflow.set_registered_model_alias(world.model, "production", world.versions[3])
    assert aliases(world)["production"] == world.versions[3]
    line = eventually(
        lambda: audit_lines(world, "protection.overridden"), 10, 0.1, "the override's audit line"
    )[-1]
    assert line["rule_id"] == world.alias_rule and line["alias"] == "production"
    assert line["owner"] == world.admin.user and line["status"] == 200
    _, history = call(world.admin, "GET", "/api/v1/promotions/history", model=world.model)
    assert history[0]["kind"] == "override" and history[0]["version"] == world.versions[3]


def test_a_legacy_stage_rule_behaves_the_same(world: World) -> None:
    version = world.versions[0]
    with acting_as(world.alice) as session, pytest.raises(MlflowException, match="PERMISSION_DENIED"):
        session.mlflow.transition_model_version_stage(world.model, version, "Production")
    promotion = request_promotion(world.alice, world, version, stage="production")
    assert promotion["stage"] == "Production"
    status, applied = call(world.carol, "POST", f"/api/v1/promotions/{promotion['id']}/approve", {})
    assert (status, applied["state"]) == (200, "applied"), applied
    with acting_as(world.alice) as session:
        client = session.mlflow
        assert client.get_model_version(world.model, version).current_stage == "Production"
        # Out of a protected stage is a change of it too.
        with pytest.raises(MlflowException, match="PERMISSION_DENIED"):
            client.transition_model_version_stage(world.model, version, "Archived")
        assert client.get_model_version(world.model, version).current_stage == "Production"


# Every route that moves or removes an alias or stage holder, on every mount and API prefix.
MOUNTS = ("", "/mlflow", "/api/mlflow")
PREFIXES = ("/api/2.0/mlflow", "/ajax-api/2.0/mlflow")


def routes(world: World, holder: str) -> list[tuple[str, str, dict[str, Any]]]:
    model = world.model
    return [
        (
            "POST",
            "registered-models/alias",
            {"name": model, "alias": "production", "version": world.versions[2]},
        ),
        (
            "POST",
            "registered-models/alias",
            {"name": model, "alias": "PRODUCTION", "version": world.versions[2]},
        ),
        ("DELETE", "registered-models/alias", {"name": model, "alias": "production"}),
        (
            "POST",
            "model-versions/transition-stage",
            {"name": model, "version": world.versions[2], "stage": "production"},
        ),
        (
            "POST",
            "model-versions/transition-stage",
            {
                "name": model,
                "version": world.versions[0],
                "stage": "Staging",
                "archive_existing_versions": False,
            },
        ),
        ("DELETE", "model-versions/delete", {"name": model, "version": holder}),
        ("POST", "registered-models/rename", {"name": model, "new_name": model + "-x"}),
        ("POST", "registered-models/rename", {"name": model, "newName": model + "-x"}),
        ("DELETE", "registered-models/delete", {"name": model}),
    ]


def test_every_route_that_moves_an_alias_is_refused_on_every_mount(world: World) -> None:
    holder = aliases(world)["production"]
    outcomes = []
    for mount in MOUNTS:
        for prefix in PREFIXES:
            for method, route, body in routes(world, holder):
                response = requests.request(
                    method,
                    f"{world.gateway.url}{mount}{prefix}/{route}",
                    headers={"Authorization": f"Bearer {world.alice.key}"},
                    json=body,
                    timeout=TIMEOUT,
                )
                reason = (
                    response.json().get("reason")
                    if response.headers.get("content-type", "").startswith("application/json")
                    else None
                )
                outcomes.append((mount, prefix, method, route, response.status_code, reason))
    assert all((status, reason) == PROTECTED for *_, status, reason in outcomes), outcomes
    assert aliases(world)["production"] == holder
    with acting_as(world.alice) as session:
        assert session.mlflow.get_model_version(world.model, world.versions[0]).current_stage == "Production"


def test_deleting_a_workspace_needs_an_admin_key(world: World) -> None:
    status, refused = call(world.alice, "DELETE", "/mlflow/api/3.0/mlflow/workspaces/team-x", mode="CASCADE")
    assert (status, refused["reason"]) == (403, "scope")


def test_the_list_shows_only_requests_on_models_the_caller_may_read(world: World) -> None:
    pending = request_promotion(world.alice, world, world.versions[2], alias="production")
    _, seen_by_bob = call(world.bob, "GET", "/api/v1/promotions", pending="true")
    assert pending["id"] in [entry["id"] for entry in seen_by_bob]
    _, seen_by_dave = call(world.dave, "GET", "/api/v1/promotions")
    assert all(entry["model"] != world.model for entry in seen_by_dave)
    status, _ = call(world.dave, "GET", f"/api/v1/promotions/{pending['id']}")
    assert status == 404
    _, history = call(world.dave, "GET", "/api/v1/promotions/history", model=world.model)
    assert history == []
    _, everything = call(world.admin, "GET", "/api/v1/promotions")
    assert pending["id"] in [entry["id"] for entry in everything]
    status, cancelled = call(world.bob, "POST", f"/api/v1/promotions/{pending['id']}/cancel")
    assert (status, cancelled["reason"]) == (403, "not_the_requester")
    status, cancelled = call(world.alice, "POST", f"/api/v1/promotions/{pending['id']}/cancel")
    assert (status, cancelled["state"]) == (200, "cancelled")


def test_protection_rules_are_for_admin_keys(world: World, tmp_path: Path) -> None:
    status, refused = call(world.alice, "GET", "/api/v1/protections")
    assert (status, refused["reason"]) == (403, "scope")
    status, rules = call(world.admin, "GET", "/api/v1/protections")
    assert status == 200 and {world.alias_rule, world.stage_rule} <= {rule["id"] for rule in rules}


def hokusai(*args: str, key: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {
        name: value for name, value in os.environ.items() if not name.startswith("MLFLOW_TRACKING")
    }
    if key is not None:
        environment["HOKUSAI_API_KEY"] = key
    return subprocess.run(
        [HOKUSAI, *args], capture_output=True, text=True, timeout=120, env={**environment, **env}, check=False
    )


def test_the_commands_protect_request_approve_and_show_the_history(world: World) -> None:
    data_dir = str(world.gateway.data_dir)
    added = hokusai(
        "protect",
        "add",
        "--model",
        world.model,
        "--alias",
        "champion",
        "--approvers",
        world.team,
        "--data-dir",
        data_dir,
    )
    assert added.returncode == 0, added.stderr
    rule_id = added.stdout.split()[2].rstrip(":")
    listed = hokusai("protect", "list", "--json", "--data-dir", data_dir)
    assert rule_id in [rule["id"] for rule in json.loads(listed.stdout)]
    tracking = {"MLFLOW_TRACKING_URI": world.gateway.url + "/mlflow"}
    requested = hokusai(
        "promotions",
        "request",
        "--model",
        world.model,
        "--version",
        world.versions[1],
        "--alias",
        "champion",
        key=world.alice.key,
        **tracking,
    )
    assert requested.returncode == 0, requested.stderr
    request_id = requested.stdout.split()[1]
    mine = hokusai("promotions", "approve", request_id, key=world.alice.key, **tracking)
    assert mine.returncode == 1 and "may not approve" in mine.stderr
    pending = hokusai("promotions", "list", "--pending", "--url", world.gateway.url, key=world.bob.key)
    assert request_id in pending.stdout, pending.stderr
    approved = hokusai("promotions", "approve", request_id, "--comment", "ok", key=world.bob.key, **tracking)
    assert approved.returncode == 0 and approved.stdout.startswith("Applied:"), approved.stderr
    assert aliases(world)["champion"] == world.versions[1]
    history = hokusai(
        "promotions", "history", "--model", world.model, "--json", key=world.carol.key, **tracking
    )
    latest = json.loads(history.stdout)[0]
    assert (latest["kind"], latest["alias"], latest["approvers"]) == (
        "promotion",
        "champion",
        [world.bob.user],
    )
    shown = hokusai("promotions", "history", "--model", world.model, key=world.carol.key, **tracking)
    assert "promotion" in shown.stdout and world.bob.user in shown.stdout
    removed = hokusai("protect", "remove", rule_id, "--data-dir", data_dir)
    assert removed.returncode == 0, removed.stderr


def test_the_promotions_page_shows_what_approvers_decide_on_and_approves_with_the_key_again(
    world: World,
) -> None:
    """Bob, in the approvers' team, signs in with his key in Chromium, sees alice's request with the
    version's run, metrics and source, and approves it; the key entered again must be his session's."""
    playwright_api = pytest.importorskip("playwright.sync_api")
    chromium = Path("/usr/bin/chromium")
    if not chromium.exists():
        pytest.skip(f"{chromium} is missing: `make test` installs Debian's chromium")
    status, rule = call(
        world.admin,
        "POST",
        "/api/v1/protections",
        {"model": world.model, "alias": "canary", "approvers": world.team},
    )
    assert status == 201
    promotion = request_promotion(world.alice, world, world.versions[3], alias="canary")
    shots = Path(__file__).resolve().parents[2] / "test-output" / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(chromium), args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_context(base_url=world.gateway.url).new_page()
            page.set_default_timeout(30_000)
            page.goto("/promotions")
            page.wait_for_url("**/login?**")
            page.get_by_label("API key").fill(world.bob.key)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url("**/promotions")
            card = page.locator(f"[data-request='{promotion['id']}']")
            assert world.alice.user in card.locator(".requester").inner_text()
            assert world.run_id in card.locator(".run").inner_text()
            assert "auc = 0.93" in card.locator(".metrics").inner_text()
            assert "/model" in card.locator(".source").inner_text()
            page.screenshot(path=str(shots / "promotions-pending.png"))
            card.locator(f"#admin_key-{promotion['id']}").fill(world.carol.key)  # not his session's key
            card.get_by_role("button", name="Approve").click()
            assert "entered again" in page.locator(".error").inner_text()
            assert "canary" not in aliases(world)
            card = page.locator(f"[data-request='{promotion['id']}']")
            card.locator(f"#admin_key-{promotion['id']}").fill(world.bob.key)
            card.get_by_label("Comment").fill("metrics look right")
            card.get_by_role("button", name="Approve").click()
            notice = page.locator(".notice").inner_text()
            assert f"canary is version {world.versions[3]} now" in notice, notice
            page.screenshot(path=str(shots / "promotions-approved.png"))
        finally:
            browser.close()
    assert aliases(world)["canary"] == world.versions[3]
    _, shown = call(world.bob, "GET", f"/api/v1/promotions/{promotion['id']}")
    assert shown["state"] == "applied" and shown["approvals"][0]["comment"] == "metrics look right"
    call(world.admin, "DELETE", f"/api/v1/protections/{rule['id']}")


def test_two_approvals_from_the_team_and_a_rejection(world: World) -> None:
    """The worked example of docs/promotions.md: two approvals from the team move the alias; an approver
    counts once; a rejected request is closed."""
    status, rule = call(
        world.admin,
        "POST",
        "/api/v1/protections",
        {"model": world.model, "alias": "shadow", "approvers": world.team, "approvals": 2},
    )
    assert status == 201
    promotion = request_promotion(world.alice, world, world.versions[1], alias="shadow")
    approve = f"/api/v1/promotions/{promotion['id']}/approve"
    status, once = call(world.bob, "POST", approve, {})
    assert (status, once["state"], len(once["approvals"])) == (200, "pending", 1)
    status, again = call(world.bob, "POST", approve, {})
    assert (status, again["reason"]) == (400, "already_approved")
    assert "shadow" not in aliases(world)
    status, applied = call(world.carol, "POST", approve, {"comment": "holdout checked"})
    assert (status, applied["state"]) == (200, "applied"), applied
    assert aliases(world)["shadow"] == world.versions[1]
    rejected = request_promotion(world.alice, world, world.versions[2], alias="shadow")
    status, closed = call(
        world.carol, "POST", f"/api/v1/promotions/{rejected['id']}/reject", {"comment": "no"}
    )
    assert (status, closed["state"], closed["closed_by"]) == (200, "rejected", world.carol.user)
    status, late = call(world.bob, "POST", f"/api/v1/promotions/{rejected['id']}/approve", {})
    assert (status, late["reason"]) == (400, "promotion_closed")
    assert aliases(world)["shadow"] == world.versions[1]
    status, unprotected = call(
        world.alice,
        "POST",
        "/api/v1/promotions",
        {"model": world.model, "version": world.versions[1], "alias": "nightly"},
    )
    assert (status, unprotected["reason"]) == (400, "not_protected")
    call(world.admin, "DELETE", f"/api/v1/protections/{rule['id']}")
