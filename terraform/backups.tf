# The backup bucket. nexusd writes dev-nexus-YYYYmmdd_HHMMSS.sql.gz + .manifest.json objects and
# prunes them itself (NEXUSD_BACKUP_RETENTION_DAYS, never below NEXUSD_BACKUP_MIN_KEEP complete
# backups); the lifecycle rules are only a backstop, and versioning keeps a deleted or
# overwritten backup recoverable for a while, even from a compromised VM.

locals {
  # Keep noncurrent (deleted or replaced) versions this long.
  backup_noncurrent_days = 14
}

resource "google_storage_bucket" "backups" {
  name          = local.backup_bucket_name
  location      = var.region
  storage_class = "STANDARD"
  force_destroy = false

  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"

  versioning {
    enabled = true
  }

  # Backstop for objects nexusd failed to prune: well beyond its retention, so it never races
  # nexusd's own "keep the newest complete backups" rule while backups are working (the 26 h
  # backup alert fires long before).
  lifecycle_rule {
    condition {
      age        = var.backup_retention_days + 15
      with_state = "LIVE"
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = local.backup_noncurrent_days
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.required]
}

# nexusd lists, writes, reads (restore, verification) and deletes (retention) backups itself:
# objectAdmin on this bucket only, not project-wide.
resource "google_storage_bucket_iam_member" "vm_backups" {
  bucket = google_storage_bucket.backups.name
  role   = "roles/storage.objectAdmin"
  member = "serviceAccount:${google_service_account.vm.email}"
}

# The VM downloads the nexusd binary at boot when it is a gs:// object.
resource "google_storage_bucket_iam_member" "vm_binary" {
  count = startswith(var.nexusd_binary_url, "gs://") ? 1 : 0

  bucket = split("/", trimprefix(var.nexusd_binary_url, "gs://"))[0]
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${google_service_account.vm.email}"
}
