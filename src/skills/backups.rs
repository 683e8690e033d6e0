//! `get_backup_status`: what backups nexusd holds and how they are doing, for agents and the
//! frontend (the store is read live; the status comes from the running scheduler).

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::context::SkillContext;
use super::error::SkillError;
use super::registry::{Skill, SkillOutput, example, handler, output, parse};

pub fn get_backup_status() -> Skill {
    Skill {
        id: "get_backup_status",
        name: "Get Backup Status",
        description: "The database backups nexusd holds: the newest one, how many complete backups there are and \
                      their total size, the last verification, the last attempt and the next scheduled run; \
                      for point-in-time recovery (pitr) the recoverable window, the last archived WAL segment and \
                      its age, archive failures, conflicts, gaps and the newest base backup.",
        tags: &["backups", "operations", "status"],
        requires_authentication: false,
        input_schema: json!({
            "type": "object",
            "properties": {
                "include_backups": {
                    "type": "boolean",
                    "description": "Also list every backup, newest first",
                    "default": false,
                },
            },
        }),
        examples: vec![
            example(json!({}), "Backup health at a glance"),
            example(
                json!({"include_backups": true}),
                "Every backup with its size and verification",
            ),
        ],
        aliases: &[],
        empty: json!({}),
        uses_database: false,
        handler: handler(run),
    }
}

#[derive(Deserialize)]
struct Input {
    include_backups: Option<bool>,
}

async fn run(ctx: SkillContext, input: Map<String, Value>) -> Result<SkillOutput, SkillError> {
    let q: Input = parse(input)?;
    let status = ctx.backup_status.snapshot();
    let Some(backups) = ctx.backups.as_ref() else {
        return Err(SkillError::failed(format!(
            "Backups are unavailable: {}",
            status
                .unavailable
                .unwrap_or_else(|| "the backup store is not open".into())
        )));
    };
    let entries = backups
        .list()
        .await
        .map_err(|e| SkillError::failed(format!("Failed to list backups: {e:#}")))?;
    let complete: Vec<_> = entries.iter().filter(|e| e.complete).collect();
    let describe = |e: &crate::backup::Entry| {
        json!({
            "name": e.name,
            "created_at": e.created,
            "size_bytes": e.size,
            "complete": e.complete,
            "raw_bytes": e.manifest.as_ref().map(|m| m.raw_bytes),
            "duration_seconds": e.manifest.as_ref().map(|m| m.duration_seconds),
            "rows": e.manifest.as_ref().map(|m| m.tables.values().sum::<i64>()),
            "verified": e.verification.as_ref().map(|v| v.ok),
            "verified_at": e.verification.as_ref().map(|v| v.verified_at),
        })
    };
    let mut out = output(json!({
        "store": backups.store().describe(),
        "count": complete.len(),
        "incomplete": entries.len() - complete.len(),
        "total_bytes": complete.iter().map(|e| e.size).sum::<u64>(),
        "newest": complete.first().map(|e| describe(e)),
        "last_verification": status.last_verify,
        "last_verify_success_at": status.last_verify_success_at,
        "last_attempt": status.last_attempt,
        "failures_total": status.failures_total,
        "running": status.running,
        "next_backup_at": status.next_backup_at,
        "next_verify_at": status.next_verify_at,
        "schedule": backups.config().schedule,
        "retention_days": backups.config().retention_days,
        "min_keep": backups.config().min_keep,
        "pitr": status.pitr,
    }));
    if q.include_backups.unwrap_or(false) {
        out.insert(
            "backups".into(),
            Value::Array(entries.iter().map(describe).collect()),
        );
    }
    Ok(out)
}
