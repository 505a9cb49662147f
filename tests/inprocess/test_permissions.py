"""Teams and grants through the admin REST API and the /admin pages, in process: the exact requests that
reach MLflow's auth API (each signed for hokusai:admin and nobody else), the JSON the API answers, the
audit lines, and the pages' checks (step-up, origin, Fetch Metadata, escaping). MLflow here is a stub that
answers what MLflow 3.17 answers those requests (recorded from a real one); that the grants take effect
on what owners may do is tests/e2e/test_grants_admin.py."""

from __future__ import annotations

import html
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from aiohttp import web

from hokusai_registry.auth.sessions import csrf_token
from hokusai_registry.ops.audit import AUDIT_LOGGER, AuditFormatter
from hokusai_registry.policy.assertions import ADMIN_USER, body_digest, verify
from tests.helpers import mistyped
from tests.support.cookies import COOKIE, session_cookie_in
from tests.support.inprocess import InProcessGateway
from tests.support.logs import Lines, captured
from tests.support.stub import Arrival, StubUpstream

GatewayFactory = Callable[..., InProcessGateway]
UpstreamFactory = Callable[..., StubUpstream]
Answer = tuple[int, dict[str, Any]]

ROLES_LIST = "/api/3.0/mlflow/roles/list"
USERS_LIST = "/api/2.0/mlflow/users/list"
NOT_FOUND = "RESOURCE_DOES_NOT_EXIST"


def role(role_id: int, name: str, *permissions: tuple[int, str, str, str]) -> dict[str, Any]:
    return {
        "id": role_id,
        "name": name,
        "workspace": "default",
        "description": None,
        "permissions": [
            {
                "id": pid,
                "role_id": role_id,
                "resource_type": kind,
                "resource_pattern": pattern,
                "permission": level,
            }
            for pid, kind, pattern, level in permissions
        ],
    }


def user(user_id: int, name: str, *roles: dict[str, Any]) -> dict[str, Any]:
    return {"id": user_id, "username": name, "is_admin": False, "roles": list(roles)}


def error(code: str, message: str) -> dict[str, Any]:
    return {"error_code": code, "message": message}


class Mlflow:
    """MLflow's auth API as a script: (method, path) -> the answers, in order (the last one repeats);
    anything unscripted is a 404 MLflow error, which the test then sees."""

    def __init__(self, script: dict[tuple[str, str], list[Answer]]) -> None:
        self.script = script

    async def __call__(self, arrival: Arrival, request: web.Request) -> web.StreamResponse:
        answers = self.script.get((arrival.method, request.path))
        if not answers:
            return web.json_response(error("ENDPOINT_NOT_FOUND", f"unscripted {request.path}"), status=404)
        status, body = answers.pop(0) if len(answers) > 1 else answers[0]
        return web.json_response(body, status=status)


def secret() -> bytes:
    return Path(os.environ["HOKUSAI_MLFLOW_ASSERTION_SECRET_FILE"]).read_bytes().strip()


def calls(upstream: StubUpstream) -> list[tuple[str, str, Any]]:
    """What reached MLflow from the team and grant operations: method, target, JSON body; each checked
    to carry the gateway's assertion for MLflow's administrator, bound to that very request and body."""
    made = []
    for arrival in upstream.requests:
        if arrival.header("user-agent") != ["hokusai-registry-admin"]:
            continue
        path, _, query = arrival.target.partition("?")
        (value,) = arrival.header("x-hokusai-assertion")
        asserted = verify(secret(), value, arrival.method, path, query, now=time.time())
        assert asserted.user == ADMIN_USER and asserted.body == body_digest(arrival.body)
        made.append((arrival.method, arrival.target, json.loads(arrival.body) if arrival.body else None))
    return made


@pytest.fixture
def audit_log() -> Iterator[Lines]:
    with captured(AUDIT_LOGGER, AuditFormatter()) as lines:
        yield lines


def audited(log: Lines, event: str) -> list[dict[str, Any]]:
    return [line for line in map(json.loads, log.lines) if line["audit"] == event]


@pytest.fixture
def mlflow(
    new_upstream: UpstreamFactory, new_gateway: GatewayFactory
) -> Callable[[dict[tuple[str, str], list[Answer]]], tuple[InProcessGateway, StubUpstream, dict[str, str]]]:
    """A gateway in front of a scripted MLflow, and an admin key's headers."""

    def start(
        script: dict[tuple[str, str], list[Answer]],
    ) -> tuple[InProcessGateway, StubUpstream, dict[str, str]]:
        upstream = new_upstream(handler=Mlflow(script))
        gateway = new_gateway(upstream.url)
        return gateway, upstream, {"Authorization": "Bearer " + gateway.create_key("root", admin=True)}

    return start


