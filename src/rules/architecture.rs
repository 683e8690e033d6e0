//! nexusd's architecture rules (`docs/skill-rules.md`): ten categories of concrete checks
//! evaluated from a repository's file tree and a few file texts — README sections, licence,
//! Terraform presence and fmt-style layout, environments, state handling, disaster recovery,
//! deployment, PostgreSQL migrations, CI and containers — plus the grading. Pure functions; the
//! skills in `architecture.rs` fetch the inputs from GitHub.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use regex::Regex;

use super::docs::Priority::{Critical, High, Low, Medium};
use super::docs::{self, Markdown, PRIORITY_DOCS, Priority};
use super::tree::{Tree, file_name, is_markdown, parent_dir};

/// The standards categories, in the order the skills report them.
pub const CATEGORIES: &[&str] = &[
    "documentation",
    "license",
    "terraform_init",
    "multi_env",
    "terraform_state",
    "disaster_recovery",
    "deployment",
    "postgresql",
    "ci_cd",
    "containerization",
];

/// At most this many files of one kind are read.
const MAX_TERRAFORM_FILES: usize = 30;
const MAX_DOCKERFILES: usize = 3;
const MAX_CI_FILES: usize = 10;
const MAX_RUNBOOKS: usize = 3;

/// What the checks look at: the tree and the texts of the files read.
pub struct RepoFiles {
    pub tree: Tree,
    pub contents: BTreeMap<String, String>,
}

impl RepoFiles {
    fn text(&self, path: &str) -> Option<&str> {
        self.contents.get(path).map(String::as_str)
    }
}

fn skipped(path: &str) -> bool {
    path.split('/')
        .any(|s| docs::SKIPPED_DIRS.contains(&s) || s == ".terraform")
}

/// Terraform sources (`*.tf`), outside dependency and `.terraform/` directories.
fn terraform_files(tree: &Tree) -> Vec<&str> {
    tree.paths()
        .filter(|p| p.ends_with(".tf") && !skipped(p))
        .collect()
}

/// Dockerfiles: `Dockerfile`, `Dockerfile.*`, `*.Dockerfile`, `Containerfile`.
fn dockerfiles(tree: &Tree) -> Vec<&str> {
    tree.paths()
        .filter(|p| {
            let name = file_name(p);
            !skipped(p)
                && (name == "Dockerfile"
                    || name.starts_with("Dockerfile.")
                    || name.ends_with(".Dockerfile")
                    || name == "Containerfile")
        })
        .collect()
}

/// CI configurations of the common systems.
fn ci_files(tree: &Tree) -> Vec<&str> {
    tree.paths()
        .filter(|p| {
            let name = file_name(p);
            let yaml = name.ends_with(".yml") || name.ends_with(".yaml");
            (p.starts_with(".github/workflows/") && yaml)
                || *p == ".gitlab-ci.yml"
                || *p == ".circleci/config.yml"
                || *p == ".travis.yml"
                || *p == "bitbucket-pipelines.yml"
                || *p == "azure-pipelines.yml"
                || name == "Jenkinsfile"
                || (!skipped(p) && (name == "cloudbuild.yaml" || name == "cloudbuild.yml"))
        })
        .collect()
}

fn is_runbook(path: &str) -> bool {
    let name = file_name(path).to_lowercase();
    is_markdown(path)
        && ["disaster", "recovery", "backup", "restore", "runbook"]
            .iter()
            .any(|w| name.contains(w))
}

fn runbooks(tree: &Tree) -> Vec<&str> {
    tree.paths()
        .filter(|p| !skipped(p) && is_runbook(p))
        .collect()
}

fn readme(tree: &Tree) -> Option<String> {
    docs::locate(tree, &PRIORITY_DOCS[0])
}

fn licence_file(tree: &Tree) -> Option<String> {
    PRIORITY_DOCS
        .iter()
        .find(|d| d.licence)
        .and_then(|d| docs::locate(tree, d))
}

/// The files the checks of `categories` need to read.
pub fn files_to_read(tree: &Tree, categories: &[&str]) -> Vec<String> {
    let mut wanted: BTreeSet<String> = BTreeSet::new();
    let has = |c: &str| categories.contains(&c);
    if has("documentation") || has("license") || has("deployment") || has("postgresql") {
        wanted.extend(readme(tree));
    }
    if has("license") {
        wanted.extend(licence_file(tree));
    }
    if has("terraform_init") || has("terraform_state") || has("disaster_recovery") {
        wanted.extend(
            terraform_files(tree)
                .into_iter()
                .take(MAX_TERRAFORM_FILES)
                .map(String::from),
        );
    }
    if has("terraform_state") && tree.has_file(".gitignore") {
        wanted.insert(".gitignore".into());
    }
    if has("containerization") {
        wanted.extend(
            dockerfiles(tree)
                .into_iter()
                .take(MAX_DOCKERFILES)
                .map(String::from),
        );
    }
    if has("ci_cd") || has("deployment") {
        wanted.extend(
            ci_files(tree)
                .into_iter()
                .take(MAX_CI_FILES)
                .map(String::from),
        );
    }
    if has("disaster_recovery") {
        wanted.extend(
            runbooks(tree)
                .into_iter()
                .take(MAX_RUNBOOKS)
                .map(String::from),
        );
    }
    wanted.into_iter().collect()
}

