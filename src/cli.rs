//! The command line: one binary, one subcommand per job. Configuration comes from the
//! environment, not from flags, so the systemd unit and a shell agree: every command reads the
//! unit's environment file first (`--env-file`, default `/etc/nexusd/nexusd.env` when it
//! exists), then the process environment; `nexusd --help` lists every variable (the table is
//! made from each capability's list in `config.rs`).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "nexusd",
    version,
    about = "One daemon for a Dev-Nexus VM: PostgreSQL bootstrap, backups, metrics and the skills API",
    after_help = "Configuration comes from environment variables and /etc/nexusd/nexusd.env: `nexusd --help` lists them all."
)]
pub struct Cli {
    /// Read variables from this file first, as the systemd unit does (KEY=VALUE lines; the
    /// process environment wins). Default: /etc/nexusd/nexusd.env when it exists; /dev/null
    /// reads none
    #[arg(long, global = true, value_name = "PATH")]
    pub env_file: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: skills API, metrics, nightly backups, bootstrap, embedded cluster
    #[command(long_about = "\
Run the daemon until SIGTERM, SIGINT or SIGHUP.

The API listener (NEXUSD_API_ADDR) and the metrics listener (NEXUSD_METRICS_ADDR, /metrics in
the Prometheus text format) open at once; /health answers 503 until the database is
reachable and bootstrapped. Bootstrap (extensions + migrations) is retried with backoff, so nexusd
may start before PostgreSQL. With no database configured, nexusd initialises and supervises an
embedded cluster under NEXUSD_STATE_DIR (restarting it if it dies) and stops it on shutdown.
Under systemd (Type=notify) it reports READY, STATUS and watchdog pings.

SIGHUP is logged and stops nexusd in order, as SIGTERM does: it reads its configuration once and
reloads nothing (restart it to apply a change). If nexusd is killed without stopping (SIGKILL, a
crash), a guardian process stops the embedded PostgreSQL, so it never outlives nexusd.

Logs go to stderr: text, or NEXUSD_LOG_FORMAT=json (severity, message, time, the fields) for
Cloud Logging; when stderr is the journal (JOURNAL_STREAM), each line starts with its priority, so
`journalctl -p err` finds the errors. PostgreSQL's own lines are logged at their own levels.")]
    Serve,

    /// Create the extensions and apply the schema migrations, then exit
    #[command(long_about = "\
Check the server (PostgreSQL 13 or newer), create the vector and pg_stat_statements extensions
(over NEXUSD_BOOTSTRAP_DATABASE_URL when set) and apply the embedded, versioned migrations of the
Dev-Nexus knowledge-base schema. Idempotent: a second run changes nothing. With no database
configured, uses the embedded cluster under NEXUSD_STATE_DIR: the running one, or starts it for
the duration of the command, creating it on first use (only serve and bootstrap create one; the
other commands refuse to run without a database rather than use a new, empty one).")]
    Bootstrap,

