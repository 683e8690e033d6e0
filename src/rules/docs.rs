//! nexusd's documentation rules (`docs/skill-rules.md`), as pure functions over a repository's
//! file tree and file texts: which documents a repository must have, and the checks each
//! document gets — completeness, update stamps, file paths, internal links, code examples and,
//! for the licence file, a recognisable licence. The skills in `documentation.rs` fetch the
//! inputs from GitHub and assemble the report; nothing here does I/O.

use std::sync::LazyLock;

use chrono::{DateTime, NaiveDate, Utc};
use regex::Regex;

use super::tree::{Tree, is_markdown, parent_dir, resolve_path};

/// Critical violations a check lists at most.
const MAX_CRITICAL_LISTED: usize = 10;
/// Recommendations a check gives at most.
const MAX_RECOMMENDATIONS: usize = 15;

/// How much a document matters; also the severity of its violations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Priority {
    Critical,
    High,
    Medium,
    Low,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Critical => "critical",
            Priority::High => "high",
            Priority::Medium => "medium",
            Priority::Low => "low",
        }
    }
}

/// A document nexusd looks for, under any of its names, in the root, `docs/` or `.github/`.
pub struct RequiredDoc {
    pub name: &'static str,
    pub alternatives: &'static [&'static str],
    pub priority: Priority,
    /// The licence file: gets the licence check instead of the Markdown checks.
    pub licence: bool,
}

const fn doc(
    name: &'static str,
    alternatives: &'static [&'static str],
    priority: Priority,
) -> RequiredDoc {
    RequiredDoc {
        name,
        alternatives,
        priority,
        licence: false,
    }
}

/// Licence file names, in order of preference.
const LICENCE_NAMES: &[&str] = &[
    "LICENSE",
    "LICENSE.md",
    "LICENSE.txt",
    "LICENCE",
    "LICENCE.md",
    "LICENCE.txt",
    "COPYING",
    "COPYING.md",
];

/// The priority documents. A missing critical or high one is a violation; medium and low ones
/// are checked when present.
pub const PRIORITY_DOCS: &[RequiredDoc] = &[
    doc(
        "README.md",
        &["README.md", "README.markdown"],
        Priority::Critical,
    ),
    RequiredDoc {
        name: "LICENSE",
        alternatives: LICENCE_NAMES,
        priority: Priority::Critical,
        licence: true,
    },
    doc("CONTRIBUTING.md", &["CONTRIBUTING.md"], Priority::High),
    doc(
        "CHANGELOG.md",
        &["CHANGELOG.md", "CHANGES.md", "HISTORY.md"],
        Priority::High,
    ),
    doc("ARCHITECTURE.md", &["ARCHITECTURE.md"], Priority::Medium),
    doc("SECURITY.md", &["SECURITY.md"], Priority::Medium),
    doc(
        "TROUBLESHOOTING.md",
        &["TROUBLESHOOTING.md"],
        Priority::Medium,
    ),
    doc("DEPLOYMENT.md", &["DEPLOYMENT.md"], Priority::Medium),
    doc("CODE_OF_CONDUCT.md", &["CODE_OF_CONDUCT.md"], Priority::Low),
    doc("FAQ.md", &["FAQ.md"], Priority::Low),
];

/// Where priority documents are looked for, in order.
const DOC_DIRS: &[&str] = &["", "docs", ".github"];

/// Directories never searched for documentation (dependencies, build output).
pub const SKIPPED_DIRS: &[&str] = &[
    "node_modules",
    "vendor",
    "third_party",
    "target",
    "dist",
    "build",
    ".git",
];

/// At most this many documents are read per call.
const MAX_DOCUMENTS: usize = 100;
/// A stamp older than this many days is stale.
const STALE_STAMP_DAYS: i64 = 180;
/// A document needs at least this many words of prose to be complete.
const MIN_WORDS: usize = 30;

/// The first file of the tree matching one of `doc`'s names (case-insensitive) in
/// [`DOC_DIRS`] order.
pub fn locate(tree: &Tree, doc: &RequiredDoc) -> Option<String> {
    // Candidates in order of preference; one pass over the (possibly huge) tree.
    let wanted: Vec<String> = DOC_DIRS
        .iter()
        .flat_map(|dir| {
            doc.alternatives.iter().map(move |name| {
                if dir.is_empty() {
                    name.to_lowercase()
                } else {
                    format!("{dir}/{name}").to_lowercase()
                }
            })
        })
        .collect();
    tree.paths()
        .filter(|p| p.matches('/').count() <= 1)
        .filter_map(|p| {
            let lower = p.to_lowercase();
            wanted
                .iter()
                .position(|w| *w == lower)
                .map(|rank| (rank, p))
        })
        .min_by_key(|(rank, _)| *rank)
        .map(|(_, p)| p.to_string())
}

/// A document chosen for checking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selected {
    pub path: String,
    pub priority: Priority,
    pub licence: bool,
}

/// What to check: the documents found, and the critical/high ones that are missing.
pub struct Selection {
    pub documents: Vec<Selected>,
    pub missing: Vec<&'static RequiredDoc>,
    /// Documents beyond [`MAX_DOCUMENTS`], not checked.
    pub skipped: Vec<String>,
}

fn in_skipped_dir(path: &str) -> bool {
    path.split('/')
        .rev()
        .skip(1)
        .any(|segment| SKIPPED_DIRS.contains(&segment))
}

