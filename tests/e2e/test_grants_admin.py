"""Teams and grants, live: against the session's real MLflow (its auth app on, default permission READ)
behind a real gateway, a grant made with the CLI, one through the REST API and one through the /admin
pages each decide what a second owner's key may do with the unmodified MLflow client: EDIT lets bob log a
metric in alice's run, and removing the grant refuses it again (PERMISSION_DENIED). A team's grant
reaches its members; an owner's DENY beats the team's EDIT; `teams list` and `grants list` show it all.
(The exact requests each operation makes are tests/inprocess/test_permissions.py.)"""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from hokusai_registry.auth.sessions import csrf_token
from tests.helpers import HOKUSAI, GatewayProcess
from tests.support.cookies import COOKIE, session_cookie_in
from tests.support.polling import eventually

SUFFIX = uuid.uuid4().hex[:8]


@dataclass(frozen=True)
class People:
    admin: str
    admin_id: str
    alice: str
    bob: str
    carol: str


def owner(name: str) -> str:
    return f"{name}-{SUFFIX}"


@pytest.fixture(scope="module")
def people(gateway: GatewayProcess) -> People:
    """Keys whose owners are their names (an admin's acts as MLflow's administrator)."""
    admin = gateway.create_key(owner("root"), admin=True)
    return People(
        admin=admin,
        admin_id=admin.split("_")[2],
        alice=gateway.create_key(owner("alice")),
        bob=gateway.create_key(owner("bob")),
        carol=gateway.create_key(owner("carol")),
    )


