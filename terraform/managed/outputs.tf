output "service_url" {
  description = "The nexusd API."
  value       = google_cloud_run_v2_service.nexusd.uri
}

output "database_private_ip" {
  description = "Cloud SQL's private address (DATABASE_URL's host)."
  value       = google_sql_database_instance.nexusd.private_ip_address
}

output "database_password_secret" {
  description = "Secret Manager secret holding the database password."
  value       = google_secret_manager_secret.db_password.secret_id
}
