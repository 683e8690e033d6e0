//! Writes of what an analysis finds about a repository: its own facts, patterns with their
//! keywords, technical decisions, reusable components and the analysis history. Every write is
//! an upsert keyed by name that reports whether it inserted, changed or left a row as it was,
//! so imports and repeated analyses are idempotent and their summaries honest.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;

/// One repository's analysis as `record_analysis` and `import-json` write it: the repository's
/// facts, its patterns (each with its keywords), decisions, components and history entries.
pub struct Analysis<'a> {
    pub repository: RepositoryFacts<'a>,
    pub patterns: Vec<PatternFacts<'a>>,
    /// Keywords linked to every pattern (the repository-wide keywords of a knowledge-base file).
    pub shared_keywords: &'a [String],
    pub decisions: Vec<DecisionFacts<'a>>,
    pub components: Vec<ComponentFacts<'a>>,
    pub history: Vec<HistoryFacts<'a>>,
    /// The repository's patterns, decisions and components not listed are removed, and each
    /// listed pattern's keywords become exactly its own.
    pub replace: bool,
}

/// Written / unchanged / skipped for one kind of record.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub written: u64,
    pub unchanged: u64,
    pub skipped: u64,
}

impl Counts {
    pub fn record(&mut self, upsert: Upsert) {
        self.new_or_not(!matches!(upsert, Upsert::Unchanged(_)));
    }

    fn new_or_not(&mut self, written: bool) {
        if written {
            self.written += 1;
        } else {
            self.unchanged += 1;
        }
    }

    pub fn add(&mut self, other: Counts) {
        self.written += other.written;
        self.unchanged += other.unchanged;
        self.skipped += other.skipped;
    }
}

/// What [`write_analysis`] did.
#[derive(Debug)]
pub struct Written {
    pub repo_id: i32,
    pub repository: Counts,
    pub patterns: Counts,
    /// The patterns' ids, in the order of [`Analysis::patterns`].
    pub pattern_ids: Vec<i32>,
    pub keyword_links: Counts,
    pub decisions: Counts,
    pub components: Counts,
    pub history: Counts,
    /// The id of the last history entry (new or already there).
    pub history_id: Option<i32>,
    /// With [`Analysis::replace`]: what was removed.
    pub removed: Option<Removed>,
}

/// Writes one analysis on `conn` (the caller's transaction): every record is upserted by name,
/// so writing the same analysis twice changes nothing the second time.
pub async fn write_analysis(
    conn: &mut PgConnection,
    analysis: &Analysis<'_>,
) -> Result<Written, sqlx::Error> {
    let repo = upsert_repository(conn, &analysis.repository).await?;
    let repo_id = repo.id();
    let mut w = Written {
        repo_id,
        repository: Counts::default(),
        patterns: Counts::default(),
        pattern_ids: Vec::with_capacity(analysis.patterns.len()),
        keyword_links: Counts::default(),
        decisions: Counts::default(),
        components: Counts::default(),
        history: Counts::default(),
        history_id: None,
        removed: None,
    };
    w.repository.record(repo);

    let mut offered = 0;
    for p in &analysis.patterns {
        let upsert = upsert_pattern(conn, repo_id, p).await?;
        w.patterns.record(upsert);
        w.pattern_ids.push(upsert.id());
        offered += p.keywords.len() as u64;
        w.keyword_links.written += if analysis.replace {
            set_pattern_keywords(conn, upsert.id(), p.keywords).await?
        } else {
            link_keywords(conn, &[upsert.id()], p.keywords).await?
        };
    }
    offered += (w.pattern_ids.len() * analysis.shared_keywords.len()) as u64;
    w.keyword_links.written +=
        link_keywords(conn, &w.pattern_ids, analysis.shared_keywords).await?;
    w.keyword_links.unchanged = offered.saturating_sub(w.keyword_links.written);

    for d in &analysis.decisions {
        w.decisions.record(upsert_decision(conn, repo_id, d).await?);
    }
    let repository = analysis.repository.name;
    for c in &analysis.components {
        w.components
            .record(upsert_component(conn, repo_id, repository, c).await?);
    }
    if analysis.replace {
        let names: Vec<String> = analysis
            .patterns
            .iter()
            .map(|p| p.name.to_string())
            .collect();
        let whats: Vec<String> = analysis
            .decisions
            .iter()
            .map(|d| d.what.to_string())
            .collect();
        let ids: Vec<String> = analysis
            .components
            .iter()
            .map(|c| component_id(repository, c.name))
            .collect();
        w.removed = Some(remove_unlisted(conn, repo_id, &names, &whats, &ids).await?);
    }
    for h in &analysis.history {
        let (id, new) = add_history(conn, repo_id, h).await?;
        w.history.new_or_not(new);
        w.history_id = Some(id);
    }
    Ok(w)
}

