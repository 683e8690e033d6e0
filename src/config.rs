//! Configuration: every setting comes from the environment (systemd's `EnvironmentFile=`), is
//! parsed once into typed values, and a bad value names its variable and what was expected.
//!
//! The variables of the original Dev-Nexus server keep their meaning (`DATABASE_URL`,
//! `POSTGRES_*`, `KNOWLEDGE_BASE_REPO`, …); nexusd's own settings are `NEXUSD_*`. Secrets never
//! reach `Debug` output or logs: passwords are redacted in every rendering of a connection.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgSslMode};

/// Everything `nexusd` reads from its environment.
#[derive(Debug, Clone)]
pub struct Config {
    pub database: DatabaseConfig,
    pub api: ApiConfig,
    /// `NEXUSD_STATE_DIR`: the embedded cluster and local backups live here.
    pub state_dir: PathBuf,
    pub log: LogConfig,
    pub external: ExternalConfig,
    pub embedding: EmbeddingConfig,
    pub backup: BackupConfig,
    pub metrics: MetricsConfig,
    /// `KNOWLEDGE_BASE_REPO`: echoed in `/health` and the agent card, as the original did.
    pub knowledge_base_repo: String,
}

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

#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// `NEXUSD_API_ADDR` (default `0.0.0.0:8080`).
    pub addr: SocketAddr,
    /// `HOST_OVERRIDE`: the public base URL shown in the agent card (the Cloud Run URL when
    /// proxied); `http://localhost:<port>` otherwise, as the original did.
    pub public_url: String,
    pub cors: CorsConfig,
    pub auth: AuthConfig,
    /// `NEXUSD_PROTECTED_SKILLS`: skills that need credentials on top of the write skills.
    pub extra_protected: Vec<String>,
}

/// Services outside nexusd that some skills call.
#[derive(Debug, Clone)]
pub struct ExternalConfig {
    pub github: GitHubConfig,
    /// `ORCHESTRATOR_URL` (+ `ORCHESTRATOR_TOKEN`): the dependency-orchestrator agent.
    pub orchestrator: Option<AgentEndpoint>,
    /// `PATTERN_MINER_URL` (+ `PATTERN_MINER_TOKEN`): the pattern-miner agent.
    pub pattern_miner: Option<AgentEndpoint>,
}

/// The GitHub REST API, for the documentation and architecture skills.
#[derive(Clone)]
pub struct GitHubConfig {
    /// `GITHUB_TOKEN`: without it the GitHub skills answer "GITHUB_TOKEN not configured" and the
    /// architecture skills are not registered, as in the original.
    pub token: Option<String>,
    /// `NEXUSD_GITHUB_API_URL` (default `https://api.github.com`).
    pub api_url: String,
}

impl fmt::Debug for GitHubConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitHubConfig")
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .field("api_url", &self.api_url)
            .finish()
    }
}

/// Another A2A agent: its base URL and the bearer token nexusd sends it, if any.
#[derive(Clone)]
pub struct AgentEndpoint {
    pub url: String,
    pub token: Option<String>,
}

impl fmt::Debug for AgentEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentEndpoint")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

pub const DEFAULT_GITHUB_API_URL: &str = "https://api.github.com";

/// Which browser origins may call the API.
#[derive(Debug, Clone)]
pub struct CorsConfig {
    /// `CORS_ORIGINS`: exact origins, comma-separated.
    pub origins: Vec<String>,
    /// `ALLOWED_ORIGIN_REGEX`: origins matching it entirely are allowed too.
    pub origin_regex: Option<regex::Regex>,
}

/// Who may call the protected (write) skills.
#[derive(Clone)]
pub struct AuthConfig {
    /// `REQUIRE_AUTH_FOR_WRITE` (default true).
    pub required: bool,
    /// `NEXUSD_API_TOKENS`: static bearer tokens, for agents that are not on Google.
    pub api_tokens: Vec<String>,
    /// `NEXUSD_AUTH_AUDIENCE`: the `aud` a Google ID token must carry (unset: ID tokens refused).
    pub audience: Option<String>,
    /// `ALLOWED_SERVICE_ACCOUNTS`: the `email`s whose ID tokens are accepted (empty: none).
    pub allowed_accounts: Vec<String>,
    /// `NEXUSD_GOOGLE_CERTS_URL`: where Google's token signing keys (JWKS) come from.
    pub certs_url: String,
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("required", &self.required)
            .field(
                "api_tokens",
                &format_args!("[{} redacted]", self.api_tokens.len()),
            )
            .field("audience", &self.audience)
            .field("allowed_accounts", &self.allowed_accounts)
            .field("certs_url", &self.certs_url)
            .finish()
    }
}

/// The original's default `CORS_ORIGINS`.
pub const DEFAULT_CORS_ORIGINS: &str = "http://localhost:3000,http://localhost:5173,\
https://dev-nexus-frontend.vercel.app,\
https://dev-nexus-frontend-noig7bsv5-milan-patels-projects-187b35de.vercel.app";
pub const DEFAULT_GOOGLE_CERTS_URL: &str = "https://www.googleapis.com/oauth2/v3/certs";

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

/// One configuration problem: the variable, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {message}")]
pub struct ConfigError {
    pub var: &'static str,
    pub message: String,
}

/// Every problem found in one pass, so a user fixes them all at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

