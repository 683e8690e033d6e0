//! The skills API's settings: its listener and public URL, who may call the protected skills,
//! the other agents and GitHub it talks to, and the knowledge-base repository it names.

use std::fmt;
use std::net::SocketAddr;

use crate::env::{Env, Var};
use crate::github::GitHubConfig;
use crate::http::HttpConfig;
use crate::http::auth::AuthConfig;
use crate::http::cors::CorsConfig;

/// The variables read here (CORS and GitHub have their own lists), as `nexusd --help` lists them.
pub const VARIABLES: &[Var] = &[
    Var {
        name: "NEXUSD_API_ADDR",
        default: "0.0.0.0:8080 (0.0.0.0:$PORT)",
        meaning: "skills API listener (the proxy's too)",
    },
    Var {
        name: "PORT",
        default: "unset",
        meaning: "Cloud Run's port: the API listens on 0.0.0.0:$PORT unless NEXUSD_API_ADDR is set",
    },
    Var {
        name: "HOST_OVERRIDE",
        default: "http://localhost:<port>",
        meaning: "public base URL shown in the agent card (the Cloud Run URL when proxied)",
    },
    Var {
        name: "NEXUSD_PROTECTED_SKILLS",
        default: "empty",
        meaning: "skill ids that need credentials on top of the write skills",
    },
    Var {
        name: "ORCHESTRATOR_URL",
        default: "unset",
        meaning: "the dependency-orchestrator agent (health_check_external, consolidation plans)",
    },
    Var {
        name: "ORCHESTRATOR_TOKEN",
        default: "unset",
        meaning: "bearer token sent to ORCHESTRATOR_URL",
    },
    Var {
        name: "PATTERN_MINER_URL",
        default: "unset",
        meaning: "the pattern-miner agent",
    },
    Var {
        name: "PATTERN_MINER_TOKEN",
        default: "unset",
        meaning: "bearer token sent to PATTERN_MINER_URL",
    },
    Var {
        name: "KNOWLEDGE_BASE_REPO",
        default: "empty",
        meaning: "shown in /health and the agent card",
    },
    Var {
        name: "NEXUSD_SKILL_CACHE",
        default: "on",
        meaning: "cache the answers of the read skills, dropped on every knowledge-base write (off: every call reads the database)",
    },
    Var {
        name: "NEXUSD_SKILL_CACHE_BYTES",
        default: "8388608 (8 MiB)",
        meaning: "memory budget of that cache; the least recently used answers go first",
    },
    Var {
        name: "NEXUSD_WORKFLOW_CONCURRENCY",
        default: "1",
        meaning: "workflow jobs (trigger_full_analysis_workflow, extract_repository_patterns) this replica runs at once, 0-16; 0 leaves the queue to other replicas",
    },
];

/// The response cache's default budget: 8 MiB.
pub const DEFAULT_CACHE_BYTES: u32 = 8 << 20;

/// Everything the skills API reads from the configuration.
#[derive(Debug, Clone)]
pub struct SkillsConfig {
    pub api: ApiConfig,
    pub external: ExternalConfig,
    /// `NEXUSD_SKILL_CACHE` / `NEXUSD_SKILL_CACHE_BYTES`: the read skills' response cache budget
    /// in bytes, 0 when it is off.
    pub cache_bytes: usize,
    /// `KNOWLEDGE_BASE_REPO`: echoed in `/health` and the agent card, as the original did.
    pub knowledge_base_repo: String,
    /// `NEXUSD_WORKFLOW_CONCURRENCY`: workflow jobs run at once by this replica (default 1: the
    /// e2-micro has 2 vCPUs shared and 1 GiB).
    pub workflow_concurrency: usize,
}

#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// `NEXUSD_API_ADDR` (default `0.0.0.0:8080`).
    pub addr: SocketAddr,
    /// `HOST_OVERRIDE`: the public base URL shown in the agent card (the Cloud Run URL when
    /// proxied); `http://localhost:<port>` otherwise, as the original did.
    pub public_url: String,
    pub cors: CorsConfig,
    /// `NEXUSD_HTTP_*`: timeouts and the connection cap of the API listener (and of the metrics
    /// listener and `nexusd proxy`, which take the same settings).
    pub http: HttpConfig,
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

pub const DEFAULT_API_ADDR: &str = "0.0.0.0:8080";

impl SkillsConfig {
    /// `None` when the listen address is bad (the problem is in `env`).
    pub fn from_env(env: &mut Env<'_>) -> Option<SkillsConfig> {
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
        let api = addr.map(|addr| api_config(env, addr));
        let external = external_config(env);
        let knowledge_base_repo = env.get("KNOWLEDGE_BASE_REPO").unwrap_or_default();
        let cache_on = env.bool("NEXUSD_SKILL_CACHE").unwrap_or(true);
        let cache_bytes = env.bounded(
            "NEXUSD_SKILL_CACHE_BYTES",
            DEFAULT_CACHE_BYTES,
            4096,
            1 << 30,
            "a number of bytes from 4096 to 1073741824",
        );
        let workflow_concurrency = env.bounded(
            "NEXUSD_WORKFLOW_CONCURRENCY",
            1,
            0,
            16,
            "a number from 0 to 16",
        ) as usize;
        Some(SkillsConfig {
            api: api?,
            external,
            cache_bytes: if cache_on { cache_bytes as usize } else { 0 },
            knowledge_base_repo,
            workflow_concurrency,
        })
    }
}

fn api_config(env: &mut Env<'_>, addr: SocketAddr) -> ApiConfig {
    let public_url = env
        .url("HOST_OVERRIDE")
        .unwrap_or_else(|| format!("http://localhost:{}", addr.port()));
    let cors = CorsConfig::from_env(env);
    let http = HttpConfig::from_env(env);
    let auth = AuthConfig::from_env(env);
    ApiConfig {
        addr,
        public_url,
        cors,
        http,
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
        github: GitHubConfig::from_env(env),
        orchestrator,
        pattern_miner,
    }
}
