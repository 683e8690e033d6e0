//! The skill registry: one place that declares every skill — id, name, description, tags,
//! whether it needs credentials, its input schema (published in the agent card *and* enforced),
//! examples and its handler — in the reference's registration order.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use anyhow::{Result, bail};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use super::context::SkillContext;
use super::error::SkillError;

/// What a handler returns: the skill's own response keys (without `success`, `timestamp`,
/// `execution_time_ms`, which the executor adds).
pub type SkillOutput = Map<String, Value>;
pub type SkillFuture = Pin<Box<dyn Future<Output = Result<SkillOutput, SkillError>> + Send>>;
pub type Handler = Arc<dyn Fn(SkillContext, Map<String, Value>) -> SkillFuture + Send + Sync>;

/// A `json!({...})` object as a skill's output (key order is kept).
pub fn output(value: Value) -> SkillOutput {
    match value {
        Value::Object(map) => map,
        other => Map::from_iter([("result".to_string(), other)]),
    }
}

/// A typed response (a `Serialize` struct, its fields in the order of the answer's keys) as a
/// skill's output.
pub fn render<T: serde::Serialize>(response: &T) -> Result<SkillOutput, SkillError> {
    serde_json::to_value(response)
        .map(output)
        .map_err(|e| SkillError::internal(format!("Failed to render the response: {e}")))
}

/// Deserialises validated input into a typed struct.
pub fn parse<T: DeserializeOwned>(input: Map<String, Value>) -> Result<T, SkillError> {
    serde_json::from_value(Value::Object(input))
        .map_err(|e| SkillError::Invalid(format!("Invalid input: {e}")))
}

/// One skill.
pub struct Skill {
    pub id: &'static str,
    pub name: &'static str,
    pub description: &'static str,
    pub tags: &'static [&'static str],
    /// Needs credentials (when `REQUIRE_AUTH_FOR_WRITE` is on).
    pub requires_authentication: bool,
    pub input_schema: Value,
    /// `[{input, description}]`, as the agent card shows them.
    pub examples: Vec<Value>,
    /// `(alias, canonical)` field names accepted for clients that use other spellings.
    pub aliases: &'static [(&'static str, &'static str)],
    /// Keys added to every failure response (e.g. `matches: []`), so clients reading them on
    /// failure see the empty shape the original sent.
    pub empty: Value,
    /// Whether the skill needs the database (503 while it is unreachable).
    pub uses_database: bool,
    pub handler: Handler,
}

impl Skill {
    /// Copies alias fields to their canonical names when the canonical one is absent.
    pub fn apply_aliases(&self, input: &mut Map<String, Value>) {
        for (alias, canonical) in self.aliases {
            if input.get(*canonical).is_none_or(Value::is_null)
                && let Some(value) = input.remove(*alias)
            {
                input.insert(canonical.to_string(), value);
            }
        }
    }

    /// Keys merged into a failure response.
    pub fn empty_keys(&self) -> Map<String, Value> {
        self.empty.as_object().cloned().unwrap_or_default()
    }
}

/// Wraps an async fn as a handler.
pub fn handler<F, Fut>(f: F) -> Handler
where
    F: Fn(SkillContext, Map<String, Value>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<SkillOutput, SkillError>> + Send + 'static,
{
    Arc::new(move |ctx, input| Box::pin(f(ctx, input)))
}

/// An example for the agent card.
pub fn example(input: Value, description: &str) -> Value {
    json!({"input": input, "description": description})
}

/// All skills, in registration order, plus the operator's extra protected ones.
pub struct Registry {
    skills: Vec<Skill>,
    index: HashMap<&'static str, usize>,
    extra_protected: Vec<String>,
    auth_required: bool,
}

impl Registry {
    /// Fails on a duplicate id or an unknown id in `NEXUSD_PROTECTED_SKILLS`.
    pub fn new(
        skills: Vec<Skill>,
        extra_protected: &[String],
        auth_required: bool,
    ) -> Result<Self> {
        let mut index = HashMap::new();
        for (i, skill) in skills.iter().enumerate() {
            if index.insert(skill.id, i).is_some() {
                bail!("skill {} is registered twice", skill.id);
            }
        }
        for id in extra_protected {
            if !index.contains_key(id.as_str()) {
                let known: Vec<&str> = skills.iter().map(|s| s.id).collect();
                bail!(
                    "NEXUSD_PROTECTED_SKILLS names an unknown skill {id:?}; known skills: {}",
                    known.join(", ")
                );
            }
        }
        Ok(Registry {
            skills,
            index,
            extra_protected: extra_protected.to_vec(),
            auth_required,
        })
    }

    pub fn get(&self, id: &str) -> Option<&Skill> {
        self.index.get(id).map(|&i| &self.skills[i])
    }

    pub fn iter(&self) -> impl Iterator<Item = &Skill> {
        self.skills.iter()
    }

    pub fn ids(&self) -> Vec<&'static str> {
        self.skills.iter().map(|s| s.id).collect()
    }

    pub fn len(&self) -> usize {
        self.skills.len()
    }

    /// Whether calling `skill` needs credentials right now (declared or added by the operator,
    /// and `REQUIRE_AUTH_FOR_WRITE` on).
    pub fn is_protected(&self, skill: &Skill) -> bool {
        self.auth_required
            && (skill.requires_authentication
                || self.extra_protected.iter().any(|id| id == skill.id))
    }

    /// The agent card's entry for each skill: the schema shown is the one enforced.
    pub fn card_entries(&self) -> Vec<Value> {
        self.skills
            .iter()
            .map(|s| {
                json!({
                    "id": s.id,
                    "name": s.name,
                    "description": s.description,
                    "tags": s.tags,
                    "requires_authentication": self.is_protected(s),
                    "input_schema": s.input_schema,
                    "examples": s.examples,
                })
            })
            .collect()
    }
}

/// Schema fragment for a repository name: `owner/repo`, GitHub's character set.
pub fn repository_schema(description: &str) -> Value {
    json!({
        "type": "string",
        "description": description,
        "minLength": 1,
        "maxLength": 255,
        "pattern": "^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$",
        "x-pattern-message": "must have the form 'owner/repo'",
    })
}

/// Schema fragment for a GitHub repository (`owner/repo`, checked when it is parsed).
pub fn github_repository_schema() -> Value {
    json!({
        "type": "string",
        "description": "GitHub repository in owner/repo form",
        "maxLength": 255,
    })
}
