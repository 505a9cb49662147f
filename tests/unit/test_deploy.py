"""`hokusai-registry deploy ecs` / `deploy rollback` against moto's ECS mock (in-process: the AWS APIs are
the boundary, there is no cloud here)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3  # type: ignore[import-untyped]
import pytest
from click.testing import CliRunner
from moto import mock_aws

from hokusai_registry.run.cli import main
from hokusai_registry.run.deploy import DeployError, deploy

REGION = "eu-west-1"


@pytest.fixture
def ecs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        client = boto3.client("ecs", region_name=REGION)
        client.create_cluster(clusterName="registry")
        first = client.register_task_definition(
            family="gateway",
            requiresCompatibilities=["FARGATE"],
            networkMode="awsvpc",
            cpu="1024",
            memory="2048",
            runtimePlatform={"cpuArchitecture": "X86_64", "operatingSystemFamily": "LINUX"},
            containerDefinitions=[
                {
                    "name": "gateway",
                    "image": "registry/gateway:1.0",
                    "environment": [
                        {"name": "MLFLOW_SERVER_URL", "value": "http://mlflow.hk-prod.local:5000"}
                    ],
                }
            ],
        )["taskDefinition"]["taskDefinitionArn"]
        client.create_service(cluster="registry", serviceName="gateway", taskDefinition=first, desiredCount=2)
        yield client


@pytest.fixture
def tasks_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto registers task definitions and moves services, but never starts tasks or rolls deployments
    forward (runningCount stays 0). This stands in for ECS reaching steady state."""
    import hokusai_registry.run.deploy as module

    monkeypatch.setattr(module, "stable", lambda service: True)


def task_definition(ecs: Any) -> dict[str, Any]:
    arn = ecs.describe_services(cluster="registry", services=["gateway"])["services"][0]["taskDefinition"]
    found: dict[str, Any] = ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"]
    return found


def run(*args: str) -> Any:
    return CliRunner().invoke(
        main, ["deploy", *args, "--cluster", "registry", "--service", "gateway", "--region", REGION]
    )


def test_deploy_registers_a_revision_with_the_new_image_and_moves_the_service(
    ecs: Any, tasks_start: None
) -> None:
    result = run("ecs", "--image", "registry/gateway:1.1", "--timeout", "5")
    assert result.exit_code == 0, result.output
    current = task_definition(ecs)
    assert current["revision"] == 2 and current["containerDefinitions"][0]["image"] == "registry/gateway:1.1"
    # Everything else is carried over, the CPU architecture included.
    assert current["runtimePlatform"]["cpuArchitecture"] == "X86_64"
    assert current["containerDefinitions"][0]["environment"][0]["value"] == "http://mlflow.hk-prod.local:5000"
    assert result.stdout.strip().endswith("gateway:2")


def test_rollback_returns_to_the_previous_revision(ecs: Any, tasks_start: None) -> None:
    assert run("ecs", "--image", "registry/gateway:1.1", "--timeout", "5").exit_code == 0
    result = run("rollback", "--timeout", "5")
    assert result.exit_code == 0, result.output
    assert task_definition(ecs)["revision"] == 1
    nothing_earlier = run("rollback", "--timeout", "5")
    assert nothing_earlier.exit_code == 1 and "nothing to roll back to" in nothing_earlier.output


def test_a_deployment_that_never_stabilises_is_rolled_back(ecs: Any) -> None:
    """The real stability rule: moto never starts the new revision's tasks, as a crashing image would not."""
    lines: list[str] = []
    with pytest.raises(DeployError, match="did not become stable; service gateway is back on"):
        deploy(
            ecs,
            cluster="registry",
            service="gateway",
            image="registry/gateway:broken",
            container=None,
            timeout=0.2,
            say=lines.append,
            poll=0.05,
        )
    assert task_definition(ecs)["revision"] == 1
    assert any("0 of 2 tasks running" in line for line in lines) and any(
        "rolled back" in line for line in lines
    )


def test_unknown_container_or_service_changes_nothing(ecs: Any) -> None:
    result = run("ecs", "--image", "x:1", "--container", "sidecar")
    assert result.exit_code == 1 and "no container 'sidecar'" in result.output
    assert task_definition(ecs)["revision"] == 1
    missing = CliRunner().invoke(
        main,
        ["deploy", "ecs", "--cluster", "registry", "--service", "nope", "--image", "x:1", "--region", REGION],
    )
    assert missing.exit_code == 1 and "no active service 'nope'" in missing.output


@pytest.mark.parametrize(
    ("service", "expected"),
    [
        ({"deployments": [{"rolloutState": "COMPLETED"}], "runningCount": 2, "desiredCount": 2}, True),
        ({"deployments": [{}, {}], "runningCount": 2, "desiredCount": 2}, False),  # old tasks still draining
        ({"deployments": [{"rolloutState": "IN_PROGRESS"}], "runningCount": 1, "desiredCount": 2}, False),
        ({"deployments": [{"rolloutState": "FAILED"}], "runningCount": 2, "desiredCount": 2}, False),
    ],
)
def test_stability_rule(service: dict[str, Any], expected: bool) -> None:
    from hokusai_registry.run.deploy import stable

    assert stable(service) is expected
