//! Bootstrap: checks the server version, creates the `vector` and `pg_stat_statements`
//! extensions and applies the embedded, versioned migrations. Idempotent: a second run changes
//! nothing. `nexusd bootstrap` runs it once; `nexusd serve` runs it at start and retries until
//! it succeeds.

mod readiness;

use std::time::Duration;

use serde::Serialize;
use sqlx::Connection;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};

use crate::db::DatabaseUrl;

pub use readiness::{Readiness, until_ready};

/// The knowledge-base schema, compiled into the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!();

/// Session advisory lock held for a whole bootstrap (`run`).
const BOOTSTRAP_LOCK: i64 = 0x6e65_7875_7364_0011;

/// PostgreSQL 13 is the oldest server nexusd supports.
pub const MIN_SERVER_VERSION_NUM: i32 = 130_000;

/// The tables the migrations create (the knowledge base), all in schema `public`. Per-table
/// metrics cover these; `tests/bootstrap.rs` checks the list against a bootstrapped database.
pub const KNOWLEDGE_BASE_TABLES: &[&str] = &[
    "analysis_history",
    "component_vectors",
    "dependencies",
    "dependency_edges",
    "deployment_scripts",
    "kb_listeners",
    "keywords",
    "lessons_learned",
    "manifest_dependencies",
    "pattern_history",
    "pattern_keywords",
    "patterns",
    "repositories",
    "repository_complexity",
    "repository_keyword_uses",
    "repository_relationships",
    "reusable_components",
    "runtime_issues",
    "security_patterns",
    "technical_decisions",
    "test_frameworks",
    "workflow_jobs",
];
/// halfvec (used by the HNSW index) arrived in pgvector 0.7.0.
const MIN_PGVECTOR: &str = "0.7.0";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What a successful bootstrap found and did.
#[derive(Debug, Clone, Serialize)]
pub struct BootstrapReport {
    /// `server_version`, e.g. `15.20 (Debian 15.20-0+deb12u1)`.
    pub server_version: String,
    pub pgvector_version: String,
    pub statements: StatementsStatus,
    /// Newest migration applied to the database.
    pub migration_version: i64,
    /// Migrations this run applied (empty when the schema was already current).
    pub applied_now: Vec<i64>,
}

/// Whether pg_stat_statements can be read; the statement metrics are off otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum StatementsStatus {
    Ready,
    /// The extension exists but the library is not in `shared_preload_libraries`.
    NotPreloaded {
        fix: String,
    },
    Unavailable {
        reason: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("cannot connect to PostgreSQL at {target}: {reason}")]
    Unreachable { target: String, reason: String },
    #[error("PostgreSQL {found} is too old: nexusd needs 13 or newer")]
    ServerTooOld { found: String },
    #[error(
        "pgvector is not installed on the PostgreSQL server: install it for PostgreSQL {major} \
         (scripts/setup-debian builds it; with the PGDG repository: apt install \
         postgresql-{major}-pgvector)"
    )]
    PgvectorMissing { major: i32 },
    #[error(
        "pgvector {found} is too old: nexusd needs {MIN_PGVECTOR} or newer (for halfvec); {fix}"
    )]
    PgvectorTooOld { found: String, fix: String },
    #[error(
        "the extension {extension} is missing and role {role} may not create it: as a superuser \
         run `CREATE EXTENSION {extension};` in database {database}, or set \
         NEXUSD_BOOTSTRAP_DATABASE_URL to a superuser connection to that database"
    )]
    ExtensionPrivilege {
        extension: &'static str,
        role: String,
        database: String,
    },
    #[error(
        "NEXUSD_BOOTSTRAP_DATABASE_URL connects to database {found}, but the knowledge base is \
         {expected}: point it at the same database"
    )]
    WrongBootstrapDatabase { found: String, expected: String },
    #[error("migration failed: {0}")]
    Migration(String),
    #[error("{context}: {source}")]
    Sql {
        context: &'static str,
        #[source]
        source: sqlx::Error,
    },
}

fn sql(context: &'static str) -> impl FnOnce(sqlx::Error) -> BootstrapError {
    move |source| BootstrapError::Sql { context, source }
}

/// Facts about the server and the two extensions, read in one query.
#[derive(Debug, Clone)]
pub struct ServerFacts {
    pub version_num: i32,
    pub version: String,
    pub role: String,
    pub database: String,
    pub vector: ExtensionFacts,
    pub statements: ExtensionFacts,
}