/// One broken rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub rule_id: &'static str,
    pub severity: Priority,
    pub title: &'static str,
    pub message: String,
    pub recommendation: String,
    pub file_path: String,
}

/// The outcome of one category.
#[derive(Debug, Clone, PartialEq)]
pub struct CategoryResult {
    pub category: &'static str,
    pub checks_performed: usize,
    pub violations: Vec<Finding>,
}

impl CategoryResult {
    /// Passed checks over performed checks, 2 decimals (1.0 when nothing applied).
    pub fn score(&self) -> f64 {
        ratio(
            self.checks_performed - self.violations.len(),
            self.checks_performed,
        )
    }

    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    fn check(&mut self, rule: Rule, file_path: &str, failure: Option<String>) -> bool {
        self.checks_performed += 1;
        match failure {
            None => true,
            Some(message) => {
                self.violations.push(Finding {
                    rule_id: rule.id,
                    severity: rule.severity,
                    title: rule.title,
                    message,
                    recommendation: rule.recommendation.to_string(),
                    file_path: file_path.to_string(),
                });
                false
            }
        }
    }
}

/// `passed / total`, rounded to 2 decimals; 1.0 for 0 checks.
pub fn ratio(passed: usize, total: usize) -> f64 {
    if total == 0 {
        1.0
    } else {
        (passed as f64 / total as f64 * 100.0).round() / 100.0
    }
}

/// A ≥ 0.9, B ≥ 0.8, C ≥ 0.7, D ≥ 0.6, else F.
pub fn grade(score: f64) -> &'static str {
    match score {
        s if s >= 0.9 => "A",
        s if s >= 0.8 => "B",
        s if s >= 0.7 => "C",
        s if s >= 0.6 => "D",
        _ => "F",
    }
}

#[derive(Clone, Copy)]
struct Rule {
    id: &'static str,
    severity: Priority,
    title: &'static str,
    recommendation: &'static str,
}

const fn rule(
    id: &'static str,
    severity: Priority,
    title: &'static str,
    recommendation: &'static str,
) -> Rule {
    Rule {
        id,
        severity,
        title,
        recommendation,
    }
}

const DOC_001: Rule = rule(
    "DOC-001",
    Critical,
    "README present",
    "Add a README.md at the repository root describing what the project is",
);
const DOC_002: Rule = rule(
    "DOC-002",
    High,
    "README explains setup",
    "Add an Installation / Getting started section to the README",
);
const DOC_003: Rule = rule(
    "DOC-003",
    Medium,
    "README shows usage",
    "Add a Usage / Examples section to the README",
);
const DOC_004: Rule = rule(
    "DOC-004",
    Low,
    "Contributing guide present",
    "Add CONTRIBUTING.md explaining how to build, test and propose changes",
);
const LIC_001: Rule = rule(
    "LIC-001",
    Critical,
    "Licence file present",
    "Add a LICENSE file with the full text of the chosen licence",
);
const LIC_002: Rule = rule(
    "LIC-002",
    High,
    "Licence is recognisable",
    "Use the unmodified text of a standard licence or add an SPDX-License-Identifier",
);
const LIC_003: Rule = rule(
    "LIC-003",
    Low,
    "README states the licence",
    "Add a License section to the README naming the licence",
);
const TF_001: Rule = rule(
    "TF-001",
    High,
    "Terraform configuration present",
    "Describe the infrastructure as Terraform (*.tf) in the repository",
);
const TF_002: Rule = rule(
    "TF-002",
    Medium,
    "Terraform files are fmt-clean",
    "Run `terraform fmt -recursive` (2-space indentation, no tabs, no trailing spaces, final newline)",
);
const TF_003: Rule = rule(
    "TF-003",
    Medium,
    "Terraform and provider versions pinned",
    "Add a terraform { required_version … required_providers { … } } block",
);
const TF_004: Rule = rule(
    "TF-004",
    Low,
    "Provider lock file committed",
    "Commit .terraform.lock.hcl (created by `terraform init`)",
);
const ENV_001: Rule = rule(
    "ENV-001",
    High,
    "Per-environment configuration",
    "Keep one configuration per environment (e.g. environments/dev, environments/prod or dev.tfvars, prod.tfvars)",
);
const ENV_002: Rule = rule(
    "ENV-002",
    Medium,
    "Example configuration committed",
    "Commit an example configuration (.env.example, terraform.tfvars.example) listing every setting",
);
const ENV_003: Rule = rule(
    "ENV-003",
    High,
    "No secrets files committed",
    "Remove committed secrets files (.env, private keys), rotate the secrets and ignore the files",
);
const TFS_001: Rule = rule(
    "TFS-001",
    Critical,
    "No Terraform state committed",
    "Delete *.tfstate files from the repository, move the state to a remote backend and rotate any secrets it held",
);
const TFS_002: Rule = rule(
    "TFS-002",
    Critical,
    "Remote state backend",
    "Configure a remote backend (backend \"gcs\" / \"s3\" / \"azurerm\" or Terraform Cloud) with locking",
);
const TFS_003: Rule = rule(
    "TFS-003",
    Medium,
    ".gitignore excludes state",
    "Add .terraform/ and *.tfstate* to .gitignore",
);
const DR_001: Rule = rule(
    "DR-001",
    High,
    "Backup and recovery runbook",
    "Write a DISASTER_RECOVERY.md runbook: what is backed up, where, how often, and how to restore",
);
const DR_002: Rule = rule(
    "DR-002",
    Medium,
    "Runbook documents a restore",
    "Document the restore procedure step by step in the runbook",
);
const DR_003: Rule = rule(
    "DR-003",
    Medium,
    "Backups are automated",
    "Automate backups (a backup script or timer, or backup/snapshot settings in Terraform)",
);
const DEP_001: Rule = rule(
    "DEP-001",
    High,
    "Deployment documented",
    "Add DEPLOYMENT.md (or a Deployment section in the README) describing how to deploy",
);
const DEP_002: Rule = rule(
    "DEP-002",
    Medium,
    "Deployment automated",
    "Automate deployment (a deploy script, cloudbuild.yaml or a CI deploy job)",
);
const PG_001: Rule = rule(
    "PG-001",
    High,
    "Versioned schema migrations",
    "Keep the database schema as versioned migrations in a migrations/ directory",
);
const PG_002: Rule = rule(
    "PG-002",
    Medium,
    "Migrations ordered by name",
    "Prefix migration files with a version number (0001_init.sql, V2__add_table.sql)",
);
const PG_003: Rule = rule(
    "PG-003",
    Medium,
    "Database setup documented",
    "Document the PostgreSQL setup (README section or docs/POSTGRESQL_SETUP.md)",
);
const CI_001: Rule = rule(
    "CI-001",
    High,
    "CI configuration present",
    "Add a CI pipeline (.github/workflows/ci.yml, cloudbuild.yaml, .gitlab-ci.yml)",
);
const CI_002: Rule = rule(
    "CI-002",
    Medium,
    "CI runs the tests",
    "Run the test suite in CI (cargo test, pytest, npm test, go test, …)",
);
const CI_003: Rule = rule(
    "CI-003",
    Low,
    "CI YAML indented with spaces",
    "Indent YAML with spaces; tabs are invalid YAML indentation",
);
const CTR_001: Rule = rule(
    "CTR-001",
    High,
    "Dockerfile present",
    "Add a Dockerfile so the service builds as a container",
);
const CTR_002: Rule = rule(
    "CTR-002",
    High,
    "Container runs as non-root",
    "End the final stage with `USER <non-root user>`",
);
const CTR_003: Rule = rule(
    "CTR-003",
    Medium,
    "Base images pinned",
    "Pin every FROM image to a version tag or digest (not :latest or untagged)",
);
const CTR_004: Rule = rule(
    "CTR-004",
    Low,
    ".dockerignore present",
    "Add a .dockerignore to keep secrets and build output out of the image context",
);