pub const DEFAULT_API_ADDR: &str = "0.0.0.0:8080";
pub const DEFAULT_METRICS_ADDR: &str = "0.0.0.0:9187";
/// postgres_exporter's default for its pg_stat_statements collector.
pub const DEFAULT_STATEMENTS_LIMIT: u32 = 100;
/// What the `query` label of `pg_stat_statements_query_id` is cut to (postgres_exporter's default).
pub const STATEMENT_TEXT_LENGTH: usize = 120;
/// `info`, without sqlx's per-statement notices ("… does not exist, skipping").
pub const DEFAULT_LOG_FILTER: &str = "info,sqlx=warn";
const DEFAULT_PG_HOST: &str = "localhost";
const DEFAULT_PG_PORT: u16 = 5432;
const DEFAULT_PG_DB: &str = "devnexus";
const DEFAULT_PG_USER: &str = "devnexus";

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigErrors> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads configuration through `lookup` (the environment in production, a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigErrors> {
        let mut env = Env {
            lookup: &lookup,
            errors: Vec::new(),
        };
        let database = database_config(&mut env);
        // Cloud Run tells the container its port in PORT; NEXUSD_API_ADDR wins when both are set.
        let default_addr = match env.get("PORT") {
            Some(port) => format!("0.0.0.0:{port}"),
            None => DEFAULT_API_ADDR.to_string(),
        };
        let addr = env.parse_or(
            "NEXUSD_API_ADDR",
            &default_addr,
            "a listen address host:port, e.g. 0.0.0.0:8080 or 127.0.0.1:8080",
        );
        let api = addr.map(|addr| api_config(&mut env, addr));
        let state_dir = env
            .get("NEXUSD_STATE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(default_state_dir);
        let state_dir = absolute(&state_dir);
        let log = log_config(&mut env);
        let external = external_config(&mut env);
        let embedding = embedding_config(&mut env);
        let backup = backup_config(&mut env, &state_dir);
        let metrics = metrics_config(&mut env);
        let knowledge_base_repo = env.get("KNOWLEDGE_BASE_REPO").unwrap_or_default();

        match (env.errors.is_empty(), database, api) {
            (true, Some(database), Some(api)) => Ok(Config {
                database,
                api,
                state_dir,
                log,
                external,
                embedding,
                backup,
                metrics,
                knowledge_base_repo,
            }),
            _ => Err(ConfigErrors(env.errors)),
        }
    }
}

/// Reads variables, trimming them and treating empty values as unset, and collects errors.
struct Env<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    errors: Vec<ConfigError>,
}

impl Env<'_> {
    fn get(&self, var: &str) -> Option<String> {
        (self.lookup)(var)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    fn error(&mut self, var: &'static str, message: impl Into<String>) {
        self.errors.push(ConfigError {
            var,
            message: message.into(),
        });
    }

    /// Parses `var` (or `default` when unset); on failure records "expected …" and returns None.
    fn parse_or<T: FromStr>(
        &mut self,
        var: &'static str,
        default: &str,
        expected: &str,
    ) -> Option<T> {
        let raw = self.get(var);
        let value = raw.as_deref().unwrap_or(default);
        match value.parse() {
            Ok(v) => Some(v),
            Err(_) => {
                self.error(var, format!("{value:?} is not valid: expected {expected}"));
                None
            }
        }
    }

    /// A comma-separated list, entries trimmed, empty entries dropped.
    fn list(&self, var: &str) -> Option<Vec<String>> {
        self.get(var).map(|v| split_list(&v))
    }

    /// An http(s) URL without a trailing slash.
    fn url(&mut self, var: &'static str) -> Option<String> {
        let raw = self.get(var)?;
        match url::Url::parse(&raw) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => {
                Some(raw.trim_end_matches('/').to_string())
            }
            _ => {
                self.error(
                    var,
                    format!("{raw:?} is not valid: expected an http:// or https:// URL"),
                );
                None
            }
        }
    }

    fn bool(&mut self, var: &'static str) -> Option<bool> {
        let raw = self.get(var)?;
        match parse_bool(&raw) {
            Some(b) => Some(b),
            None => {
                self.error(var, format!("{raw:?} is not valid: expected true or false"));
                None
            }
        }
    }
}

/// Nightly backups: where they go, when, how long they are kept.
#[derive(Debug, Clone)]
pub struct BackupConfig {
    pub destination: BackupDestination,
    /// `NEXUSD_GCS_ENDPOINT`: a storage endpoint to use instead of Google's (emulators); requests
    /// are then sent without credentials.
    pub gcs_endpoint: Option<String>,
    /// `NEXUSD_BACKUP_SCHEDULE` (seconds-first cron, UTC; default `0 0 2 * * *`); `off`: none.
    pub schedule: Option<String>,
    /// `NEXUSD_BACKUP_VERIFY_SCHEDULE` (default `0 0 4 * * Sun`: weekly); `off`: none.
    pub verify_schedule: Option<String>,
    /// `NEXUSD_BACKUP_RETENTION_DAYS` (30).
    pub retention_days: u32,
    /// `NEXUSD_BACKUP_MIN_KEEP` (3): complete backups kept whatever their age.
    pub min_keep: u32,
    /// `NEXUSD_BACKUP_MAX_DELETIONS` (10): more in one prune means something is off.
    pub max_deletions: u32,
    /// `NEXUSD_BACKUP_FORMAT`: `plain` (default, restorable with gunzip | psql) or `custom`.
    pub format: DumpFormat,
    /// `NEXUSD_BACKUP_GZIP_LEVEL` (3; 1-9).
    pub gzip_level: u32,
    /// `NEXUSD_BACKUP_TIMEOUT` seconds (7200): a backup running longer is aborted.
    pub timeout: std::time::Duration,
    /// `NEXUSD_BACKUP_RETRY_SECONDS` (120): how long storage requests are retried.
    pub retry_time_limit: std::time::Duration,
}

/// Where backups are stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupDestination {
    /// `NEXUSD_BACKUP_BUCKET=gs://bucket[/prefix]`.
    Gcs { bucket: String, prefix: String },
    /// `NEXUSD_BACKUP_DIR` (default `$NEXUSD_STATE_DIR/backups`).
    Local { dir: PathBuf },
}

