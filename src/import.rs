//! `nexusd import-json FILE|URL`: loads a Dev-Nexus JSON knowledge base (`knowledge_base.json`,
//! the file the original's GitHub Action wrote and `scripts/migrate_json_to_postgres.py` read)
//! into the schema, one transaction per repository, idempotently.
//!
//! Both layouts the original produced are read: per repository either `latest_patterns` (v2) or
//! `patterns` (v1) with `patterns`, `decisions`, `reusable_components`, `dependencies`,
//! `keywords`, `problem_domain`, `analyzed_at`, `commit_sha`; plus `deployment` (scripts,
//! infrastructure, lessons), `dependencies` (consumers, derivatives, externals) and `history`.
//! Repository keywords are linked to each of the repository's patterns, which is how keyword
//! search finds them. Anything that cannot be stored is skipped and reported with the reason.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sqlx::{PgConnection, PgPool};

use crate::kb::analysis::{
    self, Analysis, ComponentFacts, Counts, DecisionFacts, HistoryFacts, PatternFacts,
    RepositoryFacts,
};
use crate::kb::knowledge::{self, NewDependency, NewDeployment, NewLesson};
use crate::kb::{self, parse_datetime};

/// Largest knowledge base accepted (the original's were a few MB); enforced while reading, so
/// an endless source costs at most this much memory.
const MAX_BYTES: usize = 64 * 1024 * 1024;
const HTTP_TIMEOUT: Duration = Duration::from_secs(120);

/// Reads `source`: a path, `-` for standard input, or an http(s) URL (other schemes are refused).
pub async fn load(source: &str) -> Result<Value> {
    let bytes = match url_scheme(source) {
        Some("http" | "https") => download(source).await?,
        Some(other) => bail!(
            "{source}: {other}:// URLs are not supported: use an http(s) URL, a file path or - for standard input"
        ),
        None if source == "-" => read_capped(tokio::io::stdin(), source).await?,
        None => {
            let file = tokio::fs::File::open(source)
                .await
                .with_context(|| format!("reading {source}"))?;
            read_capped(file, source).await?
        }
    };
    serde_json::from_slice(&bytes).with_context(|| format!("{source} is not valid JSON"))
}

/// The scheme of `source` when it is written as a URL (`scheme://…`).
fn url_scheme(source: &str) -> Option<&str> {
    let (scheme, _) = source.split_once("://")?;
    let valid = !scheme.is_empty()
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    valid.then_some(scheme)
}

fn too_large(source: &str) -> anyhow::Error {
    anyhow::anyhow!("{source} is larger than {} MiB", MAX_BYTES >> 20)
}

