//! Configuration: every setting comes from the environment (systemd's `EnvironmentFile=`), is
//! parsed once into typed values, and a bad value names its variable and what was expected — all
//! problems at once ([`crate::env::Env`]).
//!
//! Each capability owns its section and the list of variables it reads (`db/config.rs`,
//! `skills/config.rs`, `backup/config.rs`, …); this file only composes them, and composes the
//! lists into the table `nexusd --help` and the README show, so no variable can be read without
//! being documented. The variables of the original Dev-Nexus server keep their meaning
//! (`DATABASE_URL`, `POSTGRES_*`, `KNOWLEDGE_BASE_REPO`, …); nexusd's own settings are
//! `NEXUSD_*`. Secrets never reach `Debug` output or logs.

use std::path::PathBuf;

use crate::backup::BackupConfig;
use crate::capabilities::Capabilities;
use crate::db::{Connections, DatabaseConfig};
use crate::embed::EmbeddingConfig;
use crate::env::file::EnvFile;
use crate::env::{ConfigErrors, Env, Var, absolute};
use crate::metrics::MetricsConfig;
use crate::skills::SkillsConfig;
use crate::telemetry::LogConfig;

/// Everything `nexusd` reads from its environment.
#[derive(Debug, Clone)]
pub struct Config {
    pub database: DatabaseConfig,
    pub skills: SkillsConfig,
    /// `NEXUSD_STATE_DIR`: the embedded cluster and local backups live here.
    pub state_dir: PathBuf,
    pub log: LogConfig,
    pub embedding: EmbeddingConfig,
    pub backup: BackupConfig,
    pub metrics: MetricsConfig,
    /// `NEXUSD_BACKUPS`, `NEXUSD_HOST_METRICS`: what this replica leaves to the platform.
    pub capabilities: Capabilities,
    /// `NEXUSD_DIRECT_DATABASE_URL`: past a pooler.
    pub connections: Connections,
    /// The environment file the configuration came from, for messages.
    pub env_file: EnvFile,
}

/// Variables read outside any one capability.
const GENERAL: &[Var] = &[
    Var {
        name: "NEXUSD_STATE_DIR",
        default: "/var/lib/nexusd (root), else $XDG_STATE_HOME/nexusd",
        meaning: "embedded cluster (pg/, socket in run/), local backups, the download spool of verify and restore",
    },
    Var {
        name: "XDG_STATE_HOME",
        default: "~/.local/state",
        meaning: "when not root and NEXUSD_STATE_DIR is unset, the state directory is $XDG_STATE_HOME/nexusd (never the current directory)",
    },
    Var {
        name: "HOME",
        default: "the user's",
        meaning: "gives ~/.local/state when XDG_STATE_HOME is unset, and where the Application Default Credentials file (~/.config/gcloud) is looked for",
    },
    Var {
        name: "NOTIFY_SOCKET",
        default: "set by systemd",
        meaning: "Type=notify: READY, STATUS, STOPPING and watchdog pings go there",
    },
    Var {
        name: "INVOCATION_ID",
        default: "set by systemd",
        meaning: "started by systemd: the unit's EnvironmentFile= is already applied, so an /etc/nexusd/nexusd.env the service's user cannot read is skipped",
    },
    Var {
        name: "PATH",
        default: "the system's",
        meaning: "also searched for PostgreSQL programs (after pg_config --bindir and /usr/lib/postgresql/*/bin)",
    },
];

/// Every variable nexusd reads, by section, in the order `--help` shows them.
pub fn sections() -> [(&'static str, &'static [Var]); 13] {
    [
        ("Database", crate::db::VARIABLES),
        ("Skills API", crate::skills::VARIABLES),
        ("Credentials", crate::http::auth::VARIABLES),
        ("Browsers (CORS)", crate::http::cors::VARIABLES),
        ("HTTP connections", crate::http::VARIABLES),
        ("GitHub", crate::github::VARIABLES),
        ("Embeddings and search", crate::embed::VARIABLES),
        ("Backups", crate::backup::VARIABLES),
        ("Metrics", crate::metrics::VARIABLES),
        (
            "Replicas and managed databases",
            crate::capabilities::VARIABLES,
        ),
        ("Cloud Run proxy", crate::proxy::VARIABLES),
        ("Logging", crate::telemetry::VARIABLES),
        ("State", GENERAL),
    ]
}

/// Every variable nexusd reads.
pub fn variables() -> impl Iterator<Item = &'static Var> {
    sections().into_iter().flat_map(|(_, vars)| vars.iter())
}

