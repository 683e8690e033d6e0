#!/usr/bin/env python3
"""The committed cloud-init/user-data.yaml is what terraform's templatefile() renders from the
current template, nexusd-provision.sh, unit and Ops Agent config (so `cloud-init schema` in
check_cloud_init.py checks what the VM gets), and the variant without the Ops Agent is valid
cloud-config too. Needs terraform (offline: templatefile needs no provider) and cloud-init.
"""

from __future__ import annotations

import difflib
import tempfile
from pathlib import Path

from _common import REPO, Checks, require_tool, run, terraform_or_skip
from render_user_data import EXAMPLE, render


def main() -> None:
    terraform_or_skip()
    cloud_init = require_tool("cloud-init", "apt-get install cloud-init")
    checks = Checks("user-data")

    rendered = render(ops_agent=True)
    committed = EXAMPLE.read_text()
    diff = "".join(
        difflib.unified_diff(
            committed.splitlines(True), rendered.splitlines(True), "committed", "rendered", n=1
        )
    )
    checks.check(
        rendered == committed,
        "cloud-init/user-data.yaml is up to date (else: tests/deploy/render_user_data.py --write)",
        "\n" + diff[:3000],
    )

    without_agent = render(ops_agent=False)
    checks.check(
        "path: /usr/local/share/nexusd/ops-agent-config.yaml" not in without_agent and "OPS_AGENT='false'" in without_agent,
        "enable_ops_agent = false leaves the Ops Agent out",
    )
    with tempfile.TemporaryDirectory(prefix="nexusd-user-data-") as tmp:
        path = Path(tmp) / "user-data.yaml"
        path.write_text(without_agent)
        schema = run([cloud_init, "schema", "--config-file", str(path)])
        checks.check(
            schema.returncode == 0,
            "cloud-init schema on the rendering without the Ops Agent",
            schema.stdout + schema.stderr,
        )
    checks.done()


if __name__ == "__main__":
    main()