/// What an upsert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upsert {
    Inserted(i32),
    Updated(i32),
    Unchanged(i32),
}

impl Upsert {
    pub fn id(self) -> i32 {
        match self {
            Upsert::Inserted(id) | Upsert::Updated(id) | Upsert::Unchanged(id) => id,
        }
    }

    /// From an `INSERT … ON CONFLICT DO UPDATE … WHERE changed RETURNING id, (xmax = 0)` row, or
    /// the existing id when nothing changed.
    fn from_row(row: Option<(i32, bool)>, existing: impl FnOnce() -> Option<i32>) -> Option<Self> {
        match row {
            Some((id, true)) => Some(Upsert::Inserted(id)),
            Some((id, false)) => Some(Upsert::Updated(id)),
            None => existing().map(Upsert::Unchanged),
        }
    }
}

/// Facts about the repository itself; `None` fields keep what is stored.
pub struct RepositoryFacts<'a> {
    pub name: &'a str,
    pub problem_domain: Option<&'a str>,
    pub commit_sha: Option<&'a str>,
    /// When it was analysed; a new repository without one gets now().
    pub analyzed_at: Option<DateTime<Utc>>,
}

async fn upsert_repository(
    conn: &mut PgConnection,
    facts: &RepositoryFacts<'_>,
) -> Result<Upsert, sqlx::Error> {
    let row: Option<(i32, bool)> = sqlx::query_as(
        "INSERT INTO repositories (name, problem_domain, last_commit_sha, last_analyzed)
         VALUES ($1, $2, $3, coalesce($4, now()))
         ON CONFLICT (name) DO UPDATE
            SET problem_domain = coalesce(EXCLUDED.problem_domain, repositories.problem_domain),
                last_commit_sha = coalesce(EXCLUDED.last_commit_sha, repositories.last_commit_sha),
                last_analyzed = coalesce($4, repositories.last_analyzed)
          WHERE (repositories.problem_domain, repositories.last_commit_sha, repositories.last_analyzed)
                IS DISTINCT FROM (coalesce(EXCLUDED.problem_domain, repositories.problem_domain),
                                  coalesce(EXCLUDED.last_commit_sha, repositories.last_commit_sha),
                                  coalesce($4, repositories.last_analyzed))
         RETURNING id, (xmax = 0)",
    )
    .bind(facts.name)
    .bind(facts.problem_domain)
    .bind(facts.commit_sha)
    .bind(facts.analyzed_at)
    .fetch_optional(&mut *conn)
    .await?;
    let existing = if row.is_none() {
        super::repository_id(conn, facts.name).await?
    } else {
        None
    };
    Upsert::from_row(row, || existing).ok_or(sqlx::Error::RowNotFound)
}

/// A pattern; `None` description or context keeps what is stored.
pub struct PatternFacts<'a> {
    pub name: &'a str,
    pub description: Option<&'a str>,
    pub context: Option<&'a str>,
    /// Its own keywords (normalised), linked by [`write_analysis`].
    pub keywords: &'a [String],
}

/// Upserts a pattern by (repository, name). A changed description or context clears the
/// embedding, which described the old text (and with it `embedding_model`, by trigger).
async fn upsert_pattern(
    conn: &mut PgConnection,
    repo_id: i32,
    pattern: &PatternFacts<'_>,
) -> Result<Upsert, sqlx::Error> {
    let row: Option<(i32, bool)> = sqlx::query_as(
        "INSERT INTO patterns (repo_id, name, description, context) VALUES ($1, $2, $3, $4)
         ON CONFLICT (repo_id, name) DO UPDATE
            SET description = coalesce(EXCLUDED.description, patterns.description),
                context = coalesce(EXCLUDED.context, patterns.context),
                embedding = NULL
          WHERE (patterns.description, patterns.context)
                IS DISTINCT FROM (coalesce(EXCLUDED.description, patterns.description),
                                  coalesce(EXCLUDED.context, patterns.context))
         RETURNING id, (xmax = 0)",
    )
    .bind(repo_id)
    .bind(pattern.name)
    .bind(pattern.description)
    .bind(pattern.context)
    .fetch_optional(&mut *conn)
    .await?;
    let existing = if row.is_none() {
        sqlx::query_scalar("SELECT id FROM patterns WHERE repo_id = $1 AND name = $2")
            .bind(repo_id)
            .bind(pattern.name)
            .fetch_optional(conn)
            .await?
    } else {
        None
    };
    Upsert::from_row(row, || existing).ok_or(sqlx::Error::RowNotFound)
}