#[derive(Debug, Clone, Default)]
pub struct ExtensionFacts {
    /// The version the server can install (None: the extension is not on the server at all).
    pub available: Option<String>,
    /// The version installed in this database.
    pub installed: Option<String>,
}

impl ServerFacts {
    pub async fn read(conn: &PgPool) -> Result<Self, BootstrapError> {
        type Row = (
            i32,
            String,
            String,
            String,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
        );
        let row: Row = sqlx::query_as(
            "SELECT current_setting('server_version_num')::int,
                    current_setting('server_version'),
                    current_user::text,
                    current_database()::text,
                    (SELECT default_version FROM pg_available_extensions WHERE name = 'vector'),
                    (SELECT extversion FROM pg_extension WHERE extname = 'vector'),
                    (SELECT default_version FROM pg_available_extensions WHERE name = 'pg_stat_statements'),
                    (SELECT extversion FROM pg_extension WHERE extname = 'pg_stat_statements')",
        )
        .fetch_one(conn)
        .await
        .map_err(sql("reading server facts"))?;
        Ok(ServerFacts {
            version_num: row.0,
            version: row.1,
            role: row.2,
            database: row.3,
            vector: ExtensionFacts {
                available: row.4,
                installed: row.5,
            },
            statements: ExtensionFacts {
                available: row.6,
                installed: row.7,
            },
        })
    }

    pub fn major(&self) -> i32 {
        self.version_num / 10_000
    }
}

/// Connects with a bounded wait and a reason that names the server but not the password.
/// The result is a one-connection pool: the whole bootstrap runs on one session, and a pool
/// (unlike `&mut PgConnection`) keeps its futures provably `Send` inside spawned tasks.
pub async fn connect(options: &PgConnectOptions, target: &str) -> Result<PgPool, BootstrapError> {
    let options = crate::db::session_options(options.clone());
    // One direct attempt first: the pool would retry until its timeout and then report only
    // that it timed out, hiding "connection refused" or "password authentication failed".
    let unreachable = |reason: String| BootstrapError::Unreachable {
        target: target.to_string(),
        reason,
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options)).await {
        Ok(Ok(conn)) => conn.close().await.map_err(|e| unreachable(e.to_string()))?,
        Ok(Err(e)) => return Err(unreachable(e.to_string())),
        Err(_) => return Err(unreachable(format!("no answer within {CONNECT_TIMEOUT:?}"))),
    }
    let connecting = PgPoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .acquire_timeout(CONNECT_TIMEOUT)
        .connect_with(options);
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(Ok(pool)) => Ok(pool),
        Ok(Err(e)) => Err(unreachable(e.to_string())),
        Err(_) => Err(unreachable(format!("no answer within {CONNECT_TIMEOUT:?}"))),
    }
}

/// Bootstraps the database that `options` points at. `superuser`, when given, is used only to
/// create or update extensions.
pub async fn run(
    options: &PgConnectOptions,
    target: &str,
    superuser: Option<&DatabaseUrl>,
) -> Result<BootstrapReport, BootstrapError> {
    let conn = connect(options, target).await?;
    // Replicas starting together bootstrap one after the other: extensions are created once
    // and the later ones find the schema current (sqlx's migrator locks only the migrations).
    // The session holds the lock until the connection closes at the end.
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(BOOTSTRAP_LOCK)
        .execute(&conn)
        .await
        .map_err(sql("waiting for another replica's bootstrap"))?;
    let facts = ServerFacts::read(&conn).await?;
    if facts.version_num < MIN_SERVER_VERSION_NUM {
        return Err(BootstrapError::ServerTooOld {
            found: facts.version,
        });
    }
    let mut admin = Admin {
        superuser,
        conn: None,
    };
    let pgvector_version = ensure_vector(&conn, &mut admin, &facts).await?;
    let statements = ensure_statements(&conn, &mut admin, &facts).await;
    if let Some(c) = admin.conn.take() {
        c.close().await;
    }
    match &statements {
        StatementsStatus::Ready => {}
        StatementsStatus::NotPreloaded { fix } => {
            tracing::warn!("pg_stat_statements is not preloaded, statement metrics are off: {fix}");
        }
        StatementsStatus::Unavailable { reason } => {
            tracing::warn!(
                "pg_stat_statements is unavailable, statement metrics are off: {reason}"
            );
        }
    }

    let before = applied_versions(&conn).await?;
    MIGRATOR
        .run(&conn)
        .await
        .map_err(|e| migration_error(e, &facts.role))?;
    let after = applied_versions(&conn).await?;
    conn.close().await;

    let applied_now: Vec<i64> = after
        .iter()
        .copied()
        .filter(|v| !before.contains(v))
        .collect();
    Ok(BootstrapReport {
        server_version: facts.version,
        pgvector_version,
        statements,
        migration_version: after.iter().copied().max().unwrap_or(0),
        applied_now,
    })
}