    /// Show whether serve runs, the database, migrations, backups and the last errors
    #[command(long_about = "\
Report, without changing anything: whether a nexusd serve is running (the state directory's lock,
or the API answering on NEXUSD_API_ADDR) and its last errors from /health; whether the database
answers, its version, and the migrations applied against those this nexusd knows; the backup
store, the newest complete backup and its age, the last verification, incomplete objects; WAL
archiving (not configured: nexusd takes logical dumps). The embedded cluster is never started.
Exits 0 when everything is fine, 1 otherwise (each problem is listed). --json prints the same as
one JSON object (see the README's Backups section).")]
    Status {
        /// Print one JSON object instead of text
        #[arg(long)]
        json: bool,
    },

    /// Take, list, prune and verify backups
    Backup {
        #[command(subcommand)]
        action: BackupAction,
    },

    /// Restore a backup into a database, or the embedded cluster to a point in time (--target-time)
    #[command(long_about = "\
Download backup ID (or `latest`: the newest complete backup) from the store (GCS or the local
directory), check its SHA-256 and CRC32C against its manifest, and load it into a database: the
configured one by default, or --into NAME (created if missing). A database that already holds
tables is refused unless --force, which drops its tables, views, sequences and functions first.

Refused while a nexusd serve holds the state directory (its embedded cluster is the configured
database) or while other sessions are connected to the target database: the message names the
PIDs; stop serve (systemctl stop nexusd) or restore into another database with --into NAME
(--ignore-sessions loads under other sessions, but never under a serve holding the state
directory).
Afterwards the row counts of every table are compared with the manifest's, which were taken in
the dump's own snapshot; any difference exits 1. Progress on a terminal (download, check, load
with percent, rate and ETA; then indexes and constraints), one line per stage otherwise.

Point in time (--target-time '2026-12-03 14:05:00+00', --target-time latest, or --target-lsn
0/3000028): the newest physical base backup (`backup run --physical`) that finished before the
target is downloaded, checked against its manifest and unpacked into <state>/pg.restore-<stamp>;
PostgreSQL replays the archived WAL there (restore_command = nexusd wal-fetch) up to the target,
promotes, and is checked (no transaction after the target; for latest, every archived WAL file
replayed). Only then is the embedded cluster's data directory swapped: the old one stays as
<state>/pg.before-restore-<stamp> until you remove it. Refused while a nexusd serve holds the
state directory. For a server of your own, prints the exact steps instead (docs/pitr.md).")]
    Restore {
        /// Backup name as `nexusd backup list` shows it, or `latest`
        #[arg(required_unless_present_any = ["target_time", "target_lsn"], conflicts_with_all = ["target_time", "target_lsn"])]
        id: Option<String>,
        /// Restore the embedded cluster to this moment ('2026-12-03 14:05:00+00'), or `latest`
        /// (every archived WAL file), from a base backup and the archived WAL
        #[arg(long, value_name = "TIME", conflicts_with = "target_lsn")]
        target_time: Option<String>,
        /// Restore the embedded cluster to this WAL position (e.g. 0/3000028)
        #[arg(long, value_name = "LSN")]
        target_lsn: Option<String>,
        /// Restore into this database instead of the configured one
        #[arg(long)]
        into: Option<String>,
        /// Drop what the target database holds before restoring
        #[arg(long)]
        force: bool,
        /// Load even while other sessions are connected to the target database (they see it
        /// half-restored; a running serve is refused all the same)
        #[arg(long)]
        ignore_sessions: bool,
    },

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
Pattern embeddings are not computed here: run `nexusd embed` afterwards (a running `nexusd serve`
embeds them in the background within ten minutes)."
    )]
    ImportJson {
        /// Path, '-' for standard input, or http(s) URL of knowledge_base.json
        source: String,
        /// Report what would be written without writing anything
        #[arg(long)]
        dry_run: bool,
    },

    /// Compute pattern embeddings with the configured provider
    #[command(long_about = "\
Compute the embeddings of patterns that have none, with the configured provider
(NEXUSD_EMBEDDING_PROVIDER), in batches: each batch is embedded, then stored in its own
transaction, so an interrupted run keeps its work and the next run continues where it stopped.
Shows progress on a terminal, log lines otherwise, and a summary at the end.

