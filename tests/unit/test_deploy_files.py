"""Static checks of the deployment files (no Docker engine here): images run as a non-root user with an
exec-form CMD and a health check; the gateway image has no MLflow; the compose stack publishes only the
gateway and starts MLflow the way the gateway needs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def final_stage(dockerfile: Path) -> list[tuple[str, str]]:
    """(instruction, arguments) of the last stage, continuation lines joined."""
    text = dockerfile.read_text().replace("\\\n", " ")
    instructions = [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line.strip() else "")
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    last_from = max(index for index, (name, _) in enumerate(instructions) if name == "FROM")
    return instructions[last_from:]


@pytest.mark.parametrize(
    ("name", "command", "port"), [("Dockerfile", "gateway", 8000), ("Dockerfile.mlflow", "mlflow", 5000)]
)
def test_images_run_unprivileged_with_exec_form_cmd_and_a_health_check(
    name: str, command: str, port: int
) -> None:
    stage = final_stage(DEPLOY / name)
    users = [arguments.strip() for instruction, arguments in stage if instruction == "USER"]
    assert users and users[-1] not in ("root", "0"), users
    cmd = [arguments for instruction, arguments in stage if instruction == "CMD"]
    assert len(cmd) == 1
    argv = json.loads(cmd[0])  # exec form: a JSON array, no shell
    assert argv[:2] == ["hokusai-registry", command]
    health = [arguments for instruction, arguments in stage if instruction == "HEALTHCHECK"]
    assert health and f"127.0.0.1:{port}/health" in health[0] and "CMD [" in health[0]


def test_gateway_image_has_no_mlflow() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert "[mlflow]" not in text and "pip install --no-cache-dir --prefix=/install ." in text
    assert "--serve-artifacts" not in text


def test_compose_publishes_only_the_gateway_and_wires_mlflow_by_name() -> None:
    stack = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = stack["services"]
    assert {"gateway", "mlflow", "postgres", "redis", "minio"} <= set(services)
    assert [name for name, service in services.items() if service.get("ports")] == ["gateway"]
    gateway = services["gateway"]["environment"]
    assert gateway["MLFLOW_SERVER_URL"] == "http://mlflow:5000"  # the internal name, never the public URL
    assert gateway["DATABASE_URL"].startswith("postgresql://") and gateway["REDIS_URL"].startswith("redis://")
    mlflow = services["mlflow"]["environment"]
    assert mlflow["HOKUSAI_MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://")
    assert "mlflow" in mlflow["HOKUSAI_MLFLOW_ALLOWED_HOSTS"].split(",")
    assert not any("DEFAULT_ARTIFACT_ROOT" in name for name in mlflow)  # clients would bypass the gateway


def test_compose_gives_mlflow_its_secrets_passphrase_from_a_secret() -> None:
    stack = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    mlflow = stack["services"]["mlflow"]
    assert "MLFLOW_CRYPTO_KEK_PASSPHRASE" not in mlflow["environment"]  # no value in the file itself
    (name,) = mlflow["secrets"]
    assert mlflow["environment"]["HOKUSAI_MLFLOW_KEK_PASSPHRASE_FILE"] == f"/run/secrets/{name}"
    assert stack["secrets"][name]["file"] == "./mlflow-kek-passphrase"
    ignored = (DEPLOY.parent / ".gitignore").read_text().splitlines()
    assert "deploy/mlflow-kek-passphrase" in ignored