/// The superuser connection, opened only when an extension must be created or updated.
struct Admin<'a> {
    superuser: Option<&'a DatabaseUrl>,
    conn: Option<PgPool>,
}

impl Admin<'_> {
    /// Runs `statement` as the superuser when one is configured, else on `own`.
    async fn execute(
        &mut self,
        own: &PgPool,
        facts: &ServerFacts,
        statement: &str,
    ) -> Result<(), ExecuteError> {
        let Some(url) = self.superuser else {
            return sqlx::raw_sql(statement)
                .execute(own)
                .await
                .map(drop)
                .map_err(ExecuteError::Sql);
        };
        if self.conn.is_none() {
            let conn = connect(&url.options, url.redacted())
                .await
                .map_err(ExecuteError::Bootstrap)?;
            let database: String = sqlx::query_scalar("SELECT current_database()::text")
                .fetch_one(&conn)
                .await
                .map_err(ExecuteError::Sql)?;
            if database != facts.database {
                return Err(ExecuteError::Bootstrap(
                    BootstrapError::WrongBootstrapDatabase {
                        found: database,
                        expected: facts.database.clone(),
                    },
                ));
            }
            self.conn = Some(conn);
        }
        let conn = self.conn.as_ref().expect("connection opened above");
        sqlx::raw_sql(statement)
            .execute(conn)
            .await
            .map(drop)
            .map_err(ExecuteError::Sql)
    }
}

enum ExecuteError {
    Bootstrap(BootstrapError),
    Sql(sqlx::Error),
}

fn is_insufficient_privilege(e: &sqlx::Error) -> bool {
    e.as_database_error().and_then(|d| d.code()).as_deref() == Some("42501")
}

async fn ensure_vector(
    conn: &PgPool,
    admin: &mut Admin<'_>,
    facts: &ServerFacts,
) -> Result<String, BootstrapError> {
    let Some(available) = facts.vector.available.clone() else {
        return Err(BootstrapError::PgvectorMissing {
            major: facts.major(),
        });
    };
    let statement = match &facts.vector.installed {
        Some(installed) if !version_lt(installed, MIN_PGVECTOR) => return Ok(installed.clone()),
        _ if version_lt(&available, MIN_PGVECTOR) => {
            return Err(BootstrapError::PgvectorTooOld {
                found: available,
                fix: "install a newer pgvector on the server".to_string(),
            });
        }
        Some(_) => "ALTER EXTENSION vector UPDATE",
        None => "CREATE EXTENSION IF NOT EXISTS vector",
    };
    match admin.execute(conn, facts, statement).await {
        Ok(()) => {}
        Err(ExecuteError::Bootstrap(e)) => return Err(e),
        Err(ExecuteError::Sql(e)) if is_insufficient_privilege(&e) => {
            return Err(match &facts.vector.installed {
                None => BootstrapError::ExtensionPrivilege {
                    extension: "vector",
                    role: facts.role.clone(),
                    database: facts.database.clone(),
                },
                Some(installed) => BootstrapError::PgvectorTooOld {
                    found: installed.clone(),
                    fix: format!(
                        "as a superuser run `ALTER EXTENSION vector UPDATE;` in database {}",
                        facts.database
                    ),
                },
            });
        }
        Err(ExecuteError::Sql(e)) => {
            return Err(BootstrapError::Sql {
                context: "creating the vector extension",
                source: e,
            });
        }
    }
    let version: Option<String> =
        sqlx::query_scalar("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
            .fetch_optional(conn)
            .await
            .map_err(sql("reading the pgvector version"))?;
    let version = version.unwrap_or(available);
    tracing::info!(version = %version, "pgvector ready");
    Ok(version)
}

async fn ensure_statements(
    conn: &PgPool,
    admin: &mut Admin<'_>,
    facts: &ServerFacts,
) -> StatementsStatus {
    if facts.statements.installed.is_none() {
        if facts.statements.available.is_none() {
            return StatementsStatus::Unavailable {
                reason: "pg_stat_statements is not installed on the server (Debian package \
                         postgresql-contrib)"
                    .to_string(),
            };
        }
        match admin
            .execute(
                conn,
                facts,
                "CREATE EXTENSION IF NOT EXISTS pg_stat_statements",
            )
            .await
        {
            Ok(()) => {}
            Err(ExecuteError::Sql(e)) if is_insufficient_privilege(&e) => {
                return StatementsStatus::Unavailable {
                    reason: format!(
                        "role {} may not create it: as a superuser run `CREATE EXTENSION \
                         pg_stat_statements;` in database {}, or set NEXUSD_BOOTSTRAP_DATABASE_URL",
                        facts.role, facts.database
                    ),
                };
            }
            Err(ExecuteError::Sql(e)) => {
                return StatementsStatus::Unavailable {
                    reason: e.to_string(),
                };
            }
            Err(ExecuteError::Bootstrap(e)) => {
                return StatementsStatus::Unavailable {
                    reason: e.to_string(),
                };
            }
        }
    }
    statements_status(conn).await
}

/// Reads pg_stat_statements once to learn whether the library is loaded.
pub async fn statements_status(conn: &PgPool) -> StatementsStatus {
    match sqlx::query("SELECT 1 FROM pg_stat_statements(false) LIMIT 1")
        .execute(conn)
        .await
    {
        Ok(_) => StatementsStatus::Ready,
        Err(e) if e.to_string().contains("shared_preload_libraries") => StatementsStatus::NotPreloaded {
            fix: "add pg_stat_statements to shared_preload_libraries in postgresql.conf \
                  (shared_preload_libraries = 'pg_stat_statements', or as a superuser: ALTER SYSTEM \
                  SET shared_preload_libraries = 'pg_stat_statements') and restart PostgreSQL"
                .to_string(),
        },
        Err(e) => StatementsStatus::Unavailable { reason: e.to_string() },
    }
}

/// Versions recorded in sqlx's migrations table (none before the first migration).
pub async fn applied_versions(conn: &PgPool) -> Result<Vec<i64>, BootstrapError> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(conn)
        .await
        .map_err(sql("reading applied migrations"))?;
    if !exists {
        return Ok(Vec::new());
    }
    sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
        .fetch_all(conn)
        .await
        .map_err(sql("reading applied migrations"))
}

