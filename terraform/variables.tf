# Inputs. The handful most deployments set are in terraform.tfvars.example; everything else has
# a default that fits one e2-micro VM. Every variable here is used (tests/deploy checks it).

# --- Project and naming -------------------------------------------------------------------------

variable "project_id" {
  description = "GCP project to deploy into."
  type        = string
}

variable "region" {
  description = "Region for the subnet, VPC connector, Cloud Run service, bucket and snapshots."
  type        = string
  default     = "us-central1"
}

variable "zone" {
  description = "Zone of the VM and its data disk; empty means \"<region>-a\"."
  type        = string
  default     = ""
}

variable "name" {
  description = "Prefix of every resource name (VM, network, service accounts, secrets, Cloud Run service)."
  type        = string
  default     = "nexusd"

  validation {
    # The connector name "<name>-connector" must stay within 25 characters.
    condition     = can(regex("^[a-z][a-z0-9-]{2,13}[a-z0-9]$", var.name))
    error_message = "name must be 4-15 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "labels" {
  description = "Labels added to every resource that takes labels."
  type        = map(string)
  default     = {}
}

# --- Network ------------------------------------------------------------------------------------

variable "subnet_cidr" {
  description = "Primary range of the VM's subnet."
  type        = string
  default     = "10.8.0.0/24"
}

variable "connector_cidr" {
  description = "A free /28 for the Serverless VPC Access connector; the only range the firewall admits to the API port."
  type        = string
  default     = "10.8.1.0/28"
}

variable "ssh_source_ranges" {
  description = "Who may reach SSH (port 22). Default: Identity-Aware Proxy TCP forwarding only (gcloud compute ssh --tunnel-through-iap)."
  type        = list(string)
  default     = ["35.235.240.0/20"]

  validation {
    condition     = alltrue([for r in var.ssh_source_ranges : !contains(["0.0.0.0/0", "::/0"], r)])
    error_message = "SSH must not be open to the whole internet; use IAP (35.235.240.0/20) or specific ranges."
  }
}

variable "metrics_source_ranges" {
  description = "Ranges of external Prometheus servers allowed to scrape :9187/metrics. Empty: no firewall rule (the Ops Agent scrapes on localhost)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for r in var.metrics_source_ranges : !contains(["0.0.0.0/0", "::/0"], r)])
    error_message = "The metrics port must not be open to the whole internet."
  }
}

variable "allow_postgres_from_connector" {
  description = "Open PostgreSQL (5432) to the VPC connector range, e.g. for Cloud Run jobs; pg_hba admits only the app role from there. Cloud Run's proxy does not need it."
  type        = bool
  default     = false
}

# --- VM -----------------------------------------------------------------------------------------

variable "machine_type" {
  description = "VM machine type. PostgreSQL and nexusd are tuned for 1 GB (e2-micro)."
  type        = string
  default     = "e2-micro"
}

variable "vm_image" {
  description = "Boot image. Google's Debian images have no cloud-init: a small startup script installs it on first boot (see cloud-init/gce-startup.sh)."
  type        = string
  default     = "debian-cloud/debian-12"
}

variable "boot_disk_size_gb" {
  description = "Boot disk size. Only the OS, packages and a swap file live there: the VM can be replaced at any time."
  type        = number
  default     = 10
}

variable "data_disk_size_gb" {
  description = "Persistent data disk holding the PostgreSQL cluster; it survives VM replacement."
  type        = number
  default     = 20

  validation {
    condition     = var.data_disk_size_gb >= 10 && var.data_disk_size_gb <= 500
    error_message = "data_disk_size_gb must be between 10 and 500."
  }
}

variable "data_disk_type" {
  description = "Data disk type: pd-balanced (SSD-backed; PostgreSQL is tuned for it) or pd-standard."
  type        = string
  default     = "pd-balanced"

  validation {
    condition     = contains(["pd-standard", "pd-balanced", "pd-ssd"], var.data_disk_type)
    error_message = "data_disk_type must be pd-standard, pd-balanced or pd-ssd."
  }
}

variable "snapshot_retention_days" {
  description = "Days to keep the data disk's daily snapshots (taken at 03:00 UTC, after the 02:00 logical backup)."
  type        = number
  default     = 14
}

variable "nexusd_binary_url" {
  description = "Where the VM downloads the nexusd binary: gs://bucket/object (read with the VM's service account) or https://."
  type        = string

  validation {
    condition     = can(regex("^(gs|https)://", var.nexusd_binary_url))
    error_message = "nexusd_binary_url must start with gs:// or https://."
  }
}

