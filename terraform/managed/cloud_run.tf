# nexusd on Cloud Run: `nexusd serve` as N replicas, the API served directly (no proxy hop),
# the database over direct VPC egress. Its service account holds one role: reading the database
# password's secret.

resource "google_service_account" "nexusd" {
  account_id   = "${var.name}-serve"
  display_name = "nexusd serve (managed database)"
  description  = "Runs `nexusd serve`; reads the database password's secret and nothing else."

  depends_on = [google_project_service.required]
}

resource "google_secret_manager_secret_iam_member" "db_password" {
  secret_id = google_secret_manager_secret.db_password.id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.nexusd.email}"
}

locals {
  # Without a password the URL takes POSTGRES_PASSWORD (from the secret); require = encrypted.
  database_url = "postgresql://${var.db_user}@${google_sql_database_instance.nexusd.private_ip_address}:5432/${var.db_name}?sslmode=require"
  serve_env = {
    DATABASE_URL             = local.database_url
    POSTGRES_MAX_CONNECTIONS = tostring(var.pool_max_connections)
    NEXUSD_API_ADDR          = "0.0.0.0:8080"
    # Cloud Run serves one port; PostgreSQL's metrics go to Cloud SQL Insights instead.
    NEXUSD_METRICS_ADDR = "off"
    # The platform takes backups and point-in-time recovery, and watches the machines.
    NEXUSD_BACKUPS      = "off"
    NEXUSD_HOST_METRICS = "off"
    NEXUSD_STATE_DIR    = "/tmp/nexusd"
    NEXUSD_LOG_FORMAT   = "json"
  }
}

resource "google_cloud_run_v2_service" "nexusd" {
  name     = var.name
  location = var.region
  ingress  = "INGRESS_TRAFFIC_ALL"

  template {
    service_account = google_service_account.nexusd.email

    scaling {
      min_instance_count = var.min_instances
      max_instance_count = var.max_instances
    }

    vpc_access {
      network_interfaces {
        network    = google_compute_network.nexusd.id
        subnetwork = google_compute_subnetwork.nexusd.id
      }
      egress = "PRIVATE_RANGES_ONLY"
    }

    containers {
      image = var.nexusd_image
      args  = ["serve"]

      ports {
        container_port = 8080
      }

      resources {
        limits = {
          cpu    = "1"
          memory = "1Gi"
        }
        # CPU stays allocated between requests: the leader's scheduled jobs and the embedding
        # backfill run outside any request.
        cpu_idle = false
      }

      dynamic "env" {
        for_each = local.serve_env
        content {
          name  = env.key
          value = env.value
        }
      }

      env {
        name = "POSTGRES_PASSWORD"
        value_source {
          secret_key_ref {
            secret  = google_secret_manager_secret.db_password.secret_id
            version = "latest"
          }
        }
      }

      startup_probe {
        http_get {
          path = "/health"
        }
        period_seconds    = 5
        failure_threshold = 24
      }
    }
  }

  depends_on = [google_secret_manager_secret_iam_member.db_password, google_secret_manager_secret_version.db_password]
}

resource "google_cloud_run_v2_service_iam_member" "public" {
  count    = var.allow_unauthenticated ? 1 : 0
  name     = google_cloud_run_v2_service.nexusd.name
  location = var.region
  role     = "roles/run.invoker"
  member   = "allUsers"
}