/// Runs one category's checks; `None` for an unknown category.
pub fn evaluate(category: &str, files: &RepoFiles) -> Option<CategoryResult> {
    let name = CATEGORIES.iter().copied().find(|c| *c == category)?;
    let mut r = CategoryResult {
        category: name,
        checks_performed: 0,
        violations: Vec::new(),
    };
    match name {
        "documentation" => documentation(&mut r, files),
        "license" => license(&mut r, files),
        "terraform_init" => terraform_init(&mut r, files),
        "multi_env" => multi_env(&mut r, files),
        "terraform_state" => terraform_state(&mut r, files),
        "disaster_recovery" => disaster_recovery(&mut r, files),
        "deployment" => deployment(&mut r, files),
        "postgresql" => postgresql(&mut r, files),
        "ci_cd" => ci_cd(&mut r, files),
        _ => containerization(&mut r, files),
    }
    Some(r)
}

fn documentation(r: &mut CategoryResult, f: &RepoFiles) {
    let path = readme(&f.tree);
    let text = path.as_deref().and_then(|p| f.text(p));
    if !r.check(
        DOC_001,
        "README.md",
        path.is_none()
            .then(|| "No README.md in the root, docs/ or .github/".into()),
    ) {
        return;
    }
    let path = path.unwrap_or_default();
    let doc = Markdown::parse(text.unwrap_or(""));
    let (setup, usage) = docs::readme_sections(&doc);
    r.check(
        DOC_002,
        &path,
        (!setup).then(|| format!("{path} has no installation/setup section")),
    );
    r.check(
        DOC_003,
        &path,
        (!usage).then(|| format!("{path} has no usage/examples section")),
    );
    let contributing = PRIORITY_DOCS.iter().find(|d| d.name == "CONTRIBUTING.md");
    let found = contributing.and_then(|d| docs::locate(&f.tree, d));
    r.check(
        DOC_004,
        "CONTRIBUTING.md",
        found.is_none().then(|| "No CONTRIBUTING.md".into()),
    );
}

fn license(r: &mut CategoryResult, f: &RepoFiles) {
    let path = licence_file(&f.tree);
    if r.check(
        LIC_001,
        "LICENSE",
        path.is_none()
            .then(|| "No licence file (LICENSE, LICENCE, COPYING, …)".into()),
    ) {
        let path = path.unwrap_or_default();
        let text = f.text(&path).unwrap_or("");
        r.check(
            LIC_002,
            &path,
            docs::identify_licence(text)
                .is_none()
                .then(|| format!("{path} does not contain a recognisable licence text")),
        );
    }
    if let Some(path) = readme(&f.tree) {
        let mentions = f
            .text(&path)
            .is_some_and(|t| t.to_lowercase().contains("licen"));
        r.check(
            LIC_003,
            &path,
            (!mentions).then(|| format!("{path} does not mention the licence")),
        );
    }
}

