# -- ECS Fargate services; both images are linux/amd64 (runtime_platform pins it)

resource "aws_cloudwatch_log_group" "services" {
  #checkov:skip=CKV_AWS_158:encrypted by CloudWatch's own key; logs hold no secrets (the gateway redacts keys)
  for_each          = toset(["gateway", "mlflow"])
  name              = "/ecs/${local.name}/${each.key}"
  retention_in_days = 365
}

data "aws_iam_policy_document" "ecs_tasks" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "execution" {
  name               = "${local.name}-execution"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks.json
}

resource "aws_iam_role_policy_attachment" "execution" {
  role       = aws_iam_role.execution.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
}

data "aws_iam_policy_document" "read_secrets" {
  statement {
    actions = ["secretsmanager:GetSecretValue"]
    resources = [
      aws_secretsmanager_secret.database_urls.arn,
      aws_secretsmanager_secret.mlflow_kek_passphrase.arn,
      aws_secretsmanager_secret.mlflow_assertion_secret.arn,
      aws_secretsmanager_secret.webhook_secret_key.arn,
    ]
  }
  # The single-sign-on client's secret, when one is given (docs/sso.md).
  dynamic "statement" {
    for_each = var.oidc_client_secret_arn == "" ? [] : [var.oidc_client_secret_arn]
    content {
      actions   = ["secretsmanager:GetSecretValue"]
      resources = [statement.value]
    }
  }
}

resource "aws_iam_role_policy" "execution_secrets" {
  name   = "read-database-urls"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.read_secrets.json
}

resource "aws_iam_role" "mlflow" {
  name               = "${local.name}-mlflow"
  assume_role_policy = data.aws_iam_policy_document.ecs_tasks.json
}

data "aws_iam_policy_document" "artifacts" {
  statement {
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
    resources = ["${aws_s3_bucket.artifacts.arn}/*"]
  }
  statement {
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.artifacts.arn]
  }
}

resource "aws_iam_role_policy" "mlflow_artifacts" {
  name   = "artifacts"
  role   = aws_iam_role.mlflow.id
  policy = data.aws_iam_policy_document.artifacts.json
}

resource "aws_ecs_task_definition" "gateway" {
  family                   = "${local.name}-gateway"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = 1024
  memory                   = 2048
  execution_role_arn       = aws_iam_role.execution.arn
  runtime_platform {
    cpu_architecture        = "X86_64"
    operating_system_family = "LINUX"
  }
  container_definitions = jsonencode([{
    name         = "gateway"
    image        = var.gateway_image
    essential    = true
    portMappings = [{ containerPort = 8000, protocol = "tcp" }]
    environment = concat([
      { name = "MLFLOW_SERVER_URL", value = local.mlflow_url },
      { name = "HOKUSAI_PUBLIC_URL", value = var.public_url },
      { name = "HOKUSAI_FORWARDED_ALLOW_IPS", value = local.trusted_proxies },
      # Longer than the ALB's idle timeout (main.tf): the ALB must close idle connections first, or it may
      # send a request on one the gateway is closing and answer 502.
      { name = "HOKUSAI_KEEPALIVE_TIMEOUT", value = tostring(aws_lb.public.idle_timeout + 5) },
      { name = "LOG_FORMAT", value = "json" },
      # The same as MLflow's: a gateway with permissions refuses an MLflow that does not enforce them.
      { name = "HOKUSAI_PERMISSIONS", value = tostring(var.permissions) },
    ], local.sso_environment)
    secrets = concat([
      { name = "DATABASE_URL", valueFrom = "${aws_secretsmanager_secret.database_urls.arn}:keys::" },
      # The gateway signs every request to MLflow with it (the same secret as MLflow's).
      { name = "HOKUSAI_MLFLOW_ASSERTION_SECRET", valueFrom = aws_secretsmanager_secret.mlflow_assertion_secret.arn },
      # Every gateway seals and unseals webhook signing secrets with it (docs/webhooks.md).
      { name = "HOKUSAI_WEBHOOK_SECRET_KEY", valueFrom = aws_secretsmanager_secret.webhook_secret_key.arn },
      ], var.oidc_client_secret_arn == "" ? [] : [
      { name = "HOKUSAI_OIDC_CLIENT_SECRET", valueFrom = var.oidc_client_secret_arn },
    ])
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.services["gateway"].name
        awslogs-region        = var.region
        awslogs-stream-prefix = "gateway"
      }
    }
  }])
}

