//! Where a reusable component belongs, computed from the knowledge base rather than from
//! repository names (`docs/skill-rules.md`, "Component placement"): component similarity,
//! the dependency graph, and the six weighted factors of a candidate repository's canonical
//! score, plus the consolidation plan's effort model. Pure functions over a [`Knowledge`]
//! snapshot that `kb::components` loads.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDateTime, Utc};

use serde_json::{Value, json};

/// A component as stored in `reusable_components`.
#[derive(Debug, Clone, Default)]
pub struct Component {
    /// `component_id`, or `<repository>:<name>` when the row has none.
    pub id: String,
    pub repository: String,
    pub name: String,
    pub component_type: String,
    pub location: Option<String>,
    pub keywords: Vec<String>,
    pub lines_of_code: i64,
    pub cyclomatic_complexity: Option<f64>,
    pub first_seen: Option<NaiveDateTime>,
    pub sync_status: String,
    pub api_signature: Option<String>,
    pub public_methods: Vec<String>,
}

/// A repository with what it is known for.
#[derive(Debug, Clone, Default)]
pub struct Repository {
    pub name: String,
    pub problem_domain: Option<String>,
    pub last_analyzed: Option<DateTime<Utc>>,
    /// Keywords linked to the repository's patterns.
    pub pattern_keywords: Vec<String>,
}

/// The knowledge the scores are computed from.
#[derive(Debug, Clone, Default)]
pub struct Knowledge {
    pub repositories: Vec<Repository>,
    pub components: Vec<Component>,
    /// `(dependent, dependency)`: the first repository depends on the second.
    pub edges: BTreeSet<(String, String)>,
}

/// A `dependencies` row: the repository that recorded it, the name, the type.
pub struct DependencyRow {
    pub repository: String,
    pub name: String,
    pub kind: Option<String>,
}

/// A `repository_relationships` row.
pub struct RelationshipRow {
    pub source: String,
    pub target: String,
    pub kind: String,
}

/// The factors of a canonical score and their weights (`docs/skill-rules.md`, "Component
/// placement").
const WEIGHTS: [(&str, f64); 6] = [
    ("repository_purpose", 0.30),
    ("usage_count", 0.30),
    ("dependency_centrality", 0.20),
    ("maintenance_activity", 0.10),
    ("component_complexity", 0.05),
    ("first_implementation", 0.05),
];

/// A component counts as misplaced when the best repository beats its current one by this.
pub const MISPLACED_MARGIN: f64 = 0.1;
/// Similarity from which two components are taken as implementations of the same thing in
/// `analyze_component_centrality` and `recommend_consolidation_plan`.
const SAME_COMPONENT_SIMILARITY: f64 = 0.5;
/// Days after which maintenance activity reaches 0.
const MAINTENANCE_HORIZON_DAYS: f64 = 365.0;

const STOPWORDS: &[&str] = &[
    "the", "and", "for", "with", "from", "into", "that", "this", "are", "was", "use", "using",
    "of", "to", "in", "on", "an", "a", "by", "or", "is", "it", "as", "at",
];

/// Lower-case words of a text, split on anything not alphanumeric and at camelCase
/// boundaries; at least 2 characters, without stopwords.
pub fn tokens(text: &str) -> BTreeSet<String> {
    let mut spaced = String::with_capacity(text.len() + 8);
    let mut previous: Option<char> = None;
    for c in text.chars() {
        if c.is_uppercase() && previous.is_some_and(|p| p.is_lowercase() || p.is_ascii_digit()) {
            spaced.push(' ');
        }
        spaced.push(if c.is_alphanumeric() { c } else { ' ' });
        previous = Some(c);
    }
    spaced
        .split_whitespace()
        .map(str::to_lowercase)
        .filter(|w| w.chars().count() >= 2 && !STOPWORDS.contains(&w.as_str()))
        .collect()
}