Refused while the database holds embeddings made by another provider or model: vectors of
different models cannot be compared. --reembed replaces every embedding not made by the
configured model (searches by meaning are refused until it has finished; run it again after an
interruption). `nexusd serve` embeds new patterns by itself; this command is for bulk imports and
for switching providers.")]
    Embed {
        /// Recompute every embedding not made by the configured provider and model
        #[arg(long)]
        reembed: bool,
        /// Patterns per batch (one transaction each)
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=2000))]
        batch_size: u32,
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

    /// Archive one WAL file into the store (PostgreSQL's archive_command)
    #[command(
        name = "wal-push",
        long_about = "\
Archive one file PostgreSQL hands to archive_command (%p: a WAL segment, a .history, .backup or
.partial file) into the store's wal/ part as <name>.gz. Exits 0 only once the compressed file is
durably stored (local: written, fsynced, linked, directory fsynced; GCS: created with a \"does not
exist\" precondition and its size and CRC32C checked); any failure exits 1 and PostgreSQL retries.
A name archived already succeeds when the content is the same and fails (logged with both
SHA-256, and recorded in the store as a conflict) when it differs. Before the first push the
archive is marked with the cluster's system identifier; an archive of another cluster is refused.
Gives up after NEXUSD_WAL_PUSH_TIMEOUT seconds. The embedded cluster calls it by itself; see
docs/pitr.md for a server of your own (`nexusd check` prints the settings)."
    )]
    WalPush {
        /// The file to archive (%p), relative to the data directory
        path: PathBuf,
    },

    /// Fetch one archived WAL file (PostgreSQL's restore_command)
    #[command(
        name = "wal-fetch",
        long_about = "\
Fetch archived WAL file NAME (%f) from the store's wal/ part into PATH (%p), decompressed. Exits
1 when the archive does not hold it (recovery then ends there), 126 when the store cannot be read
(recovery stops rather than end early at the wrong point)."
    )]
    WalFetch {
        /// The file's name (%f)
        name: String,
        /// Where to write it (%p)
        path: PathBuf,
    },

    /// Validate the configuration and check PostgreSQL; print what is wrong and how to fix it
    #[command(long_about = "\
