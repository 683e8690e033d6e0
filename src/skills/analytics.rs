//! The analytics skills the web frontend's dashboards call: `get_dashboard_overview`,
//! `get_pattern_adoption_trends`, `get_pattern_health_summary`,
//! `get_repository_activity_summary`, `get_component_duplication_stats`. Each reads one JSON
//! document that one statement computes (`kb/analytics.rs`) and shapes it the way the
//! frontend's types declare; the formulas are in `docs/skills-api.md` ("Analytics").

use chrono::{DateTime, Duration, Utc};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::context::{SkillContext, now_rfc3339};
use super::error::SkillError;
use super::registry::{Handler, Skill, SkillOutput, example, handler, output, parse};
use crate::kb::{analytics, parse_datetime};

fn skill(
    id: &'static str,
    name: &'static str,
    description: &'static str,
    input_schema: Value,
    examples: Vec<Value>,
    handler: Handler,
) -> Skill {
    Skill {
        id,
        name,
        description,
        tags: &["analytics", "dashboard"],
        requires_authentication: false,
        input_schema,
        examples,
        aliases: &[],
        empty: json!({}),
        uses_database: true,
        handler,
    }
}

fn int(value: &Value, key: &str) -> i64 {
    value.get(key).and_then(Value::as_i64).unwrap_or(0)
}

/// Percentage change from `before` to `now` (100 when something appears from nothing).
fn trend(now: i64, before: i64) -> f64 {
    match (now, before) {
        (0, 0) => 0.0,
        (_, 0) => 100.0,
        _ => ((now - before) as f64 / before as f64 * 1000.0).round() / 10.0,
    }
}

/// `improving` / `declining` for a trend, where a rise is good unless `lower_is_better`.
fn direction(trend: f64, lower_is_better: bool) -> &'static str {
    let good = if lower_is_better { -trend } else { trend };
    if good > 0.0 {
        "improving"
    } else if good < 0.0 {
        "declining"
    } else {
        "stable"
    }
}

fn metric(label: &str, value: i64, unit: &str, trend: f64, lower_is_better: bool) -> Value {
    json!({"label": label, "value": value, "unit": unit, "trend": trend,
           "status": direction(trend, lower_is_better)})
}

pub fn get_dashboard_overview() -> Skill {
    skill(
        "get_dashboard_overview",
        "Get Dashboard Overview",
        "The knowledge base at a glance: a health score from open runtime issues, counts with their \
         trends, alerts for open critical and high issues, and the latest events.",
        json!({"type": "object", "properties": {}}),
        vec![example(json!({}), "The dashboard")],
        handler(run_overview),
    )
}

async fn run_overview(ctx: SkillContext, _: Map<String, Value>) -> Result<SkillOutput, SkillError> {
    let mut conn = ctx.pool().acquire().await?;
    let d = analytics::overview(&mut conn, Utc::now()).await?;
    let repositories = int(&d, "repositories");
    // docs/skills-api.md: 100, less 15 per open critical issue and 5 per open high one.
    let score = (100 - 15 * int(&d, "open_critical") - 5 * int(&d, "open_high")).max(0);
    let status = match score {
        80.. => "healthy",
        50.. => "warning",
        _ => "critical",
    };
    let clear = repositories - int(&d, "repositories_with_open_severe");
    let uptime = if repositories == 0 {
        100.0
    } else {
        (clear as f64 / repositories as f64 * 1000.0).round() / 10.0
    };
    let metrics = vec![
        metric(
            "Repositories",
            repositories,
            "repositories",
            trend(
                int(&d, "repositories_new_30d"),
                int(&d, "repositories_new_prev_30d"),
            ),
            false,
        ),
        metric(
            "Patterns",
            int(&d, "patterns"),
            "patterns",
            trend(
                int(&d, "patterns_new_30d"),
                int(&d, "patterns_new_prev_30d"),
            ),
            false,
        ),
        metric(
            "Components",
            int(&d, "components"),
            "components",
            0.0,
            false,
        ),
        metric("Lessons learned", int(&d, "lessons"), "lessons", 0.0, false),
        metric(
            "Open runtime issues",
            int(&d, "open_issues"),
            "issues",
            trend(int(&d, "issues_7d"), int(&d, "issues_prev_7d")),
            true,
        ),
        metric(
            "Deprecated patterns",
            int(&d, "patterns_deprecated"),
            "patterns",
            0.0,
            true,
        ),
    ];
    Ok(output(json!({
        "system_health": {
            "overall_health_score": score,
            "status": status,
            "uptime_percentage": uptime,
            "last_scan_timestamp": d.get("last_scan").cloned().unwrap_or(Value::Null),
        },
        "metrics": metrics,
        "alerts": d.get("alerts").cloned().unwrap_or_else(|| json!([])),
        "timeline_highlights": d.get("highlights").cloned().unwrap_or_else(|| json!([])),
        "last_updated": now_rfc3339(),
    })))
}

