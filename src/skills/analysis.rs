//! `record_analysis` (protected write): one repository analysis — problem domain, commit,
//! patterns with their keywords, technical decisions, reusable components — written in one
//! transaction with an `analysis_history` row, and embeddings for the patterns that are new,
//! changed, or not embedded yet.
//!
//! Embeddings are computed before the transaction opens (a slow embeddings API never holds
//! locks) and stored inside it only for patterns whose text is still the one embedded. They are
//! made with the configured model only: while the knowledge base holds embeddings of another
//! model, the analysis is written without new ones and says why, rather than mixing models. If
//! the embeddings API fails, the analysis is still written; the background backfill of
//! `nexusd serve` (or `nexusd embed`) embeds those patterns later.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use pgvector::Vector;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::context::SkillContext;
use super::error::SkillError;
use super::registry::{Skill, SkillOutput, example, handler, output, parse, repository_schema};
use crate::embed::{mixed_models_message, pattern_text};
use crate::kb::analysis::{
    self, Analysis, ComponentFacts, DecisionFacts, HistoryFacts, PatternFacts, RepositoryFacts,
    Written,
};
use crate::kb::search::{self, PatternText};

pub fn record_analysis() -> Skill {
    Skill {
        id: "record_analysis",
        name: "Record Repository Analysis",
        description: "Record what an analysis of a repository found — problem domain, commit, patterns with \
                      keywords, technical decisions, reusable components — in one transaction, with an \
                      analysis history entry. Patterns, decisions and components are upserted by name \
                      (with replace: true, the repository's others are removed). Embeddings are computed \
                      for new or changed patterns, so keyword, free-text and similarity searches find them.",
        tags: &["analysis", "patterns", "knowledge", "write"],
        requires_authentication: true,
        input_schema: record_analysis_schema(),
        examples: vec![record_analysis_example()],
        aliases: &[],
        empty: json!({}),
        uses_database: true,
        handler: handler(run_record_analysis),
    }
}

/// A string field with a description and a length limit.
fn text(description: &str, max: u32) -> Value {
    json!({"type": "string", "description": description, "maxLength": max})
}

/// `record_analysis`' input: the repository and what its analysis found.
fn record_analysis_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "repository": repository_schema("Repository in owner/repo form (created if unknown)"),
            "problem_domain": text("What the repository is for", 10000),
            "commit_sha": {"type": "string", "description": "Commit the analysis looked at", "minLength": 1, "maxLength": 40},
            "patterns": {"type": "array", "maxItems": 500, "items": pattern_schema()},
            "technical_decisions": {"type": "array", "maxItems": 500, "items": decision_schema()},
            "reusable_components": {"type": "array", "maxItems": 500, "items": component_schema()},
            "replace": {
                "type": "boolean",
                "description": "true: the repository's patterns, decisions and components not listed are removed, \
                                and each listed pattern's keywords become exactly the listed ones",
                "default": false,
            },
        },
        "required": ["repository"],
    })
}

fn pattern_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "description": "Pattern name, unique within the repository", "minLength": 1, "maxLength": 500},
            "description": text("What the pattern does and how", 20000),
            "context": text("Where and why the repository uses it", 20000),
            "keywords": {
                "type": "array",
                "description": "Search keywords (stored lower-case)",
                "items": {"type": "string", "minLength": 1, "maxLength": 200},
                "maxItems": 100,
            },
        },
        "required": ["name"],
    })
}

fn decision_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "what": {"type": "string", "description": "The decision, unique within the repository", "minLength": 1, "maxLength": 500},
            "why": text("Its reason", 20000),
            "alternatives": {
                "anyOf": [
                    {"type": "string", "maxLength": 20000},
                    {"type": "array", "items": {"type": "string", "maxLength": 2000}, "maxItems": 50},
                ],
                "description": "Alternatives considered: a text or a list",
            },
        },
        "required": ["what"],
    })
}

fn component_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "description": "Component name, unique within the repository", "minLength": 1, "maxLength": 500},
            "purpose": text("What it is for", 20000),
            "description": text(
                "The original Dev-Nexus name of purpose, accepted as an alias: stored as the purpose \
                 when purpose is not given",
                20000,
            ),
            "location": text("Path in the repository", 2000),
            "component_type": {"type": "string", "maxLength": 50},
            "language": {"type": "string", "maxLength": 50},
        },
        "required": ["name"],
    })
}

