//! The database settings: `DATABASE_URL` or the original's `POSTGRES_*` variables (an external
//! server), or nothing (the embedded cluster); pool bounds; the bootstrap superuser. Passwords
//! are kept out of every rendering of a connection.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgSslMode};

use crate::env::{Env, Var, redact_text, redact_url};

/// The variables read here, as `nexusd --help` lists them.
pub const VARIABLES: &[Var] = &[
    Var {
        name: "DATABASE_URL",
        default: "unset: embedded cluster",
        meaning: "postgresql://user:password@host:5432/db; without a password, POSTGRES_PASSWORD fills it in. Unset together with the POSTGRES_* variables, nexusd runs an embedded cluster under NEXUSD_STATE_DIR (PostgreSQL 13+ server binaries must be installed)",
    },
    Var {
        name: "POSTGRES_HOST",
        default: "localhost",
        meaning: "the original server's way to name the database, used when DATABASE_URL is unset and any POSTGRES_* variable (or USE_POSTGRESQL=true) is set",
    },
    Var {
        name: "POSTGRES_PORT",
        default: "5432",
        meaning: "see POSTGRES_HOST",
    },
    Var {
        name: "POSTGRES_DB",
        default: "devnexus",
        meaning: "see POSTGRES_HOST",
    },
    Var {
        name: "POSTGRES_USER",
        default: "devnexus",
        meaning: "see POSTGRES_HOST",
    },
    Var {
        name: "POSTGRES_PASSWORD",
        default: "-",
        meaning: "see POSTGRES_HOST; also completes a DATABASE_URL without a password",
    },
    Var {
        name: "POSTGRES_SSLMODE",
        default: "disable",
        meaning: "disable/false/0, require/true/1 (verifies the certificate unless POSTGRES_SSL_NO_VERIFY=true), or a libpq mode",
    },
    Var {
        name: "POSTGRES_SSL_NO_VERIFY",
        default: "false",
        meaning: "with POSTGRES_SSLMODE=require: encrypt without verifying the certificate",
    },
    Var {
        name: "POSTGRES_MIN_CONNECTIONS",
        default: "0",
        meaning: "pool size floor",
    },
    Var {
        name: "POSTGRES_MAX_CONNECTIONS",
        default: "10",
        meaning: "pool size ceiling",
    },
    Var {
        name: "USE_POSTGRESQL",
        default: "unset",
        meaning: "must be unset or true: nexusd has no JSON mode",
    },
    Var {
        name: "NEXUSD_BOOTSTRAP_DATABASE_URL",
        default: "unset",
        meaning: "superuser connection to the same database, used only to create extensions, so the daemon runs as the app role",
    },
    Var {
        name: "NEXUSD_DIRECT_DATABASE_URL",
        default: "unset: DATABASE_URL",
        meaning: "a direct (non-pooled) connection to the primary, for what needs a session of its own: the leader election's advisory lock, migrations, the workflow workers' sessions, the skill cache's LISTEN, pg_dump (serve and the one-off commands). Set it when DATABASE_URL goes through PgBouncer in transaction mode",
    },
    Var {
        name: "DATABASE_READ_URL",
        default: "unset: reads from the primary",
        meaning: "read replicas (hot standbys, Cloud SQL read replicas), comma-separated postgresql:// URLs: read-only skills go to one that answers and is within NEXUSD_READ_MAX_LAG, everything else to DATABASE_URL",
    },
    Var {
        name: "NEXUSD_READ_MAX_LAG",
        default: "10",
        meaning: "seconds of replay lag past which a read replica is skipped (reads fall back to the primary)",
    },
    Var {
        name: "NEXUSD_PG_BINDIR",
        default: "searched",
        meaning: "PostgreSQL programs (server binaries for the embedded cluster, pg_dump/psql for backups); searched in pg_config --bindir, /usr/lib/postgresql/*/bin, … otherwise",
    },
];

const DEFAULT_PG_HOST: &str = "localhost";
const DEFAULT_PG_PORT: u16 = 5432;
const DEFAULT_PG_DB: &str = "devnexus";
const DEFAULT_PG_USER: &str = "devnexus";

/// Where the knowledge base lives and how nexusd connects to it.
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub target: DatabaseTarget,
    /// `POSTGRES_MIN_CONNECTIONS` (default 0: connections are opened on demand).
    pub min_connections: u32,
    /// `POSTGRES_MAX_CONNECTIONS` (default 10).
    pub max_connections: u32,
    /// `NEXUSD_BOOTSTRAP_DATABASE_URL`: a superuser connection used only to create extensions.
    pub bootstrap: Option<DatabaseUrl>,
    /// `NEXUSD_PG_BINDIR`: where the embedded cluster's server binaries are (default: searched).
    pub pg_bindir: Option<PathBuf>,
}

