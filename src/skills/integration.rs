//! Integration with other A2A agents: `health_check_external` probes the agents configured by
//! `ORCHESTRATOR_URL` / `PATTERN_MINER_URL` with `GET {url}/health`,
//! concurrently, 5 s each, sending their bearer token when one is configured.

use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use super::config::{AgentEndpoint, ExternalConfig};
use super::context::SkillContext;
use super::error::SkillError;
use super::registry::{Skill, SkillOutput, example, handler, output};

/// Time allowed for one agent's `/health`.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The configured agents under the names the original reported them.
pub fn configured_agents(external: &ExternalConfig) -> Vec<(&'static str, AgentEndpoint)> {
    let mut agents = Vec::new();
    if let Some(a) = &external.orchestrator {
        agents.push(("dependency-orchestrator", a.clone()));
    }
    if let Some(a) = &external.pattern_miner {
        agents.push(("pattern-miner", a.clone()));
    }
    agents
}

pub fn health_check_external() -> Skill {
    Skill {
        id: "health_check_external",
        name: "Check External Agent Health",
        description: "Check whether the other A2A agents nexusd works with (dependency-orchestrator, \
                      pattern-miner; configured by ORCHESTRATOR_URL / PATTERN_MINER_URL) answer their \
                      /health with 200, probing them concurrently with a 5 s timeout each.",
        tags: &["health", "monitoring", "agents"],
        requires_authentication: false,
        input_schema: json!({"type": "object", "properties": {}}),
        examples: vec![example(json!({}), "Probe every configured agent")],
        aliases: &[],
        empty: json!({"agents": {}, "all_healthy": false}),
        uses_database: false,
        handler: handler(run),
    }
}

/// What one probe found.
struct Probe {
    healthy: bool,
    details: Value,
}

async fn probe(client: reqwest::Client, agent: AgentEndpoint) -> Probe {
    let url = format!("{}/health", agent.url.trim_end_matches('/'));
    let mut request = client.get(&url).timeout(PROBE_TIMEOUT);
    if let Some(token) = agent.token.as_deref().filter(|t| !t.is_empty()) {
        request = request.bearer_auth(token);
    }
    let started = Instant::now();
    let result = request.send().await;
    let latency_ms = (started.elapsed().as_secs_f64() * 1000.0 * 10.0).round() / 10.0;
    match result {
        Ok(response) => {
            let status = response.status().as_u16();
            let healthy = status == 200;
            Probe {
                healthy,
                details: json!({
                    "url": url,
                    "healthy": healthy,
                    "status_code": status,
                    "latency_ms": latency_ms,
                    "error": (!healthy).then(|| format!("/health answered HTTP {status}")),
                }),
            }
        }
        Err(e) => {
            let error = if e.is_timeout() {
                format!("no answer within {} s", PROBE_TIMEOUT.as_secs())
            } else if e.is_connect() {
                "connection failed (refused or unreachable)".to_string()
            } else {
                e.without_url().to_string()
            };
            Probe {
                healthy: false,
                details: json!({
                    "url": url,
                    "healthy": false,
                    "status_code": null,
                    "latency_ms": latency_ms,
                    "error": error,
                }),
            }
        }
    }
}

async fn run(ctx: SkillContext, _input: Map<String, Value>) -> Result<SkillOutput, SkillError> {
    let agents = configured_agents(&ctx.config.external);
    // One client for the process: connection pooling, TLS roots loaded once.
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    let client = CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .connect_timeout(PROBE_TIMEOUT)
            .build()
            .unwrap_or_default()
    });
    let mut tasks = tokio::task::JoinSet::new();
    for (index, (name, endpoint)) in agents.into_iter().enumerate() {
        let client = client.clone();
        tasks.spawn(async move { (index, name, probe(client, endpoint).await) });
    }
    let mut results = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let done = joined.map_err(|e| SkillError::Internal {
            message: format!("Failed to check external agent health: {e}"),
            source: Some(Box::new(e)),
        })?;
        results.push(done);
    }
    // Report in configuration order, whatever order the probes finished in.
    results.sort_by_key(|(index, _, _)| *index);

    let mut healthy = Map::new();
    let mut details = Map::new();
    for (_, name, probe) in results {
        if !probe.healthy {
            tracing::info!(agent = name, details = %probe.details, "external agent unhealthy");
        }
        healthy.insert(name.to_string(), Value::Bool(probe.healthy));
        details.insert(name.to_string(), probe.details);
    }
    let all_healthy = healthy.values().all(|v| v == &Value::Bool(true));
    Ok(output(json!({
        "agents": healthy,
        "all_healthy": all_healthy,
        "details": details,
    })))
}