impl BackupDestination {
    /// `gs://bucket/prefix/` or the directory, for messages.
    pub fn describe(&self) -> String {
        match self {
            BackupDestination::Gcs { bucket, prefix } => format!("gs://{bucket}/{prefix}"),
            BackupDestination::Local { dir } => dir.display().to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DumpFormat {
    /// `pg_dump -Fp`: plain SQL.
    Plain,
    /// `pg_dump -Fc -Z0`: the custom archive, compressed by nexusd.
    Custom,
}

pub const DEFAULT_BACKUP_SCHEDULE: &str = "0 0 2 * * *";
pub const DEFAULT_VERIFY_SCHEDULE: &str = "0 0 4 * * Sun";

/// Parses `gs://bucket[/prefix]`; the prefix gets a trailing slash.
fn parse_bucket(value: &str) -> Result<(String, String), String> {
    let rest = value
        .strip_prefix("gs://")
        .ok_or_else(|| "expected gs://bucket or gs://bucket/prefix".to_string())?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let valid = (3..=63).contains(&bucket.len())
        && bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
        && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
        && bucket.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !valid {
        return Err(format!(
            "{bucket:?} is not a bucket name: 3-63 lowercase letters, digits, '-', '_' or '.'"
        ));
    }
    let prefix = prefix.trim_matches('/');
    let prefix = if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}/")
    };
    Ok((bucket.to_string(), prefix))
}

/// Validates a seconds-first cron expression the way the scheduler will parse it.
fn valid_cron(expression: &str) -> bool {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(expression)
        .is_ok()
}

fn backup_config(env: &mut Env<'_>, state_dir: &Path) -> BackupConfig {
    let destination = match env.get("NEXUSD_BACKUP_BUCKET") {
        Some(bucket) => match parse_bucket(&bucket) {
            Ok((bucket, prefix)) => BackupDestination::Gcs { bucket, prefix },
            Err(why) => {
                env.error(
                    "NEXUSD_BACKUP_BUCKET",
                    format!("{bucket:?} is not valid: {why}"),
                );
                BackupDestination::Local {
                    dir: state_dir.join("backups"),
                }
            }
        },
        None => BackupDestination::Local {
            dir: env
                .get("NEXUSD_BACKUP_DIR")
                .map(|d| absolute(Path::new(&d)))
                .unwrap_or_else(|| state_dir.join("backups")),
        },
    };
    let mut schedule = |var: &'static str, default: &str| -> Option<String> {
        let value = env.get(var).unwrap_or_else(|| default.to_string());
        if value.eq_ignore_ascii_case("off") {
            return None;
        }
        if !valid_cron(&value) {
            env.error(
                var,
                format!(
                    "{value:?} is not a valid schedule: expected a cron expression with seconds first \
                     (sec min hour day-of-month month day-of-week), e.g. \"0 0 2 * * *\" for 02:00 UTC daily, or off"
                ),
            );
            return None;
        }
        Some(value)
    };
    let backup_schedule = schedule("NEXUSD_BACKUP_SCHEDULE", DEFAULT_BACKUP_SCHEDULE);
    let verify_schedule = schedule("NEXUSD_BACKUP_VERIFY_SCHEDULE", DEFAULT_VERIFY_SCHEDULE);
    let mut bounded = |var: &'static str, default: u32, lo: u32, hi: u32, what: &str| -> u32 {
        match env.parse_or::<u32>(var, &default.to_string(), what) {
            Some(v) if (lo..=hi).contains(&v) => v,
            Some(v) => {
                env.error(var, format!("{v} is out of range: expected {what}"));
                default
            }
            None => default,
        }
    };
    let retention_days = bounded(
        "NEXUSD_BACKUP_RETENTION_DAYS",
        30,
        1,
        36500,
        "a number of days, 1 or more",
    );
    let min_keep = bounded("NEXUSD_BACKUP_MIN_KEEP", 3, 1, 1000, "a count, 1 or more");
    let max_deletions = bounded(
        "NEXUSD_BACKUP_MAX_DELETIONS",
        10,
        1,
        10000,
        "a count, 1 or more",
    );
    let gzip_level = bounded(
        "NEXUSD_BACKUP_GZIP_LEVEL",
        3,
        1,
        9,
        "1 (fastest) to 9 (smallest)",
    );
    let timeout = bounded(
        "NEXUSD_BACKUP_TIMEOUT",
        7200,
        10,
        7 * 86400,
        "a number of seconds, 10 or more",
    );
    let retry = bounded(
        "NEXUSD_BACKUP_RETRY_SECONDS",
        120,
        1,
        3600,
        "a number of seconds, 1 to 3600",
    );
    let format = match env
        .get("NEXUSD_BACKUP_FORMAT")
        .as_deref()
        .map(str::to_ascii_lowercase)
    {
        None => DumpFormat::Plain,
        Some(f) if f == "plain" => DumpFormat::Plain,
        Some(f) if f == "custom" => DumpFormat::Custom,
        Some(other) => {
            env.error(
                "NEXUSD_BACKUP_FORMAT",
                format!("{other:?} is not valid: expected plain or custom"),
            );
            DumpFormat::Plain
        }
    };
    BackupConfig {
        destination,
        gcs_endpoint: env.url("NEXUSD_GCS_ENDPOINT"),
        schedule: backup_schedule,
        verify_schedule,
        retention_days,
        min_keep,
        max_deletions,
        format,
        gzip_level,
        timeout: std::time::Duration::from_secs(timeout.into()),
        retry_time_limit: std::time::Duration::from_secs(retry.into()),
    }
}

/// `nexusd proxy`: where to forward and how long to wait.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// `NEXUSD_PROXY_UPSTREAM` (required): the VM's nexusd, e.g. `http://10.8.0.2:8080`.
    pub upstream: String,
    /// `NEXUSD_PROXY_TIMEOUT` seconds (default 60): a slower upstream answer becomes a 504.
    pub timeout: std::time::Duration,
}

impl ProxyConfig {
    pub fn from_env() -> Result<Self, ConfigErrors> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigErrors> {
        let mut env = Env {
            lookup: &lookup,
            errors: Vec::new(),
        };
        let present = env.get("NEXUSD_PROXY_UPSTREAM").is_some();
        let upstream = env.url("NEXUSD_PROXY_UPSTREAM");
        if !present {
            env.error(
                "NEXUSD_PROXY_UPSTREAM",
                "is not set: `nexusd proxy` needs the URL of the nexusd it fronts, e.g. http://10.8.0.2:8080",
            );
        }
        let timeout: Option<u64> = env.parse_or(
            "NEXUSD_PROXY_TIMEOUT",
            "60",
            "a number of seconds, 1 to 3600",
        );
        if timeout.is_some_and(|t| !(1..=3600).contains(&t)) {
            env.error(
                "NEXUSD_PROXY_TIMEOUT",
                "expected a number of seconds, 1 to 3600",
            );
        }
        match (env.errors.is_empty(), upstream, timeout) {
            (true, Some(upstream), Some(timeout)) => Ok(ProxyConfig {
                upstream,
                timeout: std::time::Duration::from_secs(timeout),
            }),
            _ => Err(ConfigErrors(env.errors)),
        }
    }
}

