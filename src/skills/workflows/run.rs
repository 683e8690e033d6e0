//! What a workflow job does: for each repository named, its phases in order — rescan the
//! components, derive patterns, discover dependencies, measure complexity — with the progress
//! written after every phase, and the job's end status from the repositories' (`completed`,
//! `partial_success`, `failed`).

use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::super::context::{SkillContext, now_rfc3339};
use super::steps::{self, Source};
use super::worker::Session;
use crate::kb::jobs::{self, Claimed, Progress};

/// The job kinds, as stored in `workflow_jobs.kind`.
pub const FULL_ANALYSIS: &str = "full_analysis";
pub const EXTRACT_PATTERNS: &str = "extract_patterns";

/// How a job ended, as far as its work goes (the worker turns a cancellation into `cancelled`).
pub struct Outcome {
    pub status: &'static str,
    /// The work was stopped before its end (a cancellation, a lost lease or a shutdown).
    pub interrupted: bool,
    pub results: Vec<Value>,
    pub error: Option<String>,
}

#[derive(Serialize, Clone)]
struct Phase {
    name: &'static str,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    completed_at: Option<String>,
}

/// One repository's part of the result, in the shape the frontend's workflow pages read.
#[derive(Serialize, Clone)]
struct RepoResult {
    repository: String,
    name: String,
    status: &'static str,
    phases: Vec<Phase>,
    patterns_extracted: u64,
    patterns: Vec<String>,
    dependencies_discovered: u64,
    dependency_edges: u64,
    components_found: u64,
    complexity_score: Option<f64>,
    complexity_grade: Option<&'static str>,
    error: Option<String>,
}

/// The phases a job runs for each repository.
fn phases_of(job: &Claimed) -> Vec<&'static str> {
    if job.kind == EXTRACT_PATTERNS {
        return vec!["pattern_extraction"];
    }
    let on = |key: &str| job.input["phases"][key].as_bool().unwrap_or(true);
    let mut phases = Vec::new();
    if on("pattern_extraction") {
        phases.extend(["component_scan", "pattern_extraction"]);
    }
    if on("dependency_discovery") {
        phases.push("dependency_discovery");
    }
    if on("metadata_analysis") {
        phases.push("complexity_analysis");
    }
    phases
}

fn needs_github(phase: &str) -> bool {
    phase != "pattern_extraction"
}

/// The job's progress, written to its row after every phase.
struct Tracker<'a> {
    session: &'a Session,
    job: &'a Claimed,
    repos: Vec<RepoResult>,
    total: usize,
    done: usize,
}

impl Tracker<'_> {
    fn results(&self) -> Vec<Value> {
        self.repos
            .iter()
            .filter_map(|r| serde_json::to_value(r).ok())
            .collect()
    }

    async fn save(&self, step: &str) {
        let completed = self
            .repos
            .iter()
            .filter(|r| matches!(r.status, "completed" | "failed"))
            .count();
        let results = Value::Array(self.results());
        let percent = (self.done * 100).checked_div(self.total).unwrap_or(100);
        let mut conn = self.session.lock().await;
        let written = jobs::progress(
            &mut conn,
            &self.job.id,
            self.job.attempt,
            &Progress {
                repositories_completed: i32::try_from(completed).unwrap_or(i32::MAX),
                progress_percent: i32::try_from(percent).unwrap_or(100),
                current_step: step,
                results: &results,
            },
        )
        .await;
        if let Err(e) = written {
            tracing::warn!(job = %self.job.id, error = %e, "could not record the workflow's progress");
        }
    }
}

pub async fn run_job(
    ctx: &SkillContext,
    session: &Session,
    job: &Claimed,
    stop: &CancellationToken,
) -> Outcome {
    let phases = phases_of(job);
    let mut tracker = Tracker {
        session,
        job,
        repos: job
            .repositories
            .iter()
            .map(|r| RepoResult {
                repository: r.clone(),
                name: r.clone(),
                status: "pending",
                phases: phases
                    .iter()
                    .map(|name| Phase {
                        name,
                        status: "pending",
                        error: None,
                        started_at: None,
                        completed_at: None,
                    })
                    .collect(),
                patterns_extracted: 0,
                patterns: vec![],
                dependencies_discovered: 0,
                dependency_edges: 0,
                components_found: 0,
                complexity_score: None,
                complexity_grade: None,
                error: None,
            })
            .collect(),
        total: phases.len() * job.repositories.len(),
        done: 0,
    };
    if phases.iter().any(|p| needs_github(p)) && ctx.config.external.github.token.is_none() {
        let error = "GITHUB_TOKEN not configured: the full analysis reads each repository from \
                     GitHub (set GITHUB_TOKEN; extract_repository_patterns needs no token)";
        for r in &mut tracker.repos {
            r.status = "failed";
            r.error = Some(error.to_string());
        }
        return Outcome {
            status: "failed",
            interrupted: false,
            results: tracker.results(),
            error: Some(error.to_string()),
        };
    }
    tracker.save("starting").await;
    for index in 0..tracker.repos.len() {
        if stop.is_cancelled() {
            break;
        }
        run_repository(ctx, &mut tracker, index, stop).await;
    }
    finish(tracker, stop)
}

