//! `nexusd bootstrap`: extensions and migrations once, then a summary of the server.

use anyhow::{Result, anyhow};

use super::{Needs, with_database};
use crate::bootstrap::StatementsStatus;
use crate::config::Config;

pub async fn run(config: &Config) -> Result<()> {
    let report = with_database(config, Needs::Bootstrap, async |_, report| {
        report.ok_or_else(|| anyhow!("bootstrap did not run"))
    })
    .await?;
    if report.applied_now.is_empty() {
        println!(
            "schema already current (migration {})",
            report.migration_version
        );
    } else {
        println!(
            "applied migrations {:?}; schema at migration {}",
            report.applied_now, report.migration_version
        );
    }
    let statements = match &report.statements {
        StatementsStatus::Ready => "ready".to_string(),
        StatementsStatus::NotPreloaded { fix } => format!("off ({fix})"),
        StatementsStatus::Unavailable { reason } => format!("off ({reason})"),
    };
    println!(
        "PostgreSQL {}, pgvector {}, pg_stat_statements: {statements}",
        report.server_version, report.pgvector_version,
    );
    Ok(())
}
