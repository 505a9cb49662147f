"""Static checks of deploy/terraform (no cloud here), parsed with python-hcl2: the invariants whose absence
broke the system we replace — Cloud Map declared but not wired, images for the wrong CPU architecture, the
public URL as the upstream, MLflow reachable from outside, an S3 default root that sends clients around the
gateway."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import hcl2
import pytest

TERRAFORM = Path(__file__).resolve().parents[2] / "deploy" / "terraform"


def _unquote(value: Any) -> Any:
    return (
        value[1:-1] if isinstance(value, str) and len(value) > 1 and value[0] == value[-1] == '"' else value
    )


@pytest.fixture(scope="module")
def tf() -> dict[str, Any]:
    """{"resource": {type: {name: body}}, "locals": {...}} over every file."""
    resources: dict[str, dict[str, Any]] = {}
    local_values: dict[str, Any] = {}
    for path in sorted(TERRAFORM.glob("*.tf")):
        with path.open() as handle:
            parsed = hcl2.load(handle)
        for block in parsed.get("resource", []):
            for kind, named in block.items():
                for name, body in named.items():
                    resources.setdefault(_unquote(kind), {})[_unquote(name)] = body
        for block in parsed.get("locals", []):
            local_values.update({key: _unquote(value) for key, value in block.items()})
    return {"resource": resources, "locals": local_values}


def resource(tf: dict[str, Any], kind: str, name: str) -> dict[str, Any]:
    found: dict[str, Any] = tf["resource"][kind][name]
    return found


def test_images_run_on_x86_64(tf: dict[str, Any]) -> None:
    for name in ("gateway", "mlflow"):
        platform = resource(tf, "aws_ecs_task_definition", name)["runtime_platform"][0]
        assert _unquote(platform["cpu_architecture"]) == "X86_64"
        assert _unquote(platform["operating_system_family"]) == "LINUX"


def test_cloud_map_namespace_is_wired_to_the_mlflow_service(tf: dict[str, Any]) -> None:
    assert tf["locals"]["namespace"] == "${var.project}-${var.env}.local"
    namespace = resource(tf, "aws_service_discovery_private_dns_namespace", "internal")
    assert namespace["name"] == "${local.namespace}"
    discovery = resource(tf, "aws_service_discovery_service", "mlflow")
    assert _unquote(discovery["name"]) == "mlflow"
    registries = resource(tf, "aws_ecs_service", "mlflow")["service_registries"]
    assert registries[0]["registry_arn"] == "${aws_service_discovery_service.mlflow.arn}"


def test_gateway_forwards_to_mlflow_by_its_internal_name(tf: dict[str, Any]) -> None:
    assert tf["locals"]["mlflow_url"] == "http://mlflow.${var.project}-${var.env}.local:5000"
    definitions = resource(tf, "aws_ecs_task_definition", "gateway")["container_definitions"]
    assert '{name = "MLFLOW_SERVER_URL", value = local.mlflow_url}' in definitions
    assert "public_url" not in definitions.split("MLFLOW_SERVER_URL", 1)[1].split("}", 1)[0]


def test_gateway_trusts_only_the_vpc_as_its_proxies(tf: dict[str, Any]) -> None:
    """The client is the rightmost X-Forwarded-For address outside the load balancer's network; `*`
    would make it the client's own leftmost entry (issue 15, defect 11)."""
    definitions = resource(tf, "aws_ecs_task_definition", "gateway")["container_definitions"]
    assert '{name = "HOKUSAI_FORWARDED_ALLOW_IPS", value = local.trusted_proxies}' in definitions
    assert (
        tf["locals"]["trusted_proxies"]
        == '${join(",", data.aws_vpc.main.cidr_block_associations[*].cidr_block)}'
    )


def test_only_the_gateway_is_behind_the_load_balancer(tf: dict[str, Any]) -> None:
    groups = tf["resource"]["aws_lb_target_group"]
    assert list(groups) == ["gateway"] and groups["gateway"]["port"] == 8000
    assert _unquote(groups["gateway"]["health_check"][0]["path"]) == "/health"
    services = tf["resource"]["aws_ecs_service"]
    assert "load_balancer" in services["gateway"] and "load_balancer" not in services["mlflow"]
    for name in ("gateway", "mlflow"):
        assert services[name]["network_configuration"][0]["assign_public_ip"] is False


