//! The `nexusd` binary: parse the command line, read the configuration, start logging, dispatch.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use nexusd::app::Needs;
use nexusd::cli::{Cli, Command};
use nexusd::config::Config;
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("nexusd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config = Config::from_env();

    if let Command::Check = cli.command {
        if let Ok(config) = &config {
            nexusd::telemetry::init(&config.log);
        }
        let all_ok = runtime.block_on(nexusd::check::run(config));
        return if all_ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }

    let config = match config {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("nexusd: configuration error: {errors}");
            return ExitCode::from(2);
        }
    };
    let proxy_config = match (&cli.command, nexusd::config::ProxyConfig::from_env()) {
        (Command::Proxy, Ok(proxy)) => Some(proxy),
        (Command::Proxy, Err(errors)) => {
            eprintln!("nexusd: configuration error: {errors}");
            return ExitCode::from(2);
        }
        _ => None,
    };
    nexusd::telemetry::init(&config.log);

    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve => {
                let shutdown = CancellationToken::new();
                nexusd::app::cancel_on_signals(shutdown.clone())?;
                nexusd::app::serve(config, shutdown).await
            }
            Command::Bootstrap => {
                let report =
                    nexusd::app::with_database(&config, Needs::Schema, async |_, report| {
                        report.ok_or_else(|| anyhow::anyhow!("bootstrap did not run"))
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
                println!(
                    "PostgreSQL {}, pgvector {}, pg_stat_statements: {}",
                    report.server_version,
                    report.pgvector_version,
                    match &report.statements {
                        nexusd::bootstrap::StatementsStatus::Ready => "ready".to_string(),
                        nexusd::bootstrap::StatementsStatus::NotPreloaded { fix } =>
                            format!("off ({fix})"),
                        nexusd::bootstrap::StatementsStatus::Unavailable { reason } =>
                            format!("off ({reason})"),
                    }
                );
                Ok(())
            }
            Command::ImportJson { source, dry_run } => {
                let kb = nexusd::import::load(&source).await?;
                let summary = nexusd::app::with_database(&config, Needs::Schema, async |db, _| {
                    nexusd::import::run(db.pool(), &kb, dry_run).await
                })
                .await?;
                print!("{}", summary.render(&source, dry_run));
                if summary.failed.is_empty() {
                    Ok(())
                } else {
                    Err(anyhow::anyhow!(
                        "{} repositories could not be imported",
                        summary.failed.len()
                    ))
                }
            }
            Command::Embed {
                reembed,
                batch_size,
            } => {
                let embedder = nexusd::embed::Embedder::from_config(&config.embedding)?
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "embeddings are off (NEXUSD_EMBEDDING_PROVIDER=none): set it to builtin or openai"
                        )
                    })?;
                let summary = nexusd::app::with_database(&config, Needs::Schema, async |db, _| {
                    nexusd::embed::job::command(db.pool(), &embedder, reembed, batch_size as usize)
                        .await
                })
                .await?;
                println!("{summary}");
                Ok(())
            }
            // Boxed: these futures are deep enough to exceed the compiler's layout recursion.
            Command::Backup { action } => {
                Box::pin(nexusd::backup::cli::backup(&config, action)).await
            }
            Command::Restore { id, into, force } => {
                Box::pin(nexusd::backup::cli::restore(
                    &config,
                    &id,
                    into.as_deref(),
                    force,
                ))
                .await
            }
            Command::Proxy => {
                let shutdown = CancellationToken::new();
                nexusd::app::cancel_on_signals(shutdown.clone())?;
                let proxy = proxy_config.expect("parsed above for the proxy command");
                nexusd::proxy::run(config.api.addr, proxy, config.api.cors.clone(), shutdown).await
            }
            Command::Check => unreachable!("handled above"),
        }
    });
    // Let background tasks (log forwarders, timers) go without waiting for them.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "nexusd failed");
            eprintln!("nexusd: {e:#}");
            ExitCode::FAILURE
        }
    }
}