/// Normalises a keyword: trimmed and lower-case, so `Auth` and `auth` are one keyword.
pub fn normalise_keyword(keyword: &str) -> String {
    keyword.trim().to_lowercase()
}

/// Links every keyword to every pattern (creating keywords as needed); returns how many links
/// are new.
async fn link_keywords(
    conn: &mut PgConnection,
    pattern_ids: &[i32],
    keywords: &[String],
) -> Result<u64, sqlx::Error> {
    if pattern_ids.is_empty() || keywords.is_empty() {
        return Ok(0);
    }
    sqlx::query("INSERT INTO keywords (keyword) SELECT DISTINCT unnest($1::text[]) ON CONFLICT (keyword) DO NOTHING")
        .bind(keywords)
        .execute(&mut *conn)
        .await?;
    let linked = sqlx::query(
        "INSERT INTO pattern_keywords (pattern_id, keyword_id)
         SELECT p, k.id FROM unnest($1::int[]) AS p, keywords k WHERE k.keyword = ANY($2)
         ON CONFLICT DO NOTHING",
    )
    .bind(pattern_ids)
    .bind(keywords)
    .execute(conn)
    .await?;
    Ok(linked.rows_affected())
}

pub struct DecisionFacts<'a> {
    pub what: &'a str,
    pub why: Option<&'a str>,
    pub alternatives: Option<&'a str>,
}

async fn upsert_decision(
    conn: &mut PgConnection,
    repo_id: i32,
    d: &DecisionFacts<'_>,
) -> Result<Upsert, sqlx::Error> {
    let row: Option<(i32, bool)> = sqlx::query_as(
        "INSERT INTO technical_decisions (repo_id, what, why, alternatives) VALUES ($1, $2, $3, $4)
         ON CONFLICT (repo_id, what) DO UPDATE
            SET why = coalesce(EXCLUDED.why, technical_decisions.why),
                alternatives = coalesce(EXCLUDED.alternatives, technical_decisions.alternatives)
          WHERE (technical_decisions.why, technical_decisions.alternatives)
                IS DISTINCT FROM (coalesce(EXCLUDED.why, technical_decisions.why),
                                  coalesce(EXCLUDED.alternatives, technical_decisions.alternatives))
         RETURNING id, (xmax = 0)",
    )
    .bind(repo_id)
    .bind(d.what)
    .bind(d.why)
    .bind(d.alternatives)
    .fetch_optional(&mut *conn)
    .await?;
    let existing = if row.is_none() {
        sqlx::query_scalar("SELECT id FROM technical_decisions WHERE repo_id = $1 AND what = $2")
            .bind(repo_id)
            .bind(d.what)
            .fetch_optional(conn)
            .await?
    } else {
        None
    };
    Upsert::from_row(row, || existing).ok_or(sqlx::Error::RowNotFound)
}

pub struct ComponentFacts<'a> {
    pub name: &'a str,
    pub purpose: Option<&'a str>,
    pub location: Option<&'a str>,
    pub component_type: Option<&'a str>,
    pub language: Option<&'a str>,
    pub api_signature: Option<&'a str>,
    /// `None` keeps the stored keywords.
    pub keywords: Option<&'a [String]>,
}

/// The stable id of a repository's component: `owner/repo:name`.
pub fn component_id(repository: &str, name: &str) -> String {
    format!("{repository}:{name}")
}