fn record_analysis_example() -> Value {
    example(
        json!({
            "repository": "acme/payments-api",
            "problem_domain": "Card payments for the web shop",
            "commit_sha": "9fceb02d0ae598e95dc970b74767f19372d61af8",
            "patterns": [{
                "name": "Idempotency keys",
                "description": "Clients send an Idempotency-Key header; the first response is stored and replayed for retries",
                "context": "POST /charges",
                "keywords": ["idempotency", "retry", "payments"],
            }],
            "technical_decisions": [{"what": "PostgreSQL for the ledger", "why": "Transactions", "alternatives": ["DynamoDB"]}],
            "reusable_components": [{"name": "RetryClient", "purpose": "HTTP client with backoff", "location": "src/retry.rs", "language": "rust"}],
        }),
        "Record an analysis",
    )
}

#[derive(Deserialize)]
struct AnalysisInput {
    repository: String,
    problem_domain: Option<String>,
    commit_sha: Option<String>,
    patterns: Option<Vec<PatternInput>>,
    technical_decisions: Option<Vec<DecisionInput>>,
    reusable_components: Option<Vec<ComponentInput>>,
    replace: Option<bool>,
}

#[derive(Deserialize)]
struct PatternInput {
    name: String,
    description: Option<String>,
    context: Option<String>,
    keywords: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct DecisionInput {
    what: String,
    why: Option<String>,
    alternatives: Option<Alternatives>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Alternatives {
    Text(String),
    List(Vec<String>),
}

#[derive(Deserialize)]
struct ComponentInput {
    name: String,
    purpose: Option<String>,
    /// The original's name for `purpose` (its `ReusableComponent.description`).
    description: Option<String>,
    location: Option<String>,
    component_type: Option<String>,
    language: Option<String>,
}

/// A pattern as it will be stored.
struct Pattern {
    name: String,
    description: Option<String>,
    context: Option<String>,
    keywords: Vec<String>,
}

/// A technical decision as it will be stored: alternatives given as a list are joined.
struct Decision {
    what: String,
    why: Option<String>,
    alternatives: Option<String>,
}

/// A reusable component as it will be stored.
struct ComponentRecord {
    name: String,
    input: ComponentInput,
}

/// The input checked and normalised: names trimmed and each listed once, keywords as stored.
struct Prepared {
    repository: String,
    problem_domain: Option<String>,
    commit_sha: Option<String>,
    patterns: Vec<Pattern>,
    decisions: Vec<Decision>,
    components: Vec<ComponentRecord>,
    replace: bool,
}

/// Trimmed names, no duplicates: the first problem, naming the field.
fn unique_names<'a>(
    field: &str,
    names: impl Iterator<Item = &'a str>,
) -> Result<Vec<String>, SkillError> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, name) in names.enumerate() {
        let name = name.trim();
        if name.is_empty() {
            return Err(SkillError::Invalid(format!(
                "Invalid parameter '{field}[{i}]': the name must not be blank"
            )));
        }
        if !seen.insert(name.to_string()) {
            return Err(SkillError::Invalid(format!(
                "Invalid parameter '{field}[{i}]': {name:?} is listed twice"
            )));
        }
        out.push(name.to_string());
    }
    Ok(out)
}

/// Keywords as stored: trimmed, lower-case, each once.
fn keywords(raw: Option<Vec<String>>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for k in raw.unwrap_or_default() {
        let k = analysis::normalise_keyword(&k);
        if !k.is_empty() && !out.contains(&k) {
            out.push(k);
        }
    }
    out
}

impl Alternatives {
    fn joined(self) -> String {
        match self {
            Alternatives::Text(t) => t,
            Alternatives::List(l) => l.join(", "),
        }
    }
}