def key_id(headers: dict[str, str]) -> str:
    return headers["Authorization"].split("_")[2]


def test_teams_are_mlflow_roles_and_members_its_users(mlflow: Any, audit_log: Lines) -> None:
    ml = role(3, "ml")
    gateway, upstream, admin = mlflow(
        {
            ("POST", "/api/3.0/mlflow/roles/create"): [(200, {"role": ml})],
            ("GET", ROLES_LIST): [(200, {"roles": [ml, role(4, "__user_2__")]})],
            ("GET", USERS_LIST): [
                (200, {"users": [user(2, "alice", role(4, "__user_2__"))]}),
                (200, {"users": [user(2, "alice", ml, role(4, "__user_2__")), user(5, "bob")]}),
            ],
            ("POST", "/api/3.0/mlflow/roles/assign"): [
                (200, {"assignment": {"id": 1, "user_id": 2, "role_id": 3}})
            ],
        }
    )
    created = gateway.request("POST", "/api/v1/teams", headers=admin, json={"name": "ml"})
    assert created.status_code == 201, created.text
    assert created.json() == {"name": "ml", "members": []}
    # MLflow's per-user roles (`__user_<id>__`) are no teams.
    assert gateway.request("GET", "/api/v1/teams", headers=admin).json() == [{"name": "ml", "members": []}]
    added = gateway.request("POST", "/api/v1/teams/ml/members", headers=admin, json={"owner": "alice"})
    assert added.status_code == 200, added.text
    assert added.json() == {"name": "ml", "members": ["alice"]}
    assert calls(upstream) == [
        ("POST", "/api/3.0/mlflow/roles/create", {"name": "ml", "workspace": "default"}),
        ("GET", ROLES_LIST + "?workspace=default", None),
        ("GET", USERS_LIST, None),
        ("GET", ROLES_LIST + "?workspace=default", None),
        ("POST", "/api/3.0/mlflow/roles/assign", {"username": "alice", "role_id": 3}),
        ("GET", ROLES_LIST + "?workspace=default", None),
        ("GET", USERS_LIST, None),
    ]
    actor = "key:" + key_id(admin)
    assert [(line["actor"], line["team"]) for line in audited(audit_log, "team.created")] == [(actor, "ml")]
    (member,) = audited(audit_log, "team.member_added")
    assert (member["actor"], member["team"], member["owner"]) == (actor, "ml", "alice")


def test_an_owner_mlflow_does_not_know_yet_is_created_with_a_random_password(
    mlflow: Any, audit_log: Lines
) -> None:
    ml = role(3, "ml")
    gateway, upstream, admin = mlflow(
        {
            ("GET", ROLES_LIST): [(200, {"roles": [ml]})],
            ("POST", "/api/3.0/mlflow/roles/assign"): [
                (404, error(NOT_FOUND, "User with username=carol not found")),
                (200, {"assignment": {"id": 2, "user_id": 6, "role_id": 3}}),
            ],
            ("GET", "/api/2.0/mlflow/users/get"): [
                (404, error(NOT_FOUND, "User with username=carol not found"))
            ],
            ("POST", "/api/2.0/mlflow/users/create"): [(200, {"user": {"id": 6, "username": "carol"}})],
            ("GET", USERS_LIST): [(200, {"users": [user(6, "carol", ml)]})],
        }
    )
    added = gateway.request("POST", "/api/v1/teams/ml/members", headers=admin, json={"owner": "carol"})
    assert added.status_code == 200 and added.json()["members"] == ["carol"], added.text
    made = calls(upstream)
    assert [(method, target) for method, target, _ in made] == [
        ("GET", ROLES_LIST + "?workspace=default"),
        ("POST", "/api/3.0/mlflow/roles/assign"),
        ("GET", "/api/2.0/mlflow/users/get?username=carol"),
        ("POST", "/api/2.0/mlflow/users/create"),
        ("POST", "/api/3.0/mlflow/roles/assign"),
        ("GET", ROLES_LIST + "?workspace=default"),
        ("GET", USERS_LIST),
    ]
    created = made[3][2]
    assert created["username"] == "carol" and len(created["password"]) >= 12
    # Nobody ever presents it: it is in no answer and no audit line.
    assert created["password"] not in added.text and created["password"] not in audit_log.text()


