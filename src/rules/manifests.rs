//! Dependency manifests: which files of a tree are manifests (`Cargo.toml`, `package.json`,
//! `requirements.txt`, `go.mod`, `pyproject.toml`), what each declares (parsed with real TOML
//! and JSON parsers; the line formats by their grammar), and which declared packages are other
//! repositories of the knowledge base. Hostile input gives an error naming the manifest, never a
//! panic; names and counts are bounded (`docs/workflows.md`, "Dependencies").

use std::collections::BTreeMap;

use serde_json::Value;
use toml::Table;

use super::Tree;
use super::component_scan::SKIPPED_DIRS;

/// Manifests read per repository at most (in path order).
pub const MAX_MANIFESTS: usize = 50;
/// Dependencies kept per manifest at most.
const MAX_DEPENDENCIES: usize = 2000;
/// Larger manifests are not read.
pub const MAX_MANIFEST_BYTES: u64 = 512 * 1024;
/// Longest package name or requirement kept.
const MAX_NAME: usize = 214;

/// One declared dependency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    pub name: String,
    /// Version requirement, git URL or path, as written.
    pub requirement: Option<String>,
    /// `runtime`, `dev`, `build`, `optional` or `indirect`.
    pub scope: &'static str,
}

/// What one manifest says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub path: String,
    pub ecosystem: &'static str,
    /// The package or module the manifest itself defines, when it names one.
    pub package: Option<String>,
    pub dependencies: Vec<Declared>,
}

/// The ecosystem of a manifest file name.
pub fn ecosystem(path: &str) -> Option<&'static str> {
    Some(match path.rsplit('/').next().unwrap_or(path) {
        "Cargo.toml" => "cargo",
        "package.json" => "npm",
        "requirements.txt" => "pypi",
        "pyproject.toml" => "pypi",
        "go.mod" => "go",
        _ => return None,
    })
}

/// The manifests of a tree, vendored and test directories skipped, at most [`MAX_MANIFESTS`].
pub fn manifest_files(tree: &Tree) -> Vec<String> {
    tree.files
        .iter()
        .filter(|(path, size)| {
            ecosystem(path).is_some()
                && **size <= MAX_MANIFEST_BYTES
                && !path
                    .split('/')
                    .rev()
                    .skip(1)
                    .any(|d| SKIPPED_DIRS.contains(&d))
        })
        .map(|(path, _)| path.clone())
        .take(MAX_MANIFESTS)
        .collect()
}

/// Parses one manifest; the error names the file and the problem.
pub fn parse(path: &str, text: &str) -> Result<Manifest, String> {
    let file = path.rsplit('/').next().unwrap_or(path);
    let fail = |why: String| format!("{path}: {why}");
    let (package, dependencies) = match file {
        "Cargo.toml" => cargo(text).map_err(fail)?,
        "package.json" => npm(text).map_err(fail)?,
        "requirements.txt" => (None, requirements(text)),
        "pyproject.toml" => pyproject(text).map_err(fail)?,
        "go.mod" => go_mod(text),
        _ => return Err(fail("not a known manifest".into())),
    };
    let mut seen = std::collections::BTreeSet::new();
    let dependencies = dependencies
        .into_iter()
        .filter(|d| valid_name(&d.name) && seen.insert((d.name.clone(), d.scope)))
        .map(|mut d| {
            d.requirement = d
                .requirement
                .map(|r| r.chars().take(MAX_NAME).collect::<String>())
                .filter(|r| !r.is_empty());
            d
        })
        .take(MAX_DEPENDENCIES)
        .collect();
    Ok(Manifest {
        path: path.to_string(),
        ecosystem: ecosystem(path).unwrap_or("unknown"),
        package: package.filter(|p| valid_name(p)),
        dependencies,
    })
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@/~+".contains(c))
}

fn declared(name: &str, requirement: Option<String>, scope: &'static str) -> Declared {
    Declared {
        name: name.trim().to_string(),
        requirement,
        scope,
    }
}

type Parsed = (Option<String>, Vec<Declared>);

fn toml_table(text: &str) -> Result<Table, String> {
    text.parse::<Table>()
        .map_err(|e| format!("invalid TOML: {}", e.message()))
}

