//! Which capabilities this replica runs, as switches a managed deployment turns off: the
//! platform then takes backups and point-in-time recovery (`NEXUSD_BACKUPS=off`) and watches the
//! machine (`NEXUSD_HOST_METRICS=off`). nexusd keeps the API, bootstrap and migrations,
//! PostgreSQL's metrics and the embedding backfill. Each switch carries the reason `nexusd
//! check` and `status` print. The defaults keep a single VM's behaviour: everything on.

use crate::env::{Env, Var};

/// The variables read here, as `nexusd --help` lists them.
pub const VARIABLES: &[Var] = &[
    Var {
        name: "NEXUSD_BACKUPS",
        default: "on",
        meaning: "off when the platform backs the database up (Cloud SQL, AlloyDB): no scheduled logical dumps, base backups, retention or verification, and the embedded cluster archives no WAL",
    },
    Var {
        name: "NEXUSD_HOST_METRICS",
        default: "on",
        meaning: "off when the platform monitors the machine (Cloud Run, managed instance groups): /metrics then carries no node_* host collectors (the *.prom textfiles still merge)",
    },
];

/// One capability: on or off, and why, in words for an operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switch {
    pub on: bool,
    pub why: &'static str,
}

impl Switch {
    /// `"backups on (default)"`, `"host metrics off: NEXUSD_HOST_METRICS=off, …"`.
    pub fn describe(&self, what: &str) -> String {
        format!(
            "{what} {}: {}",
            if self.on { "on" } else { "off" },
            self.why
        )
    }
}

/// The switches of this replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    pub backups: Switch,
    pub host_metrics: Switch,
}

impl Default for Capabilities {
    fn default() -> Self {
        Capabilities {
            backups: Switch {
                on: true,
                why: DEFAULT_ON,
            },
            host_metrics: Switch {
                on: true,
                why: DEFAULT_ON,
            },
        }
    }
}

const DEFAULT_ON: &str = "the default (one machine: nexusd does it)";

impl Capabilities {
    pub fn from_env(env: &mut Env<'_>) -> Capabilities {
        let backups = switch(
            env,
            "NEXUSD_BACKUPS",
            "managed database: NEXUSD_BACKUPS=off, its platform takes backups and point-in-time recovery",
        );
        let host_metrics = switch(
            env,
            "NEXUSD_HOST_METRICS",
            "managed machine: NEXUSD_HOST_METRICS=off, its platform monitors the host",
        );
        Capabilities {
            backups,
            host_metrics,
        }
    }
}

fn switch(env: &mut Env<'_>, var: &'static str, off_why: &'static str) -> Switch {
    match env.get(var) {
        None => Switch {
            on: true,
            why: DEFAULT_ON,
        },
        Some(v) => match v.trim().to_ascii_lowercase().as_str() {
            "on" | "true" | "1" | "yes" => Switch {
                on: true,
                why: "set on",
            },
            "off" | "false" | "0" | "no" => Switch {
                on: false,
                why: off_why,
            },
            _ => {
                env.error(var, format!("{v:?} is not valid: expected on or off"));
                Switch {
                    on: true,
                    why: DEFAULT_ON,
                }
            }
        },
    }
}
