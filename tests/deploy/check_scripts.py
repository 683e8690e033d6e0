#!/usr/bin/env python3
"""The shell scripts of the deployment (provisioning, GCE startup shim, rehearsal) parse, pass
shellcheck, stop on any failure in a pipeline (the original's backup ran `pg_dump | gzip`
without pipefail) and never trace commands (xtrace would print secrets)."""

from __future__ import annotations

import re

from _common import REPO, Checks, require_tool, run

SCRIPTS = [
    REPO / "cloud-init" / "nexusd-provision.sh",
    REPO / "cloud-init" / "gce-startup.sh",
    REPO / "scripts" / "rehearse-vm",
]


def main() -> None:
    checks = Checks("scripts")
    bash = require_tool("bash", "apt-get install bash")
    shellcheck = require_tool("shellcheck", "apt-get install shellcheck")
    for script in SCRIPTS:
        name = script.relative_to(REPO)
        text = script.read_text()
        syntax = run([bash, "-n", str(script)])
        checks.check(syntax.returncode == 0, f"{name}: bash -n", syntax.stderr)
        lint = run([shellcheck, "--severity=info", str(script)])
        checks.check(lint.returncode == 0, f"{name}: shellcheck", lint.stdout[-3000:])
        head = "\n".join(text.splitlines()[:40])
        checks.check("set -euo pipefail" in head, f"{name}: set -euo pipefail at the top")
        checks.check(
            not re.search(r"set -[a-z]*x|set -o xtrace|bash -[a-z]*x\b", text),
            f"{name}: no xtrace",
        )
        checks.check(
            "apt-key" not in text.replace("apt-key.gpg", "").replace("(no apt-key)", ""),
            f"{name}: no apt-key (keys go to /etc/apt/keyrings)",
        )
    checks.done()


if __name__ == "__main__":
    main()
