# nexusd on GCP: one e2-micro VM (Debian 12, PostgreSQL 15 + pgvector, nexusd under systemd) on a
# private subnet, reached only by a Cloud Run service running `nexusd proxy` through a Serverless
# VPC Access connector; nightly backups to a versioned bucket; alerts in Cloud Monitoring.
#
#   network.tf     VPC, subnet, Cloud NAT, connector, static internal IP, firewall
#   vm.tf          the VM, its service account, data disk and snapshot schedule, cloud-init
#   backups.tf     the backup bucket and the VM's access to it
#   secrets.tf     Secret Manager secrets, read by the VM at boot
#   cloud_run.tf   the public (or IAM-protected) proxy
#   monitoring.tf  uptime check and alert policies

locals {
  zone   = var.zone != "" ? var.zone : "${var.region}-a"
  labels = merge({ app = "nexusd", managed-by = "terraform" }, var.labels)

  # The firewall's target tag for the VM.
  vm_tag       = var.name
  api_port     = 8080
  metrics_port = 9187

  # The data disk appears on the VM as /dev/disk/by-id/google-<device name>.
  data_device_name = "nexusd-data"
  data_mount       = "/mnt/pgdata"

  backup_bucket_name = var.backup_bucket_name != "" ? var.backup_bucket_name : "${var.project_id}-${var.name}-backups"
  backup_bucket_url  = trimsuffix("gs://${local.backup_bucket_name}/${trim(var.backup_prefix, "/")}", "/")

  # What users and ID tokens see: a custom domain, or the Cloud Run URL.
  public_url = var.public_url != "" ? trimsuffix(var.public_url, "/") : google_cloud_run_v2_service.nexusd.uri
}

data "google_project" "this" {
  project_id = var.project_id
}

resource "google_project_service" "required" {
  for_each = toset([
    "cloudresourcemanager.googleapis.com",
    "compute.googleapis.com",
    "iam.googleapis.com",
    "logging.googleapis.com",
    "monitoring.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
    "storage.googleapis.com",
    "vpcaccess.googleapis.com",
  ])

  service = each.key
  # Other things in the project may use these APIs too.
  disable_on_destroy = false
}