/// Splits a comma-separated value, trimming entries and dropping empty ones.
pub fn split_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn api_config(env: &mut Env<'_>, addr: SocketAddr) -> ApiConfig {
    let public_url = env
        .url("HOST_OVERRIDE")
        .unwrap_or_else(|| format!("http://localhost:{}", addr.port()));
    let origins = env
        .list("CORS_ORIGINS")
        .unwrap_or_else(|| split_list(DEFAULT_CORS_ORIGINS));
    let origin_regex = env.get("ALLOWED_ORIGIN_REGEX").and_then(|raw| {
        // Anchored: an origin must match as a whole, as Starlette's allow_origin_regex does.
        match regex::Regex::new(&format!("^(?:{raw})$")) {
            Ok(re) => Some(re),
            Err(e) => {
                env.error(
                    "ALLOWED_ORIGIN_REGEX",
                    format!("{raw:?} is not a valid regular expression ({e})"),
                );
                None
            }
        }
    });
    let auth = AuthConfig {
        required: env.bool("REQUIRE_AUTH_FOR_WRITE").unwrap_or(true),
        api_tokens: env.list("NEXUSD_API_TOKENS").unwrap_or_default(),
        audience: env.get("NEXUSD_AUTH_AUDIENCE"),
        allowed_accounts: env.list("ALLOWED_SERVICE_ACCOUNTS").unwrap_or_default(),
        certs_url: env
            .url("NEXUSD_GOOGLE_CERTS_URL")
            .unwrap_or_else(|| DEFAULT_GOOGLE_CERTS_URL.to_string()),
    };
    if auth.api_tokens.iter().any(|t| t.len() < 16) {
        env.error(
            "NEXUSD_API_TOKENS",
            "holds a token shorter than 16 characters: use long random tokens (e.g. openssl rand -hex 32)",
        );
    }
    ApiConfig {
        addr,
        public_url,
        cors: CorsConfig {
            origins,
            origin_regex,
        },
        auth,
        extra_protected: env.list("NEXUSD_PROTECTED_SKILLS").unwrap_or_default(),
    }
}

fn external_config(env: &mut Env<'_>) -> ExternalConfig {
    let mut agent = |url_var: &'static str, token_var: &'static str| {
        env.url(url_var).map(|url| AgentEndpoint {
            url,
            token: env.get(token_var),
        })
    };
    let orchestrator = agent("ORCHESTRATOR_URL", "ORCHESTRATOR_TOKEN");
    let pattern_miner = agent("PATTERN_MINER_URL", "PATTERN_MINER_TOKEN");
    ExternalConfig {
        github: GitHubConfig {
            token: env.get("GITHUB_TOKEN"),
            api_url: env
                .url("NEXUSD_GITHUB_API_URL")
                .unwrap_or_else(|| DEFAULT_GITHUB_API_URL.to_string()),
        },
        orchestrator,
        pattern_miner,
    }
}

/// How pattern embeddings are made and searched (`search` in skills-api.md).
#[derive(Clone)]
pub struct EmbeddingConfig {
    /// `NEXUSD_EMBEDDING_PROVIDER`: `openai` when `OPENAI_API_KEY` is set, else `builtin`.
    pub provider: EmbeddingProvider,
    /// `NEXUSD_EMBEDDING_URL`: base URL of an OpenAI-compatible API (`…/v1`).
    pub url: String,
    /// `NEXUSD_EMBEDDING_MODEL` (default `text-embedding-3-small`).
    pub model: String,
    /// `OPENAI_API_KEY`: sent as a bearer token; never logged.
    pub api_key: Option<String>,
    /// `NEXUSD_EMBEDDING_TIMEOUT` seconds (30): one embeddings request, before retries.
    pub timeout: std::time::Duration,
    /// `NEXUSD_EMBEDDING_BACKFILL` (true): `nexusd serve` embeds patterns that have no embedding.
    pub backfill: bool,
    /// `NEXUSD_SEARCH_EF_SEARCH` (100): `hnsw.ef_search`, the HNSW candidate list per query.
    pub ef_search: u32,
}

impl fmt::Debug for EmbeddingConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddingConfig")
            .field("provider", &self.provider)
            .field("url", &self.url)
            .field("model", &self.model)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("timeout", &self.timeout)
            .field("backfill", &self.backfill)
            .field("ef_search", &self.ef_search)
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbeddingProvider {
    /// An OpenAI-compatible `/v1/embeddings` endpoint.
    OpenAi,
    /// nexusd's own local, deterministic embedder.
    Builtin,
    /// Embeddings off: free-text search is full-text only.
    None,
}

impl EmbeddingProvider {
    pub fn name(self) -> &'static str {
        match self {
            EmbeddingProvider::OpenAi => "openai",
            EmbeddingProvider::Builtin => "builtin",
            EmbeddingProvider::None => "none",
        }
    }
}

pub const DEFAULT_EMBEDDING_URL: &str = "https://api.openai.com/v1";
pub const DEFAULT_EMBEDDING_MODEL: &str = "text-embedding-3-small";

