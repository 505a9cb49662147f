variable "project" {
  description = "Short project name, used in every resource name and the private DNS namespace."
  type        = string
}

variable "env" {
  description = "Environment name (dev, staging, prod)."
  type        = string
}

variable "region" {
  type    = string
  default = "eu-west-1"
}

variable "vpc_id" {
  description = "The VPC to deploy into."
  type        = string
}

variable "public_subnet_ids" {
  description = "Subnets for the load balancer."
  type        = list(string)
}

variable "private_subnet_ids" {
  description = "Subnets for the gateway, MLflow and the database (no public addresses)."
  type        = list(string)
}

variable "certificate_arn" {
  description = "ACM certificate for the load balancer's HTTPS listener."
  type        = string
}

variable "public_url" {
  description = "The URL clients use, e.g. https://registry.example.com (HOKUSAI_PUBLIC_URL)."
  type        = string
}

variable "gateway_image" {
  description = "Image built from deploy/Dockerfile for linux/amd64."
  type        = string
}

variable "mlflow_image" {
  description = "Image built from deploy/Dockerfile.mlflow for linux/amd64."
  type        = string
}

variable "gateway_count" {
  type    = number
  default = 2
}

variable "alarm_topic_arn" {
  description = "SNS topic for the alarms."
  type        = string
}

variable "permissions" {
  description = "HOKUSAI_PERMISSIONS for the gateway and MLflow alike: per-resource permissions decided by MLflow's auth app (docs/permissions.md)."
  type        = bool
  default     = true
}

variable "default_permission" {
  description = "HOKUSAI_DEFAULT_PERMISSION: what an owner may do where nobody granted anything (READ, as MLflow's; NO_PERMISSIONS isolates teams)."
  type        = string
  default     = "READ"
  validation {
    condition     = contains(["READ", "USE", "EDIT", "MANAGE", "NO_PERMISSIONS"], var.default_permission)
    error_message = "default_permission must be one of READ, USE, EDIT, MANAGE, NO_PERMISSIONS."
  }
}

variable "oidc_issuer" {
  description = "HOKUSAI_OIDC_ISSUER: the identity provider people sign in with (docs/sso.md); empty: keys only."
  type        = string
  default     = ""
}

variable "oidc_client_id" {
  description = "HOKUSAI_OIDC_CLIENT_ID: the gateway's client at the provider (redirect URI: public_url + /login/oidc/callback)."
  type        = string
  default     = ""
}

variable "oidc_client_secret_arn" {
  description = "ARN of a Secrets Manager secret holding the client's secret (HOKUSAI_OIDC_CLIENT_SECRET); created outside Terraform so that the secret is never in its state."
  type        = string
  default     = ""
}

variable "oidc_display_name" {
  description = "HOKUSAI_OIDC_DISPLAY_NAME: the sign-in button's name (Sign in with NAME)."
  type        = string
  default     = ""
}

variable "oidc_admin_groups" {
  description = "HOKUSAI_OIDC_ADMIN_GROUPS: comma-separated provider groups whose members are admins."
  type        = string
  default     = ""
}

variable "jwt_issuers" {
  description = "HOKUSAI_JWT_ISSUERS: comma-separated extra issuers whose tokens machines may send (an EKS cluster's OIDC issuer, GitLab)."
  type        = string
  default     = ""
}

variable "token_audience" {
  description = "HOKUSAI_OIDC_AUDIENCE: the aud bearer tokens must carry (default: the client id); required with jwt_issuers and no oidc_issuer."
  type        = string
  default     = ""
}
