#!/usr/bin/env python3
"""cloud-init/user-data.yaml (the committed example rendering of user-data.yaml.tftpl) passes
`cloud-init schema`, runs nexusd-provision, and carries no secret: only secret names.

check_user_data_render.py checks that the example is what terraform renders from the current
template and files.
"""

from __future__ import annotations

import re

from _common import REPO, Checks, require_tool, run

EXAMPLE = REPO / "cloud-init" / "user-data.yaml"
TEMPLATE = REPO / "cloud-init" / "user-data.yaml.tftpl"
# Settings that hold secrets: they belong in /etc/nexusd/nexusd.env, written on the VM from
# Secret Manager, never in user-data (instance metadata is readable by anyone with
# compute.instances.get).
SECRET_SETTINGS = ("DATABASE_URL", "POSTGRES_PASSWORD", "GITHUB_TOKEN", "OPENAI_API_KEY", "NEXUSD_API_TOKENS")


def main() -> None:
    checks = Checks("cloud-init")
    cloud_init = require_tool("cloud-init", "apt-get install cloud-init")

    schema = run([cloud_init, "schema", "--config-file", str(EXAMPLE)])
    output = (schema.stdout + schema.stderr).strip()
    checks.check(
        schema.returncode == 0 and "Valid cloud-config" in output,
        "cloud-init schema --config-file cloud-init/user-data.yaml",
        output,
    )

    for path in (EXAMPLE, TEMPLATE):
        text = path.read_text()
        name = path.relative_to(REPO)
        checks.check(text.startswith("#cloud-config\n"), f"{name} starts with #cloud-config")
        checks.check(
            "- [/usr/local/sbin/nexusd-provision, all]" in text,
            f"{name}: runcmd runs nexusd-provision",
        )
        assigned = [
            line.strip()
            for line in text.splitlines()
            if re.match(rf"\s*(export\s+)?({'|'.join(SECRET_SETTINGS)})=", line)
        ]
        checks.check(not assigned, f"{name}: no secret setting is assigned", f"found {assigned}")
        checks.check(
            not re.search(r"(?i)password\s*[:=]\s*['\"]?[^\s'\"]{6,}", text.split("write_files:")[0]),
            f"{name}: no password in the cloud-config keys",
        )
    checks.done()


if __name__ == "__main__":
    main()
