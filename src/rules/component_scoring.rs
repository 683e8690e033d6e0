//! Where a reusable component belongs, computed from the knowledge base rather than from
//! repository names (`docs/skill-rules.md`, "Component placement"): component similarity,
//! the dependency graph, and the six weighted factors of a candidate repository's canonical
//! score, plus the consolidation plan's effort model. Pure functions over a [`Knowledge`]
//! snapshot that `kb::components` loads.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Serialize;
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
    pub purpose: Option<String>,
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
pub const WEIGHTS: [(&str, f64); 6] = [
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
pub const SAME_COMPONENT_SIMILARITY: f64 = 0.5;
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
pub fn normalise_name(name: &str) -> String {
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

/// One phase of a consolidation plan, as the plan lists it (`estimated_hours`, then the
/// phase's own details).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Phase {
    pub name: &'static str,
    pub description: String,
    pub tasks: Vec<String>,
    #[serde(rename = "estimated_hours")]
    pub hours: f64,
    #[serde(flatten)]
    pub details: PhaseDetails,
}

/// What each phase adds to its entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum PhaseDetails {
    /// The implementations to compare, `repository (location)`.
    Analysis { implementations: Vec<String> },
    /// The size of the copy being moved.
    Consolidate {
        lines_of_code: i64,
        cyclomatic_complexity: f64,
    },
    /// The repositories to switch to the new home.
    MigrateConsumers { affected_repositories: Vec<String> },
    /// Nothing more.
    CleanUp {},
}

/// The four phases of a consolidation plan (`phase_1` … `phase_4`) and their total effort.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Phases {
    #[serde(rename = "phase_1")]
    pub analysis: Phase,
    #[serde(rename = "phase_2")]
    pub consolidate: Phase,
    #[serde(rename = "phase_3")]
    pub migrate_consumers: Phase,
    #[serde(rename = "phase_4")]
    pub clean_up: Phase,
    pub total_estimated_hours: f64,
    /// `"a-b hours"` ([`effort_range`] of the total).
    pub total_estimated_effort: String,
}

impl Phases {
    /// The phases in order.
    pub fn all(&self) -> [&Phase; 4] {
        [
            &self.analysis,
            &self.consolidate,
            &self.migrate_consumers,
            &self.clean_up,
        ]
    }
}

/// Rounds to the nearest half hour.
fn half_hours(x: f64) -> f64 {
    (x * 2.0).round() / 2.0
}

/// The four phases and their effort: analysis `1 + 0.5·(n−1)` hours for n implementations;
/// moving the code `max(1, loc/150 + cc/10)`; migrating consumers `1 + a` for a affected
/// repositories; removing the copies `1 + 0.5·(n−1)`.
pub fn plan_phases(
    component: &str,
    from: &str,
    to: &str,
    implementations: &[&Component],
    affected: &[String],
) -> Phases {
    let n = implementations.len().max(1) as f64;
    let copies: Vec<String> = implementations
        .iter()
        .map(|c| match &c.location {
            Some(l) => format!("{} ({l})", c.repository),
            None => c.repository.clone(),
        })
        .collect();
    let review = if copies.is_empty() {
        from.to_string()
    } else {
        copies.join(", ")
    };
    let analysis = Phase {
        name: "Analysis",
        description: format!(
            "Compare the {} implementation(s) of {component} and agree on one API",
            implementations.len()
        ),
        tasks: vec![
            format!("Review the implementations: {review}"),
            "List the behaviour each caller relies on".into(),
            format!("Define the API {to} will expose"),
        ],
        hours: half_hours(1.0 + 0.5 * (n - 1.0)),
        details: PhaseDetails::Analysis {
            implementations: copies,
        },
    };
    let migrate_consumers = Phase {
        name: "Migrate consumers",
        description: format!("Point every affected repository at {to}'s {component}"),
        tasks: affected
            .iter()
            .map(|r| format!("Switch {r} to {to}'s {component} and run its tests"))
            .collect(),
        hours: half_hours(1.0 + affected.len() as f64),
        details: PhaseDetails::MigrateConsumers {
            affected_repositories: affected.to_vec(),
        },
    };
    let clean_up = Phase {
        name: "Clean up",
        description: format!("Remove the duplicate copies of {component} and record the move"),
        tasks: vec![
            format!("Delete {component} from {from}"),
            "Record the new location in the knowledge base (scan_repository_components)".into(),
        ],
        hours: half_hours(1.0 + 0.5 * (n - 1.0)),
        details: PhaseDetails::CleanUp {},
    };
    let consolidate = consolidate_phase(component, from, to, implementations);
    let hours = [&analysis, &consolidate, &migrate_consumers, &clean_up].map(|p| p.hours);
    let total: f64 = hours.iter().sum();
    Phases {
        analysis,
        consolidate,
        migrate_consumers,
        clean_up,
        total_estimated_hours: total,
        total_estimated_effort: effort_range(total),
    }
}

