//! Static extraction of reusable components from a repository's source files, for
//! `scan_repository_components` (`docs/skill-rules.md`, "Component scan"): which files are
//! looked at, and for each file with a public API a component — name, type, language, public
//! items, imports, keywords, lines of code and an approximate cyclomatic complexity. No
//! language model; regular expressions per language. Pure functions.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use regex::Regex;

use super::component_scoring::tokens;
use super::tree::{Tree, file_name};

/// At most this many source files are read per scan.
const MAX_SCAN_FILES: usize = 40;
/// Larger files are not read.
const MAX_SCAN_BYTES: u64 = 200 * 1024;
/// Public items recorded per component.
const MAX_METHODS: usize = 50;
const MAX_IMPORTS: usize = 30;
const MAX_KEYWORDS: usize = 15;

/// Directories that hold no reusable code of the repository itself.
pub(crate) const SKIPPED_DIRS: &[&str] = &[
    "node_modules",
    "vendor",
    "third_party",
    "target",
    "dist",
    "build",
    ".git",
    "tests",
    "test",
    "__tests__",
    "spec",
    "testdata",
    "fixtures",
    "examples",
    "benches",
    "docs",
    "migrations",
];
/// Path words too generic to be keywords.
const GENERIC_WORDS: &[&str] = &[
    "src", "lib", "app", "pkg", "internal", "cmd", "main", "mod", "index", "crates", "packages",
    "init", "rs", "py", "js", "ts", "go", "java",
];

/// A supported language, by file extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    Rust,
    Python,
    JavaScript,
    TypeScript,
    Go,
    Java,
}