/// The priority documents present (and, with `all_docs`, every Markdown file outside
/// [`SKIPPED_DIRS`] as low priority), most important first, capped at [`MAX_DOCUMENTS`].
pub fn select(tree: &Tree, all_docs: bool) -> Selection {
    let mut documents: Vec<Selected> = Vec::new();
    let mut missing = Vec::new();
    for doc in PRIORITY_DOCS {
        match locate(tree, doc) {
            Some(path) => documents.push(Selected {
                path,
                priority: doc.priority,
                licence: doc.licence,
            }),
            None if doc.priority <= Priority::High => missing.push(doc),
            None => {}
        }
    }
    if all_docs {
        for path in tree.paths() {
            if is_markdown(path)
                && !in_skipped_dir(path)
                && !documents.iter().any(|d| d.path == path)
            {
                documents.push(Selected {
                    path: path.to_string(),
                    priority: Priority::Low,
                    licence: false,
                });
            }
        }
    }
    documents.sort_by(|a, b| a.priority.cmp(&b.priority).then(a.path.cmp(&b.path)));
    let skipped = documents
        .split_off(documents.len().min(MAX_DOCUMENTS))
        .into_iter()
        .map(|d| d.path)
        .collect();
    Selection {
        documents,
        missing,
        skipped,
    }
}

/// Whether the tree holds any documentation at all (a Markdown file or a licence).
pub fn has_documentation(tree: &Tree) -> bool {
    tree.paths().any(|p| {
        is_markdown(p) && !in_skipped_dir(p)
            || LICENCE_NAMES.iter().any(|n| p.eq_ignore_ascii_case(n))
    })
}

/// One rule broken.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    pub check: &'static str,
    pub severity: Priority,
    pub message: String,
    pub recommendation: String,
}

/// The checks of one document.
#[derive(Debug, Clone, PartialEq)]
pub struct FileReport {
    pub file: String,
    pub priority: Priority,
    pub checks_performed: usize,
    pub violations: Vec<Violation>,
    /// The licence recognised in a licence file.
    pub licence: Option<&'static str>,
}

/// A required document that is missing: one check (presence), one violation.
fn missing_report(doc: &RequiredDoc) -> FileReport {
    let places = "the repository root, docs/ or .github/";
    FileReport {
        file: doc.name.to_string(),
        priority: doc.priority,
        checks_performed: 1,
        violations: vec![Violation {
            check: "presence",
            severity: doc.priority,
            message: format!(
                "{} is missing (looked for {} in {places})",
                doc.name,
                doc.alternatives.join(", ")
            ),
            recommendation: format!("Add {} to the repository root", doc.name),
        }],
        licence: None,
    }
}

/// Runs the checks of one document: the licence check for a licence file, otherwise the five
/// Markdown checks.
fn check_document(
    selected: &Selected,
    content: &str,
    tree: &Tree,
    now: DateTime<Utc>,
) -> FileReport {
    let severity = selected.priority;
    let path = selected.path.as_str();
    let mut report = FileReport {
        file: selected.path.clone(),
        priority: selected.priority,
        checks_performed: 0,
        violations: Vec::new(),
        licence: None,
    };
    let mut record = |check: &'static str, result: Option<(String, String)>| {
        report.checks_performed += 1;
        if let Some((message, recommendation)) = result {
            report.violations.push(Violation {
                check,
                severity,
                message,
                recommendation,
            });
        }
    };
    if selected.licence {
        let licence = identify_licence(content);
        record(
            "licence",
            licence.is_none().then(|| {
                (
                    format!("{path} does not contain a recognisable licence text"),
                    "Use the unmodified text of a standard licence (e.g. from choosealicense.com) \
                     or add an SPDX-License-Identifier line"
                        .to_string(),
                )
            }),
        );
        report.licence = licence;
        return report;
    }
    let doc = Markdown::parse(content);
    record("completeness", completeness(path, &doc));
    record("update_stamps", update_stamps(path, &doc, now));
    record("file_paths", file_paths(path, &doc, tree));
    record("internal_links", internal_links(path, &doc, tree));
    record("code_examples", code_examples(path, &doc));
    report
}

/// The reports of a check: one per missing document, then one per document read (`documents`
/// pairs each with its text), ordered by priority, then by file.
pub fn check_documents(
    missing: &[&RequiredDoc],
    documents: &[(&Selected, &str)],
    tree: &Tree,
    now: DateTime<Utc>,
) -> Vec<FileReport> {
    let mut reports: Vec<FileReport> = missing.iter().map(|doc| missing_report(doc)).collect();
    for (doc, text) in documents {
        reports.push(check_document(doc, text, tree, now));
    }
    reports.sort_by(|a, b| a.priority.cmp(&b.priority).then(a.file.cmp(&b.file)));
    reports
}

/// The first [`MAX_CRITICAL_LISTED`] critical violations, in report order, with their file.
pub fn critical_violations(reports: &[FileReport]) -> Vec<(&str, &Violation)> {
    reports
        .iter()
        .flat_map(|r| r.violations.iter().map(move |v| (r.file.as_str(), v)))
        .filter(|(_, v)| v.severity == Priority::Critical)
        .take(MAX_CRITICAL_LISTED)
        .collect()
}

/// `[SEVERITY] recommendation` lines, most severe first, each once, at most
/// [`MAX_RECOMMENDATIONS`].
pub fn recommendations(reports: &[FileReport]) -> Vec<String> {
    let mut violations: Vec<&Violation> = reports.iter().flat_map(|r| &r.violations).collect();
    violations.sort_by_key(|v| v.severity);
    let mut lines: Vec<String> = Vec::new();
    for v in violations {
        let line = format!(
            "[{}] {}",
            v.severity.as_str().to_uppercase(),
            v.recommendation
        );
        if !lines.contains(&line) && lines.len() < MAX_RECOMMENDATIONS {
            lines.push(line);
        }
    }
    lines
}

/// A Markdown document split into prose and fenced code.
pub struct Markdown<'a> {
    /// Prose lines (1-based line number, text), outside fenced code.
    pub prose: Vec<(usize, &'a str)>,
    pub fences: Vec<Fence>,
}