/// Newest migration this build carries.
pub fn latest_known_migration() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

fn migration_error(e: MigrateError, role: &str) -> BootstrapError {
    let message = match &e {
        MigrateError::VersionMissing(v) => format!(
            "the database has migration {v} applied, which this nexusd does not know: it was \
             migrated by a newer nexusd; run that version (schemas are never downgraded)"
        ),
        MigrateError::VersionMismatch(v) => format!(
            "migration {v} differs from the one applied to this database: migrations are never \
             edited after release, so this binary and the database disagree about history"
        ),
        MigrateError::Execute(source) | MigrateError::ExecuteMigration(source, _) => {
            let mut text = e.to_string();
            if is_insufficient_privilege(source) {
                text.push_str(&format!(
                    " (role {role} lacks a privilege: it must own the knowledge-base tables and be \
                     allowed to create in schema public, e.g. as a superuser: GRANT CREATE ON SCHEMA \
                     public TO {role}; ALTER TABLE … OWNER TO {role})"
                ));
            }
            text
        }
        other => other.to_string(),
    };
    BootstrapError::Migration(message)
}

/// Compares dotted versions numerically (`0.10.0` > `0.7.0`).
fn version_lt(a: &str, b: &str) -> bool {
    let parts = |v: &str| -> Vec<u64> {
        v.split(['.', '-'])
            .map(|p| {
                p.chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
                    .parse()
                    .unwrap_or(0)
            })
            .collect()
    };
    parts(a) < parts(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically() {
        assert!(version_lt("0.6.0", "0.7.0"));
        assert!(!version_lt("0.8.0", "0.7.0"));
        assert!(!version_lt("0.10.1", "0.7.0"));
        assert!(!version_lt("0.7.0", "0.7.0"));
    }

    #[test]
    fn migrations_are_embedded_in_order() {
        let versions: Vec<i64> = MIGRATOR.iter().map(|m| m.version).collect();
        assert!(!versions.is_empty());
        assert!(versions.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(latest_known_migration(), *versions.last().unwrap());
    }

    #[test]
    fn unknown_applied_migration_says_newer_nexusd() {
        let e = migration_error(MigrateError::VersionMissing(99), "app");
        assert!(e.to_string().contains("newer nexusd"));
    }
}