/// Checks the names of the patterns, decisions and components (in that order) and normalises
/// what is stored.
fn prepare(q: AnalysisInput) -> Result<Prepared, SkillError> {
    let raw_patterns = q.patterns.unwrap_or_default();
    let pattern_names = unique_names("patterns", raw_patterns.iter().map(|p| p.name.as_str()))?;
    let raw_decisions = q.technical_decisions.unwrap_or_default();
    let whats = unique_names(
        "technical_decisions",
        raw_decisions.iter().map(|d| d.what.as_str()),
    )?;
    let raw_components = q.reusable_components.unwrap_or_default();
    let component_names = unique_names(
        "reusable_components",
        raw_components.iter().map(|c| c.name.as_str()),
    )?;
    Ok(Prepared {
        repository: q.repository,
        problem_domain: q.problem_domain,
        commit_sha: q.commit_sha,
        patterns: raw_patterns
            .into_iter()
            .zip(pattern_names)
            .map(|(p, name)| Pattern {
                name,
                description: p.description,
                context: p.context,
                keywords: keywords(p.keywords),
            })
            .collect(),
        decisions: raw_decisions
            .into_iter()
            .zip(whats)
            .map(|(d, what)| Decision {
                what,
                why: d.why,
                alternatives: d.alternatives.map(Alternatives::joined),
            })
            .collect(),
        components: raw_components
            .into_iter()
            .zip(component_names)
            .map(|(input, name)| ComponentRecord { name, input })
            .collect(),
        replace: q.replace.unwrap_or(false),
    })
}

/// The knowledge-base write of a prepared analysis made at `now`, with its history entry.
fn analysis_record(p: &Prepared, now: DateTime<Utc>) -> Analysis<'_> {
    Analysis {
        repository: RepositoryFacts {
            name: &p.repository,
            problem_domain: p.problem_domain.as_deref(),
            commit_sha: p.commit_sha.as_deref(),
            analyzed_at: Some(now),
        },
        patterns: p
            .patterns
            .iter()
            .map(|p| PatternFacts {
                name: &p.name,
                description: p.description.as_deref(),
                context: p.context.as_deref(),
                keywords: &p.keywords,
            })
            .collect(),
        shared_keywords: &[],
        decisions: p
            .decisions
            .iter()
            .map(|d| DecisionFacts {
                what: &d.what,
                why: d.why.as_deref(),
                alternatives: d.alternatives.as_deref(),
            })
            .collect(),
        components: p
            .components
            .iter()
            .map(|c| ComponentFacts {
                name: &c.name,
                purpose: c
                    .input
                    .purpose
                    .as_deref()
                    .or(c.input.description.as_deref()),
                location: c.input.location.as_deref(),
                component_type: c.input.component_type.as_deref(),
                language: c.input.language.as_deref(),
                api_signature: None,
                keywords: None,
            })
            .collect(),
        history: vec![HistoryFacts {
            commit_sha: p.commit_sha.as_deref(),
            analyzed_at: now,
            patterns_count: p.patterns.len() as i32,
            decisions_count: p.decisions.len() as i32,
            components_count: p.components.len() as i32,
        }],
        replace: p.replace,
    }
}

async fn run_record_analysis(
    ctx: SkillContext,
    input: Map<String, Value>,
) -> Result<SkillOutput, SkillError> {
    let prepared = prepare(parse(input)?)?;
    let plan = plan_embeddings(&ctx, &prepared.repository, &prepared.patterns).await?;
    let record = analysis_record(&prepared, Utc::now());
    let (w, embedded) = write(&ctx, &record, &prepared.patterns, plan.as_ref())
        .await
        .map_err(|e| SkillError::from(e).context("Failed to record analysis"))?;

    let repository = &prepared.repository;
    let mut out = output(json!({
        "message": format!("Analysis of {repository} recorded"),
        "repository": repository,
        "repository_id": w.repo_id,
        "patterns_written": w.patterns.written,
        "patterns_unchanged": w.patterns.unchanged,
        "embeddings_computed": embedded,
        "embedding_model": ctx.search.embedder.as_ref().map(|e| e.model_id()),
        "keywords_linked": w.keyword_links.written,
        "decisions_written": w.decisions.written,
        "decisions_unchanged": w.decisions.unchanged,
        "components_written": w.components.written,
        "components_unchanged": w.components.unchanged,
        "analysis_id": w.history_id,
    }));
    if let Some(r) = w.removed {
        out.insert(
            "removed".into(),
            json!({"patterns": r.patterns, "decisions": r.decisions, "components": r.components}),
        );
    }
    if let Some(Planned::Skipped { why, retry }) = plan {
        if retry {
            ctx.search.wake_backfill();
        }
        out.insert("embedding_warning".into(), json!(why));
    }
    Ok(out)
}