impl Language {
    pub fn of(path: &str) -> Option<Self> {
        let extension = path.rsplit_once('.')?.1;
        Some(match extension {
            "rs" => Language::Rust,
            "py" => Language::Python,
            "js" | "jsx" | "mjs" => Language::JavaScript,
            "ts" | "tsx" => Language::TypeScript,
            "go" => Language::Go,
            "java" => Language::Java,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Language::Rust => "rust",
            Language::Python => "python",
            Language::JavaScript => "javascript",
            Language::TypeScript => "typescript",
            Language::Go => "go",
            Language::Java => "java",
        }
    }
}

/// Tests, entry points and build scripts are not reusable components.
fn is_excluded_file(name: &str) -> bool {
    let lower = name.to_lowercase();
    let stem = lower.rsplit_once('.').map_or(lower.as_str(), |(s, _)| s);
    stem.starts_with("test_")
        || stem.ends_with("_test")
        || stem.ends_with("_tests")
        || stem.ends_with(".test")
        || stem.ends_with(".spec")
        || stem.ends_with(".d")
        || matches!(
            stem,
            "main" | "__main__" | "build" | "setup" | "conftest" | "manage"
        )
}

/// The source files a scan reads: supported languages, outside [`SKIPPED_DIRS`], not tests or
/// entry points, at most [`MAX_SCAN_BYTES`], in path order, at most [`MAX_SCAN_FILES`].
pub fn candidate_files(tree: &Tree) -> Vec<String> {
    tree.files
        .iter()
        .filter(|(path, size)| {
            Language::of(path).is_some()
                && **size <= MAX_SCAN_BYTES
                && !path
                    .split('/')
                    .rev()
                    .skip(1)
                    .any(|d| SKIPPED_DIRS.contains(&d))
                && !is_excluded_file(file_name(path))
        })
        .map(|(path, _)| path.clone())
        .take(MAX_SCAN_FILES)
        .collect()
}

/// A component found in one source file.
#[derive(Debug, Clone, PartialEq)]
pub struct Extracted {
    pub name: String,
    pub component_type: &'static str,
    pub language: &'static str,
    pub location: String,
    pub purpose: Option<String>,
    pub api_signature: Option<String>,
    pub imports: Vec<String>,
    pub keywords: Vec<String>,
    pub lines_of_code: i32,
    pub cyclomatic_complexity: f64,
    pub public_methods: Vec<String>,
}

fn regex(pattern: &str) -> Regex {
    Regex::new(pattern).expect("a valid built-in regex")
}

/// Public items: name and the line that declares it.
fn public_items(language: Language, text: &str) -> Vec<(String, String)> {
    static RUST: LazyLock<Regex> = LazyLock::new(|| {
        regex(
            r"(?m)^[ \t]*pub[ \t]+(?:async[ \t]+)?(?:unsafe[ \t]+)?(?:const[ \t]+)?(?:fn|struct|enum|trait|type)[ \t]+([A-Za-z_][A-Za-z0-9_]*)",
        )
    });
    static PYTHON: LazyLock<Regex> =
        LazyLock::new(|| regex(r"(?m)^(?:async[ \t]+)?(?:def|class)[ \t]+([A-Za-z][A-Za-z0-9_]*)"));
    static JS: LazyLock<Regex> = LazyLock::new(|| {
        regex(
            r"(?m)^[ \t]*export[ \t]+(?:default[ \t]+)?(?:abstract[ \t]+)?(?:async[ \t]+)?(?:function\*?|class|const|let|var|interface|type|enum)[ \t]+([A-Za-z_$][A-Za-z0-9_$]*)",
        )
    });
    static GO: LazyLock<Regex> = LazyLock::new(|| {
        regex(r"(?m)^(?:func[ \t]+(?:\([^)]*\)[ \t]*)?|type[ \t]+)([A-Z][A-Za-z0-9_]*)")
    });
    static JAVA: LazyLock<Regex> = LazyLock::new(|| {
        regex(
            r"(?m)^[ \t]*public[ \t]+(?:(?:static|final|abstract|synchronized|default)[ \t]+)*(?:(?:class|interface|enum|record)[ \t]+([A-Za-z_][A-Za-z0-9_]*)|[A-Za-z0-9_<>\[\],.? ]+[ \t]+([a-z][A-Za-z0-9_]*)[ \t]*\()",
        )
    });
    let re: &Regex = match language {
        Language::Rust => &RUST,
        Language::Python => &PYTHON,
        Language::JavaScript | Language::TypeScript => &JS,
        Language::Go => &GO,
        Language::Java => &JAVA,
    };
    let mut seen = BTreeSet::new();
    re.captures_iter(text)
        .filter_map(|c| {
            let name = c.get(1).or_else(|| c.get(2))?.as_str().to_string();
            let line = c.get(0)?.as_str().trim().to_string();
            seen.insert(name.clone()).then_some((name, line))
        })
        .collect()
}

/// Imported modules (top-level names for Rust, full paths otherwise).
fn imports(language: Language, text: &str) -> Vec<String> {
    static RUST: LazyLock<Regex> =
        LazyLock::new(|| regex(r"(?m)^[ \t]*(?:pub[ \t]+)?use[ \t]+([A-Za-z_][A-Za-z0-9_]*)"));
    static PYTHON: LazyLock<Regex> = LazyLock::new(|| {
        regex(r"(?m)^[ \t]*(?:import[ \t]+([\w.]+)|from[ \t]+([\w.]+)[ \t]+import)")
    });
    static JS: LazyLock<Regex> = LazyLock::new(|| {
        regex(r#"(?:\bfrom[ \t]+['"]([^'"]+)['"]|\brequire\(\s*['"]([^'"]+)['"]\s*\))"#)
    });
    static GO_ONE: LazyLock<Regex> =
        LazyLock::new(|| regex(r#"^import[ \t]+(?:\w+[ \t]+)?"([^"]+)""#));
    static GO_BLOCK: LazyLock<Regex> =
        LazyLock::new(|| regex(r#"^[ \t]*(?:[\w.]+[ \t]+)?"([^"]+)""#));
    static JAVA: LazyLock<Regex> =
        LazyLock::new(|| regex(r"(?m)^[ \t]*import[ \t]+(?:static[ \t]+)?([\w.]+)"));
    let mut found: Vec<String> = Vec::new();
    let mut push = |name: &str| {
        if !name.is_empty() && !found.iter().any(|f| f == name) && found.len() < MAX_IMPORTS {
            found.push(name.to_string());
        }
    };
    match language {
        Language::Go => {
            let mut in_block = false;
            for line in text.lines() {
                let trimmed = line.trim();
                if in_block {
                    if trimmed.starts_with(')') {
                        in_block = false;
                    } else if let Some(c) = GO_BLOCK.captures(line) {
                        push(&c[1]);
                    }
                } else if trimmed.starts_with("import (") {
                    in_block = true;
                } else if let Some(c) = GO_ONE.captures(trimmed) {
                    push(&c[1]);
                }
            }
        }
        other => {
            let re: &Regex = match other {
                Language::Rust => &RUST,
                Language::Python => &PYTHON,
                Language::Java => &JAVA,
                _ => &JS,
            };
            for c in re.captures_iter(text) {
                if let Some(m) = c.get(1).or_else(|| c.get(2)) {
                    push(m.as_str());
                }
            }
        }
    }
    found
}

fn is_comment(language: Language, line: &str) -> bool {
    match language {
        Language::Python => line.starts_with('#'),
        _ => line.starts_with("//") || line.starts_with("/*") || line.starts_with('*'),
    }
}

/// Non-blank lines that are not comments.
pub(crate) fn lines_of_code(language: Language, text: &str) -> i32 {
    let count = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !is_comment(language, l))
        .count();
    i32::try_from(count).unwrap_or(i32::MAX)
}

/// Functions plus decision points (`if`, `elif`, `for`, `while`, `case`, `catch`, `except`,
/// `when`, `&&`, `||`, and `=>` match arms in Rust), over code lines: the sum of every
/// function's McCabe number `1 + decisions`, approximated by counting tokens.
fn cyclomatic(language: Language, text: &str) -> f64 {
    let (functions, decisions) = functions_and_decisions(language, text);
    (functions.max(1) + decisions) as f64
}

/// Functions and decision points of a source text, counted as [`cyclomatic`] counts them
/// (`rules/complexity.rs` measures files with the same counts).
pub(crate) fn functions_and_decisions(language: Language, text: &str) -> (usize, usize) {
    let mut functions = 0usize;
    let mut decisions = 0usize;
    for line in text.lines() {
        let (f, d) = line_counts(language, line);
        functions += f;
        decisions += d;
    }
    (functions, decisions)
}

/// Functions and decision points on one line (none on blank and comment lines).
pub(crate) fn line_counts(language: Language, line: &str) -> (usize, usize) {
    static DECISION: LazyLock<Regex> =
        LazyLock::new(|| regex(r"\b(?:if|elif|for|while|case|catch|except|when)\b|&&|\|\|"));
    static RUST_FN: LazyLock<Regex> = LazyLock::new(|| regex(r"\bfn[ \t]+[A-Za-z_]"));
    static PY_FN: LazyLock<Regex> = LazyLock::new(|| regex(r"^[ \t]*(?:async[ \t]+)?def[ \t]"));
    static JS_FN: LazyLock<Regex> = LazyLock::new(|| regex(r"\bfunction\b|=>"));
    static GO_FN: LazyLock<Regex> = LazyLock::new(|| regex(r"^func[ \t]"));
    static JAVA_FN: LazyLock<Regex> =
        LazyLock::new(|| regex(r"^[ \t]*(?:public|private|protected)[ \t][^=;]*\("));
    let function: &Regex = match language {
        Language::Rust => &RUST_FN,
        Language::Python => &PY_FN,
        Language::JavaScript | Language::TypeScript => &JS_FN,
        Language::Go => &GO_FN,
        Language::Java => &JAVA_FN,
    };
    let trimmed = line.trim();
    if trimmed.is_empty() || is_comment(language, trimmed) {
        return (0, 0);
    }
    let mut decisions = DECISION.find_iter(line).count();
    if language == Language::Rust {
        decisions += line.matches("=>").count();
    }
    (function.find_iter(line).count(), decisions)
}

/// The first line of the file's leading comment or docstring (licence headers skipped).
fn purpose(text: &str) -> Option<String> {
    const MARKERS: &[&str] = &[
        "//!", "///", "//", "/**", "/*", "*/", "*", "#", "\"\"\"", "'''",
    ];
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with("#!") || line.starts_with("package ") {
            continue;
        }
        let marker = MARKERS.iter().find(|m| line.starts_with(*m))?;
        let body = line[marker.len()..]
            .trim()
            .trim_end_matches("*/")
            .trim_end_matches("\"\"\"")
            .trim_end_matches("'''")
            .trim();
        let lower = body.to_lowercase();
        if body.is_empty()
            || lower.starts_with("copyright")
            || lower.starts_with("spdx")
            || lower.contains("-*-")
            || lower.starts_with("eslint")
            || lower.starts_with("@ts-")
            || body.starts_with('@')
        {
            continue;
        }
        return Some(body.chars().take(200).collect());
    }
    None
}

/// `snake_case` / `camelCase` / `PascalCase` to `kebab-case`.
fn kebab(name: &str) -> String {
    let mut out = String::new();
    let mut previous: Option<char> = None;
    for c in name.chars() {
        if c.is_uppercase() && previous.is_some_and(|p| p.is_lowercase() || p.is_ascii_digit()) {
            out.push('-');
        }
        if c.is_alphanumeric() {
            out.extend(c.to_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
        previous = Some(c);
    }
    out.trim_matches('-').to_string()
}

/// The component's name: the file stem in kebab-case, or for module files (`mod.rs`,
/// `index.ts`, `__init__.py`, `lib.rs`) the name of the nearest directory that is not a
/// generic one (`src`, `lib`, …), else the stem.
fn base_name(path: &str) -> String {
    let name = file_name(path);
    let stem = name.rsplit_once('.').map_or(name, |(s, _)| s);
    if !matches!(stem, "mod" | "index" | "__init__" | "lib") {
        return kebab(stem);
    }
    let directory = path
        .rsplit('/')
        .skip(1)
        .find(|d| !GENERIC_WORDS.contains(&d.to_lowercase().as_str()));
    kebab(directory.unwrap_or(stem))
}

/// `api_client`, `infrastructure`, `data_model`, `service` or `module`, from the words of the
/// path.
pub fn classify(path: &str) -> &'static str {
    let words = tokens(path);
    let any = |list: &[&str]| list.iter().any(|w| words.contains(*w));
    if any(&["client", "api", "sdk", "http", "grpc"]) {
        "api_client"
    } else if any(&[
        "util", "utils", "helper", "helpers", "common", "shared", "infra", "config", "logging",
        "log",
    ]) {
        "infrastructure"
    } else if any(&[
        "model", "models", "schema", "entity", "entities", "types", "dto",
    ]) {
        "data_model"
    } else if any(&[
        "service",
        "services",
        "handler",
        "handlers",
        "controller",
        "server",
        "worker",
        "job",
        "jobs",
    ]) {
        "service"
    } else {
        "module"
    }
}

/// The component a source file defines, if it has a public API.
pub fn extract(path: &str, text: &str) -> Option<Extracted> {
    let language = Language::of(path)?;
    let items = public_items(language, text);
    if items.is_empty() {
        return None;
    }
    let keywords: Vec<String> = tokens(path.rsplit_once('.').map_or(path, |(p, _)| p))
        .into_iter()
        .filter(|w| !GENERIC_WORDS.contains(&w.as_str()))
        .take(MAX_KEYWORDS)
        .collect();
    let api_signature = items.first().map(|(_, line)| {
        line.trim_end_matches('{')
            .trim_end_matches(':')
            .trim()
            .chars()
            .take(200)
            .collect()
    });
    Some(Extracted {
        name: base_name(path),
        component_type: classify(path),
        language: language.as_str(),
        location: path.to_string(),
        purpose: purpose(text),
        api_signature,
        imports: imports(language, text),
        keywords,
        lines_of_code: lines_of_code(language, text),
        cyclomatic_complexity: cyclomatic(language, text),
        public_methods: items
            .into_iter()
            .map(|(n, _)| n)
            .take(MAX_METHODS)
            .collect(),
    })
}

/// The components found in a repository's files (path → text), with unique names: what a scan
/// records, whoever runs it (`scan_repository_components` or a workflow).
pub fn extract_all<'a>(
    files: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Vec<Extracted> {
    let mut found: Vec<Extracted> = files
        .into_iter()
        .filter_map(|(path, text)| extract(path, text))
        .collect();
    unique_names(&mut found);
    found
}

/// Makes names unique within one scan: a repeated name gets its parent directory as a prefix,
/// then a number.
pub fn unique_names(components: &mut [Extracted]) {
    let originals: Vec<String> = components.iter().map(|c| c.name.clone()).collect();
    let mut taken: BTreeSet<String> = BTreeSet::new();
    for (i, c) in components.iter_mut().enumerate() {
        let repeated = originals.iter().filter(|n| **n == originals[i]).count() > 1;
        let mut name = c.name.clone();
        if repeated {
            let parent = c.location.rsplit('/').nth(1).map(kebab).unwrap_or_default();
            if !parent.is_empty() && !name.starts_with(&format!("{parent}-")) {
                name = format!("{parent}-{name}");
            }
        }
        let mut candidate = name.clone();
        let mut n = 2;
        while taken.contains(&candidate) {
            candidate = format!("{name}-{n}");
            n += 1;
        }
        taken.insert(candidate.clone());
        c.name = candidate;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUST: &str = "//! Retry policy with exponential backoff.\n\nuse std::time::Duration;\nuse crate::http;\n\n\
        /// A policy.\npub struct RetryPolicy {\n    max: u32,\n}\n\nimpl RetryPolicy {\n    pub fn delay(&self, n: u32) -> Duration {\n        \
        if n > self.max && self.max > 0 {\n            Duration::ZERO\n        } else {\n            match n { 0 => Duration::ZERO, _ => Duration::from_secs(1) }\n        }\n    }\n    \
        fn private(&self) {}\n}\n";

    #[test]
    fn rust_files_become_components() {
        let c = extract("src/net/retry_policy.rs", RUST).unwrap();
        assert_eq!(c.name, "retry-policy");
        assert_eq!(c.language, "rust");
        assert_eq!(c.component_type, "module");
        assert_eq!(
            c.purpose.as_deref(),
            Some("Retry policy with exponential backoff.")
        );
        assert_eq!(c.public_methods, ["RetryPolicy", "delay"]);
        assert_eq!(c.api_signature.as_deref(), Some("pub struct RetryPolicy"));
        assert_eq!(c.imports, ["std", "crate"]);
        assert_eq!(c.keywords, ["net", "policy", "retry"]);
        // 2 functions; if, &&, else-if-less match with 2 arms.
        assert_eq!(c.cyclomatic_complexity, 2.0 + 1.0 + 1.0 + 2.0);
        assert_eq!(c.lines_of_code, 15);
    }

    #[test]
    fn other_languages() {
        let py = "\"\"\"Invoice helpers.\"\"\"\nimport json\nfrom decimal import Decimal\n\n\
                  def total(lines):\n    return sum(l for l in lines if l)\n\nclass _Hidden:\n    pass\n";
        let c = extract("billing/invoice.py", py).unwrap();
        assert_eq!((c.name.as_str(), c.language), ("invoice", "python"));
        assert_eq!(c.public_methods, ["total"]);
        assert_eq!(c.imports, ["json", "decimal"]);
        assert_eq!(c.purpose.as_deref(), Some("Invoice helpers."));

        let ts = "// Formatting for the UI.\nimport { x } from './x';\nconst y = require(\"y\");\n\
                  export function formatMoney(v: number): string { return v > 0 ? `${v}` : '' }\nexport const FORMAT = 1;\n";
        let c = extract("web/src/utils/formatMoney.ts", ts).unwrap();
        assert_eq!(
            (c.name.as_str(), c.component_type),
            ("format-money", "infrastructure")
        );
        assert_eq!(c.public_methods, ["formatMoney", "FORMAT"]);
        assert_eq!(c.imports, ["./x", "y"]);

        let go = "package client\n\nimport (\n\t\"net/http\"\n\tlog \"github.com/x/log\"\n)\n\nfunc New() *Client { return nil }\nfunc (c *Client) Get() {}\nfunc private() {}\ntype Client struct{}\n";
        let c = extract("pkg/client/client.go", go).unwrap();
        assert_eq!(c.public_methods, ["New", "Get", "Client"]);
        assert_eq!(c.imports, ["net/http", "github.com/x/log"]);
        assert_eq!(c.component_type, "api_client");

        let java = "import java.util.List;\npublic class Ledger {\n  public List<String> entries(int n) { return null; }\n  private void x() {}\n}\n";
        let c = extract("src/main/java/Ledger.java", java).unwrap();
        assert_eq!(c.public_methods, ["Ledger", "entries"]);
        assert_eq!(c.imports, ["java.util.List"]);

        assert!(extract("src/internal.rs", "fn only_private() {}\n").is_none());
        assert!(extract("README.md", "# x").is_none());
    }

    #[test]
    fn candidate_files_skip_tests_entry_points_and_vendored_code() {
        let tree = Tree::from_paths([
            "src/lib.rs",
            "src/main.rs",
            "src/http/client.rs",
            "tests/api.rs",
            "pkg/x_test.go",
            "web/a.spec.ts",
            "web/types.d.ts",
            "node_modules/x/index.js",
            "scripts/tool.py",
            "README.md",
        ]);
        assert_eq!(
            candidate_files(&tree),
            ["scripts/tool.py", "src/http/client.rs", "src/lib.rs"]
        );
    }

    #[test]
    fn names_are_unique_within_a_scan() {
        let mut list: Vec<Extracted> = [
            "src/http/client.rs",
            "src/grpc/client.rs",
            "src/grpc/mod.rs",
            "src/util.rs",
            "src/lib.rs",
            "crates/ledger/src/lib.rs",
        ]
        .iter()
        .map(|p| extract(p, "pub fn x() {}\n").unwrap())
        .collect();
        unique_names(&mut list);
        let names: Vec<&str> = list.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "http-client",
                "grpc-client",
                "grpc",
                "util",
                "lib",
                "ledger"
            ]
        );
        assert_eq!(kebab("HTTPServer_v2"), "httpserver-v2");
        assert_eq!(kebab("formatMoney"), "format-money");
    }
}
