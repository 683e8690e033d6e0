# Terraform and provider versions.
#
# State: keep it in a GCS bucket (it holds the secret values given as variables), e.g.
#   terraform init -backend-config="bucket=my-tf-state" -backend-config="prefix=nexusd"
# after uncommenting the backend block below.

terraform {
  required_version = ">= 1.5.0"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 6.0"
    }
  }

  # backend "gcs" {}
}

provider "google" {
  project = var.project_id
  region  = var.region

  default_labels = local.labels
}