/// How a replica reaches the database past a pooler and its read replicas.
#[derive(Debug, Clone, Default)]
pub struct Connections {
    /// `NEXUSD_DIRECT_DATABASE_URL`: the primary without a pooler in between, for sessions that
    /// must last (the leader's lock, migrations, LISTEN); `None`: `DATABASE_URL` is direct.
    pub direct: Option<DatabaseUrl>,
    /// `DATABASE_READ_URL`: read replicas for the read-only skills.
    pub read: Vec<DatabaseUrl>,
    /// `NEXUSD_READ_MAX_LAG` (10 s): a replica lagging more is skipped.
    pub read_max_lag: std::time::Duration,
}

impl Connections {
    pub fn from_env(env: &mut Env<'_>) -> Connections {
        let direct = env
            .get("NEXUSD_DIRECT_DATABASE_URL")
            .and_then(|url| database_url(env, "NEXUSD_DIRECT_DATABASE_URL", &url));
        let read = env
            .get("DATABASE_READ_URL")
            .map(|urls| {
                urls.split(',')
                    .map(str::trim)
                    .filter(|u| !u.is_empty())
                    .filter_map(|url| database_url(env, "DATABASE_READ_URL", url))
                    .collect()
            })
            .unwrap_or_default();
        let lag: u32 = env.bounded(
            "NEXUSD_READ_MAX_LAG",
            10,
            1,
            86_400,
            "a number of seconds, 1 or more",
        );
        Connections {
            direct,
            read,
            read_max_lag: std::time::Duration::from_secs(lag.into()),
        }
    }

