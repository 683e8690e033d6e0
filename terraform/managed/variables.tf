# The managed shape (docs/scaling.md): Cloud SQL for PostgreSQL 15 on a private IP, nexusd on
# Cloud Run as N replicas. Every variable here is used (tests/deploy checks it).

variable "project_id" {
  description = "Google Cloud project to deploy into."
  type        = string
}

variable "region" {
  description = "Region of Cloud SQL and Cloud Run."
  type        = string
  default     = "us-central1"
}

variable "name" {
  description = "Prefix of every resource's name."
  type        = string
  default     = "nexusd"
}

variable "subnet_cidr" {
  description = "The subnet Cloud Run's direct VPC egress uses."
  type        = string
  default     = "10.9.0.0/24"
}

variable "db_tier" {
  description = "Cloud SQL machine tier (db-custom-<vCPU>-<MB>); 1 vCPU / 3.75 GB holds the HNSW index of ~1M patterns."
  type        = string
  default     = "db-custom-1-3840"
}

variable "db_availability" {
  description = "ZONAL, or REGIONAL for a standby in another zone with automatic failover."
  type        = string
  default     = "ZONAL"
}

variable "db_backup_retention" {
  description = "Automated backups kept by Cloud SQL."
  type        = number
  default     = 14
}

variable "db_log_retention_days" {
  description = "Days of write-ahead log kept for point-in-time recovery (1-7)."
  type        = number
  default     = 7
}

variable "db_name" {
  description = "The knowledge base's database."
  type        = string
  default     = "devnexus"
}

variable "db_user" {
  description = "The role nexusd connects as."
  type        = string
  default     = "devnexus"
}

variable "nexusd_image" {
  description = "Container image of nexusd (the repository's Dockerfile)."
  type        = string
}

variable "min_instances" {
  description = "Replicas always running (at least 1: the leader runs the scheduled jobs and the embedding backfill)."
  type        = number
  default     = 2

  validation {
    condition     = var.min_instances >= 1
    error_message = "min_instances must be at least 1."
  }
}

variable "max_instances" {
  description = "Most replicas Cloud Run starts; each opens up to pool_max_connections + 3 connections."
  type        = number
  default     = 4
}

variable "pool_max_connections" {
  description = "POSTGRES_MAX_CONNECTIONS of each replica."
  type        = number
  default     = 10
}

variable "allow_unauthenticated" {
  description = "Let anyone invoke the service (nexusd still checks tokens on protected skills)."
  type        = bool
  default     = false
}
