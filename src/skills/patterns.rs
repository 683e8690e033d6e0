//! Pattern query skills: `query_patterns` (keyword and pattern-name matching across
//! repositories, plus hybrid free-text search of patterns, see `search.rs`) and
//! `get_cross_repo_patterns` (patterns several repositories share).

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::context::SkillContext;
use super::error::SkillError;
use super::registry::{Skill, SkillOutput, example, handler, output, parse, repository_schema};
use crate::kb::{self, patterns::TermMatch, repositories};

pub fn query_patterns() -> Skill {
    Skill {
        id: "query_patterns",
        name: "Query Similar Patterns",
        description: "Search for similar architectural patterns across all repositories in the knowledge base: \
                      repositories whose pattern keywords match the given keywords, whose pattern names match \
                      the given names, or that resemble a given repository; and with 'query', the patterns \
                      closest to a free text by meaning (embeddings) and by words (full text), fused.",
        tags: &["search", "patterns", "similarity"],
        requires_authentication: false,
        input_schema: json!({
            "type": "object",
            "properties": {
                "keywords": {
                    "type": "array",
                    "description": "Keywords to look for in each repository's pattern keywords (case-insensitive)",
                    "items": {"type": "string", "minLength": 1, "maxLength": 200},
                    "maxItems": 50,
                },
                "patterns": {
                    "type": "array",
                    "description": "Pattern names to look for (case-insensitive, whole names); used when keywords is empty",
                    "items": {"type": "string", "minLength": 1, "maxLength": 500},
                    "maxItems": 50,
                },
                "min_matches": {
                    "type": "integer",
                    "description": "Minimum number of matching keywords or names (0 lists every repository)",
                    "minimum": 0,
                    "maximum": 50,
                    "default": 1,
                },
                "repository": repository_schema(
                    "Find repositories similar to this one: its keywords become the search terms and it is \
                     left out of the results (used when neither keywords nor patterns is given)"
                ),
                "query": {
                    "type": "string",
                    "description": "Free text: the patterns closest to it by embedding similarity and full-text \
                                    rank, fused, are returned as similar_patterns",
                    "minLength": 1,
                    "maxLength": 2000,
                },
                "limit": {
                    "type": "integer",
                    "description": "Most similar_patterns to return for 'query'",
                    "minimum": 1,
                    "maximum": 100,
                    "default": 10,
                },
            },
        }),
        examples: vec![
            example(
                json!({"keywords": ["authentication", "jwt"], "min_matches": 1}),
                "Repositories using authentication patterns",
            ),
            example(
                json!({"patterns": ["Retry with exponential backoff"]}),
                "Repositories using a named pattern",
            ),
            example(
                json!({"repository": "acme/payments-api"}),
                "Repositories similar to acme/payments-api",
            ),
            example(
                json!({"query": "verify bearer tokens before handlers run", "limit": 5}),
                "Patterns about request authentication, found by meaning",
            ),
        ],
        aliases: &[],
        empty: json!({"matches": [], "total_matches": 0}),
        uses_database: true,
        handler: handler(run_query_patterns),
    }
}

#[derive(Deserialize)]
struct QueryInput {
    #[serde(default)]
    keywords: Vec<String>,
    #[serde(default)]
    patterns: Vec<String>,
    min_matches: Option<i32>,
    repository: Option<String>,
    query: Option<String>,
    limit: Option<usize>,
}

async fn run_query_patterns(
    ctx: SkillContext,
    input: Map<String, Value>,
) -> Result<SkillOutput, SkillError> {
    query(ctx, input)
        .await
        .map_err(|e| e.context("Failed to query patterns"))
}

async fn query(ctx: SkillContext, input: Map<String, Value>) -> Result<SkillOutput, SkillError> {
    let q: QueryInput = parse(input)?;
    let min_matches = q.min_matches.unwrap_or(1);
    let by_terms = !q.keywords.is_empty() || !q.patterns.is_empty() || q.repository.is_some();
    let (mode, results, terms) = if by_terms {
        matching_repositories(&ctx, &q, min_matches).await?
    } else if q.query.is_some() {
        (Mode::Keywords, Vec::new(), Vec::new())
    } else {
        return Err(SkillError::failed(
            "Must provide either 'keywords' or 'patterns' to search, or 'query' for free text \
             (or 'repository' to find similar ones)",
        ));
    };
    let similar = match &q.query {
        Some(text) => Some(super::search::hybrid(&ctx, text, q.limit.unwrap_or(10)).await?),
        None => None,
    };

    let mut criteria = json!({
        "keywords": if mode == Mode::Keywords { terms } else { q.keywords },
        "patterns": q.patterns,
        "min_matches": min_matches,
    });
    if let Some(repository) = q.repository {
        criteria["repository"] = Value::String(repository);
    }
    let total = results.len();
    let mut out = output(json!({
        "matches": results,
        "total_matches": total,
        "search_criteria": criteria,
    }));
    if let (Some(similar), Some(text)) = (similar, q.query) {
        out["search_criteria"]["query"] = Value::String(text);
        out.insert("search_mode".into(), Value::String(similar.mode.into()));
        out.insert("similar_patterns".into(), Value::Array(similar.results));
    }
    Ok(out)
}

