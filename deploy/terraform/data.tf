# -- PostgreSQL (keys and MLflow), the artifact bucket, secrets

resource "aws_db_subnet_group" "main" {
  name       = local.name
  subnet_ids = var.private_subnet_ids
}

resource "aws_db_instance" "main" {
  #checkov:skip=CKV_AWS_118:enhanced monitoring needs its own IAM role and costs per instance; enable it per environment
  #checkov:skip=CKV2_AWS_30:query logs would record statement parameters, key-hash lookups included
  #checkov:skip=CKV_AWS_354:Performance Insights uses the AWS-managed key; a customer key is an account policy choice
  identifier                  = local.name
  engine                      = "postgres"
  engine_version              = "15"
  instance_class              = "db.t4g.small"
  allocated_storage           = 20
  db_name                     = "hokusai"
  username                    = "hokusai"
  manage_master_user_password = true
  db_subnet_group_name        = aws_db_subnet_group.main.name
  vpc_security_group_ids      = [aws_security_group.database.id]
  publicly_accessible         = false
  storage_encrypted           = true
  multi_az                    = true
  backup_retention_period     = 7
  deletion_protection         = true
  skip_final_snapshot         = false
  final_snapshot_identifier   = "${local.name}-final"
  auto_minor_version_upgrade  = true
  copy_tags_to_snapshot       = true
  performance_insights_enabled        = true
  iam_database_authentication_enabled = true
  enabled_cloudwatch_logs_exports     = ["postgresql"]
}

resource "aws_secretsmanager_secret" "database_urls" {
  #checkov:skip=CKV_AWS_149:encrypted with the AWS-managed key; a customer key is an account policy choice
  #checkov:skip=CKV2_AWS_57:the RDS master password is managed and rotated by RDS; these URLs follow it
  name        = "${local.name}/database-urls"
  description = "DATABASE_URL (keys), MLflow's backend store URI (mlflow) and auth database URI (mlflow_auth); filled in after the instance exists"
}

# MLflow encrypts its AI-gateway secrets with this passphrase (MLFLOW_CRYPTO_KEK_PASSPHRASE). Its value is
# in the Terraform state too: keep the state as private as the secret.
resource "random_password" "mlflow_kek" {
  length  = 48
  special = false
  lifecycle {
    prevent_destroy = true # a new passphrase makes every secret MLflow stored undecryptable
  }
}

resource "aws_secretsmanager_secret" "mlflow_kek_passphrase" {
  #checkov:skip=CKV_AWS_149:encrypted with the AWS-managed key; a customer key is an account policy choice
  #checkov:skip=CKV2_AWS_57:changing it means re-encrypting MLflow's secrets (mlflow crypto rotate-kek), not a rotation Lambda
  name        = "${local.name}/mlflow-kek-passphrase"
  description = "MLFLOW_CRYPTO_KEK_PASSPHRASE: the passphrase MLflow encrypts its AI-gateway secrets with"
}

resource "aws_secretsmanager_secret_version" "mlflow_kek_passphrase" {
  secret_id     = aws_secretsmanager_secret.mlflow_kek_passphrase.id
  secret_string = random_password.mlflow_kek.result
  lifecycle {
    # After `mlflow crypto rotate-kek` the secret is updated by hand: apply must not put the old one back.
    ignore_changes = [secret_string]
  }
}

# The gateways sign every request to MLflow with this secret, and MLflow accepts no others
# (HOKUSAI_MLFLOW_ASSERTION_SECRET in both task definitions). Its value is in the Terraform state too. A new one
# only needs both services restarted: nothing is stored under it.
resource "random_password" "mlflow_assertion" {
  length  = 48
  special = false
}

resource "aws_secretsmanager_secret" "mlflow_assertion_secret" {
  #checkov:skip=CKV_AWS_149:encrypted with the AWS-managed key; a customer key is an account policy choice
  #checkov:skip=CKV2_AWS_57:rotating it means restarting the gateway and MLflow services together, not a rotation Lambda
  name        = "${local.name}/mlflow-assertion-secret"
  description = "HOKUSAI_MLFLOW_ASSERTION_SECRET: gateways sign MLflow requests with it, MLflow checks them with it"
}

resource "aws_secretsmanager_secret_version" "mlflow_assertion_secret" {
  secret_id     = aws_secretsmanager_secret.mlflow_assertion_secret.id
  secret_string = random_password.mlflow_assertion.result
}

# The gateways seal webhook signing secrets in the key store's database with this key
# (HOKUSAI_WEBHOOK_SECRET_KEY in the gateway's task definition). Unlike the assertion secret, things are stored
# under it: a new one makes every webhook's secret unreadable (remove and add the webhooks again).
resource "random_password" "webhook_secret_key" {
  length  = 48
  special = false
}

resource "aws_secretsmanager_secret" "webhook_secret_key" {
  #checkov:skip=CKV_AWS_149:encrypted with the AWS-managed key; a customer key is an account policy choice
  #checkov:skip=CKV2_AWS_57:webhook secrets are sealed under it: rotating it means adding the webhooks again
  name        = "${local.name}/webhook-secret-key"
  description = "HOKUSAI_WEBHOOK_SECRET_KEY: gateways seal webhook signing secrets with it"
}

resource "aws_secretsmanager_secret_version" "webhook_secret_key" {
  secret_id     = aws_secretsmanager_secret.webhook_secret_key.id
  secret_string = random_password.webhook_secret_key.result
  lifecycle {
    # Replaced by hand only (with the webhooks added again): apply must not put another one in.
    ignore_changes = [secret_string]
  }
}

resource "aws_s3_bucket" "artifacts" {
  #checkov:skip=CKV_AWS_18:only MLflow's task role reads or writes it; use CloudTrail data events for an audit
  #checkov:skip=CKV2_AWS_62:nothing consumes bucket events
  #checkov:skip=CKV_AWS_144:single-region deployment; versioning protects against deletes
  bucket = "${local.name}-mlflow-artifacts"
}

resource "aws_s3_bucket_lifecycle_configuration" "artifacts" {
  bucket = aws_s3_bucket.artifacts.id
  rule {
    id     = "abort-incomplete-uploads"
    status = "Enabled"
    filter {}
    abort_incomplete_multipart_upload {
      days_after_initiation = 2
    }
    noncurrent_version_expiration {
      noncurrent_days = 90
    }
  }
}

resource "aws_s3_bucket_public_access_block" "artifacts" {
  bucket                  = aws_s3_bucket.artifacts.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_server_side_encryption_configuration" "artifacts" {
  bucket = aws_s3_bucket.artifacts.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "aws:kms"
    }
  }
}

resource "aws_s3_bucket_versioning" "artifacts" {
  bucket = aws_s3_bucket.artifacts.id
  versioning_configuration {
    status = "Enabled"
  }
}