def test_an_owner_grant_names_the_experiment_by_name(mlflow: Any, audit_log: Lines) -> None:
    gateway, upstream, admin = mlflow(
        {
            ("GET", "/api/2.0/mlflow/experiments/get-by-name"): [
                (200, {"experiment": {"experiment_id": "7", "name": "alice exp"}})
            ],
            ("GET", "/api/3.0/mlflow/users/permissions/list"): [
                (200, {"is_admin": False, "permissions": []})
            ],
            ("POST", "/api/3.0/mlflow/users/permissions/grant"): [(200, {})],
        }
    )
    spec = {"owner": "bob", "experiment": "alice exp", "level": "EDIT"}
    granted = gateway.request("POST", "/api/v1/grants", headers=admin, json=spec)
    assert granted.status_code == 201, granted.text
    assert granted.json() == {
        "owner": "bob",
        "team": None,
        "resource_type": "experiment",
        "resource_id": "7",
        "level": "EDIT",
    }
    assert calls(upstream) == [
        ("GET", "/api/2.0/mlflow/experiments/get-by-name?experiment_name=alice%20exp", None),
        ("GET", "/api/3.0/mlflow/users/permissions/list?username=bob", None),
        (
            "POST",
            "/api/3.0/mlflow/users/permissions/grant",
            {"username": "bob", "resource_type": "experiment", "resource_id": "7", "permission": "EDIT"},
        ),
    ]
    (line,) = audited(audit_log, "grant.added")
    assert line["actor"] == "key:" + key_id(admin)
    assert (line["owner"], line["resource_type"], line["resource_id"], line["permission"]) == (
        "bob",
        "experiment",
        "7",
        "EDIT",
    )


def test_a_team_grant_changes_its_level_in_place(mlflow: Any, audit_log: Lines) -> None:
    ml = role(3, "ml", (5, "registered_model", "churn", "READ"))
    gateway, upstream, admin = mlflow(
        {
            ("GET", "/api/2.0/mlflow/registered-models/get"): [
                (200, {"registered_model": {"name": "churn"}})
            ],
            ("GET", ROLES_LIST): [(200, {"roles": [ml]})],
            ("GET", "/api/3.0/mlflow/roles/permissions/list"): [
                (200, {"role_permissions": ml["permissions"]})
            ],
            ("PATCH", "/api/3.0/mlflow/roles/permissions/update"): [(200, {"role_permission": {}})],
        }
    )
    spec = {"team": "ml", "model": "churn", "level": "EDIT"}
    changed = gateway.request("POST", "/api/v1/grants", headers=admin, json=spec)
    assert changed.status_code == 200, changed.text
    assert changed.json()["team"] == "ml" and changed.json()["level"] == "EDIT"
    assert calls(upstream) == [
        ("GET", "/api/2.0/mlflow/registered-models/get?name=churn", None),
        ("GET", ROLES_LIST + "?workspace=default", None),
        ("GET", "/api/3.0/mlflow/roles/permissions/list?role_id=3", None),
        (
            "PATCH",
            "/api/3.0/mlflow/roles/permissions/update",
            {"role_permission_id": 5, "permission": "EDIT"},
        ),
    ]
    (line,) = audited(audit_log, "grant.added")
    assert (line["team"], line["permission"], line["previous"]) == ("ml", "EDIT", "READ")


def test_a_registered_model_grant_on_a_prompt_is_refused(mlflow: Any) -> None:
    prompt = {"name": "greet", "tags": [{"key": "mlflow.prompt.is_prompt", "value": "true"}]}
    gateway, upstream, admin = mlflow(
        {("GET", "/api/2.0/mlflow/registered-models/get"): [(200, {"registered_model": prompt})]}
    )
    refused = gateway.request(
        "POST", "/api/v1/grants", headers=admin, json={"team": "ml", "model": "greet", "level": "READ"}
    )
    assert refused.status_code == 400 and "is a prompt" in refused.json()["message"]
    assert [target for _, target, _ in calls(upstream)] == [
        "/api/2.0/mlflow/registered-models/get?name=greet"
    ]