fn embedding_config(env: &mut Env<'_>) -> EmbeddingConfig {
    let api_key = env.get("OPENAI_API_KEY");
    let provider = match env
        .get("NEXUSD_EMBEDDING_PROVIDER")
        .map(|p| p.to_ascii_lowercase())
        .as_deref()
    {
        None if api_key.is_some() => EmbeddingProvider::OpenAi,
        None => EmbeddingProvider::Builtin,
        Some("openai") => EmbeddingProvider::OpenAi,
        Some("builtin") => EmbeddingProvider::Builtin,
        Some("none" | "off") => EmbeddingProvider::None,
        Some(other) => {
            env.error(
                "NEXUSD_EMBEDDING_PROVIDER",
                format!("{other:?} is not valid: expected openai, builtin or none"),
            );
            EmbeddingProvider::None
        }
    };
    let url = env
        .url("NEXUSD_EMBEDDING_URL")
        .unwrap_or_else(|| DEFAULT_EMBEDDING_URL.to_string());
    // OpenAI itself needs a key; a local OpenAI-compatible server (Ollama, vLLM, …) may not.
    if provider == EmbeddingProvider::OpenAi && api_key.is_none() && url == DEFAULT_EMBEDDING_URL {
        env.error(
            "OPENAI_API_KEY",
            "is not set, but NEXUSD_EMBEDDING_PROVIDER is openai with OpenAI's API: set the key, point \
             NEXUSD_EMBEDDING_URL at another OpenAI-compatible server, or use NEXUSD_EMBEDDING_PROVIDER=builtin",
        );
    }
    let model = env
        .get("NEXUSD_EMBEDDING_MODEL")
        .unwrap_or_else(|| DEFAULT_EMBEDDING_MODEL.to_string());
    let timeout: u64 = match env.parse_or(
        "NEXUSD_EMBEDDING_TIMEOUT",
        "30",
        "a number of seconds, 1 to 600",
    ) {
        Some(t) if (1..=600).contains(&t) => t,
        Some(t) => {
            env.error(
                "NEXUSD_EMBEDDING_TIMEOUT",
                format!("{t} is out of range: expected a number of seconds, 1 to 600"),
            );
            30
        }
        None => 30,
    };
    let ef_search: u32 = match env.parse_or(
        "NEXUSD_SEARCH_EF_SEARCH",
        "100",
        "a whole number, 10 to 1000",
    ) {
        Some(n) if (10..=1000).contains(&n) => n,
        Some(n) => {
            env.error(
                "NEXUSD_SEARCH_EF_SEARCH",
                format!("{n} is out of range: expected a whole number, 10 to 1000"),
            );
            100
        }
        None => 100,
    };
    EmbeddingConfig {
        provider,
        url,
        model,
        api_key,
        timeout: std::time::Duration::from_secs(timeout),
        backfill: env.bool("NEXUSD_EMBEDDING_BACKFILL").unwrap_or(true),
        ef_search,
    }
}

/// `true/false`, `1/0`, `yes/no`, `on/off`, in any case.
pub fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
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

/// The `/metrics` listener and what it exports.
#[derive(Debug, Clone)]
pub struct MetricsConfig {
    /// `NEXUSD_METRICS_ADDR` (default `0.0.0.0:9187`); `None` when set to `off`.
    pub addr: Option<SocketAddr>,
    /// `NEXUSD_METRICS_STATEMENTS_LIMIT`: how many pg_stat_statements entries (top by total
    /// execution time) are exported; 0 turns the collector off.
    pub statements_limit: u32,
    /// `NEXUSD_METRICS_STATEMENTS_QUERY_TEXT`: also export `pg_stat_statements_query_id` with
    /// the statement text (cut to 120 characters). Off by default: texts can hold literals.
    pub statements_query_text: bool,
}

fn metrics_config(env: &mut Env<'_>) -> MetricsConfig {
    let addr = match env.get("NEXUSD_METRICS_ADDR") {
        Some(v) if v.eq_ignore_ascii_case("off") => None,
        _ => env.parse_or(
            "NEXUSD_METRICS_ADDR",
            DEFAULT_METRICS_ADDR,
            "a listen address host:port, e.g. 0.0.0.0:9187 or 127.0.0.1:9187, or off",
        ),
    };
    let statements_limit = env
        .parse_or(
            "NEXUSD_METRICS_STATEMENTS_LIMIT",
            &DEFAULT_STATEMENTS_LIMIT.to_string(),
            "a number of statements, 0 to turn the pg_stat_statements metrics off",
        )
        .unwrap_or(DEFAULT_STATEMENTS_LIMIT);
    let statements_query_text = env
        .bool("NEXUSD_METRICS_STATEMENTS_QUERY_TEXT")
        .unwrap_or(false);
    MetricsConfig {
        addr,
        statements_limit,
        statements_query_text,
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

/// `/var/lib/nexusd` for root (the systemd unit's `StateDirectory=`), `./.nexusd` otherwise.
fn default_state_dir() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        PathBuf::from("/var/lib/nexusd")
    } else {
        PathBuf::from(".nexusd")
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// A URL with its password replaced by `***`; something unparseable is not echoed at all.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                // Cannot fail for URLs that already carry a password.
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "<unparseable URL>".to_string(),
    }
}