/// Streams an http(s) URL, stopping as soon as it passes [`MAX_BYTES`].
async fn download(source: &str) -> Result<Vec<u8>> {
    let client = reqwest::Client::builder()
        .timeout(HTTP_TIMEOUT)
        .build()
        .context("building an HTTP client")?;
    let mut response = client
        .get(source)
        .send()
        .await
        .with_context(|| format!("fetching {source}"))?;
    if !response.status().is_success() {
        bail!("fetching {source}: HTTP {}", response.status());
    }
    if response
        .content_length()
        .is_some_and(|n| n > MAX_BYTES as u64)
    {
        return Err(too_large(source));
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .with_context(|| format!("reading {source}"))?
    {
        if bytes.len() + chunk.len() > MAX_BYTES {
            return Err(too_large(source));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// Reads a file or standard input, stopping as soon as it passes [`MAX_BYTES`].
async fn read_capped(reader: impl tokio::io::AsyncRead + Unpin, source: &str) -> Result<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut bytes = Vec::new();
    let read = reader
        .take(MAX_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .await
        .with_context(|| format!("reading {source}"))?;
    if read > MAX_BYTES {
        return Err(too_large(source));
    }
    Ok(bytes)
}

/// What an import did.
#[derive(Debug, Default)]
pub struct Summary {
    pub repositories: Counts,
    pub patterns: Counts,
    pub keyword_links: Counts,
    pub decisions: Counts,
    pub components: Counts,
    pub dependencies: Counts,
    pub deployments: Counts,
    pub lessons: Counts,
    pub history: Counts,
    /// (repository, reason) for every record left out.
    pub skipped: Vec<(String, String)>,
    /// (repository, error) for repositories whose transaction failed (nothing of them written).
    pub failed: Vec<(String, String)>,
}

impl Summary {
    /// A table of counts, then the skipped records and failures.
    pub fn render(&self, source: &str, dry_run: bool) -> String {
        let mut out = String::new();
        let verb = if dry_run { "would import" } else { "imported" };
        let _ = writeln!(
            out,
            "{verb} {source}: {} repositories written, {} unchanged, {} skipped, {} failed",
            self.repositories.written,
            self.repositories.unchanged,
            self.repositories.skipped,
            self.failed.len()
        );
        let _ = writeln!(
            out,
            "{:<16}{:>9}{:>11}{:>9}",
            "", "written", "unchanged", "skipped"
        );
        for (name, c) in [
            ("repositories", self.repositories),
            ("patterns", self.patterns),
            ("keyword links", self.keyword_links),
            ("decisions", self.decisions),
            ("components", self.components),
            ("dependencies", self.dependencies),
            ("deployments", self.deployments),
            ("lessons", self.lessons),
            ("history", self.history),
        ] {
            let _ = writeln!(
                out,
                "{name:<16}{:>9}{:>11}{:>9}",
                c.written, c.unchanged, c.skipped
            );
        }
        if !self.skipped.is_empty() {
            let _ = writeln!(out, "skipped:");
            for (repo, why) in &self.skipped {
                let _ = writeln!(out, "  {repo}: {why}");
            }
        }
        if !self.failed.is_empty() {
            let _ = writeln!(out, "failed (nothing written for these):");
            for (repo, why) in &self.failed {
                let _ = writeln!(out, "  {repo}: {why}");
            }
        }
        out
    }
}

/// Imports `kb` into the database behind `pool`. With `dry_run`, every repository's
/// transaction is rolled back, so the summary says exactly what would be written.
pub async fn run(pool: &PgPool, kb: &Value, dry_run: bool) -> Result<Summary> {
    let repositories = kb.get("repositories").and_then(Value::as_object).context(
        "not a Dev-Nexus knowledge base: there is no \"repositories\" object at the top level",
    )?;
    let mut summary = Summary::default();
    for (name, data) in repositories {
        let mut repo = Repo::read(name, data);
        summary.skipped.append(&mut repo.skipped);
        if let Some(reason) = repo.invalid.take() {
            summary.repositories.skipped += 1;
            summary.skipped.push((name.clone(), reason));
            continue;
        }
        let mut counts = Summary::default();
        let outcome = async {
            let mut tx = crate::db::begin(pool).await?;
            repo.write(&mut tx, &mut counts).await?;
            if dry_run {
                tx.rollback().await?;
            } else {
                tx.commit().await?;
            }
            Ok::<_, sqlx::Error>(())
        }
        .await;
        match outcome {
            Ok(()) => summary.merge(counts),
            Err(e) => {
                tracing::warn!(repository = %name, error = %e, "import of a repository failed; rolled back");
                summary.failed.push((name.clone(), e.to_string()));
            }
        }
    }
    if !dry_run && summary.repositories.written + summary.patterns.written > 0 {
        // The keyword counts the import added, one ledger row per pattern, folded now rather
        // than by the next `serve` (none may run yet).
        crate::kb::keyword_uses::fold(pool)
            .await
            .context("folding the keyword counts after the import")?;
        // A bulk load leaves the planner's statistics behind until autovacuum notices.
        sqlx::raw_sql(
            "ANALYZE repositories, patterns, keywords, pattern_keywords, repository_keyword_uses, \
             technical_decisions, reusable_components, dependencies, deployment_scripts, \
             lessons_learned, analysis_history",
        )
        .execute(pool)
        .await
        .context("updating planner statistics after the import")?;
    }
    Ok(summary)
}

impl Summary {
    fn merge(&mut self, other: Summary) {
        self.repositories.add(other.repositories);
        self.patterns.add(other.patterns);
        self.keyword_links.add(other.keyword_links);
        self.decisions.add(other.decisions);
        self.components.add(other.components);
        self.dependencies.add(other.dependencies);
        self.deployments.add(other.deployments);
        self.lessons.add(other.lessons);
        self.history.add(other.history);
        self.skipped.extend(other.skipped);
    }
}

struct Pattern {
    name: String,
    description: Option<String>,
    context: Option<String>,
}

struct Decision {
    what: String,
    why: Option<String>,
    alternatives: Option<String>,
}

struct Component {
    name: String,
    purpose: Option<String>,
    location: Option<String>,
    language: Option<String>,
    api_signature: Option<String>,
    keywords: Vec<String>,
}

struct Lesson {
    title: String,
    description: String,
    category: String,
    impact: String,
    recorded_by: Option<String>,
    date: Option<DateTime<Utc>>,
}

struct Deployment {
    platform: String,
    infrastructure: Value,
    scripts: Value,
    frequency: Option<String>,
    last_deployed: Option<DateTime<Utc>>,
}

struct History {
    commit_sha: Option<String>,
    analyzed_at: DateTime<Utc>,
    counts: (i32, i32, i32),
}

/// One repository of the JSON, read leniently: what cannot be stored is noted in `skipped`.
struct Repo {
    name: String,
    /// Why the whole repository is left out.
    invalid: Option<String>,
    problem_domain: Option<String>,
    commit_sha: Option<String>,
    analyzed_at: Option<DateTime<Utc>>,
    patterns: Vec<Pattern>,
    keywords: Vec<String>,
    decisions: Vec<Decision>,
    components: Vec<Component>,
    dependencies: Vec<NewDependency>,
    deployment: Option<Deployment>,
    lessons: Vec<Lesson>,
    history: Vec<History>,
    skipped: Vec<(String, String)>,
}

fn text(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn list(v: Option<&Value>) -> &[Value] {
    v.and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn valid_repository_name(name: &str) -> bool {
    let mut parts = name.split('/');
    let ok = |p: Option<&str>| {
        p.is_some_and(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        })
    };
    name.len() <= 255 && ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
}

impl Repo {
    fn read(name: &str, data: &Value) -> Repo {
        let empty = Map::new();
        let data_obj = data.as_object().unwrap_or(&empty);
        // v2: latest_patterns; v1: patterns (an object of the same shape).
        let entry = data_obj
            .get("latest_patterns")
            .or_else(|| data_obj.get("patterns").filter(|p| p.is_object()))
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        let mut repo = Repo {
            name: name.to_string(),
            invalid: None,
            problem_domain: text(entry.get("problem_domain")).filter(|d| d != "Unknown"),
            commit_sha: text(entry.get("commit_sha")).filter(|s| s != "unknown"),
            analyzed_at: text(entry.get("analyzed_at")).and_then(|t| parse_datetime(&t)),
            patterns: Vec::new(),
            keywords: Vec::new(),
            decisions: Vec::new(),
            components: Vec::new(),
            dependencies: Vec::new(),
            deployment: None,
            lessons: Vec::new(),
            history: Vec::new(),
            skipped: Vec::new(),
        };
        if !valid_repository_name(name) {
            repo.invalid = Some("the repository name is not of the form owner/repo".into());
            return repo;
        }
        if !data.is_object() {
            repo.invalid = Some("the repository entry is not an object".into());
            return repo;
        }
        if repo.commit_sha.as_ref().is_some_and(|s| s.len() > 40) {
            repo.skip("commit_sha longer than 40 characters".into());
            repo.commit_sha = None;
        }
        repo.read_patterns(entry);
        repo.read_decisions(entry);
        repo.read_components(entry);
        repo.read_dependencies(entry, data_obj);
        repo.read_deployment(data_obj);
        repo.read_history(data_obj);
        repo
    }

    fn skip(&mut self, reason: String) {
        self.skipped.push((self.name.clone(), reason));
    }

    fn read_patterns(&mut self, entry: &Map<String, Value>) {
        for (i, p) in list(entry.get("patterns")).iter().enumerate() {
            let pattern = match p {
                Value::String(s) => Some(Pattern {
                    name: s.trim().to_string(),
                    description: None,
                    context: None,
                }),
                Value::Object(o) => text(o.get("name")).map(|name| Pattern {
                    name,
                    description: text(o.get("description")),
                    context: text(o.get("context")),
                }),
                _ => None,
            };
            match pattern {
                Some(p) if !p.name.is_empty() && p.name.chars().count() <= 500 => {
                    self.patterns.push(p)
                }
                Some(p) if !p.name.is_empty() => {
                    self.skip(format!("pattern {i}: name longer than 500 characters"))
                }
                _ => self.skip(format!("pattern {i}: no name")),
            }
        }
        for (i, k) in list(entry.get("keywords")).iter().enumerate() {
            match k.as_str().map(analysis::normalise_keyword) {
                Some(k) if !k.is_empty() && k.chars().count() <= 200 => {
                    if !self.keywords.contains(&k) {
                        self.keywords.push(k);
                    }
                }
                _ => self.skip(format!("keyword {i}: not a text of 1-200 characters")),
            }
        }
        if !self.keywords.is_empty() && self.patterns.is_empty() {
            let n = self.keywords.len();
            self.keywords.clear();
            self.skip(format!(
                "{n} keywords: the repository has no pattern to attach them to"
            ));
        }
    }

    fn read_decisions(&mut self, entry: &Map<String, Value>) {
        for (i, d) in list(entry.get("decisions")).iter().enumerate() {
            let decision = match d {
                Value::String(_) => text(Some(d)).map(|what| Decision {
                    what,
                    why: None,
                    alternatives: None,
                }),
                Value::Object(o) => {
                    text(o.get("what").or_else(|| o.get("decision"))).map(|what| Decision {
                        what,
                        why: text(o.get("why").or_else(|| o.get("rationale"))),
                        alternatives: match o.get("alternatives") {
                            Some(Value::Array(a)) => Some(
                                a.iter()
                                    .filter_map(Value::as_str)
                                    .collect::<Vec<_>>()
                                    .join(", "),
                            ),
                            other => text(other),
                        },
                    })
                }
                _ => None,
            };
            match decision {
                // A unique index covers `what`; keep it well under the index's size limit.
                Some(d) if d.what.len() <= 2000 => self.decisions.push(d),
                Some(_) => self.skip(format!("decision {i}: longer than 2000 bytes")),
                None => self.skip(format!("decision {i}: no text")),
            }
        }
    }

    fn read_components(&mut self, entry: &Map<String, Value>) {
        for (i, c) in list(entry.get("reusable_components")).iter().enumerate() {
            let Some(o) = c.as_object() else {
                self.skip(format!("component {i}: not an object"));
                continue;
            };
            let Some(name) = text(o.get("name")).filter(|n| n.chars().count() <= 500) else {
                self.skip(format!(
                    "component {i}: no name (or longer than 500 characters)"
                ));
                continue;
            };
            let location = text(o.get("location"))
                .or_else(|| list(o.get("files")).iter().find_map(|f| text(Some(f))));
            let keywords = list(o.get("tags").or_else(|| o.get("keywords")))
                .iter()
                .filter_map(|t| text(Some(t)))
                .collect();
            self.components.push(Component {
                name,
                purpose: text(o.get("purpose").or_else(|| o.get("description"))),
                location,
                language: text(o.get("language")).filter(|l| l.len() <= 50),
                api_signature: text(o.get("api_signature").or_else(|| o.get("api_contract"))),
                keywords,
            });
        }
    }

    fn read_dependencies(&mut self, entry: &Map<String, Value>, data: &Map<String, Value>) {
        let mut add = |name: Option<String>,
                       kind: &'static str,
                       version: Option<String>,
                       skipped: &mut Vec<String>| match name {
            Some(n) if n.chars().count() <= 500 => self.dependencies.push(NewDependency {
                name: n,
                kind,
                version,
            }),
            _ => skipped.push(format!("{kind} dependency without a usable name")),
        };
        let mut skipped = Vec::new();
        for d in list(entry.get("dependencies")) {
            add(text(Some(d)), "external", None, &mut skipped);
        }
        if let Some(info) = data.get("dependencies").and_then(Value::as_object) {
            for d in list(info.get("external_dependencies")) {
                add(text(Some(d)), "external", None, &mut skipped);
            }
            for (key, kind) in [("consumers", "consumer"), ("derivatives", "derivative")] {
                for d in list(info.get(key)) {
                    let (name, version) = match d {
                        Value::Object(o) => (
                            text(
                                o.get("repository")
                                    .or_else(|| o.get("target_repo"))
                                    .or_else(|| o.get("name")),
                            ),
                            text(o.get("version")),
                        ),
                        other => (text(Some(other)), None),
                    };
                    add(name, kind, version, &mut skipped);
                }
            }
        }
        for why in skipped {
            self.skip(why);
        }
    }

    fn read_deployment(&mut self, data: &Map<String, Value>) {
        let Some(d) = data.get("deployment").and_then(Value::as_object) else {
            return;
        };
        for (i, l) in list(d.get("lessons_learned")).iter().enumerate() {
            let Some(o) = l.as_object() else {
                self.skip(format!("lesson {i}: not an object"));
                continue;
            };
            // v1 script layout {title, description, impact, date}; v2 LessonLearned {lesson, context, severity, timestamp}.
            let title = text(o.get("title").or_else(|| o.get("lesson")));
            let description =
                text(o.get("description").or_else(|| o.get("context"))).unwrap_or_default();
            let category = text(o.get("category")).unwrap_or_else(|| "general".into());
            let impact = text(o.get("impact").or_else(|| o.get("severity")))
                .unwrap_or_else(|| "medium".into());
            match title {
                Some(title) if category.len() <= 100 && impact.len() <= 50 => {
                    self.lessons.push(Lesson {
                        title,
                        description,
                        category,
                        impact,
                        recorded_by: text(o.get("recorded_by")).filter(|r| r.len() <= 200),
                        date: text(o.get("date").or_else(|| o.get("timestamp")))
                            .and_then(|t| parse_datetime(&t)),
                    })
                }
                Some(_) => self.skip(format!("lesson {i}: category or impact too long")),
                None => self.skip(format!("lesson {i}: no title")),
            }
        }
        let scripts = d
            .get("scripts")
            .filter(|s| s.as_array().is_some_and(|a| !a.is_empty()));
        let infrastructure = d
            .get("infrastructure")
            .and_then(Value::as_object)
            .filter(|m| !m.is_empty());
        let platform = text(d.get("ci_cd_platform"));
        if scripts.is_some() || infrastructure.is_some() || platform.is_some() {
            self.deployment = Some(Deployment {
                platform: platform
                    .filter(|p| p.len() <= 500)
                    .unwrap_or_else(|| "deployment".into()),
                infrastructure: infrastructure
                    .map(|m| Value::Object(m.clone()))
                    .unwrap_or_else(|| Value::Object(Map::new())),
                scripts: scripts.cloned().unwrap_or_else(|| Value::Array(Vec::new())),
                frequency: text(d.get("deployment_frequency")).filter(|f| f.len() <= 100),
                last_deployed: text(d.get("last_deployed")).and_then(|t| parse_datetime(&t)),
            });
        }
    }

    fn read_history(&mut self, data: &Map<String, Value>) {
        for (i, h) in list(data.get("history")).iter().enumerate() {
            let Some(o) = h.as_object() else {
                continue;
            };
            // v1 history entries nest the analysis under "patterns"; v2 entries are the analysis.
            let inner = o.get("patterns").and_then(Value::as_object).unwrap_or(o);
            let when = text(
                o.get("timestamp")
                    .or_else(|| o.get("analyzed_at"))
                    .or_else(|| inner.get("analyzed_at")),
            )
            .and_then(|t| parse_datetime(&t));
            let Some(analyzed_at) = when else {
                self.skip(format!("history {i}: no usable timestamp"));
                continue;
            };
            let count = |key: &str| list(inner.get(key)).len() as i32;
            self.history.push(History {
                commit_sha: text(o.get("commit_sha").or_else(|| inner.get("commit_sha")))
                    .filter(|s| s != "unknown" && s.len() <= 40),
                analyzed_at,
                counts: (
                    count("patterns"),
                    count("decisions"),
                    count("reusable_components"),
                ),
            });
        }
    }

    /// The repository's analysis part, as [`analysis::write_analysis`] stores it.
    fn analysis(&self) -> Analysis<'_> {
        Analysis {
            repository: RepositoryFacts {
                name: &self.name,
                problem_domain: self.problem_domain.as_deref(),
                commit_sha: self.commit_sha.as_deref(),
                analyzed_at: self.analyzed_at,
            },
            patterns: self
                .patterns
                .iter()
                .map(|p| PatternFacts {
                    name: &p.name,
                    description: p.description.as_deref(),
                    context: p.context.as_deref(),
                    keywords: &[],
                })
                .collect(),
            shared_keywords: &self.keywords,
            decisions: self
                .decisions
                .iter()
                .map(|d| DecisionFacts {
                    what: &d.what,
                    why: d.why.as_deref(),
                    alternatives: d.alternatives.as_deref(),
                })
                .collect(),
            components: self
                .components
                .iter()
                .map(|c| ComponentFacts {
                    name: &c.name,
                    purpose: c.purpose.as_deref(),
                    location: c.location.as_deref(),
                    component_type: None,
                    language: c.language.as_deref(),
                    api_signature: c.api_signature.as_deref(),
                    keywords: Some(&c.keywords),
                })
                .collect(),
            history: self
                .history
                .iter()
                .map(|h| HistoryFacts {
                    commit_sha: h.commit_sha.as_deref(),
                    analyzed_at: h.analyzed_at,
                    patterns_count: h.counts.0,
                    decisions_count: h.counts.1,
                    components_count: h.counts.2,
                })
                .collect(),
            replace: false,
        }
    }

    async fn write(&self, conn: &mut PgConnection, s: &mut Summary) -> Result<(), sqlx::Error> {
        let w = analysis::write_analysis(conn, &self.analysis()).await?;
        let repo_id = w.repo_id;
        s.repositories.add(w.repository);
        s.patterns.add(w.patterns);
        s.keyword_links.add(w.keyword_links);
        s.decisions.add(w.decisions);
        s.components.add(w.components);
        s.history.add(w.history);

        let added = knowledge::add_dependencies(conn, repo_id, &self.dependencies).await?;
        s.dependencies.written += added;
        s.dependencies.unchanged +=
            self.dependencies.len() as u64 - added.min(self.dependencies.len() as u64);

        if let Some(d) = &self.deployment {
            let deployment = NewDeployment {
                name: &d.platform,
                infrastructure: &d.infrastructure,
                scripts: &d.scripts,
                frequency: d.frequency.as_deref(),
                last_deployed: d.last_deployed,
            };
            if knowledge::deployment_matches(conn, repo_id, &deployment).await? {
                s.deployments.unchanged += 1;
            } else {
                knowledge::upsert_deployment(conn, repo_id, &deployment).await?;
                s.deployments.written += 1;
            }
        }
        for l in &self.lessons {
            if knowledge::lesson_exists(conn, repo_id, &l.title, &l.description).await? {
                s.lessons.unchanged += 1;
                continue;
            }
            let lesson = NewLesson {
                title: &l.title,
                description: &l.description,
                category: &l.category,
                impact: &l.impact,
                recorded_by: l.recorded_by.as_deref(),
                related_files: &[],
                tags: &[],
                date: l.date,
            };
            knowledge::insert_lesson(conn, kb::Repo::Id(repo_id), &lesson).await?;
            s.lessons.written += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn repository_names_must_be_owner_slash_repo() {
        assert!(valid_repository_name("acme/api"));
        assert!(valid_repository_name("a-b_c.d/e.f"));
        for bad in ["acme", "a/b/c", "/api", "acme/", "a b/c", ""] {
            assert!(!valid_repository_name(bad), "{bad}");
        }
    }

    #[test]
    fn both_layouts_are_read_and_problems_noted() {
        let v2 = json!({
            "latest_patterns": {
                "patterns": ["Retry", {"name": "Cache", "description": "LRU"}, {"description": "nameless"}],
                "decisions": ["Use Rust", {"what": "Use PostgreSQL", "why": "one store", "alternatives": ["MySQL", "SQLite"]}],
                "reusable_components": [{"name": "client", "description": "HTTP", "files": ["src/c.rs"], "tags": ["http"]}],
                "dependencies": ["tokio"],
                "keywords": ["Retry", "retry", " cache "],
                "problem_domain": "Unknown",
                "commit_sha": "unknown",
                "analyzed_at": "2026-01-02T03:04:05Z",
            },
            "deployment": {"lessons_learned": [{"lesson": "Pin deps", "context": "broke", "severity": "warning", "category": "reliability"}]},
            "dependencies": {"consumers": [{"target_repo": "acme/web"}], "derivatives": ["acme/fork"]},
        });
        let repo = Repo::read("acme/api", &v2);
        assert!(repo.invalid.is_none());
        assert_eq!(
            repo.patterns
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>(),
            ["Retry", "Cache"]
        );
        assert_eq!(repo.keywords, ["retry", "cache"]);
        assert_eq!(
            repo.decisions[1].alternatives.as_deref(),
            Some("MySQL, SQLite")
        );
        assert_eq!(repo.components[0].location.as_deref(), Some("src/c.rs"));
        assert_eq!(
            repo.problem_domain, None,
            "'Unknown' is the original's placeholder"
        );
        assert_eq!(repo.commit_sha, None);
        assert_eq!(repo.dependencies.len(), 3);
        assert_eq!(repo.lessons[0].title, "Pin deps");
        assert_eq!(
            repo.skipped,
            [("acme/api".to_string(), "pattern 2: no name".to_string())]
        );

        let v1 = json!({"patterns": {"patterns": ["A"], "keywords": ["k"]}, "history": [
            {"commit_sha": "abc", "timestamp": "2025-12-01T00:00:00", "patterns": {"patterns": ["A", "B"], "decisions": []}}]});
        let repo = Repo::read("acme/old", &v1);
        assert_eq!(repo.patterns.len(), 1);
        assert_eq!(repo.history[0].counts, (2, 0, 0));

        assert!(Repo::read("not-a-repo", &json!({})).invalid.is_some());
    }
}