/// Problems `terraform fmt` would fix: tabs, indentation that is not a multiple of 2 spaces,
/// trailing whitespace, no final newline. Heredoc bodies are left alone, as fmt does.
fn terraform_fmt_problems(text: &str) -> Vec<String> {
    static HEREDOC: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"<<-?\s*([A-Za-z_][A-Za-z0-9_]*)\s*$").expect("regex"));
    let mut problems = Vec::new();
    let mut heredoc: Option<String> = None;
    for (index, line) in text.lines().enumerate() {
        let n = index + 1;
        if let Some(marker) = &heredoc {
            if line.trim() == marker {
                heredoc = None;
            }
            continue;
        }
        if line.contains('\t') {
            problems.push(format!("line {n}: tab character"));
        } else {
            let indent = line.len() - line.trim_start_matches(' ').len();
            if indent % 2 != 0 && !line.trim().is_empty() {
                problems.push(format!("line {n}: indentation of {indent} spaces"));
            }
        }
        if line.ends_with(' ') {
            problems.push(format!("line {n}: trailing whitespace"));
        }
        if let Some(c) = HEREDOC.captures(line) {
            heredoc = Some(c[1].to_string());
        }
    }
    if !text.is_empty() && !text.ends_with('\n') {
        problems.push("no newline at the end of the file".into());
    }
    problems
}

fn terraform_init(r: &mut CategoryResult, f: &RepoFiles) {
    let tf = terraform_files(&f.tree);
    if !r.check(
        TF_001,
        "terraform/",
        tf.is_empty().then(|| "No Terraform files (*.tf)".into()),
    ) {
        return;
    }
    let unformatted: Vec<(&str, Vec<String>)> = tf
        .iter()
        .filter_map(|p| f.text(p).map(|t| (*p, terraform_fmt_problems(t))))
        .filter(|(_, problems)| !problems.is_empty())
        .collect();
    let described: Vec<String> = unformatted
        .iter()
        .map(|(p, problems)| match problems.len() {
            1 => format!("{p} ({})", problems[0]),
            n => format!("{p} ({} and {} more)", problems[0], n - 1),
        })
        .collect();
    r.check(
        TF_002,
        unformatted.first().map_or(tf[0], |(p, _)| *p),
        (!described.is_empty()).then(|| {
            format!(
                "Terraform files are not fmt-clean: {}",
                described.join("; ")
            )
        }),
    );
    let all: String = tf
        .iter()
        .filter_map(|p| f.text(p))
        .collect::<Vec<_>>()
        .join("\n");
    let pinned = all.contains("required_version") && all.contains("required_providers");
    r.check(
        TF_003,
        tf[0],
        (!pinned).then(|| "No terraform block with required_version and required_providers".into()),
    );
    let lock = f
        .tree
        .paths()
        .any(|p| file_name(p) == ".terraform.lock.hcl");
    let dir = parent_dir(tf[0]);
    let lock_path = if dir.is_empty() {
        ".terraform.lock.hcl".to_string()
    } else {
        format!("{dir}/.terraform.lock.hcl")
    };
    r.check(
        TF_004,
        &lock_path,
        (!lock).then(|| "No .terraform.lock.hcl committed".into()),
    );
}

/// Environment names found in `*.tfvars` names and in directories under `environments/`,
/// `envs/`, `env/`, `deploy/`, `overlays/` or `config/` (development → dev, production → prod,
/// stage → staging).
pub fn environments(tree: &Tree) -> BTreeSet<&'static str> {
    fn normalise(word: &str) -> Option<&'static str> {
        match word.to_lowercase().as_str() {
            "dev" | "development" => Some("dev"),
            "test" | "testing" | "qa" => Some("test"),
            "stage" | "staging" | "preprod" | "uat" => Some("staging"),
            "prod" | "production" | "live" => Some("prod"),
            _ => None,
        }
    }
    const PARENTS: &[&str] = &[
        "environments",
        "envs",
        "env",
        "deploy",
        "overlays",
        "config",
    ];
    let mut found = BTreeSet::new();
    for path in tree.paths().filter(|p| !skipped(p)) {
        let name = file_name(path);
        if name.ends_with(".tfvars") || name.ends_with(".tfvars.json") {
            found.extend(name.split(['.', '_', '-']).filter_map(normalise));
        }
    }
    for dir in &tree.dirs {
        if let Some((parent, name)) = dir.rsplit_once('/')
            && PARENTS.contains(&file_name(parent))
            && let Some(env) = normalise(name)
        {
            found.insert(env);
        }
    }
    found
}

fn is_example(name: &str) -> bool {
    static EXAMPLE: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"(?i)(^|[._-])(example|sample|template|dist)([._-]|$)").expect("regex")
    });
    EXAMPLE.is_match(name)
}