/// Moving the code: its effort grows with the size and complexity of `from`'s copy.
fn consolidate_phase(
    component: &str,
    from: &str,
    to: &str,
    implementations: &[&Component],
) -> Phase {
    let source = implementations.iter().find(|c| c.repository == from);
    let loc = source.map_or(0, |c| c.lines_of_code.max(0)) as f64;
    let cc = source
        .and_then(|c| c.cyclomatic_complexity)
        .unwrap_or(0.0)
        .max(0.0);
    Phase {
        name: "Consolidate",
        description: format!("Move {component} from {from} into {to}"),
        tasks: vec![
            format!("Port the code from {from} to {to}, keeping its tests"),
            format!("Publish a version of {to} that exports {component}"),
        ],
        hours: half_hours((loc / 150.0 + cc / 10.0).max(1.0)),
        details: PhaseDetails::Consolidate {
            lines_of_code: loc as i64,
            cyclomatic_complexity: cc,
        },
    }
}

/// `"a-b hours"`: the total rounded, and 1.5 times it rounded up.
pub fn effort_range(hours: f64) -> String {
    let low = hours.round().max(1.0) as i64;
    let high = (hours * 1.5).ceil().max(low as f64 + 1.0) as i64;
    format!("{low}-{high} hours")
}

/// HIGH for an improvement of at least 0.2, MEDIUM from 0.1, else LOW.
pub fn priority(improvement: f64) -> &'static str {
    if improvement >= 0.2 {
        "HIGH"
    } else if improvement >= 0.1 {
        "MEDIUM"
    } else {
        "LOW"
    }
}

/// `0.5 + improvement`, within 0.5–0.95.
pub fn confidence(improvement: f64) -> f64 {
    ((0.5 + improvement).clamp(0.5, 0.95) * 100.0).round() / 100.0
}

/// What `recommend_consolidation_plan` is asked, and which of the other agents are configured.
#[derive(Debug, Clone, Copy)]
pub struct PlanRequest<'a> {
    pub component: &'a str,
    pub from: &'a str,
    /// The chosen home; `None` for the best-scoring repository.
    pub to: Option<&'a str>,
    pub impact_analysis: bool,
    pub deep_analysis: bool,
    pub orchestrator_configured: bool,
    pub pattern_miner_configured: bool,
}

/// A consolidation plan: where the component goes, the phases of the move, the optional
/// analyses, and the recommendation with its reasons.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConsolidationPlan {
    pub component_name: String,
    pub from_repository: String,
    pub to_repository: String,
    pub consolidation_plan: Phases,
    pub impact_analysis: Option<ImpactAnalysis>,
    pub deep_analysis: Option<DeepAnalysis>,
    pub recommendation: Recommendation,
}

/// Who else must change when the component moves.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ImpactAnalysis {
    /// Computed from the knowledge base's dependency data.
    Computed {
        source: &'static str,
        note: &'static str,
        affected_repositories: Vec<String>,
        risk_level: &'static str,
    },
    /// The dependency-orchestrator agent is not configured.
    Unavailable {
        error: &'static str,
        affected_repositories: Vec<String>,
        risk_level: &'static str,
    },
}

/// How the copies of the component differ.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum DeepAnalysis {
    /// Compared from the recorded API signatures and public methods.
    Computed {
        source: &'static str,
        note: &'static str,
        api_compatibility: Option<&'static str>,
        behavioral_differences: Vec<String>,
    },
    /// The pattern-miner agent is not configured.
    Unavailable {
        error: &'static str,
        api_compatibility: Option<&'static str>,
        behavioral_differences: Vec<String>,
    },
}