fn redact_text(text: &str, secret: Option<&str>) -> String {
    match secret {
        Some(s) if !s.is_empty() => text.replace(s, "***"),
        _ => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(vars: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    fn error_vars(vars: &[(&str, &str)]) -> Vec<&'static str> {
        parse(vars).unwrap_err().0.iter().map(|e| e.var).collect()
    }

    #[test]
    fn no_configuration_means_embedded_cluster_and_defaults() {
        let config = parse(&[]).unwrap();
        assert!(matches!(config.database.target, DatabaseTarget::Embedded));
        assert_eq!(config.api.addr.to_string(), "0.0.0.0:8080");
        assert_eq!(config.database.min_connections, 0);
        assert_eq!(config.database.max_connections, 10);
        assert_eq!(config.log.format, LogFormat::Text);
        assert_eq!(config.log.filter, DEFAULT_LOG_FILTER);
        assert!(config.state_dir.is_absolute());
    }

    #[test]
    fn metrics_listener_and_statement_options() {
        let config = parse(&[]).unwrap();
        assert_eq!(
            config.metrics.addr.map(|a| a.to_string()).as_deref(),
            Some(DEFAULT_METRICS_ADDR)
        );
        assert_eq!(config.metrics.statements_limit, 100);
        assert!(!config.metrics.statements_query_text);

        let config = parse(&[
            ("NEXUSD_METRICS_ADDR", "off"),
            ("NEXUSD_METRICS_STATEMENTS_LIMIT", "0"),
            ("NEXUSD_METRICS_STATEMENTS_QUERY_TEXT", "yes"),
        ])
        .unwrap();
        assert!(config.metrics.addr.is_none());
        assert_eq!(config.metrics.statements_limit, 0);
        assert!(config.metrics.statements_query_text);

        assert_eq!(
            error_vars(&[
                ("NEXUSD_METRICS_ADDR", "9187"),
                ("NEXUSD_METRICS_STATEMENTS_LIMIT", "-1"),
            ]),
            ["NEXUSD_METRICS_ADDR", "NEXUSD_METRICS_STATEMENTS_LIMIT"]
        );
    }

    #[test]
    fn database_url_is_used_and_password_never_shown() {
        let config = parse(&[(
            "DATABASE_URL",
            "postgresql://app:s3cret@db.internal:6543/kb",
        )])
        .unwrap();
        let DatabaseTarget::External(url) = &config.database.target else {
            panic!("expected an external database");
        };
        assert_eq!(url.options.get_host(), "db.internal");
        assert_eq!(url.options.get_port(), 6543);
        assert_eq!(url.options.get_database(), Some("kb"));
        assert_eq!(url.redacted(), "postgresql://app:***@db.internal:6543/kb");
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("s3cret"),
            "password leaked into Debug: {debug}"
        );
    }

    #[test]
    fn postgres_password_completes_a_database_url_without_one() {
        let config = parse(&[
            (
                "DATABASE_URL",
                "postgresql://devnexus@10.8.0.2:5432/devnexus",
            ),
            ("POSTGRES_PASSWORD", "pw-from-secret"),
        ])
        .unwrap();
        let DatabaseTarget::External(url) = &config.database.target else {
            panic!("expected an external database");
        };
        assert_eq!(url.source, "DATABASE_URL + POSTGRES_PASSWORD");
        assert!(!format!("{config:?}").contains("pw-from-secret"));
    }

    #[test]
    fn postgres_vars_use_the_originals_defaults() {
        let config = parse(&[("USE_POSTGRESQL", "true"), ("POSTGRES_PASSWORD", "pw")]).unwrap();
        let DatabaseTarget::External(url) = &config.database.target else {
            panic!("expected an external database");
        };
        assert_eq!(url.options.get_host(), "localhost");
        assert_eq!(url.options.get_port(), 5432);
        assert_eq!(url.options.get_database(), Some("devnexus"));
        assert_eq!(url.options.get_username(), "devnexus");
        assert_eq!(
            url.redacted(),
            "postgresql://devnexus:***@localhost:5432/devnexus"
        );
        assert!(matches!(url.options.get_ssl_mode(), PgSslMode::Disable));
    }

    #[test]
    fn sslmode_spellings_of_the_original() {
        let mode = |vars: &[(&str, &str)]| {
            let mut all = vec![("POSTGRES_HOST", "db")];
            all.extend_from_slice(vars);
            match parse(&all).unwrap().database.target {
                DatabaseTarget::External(u) => u.options.get_ssl_mode(),
                DatabaseTarget::Embedded => panic!("expected external"),
            }
        };
        assert!(matches!(
            mode(&[("POSTGRES_SSLMODE", "true")]),
            PgSslMode::VerifyFull
        ));
        assert!(matches!(
            mode(&[
                ("POSTGRES_SSLMODE", "require"),
                ("POSTGRES_SSL_NO_VERIFY", "yes")
            ]),
            PgSslMode::Require
        ));
        assert!(matches!(
            mode(&[("POSTGRES_SSLMODE", "0")]),
            PgSslMode::Disable
        ));
        assert_eq!(
            error_vars(&[("POSTGRES_HOST", "db"), ("POSTGRES_SSLMODE", "maybe")]),
            ["POSTGRES_SSLMODE"]
        );
    }

    #[test]
    fn use_postgresql_false_is_refused_with_the_reason() {
        let errors = parse(&[("USE_POSTGRESQL", "false")]).unwrap_err();
        assert_eq!(errors.0.len(), 1);
        assert_eq!(errors.0[0].var, "USE_POSTGRESQL");
        assert!(
            errors.0[0]
                .message
                .contains("unset USE_POSTGRESQL or set it to true")
        );
        assert_eq!(
            error_vars(&[("USE_POSTGRESQL", "perhaps")]),
            ["USE_POSTGRESQL"]
        );
    }

    #[test]
    fn bad_values_name_their_variable_and_all_are_reported() {
        let errors = parse(&[
            ("NEXUSD_API_ADDR", "localhost"),
            ("POSTGRES_MAX_CONNECTIONS", "many"),
            ("NEXUSD_LOG_FORMAT", "xml"),
            ("NEXUSD_LOG", "info,[[["),
        ])
        .unwrap_err();
        let vars: Vec<_> = errors.0.iter().map(|e| e.var).collect();
        assert_eq!(
            vars,
            [
                "POSTGRES_MAX_CONNECTIONS",
                "NEXUSD_API_ADDR",
                "NEXUSD_LOG",
                "NEXUSD_LOG_FORMAT"
            ]
        );
        let api = &errors.0[1];
        assert!(api.message.contains("\"localhost\"") && api.message.contains("host:port"));
        // One line, every problem, variable first.
        let line = errors.to_string();
        assert!(!line.contains('\n'));
        assert!(line.starts_with("POSTGRES_MAX_CONNECTIONS: "));
    }

    #[test]
    fn pool_bounds_are_checked() {
        assert_eq!(
            error_vars(&[("POSTGRES_MAX_CONNECTIONS", "0")]),
            ["POSTGRES_MAX_CONNECTIONS"]
        );
        assert_eq!(
            error_vars(&[
                ("POSTGRES_MIN_CONNECTIONS", "5"),
                ("POSTGRES_MAX_CONNECTIONS", "2")
            ]),
            ["POSTGRES_MIN_CONNECTIONS"]
        );
        assert_eq!(error_vars(&[("POSTGRES_PORT", "70000")]), ["POSTGRES_PORT"]);
    }

    #[test]
    fn bad_database_url_is_reported_without_its_password() {
        let errors = parse(&[("DATABASE_URL", "mysql://root:hunter2@db/x")]).unwrap_err();
        assert_eq!(errors.0[0].var, "DATABASE_URL");
        assert!(!errors.to_string().contains("hunter2"));
        assert!(errors.to_string().contains("expected postgresql://"));
        let errors = parse(&[("NEXUSD_BOOTSTRAP_DATABASE_URL", "not a url")]).unwrap_err();
        assert_eq!(errors.0[0].var, "NEXUSD_BOOTSTRAP_DATABASE_URL");
    }

    #[test]
    fn empty_values_count_as_unset() {
        let config = parse(&[("DATABASE_URL", "  "), ("NEXUSD_API_ADDR", "")]).unwrap();
        assert!(matches!(config.database.target, DatabaseTarget::Embedded));
        assert_eq!(config.api.addr.to_string(), DEFAULT_API_ADDR);
    }

    #[test]
    fn api_settings_and_their_defaults() {
        let config = parse(&[]).unwrap();
        assert!(
            config.api.auth.required,
            "writes need credentials unless switched off"
        );
        assert!(config.api.auth.allowed_accounts.is_empty());
        assert_eq!(config.api.auth.certs_url, DEFAULT_GOOGLE_CERTS_URL);
        assert_eq!(config.api.public_url, "http://localhost:8080");
        assert_eq!(config.api.cors.origins.len(), 4);
        assert!(config.api.cors.origin_regex.is_none());

        let config = parse(&[
            ("REQUIRE_AUTH_FOR_WRITE", "false"),
            (
                "ALLOWED_SERVICE_ACCOUNTS",
                " a@x.iam.gserviceaccount.com, ,b@y.com ",
            ),
            (
                "NEXUSD_API_TOKENS",
                "0123456789abcdef0123,fedcba9876543210fedc",
            ),
            ("CORS_ORIGINS", "https://app.example.com"),
            ("ALLOWED_ORIGIN_REGEX", r"https://.*\.example\.org"),
            ("HOST_OVERRIDE", "https://agent.example.com/"),
        ])
        .unwrap();
        assert!(!config.api.auth.required);
        assert_eq!(
            config.api.auth.allowed_accounts,
            ["a@x.iam.gserviceaccount.com", "b@y.com"]
        );
        assert_eq!(config.api.cors.origins, ["https://app.example.com"]);
        let re = config.api.cors.origin_regex.as_ref().unwrap();
        assert!(re.is_match("https://a.example.org"));
        assert!(
            !re.is_match("https://a.example.org.evil.com"),
            "the regex must match whole origins"
        );
        assert_eq!(config.api.public_url, "https://agent.example.com");
        assert!(
            !format!("{config:?}").contains("0123456789abcdef0123"),
            "token leaked into Debug"
        );
    }

    #[test]
    fn bad_api_settings_are_named() {
        assert_eq!(
            error_vars(&[("ALLOWED_ORIGIN_REGEX", "(")]),
            ["ALLOWED_ORIGIN_REGEX"]
        );
        assert_eq!(
            error_vars(&[("NEXUSD_API_TOKENS", "short")]),
            ["NEXUSD_API_TOKENS"]
        );
        assert_eq!(
            error_vars(&[("NEXUSD_GOOGLE_CERTS_URL", "ftp://x")]),
            ["NEXUSD_GOOGLE_CERTS_URL"]
        );
        assert_eq!(
            error_vars(&[("REQUIRE_AUTH_FOR_WRITE", "sometimes")]),
            ["REQUIRE_AUTH_FOR_WRITE"]
        );
    }

    #[test]
    fn cloud_runs_port_sets_the_listener_unless_overridden() {
        assert_eq!(
            parse(&[("PORT", "9090")]).unwrap().api.addr.to_string(),
            "0.0.0.0:9090"
        );
        let both = parse(&[("PORT", "9090"), ("NEXUSD_API_ADDR", "127.0.0.1:7000")]).unwrap();
        assert_eq!(both.api.addr.to_string(), "127.0.0.1:7000");
    }

    #[test]
    fn proxy_needs_its_upstream() {
        fn lookup(
            vars: &'static [(&'static str, &'static str)],
        ) -> impl Fn(&str) -> Option<String> {
            move |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        }
        let errors = ProxyConfig::from_lookup(lookup(&[])).unwrap_err();
        assert_eq!(errors.0[0].var, "NEXUSD_PROXY_UPSTREAM");
        let config = ProxyConfig::from_lookup(lookup(&[(
            "NEXUSD_PROXY_UPSTREAM",
            "http://10.8.0.2:8080/",
        )]))
        .unwrap();
        assert_eq!(config.upstream, "http://10.8.0.2:8080");
        assert_eq!(config.timeout.as_secs(), 60);
        let errors = ProxyConfig::from_lookup(lookup(&[
            ("NEXUSD_PROXY_UPSTREAM", "10.8.0.2"),
            ("NEXUSD_PROXY_TIMEOUT", "0"),
        ]))
        .unwrap_err();
        let vars: Vec<_> = errors.0.iter().map(|e| e.var).collect();
        assert_eq!(vars, ["NEXUSD_PROXY_UPSTREAM", "NEXUSD_PROXY_TIMEOUT"]);
    }

    #[test]
    fn external_services() {
        let config = parse(&[]).unwrap();
        assert_eq!(config.external.github.api_url, DEFAULT_GITHUB_API_URL);
        assert!(config.external.github.token.is_none() && config.external.orchestrator.is_none());
        let config = parse(&[
            ("GITHUB_TOKEN", "ghp_secret_value"),
            ("NEXUSD_GITHUB_API_URL", "http://127.0.0.1:9999/"),
            ("ORCHESTRATOR_URL", "https://orchestrator.example.com"),
            ("ORCHESTRATOR_TOKEN", "orch-secret"),
        ])
        .unwrap();
        assert_eq!(config.external.github.api_url, "http://127.0.0.1:9999");
        let orchestrator = config.external.orchestrator.as_ref().unwrap();
        assert_eq!(orchestrator.url, "https://orchestrator.example.com");
        assert_eq!(orchestrator.token.as_deref(), Some("orch-secret"));
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("ghp_secret_value") && !debug.contains("orch-secret"),
            "{debug}"
        );
        assert_eq!(
            error_vars(&[("PATTERN_MINER_URL", "not a url")]),
            ["PATTERN_MINER_URL"]
        );
    }

    #[test]
    fn backups_default_to_a_local_directory_nightly() {
        let config = parse(&[("NEXUSD_STATE_DIR", "/srv/nexusd")]).unwrap();
        let b = &config.backup;
        assert_eq!(
            b.destination,
            BackupDestination::Local {
                dir: "/srv/nexusd/backups".into()
            }
        );
        assert_eq!(b.schedule.as_deref(), Some(DEFAULT_BACKUP_SCHEDULE));
        assert_eq!((b.retention_days, b.min_keep, b.gzip_level), (30, 3, 3));
        assert_eq!(b.format, DumpFormat::Plain);
    }

    #[test]
    fn backup_bucket_and_schedule_are_checked() {
        let config = parse(&[
            ("NEXUSD_BACKUP_BUCKET", "gs://acme-backups/nexusd/prod/"),
            ("NEXUSD_BACKUP_SCHEDULE", "off"),
            ("NEXUSD_BACKUP_FORMAT", "custom"),
        ])
        .unwrap();
        assert_eq!(
            config.backup.destination,
            BackupDestination::Gcs {
                bucket: "acme-backups".into(),
                prefix: "nexusd/prod/".into()
            }
        );
        assert!(config.backup.schedule.is_none());
        assert_eq!(config.backup.format, DumpFormat::Custom);
        assert_eq!(
            error_vars(&[("NEXUSD_BACKUP_BUCKET", "s3://x")]),
            ["NEXUSD_BACKUP_BUCKET"]
        );
        assert_eq!(
            error_vars(&[("NEXUSD_BACKUP_BUCKET", "gs://Upper_Case")]),
            ["NEXUSD_BACKUP_BUCKET"]
        );
        assert_eq!(
            error_vars(&[("NEXUSD_BACKUP_SCHEDULE", "0 2 * * *")]),
            ["NEXUSD_BACKUP_SCHEDULE"]
        );
        assert_eq!(
            error_vars(&[("NEXUSD_BACKUP_GZIP_LEVEL", "0")]),
            ["NEXUSD_BACKUP_GZIP_LEVEL"]
        );
        assert_eq!(
            error_vars(&[("NEXUSD_BACKUP_MIN_KEEP", "0")]),
            ["NEXUSD_BACKUP_MIN_KEEP"]
        );
    }

    #[test]
    fn embeddings_default_to_builtin_or_openai_with_a_key() {
        let e = parse(&[]).unwrap().embedding;
        assert_eq!(e.provider, EmbeddingProvider::Builtin);
        assert_eq!(
            (e.url.as_str(), e.model.as_str()),
            (DEFAULT_EMBEDDING_URL, DEFAULT_EMBEDDING_MODEL)
        );
        assert!(e.backfill);
        let config = parse(&[("OPENAI_API_KEY", "sk-secret-key")]).unwrap();
        assert_eq!(config.embedding.provider, EmbeddingProvider::OpenAi);
        assert!(!format!("{config:?}").contains("sk-secret-key"));
        let e = parse(&[
            ("OPENAI_API_KEY", "sk-secret-key"),
            ("NEXUSD_EMBEDDING_PROVIDER", "none"),
        ])
        .unwrap()
        .embedding;
        assert_eq!(e.provider, EmbeddingProvider::None);
        // A local OpenAI-compatible server needs no key.
        let e = parse(&[
            ("NEXUSD_EMBEDDING_PROVIDER", "OpenAI"),
            ("NEXUSD_EMBEDDING_URL", "http://127.0.0.1:11434/v1/"),
            ("NEXUSD_EMBEDDING_MODEL", "nomic-embed-text"),
            ("NEXUSD_EMBEDDING_TIMEOUT", "5"),
        ])
        .unwrap()
        .embedding;
        assert_eq!(e.provider, EmbeddingProvider::OpenAi);
        assert_eq!(e.url, "http://127.0.0.1:11434/v1");
        assert_eq!(e.timeout, std::time::Duration::from_secs(5));
    }

    #[test]
    fn bad_embedding_settings_are_named() {
        assert_eq!(
            error_vars(&[("NEXUSD_EMBEDDING_PROVIDER", "cohere")]),
            ["NEXUSD_EMBEDDING_PROVIDER"]
        );
        assert_eq!(
            error_vars(&[("NEXUSD_EMBEDDING_PROVIDER", "openai")]),
            ["OPENAI_API_KEY"]
        );
        assert_eq!(
            error_vars(&[("NEXUSD_EMBEDDING_URL", "api.openai.com")]),
            ["NEXUSD_EMBEDDING_URL"]
        );
        assert_eq!(
            error_vars(&[("NEXUSD_EMBEDDING_TIMEOUT", "0")]),
            ["NEXUSD_EMBEDDING_TIMEOUT"]
        );
        assert_eq!(
            error_vars(&[("NEXUSD_SEARCH_EF_SEARCH", "5000")]),
            ["NEXUSD_SEARCH_EF_SEARCH"]
        );
    }

    #[test]
    fn bool_spellings() {
        for t in ["true", "TRUE", "1", "yes", "on"] {
            assert_eq!(parse_bool(t), Some(true), "{t}");
        }
        for f in ["false", "0", "No", "off"] {
            assert_eq!(parse_bool(f), Some(false), "{f}");
        }
        assert_eq!(parse_bool("y"), None);
    }
}
