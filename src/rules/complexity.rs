//! A repository's complexity, measured from its file tree and the texts of its source files:
//! files, lines, languages, largest files, dependency counts, McCabe numbers per file and the
//! score whose formula `docs/workflows.md` ("Complexity") writes down.

use std::collections::BTreeMap;

use serde::Serialize;

use super::Tree;
use super::component_scan::{Language, SKIPPED_DIRS, line_counts, lines_of_code};

/// Source files measured per repository at most (in path order).
pub const MAX_MEASURED: usize = 150;
/// Larger source files are not measured.
const MAX_MEASURED_BYTES: u64 = 200 * 1024;
/// Largest files and most complex files listed.
const LISTED: usize = 10;
const TOP_COMPLEX: usize = 20;

/// The source files a measurement reads.
pub fn measured_files(tree: &Tree) -> Vec<String> {
    tree.files
        .iter()
        .filter(|(path, size)| {
            Language::of(path).is_some()
                && **size <= MAX_MEASURED_BYTES
                && !path
                    .split('/')
                    .rev()
                    .skip(1)
                    .any(|d| SKIPPED_DIRS.contains(&d))
        })
        .map(|(path, _)| path.clone())
        .take(MAX_MEASURED)
        .collect()
}

/// The language a file counts for in `languages` (by extension), if any.
fn language_of(path: &str) -> Option<&'static str> {
    if let Some(l) = Language::of(path) {
        return Some(l.as_str());
    }
    let extension = path.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match extension.as_str() {
        "c" | "h" => "c",
        "cc" | "cpp" | "hpp" | "cxx" => "c++",
        "cs" => "c#",
        "rb" => "ruby",
        "php" => "php",
        "kt" | "kts" => "kotlin",
        "swift" => "swift",
        "scala" => "scala",
        "sh" | "bash" => "shell",
        "sql" => "sql",
        "html" | "htm" => "html",
        "css" | "scss" => "css",
        "tf" => "terraform",
        _ => return None,
    })
}

/// One measured source file.
#[derive(Debug, Clone, Serialize)]
pub struct FileComplexity {
    pub name: String,
    pub location: String,
    pub language: &'static str,
    pub lines_of_code: u64,
    pub functions: u64,
    /// McCabe per function: `complexity_mccabe / max(functions, 1)`.
    pub complexity_simple: f64,
    /// The file's McCabe number: `max(functions, 1) + decision points`.
    pub complexity_mccabe: f64,
    /// Decision points weighted by their nesting (`1 + depth`).
    pub complexity_cognitive: f64,
    pub category_simple: &'static str,
}

/// `LOW` ≤ 10, `MEDIUM` ≤ 20, `HIGH` ≤ 50, `CRITICAL` above.
pub fn category(value: f64) -> &'static str {
    match value {
        v if v <= 10.0 => "LOW",
        v if v <= 20.0 => "MEDIUM",
        v if v <= 50.0 => "HIGH",
        _ => "CRITICAL",
    }
}

/// The A–F grade of a per-function McCabe number (A ≤ 5, B ≤ 10, C ≤ 20, D ≤ 30, E ≤ 50).
pub fn grade(simple: f64) -> &'static str {
    match simple {
        v if v <= 5.0 => "A",
        v if v <= 10.0 => "B",
        v if v <= 20.0 => "C",
        v if v <= 30.0 => "D",
        v if v <= 50.0 => "E",
        _ => "F",
    }
}

fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// Leading indentation in levels (four columns or one tab each).
fn depth(line: &str) -> usize {
    let mut columns = 0;
    for c in line.chars() {
        match c {
            ' ' => columns += 1,
            '\t' => columns += 4,
            _ => break,
        }
    }
    columns / 4
}

