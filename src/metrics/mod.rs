//! `/metrics` on its own listener (`NEXUSD_METRICS_ADDR`): PostgreSQL (postgres_exporter's
//! names), the host (node_exporter's names) and nexusd itself, in the Prometheus text format.
//!
//! A scrape is produced at most once per [`CACHE_TTL`]: concurrent scrapers wait for the one
//! scrape in flight and share its result, so several Prometheus servers (or a retrying one)
//! cost PostgreSQL one round of queries. The work runs in its own task, bounded by the
//! scraper's timeout header (or [`DEFAULT_BUDGET`]); a client that hangs up cannot wedge it.
//! Whatever fails, the answer is a 200 with everything that could be read.

pub(crate) mod config;
mod exposition;
mod host;
mod own;
mod postgres;
mod queries;

pub use config::{MetricsConfig, VARIABLES};
pub use own::{CacheStats, SkillOutcome, SkillStats, WorkflowStats};

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use axum::Router;
use axum::extract::State;
use axum::http::header::{ACCEPT_ENCODING, CONTENT_ENCODING, CONTENT_TYPE, VARY};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::backup::status::StatusHandle;
use crate::db::Database;
use crate::http::HttpConfig;
use exposition::Exposition;

/// Scrapes within this interval of the last one get its result.
const CACHE_TTL: Duration = Duration::from_secs(1);
/// How long PostgreSQL may take when the scraper does not say (`X-Prometheus-Scrape-Timeout-Seconds`).
const DEFAULT_BUDGET: Duration = Duration::from_secs(5);
/// What is kept back from the scraper's own timeout for the host metrics and the response.
const BUDGET_MARGIN: Duration = Duration::from_millis(500);

/// One rendered scrape.
struct Rendered {
    text: Bytes,
    gzip: OnceLock<Bytes>,
    at: Instant,
}

/// What `/metrics` reads from.
pub struct Metrics {
    skills: Arc<SkillStats>,
    db: Database,
    backups: StatusHandle,
    host: host::HostCollector,
    pg: postgres::PgCollector,
    last: tokio::sync::Mutex<Option<Arc<Rendered>>>,
}

impl Metrics {
    pub fn new(
        config: &MetricsConfig,
        db: Database,
        backups: StatusHandle,
        skills: Arc<SkillStats>,
    ) -> Self {
        Metrics {
            skills,
            db,
            backups,
            host: host::HostCollector::new(config),
            pg: postgres::PgCollector::new(config),
            last: tokio::sync::Mutex::new(None),
        }
    }

    /// The current scrape: the cached one if fresh, otherwise a new one (single flight).
    async fn scrape(self: &Arc<Self>, budget: Duration) -> Arc<Rendered> {
        let mut last = self.last.lock().await;
        if let Some(r) = last.as_ref().filter(|r| r.at.elapsed() < CACHE_TTL) {
            return r.clone();
        }
        let me = self.clone();
        let rendered = match tokio::spawn(async move { me.render(budget).await }).await {
            Ok(r) => Arc::new(r),
            Err(e) => {
                tracing::error!(error = %e, "the metrics scrape failed unexpectedly");
                match last.as_ref() {
                    Some(stale) => return stale.clone(),
                    None => Arc::new(self.render_minimal()),
                }
            }
        };
        *last = Some(rendered.clone());
        rendered
    }

    async fn render(self: Arc<Self>, budget: Duration) -> Rendered {
        let started = Instant::now();
        // The host's files are read on a blocking thread while PostgreSQL is queried.
        let me = self.clone();
        let host = tokio::task::spawn_blocking(move || {
            let mut out = Exposition::new();
            let textfiles = me.host.collect(&mut out);
            (out, textfiles)
        });
        let mut out = Exposition::new();
        self.write_own(&mut out);
        self.pg
            .collect(self.db.connect_options(), &mut out, budget)
            .await;
        let (mut host, textfiles) = host.await.unwrap_or_else(|e| {
            tracing::error!(error = %e, "the host metrics collector failed unexpectedly");
            (Exposition::new(), Vec::new())
        });
        self.host.collect_filesystems(&mut host).await;
        // Last, so a textfile family is checked against everything nexusd exposes.
        host::textfile::merge(textfiles, &mut out, &mut host);
        let mut text = out.render();
        let mut series = out.series();
        text.push_str(&host.render());
        series += host.series();
        tracing::debug!(
            series,
            bytes = text.len(),
            ms = started.elapsed().as_secs_f64() * 1000.0,
            "metrics scraped"
        );
        Rendered {
            text: Bytes::from(text),
            gzip: OnceLock::new(),
            at: Instant::now(),
        }
    }

