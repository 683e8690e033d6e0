#!/usr/bin/env python3
"""`terraform fmt -check -recursive terraform/`: works offline (no provider needed).

`terraform init`/`validate` need the google provider, which this machine cannot download; the
security-relevant facts are checked by parsing the HCL instead (check_terraform_hcl.py)."""

from __future__ import annotations

from _common import REPO, Checks, run, terraform_or_skip


def main() -> None:
    terraform = terraform_or_skip()
    checks = Checks("terraform-fmt")
    fmt = run([terraform, "fmt", "-check", "-recursive", "-diff", str(REPO / "terraform")])
    checks.check(
        fmt.returncode == 0,
        "terraform fmt -check -recursive terraform/ (fix: terraform fmt -recursive terraform/)",
        (fmt.stdout + fmt.stderr)[-3000:],
    )
    checks.done()


if __name__ == "__main__":
    main()
