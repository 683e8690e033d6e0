//! The analytics the web frontend's dashboards read, one statement per answer: each returns
//! one JSON document computed by PostgreSQL from the knowledge base (patterns and analyses over
//! time, runtime issues per pattern, the activity feed's tables, stored components). The
//! formulas are in `docs/skills-api.md` ("Analytics").

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgConnection;

use super::activity::ACTIONS_SQL;

/// Counts and lists for the dashboard overview, as of `$3` (now); `ACTIONS` is the activity
/// feed's union, which takes `$1` (kinds) and `$2` (repository).
pub const OVERVIEW_SQL: &str = "
    WITH w AS (SELECT $3::timestamptz AS now)
    SELECT jsonb_build_object(
        'repositories', (SELECT count(*) FROM repositories),
        'repositories_new_30d', (SELECT count(*) FROM repositories, w WHERE created_at > w.now - interval '30 days'),
        'repositories_new_prev_30d', (SELECT count(*) FROM repositories, w
                                       WHERE created_at <= w.now - interval '30 days' AND created_at > w.now - interval '60 days'),
        'patterns', (SELECT count(*) FROM patterns WHERE status <> 'archived'),
        'patterns_deprecated', (SELECT count(*) FROM patterns WHERE status = 'deprecated'),
        'patterns_new_30d', (SELECT count(*) FROM patterns, w WHERE created_at > w.now - interval '30 days'),
        'patterns_new_prev_30d', (SELECT count(*) FROM patterns, w
                                   WHERE created_at <= w.now - interval '30 days' AND created_at > w.now - interval '60 days'),
        'components', (SELECT count(*) FROM reusable_components),
        'lessons', (SELECT count(*) FROM lessons_learned),
        'open_issues', (SELECT count(*) FROM runtime_issues WHERE status = 'open'),
        'issues_7d', (SELECT count(*) FROM runtime_issues, w WHERE detected_at > w.now - interval '7 days'),
        'issues_prev_7d', (SELECT count(*) FROM runtime_issues, w
                            WHERE detected_at <= w.now - interval '7 days' AND detected_at > w.now - interval '14 days'),
        'open_critical', (SELECT count(*) FROM runtime_issues WHERE status = 'open' AND severity = 'critical'),
        'open_high', (SELECT count(*) FROM runtime_issues WHERE status = 'open' AND severity = 'high'),
        'repositories_with_open_severe', (SELECT count(DISTINCT repo_id) FROM runtime_issues
                                           WHERE status = 'open' AND severity IN ('critical', 'high')),
        'last_scan', (SELECT greatest(max(h.analyzed_at), (SELECT max(last_analyzed) FROM repositories))
                        FROM analysis_history h),
        'alerts', coalesce((SELECT jsonb_agg(a ORDER BY a ->> 'timestamp' DESC) FROM (
            SELECT jsonb_build_object(
                       'id', i.issue_id, 'severity', CASE WHEN i.severity = 'critical' THEN 'critical' ELSE 'warning' END,
                       'title', initcap(i.severity) || ' ' || i.issue_type || ' in ' || r.name,
                       'description', coalesce(i.root_cause, left(i.log_snippet, 200), i.issue_type || ' on ' || i.service_type),
                       'timestamp', to_char(i.detected_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
                       'actionable', i.suggested_fix IS NOT NULL,
                       'recommendation', i.suggested_fix,
                       'repository', r.name) AS a
              FROM runtime_issues i JOIN repositories r ON r.id = i.repo_id
             WHERE i.status = 'open' AND i.severity IN ('critical', 'high')
             ORDER BY i.detected_at DESC LIMIT 10) alerts), '[]'::jsonb),
        'highlights', coalesce((SELECT jsonb_agg(h ORDER BY h ->> 'timestamp' DESC) FROM (
            SELECT jsonb_build_object(
                       'timestamp', to_char(a.timestamp AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
                       'event_type', a.action_type,
                       'title', CASE a.action_type
                                    WHEN 'analysis' THEN 'Analysis of ' || a.repository
                                    WHEN 'lesson' THEN 'Lesson: ' || a.reference_id
                                    WHEN 'deployment' THEN 'Deployment recorded for ' || a.repository
                                    ELSE 'Runtime issue in ' || a.repository END,
                       'description', CASE a.action_type
                                    WHEN 'analysis' THEN (a.metadata ->> 'patterns_count') || ' patterns, '
                                                         || (a.metadata ->> 'components_count') || ' components'
                                    WHEN 'lesson' THEN coalesce(a.metadata ->> 'description', '')
                                    WHEN 'deployment' THEN 'Platform: ' || a.reference_id
                                    ELSE (a.metadata ->> 'severity') || ' ' || (a.metadata ->> 'issue_type') END,
                       'impact', CASE WHEN a.metadata ->> 'severity' IN ('critical', 'high')
                                        OR a.metadata ->> 'impact' IN ('critical', 'high') THEN 'high'
                                      WHEN a.action_type = 'analysis' THEN 'medium' ELSE 'low' END,
                       'repository', a.repository) AS h
              FROM (ACTIONS) a
             ORDER BY a.timestamp DESC NULLS LAST LIMIT 10) highlights), '[]'::jsonb))";

/// Patterns over time between `$1` and `$2`, in buckets of `$3` ('day', 'week' or 'month'):
/// how many exist at the end of each bucket, in how many repositories, and how many are new.
pub const ADOPTION_SQL: &str = "
    WITH buckets AS (
        SELECT b AS start, b + ('1 ' || $3)::interval AS finish
          FROM generate_series(date_trunc($3, $1::timestamptz), $2::timestamptz, ('1 ' || $3)::interval) AS b)
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'date', to_char(b.start, 'YYYY-MM-DD'),
               'pattern_count', (SELECT count(*) FROM patterns p WHERE p.created_at < b.finish),
               'repository_count', (SELECT count(DISTINCT p.repo_id) FROM patterns p WHERE p.created_at < b.finish),
               'new_patterns', (SELECT count(*) FROM patterns p WHERE p.created_at >= b.start AND p.created_at < b.finish),
               'analyses', (SELECT count(*) FROM analysis_history h
                             WHERE h.analyzed_at >= b.start AND h.analyzed_at < b.finish))
             ORDER BY b.start), '[]'::jsonb)
      FROM buckets b";

