"""Attribution side doors (issue 15, defects 7-10 and the GraphQL gap), against a real MLflow with the
real MLflow client where one makes the call: who created a run, prompt-lab run, logged model or trace is
the key's owner and stays so; registry renames are audited in either spelling MLflow accepts; a read
key runs GraphQL queries but no mutation."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import mlflow
import pytest
import requests
from mlflow.entities import RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tests.e2e.test_audit import audit_lines, owned_key
from tests.helpers import GatewayProcess

OWNER = "alice@example.com"
CREATOR = "mlflow.user"


@pytest.fixture(scope="module")
def gateway(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    data_dir = tmp_path_factory.mktemp("attribution")
    process = GatewayProcess(
        mlflow_server,
        data_dir,
        env={"HOKUSAI_AUDIT_LOG": str(data_dir / "audit.log"), "HOKUSAI_AUTH_FAILURE_LIMIT": "0"},
    )
    yield process
    process.stop()


@pytest.fixture(scope="module")
def keys(gateway: GatewayProcess) -> dict[str, tuple[str, str]]:
    """(key id, key) of a write key owned by OWNER, another user's write key, and a read key."""
    return {
        "alice": owned_key(gateway, "alice", OWNER, ("read", "write")),
        "bob": owned_key(gateway, "bob", "bob@example.com", ("read", "write")),
        "reader": owned_key(gateway, "reader", "carol@example.com", ("read",)),
    }


@pytest.fixture
def alice(client_env: pytest.MonkeyPatch, gateway: GatewayProcess, keys: dict[str, tuple[str, str]]) -> str:
    """The unmodified MLflow client, as OWNER, through the gateway; returns the key."""
    client_env.setenv("MLFLOW_TRACKING_TOKEN", keys["alice"][1])
    client_env.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    client_env.setenv("MLFLOW_ENABLE_ASYNC_TRACE_LOGGING", "false")
    mlflow.set_tracking_uri(gateway.url + "/mlflow")
    return keys["alice"][1]


def call(gateway: GatewayProcess, key: str, method: str, path: str, body: Any = None) -> requests.Response:
    return requests.request(
        method, gateway.url + path, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30
    )


def refused_for_the_tag(error: MlflowException | requests.Response) -> bool:
    """The gateway's refusal of the reserved tag: 400 INVALID_PARAMETER_VALUE naming it."""
    if isinstance(error, requests.Response):
        payload = error.json()
        return (
            error.status_code == 400
            and payload["reason"] == "reserved_tag"
            and payload["error_code"] == "INVALID_PARAMETER_VALUE"
            and f"'{CREATOR}'" in payload["message"]
        )
    return error.error_code == "INVALID_PARAMETER_VALUE" and f"'{CREATOR}'" in error.message


def test_promptlab_run_is_the_owners_and_audited(
    alice: str, gateway: GatewayProcess, keys: dict[str, tuple[str, str]]
) -> None:
    experiment_id = MlflowClient().create_experiment(f"promptlab-{uuid.uuid4().hex[:8]}")
    body = {
        "experiment_id": experiment_id,
        "run_name": "prompt",
        "user_id": "mallory",  # claimed: MLflow takes it as the run's user
        "prompt_template": "Say {{ word }}",
        "prompt_parameters": [{"key": "word", "value": "hi"}],
        "model_route": "chat",
        "model_parameters": [],
        "model_input": "Say hi",
        "model_output": "hi",
        "mlflow_version": "2.7.1",
    }
    answer = call(gateway, alice, "POST", "/mlflow/ajax-api/2.0/mlflow/runs/create-promptlab-run", body)
    assert answer.status_code == 200, answer.text
    run_id = answer.json()["run"]["info"]["run_id"]
    assert MlflowClient().get_run(run_id).info.user_id == OWNER
    line = audit_lines(gateway, "promptlab_run.created", experiment_id=experiment_id, status=200)[0]
    assert line["owner"] == OWNER and line["key_id"] == keys["alice"][0] and line["run_name"] == "prompt"


def test_the_run_user_cannot_be_rewritten_by_the_client(
    alice: str, gateway: GatewayProcess, keys: dict[str, tuple[str, str]]
) -> None:
    mlflow.set_experiment("attributed-runs")
    client = MlflowClient()
    with mlflow.start_run() as run:
        run_id = run.info.run_id
        mlflow.log_param("p", 1)
        mlflow.set_tags({"team": "vision"})  # other tags, and the client's own log-batch, still work
        with pytest.raises(MlflowException) as set_tag:
            mlflow.set_tag(CREATOR, "mallory")
        assert refused_for_the_tag(set_tag.value)
        with pytest.raises(MlflowException) as batch:
            client.log_batch(run_id, tags=[RunTag("team", "x"), RunTag(CREATOR, "mallory")])
        assert refused_for_the_tag(batch.value)
        with pytest.raises(MlflowException) as deleted:
            client.delete_tag(run_id, CREATOR)
        assert refused_for_the_tag(deleted.value)
    # Every spelling and mount MLflow accepts, and another user's key on this run.
    bob = keys["bob"][1]
    for key, path, body in [
        (bob, "/mlflow/api/2.0/mlflow/runs/set-tag", {"run_id": run_id, "key": CREATOR, "value": "bob"}),
        (bob, "/mlflow/ajax-api/2.0/mlflow/runs/set-tag", {"run_uuid": run_id, "key": CREATOR, "value": "b"}),
        (bob, "/api/mlflow/api/2.0/mlflow/runs/set-tag", {"runId": run_id, "key": CREATOR, "value": "b"}),
        (alice, "/api/2.0/mlflow/runs/delete-tag", {"runId": run_id, "key": CREATOR}),
        (
            alice,
            "/mlflow/api/2.0/mlflow/runs/log-batch",
            {"runId": run_id, "tags": [{"key": CREATOR, "value": "m"}]},
        ),
    ]:
        answer = call(gateway, key, "POST", path, body)
        assert refused_for_the_tag(answer), (path, body, answer.status_code, answer.text)
    stored = client.get_run(run_id)
    assert stored.data.tags[CREATOR] == OWNER and stored.info.user_id == OWNER
    assert stored.data.tags["team"] == "vision" and stored.data.params["p"] == "1"


