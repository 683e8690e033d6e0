//! The analysis steps of one repository, shared by the workflow jobs and the skills that run one
//! of them within their request: rescan its components from GitHub, discover its dependencies
//! from its manifests, measure its complexity, and derive patterns from its stored components.
//! Every GitHub read stops as soon as `cancel` fires; a database write, once begun, runs to its
//! commit (`docs/workflows.md`).

use std::future::Future;

use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use super::super::context::SkillContext;
use super::super::error::SkillError;
use crate::github::{GitHub, GitHubError, parse_repository};
use crate::kb::{self, analysis, complexity, components, manifests};
use crate::rules::Tree;
use crate::rules::complexity::{self as measure, DependencyCounts};
use crate::rules::component_scan;
use crate::rules::manifests::{self as manifest_rules, Manifest};

/// The message of a step stopped by a cancellation (the job, not the step, reports it).
pub const CANCELLED: &str = "cancelled";

/// A repository opened on GitHub: the client, its default branch and its tree.
pub struct Source {
    gh: GitHub,
    pub repository: String,
    pub branch: String,
    pub tree: Tree,
}

/// A GitHub failure for `repository` as a step reports it (`error_type` says which).
pub fn github_error(e: GitHubError, repository: &str) -> SkillError {
    SkillError::github_repository(e, repository)
}

/// Runs a GitHub read unless `cancel` fires first.
async fn read<T>(
    cancel: &CancellationToken,
    repository: &str,
    future: impl Future<Output = Result<T, GitHubError>>,
) -> Result<T, SkillError> {
    tokio::select! {
        _ = cancel.cancelled() => Err(SkillError::failed(CANCELLED)),
        result = future => result.map_err(|e| github_error(e, repository)),
    }
}

/// The repository must be in the knowledge base; its id.
pub async fn known_repository(ctx: &SkillContext, repository: &str) -> Result<i32, SkillError> {
    let mut conn = ctx.pool().acquire().await?;
    kb::repository_id(&mut conn, repository)
        .await?
        .ok_or_else(|| {
            SkillError::failed(format!(
                "Repository '{repository}' not found in knowledge base"
            ))
        })
}

/// Opens `repository` on GitHub (`not_configured` without `GITHUB_TOKEN`).
pub async fn open(
    ctx: &SkillContext,
    cancel: &CancellationToken,
    repository: &str,
) -> Result<Source, SkillError> {
    let gh = GitHub::new(&ctx.config.external.github).map_err(|e| github_error(e, repository))?;
    parse_repository(repository).map_err(|e| github_error(e, repository))?;
    let info = read(cancel, repository, gh.repository(repository)).await?;
    let tree = read(
        cancel,
        repository,
        gh.tree(repository, &info.default_branch),
    )
    .await?;
    Ok(Source {
        gh,
        repository: repository.to_string(),
        branch: info.default_branch,
        tree,
    })
}

impl Source {
    async fn files(
        &self,
        cancel: &CancellationToken,
        paths: Vec<String>,
    ) -> Result<std::collections::BTreeMap<String, String>, SkillError> {
        read(
            cancel,
            &self.repository,
            self.gh.files(&self.repository, &self.branch, paths),
        )
        .await
    }

    /// Reads and parses the manifests: those parsed, and `{manifest, error}` for the others.
    async fn manifests(
        &self,
        cancel: &CancellationToken,
    ) -> Result<(Vec<Manifest>, Vec<Value>), SkillError> {
        let texts = self
            .files(cancel, manifest_rules::manifest_files(&self.tree))
            .await?;
        let mut parsed = Vec::new();
        let mut errors = Vec::new();
        for (path, text) in &texts {
            match manifest_rules::parse(path, text) {
                Ok(m) => parsed.push(m),
                Err(error) => errors.push(json!({"manifest": path, "error": error})),
            }
        }
        Ok((parsed, errors))
    }
}

/// Rescans the repository's components from its source and makes them its recorded ones (as
/// `scan_repository_components` does); returns how many were found.
pub async fn scan_components(
    ctx: &SkillContext,
    cancel: &CancellationToken,
    source: &Source,
) -> Result<usize, SkillError> {
    let contents = source
        .files(cancel, component_scan::candidate_files(&source.tree))
        .await?;
    let found = component_scan::extract_all(&contents);
    let repository = &source.repository;
    if components::replace_named(ctx.pool(), repository, &found)
        .await?
        .is_none()
    {
        return Err(SkillError::failed(format!(
            "Repository '{repository}' not found in knowledge base"
        )));
    }
    Ok(found.len())
}

/// What a dependency discovery found and stored.
pub struct Dependencies {
    pub manifests: Vec<Manifest>,
    pub manifest_errors: Vec<Value>,
    pub stored: manifests::Discovered,
}

/// Discovers the repository's dependencies from its manifests and replaces what is stored.
pub async fn discover_dependencies(
    ctx: &SkillContext,
    cancel: &CancellationToken,
    source: &Source,
    repo_id: i32,
) -> Result<Dependencies, SkillError> {
    let (parsed, manifest_errors) = source.manifests(cancel).await?;
    let mut tx = crate::db::begin(ctx.pool()).await?;
    let names = kb::repository_names(&mut tx).await?;
    let edges = manifest_rules::edges(&source.repository, &parsed, &names);
    let stored = manifests::replace_discovered(&mut tx, repo_id, &parsed, &edges).await?;
    tx.commit().await?;
    Ok(Dependencies {
        manifests: parsed,
        manifest_errors,
        stored,
    })
}

