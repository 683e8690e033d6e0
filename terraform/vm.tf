# The VM: Debian 12, no external IP, provisioned by cloud-init (cloud-init/), its PostgreSQL
# cluster on a separate persistent disk. The boot disk holds nothing that cannot be rebuilt, so
# any change to the provisioning replaces the VM; the data disk is re-attached and adopted.

resource "google_service_account" "vm" {
  account_id   = "${var.name}-vm"
  display_name = "nexusd VM"
  description  = "nexusd on the database VM: backups in the backup bucket, its secrets, logs and metrics."

  depends_on = [google_project_service.required]
}

# The Ops Agent ships journald logs and metrics (project-level roles: there is no narrower scope).
resource "google_project_iam_member" "vm_log_writer" {
  count = var.enable_ops_agent ? 1 : 0

  project = var.project_id
  role    = "roles/logging.logWriter"
  member  = "serviceAccount:${google_service_account.vm.email}"
}

resource "google_project_iam_member" "vm_metric_writer" {
  count = var.enable_ops_agent ? 1 : 0

  project = var.project_id
  role    = "roles/monitoring.metricWriter"
  member  = "serviceAccount:${google_service_account.vm.email}"
}

# --- Data disk and its snapshots ----------------------------------------------------------------

resource "google_compute_disk" "data" {
  name = "${var.name}-data"
  zone = local.zone
  type = var.data_disk_type
  size = var.data_disk_size_gb

  # The database lives here. Remove this line deliberately before destroying it.
  lifecycle {
    prevent_destroy = true
  }

  depends_on = [google_project_service.required]
}

resource "google_compute_resource_policy" "data_snapshots" {
  name        = "${var.name}-data-daily"
  region      = var.region
  description = "Daily snapshot of the PostgreSQL data disk, after nexusd's 02:00 UTC logical backup."

  snapshot_schedule_policy {
    schedule {
      daily_schedule {
        days_in_cycle = 1
        start_time    = "03:00"
      }
    }

    retention_policy {
      max_retention_days    = var.snapshot_retention_days
      on_source_disk_delete = "KEEP_AUTO_SNAPSHOTS"
    }

    snapshot_properties {
      storage_locations = [var.region]
      labels            = local.labels
    }
  }
}

resource "google_compute_disk_resource_policy_attachment" "data_snapshots" {
  name = google_compute_resource_policy.data_snapshots.name
  disk = google_compute_disk.data.name
  zone = local.zone
}

# --- cloud-init -----------------------------------------------------------------------------------

locals {
  # /etc/nexusd/provision.env: what nexusd-provision needs. Secret *names* only.
  provision_settings = {
    PG_SOURCE                = "pgdg"
    DATA_DEVICE              = "/dev/disk/by-id/google-${local.data_device_name}"
    DATA_MOUNT               = local.data_mount
    PG_LISTEN_ADDRESSES      = "localhost,${google_compute_address.nexusd.address}"
    PG_APP_CIDR              = var.connector_cidr
    DB_NAME                  = var.db_name
    DB_USER                  = var.db_user
    GCP_PROJECT              = var.project_id
    SECRET_POSTGRES_PASSWORD = google_secret_manager_secret.app["POSTGRES_PASSWORD"].secret_id
    SECRET_GITHUB_TOKEN      = google_secret_manager_secret.app["GITHUB_TOKEN"].secret_id
    SECRET_OPENAI_API_KEY    = google_secret_manager_secret.app["OPENAI_API_KEY"].secret_id
    SECRET_NEXUSD_API_TOKENS = google_secret_manager_secret.app["NEXUSD_API_TOKENS"].secret_id
    NEXUSD_BINARY_URL        = var.nexusd_binary_url
    NEXUSD_BINARY_SHA256     = var.nexusd_binary_sha256
    NEXUSD_HEALTH_URL        = "http://127.0.0.1:${local.api_port}/health"
    OPS_AGENT                = tostring(var.enable_ops_agent)
  }

  # /etc/nexusd/settings.env: nexusd's non-secret settings (empty ones left out: nexusd's
  # defaults apply). CORS is not here: the Cloud Run proxy applies it at the edge.
  nexusd_settings = { for key, value in {
    NEXUSD_API_ADDR              = "0.0.0.0:${local.api_port}"
    NEXUSD_METRICS_ADDR          = "0.0.0.0:${local.metrics_port}"
    NEXUSD_STATE_DIR             = "/var/lib/nexusd"
    POSTGRES_MIN_CONNECTIONS     = "1"
    POSTGRES_MAX_CONNECTIONS     = "8"
    HOST_OVERRIDE                = local.public_url
    NEXUSD_AUTH_AUDIENCE         = local.public_url
    REQUIRE_AUTH_FOR_WRITE       = tostring(var.require_auth_for_write)
    ALLOWED_SERVICE_ACCOUNTS     = join(",", var.allowed_service_accounts)
    KNOWLEDGE_BASE_REPO          = var.knowledge_base_repo
    ORCHESTRATOR_URL             = var.orchestrator_url
    PATTERN_MINER_URL            = var.pattern_miner_url
    NEXUSD_EMBEDDING_PROVIDER    = var.embedding_provider
    NEXUSD_BACKUP_BUCKET         = local.backup_bucket_url
    NEXUSD_BACKUP_SCHEDULE       = var.backup_schedule
    NEXUSD_BACKUP_RETENTION_DAYS = tostring(var.backup_retention_days)
    NEXUSD_BACKUP_MIN_KEEP       = tostring(var.backup_min_keep)
  } : key => value if value != "" }

  user_data = templatefile("${path.module}/../cloud-init/user-data.yaml.tftpl", {
    provision_script   = file("${path.module}/../cloud-init/nexusd-provision.sh")
    nexusd_unit        = file("${path.module}/../systemd/nexusd.service")
    ops_agent_config   = var.enable_ops_agent ? file("${path.module}/../cloud-init/ops-agent-config.yaml") : ""
    provision_settings = local.provision_settings
    nexusd_settings    = local.nexusd_settings
  })
}