/// Writes the analysis in one transaction, with the embeddings prepared for its patterns
/// (matched to the pattern ids the write returns); also the number of embeddings stored.
async fn write(
    ctx: &SkillContext,
    record: &Analysis<'_>,
    patterns: &[Pattern],
    plan: Option<&Planned>,
) -> Result<(Written, u64), sqlx::Error> {
    let mut tx = crate::db::begin(ctx.pool()).await?;
    let w = analysis::write_analysis(&mut tx, record).await?;
    let mut embedded = 0;
    if let Some(Planned::Ready {
        model,
        texts,
        vectors,
    }) = plan
    {
        let ids: HashMap<&str, i32> = patterns
            .iter()
            .map(|p| p.name.as_str())
            .zip(w.pattern_ids.iter().copied())
            .collect();
        let texts: Vec<PatternText> = texts
            .iter()
            .filter_map(|t| {
                ids.get(t.name.as_str()).map(|id| PatternText {
                    id: *id,
                    ..t.clone()
                })
            })
            .collect();
        embedded = search::set_embeddings(&mut tx, model, &texts, vectors).await?;
    }
    tx.commit().await?;
    Ok((w, embedded))
}

/// Embeddings prepared before the transaction.
enum Planned {
    /// Vectors for `texts` (ids are filled in once the patterns are upserted).
    Ready {
        model: String,
        texts: Vec<PatternText>,
        vectors: Vec<Vector>,
    },
    /// Nothing embedded, and why (told to the caller); `retry` when the background backfill
    /// can make up for it.
    Skipped { why: String, retry: bool },
}

/// Embeds the patterns whose stored text will differ after this write (a description or context
/// left out keeps the stored one), or that have no embedding from the configured model. `None`
/// when embeddings are off or nothing needs one.
async fn plan_embeddings(
    ctx: &SkillContext,
    repository: &str,
    patterns: &[Pattern],
) -> Result<Option<Planned>, SkillError> {
    let Some(embedder) = ctx.search.embedder.as_ref() else {
        return Ok(None);
    };
    if patterns.is_empty() {
        return Ok(None);
    }
    let model = embedder.model_id();
    let names: Vec<String> = patterns.iter().map(|p| p.name.clone()).collect();
    let (others, stored) = {
        let mut conn = ctx.pool().acquire().await?;
        let others = search::other_models(&mut conn, &model).await?;
        let stored = search::texts_by_name(&mut conn, repository, &names).await?;
        (others, stored)
    };
    if !others.is_empty() {
        return Ok(Some(Planned::Skipped {
            why: format!(
                "Patterns were stored without embeddings. {}",
                mixed_models_message(&model, &others)
            ),
            retry: false,
        }));
    }
    let stored: HashMap<&str, &PatternText> = stored.iter().map(|s| (s.name.as_str(), s)).collect();
    let texts: Vec<PatternText> = patterns
        .iter()
        .filter_map(|p| {
            let before = stored.get(p.name.as_str());
            let after = PatternText {
                id: 0,
                name: p.name.clone(),
                description: p
                    .description
                    .clone()
                    .or_else(|| before.and_then(|b| b.description.clone())),
                context: p
                    .context
                    .clone()
                    .or_else(|| before.and_then(|b| b.context.clone())),
                embedding_model: Some(model.clone()),
            };
            let current = before.is_some_and(|b| {
                b.description == after.description
                    && b.context == after.context
                    && b.embedding_model.as_deref() == Some(model.as_str())
            });
            (!current).then_some(after)
        })
        .collect();
    if texts.is_empty() {
        return Ok(None);
    }
    let inputs: Vec<String> = texts
        .iter()
        .map(|t| pattern_text(&t.name, t.description.as_deref(), t.context.as_deref()))
        .collect();
    match embedder.embed(&inputs).await {
        Ok(vectors) => Ok(Some(Planned::Ready {
            model,
            texts,
            vectors: vectors.into_iter().map(Vector::from).collect(),
        })),
        Err(e) => {
            tracing::warn!(repository, error = %e, "embedding the analysis' patterns failed; they are stored without");
            Ok(Some(Planned::Skipped {
                why: format!(
                    "Patterns were stored without embeddings: {e}. They are embedded in the background \
                     once the provider answers (or run `nexusd embed`)."
                ),
                retry: true,
            }))
        }
    }
}
