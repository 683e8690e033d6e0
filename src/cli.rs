//! The command line: one binary, one subcommand per job. Configuration comes from the
//! environment (see `nexusd --help`), not from flags, so the systemd unit and a shell agree.

use clap::{Parser, Subcommand};

const CONFIG_HELP: &str = "\
Configuration (environment variables; systemd reads them from /etc/nexusd/nexusd.env):
  DATABASE_URL                  postgresql://user:password@host:5432/db. Unset, together with
                                the POSTGRES_* variables, nexusd runs an embedded cluster under
                                NEXUSD_STATE_DIR (PostgreSQL 13+ server binaries must be installed)
  POSTGRES_HOST/PORT/DB/USER/PASSWORD/SSLMODE
                                the original server's way to name the database
                                (defaults localhost/5432/devnexus/devnexus/-/disable)
  POSTGRES_MIN_CONNECTIONS      pool size floor (0)
  POSTGRES_MAX_CONNECTIONS      pool size ceiling (10)
  USE_POSTGRESQL                must be unset or true: nexusd has no JSON mode
  NEXUSD_BOOTSTRAP_DATABASE_URL superuser connection used only to create extensions
  NEXUSD_PG_BINDIR              server binaries for the embedded cluster (default: searched)
  NEXUSD_API_ADDR               skills API listener (0.0.0.0:8080)
  NEXUSD_STATE_DIR              embedded cluster and local backups
                                (/var/lib/nexusd as root, ./.nexusd otherwise)
  KNOWLEDGE_BASE_REPO           shown in /health and the agent card
  NEXUSD_LOG                    log filter (info), e.g. nexusd=debug,sqlx=warn
  NEXUSD_LOG_FORMAT             text or json (text)

Every command exits non-zero with a one-line reason when it fails.";

#[derive(Debug, Parser)]
#[command(
    name = "nexusd",
    version,
    about = "One daemon for a Dev-Nexus VM: PostgreSQL bootstrap, backups, metrics and the skills API",
    after_long_help = CONFIG_HELP
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: the skills API, the database bootstrap and the embedded cluster
    #[command(long_about = "\
Run the daemon until SIGTERM or SIGINT.

The API listener (NEXUSD_API_ADDR) opens at once; /health answers 503 until the database is
reachable and bootstrapped. Bootstrap (extensions + migrations) is retried with backoff, so nexusd
may start before PostgreSQL. With no database configured, nexusd initialises and supervises an
embedded cluster under NEXUSD_STATE_DIR (restarting it if it dies) and stops it on shutdown.
Under systemd (Type=notify) it reports READY, STATUS and watchdog pings.")]
    Serve,

    /// Create the extensions and apply the schema migrations, then exit
    #[command(long_about = "\
Check the server (PostgreSQL 13 or newer), create the vector and pg_stat_statements extensions
(over NEXUSD_BOOTSTRAP_DATABASE_URL when set) and apply the embedded, versioned migrations of the
Dev-Nexus knowledge-base schema. Idempotent: a second run changes nothing. With the embedded
cluster, uses the running one or starts it for the duration of the command.")]
    Bootstrap,

    /// Load a Dev-Nexus JSON knowledge base (knowledge_base.json) into the database
    #[command(
        name = "import-json",
        long_about = "\
Load a Dev-Nexus JSON knowledge base — the knowledge_base.json the original GitHub Action wrote —
from a file, '-' (standard input) or an http(s) URL: repositories with their patterns, keywords,
decisions, reusable components, dependencies, deployment information, lessons and history.

Each repository is written in its own transaction; re-running the import changes nothing that is
already there. Records that cannot be stored (a repository name that is not owner/repo, a pattern
without a name, …) are skipped and listed with the reason. Exits 1 if any repository failed.
Pattern embeddings are not computed here: run `nexusd embed` afterwards."
    )]
    ImportJson {
        /// Path, '-' for standard input, or http(s) URL of knowledge_base.json
        source: String,
        /// Report what would be written without writing anything
        #[arg(long)]
        dry_run: bool,
    },

    /// Forward the skills API to a nexusd elsewhere (what Cloud Run runs)
    #[command(long_about = "\
Run as the reverse proxy in front of the VM: forward /, /health, /.well-known/agent.json,
/openapi.json and /a2a/* to NEXUSD_PROXY_UPSTREAM (e.g. http://10.8.0.2:8080 through the VPC
connector), passing the caller's Authorization through and adding X-Forwarded-For/-Proto/-Host.
CORS (CORS_ORIGINS, ALLOWED_ORIGIN_REGEX) is answered here; bodies over 1 MiB get 413; an
unreachable upstream gives a JSON 502, one slower than NEXUSD_PROXY_TIMEOUT seconds (60) a JSON
504. Listens on NEXUSD_API_ADDR, or 0.0.0.0:$PORT on Cloud Run. Needs no database.")]
    Proxy,

    /// Validate the configuration and check PostgreSQL; print what is wrong and how to fix it
    #[command(long_about = "\
Validate every configuration variable, then check that PostgreSQL is reachable, recent enough,
has pgvector and pg_stat_statements, and whether migrations are pending. Changes nothing. Prints
one line per check (ok / warn / FAIL, with the fix) and exits 1 if any check failed.")]
    Check,
}