/// Measures one source file (`None` for a language nexusd does not read).
pub fn measure(path: &str, text: &str) -> Option<FileComplexity> {
    let language = Language::of(path)?;
    let (mut functions, mut decisions, mut cognitive) = (0usize, 0usize, 0usize);
    for line in text.lines() {
        let (f, d) = line_counts(language, line);
        functions += f;
        decisions += d;
        // The first level is the function's body; deeper ones are nesting.
        cognitive += d * (1 + depth(line).saturating_sub(1));
    }
    let mccabe = (functions.max(1) + decisions) as f64;
    let simple = round1(mccabe / functions.max(1) as f64);
    Some(FileComplexity {
        name: path.rsplit('/').next().unwrap_or(path).to_string(),
        location: path.to_string(),
        language: language.as_str(),
        lines_of_code: u64::try_from(lines_of_code(language, text)).unwrap_or(0),
        functions: functions as u64,
        complexity_simple: simple,
        complexity_mccabe: mccabe,
        complexity_cognitive: cognitive as f64,
        category_simple: category(simple),
    })
}

/// One metric over the measured files, in the shape the frontend reads.
#[derive(Debug, Clone, Serialize)]
pub struct MetricData {
    pub max: f64,
    pub total: f64,
    pub median: f64,
    pub average: f64,
    /// Files by [`category`] of this metric.
    pub distribution: BTreeMap<&'static str, u64>,
    /// Average weighted by each file's lines of code.
    pub weighted_average: f64,
}

