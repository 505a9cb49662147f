"""`hokusai-registry deploy ecs` and `deploy rollback`: a new image as a new task-definition revision, the
service moved to it, waited on until stable, and moved back to the revision it ran before if it does not
get there. Uses the AWS APIs through boto3 (`pip install 'hokusai-registry[deploy]'`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# What register_task_definition accepts back from describe_task_definition.
_REGISTERABLE = (
    "family",
    "taskRoleArn",
    "executionRoleArn",
    "networkMode",
    "containerDefinitions",
    "volumes",
    "placementConstraints",
    "requiresCompatibilities",
    "cpu",
    "memory",
    "pidMode",
    "ipcMode",
    "proxyConfiguration",
    "inferenceAccelerators",
    "ephemeralStorage",
    "runtimePlatform",
)


class DeployError(RuntimeError):
    """The deployment did not happen or was rolled back; the message says what and where it stands."""


@dataclass(frozen=True)
class Outcome:
    previous: str
    current: str
    rolled_back: bool


def _service(ecs: Any, cluster: str, service: str) -> dict[str, Any]:
    found = ecs.describe_services(cluster=cluster, services=[service])
    services = [entry for entry in found["services"] if entry.get("status") != "INACTIVE"]
    if not services:
        raise DeployError(f"no active service {service!r} in cluster {cluster!r}")
    result: dict[str, Any] = services[0]
    return result


def stable(service: dict[str, Any]) -> bool:
    """One deployment left, and it runs as many tasks as it wants (what the ECS waiter checks)."""
    deployments = service.get("deployments", [])
    if len(deployments) != 1:
        return False
    if deployments[0].get("rolloutState") == "FAILED":
        return False
    return bool(service.get("runningCount") == service.get("desiredCount"))


def wait_stable(
    ecs: Any, cluster: str, service: str, timeout: float, say: Callable[[str], None], poll: float = 5.0
) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        current = _service(ecs, cluster, service)
        if stable(current):
            return True
        if time.monotonic() >= deadline:
            deployments = current.get("deployments", [])
            say(
                f"not stable after {timeout:g} s: {len(deployments)} deployment(s), "
                f"{current.get('runningCount')} of {current.get('desiredCount')} tasks running"
            )
            return False
        time.sleep(poll)


def _switch(ecs: Any, cluster: str, service: str, task_definition: str) -> None:
    ecs.update_service(cluster=cluster, service=service, taskDefinition=task_definition)


def deploy(
    ecs: Any,
    *,
    cluster: str,
    service: str,
    image: str,
    container: str | None,
    timeout: float,
    say: Callable[[str], None],
    poll: float = 5.0,
) -> Outcome:
    """Registers the running task definition again with `image` in `container` (the only container if not
    named), moves the service to it and waits; if it does not become stable, moves the service back."""
    previous = _service(ecs, cluster, service)["taskDefinition"]
    definition = ecs.describe_task_definition(taskDefinition=previous)["taskDefinition"]
    containers = definition["containerDefinitions"]
    if container is None:
        if len(containers) != 1:
            names = ", ".join(entry["name"] for entry in containers)
            raise DeployError(
                f"the task definition has several containers ({names}): name one with --container"
            )
        container = containers[0]["name"]
    matching = [entry for entry in containers if entry["name"] == container]
    if not matching:
        raise DeployError(f"no container {container!r} in {previous}")
    matching[0]["image"] = image
    registered = ecs.register_task_definition(
        **{key: definition[key] for key in _REGISTERABLE if key in definition}
    )
    current = registered["taskDefinition"]["taskDefinitionArn"]
    say(f"registered {current} with {image}")
    _switch(ecs, cluster, service, current)
    say(f"service {service} moved from {previous} to {current}; waiting for it to become stable ...")
    if wait_stable(ecs, cluster, service, timeout, say, poll):
        say(f"stable on {current}")
        return Outcome(previous, current, rolled_back=False)
    _switch(ecs, cluster, service, previous)
    say(f"rolled back to {previous}")
    wait_stable(ecs, cluster, service, timeout, say, poll)
    raise DeployError(f"{current} did not become stable; service {service} is back on {previous}")


def rollback(
    ecs: Any, *, cluster: str, service: str, timeout: float, say: Callable[[str], None], poll: float = 5.0
) -> Outcome:
    """Moves the service to the task-definition revision before the one it runs now."""
    current = _service(ecs, cluster, service)["taskDefinition"]
    definition = ecs.describe_task_definition(taskDefinition=current)["taskDefinition"]
    family, revision = definition["family"], int(definition["revision"])
    earlier = [
        arn
        for arn in ecs.list_task_definitions(familyPrefix=family, status="ACTIVE", sort="DESC")[
            "taskDefinitionArns"
        ]
        if arn.rsplit(":", 1)[0].endswith(f"/{family}") and int(arn.rsplit(":", 1)[1]) < revision
    ]
    if not earlier:
        raise DeployError(f"{current} is the first active revision of {family}: nothing to roll back to")
    previous = earlier[0]
    _switch(ecs, cluster, service, previous)
    say(f"service {service} moved back from {current} to {previous}; waiting for it to become stable ...")
    if not wait_stable(ecs, cluster, service, timeout, say, poll):
        raise DeployError(f"{previous} did not become stable either; check the service's events")
    return Outcome(current, previous, rolled_back=True)