pub fn get_pattern_adoption_trends() -> Skill {
    skill(
        "get_pattern_adoption_trends",
        "Get Pattern Adoption Trends",
        "Patterns over time from their creation times: how many exist and in how many repositories at \
         the end of each day, week or month, how many are new, and the growth rates.",
        json!({
            "type": "object",
            "properties": {
                "start_date": {"type": "string", "description": "ISO 8601 date (default: 90 days before end_date)", "maxLength": 64},
                "end_date": {"type": "string", "description": "ISO 8601 date (default: now)", "maxLength": 64},
                "interval": {"type": "string", "enum": ["day", "week", "month"], "default": "week"},
            },
        }),
        vec![example(
            json!({"start_date": "2026-09-01", "interval": "month"}),
            "Monthly since September",
        )],
        handler(run_adoption),
    )
}

#[derive(Deserialize)]
struct AdoptionInput {
    start_date: Option<String>,
    end_date: Option<String>,
    interval: Option<String>,
}

fn date(field: &str, text: Option<&str>) -> Result<Option<DateTime<Utc>>, SkillError> {
    text.map(|t| {
        parse_datetime(t).ok_or_else(|| {
            SkillError::Invalid(format!(
                "Invalid parameter '{field}': {t:?} is not an ISO 8601 date"
            ))
        })
    })
    .transpose()
}

async fn run_adoption(
    ctx: SkillContext,
    input: Map<String, Value>,
) -> Result<SkillOutput, SkillError> {
    let q: AdoptionInput = parse(input)?;
    let end = date("end_date", q.end_date.as_deref())?.unwrap_or_else(Utc::now);
    let start = date("start_date", q.start_date.as_deref())?.unwrap_or(end - Duration::days(90));
    if start > end {
        return Err(SkillError::Invalid(
            "Invalid parameter 'start_date': after end_date".into(),
        ));
    }
    if end - start > Duration::days(3660) {
        return Err(SkillError::Invalid(
            "Invalid parameter 'start_date': at most ten years before end_date".into(),
        ));
    }
    let interval = q.interval.as_deref().unwrap_or("week");
    let mut conn = ctx.pool().acquire().await?;
    let timeline = analytics::adoption(&mut conn, start, end, interval).await?;
    let points = timeline.as_array().cloned().unwrap_or_default();
    Ok(output(json!({
        "adoption_timeline": points,
        "growth_rates": growth_rates(&points, interval),
        "start_date": start.format("%Y-%m-%d").to_string(),
        "end_date": end.format("%Y-%m-%d").to_string(),
        "interval": interval,
    })))
}