/// The recommendation of a plan (the caller adds its id and timestamp).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recommendation {
    pub component_id: String,
    pub from_repository: String,
    pub to_repository: String,
    pub priority: &'static str,
    pub confidence: f64,
    pub improvement: f64,
    pub reasoning: String,
    pub benefits: Vec<String>,
    pub risks: Vec<String>,
    /// `"a-b"`: the total effort range without its unit.
    pub estimated_effort_hours: String,
    pub status: &'static str,
    pub related_recommendations: Vec<String>,
}

/// The score of `repository` among `scores`, 0 when it is not a candidate.
pub fn score_of(scores: &[CandidateScore], repository: &str) -> f64 {
    scores
        .iter()
        .find(|s| s.repository == repository)
        .map_or(0.0, |s| s.score)
}

/// Plans moving the component `request.component` out of `request.from` into `request.to`, or
/// into the best-scoring repository of the knowledge base (both must be known repositories).
pub fn consolidation_plan(k: &Knowledge, request: &PlanRequest) -> ConsolidationPlan {
    let (component, from) = (request.component, request.from);
    let (implementations, subject, _) = k.implementations(component, from);
    let all: Vec<&str> = k.repositories.iter().map(|r| r.name.as_str()).collect();
    let scores = k.score(&subject, &implementations, &all);
    let to = request
        .to
        .map(str::to_string)
        .or_else(|| scores.first().map(|s| s.repository.clone()))
        .unwrap_or_else(|| from.to_string());
    let move_ = Move {
        component,
        from,
        to: &to,
        from_score: score_of(&scores, from),
        to_score: score_of(&scores, &to),
        affected: affected_repositories(k, &implementations, from, &to),
        implementations,
    };
    let phases = plan_phases(
        component,
        from,
        &to,
        &move_.implementations,
        &move_.affected,
    );
    let impact = request
        .impact_analysis
        .then(|| impact_analysis(request.orchestrator_configured, &move_.affected));
    let deep = request
        .deep_analysis
        .then(|| deep_analysis(request.pattern_miner_configured, &move_));
    let recommendation = recommendation(&move_, &phases);
    ConsolidationPlan {
        component_name: component.to_string(),
        from_repository: from.to_string(),
        to_repository: to.clone(),
        consolidation_plan: phases,
        impact_analysis: impact,
        deep_analysis: deep,
        recommendation,
    }
}

/// A planned move, with what the plan's parts are worked out from.
struct Move<'a> {
    component: &'a str,
    from: &'a str,
    to: &'a str,
    from_score: f64,
    to_score: f64,
    implementations: Vec<&'a Component>,
    /// Repositories other than the target that hold a copy or depend on `from`, by name.
    affected: Vec<String>,
}

impl Move<'_> {
    fn improvement(&self) -> f64 {
        round3(self.to_score - self.from_score)
    }

    fn copy_in(&self, repository: &str) -> Option<&Component> {
        self.implementations
            .iter()
            .find(|c| c.repository == repository)
            .copied()
    }
}

/// The repositories holding an implementation or depending on `from`, less `to`, by name.
fn affected_repositories(
    k: &Knowledge,
    implementations: &[&Component],
    from: &str,
    to: &str,
) -> Vec<String> {
    let mut affected: BTreeSet<String> = implementations
        .iter()
        .map(|c| c.repository.clone())
        .collect();
    affected.extend(k.dependents(from).into_iter().map(String::from));
    affected.remove(to);
    affected.into_iter().collect()
}

/// Low without affected repositories, medium for one or two, else high.
fn risk_level(affected: usize) -> &'static str {
    match affected {
        0 => "low",
        1 | 2 => "medium",
        _ => "high",
    }
}

fn impact_analysis(orchestrator_configured: bool, affected: &[String]) -> ImpactAnalysis {
    if orchestrator_configured {
        ImpactAnalysis::Computed {
            source: "knowledge_base",
            note: "dependency-orchestrator is configured, but nexusd computes impact from its own dependency data",
            affected_repositories: affected.to_vec(),
            risk_level: risk_level(affected.len()),
        }
    } else {
        ImpactAnalysis::Unavailable {
            error: "dependency-orchestrator not configured",
            affected_repositories: Vec::new(),
            risk_level: "unknown",
        }
    }
}