/// One fenced code block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// Line of the opening fence (1-based).
    pub line: usize,
    /// The info string (language).
    pub info: String,
    pub closed: bool,
    /// No non-blank line inside.
    pub empty: bool,
}

/// A fence marker: at most 3 spaces of indent, then 3+ backticks or tildes.
fn fence_marker(line: &str) -> Option<(char, usize, &str)> {
    let indent = line.len() - line.trim_start_matches(' ').len();
    if indent > 3 {
        return None;
    }
    let rest = &line[indent..];
    let ch = rest.chars().next().filter(|c| *c == '`' || *c == '~')?;
    let count = rest.chars().take_while(|c| *c == ch).count();
    if count < 3 {
        return None;
    }
    let info = rest[count..].trim();
    if ch == '`' && info.contains('`') {
        return None;
    }
    Some((ch, count, info))
}

impl<'a> Markdown<'a> {
    pub fn parse(text: &'a str) -> Self {
        let mut prose = Vec::new();
        let mut fences: Vec<Fence> = Vec::new();
        let mut open: Option<(char, usize)> = None;
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            match (open, fence_marker(line)) {
                (None, Some((ch, count, info))) => {
                    open = Some((ch, count));
                    fences.push(Fence {
                        line: number,
                        info: info.to_string(),
                        closed: false,
                        empty: true,
                    });
                }
                (None, None) => prose.push((number, line)),
                (Some((ch, count)), Some((c, n, info)))
                    if c == ch && n >= count && info.is_empty() =>
                {
                    open = None;
                    if let Some(f) = fences.last_mut() {
                        f.closed = true;
                    }
                }
                (Some(_), _) => {
                    if !line.trim().is_empty()
                        && let Some(f) = fences.last_mut()
                    {
                        f.empty = false;
                    }
                }
            }
        }
        Markdown { prose, fences }
    }

    /// Headings (level, text): ATX (`# x`), setext (`x` over `===`/`---`) and HTML `<h1>`–`<h6>`.
    pub fn headings(&self) -> Vec<(usize, String)> {
        static ATX: LazyLock<Regex> =
            LazyLock::new(|| Regex::new(r"^ {0,3}(#{1,6})[ \t]+(.*?)[ \t#]*$").expect("regex"));
        static HTML: LazyLock<Regex> = LazyLock::new(|| {
            Regex::new(r"(?i)<h([1-6])[^>]*>(.*?)(?:</h[1-6]>|$)").expect("regex")
        });
        static TAGS: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"<[^>]*>").expect("regex"));
        let mut headings = Vec::new();
        let mut previous: Option<(usize, &str)> = None;
        for &(number, line) in &self.prose {
            let trimmed = line.trim();
            if let Some(c) = ATX.captures(line) {
                headings.push((c[1].len(), c[2].trim().to_string()));
            } else if let Some(c) = HTML.captures(line) {
                let level = c[1].parse().unwrap_or(1);
                headings.push((level, TAGS.replace_all(&c[2], "").trim().to_string()));
            } else if let Some((prev_number, prev)) = previous
                && prev_number + 1 == number
                && !prev.trim().is_empty()
                && !trimmed.is_empty()
                && (trimmed.chars().all(|c| c == '=') || trimmed.chars().all(|c| c == '-'))
                && !ATX.is_match(prev)
            {
                let level = if trimmed.starts_with('=') { 1 } else { 2 };
                headings.push((level, prev.trim().to_string()));
            }
            previous = Some((number, line));
        }
        headings
    }

    /// Words of prose (tokens with a letter or digit).
    fn word_count(&self) -> usize {
        self.prose
            .iter()
            .flat_map(|(_, l)| l.split_whitespace())
            .filter(|w| w.chars().any(char::is_alphanumeric))
            .count()
    }

    /// Inline code spans of the prose.
    fn code_spans(&self) -> Vec<(usize, String)> {
        static SPAN: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"`([^`\n]+)`").expect("regex"));
        self.prose
            .iter()
            .flat_map(|&(n, l)| {
                SPAN.captures_iter(l)
                    .map(move |c| (n, c[1].trim().to_string()))
            })
            .collect()
    }

    /// Link targets of the prose: inline links and images, reference definitions, HTML
    /// `href`/`src`; code spans are ignored.
    fn link_targets(&self) -> Vec<(usize, String)> {
        static SPAN: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"`[^`\n]+`").expect("regex"));
        static INLINE: LazyLock<Regex> = LazyLock::new(|| {
            Regex::new(r#"\]\(\s*<?([^)\s>]+)>?(?:\s+["'(][^)]*)?\)"#).expect("regex")
        });
        static DEFINITION: LazyLock<Regex> =
            LazyLock::new(|| Regex::new(r"^ {0,3}\[[^\]]+\]:\s*<?([^\s>]+)>?").expect("regex"));
        static HTML: LazyLock<Regex> = LazyLock::new(|| {
            Regex::new(r#"(?i)\b(?:href|src)\s*=\s*["']([^"']+)["']"#).expect("regex")
        });
        let mut targets = Vec::new();
        for &(n, line) in &self.prose {
            let line = SPAN.replace_all(line, "");
            for re in [&*INLINE, &*DEFINITION, &*HTML] {
                targets.extend(re.captures_iter(&line).map(|c| (n, c[1].to_string())));
            }
        }
        targets
    }
}

fn is_readme(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path).to_lowercase();
    name == "readme.md" || name == "readme.markdown"
}

static SETUP_SECTION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(install(ation|ing)?|setup|set up|getting started|quick ?start|requirements|prerequisites|build(ing)?)\b")
        .expect("regex")
});
static USAGE_SECTION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\b(usage|examples?|how to use|running|run|quick ?start|getting started)\b")
        .expect("regex")
});

