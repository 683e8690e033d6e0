//! `nexusd embed [--reembed]`: computes pattern embeddings with the configured provider.

use anyhow::{Result, anyhow};

use super::{Needs, with_database};
use crate::config::Config;
use crate::embed::Embedder;

pub async fn run(config: &Config, reembed: bool, batch_size: usize) -> Result<()> {
    let embedder = Embedder::from_config(&config.embedding)?.ok_or_else(|| {
        anyhow!("embeddings are off (NEXUSD_EMBEDDING_PROVIDER=none): set it to builtin or openai")
    })?;
    let summary = with_database(config, Needs::CurrentSchema, async |db, _| {
        crate::embed::job::command(db.pool(), &embedder, reembed, batch_size).await
    })
    .await?;
    println!("{summary}");
    Ok(())
}