/// The configuration table of `nexusd --help`: every variable, its default and meaning,
/// wrapped to `width` columns.
pub fn help_table(width: usize) -> String {
    const NAME: usize = 32;
    let mut out = String::from(
        "Configuration (environment variables; systemd reads them from /etc/nexusd/nexusd.env):\n",
    );
    for (title, vars) in sections() {
        out.push_str(&format!("\n{title}:\n"));
        for var in vars {
            // The default stays on one line.
            let default = format!("(default: {})", var.default).replace(' ', "\u{a0}");
            let text = format!("{} {default}", var.meaning);
            let mut line = format!("  {:<w$}", var.name, w = NAME - 2);
            if var.name.len() > NAME - 3 {
                line = format!("  {}\n{:NAME$}", var.name, "");
            }
            let mut column = NAME;
            for word in text.split(' ') {
                if column + word.len() + 1 > width && column > NAME {
                    line.push_str(&format!("\n{:NAME$}", ""));
                    column = NAME;
                }
                if column > NAME {
                    line.push(' ');
                    column += 1;
                }
                line.push_str(&word.replace('\u{a0}', " "));
                column += word.chars().count();
            }
            out.push_str(&line);
            out.push('\n');
        }
    }
    out.push_str(
        "\nA bad value names its variable and what was expected; every command exits non-zero\n\
         with a one-line reason when it fails.",
    );
    out
}

/// The configuration table of the README (markdown), by section.
pub fn markdown_table() -> String {
    let mut out = String::from("| variable | default | meaning |\n|---|---|---|\n");
    for (title, vars) in sections() {
        out.push_str(&format!("| **{title}** | | |\n"));
        for var in vars {
            let cell = |text: &str| text.replace('|', "\\|");
            out.push_str(&format!(
                "| `{}` | {} | {} |\n",
                var.name,
                cell(var.default),
                cell(var.meaning)
            ));
        }
    }
    out
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigErrors> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads configuration through `lookup` (the environment in production, a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigErrors> {
        let mut env = Env::new(&lookup);
        let config = Self::read(&mut env);
        env.finish(config)
    }

    /// The variables a configuration read asks for (whatever their values), for tests.
    #[cfg(test)]
    fn variables_read(lookup: impl Fn(&str) -> Option<String>) -> Vec<&'static str> {
        let mut env = Env::new(&lookup);
        let _ = Self::read(&mut env);
        env.read()
    }

    fn read(env: &mut Env<'_>) -> Option<Config> {
        let database = DatabaseConfig::from_env(env);
        let skills = SkillsConfig::from_env(env);
        let state_dir = match env.get("NEXUSD_STATE_DIR") {
            Some(dir) => Some(PathBuf::from(dir)),
            None => {
                let uid = nix::unistd::geteuid();
                let account_home = || {
                    let user = nix::unistd::User::from_uid(uid).ok().flatten();
                    user.map(|u| u.dir)
                };
                default_state_dir(env, uid.is_root(), account_home)
            }
        };
        let state_dir = absolute(&state_dir.unwrap_or_default());
        let log = LogConfig::from_env(env);
        let embedding = EmbeddingConfig::from_env(env);
        let backup = BackupConfig::from_env(env, &state_dir);
        let mut metrics = MetricsConfig::from_env(env);
        let capabilities = Capabilities::from_env(env);
        if !capabilities.host_metrics.on {
            metrics.host_collectors.clear();
        }
        let connections = Connections::from_env(env);
        Some(Config {
            database: database?,
            skills: skills?,
            state_dir,
            log,
            embedding,
            backup,
            metrics,
            capabilities,
            connections,
            env_file: EnvFile::None,
        })
    }
}