/// Files that hold secrets: `.env` files that are not examples, private keys.
fn secret_files(tree: &Tree) -> Vec<&str> {
    tree.paths()
        .filter(|p| {
            let name = file_name(p);
            let env = name == ".env" || (name.starts_with(".env.") && !is_example(name));
            env || name.ends_with(".pem") || name == "id_rsa" || name == "id_ed25519"
        })
        .collect()
}

fn multi_env(r: &mut CategoryResult, f: &RepoFiles) {
    let envs = environments(&f.tree);
    r.check(
        ENV_001,
        "environments/",
        (envs.len() < 2).then(|| {
            format!(
                "Found {} environment configuration(s) ({}); at least two expected",
                envs.len(),
                envs.iter().copied().collect::<Vec<_>>().join(", ")
            )
        }),
    );
    let example = f.tree.paths().find(|p| is_example(file_name(p)));
    r.check(
        ENV_002,
        ".env.example",
        example
            .is_none()
            .then(|| "No example configuration (.env.example, *.tfvars.example, …)".into()),
    );
    let secrets = secret_files(&f.tree);
    r.check(
        ENV_003,
        secrets.first().copied().unwrap_or(".env"),
        (!secrets.is_empty())
            .then(|| format!("Secrets files are committed: {}", secrets.join(", "))),
    );
}

fn terraform_state(r: &mut CategoryResult, f: &RepoFiles) {
    static BACKEND: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r#"(?m)^\s*backend\s+"([A-Za-z0-9_]+)"|^\s*cloud\s*\{"#).expect("regex")
    });
    let states: Vec<&str> = f
        .tree
        .paths()
        .filter(|p| p.ends_with(".tfstate") || p.ends_with(".tfstate.backup"))
        .collect();
    r.check(
        TFS_001,
        states.first().copied().unwrap_or("terraform.tfstate"),
        (!states.is_empty())
            .then(|| format!("Terraform state is committed: {}", states.join(", "))),
    );
    let tf = terraform_files(&f.tree);
    if tf.is_empty() {
        return;
    }
    let remote = tf.iter().filter_map(|p| f.text(p)).any(|t| {
        BACKEND
            .captures_iter(t)
            .any(|c| c.get(1).is_none_or(|b| b.as_str() != "local"))
    });
    r.check(
        TFS_002,
        tf[0],
        (!remote).then(|| "No remote backend configured; state stays on one machine".into()),
    );
    let ignore = f.text(".gitignore").unwrap_or("");
    let ignored = ignore.contains(".terraform") && ignore.contains("tfstate");
    r.check(
        TFS_003,
        ".gitignore",
        (!ignored).then(|| ".gitignore does not exclude .terraform/ and *.tfstate".into()),
    );
}

fn disaster_recovery(r: &mut CategoryResult, f: &RepoFiles) {
    let books = runbooks(&f.tree);
    if r.check(
        DR_001,
        "DISASTER_RECOVERY.md",
        books
            .is_empty()
            .then(|| "No backup / disaster-recovery runbook".into()),
    ) {
        let restore = books
            .iter()
            .filter_map(|p| f.text(p))
            .any(|t| t.to_lowercase().contains("restore"));
        r.check(
            DR_002,
            books[0],
            (!restore).then(|| format!("{} does not describe a restore", books[0])),
        );
    }
    let automated = f.tree.paths().any(|p| {
        let lower = p.to_lowercase();
        !is_markdown(p) && !skipped(p) && (lower.contains("backup") || lower.contains("snapshot"))
    }) || terraform_files(&f.tree)
        .iter()
        .filter_map(|p| f.text(p))
        .any(|t| {
            let lower = t.to_lowercase();
            lower.contains("backup") || lower.contains("snapshot_schedule")
        });
    r.check(
        DR_003,
        "scripts/backup.sh",
        (!automated).then(|| "No backup automation found".into()),
    );
}

fn deployment(r: &mut CategoryResult, f: &RepoFiles) {
    const PLATFORM_FILES: &[&str] = &[
        "cloudbuild.yaml",
        "cloudbuild.yml",
        "Procfile",
        "app.yaml",
        "fly.toml",
        "render.yaml",
        "vercel.json",
        "netlify.toml",
    ];
    let doc = f
        .tree
        .paths()
        .find(|p| is_markdown(p) && !skipped(p) && file_name(p).to_lowercase().contains("deploy"))
        .map(String::from)
        .or_else(|| {
            let path = readme(&f.tree)?;
            let text = f.text(&path)?;
            Markdown::parse(text)
                .headings()
                .iter()
                .any(|(_, h)| h.to_lowercase().contains("deploy"))
                .then_some(path)
        });
    r.check(
        DEP_001,
        "DEPLOYMENT.md",
        doc.is_none().then(|| "Deployment is not documented".into()),
    );
    let automated = f.tree.paths().any(|p| {
        !is_markdown(p)
            && !skipped(p)
            && (p.to_lowercase().contains("deploy") || PLATFORM_FILES.contains(&file_name(p)))
    }) || ci_files(&f.tree)
        .iter()
        .filter_map(|p| f.text(p))
        .any(|t| t.to_lowercase().contains("deploy"));
    r.check(
        DEP_002,
        "scripts/deploy.sh",
        (!automated).then(|| "No deployment automation found".into()),
    );
}

