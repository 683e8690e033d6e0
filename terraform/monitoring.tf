# Cloud Monitoring: an uptime check on the public /health (proxy → VM → PostgreSQL, end to end)
# and alert policies. The VM-side alerts read nexusd's /metrics, which the Ops Agent's Prometheus
# receiver writes as prometheus.googleapis.com/<metric>/<kind> (queried with PromQL), and the
# agent's own host metrics; they exist only with enable_ops_agent.

locals {
  monitor_vm = var.enable_monitoring && var.enable_ops_agent
  # Cloud Monitoring's service agent: signs the uptime check's ID token for a private service.
  monitoring_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-monitoring-notification.iam.gserviceaccount.com"
}

resource "google_monitoring_uptime_check_config" "health" {
  count = var.enable_monitoring ? 1 : 0

  display_name = "${var.name} /health"
  period       = "60s"
  timeout      = "10s"

  http_check {
    path           = "/health"
    port           = 443
    use_ssl        = true
    validate_ssl   = true
    request_method = "GET"

    # /health answers 503 while the database is down: that is an outage too.
    accepted_response_status_codes {
      status_class = "STATUS_CLASS_2XX"
    }

    dynamic "service_agent_authentication" {
      for_each = var.allow_unauthenticated ? [] : [1]
      content {
        type = "OIDC_TOKEN"
      }
    }
  }

  monitored_resource {
    type = "uptime_url"
    labels = {
      project_id = var.project_id
      host       = split("/", trimprefix(local.public_url, "https://"))[0]
    }
  }
}

# A private service admits the uptime check's ID token.
resource "google_cloud_run_v2_service_iam_member" "uptime_check" {
  count = var.enable_monitoring && !var.allow_unauthenticated ? 1 : 0

  name     = google_cloud_run_v2_service.nexusd.name
  location = google_cloud_run_v2_service.nexusd.location
  role     = "roles/run.invoker"
  member   = local.monitoring_agent
}

