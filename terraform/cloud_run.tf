# The Cloud Run service: `nexusd proxy` (the Dockerfile's image), forwarding the API to the VM's
# nexusd through the VPC connector. It applies CORS at the edge and passes the caller's
# Authorization header through; nexusd on the VM checks tokens.

resource "google_service_account" "run" {
  account_id   = "${var.name}-run"
  display_name = "nexusd Cloud Run proxy"
  description  = "Runs `nexusd proxy`; needs no roles: it only forwards requests to the VM."

  depends_on = [google_project_service.required]
}

locals {
  proxy_env = { for key, value in {
    NEXUSD_PROXY_UPSTREAM = "http://${google_compute_address.nexusd.address}:${local.api_port}"
    NEXUSD_API_ADDR       = "0.0.0.0:8080"
    CORS_ORIGINS          = join(",", var.cors_origins)
    ALLOWED_ORIGIN_REGEX  = var.allowed_origin_regex
    # One JSON object per line: Cloud Logging parses severity and fields.
    NEXUSD_LOG_FORMAT = "json"
    # Trace names in those lines (projects/<it>/traces/<id>): Cloud Logging links them to Cloud Trace.
    GOOGLE_CLOUD_PROJECT = var.project_id
  } : key => value if value != "" }
}

resource "google_cloud_run_v2_service" "nexusd" {
  name     = var.name
  location = var.region
  # INGRESS_TRAFFIC_ALL by default: a private service (allow_unauthenticated = false) is still
  # protected by IAM, and callers outside the VPC (other agents, the uptime check) can reach it.
  ingress = var.cloud_run_ingress

  template {
    service_account = google_service_account.run.email
    timeout         = "${var.cloud_run_timeout_seconds}s"

    scaling {
      min_instance_count = var.cloud_run_min_instances
      max_instance_count = var.cloud_run_max_instances
    }

    vpc_access {
      connector = google_vpc_access_connector.nexusd.id
      # Only the private ranges (the VM) go through the connector.
      egress = "PRIVATE_RANGES_ONLY"
    }

    containers {
      image = var.nexusd_image
      args  = ["proxy"]

      ports {
        container_port = 8080
      }

      resources {
        limits = {
          cpu    = var.cloud_run_cpu
          memory = var.cloud_run_memory
        }
        # cpu_idle = true means CPU is throttled between requests (the variable says so).
        cpu_idle          = var.cpu_throttled_when_idle
        startup_cpu_boost = true
      }

      dynamic "env" {
        for_each = local.proxy_env
        content {
          name  = env.key
          value = env.value
        }
      }
    }
  }

  depends_on = [google_project_service.required]
}

resource "google_cloud_run_v2_service_iam_member" "public" {
  count = var.allow_unauthenticated ? 1 : 0

  name     = google_cloud_run_v2_service.nexusd.name
  location = google_cloud_run_v2_service.nexusd.location
  role     = "roles/run.invoker"
  member   = "allUsers"
}

resource "google_cloud_run_v2_service_iam_member" "invokers" {
  for_each = toset(var.invoker_members)

  name     = google_cloud_run_v2_service.nexusd.name
  location = google_cloud_run_v2_service.nexusd.location
  role     = "roles/run.invoker"
  member   = each.value
}
