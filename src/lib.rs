//! nexusd: one daemon for a Dev-Nexus VM — PostgreSQL bootstrap and migrations, an embedded
//! cluster when no database is configured, backups, metrics and the skills API. `main.rs` only
//! calls [`commands::main`], so tests and commands share every piece. The floors the modules
//! stand on are in `docs/architecture.md`; the modules made public here are the ones the
//! integration tests reach into.
// `deny`, not `forbid`: one call has no safe wrapper (`adjtimex(2)`, in `metrics/host/system.rs`)
// and is allowed there alone.
#![deny(unsafe_code)]

mod app;
pub mod backup;
pub mod bootstrap;
mod capabilities;
mod cli;
pub mod commands;
pub mod config;
pub mod db;
pub mod embed;
mod env;
mod github;
mod http;
mod import;
pub mod json_schema;
pub mod kb;
mod metrics;
mod proxy;
mod rules;
mod signals;
mod skills;
mod systemd;
mod telemetry;