/// A Cargo dependency's requirement: the version, else the git URL, else the path.
fn cargo_requirement(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Table(t) => ["version", "git", "path"]
            .iter()
            .find_map(|k| t.get(*k).and_then(|v| v.as_str()).map(str::to_string)),
        _ => None,
    }
}

fn cargo_section(table: &Table, scope: &'static str, out: &mut Vec<Declared>) {
    for (name, value) in table {
        // `foo = { package = "bar" }` depends on bar under the name foo.
        let real = value
            .get("package")
            .and_then(|p| p.as_str())
            .unwrap_or(name);
        out.push(declared(real, cargo_requirement(value), scope));
    }
}

fn cargo(text: &str) -> Result<Parsed, String> {
    let root = toml_table(text)?;
    let package = root
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .map(str::to_string);
    let mut out = Vec::new();
    let sections = [
        ("dependencies", "runtime"),
        ("dev-dependencies", "dev"),
        ("build-dependencies", "build"),
    ];
    let mut tables: Vec<&Table> = vec![&root];
    if let Some(targets) = root.get("target").and_then(|t| t.as_table()) {
        tables.extend(targets.values().filter_map(|t| t.as_table()));
    }
    if let Some(workspace) = root.get("workspace").and_then(|t| t.as_table()) {
        tables.push(workspace);
    }
    for table in tables {
        for (key, scope) in sections {
            if let Some(section) = table.get(key).and_then(|s| s.as_table()) {
                cargo_section(section, scope, &mut out);
            }
        }
    }
    Ok((package, out))
}

fn npm(text: &str) -> Result<Parsed, String> {
    let root: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON: {e}"))?;
    let Value::Object(root) = root else {
        return Err("expected a JSON object".into());
    };
    let package = root.get("name").and_then(Value::as_str).map(str::to_string);
    let mut out = Vec::new();
    for (key, scope) in [
        ("dependencies", "runtime"),
        ("devDependencies", "dev"),
        ("peerDependencies", "runtime"),
        ("optionalDependencies", "optional"),
    ] {
        if let Some(Value::Object(section)) = root.get(key) {
            for (name, version) in section {
                let requirement = version.as_str().map(str::to_string);
                out.push(declared(name, requirement, scope));
            }
        }
    }
    Ok((package, out))
}

/// A PEP 508 requirement (`name[extra]>=1.0; marker`): the name and the rest.
fn pep508(line: &str) -> Option<(String, Option<String>)> {
    let line = line.split(" #").next().unwrap_or(line).trim();
    let end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || "-_.".contains(c)))
        .unwrap_or(line.len());
    let name = &line[..end];
    if name.is_empty() {
        return None;
    }
    let rest = line[end..].trim();
    let rest = rest
        .strip_prefix('[')
        .and_then(|r| r.split_once(']'))
        .map_or(rest, |(_, r)| r.trim());
    Some((name.to_string(), Some(rest.to_string())))
}

fn requirements(text: &str) -> Vec<Declared> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('-'))
        .filter(|l| !l.contains("://"))
        .filter_map(pep508)
        .map(|(name, req)| declared(&name, req, "runtime"))
        .collect()
}

fn pyproject(text: &str) -> Result<Parsed, String> {
    let root = toml_table(text)?;
    let project = root.get("project").and_then(|p| p.as_table());
    let poetry = root
        .get("tool")
        .and_then(|t| t.get("poetry"))
        .and_then(|p| p.as_table());
    let package = project
        .or(poetry)
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .map(str::to_string);
    let mut out = Vec::new();
    let strings = |v: &toml::Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    if let Some(project) = project {
        for line in project.get("dependencies").map(strings).unwrap_or_default() {
            if let Some((name, req)) = pep508(&line) {
                out.push(declared(&name, req, "runtime"));
            }
        }
        if let Some(groups) = project
            .get("optional-dependencies")
            .and_then(|g| g.as_table())
        {
            for line in groups.values().flat_map(strings) {
                if let Some((name, req)) = pep508(&line) {
                    out.push(declared(&name, req, "optional"));
                }
            }
        }
    }
    if let Some(poetry) = poetry {
        poetry_section(poetry.get("dependencies"), "runtime", &mut out);
        poetry_section(poetry.get("dev-dependencies"), "dev", &mut out);
        if let Some(groups) = poetry.get("group").and_then(|g| g.as_table()) {
            for group in groups.values() {
                poetry_section(group.get("dependencies"), "dev", &mut out);
            }
        }
    }
    Ok((package, out))
}