fn finish(mut tracker: Tracker<'_>, stop: &CancellationToken) -> Outcome {
    let interrupted = stop.is_cancelled();
    if interrupted {
        for r in tracker.repos.iter_mut().filter(|r| r.status != "completed") {
            r.status = "cancelled";
        }
    }
    let total = tracker.repos.len();
    let failed: Vec<&RepoResult> = tracker
        .repos
        .iter()
        .filter(|r| r.status == "failed")
        .collect();
    let status = match failed.len() {
        0 => "completed",
        n if n == total => "failed",
        _ => "partial_success",
    };
    let error = failed.first().map(|r| {
        format!(
            "{} of {total} repositories failed; {}: {}",
            failed.len(),
            r.repository,
            r.error.as_deref().unwrap_or("failed")
        )
    });
    Outcome {
        status,
        interrupted,
        results: tracker.results(),
        error,
    }
}

/// Runs every phase of one repository; a failed phase is recorded and the next ones still run.
async fn run_repository(
    ctx: &SkillContext,
    tracker: &mut Tracker<'_>,
    index: usize,
    stop: &CancellationToken,
) {
    let repository = tracker.repos[index].repository.clone();
    tracker.repos[index].status = "running";
    let mut source: Option<Result<Source, String>> = None;
    for p in 0..tracker.repos[index].phases.len() {
        if stop.is_cancelled() {
            return;
        }
        let name = tracker.repos[index].phases[p].name;
        tracker.repos[index].phases[p].status = "running";
        tracker.repos[index].phases[p].started_at = Some(now_rfc3339());
        tracker.save(&format!("{repository}: {name}")).await;
        let result = run_phase(ctx, name, &mut tracker.repos[index], &mut source, stop).await;
        // Whatever the phase committed (a failed one may have committed part), this replica's
        // cached answers may predate it; the trigger may not have told anyone (`cache.rs`).
        ctx.cache.invalidate();
        if stop.is_cancelled() {
            tracker.repos[index].phases[p].status = "pending";
            return;
        }
        let phase = &mut tracker.repos[index].phases[p];
        phase.completed_at = Some(now_rfc3339());
        match result {
            Ok(()) => phase.status = "completed",
            Err(error) => {
                phase.status = "failed";
                phase.error = Some(error.clone());
                tracker.repos[index].error.get_or_insert(error);
            }
        }
        tracker.done += 1;
    }
    let r = &mut tracker.repos[index];
    r.status = if r.error.is_some() {
        "failed"
    } else {
        "completed"
    };
    tracker.save(&format!("{repository}: done")).await;
}

async fn run_phase(
    ctx: &SkillContext,
    phase: &str,
    r: &mut RepoResult,
    source: &mut Option<Result<Source, String>>,
    stop: &CancellationToken,
) -> Result<(), String> {
    let repository = r.repository.clone();
    let repo_id = steps::known_repository(ctx, &repository)
        .await
        .map_err(steps::message)?;
    if phase == "pattern_extraction" {
        let (names, _) = steps::extract_patterns(ctx, &repository)
            .await
            .map_err(steps::message)?;
        r.patterns_extracted = names.len() as u64;
        r.patterns = names;
        return Ok(());
    }
    if source.is_none() {
        *source = Some(
            steps::open(ctx, stop, &repository)
                .await
                .map_err(steps::message),
        );
    }
    let src = match source {
        Some(Ok(src)) => src,
        Some(Err(e)) => return Err(e.clone()),
        None => return Err("the repository could not be opened".into()),
    };
    match phase {
        "component_scan" => {
            let found = steps::scan_components(ctx, stop, src)
                .await
                .map_err(steps::message)?;
            r.components_found = found as u64;
        }
        "dependency_discovery" => {
            let d = steps::discover_dependencies(ctx, stop, src, repo_id)
                .await
                .map_err(steps::message)?;
            r.dependencies_discovered = d.stored.dependencies;
            r.dependency_edges = d.stored.edges;
        }
        _ => {
            let (m, _) = steps::measure_complexity(ctx, stop, src, repo_id)
                .await
                .map_err(steps::message)?;
            r.complexity_score = Some(m.score);
            r.complexity_grade = Some(m.grade);
        }
    }
    Ok(())
}