/// Compares the copies in `from` and `to`: their recorded API signatures, and the public
/// methods only one of them has.
fn deep_analysis(pattern_miner_configured: bool, m: &Move) -> DeepAnalysis {
    if !pattern_miner_configured {
        return DeepAnalysis::Unavailable {
            error: "pattern-miner not configured",
            api_compatibility: None,
            behavioral_differences: Vec::new(),
        };
    }
    let (source, target) = (m.copy_in(m.from), m.copy_in(m.to));
    let compatibility = match (
        source.and_then(|c| c.api_signature.as_deref()),
        target.and_then(|c| c.api_signature.as_deref()),
    ) {
        (Some(a), Some(b)) if a == b => Some("identical"),
        (Some(_), Some(_)) => Some("different"),
        _ => None,
    };
    let methods = |c: Option<&Component>| -> BTreeSet<String> {
        c.map(|c| c.public_methods.iter().cloned().collect())
            .unwrap_or_default()
    };
    let (a, b) = (methods(source), methods(target));
    let mut differences: Vec<String> = a
        .difference(&b)
        .map(|method| format!("{method} exists only in {}", m.from))
        .collect();
    if target.is_some() {
        differences.extend(
            b.difference(&a)
                .map(|method| format!("{method} exists only in {}", m.to)),
        );
    }
    DeepAnalysis::Computed {
        source: "knowledge_base",
        note: "pattern-miner is configured, but nexusd compares the recorded signatures and methods itself",
        api_compatibility: compatibility,
        behavioral_differences: differences,
    }
}

fn recommendation(m: &Move, phases: &Phases) -> Recommendation {
    let improvement = m.improvement();
    let component_id = m
        .copy_in(m.from)
        .map_or_else(|| format!("{}:{}", m.from, m.component), |c| c.id.clone());
    Recommendation {
        component_id,
        from_repository: m.from.to_string(),
        to_repository: m.to.to_string(),
        priority: priority(improvement),
        confidence: confidence(improvement),
        improvement,
        reasoning: reasoning(m),
        benefits: benefits(m),
        risks: risks(m),
        estimated_effort_hours: phases
            .total_estimated_effort
            .trim_end_matches(" hours")
            .to_string(),
        status: "pending",
        related_recommendations: Vec::new(),
    }
}

/// Why the plan points where it does, in one sentence.
fn reasoning(m: &Move) -> String {
    let Move {
        component,
        from,
        to,
        from_score,
        to_score,
        ..
    } = m;
    if to == from {
        format!("{from} is already the best-scoring location for {component} (score {from_score})")
    } else if m.improvement() > 0.0 {
        format!("{to} scores {to_score} against {from_score} for {from} as the home of {component}")
    } else {
        format!(
            "{to} scores {to_score}, not higher than {from_score} for {from}: the data does not support moving {component}"
        )
    }
}

fn benefits(m: &Move) -> Vec<String> {
    let Move {
        component,
        from,
        to,
        from_score,
        to_score,
        ..
    } = m;
    let copies = m.implementations.len();
    vec![
        if copies > 1 {
            format!("One maintained implementation of {component} in {to} instead of {copies}")
        } else {
            format!("{component} lives where the data says it is used most ({to})")
        },
        format!("Canonical score {to_score} in {to} against {from_score} in {from}"),
        format!(
            "{} repositories can depend on a single copy; fixes land once",
            m.affected.len()
        ),
    ]
}

fn risks(m: &Move) -> Vec<String> {
    let diverged = m
        .implementations
        .iter()
        .any(|c| c.sync_status.eq_ignore_ascii_case("diverged"));
    vec![
        if m.affected.is_empty() {
            "No dependent repositories are recorded; confirm with the owners before moving"
                .to_string()
        } else {
            format!(
                "{} repositories must switch to {}: {}",
                m.affected.len(),
                m.to,
                m.affected.join(", ")
            )
        },
        if diverged {
            "Some copies have diverged (sync_status); their behaviour must be reconciled first"
                .to_string()
        } else {
            format!(
                "Callers of {}'s copy may rely on behaviour specific to it; run their tests after the switch",
                m.from
            )
        },
    ]
}