resource "aws_ecs_task_definition" "mlflow" {
  family                   = "${local.name}-mlflow"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = 2048
  memory                   = 4096
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.mlflow.arn
  runtime_platform {
    cpu_architecture        = "X86_64"
    operating_system_family = "LINUX"
  }
  container_definitions = jsonencode([{
    name         = "mlflow"
    image        = var.mlflow_image
    essential    = true
    portMappings = [{ containerPort = 5000, protocol = "tcp" }]
    # MLflow as the gateway needs it: --serve-artifacts, and with permissions its auth app checking the
    # gateway's assertions (the image's CMD too; stated so an image change cannot drop it).
    command = ["hokusai-registry", "mlflow", "--port", "5000"]
    environment = [
      # Artifacts in S3 through MLflow; the default artifact root stays mlflow-artifacts:/.
      { name = "HOKUSAI_MLFLOW_ARTIFACTS_DESTINATION", value = "s3://${aws_s3_bucket.artifacts.bucket}/mlflow" },
      { name = "HOKUSAI_MLFLOW_ALLOWED_HOSTS", value = "mlflow.${local.namespace},mlflow.${local.namespace}:*" },
      { name = "HOKUSAI_PERMISSIONS", value = tostring(var.permissions) },
      { name = "HOKUSAI_DEFAULT_PERMISSION", value = var.default_permission },
    ]
    secrets = [
      {
        name      = "HOKUSAI_MLFLOW_BACKEND_STORE_URI"
        valueFrom = "${aws_secretsmanager_secret.database_urls.arn}:mlflow::"
      },
      # MLflow's users, teams (roles) and grants: on the same instance, in a database of its own.
      {
        name      = "HOKUSAI_MLFLOW_AUTH_DATABASE_URI"
        valueFrom = "${aws_secretsmanager_secret.database_urls.arn}:mlflow_auth::"
      },
      { name = "MLFLOW_CRYPTO_KEK_PASSPHRASE", valueFrom = aws_secretsmanager_secret.mlflow_kek_passphrase.arn },
      # MLflow accepts only requests signed with it (the same secret as the gateways').
      { name = "HOKUSAI_MLFLOW_ASSERTION_SECRET", valueFrom = aws_secretsmanager_secret.mlflow_assertion_secret.arn },
    ]
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.services["mlflow"].name
        awslogs-region        = var.region
        awslogs-stream-prefix = "mlflow"
      }
    }
  }])
}

resource "aws_ecs_service" "mlflow" {
  name            = "mlflow"
  cluster         = aws_ecs_cluster.main.id
  task_definition = aws_ecs_task_definition.mlflow.arn
  desired_count   = 1
  launch_type     = "FARGATE"
  network_configuration {
    subnets          = var.private_subnet_ids
    security_groups  = [aws_security_group.mlflow.id]
    assign_public_ip = false
  }
  # Wired, not just declared: this is what makes mlflow.<project>-<env>.local resolve to the task.
  service_registries {
    registry_arn = aws_service_discovery_service.mlflow.arn
  }
}

resource "aws_ecs_service" "gateway" {
  name                              = "gateway"
  cluster                           = aws_ecs_cluster.main.id
  task_definition                   = aws_ecs_task_definition.gateway.arn
  desired_count                     = var.gateway_count
  launch_type                       = "FARGATE"
  health_check_grace_period_seconds = 30
  network_configuration {
    subnets          = var.private_subnet_ids
    security_groups  = [aws_security_group.gateway.id]
    assign_public_ip = false
  }
  load_balancer {
    target_group_arn = aws_lb_target_group.gateway.arn
    container_name   = "gateway"
    container_port   = 8000
  }
  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }
  depends_on = [aws_lb_listener.https]
}

# -- alarms

resource "aws_cloudwatch_metric_alarm" "target_5xx" {
  alarm_name          = "${local.name}-gateway-5xx"
  alarm_description   = "The gateway answers 5xx (MLflow down, timeouts, key store unavailable)"
  namespace           = "AWS/ApplicationELB"
  metric_name         = "HTTPCode_Target_5XX_Count"
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  threshold           = 10
  comparison_operator = "GreaterThanThreshold"
  treat_missing_data  = "notBreaching"
  dimensions = {
    LoadBalancer = aws_lb.public.arn_suffix
    TargetGroup  = aws_lb_target_group.gateway.arn_suffix
  }
  alarm_actions = [var.alarm_topic_arn]
}

resource "aws_cloudwatch_metric_alarm" "unhealthy_hosts" {
  alarm_name          = "${local.name}-gateway-unhealthy"
  alarm_description   = "Gateway tasks fail their /health check"
  namespace           = "AWS/ApplicationELB"
  metric_name         = "UnHealthyHostCount"
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 3
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  dimensions = {
    LoadBalancer = aws_lb.public.arn_suffix
    TargetGroup  = aws_lb_target_group.gateway.arn_suffix
  }
  alarm_actions = [var.alarm_topic_arn]
}

locals {
  # Single sign-on (docs/sso.md): only the settings that were given.
  sso_environment = [
    for setting in [
      { name = "HOKUSAI_OIDC_ISSUER", value = var.oidc_issuer },
      { name = "HOKUSAI_OIDC_CLIENT_ID", value = var.oidc_client_id },
      { name = "HOKUSAI_OIDC_DISPLAY_NAME", value = var.oidc_display_name },
      { name = "HOKUSAI_OIDC_ADMIN_GROUPS", value = var.oidc_admin_groups },
      { name = "HOKUSAI_JWT_ISSUERS", value = var.jwt_issuers },
      { name = "HOKUSAI_OIDC_AUDIENCE", value = var.token_audience },
    ] : setting if setting.value != ""
  ]
}
