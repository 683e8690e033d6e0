"""Helpers shared by the deployment checks (tests/deploy/check_*.py).

Each check is a script run by tests/deploy.rs (`cargo test --test deploy`) or by hand:
`python3 tests/deploy/check_X.py`. It prints one line per assertion and exits 0 when all
pass, 1 when any fails, 77 when it cannot run here for a reason that is not a failure (only:
terraform not installed, since it is not a Debian package). Only the standard library,
python-hcl2 and PyYAML (PyPI, in /opt/nexusd-test-venv) are used.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SKIP = 77


class Checks:
    """Collects named assertions; `done()` prints a summary and exits."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.failed: list[str] = []
        self.passed = 0

    def check(self, ok: bool, what: str, why: str = "") -> bool:
        if ok:
            self.passed += 1
            print(f"ok    {what}")
        else:
            self.failed.append(what)
            print(f"FAIL  {what}" + (f": {why}" if why else ""))
        return ok

    def done(self) -> None:
        print(f"{self.title}: {self.passed} passed, {len(self.failed)} failed")
        sys.exit(1 if self.failed else 0)


def require_tool(name: str, install_hint: str) -> str:
    """The tool's path, or exit 1 naming what to install: a missing tool is a failure."""
    path = shutil.which(name)
    if path is None:
        print(f"FAIL  {name} not found on PATH: {install_hint}")
        sys.exit(1)
    return path


def terraform_or_skip() -> str:
    """terraform's path. It is not in Debian's archive, so a machine without it skips
    (exit 77, reported by tests/deploy.rs) instead of failing."""
    path = shutil.which("terraform")
    if path is None:
        print(
            "SKIP  terraform not found on PATH: install it from HashiCorp's releases "
            "(https://developer.hashicorp.com/terraform/install); the HCL checks in "
            "check_terraform_hcl.py does not need it"
        )
        sys.exit(SKIP)
    return path


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Runs a command, capturing text output; never raises on a non-zero exit."""
    env = dict(os.environ)
    # terraform warns on stderr when ~/.terraformrc is missing; nothing else reads it here.
    env.setdefault("TF_CLI_CONFIG_FILE", "/dev/null")
    env.setdefault("CHECKPOINT_DISABLE", "1")
    return subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, **kwargs)
