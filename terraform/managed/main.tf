# nexusd past one machine (docs/scaling.md): Cloud SQL for PostgreSQL 15 reachable on a private
# IP only, with automated backups and point-in-time recovery, and nexusd on Cloud Run serving the
# API directly as N replicas. The platform takes backups and watches the machines, so nexusd runs
# with NEXUSD_BACKUPS=off and NEXUSD_HOST_METRICS=off; it keeps bootstrap and migrations, the
# PostgreSQL metrics and the embedding backfill, on the elected leader.

locals {
  services = [
    "compute.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
    "servicenetworking.googleapis.com",
    "sqladmin.googleapis.com",
  ]
}

resource "google_project_service" "required" {
  for_each           = toset(local.services)
  service            = each.value
  disable_on_destroy = false
}

# --- network: a private VPC, peered with Cloud SQL's service network ---------------------------

resource "google_compute_network" "nexusd" {
  name                    = var.name
  auto_create_subnetworks = false

  depends_on = [google_project_service.required]
}

resource "google_compute_subnetwork" "nexusd" {
  name                     = var.name
  region                   = var.region
  network                  = google_compute_network.nexusd.id
  ip_cidr_range            = var.subnet_cidr
  private_ip_google_access = true
}

resource "google_compute_global_address" "sql_peering" {
  name          = "${var.name}-sql-peering"
  purpose       = "VPC_PEERING"
  address_type  = "INTERNAL"
  prefix_length = 20
  network       = google_compute_network.nexusd.id
}

resource "google_service_networking_connection" "sql" {
  network                 = google_compute_network.nexusd.id
  service                 = "servicenetworking.googleapis.com"
  reserved_peering_ranges = [google_compute_global_address.sql_peering.name]
}

# --- Cloud SQL ------------------------------------------------------------------------------

resource "google_sql_database_instance" "nexusd" {
  name                = var.name
  region              = var.region
  database_version    = "POSTGRES_15"
  deletion_protection = true

  settings {
    tier              = var.db_tier
    availability_type = var.db_availability
    edition           = "ENTERPRISE"

    ip_configuration {
      # Private IP only: no public address, reachable from the VPC alone.
      ipv4_enabled    = false
      private_network = google_compute_network.nexusd.id
      ssl_mode        = "ENCRYPTED_ONLY"
    }

    backup_configuration {
      enabled                        = true
      point_in_time_recovery_enabled = true
      transaction_log_retention_days = var.db_log_retention_days
      start_time                     = "02:00"

      backup_retention_settings {
        retained_backups = var.db_backup_retention
      }
    }

    # pgvector needs no flag on Cloud SQL (nexusd's bootstrap runs CREATE EXTENSION vector as
    # the cloudsqlsuperuser-member role); pg_stat_statements feeds nexusd's statement metrics.
    database_flags {
      name  = "cloudsql.enable_pg_stat_statements"
      value = "on"
    }

    insights_config {
      query_insights_enabled = true
    }
  }

  depends_on = [google_service_networking_connection.sql]
}

resource "google_sql_database" "kb" {
  name     = var.db_name
  instance = google_sql_database_instance.nexusd.name
}

resource "random_password" "db" {
  length  = 32
  special = false
}

resource "google_sql_user" "nexusd" {
  name     = var.db_user
  instance = google_sql_database_instance.nexusd.name
  password = random_password.db.result
}

# --- the password, in Secret Manager only ------------------------------------------------------

resource "google_secret_manager_secret" "db_password" {
  secret_id = "${var.name}-db-password"

  replication {
    auto {}
  }

  depends_on = [google_project_service.required]
}

resource "google_secret_manager_secret_version" "db_password" {
  secret      = google_secret_manager_secret.db_password.id
  secret_data = random_password.db.result
}