/// README headings naming a setup section and a usage section.
pub fn readme_sections(doc: &Markdown<'_>) -> (bool, bool) {
    let headings = doc.headings();
    (
        headings.iter().any(|(_, h)| SETUP_SECTION.is_match(h)),
        headings.iter().any(|(_, h)| USAGE_SECTION.is_match(h)),
    )
}

/// Completeness: a level-1 heading, at least [`MIN_WORDS`] words of prose, and for a README
/// a setup section and a usage section.
pub fn completeness(path: &str, doc: &Markdown<'_>) -> Option<(String, String)> {
    let mut problems = Vec::new();
    if !doc.headings().iter().any(|(level, _)| *level == 1) {
        problems.push("no level-1 title".to_string());
    }
    let words = doc.word_count();
    if words < MIN_WORDS {
        problems.push(format!(
            "only {words} words of prose (at least {MIN_WORDS} expected)"
        ));
    }
    if is_readme(path) {
        let (setup, usage) = readme_sections(doc);
        if !setup {
            problems.push("no installation/setup section".into());
        }
        if !usage {
            problems.push("no usage/example section".into());
        }
    }
    (!problems.is_empty()).then(|| {
        (
            format!("{path} is incomplete: {}", problems.join("; ")),
            format!("Complete {path}: start with a '# Title', explain the purpose, and (README) add Installation and Usage sections"),
        )
    })
}

/// A date written in an update stamp: `2026-01-31`, `January 31, 2026`, `Jan 31 2026`,
/// `31 January 2026`.
fn parse_stamp_date(text: &str) -> Option<NaiveDate> {
    let cleaned = text.replace([',', '.'], " ");
    let cleaned = cleaned.split_whitespace().collect::<Vec<_>>().join(" ");
    ["%Y-%m-%d", "%B %d %Y", "%b %d %Y", "%d %B %Y", "%d %b %Y"]
        .iter()
        .find_map(|f| NaiveDate::parse_from_str(&cleaned, f).ok())
}

/// Update stamps (`Last updated: <date>`, `Last modified`, `Last reviewed`, `Updated on`):
/// none may be older than [`STALE_STAMP_DAYS`] or in the future. A document without a stamp
/// passes.
pub fn update_stamps(
    path: &str,
    doc: &Markdown<'_>,
    now: DateTime<Utc>,
) -> Option<(String, String)> {
    static STAMP: LazyLock<Regex> = LazyLock::new(|| {
        let month = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?";
        Regex::new(&format!(
            r"(?i)\b(?:last[ \t]+(?:updated|modified|reviewed)|updated(?:[ \t]+on)?)\b[ \t*_]*[:\-–—]?[ \t*_]*(\d{{4}}-\d{{2}}-\d{{2}}|{month}[ \t]+\d{{1,2}},?[ \t]+\d{{4}}|\d{{1,2}}[ \t]+{month}[ \t]+\d{{4}})"
        ))
        .expect("regex")
    });
    let today = now.date_naive();
    let mut problems = Vec::new();
    for &(n, line) in &doc.prose {
        for c in STAMP.captures_iter(line) {
            let Some(date) = parse_stamp_date(&c[1]) else {
                continue;
            };
            let age = (today - date).num_days();
            if age > STALE_STAMP_DAYS {
                problems.push(format!("line {n}: stamp {date} is {age} days old"));
            } else if age < -1 {
                problems.push(format!("line {n}: stamp {date} is in the future"));
            }
        }
    }
    (!problems.is_empty()).then(|| {
        (
            format!("{path} has stale update stamps: {}", problems.join("; ")),
            format!("Review {path} and refresh its 'Last updated' date (stamps older than {STALE_STAMP_DAYS} days are stale)"),
        )
    })
}

/// Problems listed in a message: the first five, then "and N more".
fn listed(items: &[String]) -> String {
    let mut text = items.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    if items.len() > 5 {
        text.push_str(&format!(" and {} more", items.len() - 5));
    }
    text
}

/// Whether an inline code span looks like a path of a file in the repository: relative,
/// at least one `/`, a file extension, only `[A-Za-z0-9_.-/]`, and a first segment that is not
/// a host name (`example.com/…`).
fn looks_like_repo_path(span: &str) -> bool {
    static PATH: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"^(?:\.{1,2}/)*\.?[A-Za-z0-9_][A-Za-z0-9_.\-]*(?:/[A-Za-z0-9_.\-]+)+$")
            .expect("regex")
    });
    static EXTENSION: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"[^/.]\.[A-Za-z0-9]{1,10}$").expect("regex"));
    if !PATH.is_match(span) || !EXTENSION.is_match(span) {
        return false;
    }
    let first = span
        .split('/')
        .find(|s| *s != "." && *s != "..")
        .unwrap_or("");
    first.starts_with('.') || !first.contains('.')
}

/// File paths: every inline code span that looks like a repository path must name a file or
/// directory — relative to the document, to the root, or as the tail of a path in the tree.
fn file_paths(path: &str, doc: &Markdown<'_>, tree: &Tree) -> Option<(String, String)> {
    let dir = parent_dir(path);
    let mut missing: Vec<String> = Vec::new();
    for (n, span) in doc.code_spans() {
        if !looks_like_repo_path(&span) {
            continue;
        }
        let bare = span.trim_start_matches("./");
        let found = resolve_path(dir, &span).is_some_and(|p| tree.exists(&p))
            || (!span.starts_with("..")
                && (tree.exists(bare) || tree.paths().any(|p| p.ends_with(&format!("/{bare}")))));
        if !found && !missing.iter().any(|m| m.starts_with(&format!("{span} "))) {
            missing.push(format!("{span} (line {n})"));
        }
    }
    (!missing.is_empty()).then(|| {
        (
            format!(
                "{path} mentions files that do not exist: {}",
                listed(&missing)
            ),
            format!("Update the file paths in {path} to match the repository"),
        )
    })
}