def test_grants_are_listed_and_removed_for_owners_and_teams(mlflow: Any, audit_log: Lines) -> None:
    own = role(4, "__user_2__", (8, "scorer", "7/my%20scorer", "READ"), (9, "experiment", "7", "DENY"))
    ml = role(3, "ml", (5, "experiment", "7", "EDIT"))
    gateway, upstream, admin = mlflow(
        {
            ("GET", ROLES_LIST): [(200, {"roles": [ml, own]})],
            ("GET", USERS_LIST): [(200, {"users": [user(2, "bob", ml, own)]})],
            ("GET", "/api/3.0/mlflow/users/permissions/list"): [
                (
                    200,
                    {
                        "permissions": [
                            {**row, "role_name": name, "workspace": "default"}
                            for name, entry in (("ml", ml), ("__user_2__", own))
                            for row in entry["permissions"]
                        ]
                    },
                )
            ],
            ("POST", "/api/3.0/mlflow/users/permissions/revoke"): [(200, {})],
            ("DELETE", "/api/3.0/mlflow/roles/permissions/remove"): [(200, {})],
        }
    )
    everything = gateway.request("GET", "/api/v1/grants", headers=admin).json()
    assert [
        (g["owner"], g["team"], g["resource_type"], g["resource_id"], g["level"]) for g in everything
    ] == [
        ("bob", None, "experiment", "7", "DENY"),
        ("bob", None, "scorer", "7/my%20scorer", "READ"),
        (None, "ml", "experiment", "7", "EDIT"),
    ]
    bobs = gateway.request("GET", "/api/v1/grants?owner=bob", headers=admin).json()
    assert {(g["owner"], g["team"]) for g in bobs} == {("bob", None), (None, "ml")}  # his teams' too
    upstream.requests.clear()

    target = {"owner": "bob", "scorer": "7/my scorer"}
    removed = gateway.request("POST", "/api/v1/grants/remove", headers=admin, json=target)
    assert removed.status_code == 200 and removed.json()["level"] == "READ", removed.text
    removed = gateway.request(
        "POST", "/api/v1/grants/remove", headers=admin, json={"team": "ml", "experiment": "7"}
    )
    assert removed.status_code == 200 and removed.json()["level"] == "EDIT", removed.text
    assert calls(upstream) == [
        ("GET", "/api/3.0/mlflow/users/permissions/list?username=bob", None),
        (
            "POST",
            "/api/3.0/mlflow/users/permissions/revoke",
            {"username": "bob", "resource_type": "scorer", "resource_id": "7/my%20scorer"},
        ),
        ("GET", ROLES_LIST + "?workspace=default", None),
        ("DELETE", "/api/3.0/mlflow/roles/permissions/remove?role_permission_id=5", None),
    ]
    assert [line["permission"] for line in audited(audit_log, "grant.removed")] == ["READ", "EDIT"]


def test_mlflow_refusals_are_mlflow_json_in_its_words_without_sql_or_addresses(mlflow: Any) -> None:
    sql = "\n[SQL: INSERT INTO roles (name, workspace) VALUES (?, ?)]\n[parameters: ('ml', 'default')]"
    gateway, upstream, admin = mlflow(
        {
            ("POST", "/api/3.0/mlflow/roles/create"): [
                (
                    400,
                    error("RESOURCE_ALREADY_EXISTS", "Role (name=ml) already exists. Error: (sqlite3)" + sql),
                )
            ],
            ("GET", ROLES_LIST): [(200, {"roles": [role(3, "ml")]})],
            ("GET", "/api/2.0/mlflow/experiments/get"): [(200, {"experiment": {"experiment_id": "7"}})],
            ("POST", "/api/3.0/mlflow/roles/permissions/add"): [
                (
                    400,
                    error(
                        "INVALID_PARAMETER_VALUE", "Invalid permission 'DENY' for resource_type='x'." + sql
                    ),
                )
            ],
        }
    )
    taken = gateway.request("POST", "/api/v1/teams", headers=admin, json={"name": "ml"})
    assert taken.status_code == 400
    assert (
        taken.json()["error_code"] == "RESOURCE_ALREADY_EXISTS" and taken.json()["reason"] == "already_exists"
    )
    assert "team 'ml' already exists" in taken.json()["message"]
    refused = gateway.request(
        "POST", "/api/v1/grants", headers=admin, json={"team": "ml", "experiment": "7", "level": "DENY"}
    )
    assert refused.status_code == 400 and refused.json()["reason"] == "mlflow_refused"
    assert "Invalid permission 'DENY' for resource_type='x'." in refused.json()["message"]
    address = urlsplit(upstream.url).netloc
    for answer in (taken, refused):
        assert "SQL" not in answer.text and "parameters" not in answer.text and address not in answer.text
    missing = gateway.request("DELETE", "/api/v1/teams/nope", headers=admin)
    assert missing.status_code == 404 and missing.json()["error_code"] == NOT_FOUND


