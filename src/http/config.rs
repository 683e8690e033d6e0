//! How long a client may take and how many connections it may hold, on every listener nexusd
//! opens (the skills API, `/metrics`, `nexusd proxy`): the `NEXUSD_HTTP_*` variables.
//!
//! The defaults are sized for the 1 GB e2-micro VM of `docs/deploy.md`: a held connection costs
//! about 28 KB (socket buffers, hyper's read buffer, the task), so 512 of them stay under 15 MB,
//! and the unit's `LimitNOFILE=16384` (systemd/nexusd.service) leaves room for both listeners,
//! the pool and the backups.

use std::time::Duration;

use crate::env::{Env, Var};

/// The variables read here, as `nexusd --help` lists them.
pub const VARIABLES: &[Var] = &[
    Var {
        name: "NEXUSD_HTTP_HEADER_TIMEOUT",
        default: "10",
        meaning: "seconds a client has to send a request's headers (a new connection: from accept) before it is closed",
    },
    Var {
        name: "NEXUSD_HTTP_IDLE_TIMEOUT",
        default: "60",
        meaning: "seconds a keep-alive connection may sit idle between requests before it is closed",
    },
    Var {
        name: "NEXUSD_HTTP_BODY_TIMEOUT",
        default: "30",
        meaning: "seconds a client has to send a request body (at most 1 MiB) before it is answered 408",
    },
    Var {
        name: "NEXUSD_HTTP_MAX_CONNECTIONS",
        default: "512",
        meaning: "open connections per listener; one more is answered 503 and closed at once",
    },
];

const DEFAULT_HEADER_TIMEOUT_SECS: u32 = 10;
const DEFAULT_IDLE_TIMEOUT_SECS: u32 = 60;
const DEFAULT_BODY_TIMEOUT_SECS: u32 = 30;
const DEFAULT_MAX_CONNECTIONS: u32 = 512;

/// Timeouts and the connection cap of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpConfig {
    /// `NEXUSD_HTTP_HEADER_TIMEOUT`: from a new connection, or from the first byte of a later
    /// request, to the end of its headers.
    pub header_timeout: Duration,
    /// `NEXUSD_HTTP_IDLE_TIMEOUT`: between the end of a response and the next request's first
    /// byte.
    pub idle_timeout: Duration,
    /// `NEXUSD_HTTP_BODY_TIMEOUT`: reading a whole request body.
    pub body_timeout: Duration,
    /// `NEXUSD_HTTP_MAX_CONNECTIONS`: connections served at once by one listener.
    pub max_connections: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        let secs = |s: u32| Duration::from_secs(u64::from(s));
        HttpConfig {
            header_timeout: secs(DEFAULT_HEADER_TIMEOUT_SECS),
            idle_timeout: secs(DEFAULT_IDLE_TIMEOUT_SECS),
            body_timeout: secs(DEFAULT_BODY_TIMEOUT_SECS),
            max_connections: DEFAULT_MAX_CONNECTIONS as usize,
        }
    }
}

impl HttpConfig {
    pub fn from_env(env: &mut Env<'_>) -> HttpConfig {
        let mut seconds = |var: &'static str, default: u32, max: u32| {
            let what = format!("a number of seconds, 1 to {max}");
            Duration::from_secs(u64::from(env.bounded(var, default, 1, max, &what)))
        };
        let header_timeout = seconds(
            "NEXUSD_HTTP_HEADER_TIMEOUT",
            DEFAULT_HEADER_TIMEOUT_SECS,
            300,
        );
        let idle_timeout = seconds("NEXUSD_HTTP_IDLE_TIMEOUT", DEFAULT_IDLE_TIMEOUT_SECS, 3600);
        let body_timeout = seconds("NEXUSD_HTTP_BODY_TIMEOUT", DEFAULT_BODY_TIMEOUT_SECS, 3600);
        let max_connections = env.bounded(
            "NEXUSD_HTTP_MAX_CONNECTIONS",
            DEFAULT_MAX_CONNECTIONS,
            1,
            100_000,
            "a number of connections, 1 to 100000",
        ) as usize;
        HttpConfig {
            header_timeout,
            idle_timeout,
            body_timeout,
            max_connections,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn parse(vars: &[(&str, &str)]) -> (HttpConfig, Vec<&'static str>) {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let lookup = move |k: &str| map.get(k).cloned();
        let mut env = Env::new(&lookup);
        let config = HttpConfig::from_env(&mut env);
        let errors = match env.finish(Some(())) {
            Ok(()) => vec![],
            Err(e) => e.0.iter().map(|e| e.var).collect(),
        };
        (config, errors)
    }

    #[test]
    fn defaults_and_bounds() {
        assert_eq!(parse(&[]), (HttpConfig::default(), vec![]));
        let (config, errors) = parse(&[
            ("NEXUSD_HTTP_HEADER_TIMEOUT", "2"),
            ("NEXUSD_HTTP_IDLE_TIMEOUT", "3"),
            ("NEXUSD_HTTP_BODY_TIMEOUT", "4"),
            ("NEXUSD_HTTP_MAX_CONNECTIONS", "20"),
        ]);
        assert!(errors.is_empty());
        assert_eq!(
            (
                config.header_timeout.as_secs(),
                config.idle_timeout.as_secs(),
                config.body_timeout.as_secs(),
                config.max_connections
            ),
            (2, 3, 4, 20)
        );
        let (_, errors) = parse(&[
            ("NEXUSD_HTTP_HEADER_TIMEOUT", "0"),
            ("NEXUSD_HTTP_MAX_CONNECTIONS", "lots"),
        ]);
        assert_eq!(
            errors,
            ["NEXUSD_HTTP_HEADER_TIMEOUT", "NEXUSD_HTTP_MAX_CONNECTIONS"]
        );
    }
}
