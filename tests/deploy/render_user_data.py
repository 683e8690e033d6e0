#!/usr/bin/env python3
"""Renders cloud-init/user-data.yaml.tftpl the way terraform/vm.tf does, with example values.

usage: render_user_data.py [--write | --print] [--no-ops-agent]

--write  regenerates cloud-init/user-data.yaml, the committed example (run it after changing the
         template, nexusd-provision.sh, the unit or the Ops Agent config; check_user_data.py
         fails while the example is stale)
--print  prints the rendering

The rendering is terraform's own `templatefile()`, evaluated by `terraform console` in an empty
directory (no provider, so it works offline). The setting keys come from terraform/vm.tf; every
key needs an example value below, so the example cannot silently miss a setting.
"""

from __future__ import annotations

import base64
import json
import re
import sys
import tempfile

import hcl2

from _common import REPO, run, terraform_or_skip

TEMPLATE = REPO / "cloud-init" / "user-data.yaml.tftpl"
EXAMPLE = REPO / "cloud-init" / "user-data.yaml"
NOTE = (
    "# Example rendering (fake values) of user-data.yaml.tftpl, for review and for\n"
    "# `cloud-init schema`; terraform renders the real one. Regenerate it with\n"
    "# tests/deploy/render_user_data.py --write.\n"
)

# Example values of every setting terraform/vm.tf passes (what terraform would render for
# project example-project with the defaults).
EXAMPLES = {
    # provision.env
    "PG_SOURCE": "pgdg",
    "DATA_DEVICE": "/dev/disk/by-id/google-nexusd-data",
    "DATA_MOUNT": "/mnt/pgdata",
    "PG_LISTEN_ADDRESSES": "localhost,10.8.0.2",
    "PG_APP_CIDR": "10.8.1.0/28",
    "DB_NAME": "devnexus",
    "DB_USER": "devnexus",
    "GCP_PROJECT": "example-project",
    "SECRET_POSTGRES_PASSWORD": "nexusd-postgres-password",
    "SECRET_GITHUB_TOKEN": "nexusd-github-token",
    "SECRET_OPENAI_API_KEY": "nexusd-openai-api-key",
    "SECRET_NEXUSD_API_TOKENS": "nexusd-api-tokens",
    "NEXUSD_BINARY_URL": "gs://example-project-artifacts/nexusd/0.1.0/nexusd",
    "NEXUSD_BINARY_SHA256": "0" * 64,
    "NEXUSD_HEALTH_URL": "http://127.0.0.1:8080/health",
    "OPS_AGENT": "true",
    # settings.env
    "NEXUSD_API_ADDR": "0.0.0.0:8080",
    "NEXUSD_METRICS_ADDR": "0.0.0.0:9187",
    "NEXUSD_STATE_DIR": "/var/lib/nexusd",
    "POSTGRES_MIN_CONNECTIONS": "1",
    "POSTGRES_MAX_CONNECTIONS": "8",
    "HOST_OVERRIDE": "https://nexusd-abc123-uc.a.run.app",
    "NEXUSD_AUTH_AUDIENCE": "https://nexusd-abc123-uc.a.run.app",
    "REQUIRE_AUTH_FOR_WRITE": "true",
    "ALLOWED_SERVICE_ACCOUNTS": "orchestrator@example-project.iam.gserviceaccount.com",
    "KNOWLEDGE_BASE_REPO": "example-org/dev-nexus-knowledge",
    "ORCHESTRATOR_URL": "https://orchestrator-abc123-uc.a.run.app",
    "PATTERN_MINER_URL": "",
    "NEXUSD_EMBEDDING_PROVIDER": "",
    "NEXUSD_BACKUP_BUCKET": "gs://example-project-nexusd-backups",
    "NEXUSD_BACKUP_SCHEDULE": "0 0 2 * * *",
    "NEXUSD_BACKUP_RETENTION_DAYS": "30",
    "NEXUSD_BACKUP_MIN_KEEP": "3",
}


def setting_keys() -> tuple[list[str], list[str]]:
    """The keys of local.provision_settings and local.nexusd_settings in terraform/vm.tf."""
    with open(REPO / "terraform" / "vm.tf") as f:
        parsed = hcl2.load(f)
    provision: list[str] = []
    nexusd: list[str] = []
    for block in parsed.get("locals", []):
        if "provision_settings" in block:
            provision = [k for k in block["provision_settings"] if not k.startswith("__")]
        if "nexusd_settings" in block:
            nexusd = re.findall(r"\b([A-Z][A-Z0-9_]+)\s*=", str(block["nexusd_settings"]))
    if not provision or not nexusd:
        raise SystemExit("FAIL  could not find provision_settings / nexusd_settings in terraform/vm.tf")
    return provision, nexusd


def settings(keys: list[str], ops_agent: bool) -> dict[str, str]:
    missing = [k for k in keys if k not in EXAMPLES]
    if missing:
        raise SystemExit(f"FAIL  no example value for {missing}: add them to EXAMPLES in {__file__}")
    values = {k: EXAMPLES[k] for k in keys}
    if "OPS_AGENT" in values:
        values["OPS_AGENT"] = "true" if ops_agent else "false"
    # As vm.tf does: empty settings are left out (nexusd's defaults apply).
    return {k: v for k, v in values.items() if v != ""}


def hcl_string(path) -> str:
    return json.dumps(str(path))


def render(ops_agent: bool = True) -> str:
    """The user-data terraform would render, with the example note after #cloud-config."""
    terraform = terraform_or_skip()
    provision_keys, nexusd_keys = setting_keys()
    provision = settings(provision_keys, ops_agent)
    nexusd = {k: v for k, v in settings(nexusd_keys, ops_agent).items()}
    ops_config = (
        f"file({hcl_string(REPO / 'cloud-init' / 'ops-agent-config.yaml')})" if ops_agent else '""'
    )
    # One line: terraform console evaluates line by line. JSON objects are valid HCL objects.
    expression = (
        f"base64encode(templatefile({hcl_string(TEMPLATE)}, {{"
        f"provision_script = file({hcl_string(REPO / 'cloud-init' / 'nexusd-provision.sh')}), "
        f"nexusd_unit = file({hcl_string(REPO / 'systemd' / 'nexusd.service')}), "
        f"ops_agent_config = {ops_config}, "
        f"provision_settings = {json.dumps(provision)}, "
        f"nexusd_settings = {json.dumps(nexusd)}}}))"
    )
    with tempfile.TemporaryDirectory(prefix="nexusd-render-") as empty:
        result = run([terraform, "console"], input=expression + "\n", cwd=empty)
    out = result.stdout.strip()
    if result.returncode != 0 or not re.fullmatch(r'"[A-Za-z0-9+/=]*"', out):
        raise SystemExit(f"FAIL  terraform console could not render the template:\n{result.stdout}{result.stderr}")
    text = base64.b64decode(out.strip('"')).decode()
    first, _, rest = text.partition("\n")
    return f"{first}\n{NOTE}{rest}"


def main() -> None:
    args = sys.argv[1:]
    ops_agent = "--no-ops-agent" not in args
    text = render(ops_agent)
    if "--write" in args:
        EXAMPLE.write_text(text)
        print(f"wrote {EXAMPLE.relative_to(REPO)}")
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
