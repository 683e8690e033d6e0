//! Dependencies from manifests (`docs/workflows.md`, "Dependencies"):
//! `discover_repository_dependencies` (protected) reads a repository's manifests on GitHub and
//! replaces what is stored for it; `update_dependency_verification` (protected) records a
//! person's confidence in repository-to-repository dependencies, all in one transaction.

use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use super::context::SkillContext;
use super::error::SkillError;
use super::registry::{Skill, SkillOutput, example, handler, output, parse, repository_schema};
use super::workflows::steps;
use crate::kb::manifests::{self, Verification};

pub fn discover_repository_dependencies() -> Skill {
    Skill {
        id: "discover_repository_dependencies",
        name: "Discover Repository Dependencies",
        description: "Read a repository's manifests on GitHub (Cargo.toml, package.json, requirements.txt, \
                      go.mod, pyproject.toml), store the packages they declare and the repositories of the \
                      knowledge base they depend on (replacing what was discovered before). Needs GITHUB_TOKEN \
                      (without it: error_type not_configured).",
        tags: &["dependencies", "manifests", "discovery"],
        requires_authentication: true,
        input_schema: json!({
            "type": "object",
            "properties": {
                "repository_name": repository_schema("A repository of the knowledge base (owner/repo)"),
            },
            "required": ["repository_name"],
        }),
        examples: vec![example(
            json!({"repository_name": "acme/payments-api"}),
            "Discover one repository's dependencies",
        )],
        aliases: &[("repository", "repository_name")],
        empty: json!({}),
        uses_database: true,
        handler: handler(run_discover),
    }
}

#[derive(Deserialize)]
struct DiscoverInput {
    repository_name: String,
}

async fn run_discover(
    ctx: SkillContext,
    input: Map<String, Value>,
) -> Result<SkillOutput, SkillError> {
    let q: DiscoverInput = parse(input)?;
    let repository = q.repository_name;
    let repo_id = steps::known_repository(&ctx, &repository).await?;
    let never = CancellationToken::new();
    let source = steps::open(&ctx, &never, &repository).await?;
    let found = steps::discover_dependencies(&ctx, &never, &source, repo_id).await?;
    let (dependencies, edges) = {
        let mut conn = ctx.pool().acquire().await?;
        manifests::of_repository(&mut conn, repo_id).await?
    };
    let mut message = format!(
        "Discovered {} dependencies in {} manifest(s) of {repository}; {} on other repositories of the knowledge base",
        found.stored.dependencies,
        found.manifests.len(),
        found.stored.edges
    );
    if !found.manifest_errors.is_empty() {
        message.push_str(&format!(
            "; {} manifest(s) could not be read (see manifest_errors)",
            found.manifest_errors.len()
        ));
    }
    Ok(output(json!({
        "repository": repository,
        "dependencies_discovered": found.stored.dependencies,
        "message": message,
        "manifests": found.manifests.iter().map(|m| json!({
            "path": m.path,
            "ecosystem": m.ecosystem,
            "package": m.package,
            "dependencies": m.dependencies.len(),
        })).collect::<Vec<_>>(),
        "dependencies": dependencies,
        "repository_dependencies": edges,
        "manifest_errors": found.manifest_errors,
    })))
}

pub fn update_dependency_verification() -> Skill {
    Skill {
        id: "update_dependency_verification",
        name: "Update Dependency Verification",
        description: "Record a person's verdict on dependencies between repositories of the knowledge base: each \
                      edge (source_repository depends on target_repository, of dependency_type) gets the confidence \
                      given (0-100) and is marked verified; edges not stored yet are added. One transaction: if a \
                      repository is unknown, nothing is written.",
        tags: &["dependencies", "verification"],
        requires_authentication: true,
        input_schema: json!({
            "type": "object",
            "properties": {
                "dependencies": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 500,
                    "items": {
                        "type": "object",
                        "properties": {
                            "source_repository": repository_schema("The repository that depends"),
                            "target_repository": repository_schema("The repository depended on"),
                            "dependency_type": {"type": "string", "minLength": 1, "maxLength": 50},
                            "confidence": {"type": "number", "minimum": 0, "maximum": 100},
                        },
                        "required": ["source_repository", "target_repository", "dependency_type", "confidence"],
                    },
                },
            },
            "required": ["dependencies"],
        }),
        examples: vec![example(
            json!({"dependencies": [{"source_repository": "acme/web", "target_repository": "acme/api", "dependency_type": "runtime", "confidence": 90}]}),
            "Confirm one dependency",
        )],
        aliases: &[],
        empty: json!({}),
        uses_database: true,
        handler: handler(run_verify),
    }
}

#[derive(Deserialize)]
struct VerifyInput {
    dependencies: Vec<VerifyItem>,
}

#[derive(Deserialize)]
struct VerifyItem {
    source_repository: String,
    target_repository: String,
    dependency_type: String,
    confidence: f64,
}

async fn run_verify(
    ctx: SkillContext,
    input: Map<String, Value>,
) -> Result<SkillOutput, SkillError> {
    let q: VerifyInput = parse(input)?;
    let mut tx = crate::db::begin(ctx.pool()).await?;
    let mut unknown: Vec<String> = Vec::new();
    for d in &q.dependencies {
        if d.source_repository == d.target_repository {
            return Err(SkillError::Invalid(format!(
                "Invalid parameter 'dependencies': {} cannot depend on itself",
                d.source_repository
            )));
        }
        let written = manifests::verify(
            &mut tx,
            &Verification {
                source: &d.source_repository,
                target: &d.target_repository,
                dependency_type: &d.dependency_type,
                confidence: d.confidence.round().clamp(0.0, 100.0) as i32,
            },
        )
        .await?;
        if !written {
            unknown.push(format!(
                "{} -> {}",
                d.source_repository, d.target_repository
            ));
        }
    }
    if !unknown.is_empty() {
        tx.rollback().await?;
        return Err(SkillError::failed(format!(
            "Repositories not found in knowledge base for: {}; nothing was updated",
            unknown.join(", ")
        )));
    }
    tx.commit().await?;
    let n = q.dependencies.len();
    Ok(output(json!({
        "updated_count": n,
        "message": format!("{n} dependency verification(s) recorded"),
        "dependencies": q.dependencies.iter().map(|d| json!({
            "source_repository": d.source_repository,
            "target_repository": d.target_repository,
            "dependency_type": d.dependency_type,
            "confidence": d.confidence.round().clamp(0.0, 100.0),
            "verified": true,
        })).collect::<Vec<_>>(),
    })))
}