    /// Where a session of its own goes (the leader's lock, migrations, the status probe): the
    /// direct URL when there is one, else `pooled` — then `DATABASE_URL` is direct.
    pub fn direct_or(&self, pooled: &PgConnectOptions) -> PgConnectOptions {
        match &self.direct {
            Some(url) => url.options.clone(),
            None => pooled.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub enum DatabaseTarget {
    /// `DATABASE_URL` or the `POSTGRES_*` variables name a server nexusd does not manage.
    External(Box<DatabaseUrl>),
    /// Nothing configured: nexusd runs its own cluster under the state directory.
    Embedded,
}

/// Connection options for a server, with a printable form that hides the password.
#[derive(Clone)]
pub struct DatabaseUrl {
    pub options: PgConnectOptions,
    /// The variable(s) it came from, for messages.
    pub source: &'static str,
    redacted: String,
    /// The password, kept for the PostgreSQL client tools (pg_dump, psql) nexusd runs.
    password: Option<String>,
}

impl DatabaseUrl {
    /// The connection as `postgresql://user:***@host:port/db`, safe to log.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }

    /// The password, for `PGPASSWORD` of the client tools; never log it.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseUrl")
            .field("source", &self.source)
            .field("url", &self.redacted)
            .finish()
    }
}

impl DatabaseConfig {
    /// `None` when a variable is bad (the problem is in `env`).
    pub fn from_env(env: &mut Env<'_>) -> Option<DatabaseConfig> {
        database_config(env)
    }
}

fn database_config(env: &mut Env<'_>) -> Option<DatabaseConfig> {
    let use_postgresql = env.bool("USE_POSTGRESQL");
    if use_postgresql == Some(false) {
        env.error(
            "USE_POSTGRESQL",
            "is false, but nexusd always keeps the knowledge base in PostgreSQL (the original's \
             JSON mode is gone): unset USE_POSTGRESQL or set it to true",
        );
    }

    let min: Option<u32> = env.parse_or("POSTGRES_MIN_CONNECTIONS", "0", "a whole number ≥ 0");
    let max: Option<u32> = env.parse_or("POSTGRES_MAX_CONNECTIONS", "10", "a whole number ≥ 1");
    if let (Some(min), Some(max)) = (min, max) {
        if max == 0 {
            env.error(
                "POSTGRES_MAX_CONNECTIONS",
                "is 0: expected a whole number ≥ 1",
            );
        } else if min > max {
            env.error(
                "POSTGRES_MIN_CONNECTIONS",
                format!("is {min}, more than POSTGRES_MAX_CONNECTIONS ({max})"),
            );
        }
    }

    let postgres_vars = [
        "POSTGRES_HOST",
        "POSTGRES_PORT",
        "POSTGRES_DB",
        "POSTGRES_USER",
        "POSTGRES_PASSWORD",
    ];
    let any_postgres_var = postgres_vars.iter().any(|v| env.get(v).is_some());

    let target = if let Some(url) = env.get("DATABASE_URL") {
        database_url(env, "DATABASE_URL", &url).map(|u| DatabaseTarget::External(Box::new(u)))
    } else if any_postgres_var || use_postgresql == Some(true) {
        postgres_vars_target(env).map(|u| DatabaseTarget::External(Box::new(u)))
    } else {
        Some(DatabaseTarget::Embedded)
    };

    let bootstrap = env
        .get("NEXUSD_BOOTSTRAP_DATABASE_URL")
        .and_then(|url| database_url(env, "NEXUSD_BOOTSTRAP_DATABASE_URL", &url));
    let pg_bindir = env.get("NEXUSD_PG_BINDIR").map(PathBuf::from);

    Some(DatabaseConfig {
        target: target?,
        min_connections: min?,
        max_connections: max?,
        bootstrap,
        pg_bindir,
    })
}

/// Parses a `postgres://` URL. When it carries no password, `POSTGRES_PASSWORD` fills it in: the
/// original Terraform set `DATABASE_URL` without one and the password in that variable.
fn database_url(env: &mut Env<'_>, var: &'static str, url: &str) -> Option<DatabaseUrl> {
    let parsed = url::Url::parse(url).ok();
    let scheme_ok = parsed
        .as_ref()
        .is_some_and(|u| matches!(u.scheme(), "postgres" | "postgresql"));
    let password_in_url = parsed.as_ref().and_then(|u| u.password()).map(|p| {
        percent_encoding::percent_decode_str(p)
            .decode_utf8_lossy()
            .to_string()
    });
    let options = if scheme_ok {
        PgConnectOptions::from_str(url)
            .map_err(|e| redact_text(&e.to_string(), password_in_url.as_deref()))
    } else {
        Err("not a postgres:// or postgresql:// URL".to_string())
    };
    match options {
        Ok(mut options) => {
            let mut source = var;
            let mut password = password_in_url;
            if password.is_none()
                && var == "DATABASE_URL"
                && let Some(from_env) = env.get("POSTGRES_PASSWORD")
            {
                options = options.password(&from_env);
                password = Some(from_env);
                source = "DATABASE_URL + POSTGRES_PASSWORD";
            }
            Some(DatabaseUrl {
                options,
                source,
                redacted: redact_url(url),
                password,
            })
        }
        Err(reason) => {
            env.error(
                var,
                format!(
                    "{} is not valid ({reason}): expected postgresql://user:password@host:5432/dbname",
                    redact_url(url)
                ),
            );
            None
        }
    }
}

fn postgres_vars_target(env: &mut Env<'_>) -> Option<DatabaseUrl> {
    let host = env
        .get("POSTGRES_HOST")
        .unwrap_or_else(|| DEFAULT_PG_HOST.to_string());
    let port: Option<u16> = env.parse_or(
        "POSTGRES_PORT",
        &DEFAULT_PG_PORT.to_string(),
        "a TCP port number (1-65535)",
    );
    let database = env
        .get("POSTGRES_DB")
        .unwrap_or_else(|| DEFAULT_PG_DB.to_string());
    let user = env
        .get("POSTGRES_USER")
        .unwrap_or_else(|| DEFAULT_PG_USER.to_string());
    let password = env.get("POSTGRES_PASSWORD");
    let ssl_mode = ssl_mode(env);
    let port = port?;
    if port == 0 {
        env.error(
            "POSTGRES_PORT",
            "is 0: expected a TCP port number (1-65535)",
        );
        return None;
    }

    let mut options = PgConnectOptions::new_without_pgpass()
        .host(&host)
        .port(port)
        .database(&database)
        .username(&user)
        .ssl_mode(ssl_mode?);
    if let Some(password) = &password {
        options = options.password(password);
    }
    let shown_password = if password.is_some() { ":***" } else { "" };
    Some(DatabaseUrl {
        options,
        source: "POSTGRES_*",
        redacted: format!("postgresql://{user}{shown_password}@{host}:{port}/{database}"),
        password,
    })
}

/// `POSTGRES_SSLMODE` with the original's spellings: `disable|false|0` is off, `require|true|1`
/// verifies the server certificate unless `POSTGRES_SSL_NO_VERIFY` is true; libpq's own mode
/// names are accepted too.
fn ssl_mode(env: &mut Env<'_>) -> Option<PgSslMode> {
    let no_verify = env.bool("POSTGRES_SSL_NO_VERIFY").unwrap_or(false);
    let raw = env
        .get("POSTGRES_SSLMODE")
        .unwrap_or_else(|| "disable".to_string());
    let mode = match raw.to_ascii_lowercase().as_str() {
        "disable" | "false" | "0" => PgSslMode::Disable,
        "require" | "true" | "1" if no_verify => PgSslMode::Require,
        "require" | "true" | "1" => PgSslMode::VerifyFull,
        "allow" => PgSslMode::Allow,
        "prefer" => PgSslMode::Prefer,
        "verify-ca" => PgSslMode::VerifyCa,
        "verify-full" => PgSslMode::VerifyFull,
        _ => {
            env.error(
                "POSTGRES_SSLMODE",
                format!(
                    "{raw:?} is not valid: expected disable, require, prefer, allow, verify-ca or verify-full"
                ),
            );
            return None;
        }
    };
    Some(mode)
}