def test_mlflow_admits_port_5000_only_from_the_gateway(tf: dict[str, Any]) -> None:
    group = resource(tf, "aws_security_group", "mlflow")
    ingress = group["ingress"]
    assert len(ingress) == 1
    rule = ingress[0]
    assert (rule["from_port"], rule["to_port"]) == (5000, 5000)
    assert rule["security_groups"] == ["${aws_security_group.gateway.id}"] and "cidr_blocks" not in rule


def test_mlflow_keeps_artifacts_behind_the_gateway(tf: dict[str, Any]) -> None:
    definitions = resource(tf, "aws_ecs_task_definition", "mlflow")["container_definitions"]
    assert "HOKUSAI_MLFLOW_ARTIFACTS_DESTINATION" in definitions and "s3://" in definitions
    assert "DEFAULT_ARTIFACT_ROOT" not in definitions.upper().replace("-", "_")
    assert "HOKUSAI_MLFLOW_ALLOWED_HOSTS" in definitions


def test_database_bucket_and_alarms(tf: dict[str, Any]) -> None:
    database = resource(tf, "aws_db_instance", "main")
    assert _unquote(database["engine"]) == "postgres" and database["publicly_accessible"] is False
    assert database["storage_encrypted"] is True
    block = resource(tf, "aws_s3_bucket_public_access_block", "artifacts")
    assert all(
        block[flag] is True
        for flag in ("block_public_acls", "block_public_policy", "restrict_public_buckets")
    )
    metrics = {
        _unquote(alarm["metric_name"]) for alarm in tf["resource"]["aws_cloudwatch_metric_alarm"].values()
    }
    assert {"HTTPCode_Target_5XX_Count", "UnHealthyHostCount"} <= metrics


def test_the_gateway_keeps_idle_connections_longer_than_the_load_balancer(tf: dict[str, Any]) -> None:
    """AWS: a target's keep-alive must outlast the ALB's idle timeout, or the ALB may reuse a connection
    the gateway is closing and answer 502 (the gateway's default is 5 s, the ALB's here 900 s)."""
    definitions = resource(tf, "aws_ecs_task_definition", "gateway")["container_definitions"]
    assert (
        '{name = "HOKUSAI_KEEPALIVE_TIMEOUT", value = tostring(aws_lb.public.idle_timeout + 5)}'
        in definitions
    )
    assert int(resource(tf, "aws_lb", "public")["idle_timeout"]) > 5


def test_mlflow_gets_its_secrets_passphrase_from_secrets_manager(tf: dict[str, Any]) -> None:
    """Without MLFLOW_CRYPTO_KEK_PASSPHRASE, MLflow encrypts its AI-gateway secrets with a passphrase every
    MLflow shares (its /gateway/secrets/config says so to any read key)."""
    secrets, before = _secrets_and_environment(tf, "mlflow")
    passphrase = "aws_secretsmanager_secret.mlflow_kek_passphrase.arn"
    assert f'{{name = "MLFLOW_CRYPTO_KEK_PASSPHRASE", valueFrom = {passphrase}}}' in secrets
    # A secret of the task, never a plain environment value.
    assert "MLFLOW_CRYPTO_KEK_PASSPHRASE" not in before
    version = resource(tf, "aws_secretsmanager_secret_version", "mlflow_kek_passphrase")
    assert version["secret_string"] == "${random_password.mlflow_kek.result}"
    assert resource(tf, "random_password", "mlflow_kek")["length"] >= 32
    with (TERRAFORM / "services.tf").open() as handle:
        documents: dict[str, Any] = {}
        for block in hcl2.load(handle)["data"]:
            documents.update(block.get('"aws_iam_policy_document"', {}))
    read_secrets = documents['"read_secrets"']
    # The task's execution role fetches it when the task starts.
    assert (
        "${aws_secretsmanager_secret.mlflow_kek_passphrase.arn}" in read_secrets["statement"][0]["resources"]
    )


def _secrets_and_environment(tf: dict[str, Any], task: str) -> tuple[str, str]:
    definitions: str = resource(tf, "aws_ecs_task_definition", task)["container_definitions"]
    before, secrets = re.split(r"secrets = (?:concat\()?\[", definitions, maxsplit=1)
    return secrets.split("]", 1)[0], before