/// `%XX` escapes decoded (invalid ones kept as written).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 3 <= bytes.len()
            && let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Internal links: every relative link target (not a URL, not an anchor) must exist,
/// resolved against the document's directory (`/…` from the root). Targets that climb above
/// the root (`../../issues`) are pages of the repository's website, not files, and are not
/// checked.
pub fn internal_links(path: &str, doc: &Markdown<'_>, tree: &Tree) -> Option<(String, String)> {
    static SCHEME: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"^[A-Za-z][A-Za-z0-9+.\-]*:").expect("regex"));
    let dir = parent_dir(path);
    let mut broken: Vec<String> = Vec::new();
    for (n, target) in doc.link_targets() {
        if target.is_empty()
            || target.starts_with('#')
            || target.starts_with("//")
            || target.contains("{{")
            || SCHEME.is_match(&target)
        {
            continue;
        }
        let file = target.split(['#', '?']).next().unwrap_or("");
        if file.is_empty() {
            continue;
        }
        let file = percent_decode(file);
        let Some(resolved) = resolve_path(dir, file.trim_end_matches('/')) else {
            continue;
        };
        if !tree.exists(&resolved) {
            broken.push(format!("{target} (line {n})"));
        }
    }
    (!broken.is_empty()).then(|| {
        (
            format!("{path} has broken relative links: {}", listed(&broken)),
            format!("Fix or remove the broken links in {path}"),
        )
    })
}

/// Code examples: every fence closed, every fence names its language, no empty blocks.
pub fn code_examples(path: &str, doc: &Markdown<'_>) -> Option<(String, String)> {
    let mut problems = Vec::new();
    if let Some(open) = doc.fences.iter().find(|f| !f.closed) {
        problems.push(format!(
            "the code block opened on line {} is never closed",
            open.line
        ));
    }
    let untagged: Vec<String> = doc
        .fences
        .iter()
        .filter(|f| f.info.is_empty())
        .map(|f| f.line.to_string())
        .collect();
    if !untagged.is_empty() {
        problems.push(format!(
            "code blocks without a language on line(s) {}",
            listed(&untagged)
        ));
    }
    let empty: Vec<String> = doc
        .fences
        .iter()
        .filter(|f| f.empty && f.closed)
        .map(|f| f.line.to_string())
        .collect();
    if !empty.is_empty() {
        problems.push(format!("empty code blocks on line(s) {}", listed(&empty)));
    }
    (!problems.is_empty()).then(|| {
        (
            format!(
                "{path} has malformed code examples: {}",
                problems.join("; ")
            ),
            format!(
                "Close every ``` block in {path} and give each one a language (```bash, ```rust, …)"
            ),
        )
    })
}

/// The licence a text is, from markers of common licences (or an SPDX identifier).
pub fn identify_licence(text: &str) -> Option<&'static str> {
    static SPDX: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"SPDX-License-Identifier:\s*\S+").expect("regex"));
    const MARKERS: &[(&str, &str)] = &[
        ("gnu affero general public license", "AGPL"),
        ("gnu lesser general public license", "LGPL"),
        ("gnu general public license", "GPL"),
        ("apache license", "Apache-2.0"),
        ("mozilla public license", "MPL-2.0"),
        ("eclipse public license", "EPL"),
        ("boost software license", "BSL-1.0"),
        ("permission is hereby granted, free of charge", "MIT"),
        ("mit license", "MIT"),
        ("isc license", "ISC"),
        ("redistribution and use in source and binary forms", "BSD"),
        ("this is free and unencumbered software", "Unlicense"),
        ("creative commons", "CC"),
    ];
    let lower = text.to_lowercase();
    let lower = lower.split_whitespace().collect::<Vec<_>>().join(" ");
    MARKERS
        .iter()
        .find(|(marker, _)| lower.contains(marker))
        .map(|(_, name)| *name)
        .or_else(|| SPDX.is_match(text).then_some("SPDX"))
}

/// Totals over the reports.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Totals {
    pub checks: usize,
    pub violations: usize,
    pub critical: usize,
    pub high: usize,
    pub medium: usize,
    pub low: usize,
}

pub fn totals(reports: &[FileReport]) -> Totals {
    let mut t = Totals::default();
    for r in reports {
        t.checks += r.checks_performed;
        for v in &r.violations {
            t.violations += 1;
            match v.severity {
                Priority::Critical => t.critical += 1,
                Priority::High => t.high += 1,
                Priority::Medium => t.medium += 1,
                Priority::Low => t.low += 1,
            }
        }
    }
    t
}

/// `1 − violations / checks`, rounded to 2 decimals (1.0 with no checks).
pub fn compliance_score(t: &Totals) -> f64 {
    if t.checks == 0 {
        return 1.0;
    }
    let score = 1.0 - t.violations as f64 / t.checks as f64;
    (score.max(0.0) * 100.0).round() / 100.0
}

/// Status and emoji: `compliant` (score ≥ 0.9, no critical violation), `mostly_compliant`
/// (≥ 0.7, no critical), `needs_improvement` (≥ 0.5), else `non_compliant`.
pub fn status(score: f64, critical: usize) -> (&'static str, &'static str) {
    if critical == 0 && score >= 0.9 {
        ("compliant", "✅")
    } else if critical == 0 && score >= 0.7 {
        ("mostly_compliant", "⚠️")
    } else if score >= 0.5 {
        ("needs_improvement", "🔶")
    } else {
        ("non_compliant", "❌")
    }
}

/// What a changed file is, for `validate_documentation_update`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Doc,
    Code { core: bool },
    Other,
}