/// Per pattern name, the share of the repositories using it without a runtime issue naming it
/// since `$1` (`get_pattern_health`'s score), the weekly average of that score, and the issue
/// types seen.
pub const HEALTH_SQL: &str = "
    WITH uses AS (SELECT name, count(DISTINCT repo_id) AS repos FROM patterns GROUP BY name),
         issues AS (SELECT i.* FROM runtime_issues i WHERE i.detected_at >= $1),
         hit AS (SELECT u.name, u.repos,
                        (SELECT count(DISTINCT i.repo_id) FROM issues i JOIN patterns p
                            ON p.repo_id = i.repo_id AND p.name = u.name
                          WHERE lower(i.pattern_reference) = lower(u.name)) AS affected
                   FROM uses u),
         scored AS (SELECT name, round((1 - affected::numeric / greatest(repos, 1)), 2)::float8 AS score FROM hit),
         weeks AS (SELECT w FROM generate_series(date_trunc('week', $1::timestamptz), $2::timestamptz, interval '1 week') AS w)
    SELECT jsonb_build_object(
        'average_score', coalesce((SELECT round(avg(score)::numeric, 3)::float8 FROM scored), 1.0),
        'critical_count', (SELECT count(*) FROM scored WHERE score < 0.5),
        'warning_count', (SELECT count(*) FROM scored WHERE score >= 0.5 AND score < 0.8),
        'healthy_count', (SELECT count(*) FROM scored WHERE score >= 0.8),
        'patterns_by_health', coalesce((SELECT jsonb_agg(jsonb_build_object('pattern_name', name, 'health_score', score)
                                                 ORDER BY score, name)
                                          FROM (SELECT * FROM scored ORDER BY score, name LIMIT $3) s), '[]'::jsonb),
        'health_trends', coalesce((SELECT jsonb_agg(jsonb_build_object(
                'week', to_char(w, 'YYYY-MM-DD'),
                'average_score', coalesce((
                    SELECT round(avg(1 - x.affected::numeric / greatest(u.repos, 1)), 3)::float8
                      FROM uses u
                      CROSS JOIN LATERAL (SELECT count(DISTINCT i.repo_id) AS affected FROM issues i
                                           WHERE lower(i.pattern_reference) = lower(u.name)
                                             AND i.detected_at >= w AND i.detected_at < w + interval '1 week') x), 1.0))
              ORDER BY w) FROM weeks), '[]'::jsonb),
        'top_issue_types', coalesce((SELECT jsonb_agg(jsonb_build_object('type', issue_type, 'count', n) ORDER BY n DESC, issue_type)
                                       FROM (SELECT issue_type, count(*) AS n FROM issues GROUP BY issue_type) t), '[]'::jsonb),
        'issues_in_range', (SELECT count(*) FROM issues))";

