# Network: a private subnet with no public ingress. The VM has no external IP; it reaches apt
# repositories, GitHub and OpenAI through Cloud NAT, Google APIs (Cloud Storage, Secret Manager)
# through Private Google Access. Cloud Run reaches it through the VPC connector.

resource "google_compute_network" "nexusd" {
  name                    = "${var.name}-network"
  auto_create_subnetworks = false

  depends_on = [google_project_service.required]
}

resource "google_compute_subnetwork" "nexusd" {
  name                     = "${var.name}-subnet"
  region                   = var.region
  network                  = google_compute_network.nexusd.id
  ip_cidr_range            = var.subnet_cidr
  private_ip_google_access = true
}

# A fixed address, so the Cloud Run proxy's upstream and PostgreSQL's listen_addresses survive
# VM replacement.
resource "google_compute_address" "nexusd" {
  name         = "${var.name}-internal-ip"
  region       = var.region
  subnetwork   = google_compute_subnetwork.nexusd.id
  address_type = "INTERNAL"
}

resource "google_compute_router" "nexusd" {
  name    = "${var.name}-router"
  region  = var.region
  network = google_compute_network.nexusd.id
}

resource "google_compute_router_nat" "nexusd" {
  name                               = "${var.name}-nat"
  region                             = var.region
  router                             = google_compute_router.nexusd.name
  nat_ip_allocate_option             = "AUTO_ONLY"
  source_subnetwork_ip_ranges_to_nat = "LIST_OF_SUBNETWORKS"

  subnetwork {
    name                    = google_compute_subnetwork.nexusd.id
    source_ip_ranges_to_nat = ["ALL_IP_RANGES"]
  }

  log_config {
    enable = true
    filter = "ERRORS_ONLY"
  }
}

resource "google_vpc_access_connector" "nexusd" {
  name          = "${var.name}-connector"
  region        = var.region
  network       = google_compute_network.nexusd.name
  ip_cidr_range = var.connector_cidr
  machine_type  = "e2-micro"
  min_instances = 2
  max_instances = 3

  depends_on = [google_project_service.required]
}

# --- Firewall: ingress only from named ranges; never 0.0.0.0/0 (tests/deploy checks it) ---------

resource "google_compute_firewall" "api_from_connector" {
  name          = "${var.name}-allow-api-from-connector"
  network       = google_compute_network.nexusd.id
  description   = "The skills API, from the Cloud Run proxy (VPC connector range) only."
  direction     = "INGRESS"
  source_ranges = [var.connector_cidr]
  target_tags   = [local.vm_tag]

  allow {
    protocol = "tcp"
    ports    = [tostring(local.api_port)]
  }
}

resource "google_compute_firewall" "metrics_from_monitoring" {
  count = length(var.metrics_source_ranges) > 0 ? 1 : 0

  name          = "${var.name}-allow-metrics"
  network       = google_compute_network.nexusd.id
  description   = "nexusd's /metrics, for external Prometheus servers (the Ops Agent scrapes on localhost)."
  direction     = "INGRESS"
  source_ranges = var.metrics_source_ranges
  target_tags   = [local.vm_tag]

  allow {
    protocol = "tcp"
    ports    = [tostring(local.metrics_port)]
  }
}

resource "google_compute_firewall" "ssh_from_iap" {
  name          = "${var.name}-allow-ssh"
  network       = google_compute_network.nexusd.id
  description   = "SSH through Identity-Aware Proxy (gcloud compute ssh --tunnel-through-iap) by default."
  direction     = "INGRESS"
  source_ranges = var.ssh_source_ranges
  target_tags   = [local.vm_tag]

  allow {
    protocol = "tcp"
    ports    = ["22"]
  }
}

resource "google_compute_firewall" "postgres_from_connector" {
  count = var.allow_postgres_from_connector ? 1 : 0

  name          = "${var.name}-allow-postgres-from-connector"
  network       = google_compute_network.nexusd.id
  description   = "PostgreSQL from serverless workloads (VPC connector range); pg_hba admits only the app role."
  direction     = "INGRESS"
  source_ranges = [var.connector_cidr]
  target_tags   = [local.vm_tag]

  allow {
    protocol = "tcp"
    ports    = ["5432"]
  }
}