/// Extensions of source code.
const CODE_EXTENSIONS: &[&str] = &[
    "rs", "py", "js", "jsx", "ts", "tsx", "go", "java", "kt", "rb", "cs", "swift", "c", "h", "cc",
    "cpp", "hpp", "php", "scala",
];
/// File stems of entry points and central modules.
const CORE_STEMS: &[&str] = &["main", "lib", "server", "app", "index", "mod", "api"];
/// Directory names whose code is core.
const CORE_DIRS: &[&str] = &["core", "api"];

/// Markdown is documentation; a [`CODE_EXTENSIONS`] file is code, core when its stem is in
/// [`CORE_STEMS`] or a directory of its path is in [`CORE_DIRS`]; anything else is other.
pub fn classify_file(path: &str) -> FileKind {
    if is_markdown(path) {
        return FileKind::Doc;
    }
    let name = path.rsplit('/').next().unwrap_or(path);
    let Some((stem, extension)) = name.rsplit_once('.') else {
        return FileKind::Other;
    };
    if !CODE_EXTENSIONS.contains(&extension.to_lowercase().as_str()) {
        return FileKind::Other;
    }
    let core = CORE_STEMS.contains(&stem.to_lowercase().as_str())
        || path
            .split('/')
            .rev()
            .skip(1)
            .any(|dir| CORE_DIRS.contains(&dir.to_lowercase().as_str()));
    FileKind::Code { core }
}

/// One file changed by one commit.
#[derive(Debug, Clone, PartialEq)]
pub struct ChangedFile {
    pub file: String,
    pub commit: String,
    pub date: Option<DateTime<Utc>>,
    pub message: String,
}

/// A warning of `validate_documentation_update`.
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateWarning {
    pub severity: Priority,
    pub message: String,
    pub recommendation: String,
}

/// The verdict on a timeframe's changes.
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateVerdict {
    pub status: &'static str,
    pub message: String,
    pub warnings: Vec<UpdateWarning>,
}

/// The distinct files of some changes, sorted.
pub fn distinct_files(changes: &[ChangedFile]) -> Vec<&str> {
    let mut files: Vec<&str> = changes.iter().map(|c| c.file.as_str()).collect();
    files.sort_unstable();
    files.dedup();
    files
}

