"""`hokusai-registry teams|grants` against a scripted MLflow (tests/inprocess/test_permissions.py has the
script and what MLflow answers): where they find MLflow (the flag, else the file a running `serve` writes
in the data directory), the requests they make as MLflow's administrator, their output, their one-line
errors and their audit lines with the CLI user as the actor."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from hokusai_registry.ops.audit import AUDIT_LOGGER
from hokusai_registry.run import mlflow_address
from hokusai_registry.run.cli import main
from tests.inprocess.test_permissions import ROLES_LIST, USERS_LIST, Mlflow, calls, error, role, user
from tests.support.stub import StubUpstream

UpstreamFactory = Callable[..., StubUpstream]


@pytest.fixture(autouse=True)
def audit_channel(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The commands configure the audit channel for their process; this one is shared with other tests."""
    monkeypatch.delenv("MLFLOW_SERVER_URL", raising=False)
    logger = logging.getLogger(AUDIT_LOGGER)
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved[0], saved[1], saved[2]


def run(data_dir: Path, *args: str) -> Result:
    audit = data_dir / "audit.log"
    return CliRunner().invoke(main, [*args, "--data-dir", str(data_dir), "--audit-log", str(audit)])


def audit_lines(data_dir: Path) -> list[dict[str, object]]:
    path = data_dir / "audit.log"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_grant_made_on_serves_data_dir_needs_no_flags(
    new_upstream: UpstreamFactory, tmp_path: Path
) -> None:
    upstream = new_upstream(
        handler=Mlflow(
            {
                ("GET", "/api/2.0/mlflow/registered-models/get"): [
                    (200, {"registered_model": {"name": "churn"}})
                ],
                ("GET", "/api/3.0/mlflow/users/permissions/list"): [(200, {"permissions": []})],
                ("POST", "/api/3.0/mlflow/users/permissions/grant"): [(200, {})],
            }
        )
    )
    mlflow_address.write(tmp_path, upstream.url)  # as `serve` does while its MLflow runs
    result = run(tmp_path, "grants", "add", "--owner", "bob", "--model", "churn", "--level", "read")
    assert result.exit_code == 0, result.output
    assert result.output == "Granted READ on registered model churn to owner bob.\n"
    assert calls(upstream) == [
        ("GET", "/api/2.0/mlflow/registered-models/get?name=churn", None),
        ("GET", "/api/3.0/mlflow/users/permissions/list?username=bob", None),
        (
            "POST",
            "/api/3.0/mlflow/users/permissions/grant",
            {
                "username": "bob",
                "resource_type": "registered_model",
                "resource_id": "churn",
                "permission": "READ",
            },
        ),
    ]
    (line,) = audit_lines(tmp_path)
    assert line["audit"] == "grant.added" and str(line["actor"]).startswith("cli:")
    assert (line["owner"], line["resource_id"], line["permission"]) == ("bob", "churn", "READ")


def test_teams_list_json_is_the_apis_json(new_upstream: UpstreamFactory, tmp_path: Path) -> None:
    ml = role(3, "ml")
    upstream = new_upstream(
        handler=Mlflow(
            {
                ("GET", ROLES_LIST): [(200, {"roles": [ml, role(9, "__user_2__")]})],
                ("GET", USERS_LIST): [(200, {"users": [user(2, "bob", ml), user(4, "alice", ml)]})],
            }
        )
    )
    result = run(tmp_path, "teams", "list", "--json", "--mlflow-url", upstream.url)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == [{"name": "ml", "members": ["alice", "bob"]}]
    text = run(tmp_path, "teams", "list", "--mlflow-url", upstream.url)
    assert text.output.splitlines() == [f"{'TEAM':<24}MEMBERS", f"{'ml':<24}alice, bob"]
    assert audit_lines(tmp_path) == []  # reading changes nothing


def test_mlflows_refusal_is_one_line_and_exit_code_1(new_upstream: UpstreamFactory, tmp_path: Path) -> None:
    upstream = new_upstream(
        handler=Mlflow(
            {
                ("POST", "/api/3.0/mlflow/roles/create"): [
                    (400, error("RESOURCE_ALREADY_EXISTS", "Role exists"))
                ]
            }
        )
    )
    result = run(tmp_path, "teams", "create", "ml", "--mlflow-url", upstream.url)
    assert result.exit_code == 1
    assert result.output == "Error: team 'ml' already exists.\n"
    assert audit_lines(tmp_path) == []


def test_without_an_mlflow_url_it_says_where_to_find_one(tmp_path: Path) -> None:
    result = run(tmp_path, "grants", "list")
    assert result.exit_code == 2
    assert result.output.startswith("hokusai-registry: configuration error: MLFLOW_SERVER_URL is not set")
    assert "--mlflow-url" in result.output and len(result.output.splitlines()) == 1


def test_an_mlflow_that_does_not_answer_is_named_with_where_its_address_came_from(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mlflow_address.write(tmp_path, f"http://127.0.0.1:{port}")  # a `serve` that was killed
    result = run(tmp_path, "teams", "list")
    assert result.exit_code == 1 and len(result.output.splitlines()) == 1
    assert "MLflow did not answer" in result.output and f"127.0.0.1:{port}" in result.output
    assert "mlflow-url (written by `serve`: is it running?)" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["grants", "add", "--owner", "bob", "--level", "READ"], "give exactly one resource"),
        (["grants", "add", "--owner", "a", "--team", "b", "--model", "m", "--level", "READ"], "one grantee"),
        (["grants", "add", "--owner", "bob", "--model", "m", "--level", "NO_PERMISSIONS"], "--level"),
        (["grants", "add", "--owner", "hokusai:admin", "--model", "m", "--level", "READ"], "reserved"),
        (["grants", "list", "--owner", "a", "--team", "b"], "at most one"),
        (["teams", "create", "a b"], "not a team name"),
        (["teams", "add", "ml", " "], "must not be blank"),
    ],
)
def test_bad_arguments_are_usage_errors(tmp_path: Path, args: list[str], message: str) -> None:
    result = run(tmp_path, *args, "--mlflow-url", "http://127.0.0.1:9")
    assert result.exit_code == 2 and message in result.output, result.output
