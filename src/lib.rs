//! nexusd: one daemon for a Dev-Nexus VM — PostgreSQL bootstrap and migrations, an embedded
//! cluster when no database is configured, and the skills API. `main.rs` only parses the command
//! line and dispatches here, so tests and subcommands share every piece.
#![forbid(unsafe_code)]

pub mod app;
pub mod backup;
pub mod bootstrap;
pub mod cli;
pub mod commands;
pub mod config;
pub mod db;
pub mod embed;
pub mod env;
pub mod github;
pub mod http;
pub mod import;
pub mod json_schema;
pub mod kb;
pub mod metrics;
pub mod proxy;
pub mod rules;
pub mod signals;
pub mod skills;
pub mod systemd;
pub mod telemetry;