variable "nexusd_binary_sha256" {
  description = "SHA-256 of that binary (sha256sum); the VM refuses to install anything else."
  type        = string

  validation {
    condition     = can(regex("^[0-9a-f]{64}$", var.nexusd_binary_sha256))
    error_message = "nexusd_binary_sha256 must be 64 lowercase hex digits."
  }
}

variable "enable_ops_agent" {
  description = "Install the Google Cloud Ops Agent: journald logs, host metrics and a Prometheus receiver scraping nexusd's /metrics. The VM-side alerts need it. Costs ~100 MB of RAM."
  type        = bool
  default     = true
}

# --- Database -----------------------------------------------------------------------------------

variable "db_name" {
  description = "PostgreSQL database of the knowledge base."
  type        = string
  default     = "devnexus"

  validation {
    condition     = can(regex("^[a-z_][a-z0-9_]{0,62}$", var.db_name))
    error_message = "db_name must be a lowercase SQL identifier."
  }
}

variable "db_user" {
  description = "PostgreSQL role nexusd connects as (owner of the database)."
  type        = string
  default     = "devnexus"

  validation {
    condition     = can(regex("^[a-z_][a-z0-9_]{0,62}$", var.db_user))
    error_message = "db_user must be a lowercase SQL identifier."
  }
}

variable "db_password" {
  description = "Password of db_user, stored in Secret Manager and read by the VM at boot. Empty: add the secret's version yourself (gcloud secrets versions add), which keeps it out of the Terraform state."
  type        = string
  default     = ""
  sensitive   = true

  validation {
    condition     = var.db_password == "" || length(var.db_password) >= 16
    error_message = "db_password must be at least 16 characters (or empty, to add it with gcloud)."
  }
}

# --- Application secrets (optional; empty = no version created) ---------------------------------

variable "github_token" {
  description = "GitHub token for the documentation and compliance skills (secret GITHUB_TOKEN)."
  type        = string
  default     = ""
  sensitive   = true
}

variable "openai_api_key" {
  description = "OpenAI API key for embeddings (secret OPENAI_API_KEY); without it nexusd uses its builtin embedder."
  type        = string
  default     = ""
  sensitive   = true
}

variable "api_tokens" {
  description = "Comma-separated static bearer tokens accepted for protected skills (secret NEXUSD_API_TOKENS)."
  type        = string
  default     = ""
  sensitive   = true
}

# --- Application settings -----------------------------------------------------------------------

variable "knowledge_base_repo" {
  description = "KNOWLEDGE_BASE_REPO: shown in /health and the agent card."
  type        = string
  default     = ""
}

variable "require_auth_for_write" {
  description = "REQUIRE_AUTH_FOR_WRITE: protected skills need a bearer token or an allowed Google ID token."
  type        = bool
  default     = true
}

variable "allowed_service_accounts" {
  description = "ALLOWED_SERVICE_ACCOUNTS: e-mails whose Google ID tokens may call protected skills."
  type        = list(string)
  default     = []
}

variable "cors_origins" {
  description = "CORS_ORIGINS, applied by the Cloud Run proxy. Empty: nexusd's default list (the original's)."
  type        = list(string)
  default     = []
}

variable "allowed_origin_regex" {
  description = "ALLOWED_ORIGIN_REGEX: origins matching it entirely are allowed too (applied by the Cloud Run proxy)."
  type        = string
  default     = ""
}

variable "orchestrator_url" {
  description = "ORCHESTRATOR_URL shown in the agent card (optional)."
  type        = string
  default     = ""
}

variable "pattern_miner_url" {
  description = "PATTERN_MINER_URL shown in the agent card (optional)."
  type        = string
  default     = ""
}

variable "public_url" {
  description = "Public base URL of the API (a custom domain). Empty: the Cloud Run service URL. Used for HOST_OVERRIDE, the ID-token audience and the uptime check."
  type        = string
  default     = ""
}

variable "embedding_provider" {
  description = "NEXUSD_EMBEDDING_PROVIDER: openai, builtin or none. Empty: openai when an OpenAI key is set, else builtin."
  type        = string
  default     = ""

  validation {
    condition     = contains(["", "openai", "builtin", "none"], var.embedding_provider)
    error_message = "embedding_provider must be empty, openai, builtin or none."
  }
}

# --- Backups ------------------------------------------------------------------------------------

variable "backup_bucket_name" {
  description = "Name of the backup bucket. Empty: \"<project_id>-<name>-backups\"."
  type        = string
  default     = ""
}