fn counts(manifests: &[Manifest]) -> DependencyCounts {
    let all = manifests.iter().flat_map(|m| &m.dependencies);
    DependencyCounts {
        manifests: manifests.len() as u64,
        declared: all.clone().count() as u64,
        runtime: all.clone().filter(|d| d.scope == "runtime").count() as u64,
        dev: all.filter(|d| d.scope == "dev").count() as u64,
    }
}

/// Measures the repository's complexity and stores it; returns the measurement as stored.
pub async fn measure_complexity(
    ctx: &SkillContext,
    cancel: &CancellationToken,
    source: &Source,
    repo_id: i32,
) -> Result<(measure::Measurement, String), SkillError> {
    let (parsed, _) = source.manifests(cancel).await?;
    let texts = source
        .files(cancel, measure::measured_files(&source.tree))
        .await?;
    let measured = texts
        .iter()
        .filter_map(|(path, text)| measure::measure(path, text))
        .collect();
    let m = measure::summarize(&source.tree, measured, counts(&parsed));
    let metrics = serde_json::to_value(&m)
        .map_err(|e| SkillError::internal(format!("Failed to render the metrics: {e}")))?;
    let files = serde_json::to_value(&m.top)
        .map_err(|e| SkillError::internal(format!("Failed to render the metrics: {e}")))?;
    let mut conn = ctx.pool().acquire().await?;
    let at = complexity::store(&mut conn, repo_id, m.score, &metrics, &files).await?;
    Ok((m, kb::iso_opt(Some(at)).unwrap_or_default()))
}

/// Patterns derived from a repository's stored components: one per component type with at least
/// one component, named after the type and language, listing the components and where they are.
fn derive_patterns(repository: &str, components: &[Value]) -> Vec<(String, String, String)> {
    let mut groups: std::collections::BTreeMap<(String, String), Vec<&Value>> =
        std::collections::BTreeMap::new();
    for c in components {
        let kind = c["component_type"]
            .as_str()
            .unwrap_or("unknown")
            .to_string();
        let language = c["language"].as_str().unwrap_or("unknown").to_string();
        groups.entry((kind, language)).or_default().push(c);
    }
    groups
        .into_iter()
        .filter(|((kind, _), _)| kind != "unknown")
        .map(|((kind, language), members)| {
            let label = kind.replace('_', " ");
            let name = format!("Reusable {label} components ({language})");
            let listed: Vec<String> = members
                .iter()
                .take(10)
                .map(|c| {
                    let files: Vec<&str> = c["files"]
                        .as_array()
                        .map(|f| f.iter().filter_map(Value::as_str).collect())
                        .unwrap_or_default();
                    format!("{} ({})", c["name"].as_str().unwrap_or("?"), files.join(", "))
                })
                .collect();
            let description = format!(
                "{} {label} component(s) in {language} kept as reusable units: {}",
                members.len(),
                listed.join("; ")
            );
            let context = format!(
                "Derived by nexusd from the components stored for {repository} (extract_repository_patterns)"
            );
            (name, description, context)
        })
        .collect()
}

/// Derives patterns from the repository's stored components and upserts them; returns their
/// names and how many were new or changed.
pub async fn extract_patterns(
    ctx: &SkillContext,
    repository: &str,
) -> Result<(Vec<String>, u64), SkillError> {
    let mut tx = crate::db::begin(ctx.pool()).await?;
    let Some(repo_id) = kb::repository_id(&mut tx, repository).await? else {
        return Err(SkillError::failed(format!(
            "Repository '{repository}' not found in knowledge base"
        )));
    };
    let stored = kb::repositories::components(&mut tx, &[repo_id]).await?;
    let components = stored.get(&repo_id).cloned().unwrap_or_default();
    let derived = derive_patterns(repository, &components);
    let patterns = derived
        .iter()
        .map(|(name, description, context)| analysis::PatternFacts {
            name,
            description: Some(description),
            context: Some(context),
            keywords: &[],
        })
        .collect();
    let written = analysis::write_analysis(
        &mut tx,
        &analysis::Analysis {
            repository: analysis::RepositoryFacts {
                name: repository,
                problem_domain: None,
                commit_sha: None,
                analyzed_at: None,
            },
            patterns,
            shared_keywords: &[],
            decisions: vec![],
            components: vec![],
            history: vec![],
            replace: false,
        },
    )
    .await?;
    tx.commit().await?;
    let names = derived.into_iter().map(|(name, _, _)| name).collect();
    Ok((names, written.patterns.written))
}

/// The message of a step's error, as a job's result shows it.
pub fn message(e: SkillError) -> String {
    match e.into_body(Map::new()) {
        Value::Object(body) => body
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("failed")
            .to_string(),
        _ => "failed".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_group_components_by_type_and_language() {
        let components = vec![
            json!({"name": "client", "component_type": "api_client", "language": "rust", "files": ["src/http/client.rs"]}),
            json!({"name": "invoice", "component_type": "data_model", "language": "rust", "files": ["src/billing/invoice.rs"]}),
            json!({"name": "misc", "component_type": "unknown", "language": "rust", "files": []}),
        ];
        let p = derive_patterns("acme/x", &components);
        let names: Vec<&str> = p.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "Reusable api client components (rust)",
                "Reusable data model components (rust)"
            ]
        );
        assert!(p[0].1.contains("client (src/http/client.rs)"));
    }
}