fn migration_files(tree: &Tree) -> Vec<&str> {
    tree.paths()
        .filter(|p| {
            !skipped(p)
                && p.split('/').rev().skip(1).any(|d| {
                    matches!(
                        d.to_lowercase().as_str(),
                        "migrations" | "migration" | "migrate" | "alembic"
                    )
                })
        })
        .collect()
}

fn postgresql(r: &mut CategoryResult, f: &RepoFiles) {
    static ORDERED: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"^(V\d+__|\d+[._-])").expect("regex"));
    let migrations = migration_files(&f.tree);
    let code: Vec<&str> = migrations
        .iter()
        .copied()
        .filter(|p| !is_markdown(p) && !file_name(p).starts_with('.'))
        .collect();
    if r.check(
        PG_001,
        "migrations/",
        code.is_empty()
            .then(|| "No migrations directory with migration files".into()),
    ) {
        let sql: Vec<&str> = code
            .iter()
            .copied()
            .filter(|p| p.ends_with(".sql"))
            .collect();
        if !sql.is_empty() {
            let unordered: Vec<&str> = sql
                .iter()
                .copied()
                .filter(|p| !ORDERED.is_match(file_name(p)))
                .collect();
            r.check(
                PG_002,
                unordered.first().copied().unwrap_or(sql[0]),
                (!unordered.is_empty()).then(|| {
                    format!(
                        "Migrations without a version prefix: {}",
                        unordered.join(", ")
                    )
                }),
            );
        }
    }
    let documented = f.tree.paths().any(|p| {
        let name = file_name(p).to_lowercase();
        is_markdown(p) && !skipped(p) && (name.contains("postgres") || name.contains("database"))
    }) || readme(&f.tree)
        .and_then(|p| f.text(&p))
        .is_some_and(|t| t.to_lowercase().contains("postgres"));
    r.check(
        PG_003,
        "docs/POSTGRESQL_SETUP.md",
        (!documented).then(|| "The PostgreSQL setup is not documented".into()),
    );
}

fn ci_cd(r: &mut CategoryResult, f: &RepoFiles) {
    static TESTS: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"(?i)(cargo\s+(test|nextest)|npm\s+(run\s+)?test|yarn\s+test|pnpm\s+test|pytest|go\s+test|make\s+test|mvn\b.*\b(test|verify)\b|gradlew?\b.*\btest\b|\btox\b|rspec|dotnet\s+test|phpunit|jest|vitest|unittest)")
            .expect("regex")
    });
    let ci = ci_files(&f.tree);
    if !r.check(
        CI_001,
        ".github/workflows/ci.yml",
        ci.is_empty().then(|| "No CI configuration".into()),
    ) {
        return;
    }
    let texts: Vec<(&str, &str)> = ci
        .iter()
        .filter_map(|p| f.text(p).map(|t| (*p, t)))
        .collect();
    let tests = texts.iter().any(|(_, t)| TESTS.is_match(t));
    r.check(
        CI_002,
        ci[0],
        (!tests).then(|| "No CI job runs a test command".into()),
    );
    let tabbed: Vec<&str> = texts
        .iter()
        .filter(|(p, t)| {
            (p.ends_with(".yml") || p.ends_with(".yaml")) && t.lines().any(|l| l.starts_with('\t'))
        })
        .map(|(p, _)| *p)
        .collect();
    r.check(
        CI_003,
        tabbed.first().copied().unwrap_or(ci[0]),
        (!tabbed.is_empty()).then(|| format!("YAML indented with tabs: {}", tabbed.join(", "))),
    );
}

/// One `FROM` of a Dockerfile: image and stage name.
fn from_instruction(line: &str) -> Option<(String, Option<String>)> {
    let mut words = line.split_whitespace();
    if !words.next()?.eq_ignore_ascii_case("FROM") {
        return None;
    }
    let mut image = words.next()?;
    while image.starts_with("--") {
        image = words.next()?;
    }
    let stage = match (words.next(), words.next()) {
        (Some(a), Some(name)) if a.eq_ignore_ascii_case("AS") => Some(name.to_lowercase()),
        _ => None,
    };
    Some((image.to_string(), stage))
}

/// Whether the final stage of a Dockerfile ends with a `USER` that is not root.
fn runs_as_non_root(dockerfile: &str) -> bool {
    let mut user: Option<String> = None;
    for line in dockerfile.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        match words.next().map(str::to_uppercase).as_deref() {
            Some("FROM") => user = None,
            Some("USER") => user = words.next().map(str::to_string),
            _ => {}
        }
    }
    user.is_some_and(|u| {
        let name = u.split(':').next().unwrap_or("");
        !matches!(name, "root" | "0" | "")
    })
}

/// Images of `FROM` lines that are neither pinned (a tag other than `latest`, or a digest) nor
/// `scratch`, a build stage or an `${ARG}`.
fn unpinned_images(dockerfile: &str) -> Vec<String> {
    let mut stages: Vec<String> = Vec::new();
    let mut unpinned = Vec::new();
    for line in dockerfile.lines().map(str::trim) {
        let Some((image, stage)) = from_instruction(line) else {
            continue;
        };
        let lower = image.to_lowercase();
        let pinned = lower == "scratch"
            || stages.contains(&lower)
            || image.contains('$')
            || image.contains("@sha256:")
            || image
                .rsplit_once(':')
                .is_some_and(|(_, tag)| !tag.contains('/') && tag != "latest");
        if !pinned {
            unpinned.push(image);
        }
        stages.extend(stage);
    }
    unpinned
}

