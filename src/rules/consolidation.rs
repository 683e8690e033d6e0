//! The consolidation plan of `recommend_consolidation_plan`: where a component goes (the
//! best-scoring repository, or the one asked for), the four phases of the move with their effort,
//! who else must change, how the copies differ, and the recommendation with its reasons
//! (`docs/skill-rules.md`, "Component placement"). Pure functions over the [`Knowledge`] the
//! scores are computed from.

use std::collections::BTreeSet;

use serde::Serialize;

use super::component_scoring::{CandidateScore, Component, Knowledge, round3};

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

#[cfg(test)]
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
fn plan_phases(
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
fn effort_range(hours: f64) -> String {
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
    use crate::rules::component_scoring::tests::knowledge;

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