/// A name reduced to lower-case letters and digits: `HTTP_Client` = `http-client`.
fn normalise_name(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

/// What a component is about: its keywords and the words of its name.
pub fn terms(c: &Component) -> BTreeSet<String> {
    let mut t = tokens(&c.name);
    for k in &c.keywords {
        t.extend(tokens(k));
    }
    t
}

fn jaccard(a: &BTreeSet<String>, b: &BTreeSet<String>) -> f64 {
    let union = a.union(b).count();
    if union == 0 {
        return 0.0;
    }
    a.intersection(b).count() as f64 / union as f64
}

/// 1.0 for the same normalised name, else the Jaccard index of their [`terms`].
pub fn similarity(a: &Component, b: &Component) -> f64 {
    if normalise_name(&a.name) == normalise_name(&b.name) {
        1.0
    } else {
        round3(jaccard(&terms(a), &terms(b)))
    }
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The dependency graph. A `dependencies` row of repository X naming a known repository Y
/// (by full name, or by the part after `/` when that is unique): type `consumer` or
/// `derivative` means Y depends on X; any other type means X depends on Y. A
/// `repository_relationships` row means source depends on target, except the types
/// `consumer`, `consumed_by`, `used_by` and `derivative`, which mean target depends on source.
pub fn resolve_edges(
    repositories: &[String],
    dependencies: &[DependencyRow],
    relationships: &[RelationshipRow],
) -> BTreeSet<(String, String)> {
    let known: BTreeSet<&str> = repositories.iter().map(String::as_str).collect();
    let mut short: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for name in repositories {
        let tail = name.rsplit('/').next().unwrap_or(name).to_lowercase();
        short.entry(tail).or_default().push(name);
    }
    let lookup = |name: &str| -> Option<String> {
        let name = name.trim();
        if known.contains(name) {
            return Some(name.to_string());
        }
        match short.get(&name.to_lowercase()).map(Vec::as_slice) {
            Some([only]) => Some(only.to_string()),
            _ => None,
        }
    };
    let reversed = |kind: &str| {
        matches!(
            kind.trim().to_lowercase().as_str(),
            "consumer" | "consumed_by" | "used_by" | "derivative"
        )
    };
    let mut edges = BTreeSet::new();
    for d in dependencies {
        let Some(other) = lookup(&d.name) else {
            continue;
        };
        let edge = if d.kind.as_deref().is_some_and(reversed) {
            (other, d.repository.clone())
        } else {
            (d.repository.clone(), other)
        };
        if edge.0 != edge.1 {
            edges.insert(edge);
        }
    }
    for r in relationships {
        let edge = if reversed(&r.kind) {
            (r.target.clone(), r.source.clone())
        } else {
            (r.source.clone(), r.target.clone())
        };
        if edge.0 != edge.1 {
            edges.insert(edge);
        }
    }
    edges
}

/// A candidate's canonical score.
#[derive(Debug, Clone, PartialEq)]
pub struct CandidateScore {
    pub repository: String,
    pub score: f64,
    /// In [`WEIGHTS`] order.
    pub factors: Vec<(&'static str, f64)>,
}

impl CandidateScore {
    /// "Repository r scores well on: f: v, …" with the three highest factors.
    pub fn reasoning(&self) -> String {
        let mut top: Vec<&(&str, f64)> = self.factors.iter().filter(|(_, v)| *v > 0.0).collect();
        top.sort_by(|a, b| b.1.total_cmp(&a.1));
        if top.is_empty() {
            return format!(
                "Repository {} has nothing in the knowledge base linking it to this component",
                self.repository
            );
        }
        let listed: Vec<String> = top
            .iter()
            .take(3)
            .map(|(name, value)| format!("{name}: {value:.2}"))
            .collect();
        format!(
            "Repository {} scores well on: {}",
            self.repository,
            listed.join(", ")
        )
    }

    pub fn to_json(&self) -> Value {
        json!({
            "canonical_score": self.score,
            "factors": self.factors.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "weights": WEIGHTS.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "reasoning": self.reasoning(),
        })
    }
}

impl Knowledge {
    pub fn repository(&self, name: &str) -> Option<&Repository> {
        self.repositories.iter().find(|r| r.name == name)
    }

    /// Repositories that depend on `name`.
    pub fn dependents(&self, name: &str) -> BTreeSet<&str> {
        self.edges
            .iter()
            .filter(|(_, to)| to == name)
            .map(|(from, _)| from.as_str())
            .collect()
    }

    /// Components of `repository` named like `name` (normalised).
    pub fn named(&self, repository: &str, name: &str) -> Vec<&Component> {
        let wanted = normalise_name(name);
        self.components
            .iter()
            .filter(|c| c.repository == repository && normalise_name(&c.name) == wanted)
            .collect()
    }

    /// The implementations of a component called `name` as seen from `repository`: the rows of
    /// that repository with that name and everything at least [`SAME_COMPONENT_SIMILARITY`]
    /// similar to them elsewhere; when the repository has no such row, the rows with that name
    /// anywhere. Also the terms describing the component, and whether `repository` has it.
    pub fn implementations(
        &self,
        name: &str,
        repository: &str,
    ) -> (Vec<&Component>, BTreeSet<String>, bool) {
        let own = self.named(repository, name);
        let found = !own.is_empty();
        let mut list: Vec<&Component> = Vec::new();
        let mut subject = tokens(name);
        if found {
            for c in &own {
                subject.extend(terms(c));
                list.push(c);
                for (other, _) in self.similar_to(c, SAME_COMPONENT_SIMILARITY, true) {
                    list.push(other);
                }
            }
        } else {
            let wanted = normalise_name(name);
            for c in self
                .components
                .iter()
                .filter(|c| normalise_name(&c.name) == wanted)
            {
                subject.extend(terms(c));
                list.push(c);
            }
        }
        let mut seen = BTreeSet::new();
        list.retain(|c| seen.insert(c.id.clone()));
        (list, subject, found)
    }

    /// What a repository is known for, leaving out the components in `exclude` (the
    /// implementations being placed, which would otherwise vote for where they already are):
    /// pattern keywords, problem-domain words and the terms of its other components.
    pub fn vocabulary(&self, repo: &Repository, exclude: &BTreeSet<&str>) -> BTreeSet<String> {
        let mut words: BTreeSet<String> = repo
            .pattern_keywords
            .iter()
            .flat_map(|k| tokens(k))
            .collect();
        if let Some(domain) = &repo.problem_domain {
            words.extend(tokens(domain));
        }
        for c in self
            .components
            .iter()
            .filter(|c| c.repository == repo.name && !exclude.contains(c.id.as_str()))
        {
            words.extend(terms(c));
        }
        words
    }

    /// Components of other repositories at least `min` similar to `subject`, most similar first.
    pub fn similar_to<'a>(
        &'a self,
        subject: &Component,
        min: f64,
        include_diverged: bool,
    ) -> Vec<(&'a Component, f64)> {
        let mut found: Vec<(&Component, f64)> = self
            .components
            .iter()
            .filter(|c| c.repository != subject.repository && c.id != subject.id)
            .filter(|c| include_diverged || !c.sync_status.eq_ignore_ascii_case("diverged"))
            .map(|c| (c, similarity(subject, c)))
            .filter(|(_, s)| *s >= min)
            .collect();
        found.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.id.cmp(&b.0.id)));
        found
    }

    /// Canonical scores of `candidates` as the home of a component described by `subject`
    /// (its terms) and implemented by `implementations`, best first (ties by name).
    pub fn score(
        &self,
        subject: &BTreeSet<String>,
        implementations: &[&Component],
        candidates: &[&str],
    ) -> Vec<CandidateScore> {
        let exclude: BTreeSet<&str> = implementations.iter().map(|c| c.id.as_str()).collect();
        let holders: BTreeSet<&str> = implementations
            .iter()
            .map(|c| c.repository.as_str())
            .collect();
        let vocabularies: BTreeMap<&str, BTreeSet<String>> = self
            .repositories
            .iter()
            .map(|r| (r.name.as_str(), self.vocabulary(r, &exclude)))
            .collect();
        // Users: repositories whose vocabulary shares a term with the component, or that hold
        // an implementation of it.
        let users: BTreeSet<&str> = vocabularies
            .iter()
            .filter(|(name, words)| holders.contains(*name) || !words.is_disjoint(subject))
            .map(|(name, _)| *name)
            .collect();
        let scoring = Scoring {
            knowledge: self,
            subject,
            implementations,
            vocabularies: &vocabularies,
            users: &users,
            others: self.repositories.len().saturating_sub(1),
            latest: self
                .repositories
                .iter()
                .filter_map(|r| r.last_analyzed)
                .max(),
            earliest: implementations.iter().map(|c| first_seen(c)).min(),
        };
        let mut scores: Vec<CandidateScore> =
            candidates.iter().map(|c| scoring.candidate(c)).collect();
        scores.sort_by(|a, b| {
            b.score
                .total_cmp(&a.score)
                .then(a.repository.cmp(&b.repository))
        });
        scores
    }
}

