//! The PostgreSQL client programs nexusd runs (`pg_dump`, `psql`, `pg_restore`): where to find a
//! version that can talk to the server, and how they connect — through libpq environment
//! variables, so a password never appears on a command line or in `ps`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Result, anyhow};
use sqlx::postgres::{PgConnectOptions, PgSslMode};

use super::programs;

/// Connection settings for a libpq program.
#[derive(Clone)]
pub struct ToolConnection {
    host: String,
    port: u16,
    user: String,
    password: Option<String>,
    database: String,
    sslmode: &'static str,
}

impl fmt::Debug for ToolConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ToolConnection")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "[redacted]"))
            .field("database", &self.database)
            .finish()
    }
}

impl ToolConnection {
    /// From sqlx options (which do not expose the password, hence `password`).
    pub fn from_options(options: &PgConnectOptions, password: Option<&str>) -> Self {
        let host = match options.get_socket() {
            Some(dir) => dir.display().to_string(),
            None => options.get_host().to_string(),
        };
        let sslmode = match options.get_ssl_mode() {
            PgSslMode::Disable => "disable",
            PgSslMode::Allow => "allow",
            PgSslMode::Prefer => "prefer",
            PgSslMode::Require => "require",
            PgSslMode::VerifyCa => "verify-ca",
            PgSslMode::VerifyFull => "verify-full",
        };
        ToolConnection {
            host,
            port: options.get_port(),
            user: options.get_username().to_string(),
            password: password.map(str::to_string),
            database: options.get_database().unwrap_or("postgres").to_string(),
            sslmode,
        }
    }

    pub fn database(&self) -> &str {
        &self.database
    }

    /// The same server and credentials, another database.
    pub fn with_database(&self, database: &str) -> Self {
        ToolConnection {
            database: database.to_string(),
            ..self.clone()
        }
    }

    /// Sets the libpq variables on `cmd` (and clears any the environment already had).
    pub fn apply(&self, cmd: &mut Command) {
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PG") {
                cmd.env_remove(key);
            }
        }
        cmd.env("PGHOST", &self.host)
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", &self.user)
            .env("PGDATABASE", &self.database)
            .env("PGSSLMODE", self.sslmode)
            .env("PGAPPNAME", "nexusd")
            .env("PGCONNECT_TIMEOUT", "10");
        if let Some(password) = &self.password {
            cmd.env("PGPASSWORD", password);
        }
    }
}

/// A directory holding `pg_dump`, `pg_restore` and `psql` of one version.
#[derive(Debug, Clone)]
pub struct ClientTools {
    pub bindir: PathBuf,
    /// `pg_dump (PostgreSQL) 15.20` as the program prints it.
    pub version: String,
    pub major: u32,
}

impl ClientTools {
    /// Finds client programs that can dump a server of `server_major` in
    /// [`programs::search_dirs`], preferring the server's own major version, else the oldest
    /// newer one (pg_dump refuses servers newer than itself).
    pub fn locate(explicit: Option<&Path>, server_major: u32) -> Result<Self> {
        let found: Vec<ClientTools> = programs::search_dirs(explicit)
            .iter()
            .filter_map(|d| programs::probe(d, &["pg_dump", "psql", "pg_restore"]))
            .map(|f| ClientTools {
                bindir: f.bindir,
                version: f.banner,
                major: f.major,
            })
            .collect();
        let best = found.iter().find(|t| t.major == server_major).or_else(|| {
            found
                .iter()
                .filter(|t| t.major > server_major)
                .min_by_key(|t| t.major)
        });
        best.cloned().ok_or_else(|| {
            let seen: Vec<String> = found
                .iter()
                .map(|t| format!("{} in {}", t.version, t.bindir.display()))
                .collect();
            anyhow!(
                "no pg_dump/psql for PostgreSQL {server_major} or newer found (seen: {}): install \
                 postgresql-client-{server_major}, or set NEXUSD_PG_BINDIR to its bin directory",
                if seen.is_empty() {
                    "none".to_string()
                } else {
                    seen.join(", ")
                }
            )
        })
    }

    pub fn program(&self, name: &str) -> PathBuf {
        self.bindir.join(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_goes_through_the_environment_and_stays_out_of_debug() {
        let options = PgConnectOptions::new_without_pgpass()
            .host("db.internal")
            .port(6543)
            .username("app")
            .database("kb");
        let tools = ToolConnection::from_options(&options, Some("s3cret"));
        assert!(!format!("{tools:?}").contains("s3cret"));
        let mut cmd = Command::new("true");
        tools.with_database("scratch").apply(&mut cmd);
        let env: Vec<(String, String)> = cmd
            .get_envs()
            .filter_map(|(k, v)| {
                Some((
                    k.to_string_lossy().to_string(),
                    v?.to_string_lossy().to_string(),
                ))
            })
            .collect();
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("PGHOST"), Some("db.internal"));
        assert_eq!(get("PGPORT"), Some("6543"));
        assert_eq!(get("PGDATABASE"), Some("scratch"));
        assert_eq!(get("PGPASSWORD"), Some("s3cret"));
        assert!(
            cmd.get_args().next().is_none(),
            "nothing on the command line"
        );
    }

    #[test]
    fn the_servers_own_client_version_is_found() {
        let tools = ClientTools::locate(None, 15)
            .expect("PostgreSQL 15 client tools (scripts/setup-debian)");
        assert_eq!(tools.major, 15);
        assert!(tools.version.starts_with("pg_dump (PostgreSQL) 15"));
        assert!(ClientTools::locate(None, 99).is_err());
    }
}