/// The repositories matching the keywords, else the pattern names, else resembling the
/// repository (its keywords become the terms): the mode, the matches, the terms searched.
async fn matching_repositories(
    ctx: &SkillContext,
    q: &QueryInput,
    min_matches: i32,
) -> Result<(Mode, Vec<Value>, Vec<String>), SkillError> {
    let mut tx = kb::snapshot(ctx.pool()).await?;
    let lower = |terms: &[String]| terms.iter().map(|t| t.to_lowercase()).collect::<Vec<_>>();

    let (mode, matches, terms) = if !q.keywords.is_empty() {
        let found =
            kb::patterns::by_keywords(&mut tx, &lower(&q.keywords), min_matches, None).await?;
        (Mode::Keywords, found, q.keywords.clone())
    } else if !q.patterns.is_empty() {
        let found =
            kb::patterns::by_pattern_names(&mut tx, &lower(&q.patterns), min_matches, None).await?;
        (Mode::Patterns, found, q.patterns.clone())
    } else if let Some(repository) = &q.repository {
        let Some(repo) = repositories::get(&mut tx, repository).await? else {
            return Err(not_found(&mut tx, repository).await);
        };
        let keywords = repositories::keywords(&mut tx, repo.id).await?;
        let found = if keywords.is_empty() {
            Vec::new()
        } else {
            kb::patterns::by_keywords(
                &mut tx,
                &lower(&keywords),
                min_matches.max(1),
                Some(repository),
            )
            .await?
        };
        (Mode::Keywords, found, keywords)
    } else {
        return Ok((Mode::Keywords, Vec::new(), Vec::new()));
    };

    let ids: Vec<i32> = matches.iter().map(|m| m.repo_id).collect();
    let results: Vec<Value> = match mode {
        Mode::Keywords => {
            let mut names = repositories::pattern_names(&mut tx, &ids).await?;
            let mut deployments = repositories::deployment_infos(&mut tx, &ids).await?;
            matches
                .into_iter()
                .map(|m| keyword_match(m, &mut names, &mut deployments))
                .collect()
        }
        Mode::Patterns => {
            let mut components = repositories::components(&mut tx, &ids).await?;
            matches
                .into_iter()
                .map(|m| pattern_match(m, &mut components))
                .collect()
        }
    };
    tx.commit().await?;
    Ok((mode, results, terms))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Keywords,
    Patterns,
}

fn keyword_match(
    m: TermMatch,
    names: &mut HashMap<i32, Vec<String>>,
    deployments: &mut HashMap<i32, Value>,
) -> Value {
    json!({
        "repository": m.repository,
        "match_count": m.matched.len(),
        "matched_keywords": m.matched,
        "all_keywords": m.all_items,
        "patterns": names.remove(&m.repo_id).unwrap_or_default(),
        "problem_domain": m.problem_domain,
        "deployment_info": deployments.remove(&m.repo_id).unwrap_or(Value::Null),
    })
}

fn pattern_match(m: TermMatch, components: &mut HashMap<i32, Vec<Value>>) -> Value {
    json!({
        "repository": m.repository,
        "match_count": m.matched.len(),
        "matched_patterns": m.matched,
        "all_patterns": m.all_items,
        "problem_domain": m.problem_domain,
        "reusable_components": components.remove(&m.repo_id).unwrap_or_default(),
    })
}

/// "Repository '<r>' not found in knowledge base" with the names that do exist.
pub async fn not_found(conn: &mut sqlx::PgConnection, repository: &str) -> SkillError {
    let available = kb::repository_names(conn).await.unwrap_or_default();
    SkillError::Failed {
        error: format!("Repository '{repository}' not found in knowledge base"),
        extra: output(json!({"available_repositories": available})),
    }
}

pub fn get_cross_repo_patterns() -> Skill {
    Skill {
        id: "get_cross_repo_patterns",
        name: "Get Cross-Repository Patterns",
        description: "Find architectural patterns that appear in several repositories, most widespread first.",
        tags: &["patterns", "cross-repo", "analysis"],
        requires_authentication: false,
        input_schema: json!({
            "type": "object",
            "properties": {
                "min_repos": {
                    "type": "integer",
                    "description": "Minimum number of repositories a pattern must appear in (alias: min_occurrences)",
                    "minimum": 1,
                    "maximum": 10000,
                    "default": 2,
                },
                "pattern_type": {
                    "type": "string",
                    "description": "Only patterns whose name contains this text (case-insensitive)",
                    "minLength": 1,
                    "maxLength": 500,
                },
                "min_occurrences": {"type": "integer", "description": "Alias of min_repos (the frontend's name)", "minimum": 1, "maximum": 10000},
            },
        }),
        examples: vec![
            example(
                json!({"min_repos": 2}),
                "Patterns shared by at least two repositories",
            ),
            example(
                json!({"min_repos": 3, "pattern_type": "retry"}),
                "Retry patterns used in three or more repositories",
            ),
        ],
        aliases: &[("min_occurrences", "min_repos")],
        empty: json!({"cross_repo_patterns": [], "total_patterns": 0}),
        uses_database: true,
        handler: handler(run_cross_repo),
    }
}

#[derive(Deserialize)]
struct CrossRepoInput {
    min_repos: Option<i32>,
    pattern_type: Option<String>,
}

async fn run_cross_repo(
    ctx: SkillContext,
    input: Map<String, Value>,
) -> Result<SkillOutput, SkillError> {
    let q: CrossRepoInput = parse(input)?;
    let min_repos = q.min_repos.unwrap_or(2);
    let mut conn = ctx.pool().acquire().await?;
    let shared = kb::patterns::shared(&mut conn, min_repos, q.pattern_type.as_deref())
        .await
        .map_err(|e| SkillError::from(e).context("Failed to get cross-repo patterns"))?;
    let total = shared.len();
    let patterns: Vec<Value> = shared
        .into_iter()
        .map(|p| json!({"pattern": p.pattern, "repositories": p.repositories, "repo_count": p.repo_count}))
        .collect();
    Ok(output(json!({
        "cross_repo_patterns": patterns,
        "total_patterns": total,
        "min_repos": min_repos,
    })))
}