/// When a component was first seen, ordered so that undated implementations count as later
/// than dated ones; if none is dated, every holder ties for first.
fn first_seen(c: &Component) -> (bool, Option<NaiveDateTime>) {
    (c.first_seen.is_none(), c.first_seen)
}

/// What every candidate of one [`Knowledge::score`] call is scored against.
struct Scoring<'a> {
    knowledge: &'a Knowledge,
    subject: &'a BTreeSet<String>,
    implementations: &'a [&'a Component],
    vocabularies: &'a BTreeMap<&'a str, BTreeSet<String>>,
    users: &'a BTreeSet<&'a str>,
    /// The number of repositories other than the candidate.
    others: usize,
    /// The most recent analysis of any repository.
    latest: Option<DateTime<Utc>>,
    earliest: Option<(bool, Option<NaiveDateTime>)>,
}

impl Scoring<'_> {
    /// The six factors of `candidate` (in [`WEIGHTS`] order) and its weighted score.
    fn candidate(&self, candidate: &str) -> CandidateScore {
        let k = self.knowledge;
        let repo = k.repository(candidate);
        let purpose = match (self.subject.len(), self.vocabularies.get(candidate)) {
            (0, _) | (_, None) => 0.0,
            (n, Some(words)) => self.subject.intersection(words).count() as f64 / n as f64,
        };
        let dependents = k.dependents(candidate);
        let usage = if self.users.is_empty() {
            0.0
        } else {
            self.users
                .iter()
                .filter(|u| **u == candidate || dependents.contains(*u))
                .count() as f64
                / self.users.len() as f64
        };
        let centrality = if self.others == 0 {
            0.0
        } else {
            (dependents.len() as f64 / self.others as f64).min(1.0)
        };
        let maintenance = match (self.latest, repo.and_then(|r| r.last_analyzed)) {
            (Some(latest), Some(at)) => {
                let days = (latest - at).num_seconds() as f64 / 86_400.0;
                1.0 - (days / MAINTENANCE_HORIZON_DAYS).clamp(0.0, 1.0)
            }
            _ => 0.0,
        };
        let own: Vec<&&Component> = self
            .implementations
            .iter()
            .filter(|c| c.repository == candidate)
            .collect();
        let complexity = own
            .iter()
            .map(|c| complexity(c.lines_of_code, c.cyclomatic_complexity))
            .fold(0.0, f64::max);
        let first = if own.is_empty() {
            0.0
        } else if own.iter().any(|c| Some(first_seen(c)) == self.earliest) {
            1.0
        } else {
            0.5
        };
        let values = [purpose, usage, centrality, maintenance, complexity, first];
        let factors: Vec<(&'static str, f64)> = WEIGHTS
            .iter()
            .zip(values)
            .map(|((name, _), v)| (*name, round3(v)))
            .collect();
        let score = round3(WEIGHTS.iter().zip(values).map(|((_, w), v)| w * v).sum());
        CandidateScore {
            repository: candidate.to_string(),
            score,
            factors,
        }
    }
}