fn metric(files: &[FileComplexity], value: impl Fn(&FileComplexity) -> f64) -> MetricData {
    let mut values: Vec<f64> = files.iter().map(&value).collect();
    values.sort_by(f64::total_cmp);
    let total: f64 = values.iter().sum();
    let n = values.len();
    let median = match n {
        0 => 0.0,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    };
    let weight: f64 = files.iter().map(|f| f.lines_of_code.max(1) as f64).sum();
    let weighted: f64 = files
        .iter()
        .map(|f| value(f) * f.lines_of_code.max(1) as f64)
        .sum();
    let mut distribution: BTreeMap<&'static str, u64> =
        ["LOW", "MEDIUM", "HIGH", "CRITICAL"].map(|k| (k, 0)).into();
    for v in &values {
        *distribution.entry(category(*v)).or_default() += 1;
    }
    MetricData {
        max: values.last().copied().unwrap_or(0.0),
        total: round1(total),
        median: round1(median),
        average: round1(if n == 0 { 0.0 } else { total / n as f64 }),
        distribution,
        weighted_average: round1(if weight > 0.0 { weighted / weight } else { 0.0 }),
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct LanguageShare {
    pub files: u64,
    pub bytes: u64,
    /// Lines of code of the files measured in this language.
    pub lines_of_code: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LargeFile {
    pub path: String,
    pub bytes: u64,
}

/// The parts of the score (`docs/workflows.md`, "Complexity").
#[derive(Debug, Clone, Serialize)]
pub struct ScoreParts {
    pub size: f64,
    pub branching: f64,
    pub languages: f64,
    pub dependencies: f64,
}

/// Dependency counts from the manifests.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DependencyCounts {
    pub manifests: u64,
    pub declared: u64,
    pub runtime: u64,
    pub dev: u64,
}

/// A repository's measured complexity.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    pub files: u64,
    pub directories: u64,
    pub files_measured: u64,
    pub lines_of_code: u64,
    pub tree_truncated: bool,
    pub languages: BTreeMap<&'static str, LanguageShare>,
    pub largest_files: Vec<LargeFile>,
    pub dependencies: DependencyCounts,
    pub score: f64,
    pub score_parts: ScoreParts,
    pub grade: &'static str,
    pub primary: &'static str,
    pub component_count: u64,
    pub simple: MetricData,
    pub mccabe: MetricData,
    pub cognitive: MetricData,
    /// The most complex files, by per-function McCabe number.
    #[serde(skip)]
    pub top: Vec<FileComplexity>,
}

/// The measurement of a tree whose source files `measured` were read.
pub fn summarize(
    tree: &Tree,
    measured: Vec<FileComplexity>,
    dependencies: DependencyCounts,
) -> Measurement {
    let mut languages: BTreeMap<&'static str, LanguageShare> = BTreeMap::new();
    for (path, bytes) in &tree.files {
        if let Some(language) = language_of(path) {
            let share = languages.entry(language).or_insert(LanguageShare {
                files: 0,
                bytes: 0,
                lines_of_code: 0,
            });
            share.files += 1;
            share.bytes += bytes;
        }
    }
    for f in &measured {
        if let Some(share) = languages.get_mut(f.language) {
            share.lines_of_code += f.lines_of_code;
        }
    }
    let mut largest: Vec<LargeFile> = tree
        .files
        .iter()
        .map(|(path, bytes)| LargeFile {
            path: path.clone(),
            bytes: *bytes,
        })
        .collect();
    largest.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.path.cmp(&b.path)));
    largest.truncate(LISTED);
    let lines: u64 = measured.iter().map(|f| f.lines_of_code).sum();
    let simple = metric(&measured, |f| f.complexity_simple);
    let parts = ScoreParts {
        size: round1((10.0 * (1.0 + lines as f64 / 100.0).log10()).min(40.0)),
        branching: round1((3.0 * simple.weighted_average).min(30.0)),
        languages: round1((2.5 * languages.len().saturating_sub(1) as f64).min(10.0)),
        dependencies: round1((dependencies.runtime as f64 / 5.0).min(20.0)),
    };
    let mut top = measured.clone();
    top.sort_by(|a, b| {
        b.complexity_simple
            .total_cmp(&a.complexity_simple)
            .then(a.location.cmp(&b.location))
    });
    top.truncate(TOP_COMPLEX);
    Measurement {
        files: tree.files.len() as u64,
        directories: tree.dirs.len() as u64,
        files_measured: measured.len() as u64,
        lines_of_code: lines,
        tree_truncated: tree.truncated,
        languages,
        largest_files: largest,
        dependencies,
        score: round1(parts.size + parts.branching + parts.languages + parts.dependencies),
        score_parts: parts,
        grade: grade(simple.weighted_average),
        primary: "simple",
        component_count: measured.len() as u64,
        mccabe: metric(&measured, |f| f.complexity_mccabe),
        cognitive: metric(&measured, |f| f.complexity_cognitive),
        simple,
        top,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_measured_per_function_and_by_nesting() {
        let text = "pub fn a(x: u32) -> u32 {\n    if x > 1 {\n        if x > 2 {\n            return 3;\n        }\n    }\n    0\n}\n\nfn b() {}\n";
        let f = measure("src/lib.rs", text).unwrap();
        assert_eq!(f.functions, 2);
        assert_eq!(f.complexity_mccabe, 4.0);
        assert_eq!(f.complexity_simple, 2.0);
        // depth 1 → weight 1, depth 2 → weight 2
        assert_eq!(f.complexity_cognitive, 3.0);
        assert_eq!(f.category_simple, "LOW");
        assert!(measure("README.md", "# x").is_none());
    }

    #[test]
    fn the_score_follows_its_documented_formula() {
        let mut tree = Tree::default();
        tree.files.insert("src/lib.rs".into(), 900);
        tree.files.insert("web/app.ts".into(), 300);
        tree.files.insert("README.md".into(), 5000);
        let measured = vec![
            measure("src/lib.rs", &"fn f() { if a && b {} }\n".repeat(100)).unwrap(),
            measure("web/app.ts", "function g() {}\n").unwrap(),
        ];
        let deps = DependencyCounts {
            manifests: 2,
            declared: 30,
            runtime: 25,
            dev: 5,
        };
        let m = summarize(&tree, measured, deps);
        assert_eq!(m.lines_of_code, 101);
        assert_eq!(m.largest_files[0].path, "README.md");
        assert_eq!(m.languages.len(), 2);
        assert_eq!(m.score_parts.size, 3.0);
        assert_eq!(m.score_parts.languages, 2.5);
        assert_eq!(m.score_parts.dependencies, 5.0);
        // lib.rs: 100 functions, 200 decisions → 3.0 per function, weighted by 100 lines
        assert_eq!(m.simple.max, 3.0);
        assert_eq!(
            m.score,
            round1(
                m.score_parts.size
                    + m.score_parts.branching
                    + m.score_parts.languages
                    + m.score_parts.dependencies
            )
        );
        assert_eq!(m.grade, "A");
        assert_eq!(m.simple.distribution["LOW"], 2);
    }
}
