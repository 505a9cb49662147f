locals {
  name      = "${var.project}-${var.env}"
  namespace = "${var.project}-${var.env}.local"
  # The gateway reaches MLflow by its Cloud Map name, never through the load balancer or a public URL.
  mlflow_url = "http://mlflow.${var.project}-${var.env}.local:5000"
  # The proxies whose X-Forwarded-For/Proto the gateway believes: the load balancer's nodes, which live in
  # the VPC; the client is the rightmost address outside it. Never "*" (the gateway refuses it).
  trusted_proxies = join(",", data.aws_vpc.main.cidr_block_associations[*].cidr_block)
}

data "aws_vpc" "main" {
  id = var.vpc_id
}

resource "aws_ecs_cluster" "main" {
  name = local.name
  setting {
    name  = "containerInsights"
    value = "enabled"
  }
}

# -- service discovery: MLflow is registered under mlflow.<project>-<env>.local

resource "aws_service_discovery_private_dns_namespace" "internal" {
  name = local.namespace
  vpc  = var.vpc_id
}

resource "aws_service_discovery_service" "mlflow" {
  name = "mlflow"
  dns_config {
    namespace_id   = aws_service_discovery_private_dns_namespace.internal.id
    routing_policy = "MULTIVALUE"
    dns_records {
      type = "A"
      ttl  = 10
    }
  }
  health_check_custom_config {
    failure_threshold = 1
  }
}

# -- security groups: internet -> ALB -> gateway -> MLflow; database from both

resource "aws_security_group" "alb" {
  name        = "${local.name}-alb"
  description = "HTTPS from clients to the load balancer"
  vpc_id      = var.vpc_id
  ingress {
    description = "HTTPS"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }
  egress {
    description     = "to the gateway only"
    from_port       = 8000
    to_port         = 8000
    protocol        = "tcp"
    security_groups = [aws_security_group.gateway.id]
  }
}

resource "aws_security_group" "gateway" {
  name        = "${local.name}-gateway"
  description = "The gateway: from the load balancer"
  vpc_id      = var.vpc_id
  egress {
    description = "MLflow, PostgreSQL, Redis and AWS APIs"
    from_port   = 0
    to_port     = 65535
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }
}

resource "aws_security_group_rule" "gateway_from_alb" {
  description              = "the load balancer to the gateway"
  type                     = "ingress"
  from_port                = 8000
  to_port                  = 8000
  protocol                 = "tcp"
  security_group_id        = aws_security_group.gateway.id
  source_security_group_id = aws_security_group.alb.id
}

resource "aws_security_group" "mlflow" {
  name        = "${local.name}-mlflow"
  description = "MLflow: port 5000 from the gateway only, never public"
  vpc_id      = var.vpc_id
  ingress {
    description     = "the gateway to MLflow"
    from_port       = 5000
    to_port         = 5000
    protocol        = "tcp"
    security_groups = [aws_security_group.gateway.id]
  }
  egress {
    description = "PostgreSQL, S3 and AWS APIs"
    from_port   = 0
    to_port     = 65535
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }
}

resource "aws_security_group" "database" {
  name        = "${local.name}-database"
  description = "PostgreSQL from the gateway (keys) and MLflow (tracking)"
  vpc_id      = var.vpc_id
  ingress {
    description     = "PostgreSQL"
    from_port       = 5432
    to_port         = 5432
    protocol        = "tcp"
    security_groups = [aws_security_group.gateway.id, aws_security_group.mlflow.id]
  }
}

# -- load balancer: routes only to the gateway

resource "aws_lb" "public" {
  #checkov:skip=CKV_AWS_91:the gateway logs every request with its id; ALB logs need a log bucket per account
  #checkov:skip=CKV2_AWS_28:every request is authenticated, rate-limited and failure-throttled by the gateway; add WAF per policy
  name                       = local.name
  load_balancer_type         = "application"
  internal                   = false
  subnets                    = var.public_subnet_ids
  security_groups            = [aws_security_group.alb.id]
  drop_invalid_header_fields = true
  enable_deletion_protection = true
  # Model uploads take minutes: the default 60 s idle timeout would cut them.
  idle_timeout = 900
}

resource "aws_lb_target_group" "gateway" {
  name        = "${local.name}-gateway"
  port        = 8000
  protocol    = "HTTP"
  target_type = "ip"
  vpc_id      = var.vpc_id
  health_check {
    path    = "/health"
    matcher = "200"
  }
}

resource "aws_lb_listener" "https" {
  load_balancer_arn = aws_lb.public.arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  certificate_arn   = var.certificate_arn
  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.gateway.arn
  }
}
