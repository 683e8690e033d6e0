# Secret Manager: one secret per value nexusd needs, named "<name>-<what>" everywhere (terraform,
# the VM's provision.env, the outputs). The VM reads the latest version at boot; nothing else
# gets access: the Cloud Run proxy passes requests through and needs none of them.
#
# A value left empty in the variables gets no version from terraform (and stays out of the
# state): add it with `printf '%s' "$VALUE" | gcloud secrets versions add SECRET --data-file=-`,
# then replace the VM or run `sudo nexusd-provision` on it.

locals {
  # Environment variable on the VM => secret id.
  secret_ids = {
    POSTGRES_PASSWORD = "${var.name}-postgres-password"
    GITHUB_TOKEN      = "${var.name}-github-token"
    OPENAI_API_KEY    = "${var.name}-openai-api-key"
    NEXUSD_API_TOKENS = "${var.name}-api-tokens"
  }

  secret_values = {
    POSTGRES_PASSWORD = var.db_password
    GITHUB_TOKEN      = var.github_token
    OPENAI_API_KEY    = var.openai_api_key
    NEXUSD_API_TOKENS = var.api_tokens
  }

  # Which secrets get a version from terraform. Whether a value is set is not itself secret.
  secrets_with_values = toset([
    for key in keys(local.secret_ids) : key if nonsensitive(local.secret_values[key] != "")
  ])
}

resource "google_secret_manager_secret" "app" {
  for_each = local.secret_ids

  secret_id = each.value

  replication {
    auto {}
  }

  depends_on = [google_project_service.required]
}

resource "google_secret_manager_secret_version" "app" {
  for_each = local.secrets_with_values

  secret      = google_secret_manager_secret.app[each.key].id
  secret_data = local.secret_values[each.key]
}

# Per secret, not project-wide.
resource "google_secret_manager_secret_iam_member" "vm_access" {
  for_each = local.secret_ids

  secret_id = google_secret_manager_secret.app[each.key].id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.vm.email}"
}