fn poetry_section(section: Option<&toml::Value>, scope: &'static str, out: &mut Vec<Declared>) {
    let Some(section) = section.and_then(|s| s.as_table()) else {
        return;
    };
    for (name, value) in section.iter().filter(|(n, _)| n.as_str() != "python") {
        out.push(declared(name, cargo_requirement(value), scope));
    }
}

fn go_mod(text: &str) -> Parsed {
    let mut module = None;
    let mut out = Vec::new();
    let mut in_block = false;
    for line in text.lines() {
        let (code, comment) = line.split_once("//").unwrap_or((line, ""));
        let code = code.trim();
        let scope = if comment.trim() == "indirect" {
            "indirect"
        } else {
            "runtime"
        };
        if in_block {
            if code == ")" {
                in_block = false;
            } else if let Some(d) = go_requirement(code, scope) {
                out.push(d);
            }
        } else if let Some(rest) = code.strip_prefix("module ") {
            module = Some(rest.trim().trim_matches('"').to_string());
        } else if code == "require (" || code == "require(" {
            in_block = true;
        } else if let Some(rest) = code.strip_prefix("require ")
            && let Some(d) = go_requirement(rest, scope)
        {
            out.push(d);
        }
    }
    (module, out)
}

fn go_requirement(code: &str, scope: &'static str) -> Option<Declared> {
    let mut parts = code.split_whitespace();
    let path = parts.next()?.trim_matches('"');
    let version = parts.next().map(str::to_string);
    Some(declared(path, version, scope))
}

/// A dependency of one repository on another of the knowledge base.
#[derive(Debug, Clone, PartialEq)]
pub struct Edge {
    pub target: String,
    pub scope: &'static str,
    /// 0–100: 95 when the manifest names the repository (a GitHub module path or git URL), 60
    /// when a package is named like the repository.
    pub confidence: i32,
    pub evidence: String,
}