resource "google_monitoring_alert_policy" "nexusd_down" {
  count = var.enable_monitoring ? 1 : 0

  display_name          = "${var.name}: nexusd down"
  combiner              = "OR"
  notification_channels = var.alert_notification_channels

  conditions {
    display_name = "/health failing from the uptime checkers"
    condition_threshold {
      filter          = "metric.type = \"monitoring.googleapis.com/uptime_check/check_passed\" AND resource.type = \"uptime_url\" AND metric.label.check_id = \"${google_monitoring_uptime_check_config.health[0].uptime_check_id}\""
      comparison      = "COMPARISON_GT"
      threshold_value = 1
      duration        = "120s"
      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_NEXT_OLDER"
        cross_series_reducer = "REDUCE_COUNT_FALSE"
        group_by_fields      = ["resource.label.host"]
      }
      trigger {
        count = 1
      }
    }
  }

  dynamic "conditions" {
    for_each = var.enable_ops_agent ? [1] : []
    content {
      display_name = "no metrics from nexusd on the VM"
      condition_prometheus_query_language {
        query    = "absent(nexusd_build_info)"
        duration = "600s"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "nexusd does not answer /health through Cloud Run, or the VM stopped sending its metrics. Check `sudo systemctl status nexusd postgresql@15-main` and `journalctl -u nexusd` on ${google_compute_instance.nexusd.name} (gcloud compute ssh --tunnel-through-iap)."
  }
}

resource "google_monitoring_alert_policy" "postgres_down" {
  count = local.monitor_vm ? 1 : 0

  display_name          = "${var.name}: PostgreSQL down"
  combiner              = "OR"
  notification_channels = var.alert_notification_channels

  conditions {
    display_name = "pg_up == 0"
    condition_prometheus_query_language {
      query    = "max(pg_up) == 0"
      duration = "300s"
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "nexusd cannot query PostgreSQL. Check `sudo systemctl status postgresql@15-main`, `/var/log/postgresql/` and that the data disk is mounted at ${local.data_mount}."
  }
}

resource "google_monitoring_alert_policy" "backup_stale" {
  count = local.monitor_vm ? 1 : 0

  display_name          = "${var.name}: no successful backup in ${var.backup_max_age_hours} h"
  combiner              = "OR"
  notification_channels = var.alert_notification_channels

  conditions {
    display_name = "newest successful backup older than ${var.backup_max_age_hours} h"
    condition_prometheus_query_language {
      query    = "time() - max(nexusd_backup_last_success_timestamp_seconds) > ${var.backup_max_age_hours * 3600}"
      duration = "600s"
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "The nightly backup to ${local.backup_bucket_url} has not succeeded for ${var.backup_max_age_hours} hours. On the VM, `journalctl -u nexusd` shows why; `sudo systemd-run --pty --wait -p User=nexusd -p EnvironmentFile=/etc/nexusd/nexusd.env /usr/local/bin/nexusd backup run` takes one now."
  }
}

resource "google_monitoring_alert_policy" "data_disk_full" {
  count = local.monitor_vm ? 1 : 0

  display_name          = "${var.name}: data disk over ${var.alert_disk_percent} %"
  combiner              = "OR"
  notification_channels = var.alert_notification_channels

  # The data disk's mount point (PostgreSQL's data directory), not the boot disk.
  conditions {
    display_name = "${local.data_mount} over ${var.alert_disk_percent} % full"
    condition_prometheus_query_language {
      query    = "max(100 * (1 - node_filesystem_avail_bytes{mountpoint=\"${local.data_mount}\"} / node_filesystem_size_bytes{mountpoint=\"${local.data_mount}\"})) > ${var.alert_disk_percent}"
      duration = "300s"
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "PostgreSQL's data disk (${google_compute_disk.data.name}, mounted at ${local.data_mount}) is filling up. Raise data_disk_size_gb and apply, then run `sudo nexusd-provision configure` on the VM: it grows the filesystem online."
  }
}

resource "google_monitoring_alert_policy" "memory_pressure" {
  count = local.monitor_vm ? 1 : 0

  display_name          = "${var.name}: VM memory over ${var.alert_memory_percent} %"
  combiner              = "OR"
  notification_channels = var.alert_notification_channels

  conditions {
    display_name = "used memory over ${var.alert_memory_percent} % for 5 minutes"
    condition_threshold {
      filter          = "metric.type = \"agent.googleapis.com/memory/percent_used\" AND metric.label.state = \"used\" AND resource.type = \"gce_instance\" AND resource.label.instance_id = \"${google_compute_instance.nexusd.instance_id}\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.alert_memory_percent
      duration        = "300s"
      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_MEAN"
      }
      trigger {
        count = 1
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "The 1 GB VM is short of memory (PostgreSQL shared_buffers 128 MB, nexusd MemoryMax 256 MB, the Ops Agent). Check `systemctl status` for OOM kills; consider machine_type = \"e2-small\"."
  }
}

# The conditions below mirror monitoring/alerts.yml (same thresholds and durations; see
# docs/alerts.md for what each means and what to do). tests/deploy/check_alert_parity.py checks
# that they stay in step.

resource "google_monitoring_alert_policy" "backup_failing" {
  count = local.monitor_vm ? 1 : 0

  display_name          = "${var.name}: last backup failed"
  combiner              = "OR"
  notification_channels = var.alert_notification_channels

  conditions {
    display_name = "the last backup attempt did not succeed"
    condition_prometheus_query_language {
      query    = "max(nexusd_backup_last_attempt_timestamp_seconds) > max(nexusd_backup_last_success_timestamp_seconds) and on() sum(increase(nexusd_backup_failures_total[1d])) > 0"
      duration = "0s"
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "The most recent backup to ${local.backup_bucket_url} failed; older backups are intact and the next run retries. `journalctl -u nexusd | grep -i backup` on the VM says why (docs/alerts.md#nexusdbackupfailing)."
  }
}

resource "google_monitoring_alert_policy" "backup_store_unavailable" {
  count = local.monitor_vm ? 1 : 0

  display_name          = "${var.name}: backups off (store unavailable)"
  combiner              = "OR"
  notification_channels = var.alert_notification_channels

  conditions {
    display_name = "nexusd_backup_available == 0"
    condition_prometheus_query_language {
      query    = "min(nexusd_backup_available) == 0"
      duration = "300s"
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "nexusd could not open ${local.backup_bucket_url} at start and turned backups off until it restarts. `journalctl -u nexusd | grep 'backup store'` names the error; fix it, then `sudo systemctl restart nexusd` (docs/alerts.md#nexusdbackupstoreunavailable)."
  }
}

resource "google_monitoring_alert_policy" "backup_verify" {
  count = local.monitor_vm ? 1 : 0

  display_name          = "${var.name}: backup verification failing or stale"
  combiner              = "OR"
  notification_channels = var.alert_notification_channels

  conditions {
    display_name = "the last verification failed"
    condition_prometheus_query_language {
      query    = "min(nexusd_backup_last_verify_ok) == 0"
      duration = "0s"
    }
  }

  conditions {
    display_name = "no backup verified in 8 days"
    condition_prometheus_query_language {
      query    = "time() - max(nexusd_backup_last_verify_success_timestamp_seconds) > 8 * 86400 and on() max(nexusd_backup_last_success_timestamp_seconds) > 0"
      duration = "3600s"
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "A backup did not restore and verify, or none has been verified for 8 days (the verification runs weekly). Run `nexusd backup verify` on the VM as the service does (docs/alerts.md#nexusdbackupverifyfailing)."
  }
}

resource "google_monitoring_alert_policy" "wal_archiving_failing" {
  count = local.monitor_vm ? 1 : 0

  display_name          = "${var.name}: WAL archiving failing"
  combiner              = "OR"
  notification_channels = var.alert_notification_channels

  conditions {
    display_name = "archive_command failing, nothing archived in 15 minutes"
    condition_prometheus_query_language {
      query    = "sum(increase(pg_stat_archiver_failed_count[15m])) > 0 and on() sum(increase(pg_stat_archiver_archived_count[15m])) == 0"
      duration = "300s"
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "PostgreSQL's archive_command fails: point-in-time recovery stops at the last archived segment and pg_wal grows. `/var/log/postgresql/` has the error (docs/alerts.md#postgresqlwalarchivingfailing)."
  }
}

resource "google_monitoring_alert_policy" "postgres_connections" {
  count = local.monitor_vm ? 1 : 0

  display_name          = "${var.name}: PostgreSQL connections over 80 %"
  combiner              = "OR"
  notification_channels = var.alert_notification_channels

  conditions {
    display_name = "backends over 80 % of the non-superuser slots"
    condition_prometheus_query_language {
      query    = "sum(pg_stat_database_numbackends) / on() (max(pg_settings_max_connections) - max(pg_settings_superuser_reserved_connections)) > 0.8"
      duration = "600s"
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "PostgreSQL is running out of connection slots; nexusd's pool and the backups are refused when none is left. `SELECT usename, application_name, state, count(*) FROM pg_stat_activity GROUP BY 1, 2, 3` shows who holds them (docs/alerts.md#postgresqlconnectionssaturated)."
  }
}

resource "google_monitoring_alert_policy" "long_transaction" {
  count = local.monitor_vm ? 1 : 0

  display_name          = "${var.name}: transaction open over 15 minutes"
  combiner              = "OR"
  notification_channels = var.alert_notification_channels

  conditions {
    display_name = "a transaction open over 15 minutes outside a backup"
    condition_prometheus_query_language {
      query    = "max(pg_stat_activity_max_tx_duration) > 900 unless on() max(nexusd_backup_running) == 1"
      duration = "120s"
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "A PostgreSQL transaction has been open for over 15 minutes; it holds locks and stops VACUUM. Find it in pg_stat_activity by xact_start (docs/alerts.md#postgresqllongtransaction)."
  }
}

resource "google_monitoring_alert_policy" "data_disk_filling" {
  count = local.monitor_vm ? 1 : 0

  display_name          = "${var.name}: data disk fills within 24 h"
  combiner              = "OR"
  notification_channels = var.alert_notification_channels

  conditions {
    display_name = "${local.data_mount} under 40 % free and full within 24 h at the rate of the last 6 h"
    condition_prometheus_query_language {
      query    = "predict_linear(node_filesystem_avail_bytes{mountpoint=\"${local.data_mount}\"}[6h], 24 * 3600) < 0 and node_filesystem_avail_bytes{mountpoint=\"${local.data_mount}\"} / node_filesystem_size_bytes{mountpoint=\"${local.data_mount}\"} < 0.4"
      duration = "3600s"
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "PostgreSQL's data disk (${google_compute_disk.data.name}, mounted at ${local.data_mount}) runs out of space within a day at the current rate. Raise data_disk_size_gb and apply, then `sudo nexusd-provision configure` (docs/alerts.md#hostdiskfillingup)."
  }
}