/// Growth over the last bucket and over the whole range: the change in the number of patterns
/// (percent) and the new patterns per bucket.
fn growth_rates(points: &[Value], interval: &str) -> Vec<Value> {
    let count = |p: &Value| int(p, "pattern_count");
    let new = |p: &[Value]| p.iter().map(|x| int(x, "new_patterns")).sum::<i64>();
    let mut rates = Vec::new();
    if let [.., before, last] = points {
        rates.push(json!({
            "period": interval,
            "growth_percentage": trend(count(last), count(before)),
            "adoption_velocity": int(last, "new_patterns") as f64,
        }));
    }
    if let (Some(first), Some(last)) = (points.first(), points.last()) {
        let start = count(first) - int(first, "new_patterns");
        let velocity = new(points) as f64 / points.len() as f64;
        rates.push(json!({
            "period": "overall",
            "growth_percentage": trend(count(last), start),
            "adoption_velocity": (velocity * 100.0).round() / 100.0,
        }));
    }
    rates
}

pub fn get_pattern_health_summary() -> Skill {
    skill(
        "get_pattern_health_summary",
        "Get Pattern Health Summary",
        "Every pattern's health from the runtime issues that name it (get_pattern_health's score: the \
         share of the repositories using it without such an issue), the weekly average, and the \
         most frequent issue types.",
        json!({
            "type": "object",
            "properties": {
                "time_range_days": {"type": "integer", "minimum": 1, "maximum": 365, "default": 30},
                "limit": {"type": "integer", "description": "Patterns listed at most, least healthy first", "minimum": 1, "maximum": 500, "default": 50},
            },
        }),
        vec![example(json!({"time_range_days": 30}), "The last 30 days")],
        handler(run_health),
    )
}

#[derive(Deserialize)]
struct HealthInput {
    time_range_days: Option<i64>,
    limit: Option<i64>,
}

async fn run_health(
    ctx: SkillContext,
    input: Map<String, Value>,
) -> Result<SkillOutput, SkillError> {
    let q: HealthInput = parse(input)?;
    let days = q.time_range_days.unwrap_or(30);
    let now = Utc::now();
    let mut conn = ctx.pool().acquire().await?;
    let d = analytics::health(
        &mut conn,
        now - Duration::days(days),
        now,
        q.limit.unwrap_or(50),
    )
    .await?;
    let average = d
        .get("average_score")
        .and_then(Value::as_f64)
        .unwrap_or(1.0);
    let status = if average >= 0.8 {
        "healthy"
    } else if average >= 0.5 {
        "warning"
    } else {
        "critical"
    };
    Ok(output(json!({
        "time_range_days": days,
        "overall_health": {
            "average_score": average,
            "status": status,
            "critical_count": int(&d, "critical_count"),
            "warning_count": int(&d, "warning_count"),
            "healthy_count": int(&d, "healthy_count"),
        },
        "patterns_by_health": d.get("patterns_by_health").cloned().unwrap_or_else(|| json!([])),
        "health_trends": d.get("health_trends").cloned().unwrap_or_else(|| json!([])),
        "top_issue_types": d.get("top_issue_types").cloned().unwrap_or_else(|| json!([])),
        "issues_in_range": int(&d, "issues_in_range"),
    })))
}

pub fn get_repository_activity_summary() -> Skill {
    skill(
        "get_repository_activity_summary",
        "Get Repository Activity Summary",
        "The activity feed's records (analyses, lessons, deployments, runtime issues) per day, week or \
         month, by kind and by repository. nexusd keeps no record of compliance checks: those count 0.",
        json!({
            "type": "object",
            "properties": {
                "period": {"type": "string", "enum": ["day", "week", "month"], "default": "week"},
                "limit": {"type": "integer", "description": "Repositories ranked at most", "minimum": 1, "maximum": 100, "default": 10},
                "periods": {"type": "integer", "description": "How many periods, up to now", "minimum": 1, "maximum": 366, "default": 12},
            },
        }),
        vec![example(
            json!({"period": "week", "limit": 10}),
            "The last 12 weeks",
        )],
        handler(run_activity),
    )
}

#[derive(Deserialize)]
struct ActivityInput {
    period: Option<String>,
    limit: Option<i64>,
    periods: Option<i32>,
}

const KINDS: [(&str, &str); 4] = [
    ("analysis", "Analyses"),
    ("lesson", "Lessons learned"),
    ("deployment", "Deployments"),
    ("runtime_issue", "Runtime issues"),
];