    fn write_own(&self, out: &mut Exposition) {
        own::build_info(out);
        if let Err(e) = own::process(out) {
            tracing::debug!(error = %format!("{e:#}"), "process metrics unavailable");
        }
        self.skills.write(out);
        own::pool(out, self.db.stats());
        own::leader(out, self.db.leader().is_leader());
        if let Some(reads) = self.db.read_replicas() {
            own::read_replicas(out, &reads.states());
        }
        own::backups(out, &self.backups.snapshot());
    }

    /// nexusd's own metrics only, when a scrape failed and nothing older is cached.
    fn render_minimal(&self) -> Rendered {
        let mut out = Exposition::new();
        self.write_own(&mut out);
        postgres::write_up(&mut out, false);
        Rendered {
            text: Bytes::from(out.render()),
            gzip: OnceLock::new(),
            at: Instant::now(),
        }
    }
}

/// The metrics listener's routes.
fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(serve_metrics))
        .route("/", get(index))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                "Not Found: metrics are at /metrics\n",
            )
        })
        .with_state(metrics)
}

async fn index() -> Response {
    (
        [(CONTENT_TYPE, "text/html; charset=utf-8")],
        "<html><head><title>nexusd</title></head><body><h1>nexusd</h1>\
         <p><a href=\"/metrics\">Metrics</a></p></body></html>\n",
    )
        .into_response()
}

async fn serve_metrics(State(metrics): State<Arc<Metrics>>, headers: HeaderMap) -> Response {
    let rendered = metrics.scrape(budget(&headers)).await;
    let gzip = headers
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|e| e.split(';').next().is_some_and(|e| e.trim() == "gzip"));
    if gzip {
        let body = rendered
            .gzip
            .get_or_init(|| compress(&rendered.text))
            .clone();
        return (
            [
                (CONTENT_TYPE, exposition::CONTENT_TYPE),
                (CONTENT_ENCODING, "gzip"),
                (VARY, "Accept-Encoding"),
            ],
            body,
        )
            .into_response();
    }
    (
        [
            (CONTENT_TYPE, exposition::CONTENT_TYPE),
            (VARY, "Accept-Encoding"),
        ],
        rendered.text.clone(),
    )
        .into_response()
}

/// The gzip form of a scrape (made once per scrape, however many scrapers share it).
fn compress(text: &[u8]) -> Bytes {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(text.len() / 6),
        flate2::Compression::fast(),
    );
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(text);
    Bytes::from(encoder.finish().unwrap_or_default())
}

/// How long PostgreSQL may take: the scraper's timeout less a margin, at most 10 s.
fn budget(headers: &HeaderMap) -> Duration {
    headers
        .get("x-prometheus-scrape-timeout-seconds")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(|s| {
            Duration::from_secs_f64(s.min(10.0))
                .saturating_sub(BUDGET_MARGIN)
                .max(Duration::from_millis(500))
        })
        .unwrap_or(DEFAULT_BUDGET)
}

/// Binds the metrics listener (before anything else starts, so a taken port fails fast).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (NEXUSD_METRICS_ADDR)"))?;
    tracing::info!(%addr, "metrics listening");
    Ok(listener)
}

/// Serves `/metrics` until `shutdown`, with the API's connection timeouts and cap (`http`).
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    http: HttpConfig,
    shutdown: CancellationToken,
) -> Result<()> {
    crate::http::server::serve(listener, router(metrics), http, shutdown).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_follows_the_scrapers_timeout() {
        let mut headers = HeaderMap::new();
        assert_eq!(budget(&headers), DEFAULT_BUDGET);
        headers.insert("x-prometheus-scrape-timeout-seconds", "3".parse().unwrap());
        assert_eq!(budget(&headers), Duration::from_millis(2500));
        headers.insert("x-prometheus-scrape-timeout-seconds", "60".parse().unwrap());
        assert_eq!(budget(&headers), Duration::from_millis(9500));
        headers.insert(
            "x-prometheus-scrape-timeout-seconds",
            "0.2".parse().unwrap(),
        );
        assert_eq!(budget(&headers), Duration::from_millis(500));
        headers.insert(
            "x-prometheus-scrape-timeout-seconds",
            "soon".parse().unwrap(),
        );
        assert_eq!(budget(&headers), DEFAULT_BUDGET);
    }
}