/// `min(1, loc/500)·0.6 + min(1, cc/50)·0.4`: size and complexity, each capped at 1.
pub fn complexity(lines_of_code: i64, cyclomatic: Option<f64>) -> f64 {
    (lines_of_code.max(0) as f64 / 500.0).min(1.0) * 0.6
        + (cyclomatic.unwrap_or(0.0).max(0.0) / 50.0).min(1.0) * 0.4
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use chrono::TimeZone;

    fn component(id: &str, repo: &str, name: &str, keywords: &[&str]) -> Component {
        Component {
            id: id.into(),
            repository: repo.into(),
            name: name.into(),
            component_type: "utility".into(),
            keywords: keywords.iter().map(|k| k.to_string()).collect(),
            sync_status: "unknown".into(),
            ..Component::default()
        }
    }

    fn repo(name: &str, keywords: &[&str], day: u32) -> Repository {
        Repository {
            name: name.into(),
            problem_domain: None,
            last_analyzed: Utc.with_ymd_and_hms(2026, 11, day, 0, 0, 0).single(),
            pattern_keywords: keywords.iter().map(|k| k.to_string()).collect(),
        }
    }

    #[test]
    fn tokens_and_names() {
        assert_eq!(
            tokens("RetryPolicy for HTTP_client-v2")
                .into_iter()
                .collect::<Vec<_>>(),
            ["client", "http", "policy", "retry", "v2"]
        );
        assert_eq!(
            normalise_name("Retry_Policy"),
            normalise_name("retry-policy")
        );
        let a = component("a", "x/a", "retry-policy", &["backoff"]);
        let b = component("b", "x/b", "RetryPolicy", &[]);
        let c = component("c", "x/c", "backoff", &["retry"]);
        assert_eq!(similarity(&a, &b), 1.0);
        // {retry, policy, backoff} vs {backoff, retry}: 2 of 3.
        assert_eq!(similarity(&a, &c), 0.667);
    }

    #[test]
    fn edges_come_from_dependencies_and_relationships() {
        let repos: Vec<String> = ["acme/lib", "acme/app", "acme/web", "other/web"]
            .map(String::from)
            .to_vec();
        let deps = [
            DependencyRow {
                repository: "acme/lib".into(),
                name: "acme/app".into(),
                kind: Some("consumer".into()),
            },
            DependencyRow {
                repository: "acme/app".into(),
                name: "lib".into(),
                kind: Some("external".into()),
            },
            // Ambiguous short name and unknown names are ignored.
            DependencyRow {
                repository: "acme/app".into(),
                name: "web".into(),
                kind: None,
            },
            DependencyRow {
                repository: "acme/app".into(),
                name: "tokio".into(),
                kind: Some("external".into()),
            },
        ];
        let rels = [
            RelationshipRow {
                source: "acme/web".into(),
                target: "acme/lib".into(),
                kind: "depends_on".into(),
            },
            RelationshipRow {
                source: "acme/lib".into(),
                target: "other/web".into(),
                kind: "used_by".into(),
            },
        ];
        let edges = resolve_edges(&repos, &deps, &rels);
        let expected: BTreeSet<(String, String)> = [
            ("acme/app", "acme/lib"),
            ("acme/web", "acme/lib"),
            ("other/web", "acme/lib"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        assert_eq!(edges, expected);
    }

    /// A library every other repository depends on, whose patterns are about retries, versus
    /// the application that happens to hold the retry code.
    pub(crate) fn knowledge() -> Knowledge {
        let mut k = Knowledge {
            repositories: vec![
                repo("acme/lib", &["retry", "backoff", "http"], 20),
                repo("acme/app", &["billing"], 20),
                repo("acme/web", &["ui", "retry"], 10),
                repo("acme/core-common", &[], 1),
            ],
            components: vec![component(
                "acme/app:retry-policy",
                "acme/app",
                "retry-policy",
                &["retry", "backoff"],
            )],
            edges: BTreeSet::new(),
        };
        k.repositories[3].last_analyzed = None;
        k.components[0].lines_of_code = 250;
        k.components[0].cyclomatic_complexity = Some(10.0);
        for dependent in ["acme/app", "acme/web"] {
            k.edges
                .insert((dependent.to_string(), "acme/lib".to_string()));
        }
        k
    }

    #[test]
    fn the_repository_the_data_points_to_wins() {
        let k = knowledge();
        let subject = terms(&k.components[0]);
        let implementations: Vec<&Component> = k.components.iter().collect();
        let candidates: Vec<&str> = k.repositories.iter().map(|r| r.name.as_str()).collect();
        let scores = k.score(&subject, &implementations, &candidates);
        let order: Vec<&str> = scores.iter().map(|s| s.repository.as_str()).collect();
        assert_eq!(order[0], "acme/lib");
        let lib = &scores[0];
        // purpose: {retry, policy, backoff} ∩ {retry, backoff, http} = 2/3; users: lib (keywords),
        // app (holder), web (retry): all served by lib (itself + 2 dependents) = 1; centrality 2/3;
        // latest analysis; no implementation.
        assert_eq!(
            lib.factors,
            vec![
                ("repository_purpose", 0.667),
                ("usage_count", 1.0),
                ("dependency_centrality", 0.667),
                ("maintenance_activity", 1.0),
                ("component_complexity", 0.0),
                ("first_implementation", 0.0),
            ]
        );
        assert_eq!(
            lib.score,
            round3(0.3 * 2.0 / 3.0 + 0.3 + 0.2 * 2.0 / 3.0 + 0.1)
        );
        let app = scores.iter().find(|s| s.repository == "acme/app").unwrap();
        // The app's own copy does not count towards its purpose; it is the first implementation.
        assert_eq!(app.factors[0].1, 0.0);
        assert_eq!(app.factors[4].1, round3(0.5 * 0.6 + 0.2 * 0.4));
        assert_eq!(app.factors[5].1, 1.0);
        assert!(lib.score - app.score >= MISPLACED_MARGIN);
        // A name that sounds central earns nothing.
        let common = scores
            .iter()
            .find(|s| s.repository == "acme/core-common")
            .unwrap();
        assert_eq!(common.score, 0.0);
        assert!(common.reasoning().contains("nothing in the knowledge base"));
        assert!(lib.reasoning().starts_with(
            "Repository acme/lib scores well on: usage_count: 1.00, maintenance_activity: 1.00"
        ));
    }

    #[test]
    fn similar_components_exclude_diverged_on_request() {
        let mut k = knowledge();
        let mut copy = component("acme/web:retry", "acme/web", "retry_policy", &[]);
        copy.sync_status = "diverged".into();
        k.components.push(copy);
        let subject = k.components[0].clone();
        assert_eq!(k.similar_to(&subject, 0.5, true).len(), 1);
        assert!(k.similar_to(&subject, 0.5, false).is_empty());
    }
}
