//! The deployment files (systemd unit, cloud-init user-data, terraform and its alert policies
//! against monitoring/alerts.yml, provisioning scripts),
//! checked by the Python scripts in `tests/deploy/`: one test per check, run with the test
//! virtualenv's Python (`NEXUSD_TEST_VENV`, default `/opt/nexusd-test-venv`, made by
//! `scripts/setup-debian --test` with python-hcl2). The tools they drive must be installed:
//! `systemd-analyze` (Debian `systemd`), `cloud-init`, `shellcheck`; a missing one fails the
//! test with the package to install. Only `terraform`, which Debian does not package, may be
//! missing: its checks then report a skip (exit 77) instead of failing.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Exit status of a check that cannot run here for a reason that is not a failure.
const SKIPPED: i32 = 77;

fn python() -> PathBuf {
    let venv = std::env::var_os("NEXUSD_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/nexusd-test-venv"));
    let python = venv.join("bin/python");
    assert!(
        python.is_file(),
        "{} not found: run `scripts/setup-debian --test` as root (it creates the test virtualenv \
         with python-hcl2), or set NEXUSD_TEST_VENV",
        python.display()
    );
    python
}

/// Runs `tests/deploy/<script>` with `args`; panics with its report unless every assertion held.
fn run_check(script: &str, args: &[&str]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/deploy");
    let output = Command::new(python())
        .arg(dir.join(script))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .unwrap_or_else(|e| panic!("could not run {script}: {e}"));
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    match output.status.code() {
        Some(0) => {}
        Some(SKIPPED) => eprintln!("{script} skipped:\n{report}"),
        _ => panic!("{script} failed ({}):\n{report}", output.status),
    }
}

#[test]
fn systemd_unit_passes_systemd_analyze_verify_and_is_hardened() {
    run_check("check_systemd.py", &[env!("CARGO_BIN_EXE_nexusd")]);
}

#[test]
fn cloud_init_user_data_passes_cloud_init_schema() {
    run_check("check_cloud_init.py", &[]);
}

#[test]
fn cloud_init_example_is_what_terraform_renders() {
    run_check("check_user_data_render.py", &[]);
}

#[test]
fn provisioning_scripts_pass_shellcheck_and_use_pipefail() {
    run_check("check_scripts.py", &[]);
}

#[test]
fn terraform_is_fmt_clean() {
    run_check("check_terraform_fmt.py", &[]);
}

#[test]
fn terraform_security_facts_hold() {
    run_check("check_terraform_hcl.py", &[]);
}

/// `terraform/managed/`, the managed shape (docs/scaling.md): Cloud SQL on a private IP only
/// with backups and PITR, the password in Secret Manager, nexusd on Cloud Run with backups and
/// host metrics off, a least-privilege service account, nothing open to the world.
#[test]
fn terraform_managed_security_facts_hold() {
    run_check("check_terraform_managed.py", &[]);
}

/// An operator finds every variable nexusd reads in `nexusd --help` and in the README's
/// configuration table.
#[test]
fn help_and_readme_list_every_variable() {
    let help = Command::new(env!("CARGO_BIN_EXE_nexusd"))
        .arg("--help")
        .output()
        .expect("running nexusd --help");
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout);
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let mut missing = Vec::new();
    for var in nexusd::config::variables() {
        if !help.lines().any(|l| l.trim_start().starts_with(var.name)) {
            missing.push(format!("{} (--help)", var.name));
        }
    }
    assert!(missing.is_empty(), "not in --help: {missing:?}");
    // The README's table is the same list, between its markers (NEXUSD_UPDATE_README=1 rewrites
    // it from the list).
    let table = nexusd::config::markdown_table();
    let readme = if std::env::var_os("NEXUSD_UPDATE_README").is_some() {
        let (head, rest) = readme
            .split_once("<!-- variables -->\n")
            .expect("the start marker");
        let (_, tail) = rest
            .split_once("<!-- /variables -->")
            .expect("the end marker");
        let updated = format!("{head}<!-- variables -->\n{table}<!-- /variables -->{tail}");
        std::fs::write(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"),
            &updated,
        )
        .expect("writing README.md");
        updated
    } else {
        readme
    };
    let block = readme
        .split_once("<!-- variables -->\n")
        .and_then(|(_, rest)| rest.split_once("<!-- /variables -->"))
        .map(|(block, _)| block);
    assert_eq!(
        block,
        Some(table.as_str()),
        "README.md's configuration table is out of date; between <!-- variables --> and \
         <!-- /variables --> it should read:\n{table}"
    );
}

#[test]
fn alert_rules_and_cloud_monitoring_policies_agree() {
    run_check("check_alert_parity.py", &[]);
}

fn repo_file(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The release binary carries no debug info or symbols (it was 112 MB with them) and is built
/// for size; the operator documentation exists and covers every Terraform variable and output.
#[test]
fn release_profile_is_stripped_and_the_operator_docs_cover_terraform() {
    let cargo = repo_file("Cargo.toml");
    let release = cargo
        .split_once("[profile.release]\n")
        .map(|(_, rest)| rest.split("\n[").next().unwrap_or_default())
        .unwrap_or_default();
    for setting in [
        "debug = false",
        "strip = true",
        "lto = \"fat\"",
        "codegen-units = 1",
    ] {
        assert!(
            release.lines().any(|l| l.trim() == setting),
            "[profile.release] lacks {setting}:\n{release}"
        );
    }

    let readme = repo_file("terraform/README.md");
    let mut missing = Vec::new();
    for (file, kind) in [
        ("terraform/variables.tf", "variable"),
        ("terraform/outputs.tf", "output"),
    ] {
        for line in repo_file(file).lines() {
            let name = line
                .strip_prefix(&format!("{kind} \""))
                .and_then(|rest| rest.split_once('"'))
                .map(|(name, _)| name);
            if let Some(name) = name
                && !readme.contains(&format!("| `{name}` |"))
            {
                missing.push(format!("{kind} {name}"));
            }
        }
    }
    assert!(missing.is_empty(), "terraform/README.md lacks {missing:?}");
    for section in ["## Create first", "## Example", "## Inputs", "## Outputs"] {
        assert!(
            readme.contains(section),
            "terraform/README.md lacks {section}"
        );
    }

    let operations = repo_file("docs/operations.md");
    for section in [
        "## Commands on the VM",
        "## Restore runbook",
        "## Moving from the original Python deployment",
        "`sudo nexusd backup list`",
    ] {
        assert!(
            operations.contains(section),
            "docs/operations.md lacks {section}"
        );
    }
    assert!(!operations.contains("systemd-run"));
}
