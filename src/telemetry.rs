//! Logging: `tracing` to stderr (journald under systemd), as text or JSON, filtered by `NEXUSD_LOG`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::env::{Env, Var};

/// The variables read here, as `nexusd --help` lists them.
pub const VARIABLES: &[Var] = &[
    Var {
        name: "NEXUSD_LOG",
        default: "info,sqlx=warn",
        meaning: "log filter, e.g. nexusd=debug",
    },
    Var {
        name: "NEXUSD_LOG_FORMAT",
        default: "text",
        meaning: "text or json",
    },
];

/// `info`, without sqlx's per-statement notices ("… does not exist, skipping").
pub const DEFAULT_LOG_FILTER: &str = "info,sqlx=warn";

#[derive(Debug, Clone)]
pub struct LogConfig {
    /// `NEXUSD_LOG`: a tracing filter such as `info` or `nexusd=debug,sqlx=warn`.
    pub filter: String,
    /// `NEXUSD_LOG_FORMAT`: `text` (default) or `json`.
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogConfig {
    pub fn from_env(env: &mut Env<'_>) -> LogConfig {
        log_config(env)
    }
}

fn log_config(env: &mut Env<'_>) -> LogConfig {
    let filter = env
        .get("NEXUSD_LOG")
        .unwrap_or_else(|| DEFAULT_LOG_FILTER.to_string());
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&filter) {
        env.error(
            "NEXUSD_LOG",
            format!("{filter:?} is not a valid log filter ({e}): expected e.g. info or nexusd=debug,sqlx=warn"),
        );
    }
    let format = match env
        .get("NEXUSD_LOG_FORMAT")
        .as_deref()
        .map(str::to_ascii_lowercase)
    {
        None => LogFormat::Text,
        Some(f) if f == "text" => LogFormat::Text,
        Some(f) if f == "json" => LogFormat::Json,
        Some(other) => {
            env.error(
                "NEXUSD_LOG_FORMAT",
                format!("{other:?} is not valid: expected text or json"),
            );
            LogFormat::Text
        }
    };
    LogConfig { filter, format }
}

/// Installs the global subscriber. Safe to call once; later calls are ignored.
pub fn init(config: &LogConfig) {
    // The filter was validated when the configuration was parsed.
    let filter = EnvFilter::try_new(&config.filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match config.format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
    // An already installed subscriber (tests) is fine.
    drop(result);
}

/// "error sending request: … : connection refused": an error and every cause, on one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
