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
    name = "mlflow-kek-passphrase"
    assert name in mlflow["secrets"]
    assert mlflow["environment"]["HOKUSAI_MLFLOW_KEK_PASSPHRASE_FILE"] == f"/run/secrets/{name}"
    assert stack["secrets"][name]["file"] == "./mlflow-kek-passphrase"
    ignored = (DEPLOY.parent / ".gitignore").read_text().splitlines()
    assert "deploy/mlflow-kek-passphrase" in ignored


def test_compose_shares_one_assertion_secret_between_gateway_and_mlflow() -> None:
    """With permissions on, MLflow accepts only requests signed with the gateway's secret: both read the
    same compose secret (a default file in each container's data directory would differ)."""
    stack = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = stack["services"]
    for name in ("gateway", "mlflow"):
        environment = services[name]["environment"]
        assert "mlflow-assertion-secret" in services[name]["secrets"]
        path = "/run/secrets/mlflow-assertion-secret"
        assert environment["HOKUSAI_MLFLOW_ASSERTION_SECRET_FILE"] == path, name
        assert "HOKUSAI_MLFLOW_ASSERTION_SECRET" not in environment  # no value in the file itself
        assert environment["HOKUSAI_PERMISSIONS"] == "${HOKUSAI_PERMISSIONS:-true}", name  # the same setting
    assert stack["secrets"]["mlflow-assertion-secret"]["file"] == "./mlflow-assertion-secret"
    ignored = (DEPLOY.parent / ".gitignore").read_text().splitlines()
    assert "deploy/mlflow-assertion-secret" in ignored


def test_compose_gives_the_gateway_its_webhook_key_from_a_secret() -> None:
    """Webhook secrets are sealed under this key in the shared database: a default file in a container's data
    directory would be lost with the container, and the webhooks' secrets with it."""
    stack = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    gateway = stack["services"]["gateway"]
    assert "webhook-secret-key" in gateway["secrets"]
    assert gateway["environment"]["HOKUSAI_WEBHOOK_SECRET_KEY_FILE"] == "/run/secrets/webhook-secret-key"
    assert stack["secrets"]["webhook-secret-key"]["file"] == "./webhook-secret-key"
    assert "deploy/webhook-secret-key" in (DEPLOY.parent / ".gitignore").read_text().splitlines()


def test_compose_runs_mlflow_with_permissions_and_its_auth_database_on_postgres() -> None:
    stack = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    mlflow = stack["services"]["mlflow"]
    assert mlflow["command"] == ["hokusai-registry", "mlflow", "--port", "5000"]
    environment = mlflow["environment"]
    # MLflow's container has no volume: grants in its default SQLite file would go with the container.
    auth = environment["HOKUSAI_MLFLOW_AUTH_DATABASE_URI"]
    assert auth.startswith("postgresql://") and auth.rsplit("/", 1)[1] == "mlflow_auth"
    assert auth.rsplit("/", 1)[0] == environment["HOKUSAI_MLFLOW_BACKEND_STORE_URI"].rsplit("/", 1)[0]
    assert "CREATE DATABASE mlflow_auth;" in (DEPLOY / "postgres-init.sql").read_text()
    assert environment["HOKUSAI_DEFAULT_PERMISSION"] == "${HOKUSAI_DEFAULT_PERMISSION:-READ}"