def test_gateway_and_mlflow_share_the_assertion_secret_from_secrets_manager(tf: dict[str, Any]) -> None:
    """With permissions on, MLflow accepts only requests signed with the gateways' secret: one random value
    in Secrets Manager, given to both task definitions as a secret (never a plain environment value)."""
    arn = "aws_secretsmanager_secret.mlflow_assertion_secret.arn"
    for task in ("gateway", "mlflow"):
        secrets, environment = _secrets_and_environment(tf, task)
        assert f'{{name = "HOKUSAI_MLFLOW_ASSERTION_SECRET", valueFrom = {arn}}}' in secrets, task
        assert "HOKUSAI_MLFLOW_ASSERTION_SECRET" not in environment, task
        assert '{name = "HOKUSAI_PERMISSIONS", value = tostring(var.permissions)}' in environment, task
    version = resource(tf, "aws_secretsmanager_secret_version", "mlflow_assertion_secret")
    assert version["secret_string"] == "${random_password.mlflow_assertion.result}"
    assert resource(tf, "random_password", "mlflow_assertion")["length"] >= 32
    with (TERRAFORM / "services.tf").open() as handle:
        documents: dict[str, Any] = {}
        for block in hcl2.load(handle)["data"]:
            documents.update(block.get('"aws_iam_policy_document"', {}))
    assert f"${{{arn}}}" in documents['"read_secrets"']["statement"][0]["resources"]


def test_gateways_seal_webhook_secrets_with_one_key_from_secrets_manager(tf: dict[str, Any]) -> None:
    """Every gateway task unseals every webhook's secret: one random key in Secrets Manager, given as a task
    secret (never a plain environment value), never replaced by an apply (secrets are sealed under it)."""
    arn = "aws_secretsmanager_secret.webhook_secret_key.arn"
    secrets, environment = _secrets_and_environment(tf, "gateway")
    assert f'{{name = "HOKUSAI_WEBHOOK_SECRET_KEY", valueFrom = {arn}}}' in secrets
    assert "HOKUSAI_WEBHOOK_SECRET_KEY" not in environment
    version = resource(tf, "aws_secretsmanager_secret_version", "webhook_secret_key")
    assert version["secret_string"] == "${random_password.webhook_secret_key.result}"
    assert version["lifecycle"][0]["ignore_changes"] == ["secret_string"]
    assert resource(tf, "random_password", "webhook_secret_key")["length"] >= 32
    with (TERRAFORM / "services.tf").open() as handle:
        documents: dict[str, Any] = {}
        for block in hcl2.load(handle)["data"]:
            documents.update(block.get('"aws_iam_policy_document"', {}))
    assert f"${{{arn}}}" in documents['"read_secrets"']["statement"][0]["resources"]


def test_mlflow_runs_with_permissions_and_its_auth_database_on_the_same_instance(tf: dict[str, Any]) -> None:
    definitions = resource(tf, "aws_ecs_task_definition", "mlflow")["container_definitions"]
    assert 'command = ["hokusai-registry", "mlflow", "--port", "5000"]' in definitions
    secrets, environment = _secrets_and_environment(tf, "mlflow")
    urls = "aws_secretsmanager_secret.database_urls.arn"
    auth = f'{{name = "HOKUSAI_MLFLOW_AUTH_DATABASE_URI", valueFrom = "${{{urls}}}:mlflow_auth::"}}'
    assert auth in secrets
    assert '{name = "HOKUSAI_DEFAULT_PERMISSION", value = var.default_permission}' in environment
    described = _unquote(resource(tf, "aws_secretsmanager_secret", "database_urls")["description"])
    assert "(mlflow_auth)" in described


def test_single_sign_on_settings_are_given_when_set_and_the_client_secret_is_a_secret(
    tf: dict[str, Any],
) -> None:
    _, environment = _secrets_and_environment(tf, "gateway")
    assert (
        "local.sso_environment" in resource(tf, "aws_ecs_task_definition", "gateway")["container_definitions"]
    )
    assert "HOKUSAI_OIDC_CLIENT_SECRET" not in environment
    sso = str(tf["locals"]["sso_environment"])
    for setting in (
        "HOKUSAI_OIDC_ISSUER",
        "HOKUSAI_OIDC_CLIENT_ID",
        "HOKUSAI_OIDC_ADMIN_GROUPS",
        "HOKUSAI_JWT_ISSUERS",
    ):
        assert setting in sso
    assert "HOKUSAI_OIDC_CLIENT_SECRET" not in sso
    definitions = resource(tf, "aws_ecs_task_definition", "gateway")["container_definitions"]
    assert '{name = "HOKUSAI_OIDC_CLIENT_SECRET", valueFrom = var.oidc_client_secret_arn}' in definitions
    with (TERRAFORM / "services.tf").open() as handle:
        documents: dict[str, Any] = {}
        for block in hcl2.load(handle)["data"]:
            documents.update(block.get('"aws_iam_policy_document"', {}))
    # The execution role may read the client's secret when one is given.
    assert "var.oidc_client_secret_arn" in str(documents['"read_secrets"'])