/// The activity feed's four tables (`ACTIONS`, which takes `$1` and `$2`), per bucket of `$3`
/// ('day', 'week', 'month') over the last `$4` buckets up to `$5`, by kind and by repository
/// (the `$6` most active).
pub const ACTIVITY_SQL: &str = "
    WITH a AS (SELECT * FROM (ACTIONS) x WHERE x.timestamp >= date_trunc($3, $5::timestamptz) - ($4 - 1) * ('1 ' || $3)::interval),
         kinds AS (SELECT action_type, count(*) AS n FROM a GROUP BY action_type),
         buckets AS (SELECT b FROM generate_series(date_trunc($3, $5::timestamptz) - ($4 - 1) * ('1 ' || $3)::interval,
                                                   $5::timestamptz, ('1 ' || $3)::interval) AS b)
    SELECT jsonb_build_object(
        'total', (SELECT count(*) FROM a),
        'timeline', coalesce((SELECT jsonb_agg(jsonb_build_object(
                'date', to_char(b, 'YYYY-MM-DD'),
                'analyses', (SELECT count(*) FROM a WHERE a.action_type = 'analysis' AND a.timestamp >= b AND a.timestamp < b + ('1 ' || $3)::interval),
                'component_scans', (SELECT count(*) FROM a WHERE a.action_type = 'analysis'
                                      AND coalesce((a.metadata ->> 'components_count')::int, 0) > 0
                                      AND a.timestamp >= b AND a.timestamp < b + ('1 ' || $3)::interval),
                'lessons', (SELECT count(*) FROM a WHERE a.action_type = 'lesson' AND a.timestamp >= b AND a.timestamp < b + ('1 ' || $3)::interval),
                'deployments', (SELECT count(*) FROM a WHERE a.action_type = 'deployment' AND a.timestamp >= b AND a.timestamp < b + ('1 ' || $3)::interval),
                'runtime_issues', (SELECT count(*) FROM a WHERE a.action_type = 'runtime_issue' AND a.timestamp >= b AND a.timestamp < b + ('1 ' || $3)::interval))
              ORDER BY b) FROM buckets), '[]'::jsonb),
        'by_type', coalesce((SELECT jsonb_object_agg(action_type, n) FROM kinds), '{}'::jsonb),
        'rankings', coalesce((SELECT jsonb_agg(r ORDER BY (r ->> 'total_activity')::int DESC, r ->> 'repository_name') FROM (
            SELECT jsonb_build_object(
                       'repository_name', repository,
                       'total_activity', count(*),
                       'analyses', count(*) FILTER (WHERE action_type = 'analysis'),
                       'component_scans', count(*) FILTER (WHERE action_type = 'analysis'
                                                           AND coalesce((metadata ->> 'components_count')::int, 0) > 0),
                       'lessons', count(*) FILTER (WHERE action_type = 'lesson'),
                       'deployments', count(*) FILTER (WHERE action_type = 'deployment'),
                       'runtime_issues', count(*) FILTER (WHERE action_type = 'runtime_issue')) AS r
              FROM a GROUP BY repository ORDER BY count(*) DESC, repository LIMIT $6) ranked), '[]'::jsonb))";