/// `/var/lib/nexusd` for root (the systemd unit's `StateDirectory=`); otherwise the XDG state
/// directory, `$XDG_STATE_HOME/nexusd` or `~/.local/state/nexusd` — never the current directory,
/// so a command run from elsewhere finds the same embedded cluster. Without `HOME`, the
/// account's home directory (`account_home`, from the user database) stands in; `None` (with
/// the error recorded) when nothing says where that is.
fn default_state_dir(
    env: &mut Env<'_>,
    root: bool,
    account_home: impl FnOnce() -> Option<PathBuf>,
) -> Option<PathBuf> {
    if root {
        return Some(PathBuf::from("/var/lib/nexusd"));
    }
    // The XDG specification ignores a relative XDG_STATE_HOME.
    if let Some(xdg) = env.get("XDG_STATE_HOME").map(PathBuf::from)
        && xdg.is_absolute()
    {
        return Some(xdg.join("nexusd"));
    }
    let home = env.get("HOME").map(PathBuf::from).or_else(account_home);
    match home {
        Some(home) if home.is_absolute() => Some(home.join(".local/state/nexusd")),
        _ => {
            env.error(
                "NEXUSD_STATE_DIR",
                "is unset, and neither XDG_STATE_HOME nor HOME says where the default state \
                 directory is: set NEXUSD_STATE_DIR",
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    use crate::backup::config::DEFAULT_BACKUP_SCHEDULE;
    use crate::backup::{BackupDestination, DumpFormat};
    use crate::db::DatabaseTarget;
    use crate::embed::EmbeddingProvider;
    use crate::embed::config::{DEFAULT_EMBEDDING_MODEL, DEFAULT_EMBEDDING_URL};
    use crate::env::parse_bool;
    use crate::github::DEFAULT_GITHUB_API_URL;
    use crate::http::auth::DEFAULT_GOOGLE_CERTS_URL;
    use crate::metrics::config::DEFAULT_METRICS_ADDR;
    use crate::proxy::ProxyConfig;
    use crate::skills::config::DEFAULT_API_ADDR;
    use crate::telemetry::{DEFAULT_LOG_FILTER, LogFormat};
    use sqlx::postgres::PgSslMode;

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
        assert_eq!(config.skills.api.addr.to_string(), "0.0.0.0:8080");
        assert_eq!(config.database.min_connections, 0);
        assert_eq!(config.database.max_connections, 10);
        assert_eq!(config.log.format, LogFormat::Text);
        assert_eq!(config.log.filter, DEFAULT_LOG_FILTER);
        assert!(config.state_dir.is_absolute());
    }

    #[test]
    fn the_default_state_directory_is_xdg_never_the_current_directory() {
        let dir = |vars: &[(&str, &str)], root: bool| {
            let map: HashMap<String, String> = vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            let lookup = |k: &str| map.get(k).cloned();
            let mut env = Env::new(&lookup);
            let dir = default_state_dir(&mut env, root, || None);
            (dir, env.finish(Some(())).is_ok())
        };
        assert_eq!(
            dir(&[("HOME", "/home/op")], true),
            (Some("/var/lib/nexusd".into()), true)
        );
        assert_eq!(
            dir(&[("HOME", "/home/op")], false),
            (Some("/home/op/.local/state/nexusd".into()), true)
        );
        assert_eq!(
            dir(
                &[("HOME", "/home/op"), ("XDG_STATE_HOME", "/srv/state")],
                false
            ),
            (Some("/srv/state/nexusd".into()), true)
        );
        assert_eq!(
            dir(&[("HOME", "/home/op"), ("XDG_STATE_HOME", "rel")], false),
            (Some("/home/op/.local/state/nexusd".into()), true)
        );
        assert_eq!(dir(&[], false), (None, false));
        let lookup = |_: &str| None;
        let mut env = Env::new(&lookup);
        assert_eq!(
            default_state_dir(&mut env, false, || Some("/home/acct".into())),
            Some("/home/acct/.local/state/nexusd".into())
        );
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
    fn host_collectors_and_textfile_directory() {
        let config = parse(&[]).unwrap();
        assert!(config.metrics.host_collectors.contains(&"netstat"));
        assert!(!config.metrics.host_collectors.contains(&"processes"));
        assert!(config.metrics.textfile_dir.is_none());
        let config = parse(&[
            ("NEXUSD_METRICS_COLLECTORS", "+processes,-netstat"),
            ("NEXUSD_METRICS_TEXTFILE_DIR", "/var/lib/nexusd/textfiles"),
        ])
        .unwrap();
        assert!(config.metrics.host_collectors.contains(&"processes"));
        assert!(!config.metrics.host_collectors.contains(&"netstat"));
        assert_eq!(
            config.metrics.textfile_dir.as_deref(),
            Some(std::path::Path::new("/var/lib/nexusd/textfiles"))
        );
        assert_eq!(
            error_vars(&[("NEXUSD_METRICS_COLLECTORS", "+processes,-netstatt")]),
            ["NEXUSD_METRICS_COLLECTORS"]
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
        assert_eq!(config.skills.api.addr.to_string(), DEFAULT_API_ADDR);
    }

    #[test]
    fn api_settings_and_their_defaults() {
        let config = parse(&[]).unwrap();
        assert!(
            config.skills.api.auth.required,
            "writes need credentials unless switched off"
        );
        assert!(config.skills.api.auth.allowed_accounts.is_empty());
        assert_eq!(config.skills.api.auth.certs_url, DEFAULT_GOOGLE_CERTS_URL);
        assert_eq!(config.skills.api.public_url, "http://localhost:8080");
        assert_eq!(config.skills.api.cors.origins.len(), 4);
        assert!(config.skills.api.cors.origin_regex.is_none());

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
        assert!(!config.skills.api.auth.required);
        assert_eq!(
            config.skills.api.auth.allowed_accounts,
            ["a@x.iam.gserviceaccount.com", "b@y.com"]
        );
        assert_eq!(config.skills.api.cors.origins, ["https://app.example.com"]);
        let re = config.skills.api.cors.origin_regex.as_ref().unwrap();
        assert!(re.is_match("https://a.example.org"));
        assert!(
            !re.is_match("https://a.example.org.evil.com"),
            "the regex must match whole origins"
        );
        assert_eq!(config.skills.api.public_url, "https://agent.example.com");
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
            parse(&[("PORT", "9090")])
                .unwrap()
                .skills
                .api
                .addr
                .to_string(),
            "0.0.0.0:9090"
        );
        let both = parse(&[("PORT", "9090"), ("NEXUSD_API_ADDR", "127.0.0.1:7000")]).unwrap();
        assert_eq!(both.skills.api.addr.to_string(), "127.0.0.1:7000");
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
        assert_eq!(
            config.skills.external.github.api_url,
            DEFAULT_GITHUB_API_URL
        );
        assert!(
            config.skills.external.github.token.is_none()
                && config.skills.external.orchestrator.is_none()
        );
        let config = parse(&[
            ("GITHUB_TOKEN", "ghp_secret_value"),
            ("NEXUSD_GITHUB_API_URL", "http://127.0.0.1:9999/"),
            ("ORCHESTRATOR_URL", "https://orchestrator.example.com"),
            ("ORCHESTRATOR_TOKEN", "orch-secret"),
        ])
        .unwrap();
        assert_eq!(
            config.skills.external.github.api_url,
            "http://127.0.0.1:9999"
        );
        let orchestrator = config.skills.external.orchestrator.as_ref().unwrap();
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

    /// Every variable the code reads is in [`variables`], so `--help` lists it: the reads of
    /// every branch (database by URL or by parts, agents with tokens, a bucket, the proxy), and
    /// the names the rest of the code reads from the environment directly.
    #[test]
    fn every_variable_read_is_documented() {
        let documented: Vec<&str> = variables().map(|v| v.name).collect();
        let environments: [&[(&str, &str)]; 4] = [
            &[],
            &[("DATABASE_URL", "postgresql://a:b@h/d")],
            &[
                ("POSTGRES_HOST", "db"),
                ("NEXUSD_BACKUP_BUCKET", "gs://bucket/p"),
            ],
            &[
                ("ORCHESTRATOR_URL", "http://o"),
                ("PATTERN_MINER_URL", "http://p"),
                ("NEXUSD_METRICS_ADDR", "off"),
                ("PORT", "9000"),
            ],
        ];
        let mut read = Vec::new();
        for vars in environments {
            let map: HashMap<String, String> = vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            read.extend(Config::variables_read(|k| map.get(k).cloned()));
        }
        read.extend(crate::proxy::ProxyConfig::variables_read());
        let undocumented: Vec<&str> = read
            .iter()
            .copied()
            .filter(|v| !documented.contains(v))
            .collect();
        assert!(
            undocumented.is_empty(),
            "read but not in --help: {undocumented:?}"
        );

        // Names read straight from the process environment elsewhere in the code.
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let direct = regex::Regex::new(r#"env::var(?:_os)?\("([A-Z_]+)"\)"#).unwrap();
        for file in rust_files(&src) {
            let text = std::fs::read_to_string(&file).unwrap();
            for name in direct.captures_iter(&text).map(|c| c[1].to_string()) {
                assert!(
                    documented.contains(&name.as_str()),
                    "{} reads {name}, which --help does not list",
                    file.display()
                );
            }
        }
    }

    fn rust_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                files.extend(rust_files(&path));
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
        files
    }

    #[test]
    fn the_help_table_shows_every_variable_once() {
        let table = help_table(100);
        for var in variables() {
            let lines = table
                .lines()
                .filter(|l| {
                    l.strip_prefix("  ")
                        .and_then(|l| l.split_whitespace().next())
                        == Some(var.name)
                        && !l.starts_with("   ")
                })
                .count();
            assert_eq!(lines, 1, "{} in:\n{table}", var.name);
        }
        assert!(table.lines().all(|l| l.chars().count() <= 100), "{table}");
    }
}