#[cfg(test)]
mod tests {
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
    fn knowledge() -> Knowledge {
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

    #[test]
    fn plan_effort_and_priority() {
        let k = knowledge();
        let implementations: Vec<&Component> = k.components.iter().collect();
        let affected = vec!["acme/web".to_string()];
        let phases = plan_phases(
            "retry-policy",
            "acme/app",
            "acme/lib",
            &implementations,
            &affected,
        );
        let hours: Vec<f64> = phases.all().iter().map(|p| p.hours).collect();
        // 1 implementation; 250 lines, cc 10 → 250/150 + 1 = 2.67 → 2.5; 1 affected.
        assert_eq!(hours, [1.0, 2.5, 2.0, 1.0]);
        assert_eq!(effort_range(6.5), "7-10 hours");
        assert_eq!(priority(0.25), "HIGH");
        assert_eq!(priority(0.1), "MEDIUM");
        assert_eq!(priority(-0.2), "LOW");
        assert_eq!(confidence(0.3), 0.8);
        assert_eq!(confidence(-1.0), 0.5);
        assert_eq!(confidence(2.0), 0.95);
    }

    #[test]
    fn consolidation_plan_moves_to_the_best_repository() {
        let k = knowledge();
        let request = PlanRequest {
            component: "retry-policy",
            from: "acme/app",
            to: None,
            impact_analysis: true,
            deep_analysis: true,
            orchestrator_configured: true,
            pattern_miner_configured: false,
        };
        let plan = consolidation_plan(&k, &request);
        assert_eq!(plan.to_repository, "acme/lib");
        let phases = &plan.consolidation_plan;
        let names: Vec<&str> = phases.all().iter().map(|p| p.name).collect();
        assert_eq!(
            names,
            ["Analysis", "Consolidate", "Migrate consumers", "Clean up"]
        );
        let hours: Vec<f64> = phases.all().iter().map(|p| p.hours).collect();
        assert_eq!(hours, [1.0, 2.5, 2.0, 1.0]);
        assert_eq!(phases.total_estimated_hours, 6.5);
        assert_eq!(phases.total_estimated_effort, "7-10 hours");
        // The app holds the only copy; nothing depends on it; the library is the target.
        let affected = vec!["acme/app".to_string()];
        assert_eq!(
            phases.migrate_consumers.details,
            PhaseDetails::MigrateConsumers {
                affected_repositories: affected.clone()
            }
        );
        assert_eq!(
            plan.impact_analysis,
            Some(ImpactAnalysis::Computed {
                source: "knowledge_base",
                note: "dependency-orchestrator is configured, but nexusd computes impact from its own dependency data",
                affected_repositories: affected,
                risk_level: "medium",
            })
        );
        assert!(matches!(
            plan.deep_analysis,
            Some(DeepAnalysis::Unavailable { .. })
        ));
        let r = &plan.recommendation;
        assert_eq!(r.component_id, "acme/app:retry-policy");
        assert_eq!((r.priority, r.confidence), ("HIGH", 0.95));
        assert_eq!(r.estimated_effort_hours, "7-10");
        assert!(
            r.reasoning.starts_with("acme/lib scores "),
            "{}",
            r.reasoning
        );

        // A chosen target the data does not support; no analyses.
        let plan = consolidation_plan(
            &k,
            &PlanRequest {
                to: Some("acme/core-common"),
                impact_analysis: false,
                deep_analysis: false,
                ..request
            },
        );
        assert_eq!(plan.to_repository, "acme/core-common");
        assert_eq!((plan.impact_analysis, plan.deep_analysis), (None, None));
        assert_eq!(plan.recommendation.priority, "LOW");
        assert!(plan.recommendation.reasoning.contains("does not support"));
    }

    #[test]
    fn plan_phases_list_their_details_after_the_common_keys() {
        let k = knowledge();
        let implementations: Vec<&Component> = k.components.iter().collect();
        let phases = plan_phases(
            "retry-policy",
            "acme/app",
            "acme/lib",
            &implementations,
            &[],
        );
        let json = serde_json::to_value(&phases).unwrap();
        let keys = |phase: &str| -> Vec<String> {
            json[phase].as_object().unwrap().keys().cloned().collect()
        };
        assert_eq!(
            keys("phase_2"),
            [
                "name",
                "description",
                "tasks",
                "estimated_hours",
                "lines_of_code",
                "cyclomatic_complexity"
            ]
        );
        assert_eq!(
            keys("phase_4"),
            ["name", "description", "tasks", "estimated_hours"]
        );
        assert_eq!(json["phase_2"]["lines_of_code"], 250);
        assert_eq!(json["total_estimated_effort"], "6-9 hours");
    }
}
