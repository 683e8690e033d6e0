#!/usr/bin/env python3
"""terraform/: the security-relevant facts, read from the HCL with python-hcl2 (`terraform
validate` would need the google provider, which cannot be downloaded here).

No ingress from 0.0.0.0/0; the VM has no external IP and its own service account; no secret
value reaches instance metadata; the backup bucket has uniform access, versioning and lifecycle
rules; the VM's service account has objectAdmin on that bucket only and its secrets one by one;
Cloud Run runs `nexusd proxy` through the VPC connector; the alerts watch the data disk, pg_up,
backups and memory; every variable and local is used; the settings terraform hands to the VM are
ones nexusd-provision and nexusd know. The bugs of the original deployment (reference §9 item 20)
each have an assertion here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import hcl2

from _common import REPO, Checks

TF = REPO / "terraform"
WORLD = {"0.0.0.0/0", "::/0"}


def unquote(value: Any) -> Any:
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def clean(value: Any) -> Any:
    """python-hcl2's output without its markers, with block labels and keys unquoted. String
    values keep their form: '"literal"' (quoted) or '${expression}'."""
    if isinstance(value, dict):
        return {
            unquote(k): clean(v) for k, v in value.items() if not str(k).startswith("__")
        }
    if isinstance(value, list):
        return [clean(v) for v in value]
    return value


def literal(value: Any) -> Any:
    """The value of a literal ('"x"' -> 'x', True, 3), or None for an expression."""
    if isinstance(value, str):
        if value.startswith('"') and value.endswith('"') and "${" not in value:
            return value[1:-1]
        return None
    return value


def text(value: Any) -> str:
    return json.dumps(value)


def block(body: dict, name: str) -> dict:
    """The first nested block `name` (blocks parse as lists of dicts), or {}."""
    found = body.get(name) or [{}]
    return found[0] if isinstance(found, list) else found


class Config:
    def __init__(self, root: Path = TF) -> None:
        self.resources: dict[tuple[str, str], dict] = {}
        self.variables: dict[str, dict] = {}
        self.locals: dict[str, Any] = {}
        self.outputs: dict[str, dict] = {}
        self.terraform: list[dict] = []
        self.sources: dict[str, str] = {}
        for path in sorted(root.glob("*.tf")):
            self.sources[path.name] = path.read_text()
            with open(path) as f:
                parsed = clean(hcl2.load(f))
            for entry in parsed.get("resource", []):
                for rtype, named in entry.items():
                    for name, body in named.items():
                        self.resources[(rtype, name)] = body
            for entry in parsed.get("variable", []):
                self.variables.update(entry)
            for entry in parsed.get("locals", []):
                self.locals.update(entry)
            for entry in parsed.get("output", []):
                self.outputs.update(entry)
            self.terraform += parsed.get("terraform", [])

    def of_type(self, rtype: str) -> dict[str, dict]:
        return {name: body for (t, name), body in self.resources.items() if t == rtype}

    def variable_default(self, name: str) -> Any:
        raw = self.variables[name].get("default")
        if isinstance(raw, list):
            return [literal(v) for v in raw]
        return literal(raw)

    def references(self, value: Any, seen: set[str] | None = None) -> set[str]:
        """Every var.X / resource.attr reachable from `value`, following local.Y definitions."""
        seen = set() if seen is None else seen
        found: set[str] = set()
        body = text(value)
        for name in re.findall(r"\blocal\.(\w+)", body):
            if name not in seen and name in self.locals:
                seen.add(name)
                found |= self.references(self.locals[name], seen)
        found |= set(re.findall(r"\bvar\.\w+", body))
        found |= set(re.findall(r"\bgoogle_\w+\.\w+(?:\[[^\]]*\])?(?:\.\w+)?", body))
        found |= {f"local.{n}" for n in re.findall(r"\blocal\.(\w+)", body)}
        return found


def code_without_comments(source: str) -> str:
    return "\n".join(re.sub(r"\s#.*$|^\s*#.*$", "", line) for line in source.splitlines())


def main() -> None:
    checks = Checks("terraform-hcl")
    cfg = Config()
    sensitive = {name for name, body in cfg.variables.items() if body.get("sensitive") is True}

    # --- providers --------------------------------------------------------------------------
    google = {}
    for t in cfg.terraform:
        for providers in t.get("required_providers", []):
            google = providers.get("google", google)
    checks.check(
        literal(google.get("source")) == "hashicorp/google"
        and re.fullmatch(r"~> ?[56]\.\d+(\.\d+)?", literal(google.get("version")) or "") is not None,
        "versions.tf pins hashicorp/google ~> 5.x or 6.x",
        f"found {google}",
    )

    # --- firewall: no world ingress -----------------------------------------------------------
    firewalls = cfg.of_type("google_compute_firewall")
    checks.check(bool(firewalls), "there are firewall rules")
    for name, fw in firewalls.items():
        direction = literal(fw.get("direction", '"INGRESS"'))
        ranges_raw = fw.get("source_ranges")
        ranges: list[Any] = []
        if isinstance(ranges_raw, list):
            for item in ranges_raw:
                var = re.fullmatch(r"\$\{var\.(\w+)\}", str(item))
                ranges.append(cfg.variable_default(var.group(1)) if var else literal(item))
        elif isinstance(ranges_raw, str):
            var = re.fullmatch(r"\$\{var\.(\w+)\}", ranges_raw)
            if var:
                ranges = list(cfg.variable_default(var.group(1)) or [])
                validation = text(cfg.variables[var.group(1)].get("validation"))
                checks.check(
                    "0.0.0.0/0" in validation,
                    f"firewall {name}: var.{var.group(1)} rejects 0.0.0.0/0 in a validation",
                )
        checks.check(direction == "INGRESS", f"firewall {name} is an ingress rule")
        # A rule whose ranges default to none exists only when ranges are given (count).
        optional = not ranges and "length(var." in str(fw.get("count", ""))
        checks.check(
            (bool(ranges) or optional) and not (set(map(str, ranges)) & WORLD),
            f"firewall {name}: source_ranges {ranges or '(none: rule not created)'} exclude 0.0.0.0/0",
        )
        checks.check("target_tags" in fw, f"firewall {name} applies to tagged instances only")
    code = {n: code_without_comments(s) for n, s in cfg.sources.items()}
    world_in_code = [n for n, s in code.items() if n != "variables.tf" and ("0.0.0.0/0" in s or "::/0" in s)]
    checks.check(not world_in_code, "0.0.0.0/0 appears in no resource", f"found in {world_in_code}")
    ssh = cfg.variable_default("ssh_source_ranges")
    checks.check(ssh == ["35.235.240.0/20"], "SSH is open to the IAP range only by default", f"found {ssh}")
    api = firewalls.get("api_from_connector", {})
    checks.check(
        api.get("source_ranges") == ["${var.connector_cidr}"]
        and text(block(api, "allow").get("ports")) == text(["${tostring(local.api_port)}"]),
        "the API port is open to the VPC connector range only",
    )

    # --- network ------------------------------------------------------------------------------
    subnet = cfg.resources.get(("google_compute_subnetwork", "nexusd"), {})
    checks.check(subnet.get("private_ip_google_access") is True, "the subnet has Private Google Access")
    checks.check(
        bool(cfg.of_type("google_compute_router_nat")), "Cloud NAT gives the VM outbound access without an external IP"
    )
    address = cfg.resources.get(("google_compute_address", "nexusd"), {})
    checks.check(literal(address.get("address_type")) == "INTERNAL", "the VM's static address is internal")

    # --- the VM -------------------------------------------------------------------------------
    vms = cfg.of_type("google_compute_instance")
    checks.check(list(vms) == ["nexusd"], "one VM")
    vm = vms.get("nexusd", {})
    interfaces = vm.get("network_interface", [])
    checks.check(
        bool(interfaces) and all("access_config" not in nic for nic in interfaces),
        "the VM has no access_config (no external IP)",
    )
    checks.check(
        not any("access_config" in s for s in code.values()), "access_config appears nowhere"
    )
    checks.check(
        text(interfaces).find("google_compute_address.nexusd.address") >= 0,
        "the VM uses the static internal IP",
    )
    checks.check(
        block(vm, "service_account").get("email") == "${google_service_account.vm.email}",
        "the VM runs as its own service account (not the default compute one)",
    )
    checks.check(
        cfg.variable_default("vm_image") == "debian-cloud/debian-12"
        and cfg.variable_default("machine_type") == "e2-micro",
        "Debian 12 on an e2-micro by default",
    )
    metadata = vm.get("metadata", {})
    checks.check(
        {"user-data", "startup-script"} <= set(metadata) and literal(metadata.get("enable-oslogin")) == "TRUE",
        "metadata: user-data, the cloud-init startup shim, OS Login",
    )
    reached = cfg.references(metadata)
    leaked = sorted(
        {r for r in reached if r.removeprefix("var.") in sensitive}
        | {r for r in reached if "secret_version" in r or r == "local.secret_values"}
    )
    checks.check(
        not leaked,
        "no secret value reaches the VM metadata (only secret names)",
        f"metadata depends on {leaked}",
    )
    checks.check(
        "google_secret_manager_secret.app" in text(cfg.locals.get("provision_settings"))
        and "secret_id" in text(cfg.locals.get("provision_settings")),
        "the VM gets secret ids from the secret resources (one naming, no copies)",
    )
    attached = block(vm, "attached_disk")
    checks.check(
        attached.get("source") == "${google_compute_disk.data.id}"
        and attached.get("device_name") == "${local.data_device_name}",
        "the data disk is attached with a fixed device name",
    )
    disk = cfg.resources.get(("google_compute_disk", "data"), {})
    checks.check(
        block(disk, "lifecycle").get("prevent_destroy") is True, "the data disk is protected from destroy"
    )
    attachments = cfg.of_type("google_compute_disk_resource_policy_attachment")
    checks.check(
        any(a.get("disk") == "${google_compute_disk.data.name}" for a in attachments.values()),
        "a snapshot schedule is attached to the data disk",
    )
    checks.check(
        "terraform_data.vm_provisioning" in text(block(vm, "lifecycle").get("replace_triggered_by")),
        "a change of the provisioning replaces the VM (cloud-init runs once per instance)",
    )

    # --- the backup bucket ----------------------------------------------------------------------
    bucket = cfg.resources.get(("google_storage_bucket", "backups"), {})
    checks.check(bucket.get("uniform_bucket_level_access") is True, "bucket: uniform bucket-level access")
    checks.check(block(bucket, "versioning").get("enabled") is True, "bucket: versioning enabled")
    checks.check(literal(bucket.get("public_access_prevention")) == "enforced", "bucket: public access prevented")
    checks.check(bucket.get("force_destroy") is False, "bucket: force_destroy = false")
    rules = bucket.get("lifecycle_rule", [])
    age_rules = [
        r for r in rules
        if literal(block(r, "action").get("type")) == "Delete"
        and re.fullmatch(r"\$\{var\.backup_retention_days \+ (\d+)\}", str(block(r, "condition").get("age")))
    ]
    checks.check(
        bool(age_rules), "bucket: a Delete rule at backup_retention_days + N days (backstop beyond nexusd's pruning)"
    )
    checks.check(
        any(
            literal(block(r, "action").get("type")) == "Delete"
            and ({"days_since_noncurrent_time", "num_newer_versions"} & set(block(r, "condition")))
            for r in rules
        ),
        "bucket: a Delete rule for noncurrent versions",
    )

    # --- IAM: only what nexusd needs -----------------------------------------------------------
    vm_sa = "google_service_account.vm.email"
    bucket_members = cfg.of_type("google_storage_bucket_iam_member")
    checks.check(
        any(
            m.get("bucket") == "${google_storage_bucket.backups.name}"
            and literal(m.get("role")) == "roles/storage.objectAdmin"
            and vm_sa in str(m.get("member"))
            for m in bucket_members.values()
        ),
        "the VM service account has roles/storage.objectAdmin on the backup bucket",
    )
    project_roles = {
        literal(m.get("role")) for m in cfg.of_type("google_project_iam_member").values() if vm_sa in str(m.get("member"))
    }
    checks.check(
        project_roles <= {"roles/logging.logWriter", "roles/monitoring.metricWriter"},
        "project-wide, the VM service account only writes logs and metrics",
        f"found {project_roles}",
    )
    checks.check(
        not cfg.of_type("google_project_iam_binding") and not cfg.of_type("google_project_iam_policy"),
        "no authoritative project IAM bindings",
    )
    secret_members = cfg.of_type("google_secret_manager_secret_iam_member")
    checks.check(
        bool(secret_members)
        and all(
            literal(m.get("role")) == "roles/secretmanager.secretAccessor" and vm_sa in str(m.get("member"))
            for m in secret_members.values()
        ),
        "secret access is granted per secret, to the VM service account only",
    )
    secrets = cfg.resources.get(("google_secret_manager_secret", "app"), {})
    checks.check(
        secrets.get("for_each") == "${local.secret_ids}"
        and set(cfg.locals.get("secret_ids", {})) == {"POSTGRES_PASSWORD", "GITHUB_TOKEN", "OPENAI_API_KEY", "NEXUSD_API_TOKENS"},
        "secrets: database password, GitHub token, OpenAI key, API tokens",
    )
    checks.check(
        {"db_password", "github_token", "openai_api_key", "api_tokens"} <= sensitive,
        "secret variables are marked sensitive",
        f"sensitive: {sorted(sensitive)}",
    )

    # --- Cloud Run ------------------------------------------------------------------------------
    run = cfg.resources.get(("google_cloud_run_v2_service", "nexusd"), {})
    template = block(run, "template")
    container = block(template, "containers")
    vpc = block(template, "vpc_access")
    checks.check(
        str(vpc.get("connector", "")).startswith("${google_vpc_access_connector."),
        "Cloud Run uses the VPC connector",
    )
    checks.check(literal(vpc.get("egress")) == "PRIVATE_RANGES_ONLY", "Cloud Run egress: private ranges only")
    checks.check([literal(a) for a in container.get("args", [])] == ["proxy"], "Cloud Run runs `nexusd proxy`")
    checks.check(
        "NEXUSD_PROXY_UPSTREAM" in text(cfg.locals.get("proxy_env"))
        and "google_compute_address.nexusd.address" in text(cfg.locals.get("proxy_env")),
        "the proxy's upstream is the VM's static internal IP",
    )
    checks.check(
        template.get("service_account") == "${google_service_account.run.email}",
        "Cloud Run runs as its own service account",
    )
    checks.check(
        run.get("ingress") == "${var.cloud_run_ingress}"
        and cfg.variable_default("cloud_run_ingress") == "INGRESS_TRAFFIC_ALL",
        "Cloud Run ingress defaults to all traffic (IAM still guards a private service)",
    )
    checks.check(
        block(container, "resources").get("cpu_idle") == "${var.cpu_throttled_when_idle}"
        and cfg.variable_default("cpu_throttled_when_idle") is True,
        "cpu_idle comes from a variable named for what it does",
    )

    # --- monitoring -------------------------------------------------------------------------------
    policies = text(cfg.of_type("google_monitoring_alert_policy"))
    for needle, what in [
        ("uptime_check/check_passed", "an alert on the uptime check"),
        ("absent(nexusd_build_info)", "an alert when nexusd's metrics are absent"),
        ("pg_up", "an alert on pg_up == 0"),
        ("nexusd_backup_last_success_timestamp_seconds", "an alert on backup age"),
        ("var.backup_max_age_hours * 3600", "the backup alert uses backup_max_age_hours"),
        ('mountpoint=\\\\\\"${local.data_mount}', "the disk alert watches the data disk's mount point"),
        ("agent.googleapis.com/memory/percent_used", "an alert on memory pressure"),
    ]:
        checks.check(needle in policies, what)
    checks.check(not any("sda1" in s for s in code.values()), "no alert on the boot disk (sda1)")
    uptime = block(cfg.resources.get(("google_monitoring_uptime_check_config", "health"), {}), "http_check")
    checks.check(literal(uptime.get("path")) == "/health", "an uptime check on /health")

    # --- hygiene: every variable and local is used, described -----------------------------------
    others = "\n".join(s for n, s in code.items() if n != "variables.tf")
    unused = [v for v in cfg.variables if not re.search(rf"\bvar\.{v}\b", others)]
    checks.check(not unused, "every declared variable is used", f"unused: {unused}")
    undescribed = [v for v, body in cfg.variables.items() if not literal(body.get("description"))]
    checks.check(not undescribed, "every variable has a description", f"missing: {undescribed}")
    everything = "\n".join(code.values())
    unused_locals = [name for name in cfg.locals if not re.search(rf"\blocal\.{name}\b", everything)]
    checks.check(not unused_locals, "every local is used", f"unused: {unused_locals}")
    checks.check(
        all(literal(o.get("description")) for o in cfg.outputs.values()), "every output has a description"
    )

    # --- what terraform hands to the VM is what the VM reads --------------------------------------
    script = (REPO / "cloud-init" / "nexusd-provision.sh").read_text()
    known = set(re.findall(r'^: "\$\{([A-Z][A-Z0-9_]*):?=', script, re.M))
    provision_keys = set(cfg.locals.get("provision_settings", {}))
    checks.check(
        bool(provision_keys) and provision_keys <= known,
        "every provision setting is one nexusd-provision reads",
        f"unknown: {sorted(provision_keys - known)}",
    )
    example = (REPO / "systemd" / "nexusd.env.example").read_text()
    documented = set(re.findall(r"^#?([A-Z][A-Z0-9_]+)=", example, re.M))
    nexusd_keys = set(re.findall(r"\b([A-Z][A-Z0-9_]+)\s*=", text(cfg.locals.get("nexusd_settings"))))
    checks.check(
        bool(nexusd_keys) and nexusd_keys <= documented,
        "every nexusd setting is documented in systemd/nexusd.env.example",
        f"undocumented: {sorted(nexusd_keys - documented)}",
    )
    proxy_keys = set(re.findall(r"\b([A-Z][A-Z0-9_]+)\s*=", text(cfg.locals.get("proxy_env"))))
    checks.check(
        proxy_keys - {"NEXUSD_PROXY_UPSTREAM"} <= documented,
        "the proxy's settings are nexusd settings",
        f"undocumented: {sorted(proxy_keys - documented - {'NEXUSD_PROXY_UPSTREAM'})}",
    )
    example_vars = Path(TF / "terraform.tfvars.example").read_text()
    example_keys = set(re.findall(r"^#?\s*([a-z0-9_]+)\s*=", example_vars, re.M))
    checks.check(
        example_keys <= set(cfg.variables),
        "terraform.tfvars.example sets only declared variables",
        f"unknown: {sorted(example_keys - set(cfg.variables))}",
    )
    required = {v for v, body in cfg.variables.items() if "default" not in body}
    checks.check(
        required <= example_keys,
        "terraform.tfvars.example sets every variable without a default",
        f"missing: {sorted(required - example_keys)}",
    )
    checks.done()


if __name__ == "__main__":
    main()