# Changes with the rendered user-data; the VM is replaced when it does (cloud-init runs once per
# instance, so editing the metadata in place would change nothing on the VM).
resource "terraform_data" "vm_provisioning" {
  input = sha256(local.user_data)
}

# --- The VM -------------------------------------------------------------------------------------

resource "google_compute_instance" "nexusd" {
  name         = "${var.name}-vm"
  zone         = local.zone
  machine_type = var.machine_type
  tags         = [local.vm_tag]

  boot_disk {
    auto_delete = true

    initialize_params {
      image = var.vm_image
      size  = var.boot_disk_size_gb
      type  = "pd-balanced"
    }
  }

  attached_disk {
    source      = google_compute_disk.data.id
    device_name = local.data_device_name
    mode        = "READ_WRITE"
  }

  # No access_config block: no external IP. Outbound traffic goes through Cloud NAT.
  network_interface {
    subnetwork = google_compute_subnetwork.nexusd.id
    network_ip = google_compute_address.nexusd.address
  }

  service_account {
    email = google_service_account.vm.email
    # Access is limited by the service account's IAM roles, as Google recommends.
    scopes = ["cloud-platform"]
  }

  # No secret values: user-data carries secret names; the VM reads the values at boot.
  metadata = {
    user-data              = local.user_data
    startup-script         = file("${path.module}/../cloud-init/gce-startup.sh")
    enable-oslogin         = "TRUE"
    block-project-ssh-keys = "TRUE"
  }

  shielded_instance_config {
    enable_secure_boot          = true
    enable_vtpm                 = true
    enable_integrity_monitoring = true
  }

  scheduling {
    automatic_restart   = true
    on_host_maintenance = "MIGRATE"
  }

  allow_stopping_for_update = true

  lifecycle {
    replace_triggered_by = [terraform_data.vm_provisioning]

    precondition {
      # settings.env and provision.env hold single-quoted values (read by both bash and systemd).
      condition = alltrue([
        for value in concat(values(local.nexusd_settings), values(local.provision_settings)) :
        !strcontains(value, "'") && !strcontains(value, "\n")
      ])
      error_message = "Settings passed to the VM must not contain single quotes or newlines."
    }
  }

  # Everything the first boot needs: outbound internet, the secrets it reads and its bucket roles.
  depends_on = [
    google_compute_router_nat.nexusd,
    google_secret_manager_secret_iam_member.vm_access,
    google_secret_manager_secret_version.app,
    google_storage_bucket_iam_member.vm_backups,
    google_storage_bucket_iam_member.vm_binary,
  ]
}