fn containerization(r: &mut CategoryResult, f: &RepoFiles) {
    let files = dockerfiles(&f.tree);
    if !r.check(
        CTR_001,
        "Dockerfile",
        files.is_empty().then(|| "No Dockerfile".into()),
    ) {
        return;
    }
    let texts: Vec<(&str, &str)> = files
        .iter()
        .filter_map(|p| f.text(p).map(|t| (*p, t)))
        .collect();
    let root: Vec<&str> = texts
        .iter()
        .filter(|(_, t)| !runs_as_non_root(t))
        .map(|(p, _)| *p)
        .collect();
    r.check(
        CTR_002,
        root.first().copied().unwrap_or(files[0]),
        (!root.is_empty()).then(|| {
            format!(
                "The final stage runs as root (no non-root USER): {}",
                root.join(", ")
            )
        }),
    );
    let unpinned: Vec<String> = texts
        .iter()
        .flat_map(|(p, t)| {
            unpinned_images(t)
                .into_iter()
                .map(move |i| format!("{i} in {p}"))
        })
        .collect();
    r.check(
        CTR_003,
        files[0],
        (!unpinned.is_empty()).then(|| format!("Unpinned base images: {}", unpinned.join(", "))),
    );
    let ignore = f.tree.has_file(".dockerignore")
        || files.iter().any(|p| {
            let dir = parent_dir(p);
            f.tree.has_file(&if dir.is_empty() {
                ".dockerignore".into()
            } else {
                format!("{dir}/.dockerignore")
            })
        });
    r.check(
        CTR_004,
        ".dockerignore",
        (!ignore).then(|| "No .dockerignore".into()),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(entries: &[(&str, &str)]) -> RepoFiles {
        RepoFiles {
            tree: Tree::from_paths(entries.iter().map(|(p, _)| *p)),
            contents: entries
                .iter()
                .filter(|(_, t)| !t.is_empty())
                .map(|(p, t)| (p.to_string(), t.to_string()))
                .collect(),
        }
    }

    fn failed(category: &str, f: &RepoFiles) -> Vec<&'static str> {
        evaluate(category, f)
            .unwrap()
            .violations
            .iter()
            .map(|v| v.rule_id)
            .collect()
    }

    #[test]
    fn grades_follow_the_reference() {
        assert_eq!(grade(0.95), "A");
        assert_eq!(grade(0.9), "A");
        assert_eq!(grade(0.85), "B");
        assert_eq!(grade(0.7), "C");
        assert_eq!(grade(0.6), "D");
        assert_eq!(grade(0.59), "F");
        assert_eq!(ratio(2, 3), 0.67);
        assert_eq!(ratio(0, 0), 1.0);
        assert!(evaluate("nope", &files(&[])).is_none());
    }

    #[test]
    fn documentation_and_licence() {
        let good = files(&[
            (
                "README.md",
                "# X\n## Installation\n## Usage\n## License\nMIT",
            ),
            ("CONTRIBUTING.md", ""),
            (
                "LICENSE",
                "MIT License\nPermission is hereby granted, free of charge",
            ),
        ]);
        assert_eq!(failed("documentation", &good), Vec::<&str>::new());
        assert_eq!(failed("license", &good), Vec::<&str>::new());
        let bare = files(&[("src/main.rs", "")]);
        let doc = evaluate("documentation", &bare).unwrap();
        assert_eq!(
            (doc.checks_performed, failed("documentation", &bare)),
            (1, vec!["DOC-001"])
        );
        assert_eq!(failed("license", &bare), ["LIC-001"]);
        let weak = files(&[
            ("README.md", "# X\n## Usage\n"),
            ("LICENSE", "All rights reserved"),
        ]);
        assert_eq!(failed("documentation", &weak), ["DOC-002", "DOC-004"]);
        assert_eq!(failed("license", &weak), ["LIC-002", "LIC-003"]);
    }

    #[test]
    fn terraform_layout_like_fmt() {
        assert!(
            terraform_fmt_problems("resource \"a\" \"b\" {\n  x = 1\n  y = {\n    z = 2\n  }\n}\n")
                .is_empty()
        );
        let problems = terraform_fmt_problems("a {\n\tx = 1\n   y = 2 \n}");
        assert_eq!(
            problems,
            [
                "line 2: tab character",
                "line 3: indentation of 3 spaces",
                "line 3: trailing whitespace",
                "no newline at the end of the file"
            ]
        );
        // Heredoc bodies are free-form.
        assert!(terraform_fmt_problems("x = <<-EOT\n   odd\n\tindent\n  EOT\ny = 1\n").is_empty());
    }

    #[test]
    fn terraform_init_and_state() {
        let main = "terraform {\n  required_version = \">= 1.5\"\n  required_providers {}\n  backend \"gcs\" {}\n}\n";
        let good = files(&[
            ("terraform/main.tf", main),
            ("terraform/.terraform.lock.hcl", ""),
            (".gitignore", ".terraform/\n*.tfstate*\n"),
        ]);
        assert_eq!(failed("terraform_init", &good), Vec::<&str>::new());
        assert_eq!(failed("terraform_state", &good), Vec::<&str>::new());
        let bad = files(&[
            ("main.tf", "terraform {\n\tbackend \"local\" {}\n}\n"),
            ("terraform.tfstate", ""),
        ]);
        assert_eq!(
            failed("terraform_init", &bad),
            ["TF-002", "TF-003", "TF-004"]
        );
        assert_eq!(
            failed("terraform_state", &bad),
            ["TFS-001", "TFS-002", "TFS-003"]
        );
        let none = files(&[("README.md", "")]);
        assert_eq!(
            evaluate("terraform_init", &none).unwrap().checks_performed,
            1
        );
        assert_eq!(
            evaluate("terraform_state", &none).unwrap().checks_performed,
            1
        );
    }

    #[test]
    fn environments_examples_and_secrets() {
        let good = files(&[
            ("terraform/environments/dev/main.tf", ""),
            ("terraform/environments/production/main.tf", ""),
            (".env.example", ""),
        ]);
        assert_eq!(failed("multi_env", &good), Vec::<&str>::new());
        let tfvars = Tree::from_paths(["dev.tfvars", "prod.tfvars", "x/staging.auto.tfvars"]);
        assert_eq!(
            environments(&tfvars).into_iter().collect::<Vec<_>>(),
            ["dev", "prod", "staging"]
        );
        let bad = files(&[("prod.tfvars", ""), (".env", ""), ("certs/server.pem", "")]);
        assert_eq!(failed("multi_env", &bad), ["ENV-001", "ENV-002", "ENV-003"]);
        assert_eq!(
            secret_files(&Tree::from_paths([".env.sample", ".env.local"])),
            [".env.local"]
        );
    }

    #[test]
    fn recovery_deployment_postgres_ci() {
        let good = files(&[
            (
                "docs/DISASTER_RECOVERY.md",
                "# DR\nHow to restore the database",
            ),
            ("scripts/backup.sh", ""),
            ("DEPLOYMENT.md", ""),
            ("scripts/deploy.sh", ""),
            ("migrations/0001_init.sql", ""),
            ("migrations/0002_more.sql", ""),
            ("README.md", "# X\nUses PostgreSQL 15."),
            (
                ".github/workflows/ci.yml",
                "jobs:\n  test:\n    steps:\n      - run: cargo test --all\n",
            ),
        ]);
        for category in ["disaster_recovery", "deployment", "postgresql", "ci_cd"] {
            assert_eq!(failed(category, &good), Vec::<&str>::new(), "{category}");
        }
        let bad = files(&[
            ("BACKUP.md", "# Backups\nWe copy files."),
            ("db/migrations/init.sql", ""),
            ("cloudbuild.yaml", "steps:\n\t- name: docker\n"),
        ]);
        assert_eq!(failed("disaster_recovery", &bad), ["DR-002", "DR-003"]);
        // cloudbuild.yaml counts as deployment automation, but nothing documents deployment.
        assert_eq!(failed("deployment", &bad), ["DEP-001"]);
        assert_eq!(failed("postgresql", &bad), ["PG-002", "PG-003"]);
        assert_eq!(failed("ci_cd", &bad), ["CI-002", "CI-003"]);
        assert_eq!(failed("ci_cd", &files(&[])), ["CI-001"]);
    }

    #[test]
    fn dockerfiles_run_as_non_root_with_pinned_images() {
        let good = "FROM rust:1.88 AS build\nRUN cargo build\nFROM gcr.io/distroless/cc@sha256:abc\nCOPY --from=build /x /x\nUSER 65532:65532\n";
        assert!(runs_as_non_root(good));
        assert!(unpinned_images(good).is_empty());
        assert!(!runs_as_non_root(
            "FROM debian:12\nUSER app\nFROM debian:12\n"
        ));
        assert!(!runs_as_non_root("FROM debian:12\nUSER root\n"));
        assert!(!runs_as_non_root("FROM debian:12\nUSER 0:0\n"));
        assert_eq!(
            unpinned_images(
                "FROM --platform=linux/amd64 python AS a\nFROM a\nFROM node:latest\nFROM localhost:5000/img\nFROM scratch\nFROM ${BASE}\n"
            ),
            ["python", "node:latest", "localhost:5000/img"]
        );
        let f = files(&[("Dockerfile", good), (".dockerignore", "")]);
        assert_eq!(failed("containerization", &f), Vec::<&str>::new());
        let f = files(&[("Dockerfile", "FROM ubuntu\nRUN make\n")]);
        assert_eq!(
            failed("containerization", &f),
            ["CTR-002", "CTR-003", "CTR-004"]
        );
    }

    #[test]
    fn only_the_needed_files_are_read() {
        let tree = Tree::from_paths([
            "README.md",
            "LICENSE",
            "Dockerfile",
            "main.tf",
            ".github/workflows/ci.yml",
            "src/main.rs",
            "node_modules/x/Dockerfile",
        ]);
        assert_eq!(files_to_read(&tree, &["containerization"]), ["Dockerfile"]);
        assert_eq!(
            files_to_read(&tree, CATEGORIES),
            [
                ".github/workflows/ci.yml",
                "Dockerfile",
                "LICENSE",
                "README.md",
                "main.tf"
            ]
        );
    }
}