/// Upserts a component by its id (`owner/repo:name`).
async fn upsert_component(
    conn: &mut PgConnection,
    repo_id: i32,
    repository: &str,
    c: &ComponentFacts<'_>,
) -> Result<Upsert, sqlx::Error> {
    let id = component_id(repository, c.name);
    let keywords = c.keywords.map(|k| Value::from(k.to_vec()));
    let row: Option<(i32, bool)> = sqlx::query_as(
        "INSERT INTO reusable_components
             (repo_id, component_id, name, purpose, location, component_type, language, api_signature, keywords)
         VALUES ($1, $2, $3, $4, $5, coalesce($6, 'unknown'), coalesce($7, 'unknown'), $8, coalesce($9, '[]'))
         ON CONFLICT (component_id) DO UPDATE
            SET purpose = coalesce(EXCLUDED.purpose, reusable_components.purpose),
                location = coalesce(EXCLUDED.location, reusable_components.location),
                component_type = coalesce($6, reusable_components.component_type),
                language = coalesce($7, reusable_components.language),
                api_signature = coalesce(EXCLUDED.api_signature, reusable_components.api_signature),
                keywords = coalesce($9, reusable_components.keywords)
          WHERE (reusable_components.purpose, reusable_components.location, reusable_components.component_type,
                 reusable_components.language, reusable_components.api_signature, reusable_components.keywords)
                IS DISTINCT FROM (coalesce(EXCLUDED.purpose, reusable_components.purpose),
                                  coalesce(EXCLUDED.location, reusable_components.location),
                                  coalesce($6, reusable_components.component_type),
                                  coalesce($7, reusable_components.language),
                                  coalesce(EXCLUDED.api_signature, reusable_components.api_signature),
                                  coalesce($9, reusable_components.keywords))
         RETURNING id, (xmax = 0)",
    )
    .bind(repo_id)
    .bind(&id)
    .bind(c.name)
    .bind(c.purpose)
    .bind(c.location)
    .bind(c.component_type)
    .bind(c.language)
    .bind(c.api_signature)
    .bind(&keywords)
    .fetch_optional(&mut *conn)
    .await?;
    let existing = if row.is_none() {
        sqlx::query_scalar("SELECT id FROM reusable_components WHERE component_id = $1")
            .bind(&id)
            .fetch_optional(conn)
            .await?
    } else {
        None
    };
    Upsert::from_row(row, || existing).ok_or(sqlx::Error::RowNotFound)
}

pub struct HistoryFacts<'a> {
    pub commit_sha: Option<&'a str>,
    pub analyzed_at: DateTime<Utc>,
    pub patterns_count: i32,
    pub decisions_count: i32,
    pub components_count: i32,
}

/// Adds an `analysis_history` row unless the same commit was recorded at the same time;
/// returns its id and whether it is new.
async fn add_history(
    conn: &mut PgConnection,
    repo_id: i32,
    h: &HistoryFacts<'_>,
) -> Result<(i32, bool), sqlx::Error> {
    let existing: Option<i32> = sqlx::query_scalar(
        "SELECT id FROM analysis_history
          WHERE repo_id = $1 AND commit_sha IS NOT DISTINCT FROM $2 AND analyzed_at = $3",
    )
    .bind(repo_id)
    .bind(h.commit_sha)
    .bind(h.analyzed_at)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(id) = existing {
        return Ok((id, false));
    }
    let id = sqlx::query_scalar(
        "INSERT INTO analysis_history (repo_id, commit_sha, analyzed_at, patterns_count, decisions_count, components_count)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
    )
    .bind(repo_id)
    .bind(h.commit_sha)
    .bind(h.analyzed_at)
    .bind(h.patterns_count)
    .bind(h.decisions_count)
    .bind(h.components_count)
    .fetch_one(conn)
    .await?;
    Ok((id, true))
}

/// Makes `keywords` exactly the keywords of the pattern: links the missing ones, unlinks the
/// others; returns how many links are new.
async fn set_pattern_keywords(
    conn: &mut PgConnection,
    pattern_id: i32,
    keywords: &[String],
) -> Result<u64, sqlx::Error> {
    sqlx::query(
        "DELETE FROM pattern_keywords pk USING keywords k
          WHERE pk.pattern_id = $1 AND k.id = pk.keyword_id AND NOT (k.keyword = ANY($2))",
    )
    .bind(pattern_id)
    .bind(keywords)
    .execute(&mut *conn)
    .await?;
    link_keywords(conn, &[pattern_id], keywords).await
}

/// How many rows [`remove_unlisted`] deleted, per table.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Removed {
    pub patterns: u64,
    pub decisions: u64,
    pub components: u64,
}

/// Deletes the repository's patterns, decisions and components other than the ones listed (by
/// pattern name, decision text, component id).
async fn remove_unlisted(
    conn: &mut PgConnection,
    repo_id: i32,
    pattern_names: &[String],
    decisions: &[String],
    component_ids: &[String],
) -> Result<Removed, sqlx::Error> {
    let mut delete = async |sql: &str, keep: &[String]| {
        sqlx::query(sql)
            .bind(repo_id)
            .bind(keep)
            .execute(&mut *conn)
            .await
            .map(|r| r.rows_affected())
    };
    Ok(Removed {
        patterns: delete(
            "DELETE FROM patterns WHERE repo_id = $1 AND NOT (name = ANY($2))",
            pattern_names,
        )
        .await?,
        decisions: delete(
            "DELETE FROM technical_decisions WHERE repo_id = $1 AND NOT (what = ANY($2))",
            decisions,
        )
        .await?,
        components: delete(
            "DELETE FROM reusable_components
              WHERE repo_id = $1 AND (component_id IS NULL OR NOT (component_id = ANY($2)))",
            component_ids,
        )
        .await?,
    })
}