variable "backup_prefix" {
  description = "Object prefix inside the bucket (NEXUSD_BACKUP_BUCKET=gs://bucket/prefix). Empty: the bucket root, like the original's dev-nexus-*.sql.gz objects."
  type        = string
  default     = ""
}

variable "backup_schedule" {
  description = "NEXUSD_BACKUP_SCHEDULE: cron expression, seconds first, UTC."
  type        = string
  default     = "0 0 2 * * *"
}

variable "backup_retention_days" {
  description = "NEXUSD_BACKUP_RETENTION_DAYS: nexusd prunes older backups (keeping backup_min_keep). The bucket's lifecycle rule deletes 15 days later, as a backstop only."
  type        = number
  default     = 30

  validation {
    condition     = var.backup_retention_days >= 7 && var.backup_retention_days <= 365
    error_message = "backup_retention_days must be between 7 and 365."
  }
}

variable "backup_min_keep" {
  description = "NEXUSD_BACKUP_MIN_KEEP: complete backups always kept, whatever their age."
  type        = number
  default     = 3
}

variable "backup_max_age_hours" {
  description = "Alert when the newest successful backup is older than this (a daily backup plus slack)."
  type        = number
  default     = 26
}

# --- Cloud Run proxy ----------------------------------------------------------------------------

variable "nexusd_image" {
  description = "Container image of nexusd (the Dockerfile), run by Cloud Run as `nexusd proxy`, e.g. us-central1-docker.pkg.dev/PROJECT/nexusd/nexusd:0.1.0."
  type        = string
}

variable "allow_unauthenticated" {
  description = "Let anyone invoke the Cloud Run service (allUsers). Protected skills still need credentials at nexusd. False: only invoker_members (with Google ID tokens)."
  type        = bool
  default     = false
}

variable "invoker_members" {
  description = "IAM members given roles/run.invoker on the service, e.g. serviceAccount:orchestrator@PROJECT.iam.gserviceaccount.com."
  type        = list(string)
  default     = []
}

variable "cloud_run_ingress" {
  description = "Cloud Run ingress. INGRESS_TRAFFIC_ALL lets authenticated callers reach a private service from anywhere; INTERNAL_* only from the VPC / a load balancer."
  type        = string
  default     = "INGRESS_TRAFFIC_ALL"

  validation {
    condition     = contains(["INGRESS_TRAFFIC_ALL", "INGRESS_TRAFFIC_INTERNAL_ONLY", "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"], var.cloud_run_ingress)
    error_message = "cloud_run_ingress must be INGRESS_TRAFFIC_ALL, INGRESS_TRAFFIC_INTERNAL_ONLY or INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER."
  }
}

variable "cloud_run_cpu" {
  description = "CPU limit of a proxy instance."
  type        = string
  default     = "1"
}

variable "cloud_run_memory" {
  description = "Memory limit of a proxy instance."
  type        = string
  default     = "256Mi"

  validation {
    condition     = can(regex("^[0-9]+(Mi|Gi)$", var.cloud_run_memory))
    error_message = "cloud_run_memory must look like 256Mi or 1Gi."
  }
}

variable "cloud_run_min_instances" {
  description = "Minimum proxy instances (0 scales to zero)."
  type        = number
  default     = 0
}

variable "cloud_run_max_instances" {
  description = "Maximum proxy instances. The VM behind them is small: a handful is plenty."
  type        = number
  default     = 3
}

variable "cloud_run_timeout_seconds" {
  description = "Request timeout of the Cloud Run service."
  type        = number
  default     = 60
}

variable "cpu_throttled_when_idle" {
  description = "true: CPU is allocated only while a request is handled (cheapest; Cloud Run's cpu_idle = true). false: CPU always allocated."
  type        = bool
  default     = true
}

# --- Monitoring ---------------------------------------------------------------------------------

variable "enable_monitoring" {
  description = "Create the uptime check and the alert policies."
  type        = bool
  default     = true
}

variable "alert_notification_channels" {
  description = "Notification channel ids (projects/PROJECT/notificationChannels/ID) the alerts go to."
  type        = list(string)
  default     = []
}

variable "alert_disk_percent" {
  description = "Alert when the data disk's filesystem is fuller than this (percent)."
  type        = number
  default     = 80
}

variable "alert_memory_percent" {
  description = "Alert when the VM's used memory stays above this (percent) for 5 minutes."
  type        = number
  default     = 90
}