/// Stored components grouped by their name written any way (case, `-`, `_`, spaces): copies,
/// levels, sync state and sizes per type.
pub const DUPLICATION_SQL: &str = "
    WITH c AS (SELECT c.*, regexp_replace(lower(c.name), '[-_ .]', '', 'g') AS key FROM reusable_components c),
         g AS (SELECT key, count(*) AS copies, count(DISTINCT repo_id) AS repos,
                      count(*) FILTER (WHERE sync_status = 'synced' OR derived_from IS NOT NULL) AS consolidated,
                      mode() WITHIN GROUP (ORDER BY component_type) AS component_type,
                      avg(coalesce(lines_of_code, 0)) AS avg_loc, avg(cyclomatic_complexity) AS avg_cc
                 FROM c GROUP BY key),
         d AS (SELECT * FROM g WHERE repos > 1)
    SELECT jsonb_build_object(
        'unique_components', (SELECT count(*) FROM g),
        'duplicated_groups', (SELECT count(*) FROM d),
        'duplicate_copies', (SELECT coalesce(sum(copies - 1), 0) FROM d),
        'copies_in_groups', (SELECT coalesce(sum(copies), 0) FROM d),
        'consolidated', (SELECT coalesce(sum(consolidated), 0) FROM d),
        'diverged', (SELECT count(*) FROM c WHERE sync_status = 'diverged' AND key IN (SELECT key FROM d)),
        'levels', jsonb_build_object(
            'low', (SELECT count(*) FROM d WHERE repos = 2),
            'medium', (SELECT count(*) FROM d WHERE repos = 3),
            'high', (SELECT count(*) FROM d WHERE repos >= 4)),
        'savings', coalesce((SELECT jsonb_agg(jsonb_build_object(
                'consolidation_type', component_type,
                'estimated_hours_saved', hours,
                'complexity_level', CASE WHEN cc IS NULL OR cc < 10 THEN 'low' WHEN cc < 25 THEN 'medium' ELSE 'high' END)
              ORDER BY hours DESC, component_type)
            FROM (SELECT coalesce(component_type, 'unknown') AS component_type,
                         round(sum((copies - 1) * greatest(1, avg_loc / 50)))::int AS hours, avg(avg_cc) AS cc
                    FROM d GROUP BY 1) s), '[]'::jsonb),
        'last_analysis', (SELECT max(first_seen) FROM reusable_components))";

pub async fn overview(conn: &mut PgConnection, now: DateTime<Utc>) -> Result<Value, sqlx::Error> {
    sqlx::query_scalar(&OVERVIEW_SQL.replace("ACTIONS", ACTIONS_SQL))
        .bind(all_types())
        .bind(None::<String>)
        .bind(now)
        .fetch_one(conn)
        .await
}

fn all_types() -> Vec<String> {
    super::activity::ACTION_TYPES
        .iter()
        .map(|t| t.to_string())
        .collect()
}

pub async fn adoption(
    conn: &mut PgConnection,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    interval: &str,
) -> Result<Value, sqlx::Error> {
    sqlx::query_scalar(ADOPTION_SQL)
        .bind(start)
        .bind(end)
        .bind(interval)
        .fetch_one(conn)
        .await
}

pub async fn health(
    conn: &mut PgConnection,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Value, sqlx::Error> {
    sqlx::query_scalar(HEALTH_SQL)
        .bind(since)
        .bind(now)
        .bind(limit)
        .fetch_one(conn)
        .await
}

/// The activity summary: `buckets` periods up to `now`, the `limit` most active repositories.
pub async fn activity(
    conn: &mut PgConnection,
    period: &str,
    buckets: i32,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Value, sqlx::Error> {
    sqlx::query_scalar(&ACTIVITY_SQL.replace("ACTIONS", ACTIONS_SQL))
        .bind(all_types())
        .bind(None::<String>)
        .bind(period)
        .bind(buckets)
        .bind(now)
        .bind(limit)
        .fetch_one(conn)
        .await
}

pub async fn duplication(conn: &mut PgConnection) -> Result<Value, sqlx::Error> {
    sqlx::query_scalar(DUPLICATION_SQL).fetch_one(conn).await
}