/// The knowledge-base repositories `manifests` depend on (`source` itself left out): one edge
/// per target and scope, the most confident evidence kept.
pub fn edges(source: &str, manifests: &[Manifest], repositories: &[String]) -> Vec<Edge> {
    let normal = |s: &str| s.to_ascii_lowercase().replace('_', "-");
    let mut found: BTreeMap<(String, &'static str), Edge> = BTreeMap::new();
    for manifest in manifests {
        for dep in &manifest.dependencies {
            let named = format!("{} {}", dep.name, dep.requirement.as_deref().unwrap_or(""));
            let named = named.to_ascii_lowercase();
            for repo in repositories.iter().filter(|r| r.as_str() != source) {
                let lower = repo.to_ascii_lowercase();
                let short = normal(repo.rsplit('/').next().unwrap_or(repo));
                let confidence = if names_repository(&named, &lower) {
                    95
                } else if normal(&dep.name) == short
                    || normal(dep.name.rsplit('/').next().unwrap_or("")) == short
                {
                    60
                } else {
                    continue;
                };
                let edge = Edge {
                    target: repo.clone(),
                    scope: dep.scope,
                    confidence,
                    evidence: format!("{} declares {}", manifest.path, dep.name),
                };
                let key = (repo.clone(), dep.scope);
                if found.get(&key).is_none_or(|e| e.confidence < confidence) {
                    found.insert(key, edge);
                }
            }
        }
    }
    found.into_values().collect()
}

/// Whether `text` holds `github.com/<repository>` followed by a separator or its end.
fn names_repository(text: &str, repository: &str) -> bool {
    let needle = format!("github.com/{repository}");
    text.match_indices(&needle).any(|(at, _)| {
        text[at + needle.len()..]
            .chars()
            .next()
            .is_none_or(|c| matches!(c, '/' | '.' | ' ' | '@' | '"' | '#'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(m: &Manifest) -> Vec<(&str, &str)> {
        m.dependencies
            .iter()
            .map(|d| (d.name.as_str(), d.scope))
            .collect()
    }

    #[test]
    fn cargo_sections_targets_and_renames() {
        let m = parse(
            "Cargo.toml",
            "[package]\nname = \"svc\"\n[dependencies]\nserde = \"1\"\nlib = { git = \"https://github.com/acme/lib\" }\nalias = { package = \"real\", version = \"2\" }\n[dev-dependencies]\ntempfile = \"3\"\n[target.'cfg(unix)'.dependencies]\nnix = \"0.31\"\n",
        )
        .unwrap();
        assert_eq!(m.package.as_deref(), Some("svc"));
        let mut found = names(&m);
        found.sort();
        assert_eq!(
            found,
            [
                ("lib", "runtime"),
                ("nix", "runtime"),
                ("real", "runtime"),
                ("serde", "runtime"),
                ("tempfile", "dev")
            ]
        );
        let lib = m.dependencies.iter().find(|d| d.name == "lib").unwrap();
        assert_eq!(
            lib.requirement.as_deref(),
            Some("https://github.com/acme/lib")
        );
    }

    #[test]
    fn line_formats() {
        let r = parse(
            "requirements.txt",
            "# pinned\nfastapi==0.110\nuvicorn[standard]>=0.29 ; python_version>'3.8'\n-r other.txt\n\n",
        )
        .unwrap();
        assert_eq!(names(&r), [("fastapi", "runtime"), ("uvicorn", "runtime")]);
        assert_eq!(r.dependencies[0].requirement.as_deref(), Some("==0.110"));
        let g = parse(
            "svc/go.mod",
            "module github.com/acme/svc\n\ngo 1.22\n\nrequire github.com/acme/lib v1.2.0\nrequire (\n\tgolang.org/x/sync v0.7.0 // indirect\n)\n",
        )
        .unwrap();
        assert_eq!(g.package.as_deref(), Some("github.com/acme/svc"));
        assert_eq!(
            names(&g),
            [
                ("github.com/acme/lib", "runtime"),
                ("golang.org/x/sync", "indirect")
            ]
        );
    }

    #[test]
    fn pyproject_and_package_json() {
        let p = parse(
            "pyproject.toml",
            "[project]\nname = \"tool\"\ndependencies = [\"httpx>=0.27\", \"pydantic\"]\n[project.optional-dependencies]\ntest = [\"pytest\"]\n",
        )
        .unwrap();
        assert_eq!(
            names(&p),
            [
                ("httpx", "runtime"),
                ("pydantic", "runtime"),
                ("pytest", "optional")
            ]
        );
        let n = parse(
            "web/package.json",
            r#"{"name": "web", "dependencies": {"react": "^18"}, "devDependencies": {"vite": "5"}}"#,
        )
        .unwrap();
        assert_eq!(names(&n), [("react", "runtime"), ("vite", "dev")]);
    }

    #[test]
    fn hostile_input_is_an_error_or_ignored_never_a_panic() {
        assert!(
            parse("Cargo.toml", "[dependencies\nserde = ")
                .unwrap_err()
                .starts_with("Cargo.toml: invalid TOML")
        );
        assert!(parse("package.json", "[1, 2]").is_err());
        assert!(parse("package.json", &"[".repeat(100_000)).is_err());
        assert!(parse("pyproject.toml", &"a = [".repeat(50_000)).is_err());
        let weird = parse(
            "package.json",
            r#"{"dependencies": {"ok": "1", "bad name; rm -rf": "1", "": "2", "n": 5}}"#,
        )
        .unwrap();
        assert_eq!(names(&weird), [("ok", "runtime"), ("n", "runtime")]);
        assert_eq!(weird.dependencies[1].requirement, None);
        let g = parse("go.mod", "require (\n\n)\nrequire\nmodule\n");
        assert!(g.is_ok());
    }

    #[test]
    fn edges_name_other_repositories() {
        let repos = vec!["acme/lib".to_string(), "acme/svc".to_string()];
        let m = parse(
            "go.mod",
            "module github.com/acme/svc\nrequire github.com/acme/lib v1\n",
        )
        .unwrap();
        let e = edges("acme/svc", &[m], &repos);
        assert_eq!(e.len(), 1);
        assert_eq!((e[0].target.as_str(), e[0].confidence), ("acme/lib", 95));
        let n = parse("package.json", r#"{"dependencies": {"lib": "1"}}"#).unwrap();
        assert_eq!(edges("acme/svc", &[n], &repos)[0].confidence, 60);
    }
}
