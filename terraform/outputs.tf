output "service_url" {
  description = "URL of the Cloud Run proxy (the public API)."
  value       = google_cloud_run_v2_service.nexusd.uri
}

output "public_url" {
  description = "Base URL users and agents call (public_url, or the Cloud Run URL)."
  value       = local.public_url
}

output "health_check_url" {
  description = "GET it for an end-to-end check (Cloud Run → VM → PostgreSQL)."
  value       = "${local.public_url}/health"
}

output "agent_card_url" {
  description = "The A2A agent card."
  value       = "${local.public_url}/.well-known/agent.json"
}

output "vm_name" {
  description = "The database VM."
  value       = google_compute_instance.nexusd.name
}

output "vm_zone" {
  description = "Zone of the VM and its data disk."
  value       = local.zone
}

output "vm_internal_ip" {
  description = "Static internal IP of the VM (the proxy's upstream)."
  value       = google_compute_address.nexusd.address
}

output "ssh_command" {
  description = "SSH to the VM through Identity-Aware Proxy (it has no external IP)."
  value       = "gcloud compute ssh ${google_compute_instance.nexusd.name} --zone ${local.zone} --project ${var.project_id} --tunnel-through-iap"
}

output "data_disk" {
  description = "Persistent disk holding the PostgreSQL cluster (snapshotted daily)."
  value       = google_compute_disk.data.name
}

output "backup_bucket" {
  description = "Where nexusd writes its backups (NEXUSD_BACKUP_BUCKET)."
  value       = local.backup_bucket_url
}

output "vpc_connector" {
  description = "Serverless VPC Access connector used by the Cloud Run service."
  value       = google_vpc_access_connector.nexusd.id
}

output "vm_service_account" {
  description = "Service account of the VM (bucket objectAdmin, secret accessor on its secrets)."
  value       = google_service_account.vm.email
}

output "cloud_run_service_account" {
  description = "Service account of the Cloud Run proxy (no roles)."
  value       = google_service_account.run.email
}

output "secret_ids" {
  description = "Secret Manager secret id for each value the VM reads (add versions with gcloud secrets versions add)."
  value       = { for key, secret in google_secret_manager_secret.app : key => secret.secret_id }
}

output "database_url" {
  description = "How nexusd on the VM connects (password redacted; it is in the postgres-password secret)."
  value       = "postgresql://${var.db_user}:***@127.0.0.1:5432/${var.db_name}"
}
