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
