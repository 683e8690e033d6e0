#!/usr/bin/env python3
"""terraform/managed/ (docs/scaling.md), read with python-hcl2 like check_terraform_hcl.py:
Cloud SQL for PostgreSQL 15 on a private IP only, automated backups and point-in-time recovery
on, pg_stat_statements enabled, the password generated into Secret Manager and handed to Cloud
Run from there; nexusd on Cloud Run with at least one instance and CPU always allocated, backups
and host metrics off; its service account holds one secret-level role and no project role; no
0.0.0.0/0 anywhere; every variable used and described."""

from __future__ import annotations

import re

from _common import REPO, Checks
from check_terraform_hcl import WORLD, Config, block, literal, text


def main() -> None:
    checks = Checks("terraform-managed")
    cfg = Config(REPO / "terraform" / "managed")
    everything = text({f"{t}.{n}": b for (t, n), b in cfg.resources.items()})

    sql = cfg.of_type("google_sql_database_instance").get("nexusd", {})
    settings = block(sql, "settings")
    ip = block(settings, "ip_configuration")
    backup = block(settings, "backup_configuration")
    flags = {literal(f.get("name")): literal(f.get("value")) for f in settings.get("database_flags", [])}
    checks.check(literal(sql.get("database_version")) == "POSTGRES_15", "Cloud SQL: PostgreSQL 15")
    checks.check(ip.get("ipv4_enabled") is False, "Cloud SQL: no public IP (ipv4_enabled = false)")
    checks.check("google_compute_network.nexusd" in text(ip.get("private_network")), "Cloud SQL: private IP on the VPC")
    checks.check("authorized_networks" not in ip, "Cloud SQL: no authorized networks")
    checks.check(backup.get("enabled") is True, "Cloud SQL: automated backups on")
    checks.check(backup.get("point_in_time_recovery_enabled") is True, "Cloud SQL: point-in-time recovery on")
    checks.check(flags.get("cloudsql.enable_pg_stat_statements") == "on", "Cloud SQL: pg_stat_statements enabled", f"{flags}")
    checks.check(sql.get("deletion_protection") is True, "Cloud SQL: deletion protection")

    user = cfg.of_type("google_sql_user").get("nexusd", {})
    checks.check("random_password.db" in text(user.get("password")), "the database password is generated")
    version = cfg.of_type("google_secret_manager_secret_version").get("db_password", {})
    checks.check("random_password.db" in text(version.get("secret_data")), "the password is stored in Secret Manager")
    checks.check(not any("password" in n and "secret" not in n for n in cfg.variables), "no password variable")

    run = cfg.of_type("google_cloud_run_v2_service").get("nexusd", {})
    template = block(run, "template")
    container = block(template, "containers")
    env = dict(cfg.locals.get("serve_env", {}))
    checks.check([literal(a) for a in container.get("args", [])] == ["serve"], "Cloud Run runs `nexusd serve` (no proxy hop)")
    checks.check(literal(env.get("NEXUSD_BACKUPS")) == "off", "Cloud Run: NEXUSD_BACKUPS=off")
    checks.check(literal(env.get("NEXUSD_HOST_METRICS")) == "off", "Cloud Run: NEXUSD_HOST_METRICS=off")
    checks.check("private_ip_address" in text(cfg.locals.get("database_url")), "DATABASE_URL: Cloud SQL's private IP")
    secret_env = [e for e in container.get("env", []) if literal(e.get("name")) == "POSTGRES_PASSWORD"]
    checks.check(
        bool(secret_env) and "secret_key_ref" in text(secret_env[0].get("value_source")),
        "POSTGRES_PASSWORD comes from Secret Manager",
    )
    checks.check(cfg.variable_default("min_instances") >= 1, "Cloud Run: min instances ≥ 1 by default")
    checks.check(
        "var.min_instances >= 1" in text(cfg.variables["min_instances"].get("validation")),
        "Cloud Run: min instances validated ≥ 1",
    )
    checks.check(block(container, "resources").get("cpu_idle") is False, "Cloud Run: CPU always allocated (the leader's jobs)")
    checks.check(literal(block(template, "vpc_access").get("egress")) == "PRIVATE_RANGES_ONLY", "Cloud Run egress: private ranges only")

    # Least privilege: the service account gets one role, on one secret; nothing project-wide.
    project_roles = cfg.of_type("google_project_iam_member") | cfg.of_type("google_project_iam_binding")
    checks.check(not project_roles, "no project-level IAM role", f"{list(project_roles)}")
    grants = cfg.of_type("google_secret_manager_secret_iam_member")
    checks.check(
        [literal(g.get("role")) for g in grants.values()] == ["roles/secretmanager.secretAccessor"],
        "the service account reads one secret and nothing else",
    )

    checks.check(not any(w in everything for w in WORLD), "no 0.0.0.0/0 or ::/0")
    checks.check(not cfg.of_type("google_compute_firewall"), "no firewall opening")
    code = "\n".join(cfg.sources.values())
    unused = [v for v in cfg.variables if not re.search(rf"\bvar\.{v}\b", code)]
    checks.check(not unused, "every declared variable is used", f"unused: {unused}")
    undescribed = [v for v, b in cfg.variables.items() if not b.get("description")]
    checks.check(not undescribed, "every variable has a description", f"missing: {undescribed}")
    checks.done()


if __name__ == "__main__":
    main()