def test_only_admin_keys_change_teams_and_grants(mlflow: Any) -> None:
    gateway, upstream, _ = mlflow({})
    writer = {"Authorization": "Bearer " + gateway.create_key("writer", owner="alice")}
    for method, path, body in [
        ("GET", "/api/v1/teams", None),
        ("POST", "/api/v1/teams", {"name": "ml"}),
        ("POST", "/api/v1/grants", {"owner": "alice", "experiment": "1", "level": "MANAGE"}),
    ]:
        refused = gateway.request(method, path, headers=writer, json=body)
        assert refused.status_code == 403 and "'admin' scope" in refused.json()["message"]
    assert gateway.request("GET", "/api/v1/grants").status_code == 401
    assert calls(upstream) == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "a b"}, "name"),
        ({"name": "__user_9__"}, "name"),
        ({"name": "ml", "extra": 1}, "extra"),
    ],
)
def test_bad_team_names_never_reach_mlflow(mlflow: Any, body: dict[str, Any], field: str) -> None:
    gateway, upstream, admin = mlflow({})
    refused = gateway.request("POST", "/api/v1/teams", headers=admin, json=body)
    assert refused.status_code == 400 and refused.json()["message"].split(": ")[2].startswith(field)
    assert calls(upstream) == []


@pytest.mark.parametrize(
    "body",
    [
        {"owner": "bob", "team": "ml", "experiment": "1", "level": "READ"},
        {"owner": "bob", "experiment": "1", "model": "m", "level": "READ"},
        {"owner": "bob", "level": "READ"},
        {"owner": "hokusai:admin", "experiment": "1", "level": "READ"},
        {"owner": "bob", "experiment": "1", "level": "NO_PERMISSIONS"},
        {"owner": "bob", "scorer": "just-a-name", "level": "READ"},
    ],
)
def test_bad_grants_never_reach_mlflow(mlflow: Any, body: dict[str, Any]) -> None:
    gateway, upstream, admin = mlflow({})
    refused = gateway.request("POST", "/api/v1/grants", headers=admin, json=body)
    assert refused.status_code == 400 and refused.json()["error_code"] == "INVALID_PARAMETER_VALUE", (
        refused.text
    )
    assert calls(upstream) == []


def test_with_permissions_off_there_are_no_teams(
    new_upstream: UpstreamFactory, new_gateway: GatewayFactory
) -> None:
    upstream = new_upstream(handler=Mlflow({}))
    gateway = new_gateway(upstream.url, permissions=False)
    admin = {"Authorization": "Bearer " + gateway.create_key("root", admin=True)}
    refused = gateway.request("GET", "/api/v1/teams", headers=admin)
    assert refused.status_code == 404 and refused.json()["reason"] == "permissions_off"
    assert "HOKUSAI_PERMISSIONS" in refused.json()["message"]
    assert [arrival for arrival in upstream.requests if "/roles/" in arrival.target] == []


def test_the_openapi_document_describes_teams_and_grants(mlflow: Any) -> None:
    gateway, _, _ = mlflow({})
    paths = gateway.request("GET", "/openapi.json").json()["paths"]
    assert {"/api/v1/teams", "/api/v1/teams/{team}", "/api/v1/teams/{team}/members"} <= set(paths)
    assert {"/api/v1/grants", "/api/v1/grants/remove"} <= set(paths)
    assert set(paths["/api/v1/teams/{team}"]) == {"get", "delete"}


# The pages


def sign_in(gateway: InProcessGateway, key: str) -> str:
    response = gateway.request(
        "POST", "/login", data={"key": key, "next": "/admin/teams"}, headers={"Origin": gateway.url}
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
) -> httpx.Response:
    headers = {"Cookie": f"{COOKIE}={cookie}", **kwargs.pop("headers", {})}
    if origin is not None:
        headers["Origin"] = gateway.url if origin == "same" else origin
    return gateway.request(method, path, headers=headers, **kwargs)