def test_a_logged_model_is_created_by_the_owner_and_stays_so(alice: str, gateway: GatewayProcess) -> None:
    mlflow.set_experiment("attributed-models")
    model = mlflow.initialize_logged_model(name="attributed")  # the client tags it with the OS user
    client = MlflowClient()
    assert client.get_logged_model(model.model_id).tags[CREATOR] == OWNER
    client.set_logged_model_tags(model.model_id, {"team": "vision"})
    with pytest.raises(MlflowException) as tagged:
        client.set_logged_model_tags(model.model_id, {CREATOR: "mallory"})
    assert refused_for_the_tag(tagged.value)
    with pytest.raises(MlflowException) as deleted:
        client.delete_logged_model_tag(model.model_id, CREATOR)
    assert refused_for_the_tag(deleted.value)
    stored = client.get_logged_model(model.model_id).tags
    assert stored[CREATOR] == OWNER and stored["team"] == "vision"


def test_a_trace_is_created_by_the_owner_and_keeps_its_end_user(alice: str, gateway: GatewayProcess) -> None:
    mlflow.set_experiment("attributed-traces")

    @mlflow.trace
    def answer(question: str) -> str:
        mlflow.update_current_trace(user="customer-7")  # the application's own user: kept as it is
        return question.upper()

    answer("hi")
    trace_id = mlflow.get_last_active_trace_id()
    assert trace_id is not None
    info = MlflowClient().get_trace(trace_id).info
    assert info.trace_metadata[CREATOR] == OWNER
    assert info.trace_metadata["mlflow.trace.user"] == "customer-7"
    assert info.tags[CREATOR] == OWNER
    # The client refuses this tag itself; a raw request is refused by the gateway.
    for method, path, body in [
        ("PATCH", f"/mlflow/api/2.0/mlflow/traces/{trace_id}/tags", {"key": CREATOR, "value": "mallory"}),
        ("PATCH", f"/mlflow/api/3.0/mlflow/traces/{trace_id}/tags", {"key": CREATOR, "value": "mallory"}),
        ("DELETE", f"/mlflow/api/3.0/mlflow/traces/{trace_id}/tags", {"key": CREATOR}),
    ]:
        answered = call(gateway, alice, method, path, body)
        assert refused_for_the_tag(answered), (method, path, answered.status_code, answered.text)
    assert MlflowClient().get_trace(trace_id).info.tags[CREATOR] == OWNER


def test_renames_and_camel_case_fields_are_audited(
    alice: str, gateway: GatewayProcess, keys: dict[str, tuple[str, str]]
) -> None:
    client = MlflowClient()
    name = f"renamed-{uuid.uuid4().hex[:8]}"
    client.create_registered_model(name)
    client.rename_registered_model(name, name + "-2")
    who = {"key_id": keys["alice"][0], "owner": OWNER, "status": 200}
    assert audit_lines(gateway, "registered_model.renamed", name=name, new_name=name + "-2", **who)
    # MLflow also takes protobuf's JSON names where its handler does not insist on the proto name
    # (it does for `new_name`): `runId` here. The audit line reads both.
    name += "-2"
    with mlflow.start_run() as run:
        pass
    created = call(
        gateway,
        alice,
        "POST",
        "/mlflow/api/2.0/mlflow/model-versions/create",
        {"name": name, "source": f"runs:/{run.info.run_id}/model", "runId": run.info.run_id},
    )
    assert created.status_code == 200, created.text
    assert audit_lines(gateway, "model_version.created", name=name, run_id=run.info.run_id, **who)


MUTATION = {"query": 'mutation { testMutation(inputString: "echo") { output } }'}


@pytest.mark.parametrize("mount", ["/mlflow", "/api/mlflow", ""])
def test_graphql_mutations_need_a_write_key(
    gateway: GatewayProcess, keys: dict[str, tuple[str, str]], mount: str
) -> None:
    reader, writer = keys["reader"][1], keys["alice"][1]
    query = {"query": 'query { test(inputString: "q") { output } }'}
    for method in ("POST", "GET"):  # MLflow reads a GET's JSON body too
        answered = call(gateway, reader, method, mount + "/graphql", query)
        assert answered.status_code == 200 and answered.json()["data"]["test"]["output"] == "q", answered.text
        denied = call(gateway, reader, method, mount + "/graphql", MUTATION)
        assert denied.status_code == 403, (method, denied.status_code, denied.text)
        assert denied.json()["error_code"] == "PERMISSION_DENIED" and "'write'" in denied.json()["message"]
    done = call(gateway, writer, "POST", mount + "/graphql", MUTATION)
    # MLflow's only mutation runs (its resolver is misnamed, so it answers null).
    assert done.status_code == 200 and done.json() == {"data": {"testMutation": None}, "errors": None}, (
        done.text
    )
    for unjudgeable in (
        {"query": "query A { test { output } } mutation B { testMutation { output } }"},
        {"query": "mutation {"},
    ):
        refused = call(gateway, reader, "POST", mount + "/graphql", unjudgeable)
        assert refused.status_code == 400 and refused.json()["reason"] == "invalid_graphql", refused.text