async fn run_activity(
    ctx: SkillContext,
    input: Map<String, Value>,
) -> Result<SkillOutput, SkillError> {
    let q: ActivityInput = parse(input)?;
    let period = q.period.as_deref().unwrap_or("week");
    let mut conn = ctx.pool().acquire().await?;
    let d = analytics::activity(
        &mut conn,
        period,
        q.periods.unwrap_or(12),
        Utc::now(),
        q.limit.unwrap_or(10),
    )
    .await?;
    let total = int(&d, "total");
    let by_type: Vec<Value> = KINDS
        .iter()
        .map(|(kind, label)| {
            let n = d.get("by_type").map_or(0, |b| int(b, kind));
            let share = if total == 0 {
                0.0
            } else {
                (n as f64 / total as f64 * 1000.0).round() / 10.0
            };
            json!({"activity_type": kind, "label": label, "count": n, "percentage": share})
        })
        .collect();
    // The frontend's names beside the feed's: an analysis is a pattern scan, and a component
    // scan when it recorded components.
    let frontend = |mut v: Value| {
        if let Value::Object(m) = &mut v {
            let analyses = m.get("analyses").cloned().unwrap_or(json!(0));
            m.insert("pattern_scans".into(), analyses);
            m.insert("compliance_checks".into(), json!(0));
        }
        v
    };
    let list = |key: &str| -> Vec<Value> {
        d.get(key)
            .and_then(Value::as_array)
            .map(|a| a.iter().cloned().map(frontend).collect())
            .unwrap_or_default()
    };
    Ok(output(json!({
        "activity_timeline": list("timeline"),
        "activity_by_type": by_type,
        "repository_rankings": list("rankings"),
        "period": period,
        "total_activities": total,
    })))
}

pub fn get_component_duplication_stats() -> Skill {
    skill(
        "get_component_duplication_stats",
        "Get Component Duplication Stats",
        "Stored components that several repositories hold (the same name written any way): how many \
         copies, how widely duplicated, how far consolidation has come (copies marked synced or \
         derived from another), and the hours consolidation would save per component type.",
        json!({"type": "object", "properties": {}}),
        vec![example(json!({}), "Duplication across the knowledge base")],
        handler(run_duplication),
    )
}

async fn run_duplication(
    ctx: SkillContext,
    _: Map<String, Value>,
) -> Result<SkillOutput, SkillError> {
    let mut conn = ctx.pool().acquire().await?;
    let d = analytics::duplication(&mut conn).await?;
    let groups = int(&d, "duplicated_groups");
    let levels = d.get("levels").cloned().unwrap_or_else(|| json!({}));
    let share = |n: i64, of: i64| {
        if of == 0 {
            0.0
        } else {
            (n as f64 / of as f64 * 1000.0).round() / 10.0
        }
    };
    let distribution: Vec<Value> = ["low", "medium", "high"]
        .iter()
        .map(|level| {
            let n = int(&levels, level);
            json!({"duplication_level": level, "component_count": n, "percentage": share(n, groups)})
        })
        .collect();
    let copies = int(&d, "copies_in_groups");
    let consolidated = int(&d, "consolidated");
    let in_sync = copies - int(&d, "diverged");
    let progress = vec![
        json!({"phase": "Identified", "total_components": copies, "completed": copies, "percentage": share(copies, copies)}),
        json!({"phase": "In sync", "total_components": copies, "completed": in_sync, "percentage": share(in_sync, copies)}),
        json!({"phase": "Consolidated", "total_components": copies, "completed": consolidated, "percentage": share(consolidated, copies)}),
    ];
    Ok(output(json!({
        "total_duplicates": int(&d, "duplicate_copies"),
        "total_unique_components": int(&d, "unique_components"),
        "duplicated_components": groups,
        "duplication_distribution": distribution,
        "consolidation_progress": progress,
        "effort_savings": d.get("savings").cloned().unwrap_or_else(|| json!([])),
        "last_analysis": d.get("last_analysis").cloned().unwrap_or(Value::Null),
    })))
}