def test_the_teams_page_creates_a_team_only_with_the_admin_key_entered_again(mlflow: Any) -> None:
    gateway, upstream, admin = mlflow(
        {
            ("GET", ROLES_LIST): [(200, {"roles": []}), (200, {"roles": [role(3, "ml")]})],
            ("GET", USERS_LIST): [(200, {"users": []})],
            ("POST", "/api/3.0/mlflow/roles/create"): [(200, {"role": role(3, "ml")})],
        }
    )
    key = admin["Authorization"].removeprefix("Bearer ")
    cookie = sign_in(gateway, key)
    listing = browse(gateway, "GET", "/admin/teams", cookie, origin=None)
    assert listing.status_code == 200 and "No teams yet." in listing.text
    csrf = csrf_token(cookie)

    def creations() -> list[tuple[str, str, Any]]:
        return [made for made in calls(upstream) if made[1] == "/api/3.0/mlflow/roles/create"]

    for form, origin in [
        ({"name": "ml", "csrf": csrf}, "same"),  # no key entered again
        ({"name": "ml", "csrf": csrf, "admin_key": mistyped(key)}, "same"),
        ({"name": "ml", "csrf": csrf, "admin_key": key}, "http://evil.example"),
        ({"name": "ml", "csrf": "0" * 64, "admin_key": key}, "same"),
    ]:
        refused = browse(gateway, "POST", "/admin/teams", cookie, origin=origin, data=form)
        assert refused.status_code in (401, 403), refused.text
        assert creations() == []

    made = browse(
        gateway, "POST", "/admin/teams", cookie, data={"name": "ml", "csrf": csrf, "admin_key": key}
    )
    assert made.status_code == 200, made.text
    assert "Team ml created." in made.text and key not in made.text
    assert creations() == [("POST", "/api/3.0/mlflow/roles/create", {"name": "ml", "workspace": "default"})]
    # Signed-in pages open only as pages: never for a script or in a frame.
    scripted = browse(gateway, "GET", "/admin/teams", cookie, origin=None, headers={"Sec-Fetch-Mode": "cors"})
    assert scripted.status_code == 403
    # A read key's session is no admin's.
    reader = gateway.create_key("reader", owner="dana", scopes=("read",))
    assert browse(gateway, "GET", "/admin/grants", sign_in(gateway, reader), origin=None).status_code == 403


def test_the_grants_page_escapes_what_mlflow_holds_and_removes_after_confirming(mlflow: Any) -> None:
    hostile = '<script>alert("x")</script>'
    ml = role(3, hostile, (5, "registered_model", hostile, "EDIT"))
    gateway, upstream, admin = mlflow(
        {
            ("GET", ROLES_LIST): [(200, {"roles": [ml]})],
            ("GET", USERS_LIST): [(200, {"users": [user(2, hostile, ml)]})],
            ("DELETE", "/api/3.0/mlflow/roles/permissions/remove"): [(200, {})],
        }
    )
    key = admin["Authorization"].removeprefix("Bearer ")
    cookie = sign_in(gateway, key)
    for path in ("/admin/teams", "/admin/grants"):
        shown = browse(gateway, "GET", path, cookie, origin=None)
        assert shown.status_code == 200, shown.text
        assert hostile not in shown.text and "&lt;script&gt;" in shown.text
        assert "content-security-policy" in shown.headers

    listing = browse(gateway, "GET", "/admin/grants", cookie, origin=None).text
    link = re.search(r'href="(/admin/grants/remove\?[^"]+)"', listing)
    assert link, listing
    confirm = browse(gateway, "GET", link.group(1).replace("&amp;", "&"), cookie, origin=None)
    assert confirm.status_code == 200 and "Remove grant" in confirm.text and hostile not in confirm.text
    fields = dict(re.findall(r'type="hidden" name="([^"]+)" value="([^"]*)"', confirm.text))
    assert parse_qs(urlsplit(link.group(1).replace("&amp;", "&")).query)["kind"] == ["model"]
    fields = {name: html.unescape(value) for name, value in fields.items()}
    assert calls(upstream)[-1][0] == "GET"  # confirming changed nothing

    removed = browse(gateway, "POST", "/admin/grants/remove", cookie, data={**fields, "admin_key": key})
    assert removed.status_code == 200, removed.text
    assert "Removed team" in removed.text and hostile not in removed.text
    deleting = ("DELETE", "/api/3.0/mlflow/roles/permissions/remove?role_permission_id=5", None)
    assert [call for call in calls(upstream) if call[0] != "GET"] == [deleting]
