//! `nexusd import-json FILE|URL`: reads the knowledge base, writes it repository by repository,
//! and prints what was written and skipped.

use anyhow::{Result, bail};

use super::{Needs, with_database};
use crate::config::Config;

pub async fn run(config: &Config, source: &str, dry_run: bool) -> Result<()> {
    let kb = crate::import::load(source).await?;
    let summary = with_database(config, Needs::CurrentSchema, async |db, _| {
        crate::import::run(db.pool(), &kb, dry_run).await
    })
    .await?;
    print!("{}", summary.render(source, dry_run));
    if !summary.failed.is_empty() {
        bail!(
            "{} repositories could not be imported",
            summary.failed.len()
        );
    }
    Ok(())
}