@pytest.fixture
def client(gateway_client: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """The MLflow client through the session's gateway; `as_key` picks whose key it sends."""
    return gateway_client


def as_key(client: pytest.MonkeyPatch, key: str) -> MlflowClient:
    client.setenv("MLFLOW_TRACKING_TOKEN", key)
    return MlflowClient()


def alices_run(client: pytest.MonkeyPatch, people: People, name: str) -> tuple[str, str, str]:
    """An experiment of alice's (she gets MANAGE on it, as its creator) and a run in it."""
    mlflow = as_key(client, people.alice)
    experiment = f"{name}-{SUFFIX}"
    experiment_id = mlflow.create_experiment(experiment)
    run_id = mlflow.create_run(experiment_id).info.run_id
    return experiment_id, experiment, run_id


def logs_metric(client: pytest.MonkeyPatch, key: str, run_id: str) -> str:
    """ "ok", or the MLflow client's error code for logging a metric in the run with `key`."""
    try:
        as_key(client, key).log_metric(run_id, "accuracy", 0.9)
    except MlflowException as exc:
        return str(exc.error_code)
    return "ok"


def cli(gateway: GatewayProcess, mlflow_server: str, *args: str) -> str:
    done = subprocess.run(
        [HOKUSAI, *args, "--mlflow-url", mlflow_server, "--data-dir", str(gateway.data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def api(gateway: GatewayProcess, people: People, method: str, path: str, body: Any = None) -> Any:
    answer = requests.request(
        method, gateway.url + path, json=body, headers={"Authorization": f"Bearer {people.admin}"}, timeout=60
    )
    assert answer.ok, answer.text
    return answer.json()


def test_a_grant_made_with_the_cli_lets_bob_edit_alices_run_until_it_is_removed(
    client: pytest.MonkeyPatch, gateway: GatewayProcess, mlflow_server: str, people: People
) -> None:
    _, experiment, run_id = alices_run(client, people, "cli-granted")
    assert logs_metric(client, people.bob, run_id) == "PERMISSION_DENIED"  # default READ
    granted = cli(
        gateway,
        mlflow_server,
        "grants",
        "add",
        "--owner",
        owner("bob"),
        "--experiment",
        experiment,
        "--level",
        "EDIT",
    )
    assert granted.startswith("Granted EDIT on experiment ") and owner("bob") in granted
    assert logs_metric(client, people.bob, run_id) == "ok"
    assert as_key(client, people.alice).get_run(run_id).data.metrics == {"accuracy": 0.9}

    cli(gateway, mlflow_server, "grants", "remove", "--owner", owner("bob"), "--experiment", experiment)
    assert logs_metric(client, people.bob, run_id) == "PERMISSION_DENIED"
    assert as_key(client, people.bob).get_run(run_id).info.run_id == run_id  # READ again, as before


def test_a_grant_made_through_the_rest_api_takes_effect_and_is_audited(
    client: pytest.MonkeyPatch, gateway: GatewayProcess, people: People
) -> None:
    model = f"churn-{SUFFIX}"
    as_key(client, people.alice).create_registered_model(model)
    with pytest.raises(MlflowException) as refused:
        as_key(client, people.bob).set_registered_model_tag(model, "stage", "bob")
    assert refused.value.error_code == "PERMISSION_DENIED"

    grant = api(
        gateway, people, "POST", "/api/v1/grants", {"owner": owner("bob"), "model": model, "level": "EDIT"}
    )
    assert grant == {
        "owner": owner("bob"),
        "team": None,
        "resource_type": "registered_model",
        "resource_id": model,
        "level": "EDIT",
    }
    as_key(client, people.bob).set_registered_model_tag(model, "stage", "bob")
    assert as_key(client, people.alice).get_registered_model(model).tags["stage"] == "bob"

    # Audited by the gateway, with the admin key as the actor.
    def audited() -> bool:
        lines = [json.loads(line) for line in gateway.log().splitlines() if '"grant.added"' in line]
        return any(
            line["actor"] == f"key:{people.admin_id}" and line["resource_id"] == model for line in lines
        )

    eventually(audited, 10, 0.2, "the gateway's grant.added audit line")

    api(gateway, people, "POST", "/api/v1/grants/remove", {"owner": owner("bob"), "model": model})
    with pytest.raises(MlflowException) as again:
        as_key(client, people.bob).set_registered_model_tag(model, "stage", "bob-again")
    assert again.value.error_code == "PERMISSION_DENIED"


def test_a_grant_made_on_the_admin_pages_takes_effect(
    client: pytest.MonkeyPatch, gateway: GatewayProcess, people: People
) -> None:
    experiment_id, _, run_id = alices_run(client, people, "page-granted")
    assert logs_metric(client, people.bob, run_id) == "PERMISSION_DENIED"
    origin = {"Origin": gateway.url}
    login = requests.post(
        gateway.url + "/login",
        data={"key": people.admin, "next": "/admin/grants"},
        headers=origin,
        allow_redirects=False,
        timeout=30,
    )
    found = session_cookie_in(login.raw.headers.getlist("Set-Cookie"))
    assert login.status_code == 303 and found is not None, login.text
    cookie = {"Cookie": f"{COOKIE}={found[0]}"}
    page = requests.get(gateway.url + "/admin/grants", headers=cookie, timeout=30)
    assert page.status_code == 200 and re.search(r'name="csrf" value="([^"]+)"', page.text)
    form = {
        "csrf": csrf_token(found[0]),
        "grantee": "owner",
        "name": owner("bob"),
        "kind": "experiment",
        "resource": experiment_id,
        "level": "EDIT",
        "admin_key": people.admin,
    }
    posted = requests.post(gateway.url + "/admin/grants", data=form, headers={**cookie, **origin}, timeout=60)
    assert posted.status_code == 200 and "Granted EDIT on experiment" in posted.text, posted.text
    assert logs_metric(client, people.bob, run_id) == "ok"


def test_a_team_grant_reaches_its_members_and_an_owners_deny_beats_it(
    client: pytest.MonkeyPatch, gateway: GatewayProcess, mlflow_server: str, people: People
) -> None:
    team = f"ml-{SUFFIX}"
    experiment_id, _, run_id = alices_run(client, people, "team-granted")
    cli(gateway, mlflow_server, "teams", "create", team)
    cli(gateway, mlflow_server, "teams", "add", team, owner("carol"))
    members = api(gateway, people, "POST", f"/api/v1/teams/{team}/members", {"owner": owner("bob")})
    assert members == {"name": team, "members": sorted([owner("bob"), owner("carol")])}
    assert logs_metric(client, people.carol, run_id) == "PERMISSION_DENIED"
    api(
        gateway,
        people,
        "POST",
        "/api/v1/grants",
        {"team": team, "experiment": experiment_id, "level": "EDIT"},
    )
    assert logs_metric(client, people.carol, run_id) == "ok"
    assert logs_metric(client, people.bob, run_id) == "ok"

    cli(
        gateway,
        mlflow_server,
        "grants",
        "add",
        "--owner",
        owner("bob"),
        "--experiment",
        experiment_id,
        "--level",
        "DENY",
    )
    assert logs_metric(client, people.bob, run_id) == "PERMISSION_DENIED"
    with pytest.raises(MlflowException) as unread:
        as_key(client, people.bob).get_run(run_id)  # DENY refuses reading too
    assert unread.value.error_code == "PERMISSION_DENIED"
    assert logs_metric(client, people.carol, run_id) == "ok"

    teams = json.loads(cli(gateway, mlflow_server, "teams", "list", "--json"))
    assert {"name": team, "members": sorted([owner("bob"), owner("carol")])} in teams
    bobs = json.loads(cli(gateway, mlflow_server, "grants", "list", "--owner", owner("bob"), "--json"))
    mine = {
        (g["owner"], g["team"], g["resource_id"], g["level"])
        for g in bobs
        if g["resource_id"] == experiment_id
    }
    assert mine == {(owner("bob"), None, experiment_id, "DENY"), (None, team, experiment_id, "EDIT")}
    teams_grants = api(gateway, people, "GET", f"/api/v1/grants?team={team}")
    assert [(g["resource_type"], g["resource_id"], g["level"]) for g in teams_grants] == [
        ("experiment", experiment_id, "EDIT")
    ]

    api(gateway, people, "DELETE", f"/api/v1/teams/{team}")
    assert logs_metric(client, people.carol, run_id) == "PERMISSION_DENIED"  # the team's grant went with it