Validate every configuration variable, then check that PostgreSQL is reachable, recent enough,
has pgvector and pg_stat_statements, and whether migrations are pending, and that the embeddings
provider answers and matches the stored embeddings. Changes nothing. Prints
one line per check (ok / warn / FAIL, with the fix) and exits 1 if any check failed. --json
prints one object instead: {\"ok\": bool, \"failures\": N, \"checks\": [{\"level\": \"ok\" | \"warn\" |
\"fail\", \"message\": \"…\"}]}, the same findings in the same order.")]
    Check {
        /// Print one JSON object instead of a line per check
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum BackupAction {
    /// Take one backup now (the nightly job's code path), then apply retention
    #[command(long_about = "\
Dump the database with pg_dump (plain SQL by default, NEXUSD_BACKUP_FORMAT=custom for pg_dump's
custom archive), compressing it with gzip on all cores as it streams into the store
(NEXUSD_BACKUP_BUCKET=gs://bucket/prefix, or NEXUSD_BACKUP_DIR, default $NEXUSD_STATE_DIR/backups).
The object is kept only if pg_dump succeeded and the dump is complete; a manifest with sizes,
checksums and row counts is written last. Then old backups are pruned (see `backup prune`).
A database without the knowledge-base tables is refused (nothing worth a backup: check
DATABASE_URL or --env-file). Names are dev-nexus-YYYYmmdd_HHMMSS.sql.gz (UTC), with -2, -3, …
added when that name is taken. Progress on a terminal (bytes dumped, rate; percent and time
left against the previous backup's size), one line otherwise.
A plain backup restores with: gunzip < dev-nexus-….sql.gz | psql DBNAME

--physical takes a physical base backup instead (what NEXUSD_BASEBACKUP_SCHEDULE runs):
pg_basebackup -D - -Ft -X none through the same compression into the store's base/ part as
base-YYYYmmdd_HHMMSS.tar.gz, with a manifest (start and stop LSN, timeline, system identifier,
sizes, SHA-256, CRC32C) written only once the WAL file holding its stop point is archived. Needs
WAL archiving on (docs/pitr.md); `restore --target-time` starts from it.")]
    Run {
        /// A physical base backup (pg_basebackup) for point-in-time restores
        #[arg(long)]
        physical: bool,
    },
    /// List backups: name, time, size, duration, rows, verification; then the base backups
    #[command(long_about = "\
List the store's backups, newest first: name, time (UTC), compressed size, duration, rows and the
last verification; an object without a manifest is shown as incomplete (not a backup). The
physical base backups (base/) follow in a table of their own: name, stop time, size, start and
stop LSN, timeline.

--json prints one object: {\"store\": \"…\", \"backups\": [{\"name\", \"time\" (RFC 3339, UTC),
\"size_bytes\", \"duration_seconds\", \"rows\", \"complete\", \"verification\": null or {\"ok\",
\"verified_at\", \"problems\"}}], \"base_backups\": [{\"name\", \"time\", \"size_bytes\", \"complete\",
\"start_lsn\", \"stop_lsn\", \"timeline\", \"duration_seconds\"}], \"wal\": {\"newest_segment\",
\"newest_stored_at\", \"window_start\", \"window_end\", \"window_base\", \"first_missing_segment\",
\"missing_segments\", \"gap\", \"duplicate_conflicts\", \"dropped_segments\"}}; duration_seconds and
rows are null for incomplete objects. The WAL archive is checked for gaps since the oldest base
backup (docs/pitr.md): a gap is printed as an error line naming the first missing segment.")]
    List {
        /// Print one JSON object instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Apply retention: delete complete backups older than NEXUSD_BACKUP_RETENTION_DAYS, keeping the newest NEXUSD_BACKUP_MIN_KEEP
    #[command(long_about = "\
Delete complete backups older than NEXUSD_BACKUP_RETENTION_DAYS (30), always keeping the newest
NEXUSD_BACKUP_MIN_KEEP (3) good ones (complete and not failed by a verification), and remove
incomplete uploads and stray files older than a day. Ages come from the store's creation times;
if the store's clock and this machine's disagree by more than five minutes nothing is deleted.
At most NEXUSD_BACKUP_MAX_DELETIONS (10) backups go per run. Base backups (base/) follow the same
rules, and archived WAL before the start of the oldest base backup kept is deleted with them
(never a WAL file a kept base backup needs).")]
    Prune {
        /// Only print what would be deleted
        #[arg(long)]
        dry_run: bool,
    },
    /// Restore a backup (default: the newest) into a scratch database and check it against its manifest
    #[command(long_about = "\
Stream the backup back, check its SHA-256 and CRC32C against the manifest, restore it into a
scratch database (the role needs CREATEDB), compare every table's row count with the manifest's,
drop the scratch database, and record the result beside the backup (shown by `backup list`,
/health, get_backup_status and the metrics; a running serve picks it up within
NEXUSD_BACKUP_STATUS_REFRESH seconds). Exits 1 if the backup does not verify. Progress on a
terminal (download, check, load: percent, rate, ETA), one line per stage otherwise.

--physical checks the point-in-time side instead (docs/pitr.md): no gap in the archived WAL from
the start of the oldest base backup to the newest archived segment (timelines followed through
their .history files), then the newest base backup is restored with every archived WAL file into
a scratch data directory ($NEXUSD_STATE_DIR/pg.verify-…, on a private socket, removed afterwards
whatever happens) and its row counts are compared with a live count of the database (the WAL
holding that count archived first; a table written to meanwhile is noted, not compared), or the
newest dump's manifest when the database does not answer. Prints the recoverable window. Exits 1
on a gap, a failed recovery or a row count that differs.

--json prints one object: {\"ok\", \"base_backup\", \"window_start\", \"window_end\",
\"newest_segment\", \"first_missing_segment\", \"reached_lsn\", \"last_transaction\",
\"counts_from\", \"tables\", \"rows\", \"mismatches\", \"notes\", \"problems\",
\"duration_seconds\", \"verified_at\"} (with --physical; the dump's verification is printed as text).")]
    Verify {
        /// Backup name, or `latest` (the default: the newest complete backup)
        id: Option<String>,
        /// Verify the newest base backup with all archived WAL (point-in-time recovery)
        #[arg(long)]
        physical: bool,
        /// With --physical: print one JSON object instead of text
        #[arg(long, requires = "physical")]
        json: bool,
    },
}