/// `no_changes` without code or doc changes; `non_compliant` when code changed and no
/// document did (warning `high` if a core file changed, else `medium`); otherwise `compliant`,
/// with a `low` warning when every doc change is older than the newest code change.
pub fn judge_update(code: &[ChangedFile], docs: &[ChangedFile]) -> UpdateVerdict {
    let code_files = distinct_files(code);
    let doc_files = distinct_files(docs);
    if code_files.is_empty() && doc_files.is_empty() {
        return UpdateVerdict {
            status: "no_changes",
            message: "No code or documentation changes in the timeframe".into(),
            warnings: Vec::new(),
        };
    }
    if doc_files.is_empty() {
        let core: Vec<&str> = code_files
            .iter()
            .copied()
            .filter(|f| classify_file(f) == FileKind::Code { core: true })
            .collect();
        let warning = if core.is_empty() {
            UpdateWarning {
                severity: Priority::Medium,
                message: format!(
                    "{} code file(s) changed without any documentation update",
                    code_files.len()
                ),
                recommendation: "Update the README or the docs that describe the changed code"
                    .into(),
            }
        } else {
            let names: Vec<String> = core.iter().map(|s| s.to_string()).collect();
            UpdateWarning {
                severity: Priority::High,
                message: format!(
                    "Core files changed without any documentation update: {}",
                    listed(&names)
                ),
                recommendation: "Document the changed entry points and core modules (README, ARCHITECTURE.md, API docs)".into(),
            }
        };
        return UpdateVerdict {
            status: "non_compliant",
            message: format!(
                "{} code file(s) changed but no documentation was updated",
                code_files.len()
            ),
            warnings: vec![warning],
        };
    }
    let mut warnings = Vec::new();
    let newest = |changes: &[ChangedFile]| changes.iter().filter_map(|c| c.date).max();
    if let (Some(code_at), Some(doc_at)) = (newest(code), newest(docs))
        && doc_at < code_at
    {
        warnings.push(UpdateWarning {
            severity: Priority::Low,
            message: format!(
                "Documentation was last updated ({}) before the latest code change ({})",
                doc_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                code_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
            recommendation: "Check that the documentation covers the latest code changes".into(),
        });
    }
    UpdateVerdict {
        status: "compliant",
        message: if code_files.is_empty() {
            format!(
                "{} documentation file(s) updated, no code changes",
                doc_files.len()
            )
        } else {
            format!(
                "{} code file(s) and {} documentation file(s) changed",
                code_files.len(),
                doc_files.len()
            )
        },
        warnings,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0).unwrap()
    }

    const GOOD_README: &str = "# Widget\n\nWidget turns lists of numbers into charts for dashboards and \
        reports; it is small, fast and has no runtime dependencies beyond the standard library of \
        the language it is written in.\n\n## Installation\n\n```bash\ncargo install widget\n```\n\n\
        ## Usage\n\nRun `src/main.rs` through cargo; see [the guide](docs/guide.md) and the \
        [licence](LICENSE).\n\nLast updated: 2026-10-01\n";

    fn tree() -> Tree {
        Tree::from_paths([
            "README.md",
            "LICENSE",
            "docs/guide.md",
            "src/main.rs",
            "src/http/client.rs",
        ])
    }

    fn selected(path: &str) -> Selected {
        Selected {
            path: path.into(),
            priority: Priority::Critical,
            licence: false,
        }
    }

    #[test]
    fn a_good_readme_passes_all_five_checks() {
        let report = check_document(&selected("README.md"), GOOD_README, &tree(), now());
        assert_eq!(report.checks_performed, 5);
        assert_eq!(report.violations, vec![]);
    }

    #[test]
    fn completeness_needs_a_title_words_and_readme_sections() {
        let doc = Markdown::parse("Some text only.\n");
        let (message, _) = completeness("README.md", &doc).unwrap();
        assert!(message.contains("no level-1 title"), "{message}");
        assert!(message.contains("only 3 words"), "{message}");
        assert!(
            message.contains("no installation/setup section"),
            "{message}"
        );
        assert!(message.contains("no usage/example section"), "{message}");
        // Setext and HTML titles count; non-README files need no sections.
        let long = "word ".repeat(40);
        assert!(
            completeness(
                "docs/a.md",
                &Markdown::parse(&format!("Title\n=====\n\n{long}"))
            )
            .is_none()
        );
        assert!(
            completeness(
                "docs/a.md",
                &Markdown::parse(&format!("<h1 align=\"center\">T</h1>\n{long}"))
            )
            .is_none()
        );
        // A heading inside a code block is not a title.
        assert!(
            completeness(
                "docs/a.md",
                &Markdown::parse(&format!("```md\n# T\n```\n{long}"))
            )
            .is_some()
        );
    }

    #[test]
    fn stamps_older_than_180_days_or_in_the_future_are_stale() {
        let check = |text: &str| update_stamps("a.md", &Markdown::parse(text), now());
        assert!(check("Last updated: 2026-10-01").is_none());
        assert!(check("no stamp at all").is_none());
        assert!(
            check("*Last Updated:* **2020-01-15**")
                .unwrap()
                .0
                .contains("2020-01-15")
        );
        assert!(check("Last modified: January 5, 2025").is_some());
        assert!(check("Updated on 3 Oct 2026").is_none());
        assert!(
            check("Last reviewed: 2027-06-01")
                .unwrap()
                .0
                .contains("in the future")
        );
        // Dates in code blocks are examples, not stamps.
        assert!(check("```text\nLast updated: 2020-01-01\n```").is_none());
        assert_eq!(
            parse_stamp_date("Sep 9, 2026"),
            NaiveDate::from_ymd_opt(2026, 9, 9)
        );
    }

    #[test]
    fn file_paths_must_exist() {
        let t = tree();
        let check = |text: &str| file_paths("docs/guide.md", &Markdown::parse(text), &t);
        assert!(
            check("see `src/main.rs`, `./src/main.rs`, `http/client.rs` and `../LICENSE`")
                .is_none()
        );
        // Not paths: no slash, no extension, hosts, globs, placeholders, MIME types.
        assert!(check("`cargo test`, `main.rs`, `src/http`, `example.com/x.html`, `*.tf`, `src/<name>.rs`, `application/json`").is_none());
        let (message, _) = check("edit `src/server.rs` and `config/app.yaml`").unwrap();
        assert!(
            message.contains("src/server.rs (line 1)") && message.contains("config/app.yaml"),
            "{message}"
        );
        assert!(looks_like_repo_path(".github/workflows/ci.yml"));
    }

    #[test]
    fn relative_links_must_resolve() {
        let t = tree();
        let check = |path: &str, text: &str| internal_links(path, &Markdown::parse(text), &t);
        let fine = "[a](docs/guide.md) [b](src/) [c](https://x.org/y.md) [d](#usage) \
                    ![e](/src/main.rs) [f](mailto:a@b.c) [g](../../issues) [h](docs/guide.md#top) \
                    <a href=\"LICENSE\">l</a> `[x](missing.md)`\n\n[ref]: docs/guide.md";
        assert!(check("README.md", fine).is_none());
        let (message, _) = check(
            "docs/guide.md",
            "[up](../README.md) [bad](setup.md)\n\n[r]: ./gone.md \"T\"",
        )
        .unwrap();
        assert!(
            message.contains("setup.md (line 1)") && message.contains("./gone.md (line 3)"),
            "{message}"
        );
        assert!(!message.contains("README"), "{message}");
        assert!(check("README.md", "[sp](docs/my%20file.md)").is_some());
        let spaced = Tree::from_paths(["docs/my file.md"]);
        assert!(
            internal_links(
                "README.md",
                &Markdown::parse("[sp](docs/my%20file.md)"),
                &spaced
            )
            .is_none()
        );
    }

    #[test]
    fn code_fences_are_closed_tagged_and_not_empty() {
        let check = |text: &str| code_examples("a.md", &Markdown::parse(text));
        assert!(check("```bash\nls\n```\n~~~~rust\nfn x() {}\n~~~~").is_none());
        let (m, _) = check("```\nls\n```\n").unwrap();
        assert!(m.contains("without a language on line(s) 1"), "{m}");
        let (m, _) = check("text\n```python\nprint(1)\n").unwrap();
        assert!(m.contains("opened on line 2 is never closed"), "{m}");
        let (m, _) = check("```sh\n```\n").unwrap();
        assert!(m.contains("empty code blocks on line(s) 1"), "{m}");
        // A shorter fence inside a longer one does not close it.
        let doc = Markdown::parse("````md\n```rust\n```\n````\n");
        assert_eq!(doc.fences.len(), 1);
        assert!(doc.fences[0].closed);
    }

    #[test]
    fn licences_are_recognised() {
        assert_eq!(
            identify_licence("MIT License\n\nPermission is hereby granted, free of charge, to any"),
            Some("MIT")
        );
        assert_eq!(
            identify_licence("                                 Apache License\n  Version 2.0"),
            Some("Apache-2.0")
        );
        assert_eq!(
            identify_licence("GNU GENERAL PUBLIC\n LICENSE Version 3"),
            Some("GPL")
        );
        assert_eq!(
            identify_licence("// SPDX-License-Identifier: MIT-0"),
            Some("SPDX")
        );
        assert_eq!(identify_licence("All rights reserved. Do not copy."), None);
        let report = check_document(
            &Selected {
                path: "LICENSE".into(),
                priority: Priority::Critical,
                licence: true,
            },
            "TODO",
            &tree(),
            now(),
        );
        assert_eq!((report.checks_performed, report.violations.len()), (1, 1));
    }

    #[test]
    fn selection_finds_priority_documents_and_reports_missing_ones() {
        let t = Tree::from_paths([
            "readme.md",
            "docs/CONTRIBUTING.md",
            ".github/SECURITY.md",
            "COPYING",
            "docs/guide.md",
            "node_modules/x/README.md",
        ]);
        let s = select(&t, false);
        let paths: Vec<&str> = s.documents.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "COPYING",
                "readme.md",
                "docs/CONTRIBUTING.md",
                ".github/SECURITY.md"
            ]
        );
        assert_eq!(
            s.missing.iter().map(|d| d.name).collect::<Vec<_>>(),
            ["CHANGELOG.md"]
        );
        let all = select(&t, true);
        assert!(
            all.documents
                .iter()
                .any(|d| d.path == "docs/guide.md" && d.priority == Priority::Low)
        );
        assert!(
            !all.documents
                .iter()
                .any(|d| d.path.starts_with("node_modules"))
        );
        assert!(has_documentation(&t));
        assert!(!has_documentation(&Tree::from_paths(["src/main.rs"])));
    }

    #[test]
    fn score_and_status() {
        let mut reports = vec![missing_report(&PRIORITY_DOCS[0])];
        reports.push(check_document(
            &selected("README.md"),
            GOOD_README,
            &tree(),
            now(),
        ));
        let t = totals(&reports);
        assert_eq!((t.checks, t.violations, t.critical), (6, 1, 1));
        assert_eq!(compliance_score(&t), 0.83);
        assert_eq!(status(0.83, 1).0, "needs_improvement");
        assert_eq!(status(0.95, 0).0, "compliant");
        assert_eq!(status(0.75, 0).0, "mostly_compliant");
        assert_eq!(status(0.4, 0).0, "non_compliant");
        assert_eq!(compliance_score(&Totals::default()), 1.0);
    }

    #[test]
    fn reports_are_ordered_and_summarised() {
        let missing: Vec<&RequiredDoc> = PRIORITY_DOCS.iter().take(2).collect();
        let readme = selected("README.md");
        let mut guide = selected("docs/guide.md");
        guide.priority = Priority::Low;
        let documents = [(&guide, "# Guide\n"), (&readme, GOOD_README)];
        let reports = check_documents(&missing, &documents, &tree(), now());
        let order: Vec<(&str, Priority)> = reports
            .iter()
            .map(|r| (r.file.as_str(), r.priority))
            .collect();
        // Missing README and LICENSE and the README read are critical: by name, LICENSE first.
        assert_eq!(order[0], ("LICENSE", Priority::Critical));
        assert_eq!(order.last(), Some(&("docs/guide.md", Priority::Low)));
        assert_eq!(order.len(), 4);

        let critical = critical_violations(&reports);
        assert!(
            critical
                .iter()
                .all(|(_, v)| v.severity == Priority::Critical)
        );
        assert_eq!(critical[0].0, "LICENSE");
        let lines = recommendations(&reports);
        assert!(lines[0].starts_with("[CRITICAL] "), "{lines:?}");
        let mut unique = lines.clone();
        unique.dedup();
        assert_eq!(unique, lines);
        // The same violation twice gives one line.
        let twice = [
            missing_report(&PRIORITY_DOCS[0]),
            missing_report(&PRIORITY_DOCS[0]),
        ];
        assert_eq!(recommendations(&twice).len(), 1);
    }

    #[test]
    fn changed_files_are_classified() {
        assert_eq!(classify_file("docs/guide.md"), FileKind::Doc);
        assert_eq!(classify_file("src/main.rs"), FileKind::Code { core: true });
        assert_eq!(
            classify_file("pkg/core/x.go"),
            FileKind::Code { core: true }
        );
        assert_eq!(
            classify_file("src/util/strings.py"),
            FileKind::Code { core: false }
        );
        assert_eq!(classify_file("Cargo.toml"), FileKind::Other);
        assert_eq!(classify_file("Makefile"), FileKind::Other);
    }

    fn change(file: &str, day: u32) -> ChangedFile {
        ChangedFile {
            file: file.into(),
            commit: "abcdef1".into(),
            date: Utc.with_ymd_and_hms(2026, 11, day, 0, 0, 0).single(),
            message: "m".into(),
        }
    }

    #[test]
    fn code_without_docs_is_non_compliant() {
        assert_eq!(judge_update(&[], &[]).status, "no_changes");
        let v = judge_update(&[change("src/util.rs", 2), change("src/util.rs", 3)], &[]);
        assert_eq!(v.status, "non_compliant");
        assert_eq!(
            v.message,
            "1 code file(s) changed but no documentation was updated"
        );
        assert_eq!(v.warnings[0].severity, Priority::Medium);
        let v = judge_update(&[change("src/main.rs", 2)], &[]);
        assert_eq!(v.warnings[0].severity, Priority::High);
        assert!(v.warnings[0].message.contains("src/main.rs"));
        let v = judge_update(&[change("src/main.rs", 2)], &[change("README.md", 3)]);
        assert_eq!((v.status, v.warnings.len()), ("compliant", 0));
        let v = judge_update(&[change("src/main.rs", 5)], &[change("README.md", 3)]);
        assert_eq!(v.status, "compliant");
        assert_eq!(v.warnings[0].severity, Priority::Low);
        assert_eq!(
            judge_update(&[], &[change("README.md", 3)]).status,
            "compliant"
        );
    }
}
