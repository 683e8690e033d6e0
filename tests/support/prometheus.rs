//! A real Prometheus server for tests: a temporary config and data directory, 127.0.0.1 on a
//! free port, 1 s scrapes of the given jobs, stopped when dropped; and its HTTP query API.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, http, temp_root};

/// A running `prometheus`, killed at drop.
pub struct Prometheus {
    child: Child,
    pub url: String,
    dir: PathBuf,
}

impl Prometheus {
    /// Starts Prometheus scraping each `(job, host:port)` every second.
    pub fn start(jobs: &[(&str, &str)]) -> Self {
        let dir = temp_root("nexusd-prometheus-");
        let mut config =
            String::from("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n");
        for (job, target) in jobs {
            config.push_str(&format!(
                "  - job_name: {job}\n    static_configs:\n      - targets: ['{target}']\n"
            ));
        }
        let config_file = dir.join("prometheus.yml");
        std::fs::write(&config_file, config).expect("writing prometheus.yml");
        let port = free_port();
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("prometheus.log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("prometheus (Debian package prometheus; scripts/setup-debian installs it)");
        Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            dir,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// Runs an instant query; the result vector, or the error Prometheus gave.
    pub async fn query(&self, query: &str) -> Result<Vec<serde_json::Value>, String> {
        let response = http()
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", query)])
            .send()
            .await
            .map_err(|e| format!("Prometheus did not answer: {e}"))?;
        let body: serde_json::Value = response
            .json()
            .await
            .map_err(|e| format!("not JSON: {e}"))?;
        if body["status"] != "success" {
            return Err(format!("{}: {}", body["errorType"], body["error"]));
        }
        match &body["data"]["result"] {
            serde_json::Value::Array(series) => Ok(series.clone()),
            // A scalar or string result is one value.
            other => Ok(vec![other.clone()]),
        }
    }

    /// Waits (at most `limit`) until `job` has been scraped successfully `scrapes` times.
    pub async fn wait_for_scrapes(&self, job: &str, scrapes: u32, limit: Duration) {
        let deadline = Instant::now() + limit;
        let query = format!("sum_over_time(up{{job=\"{job}\"}}[5m])");
        while Instant::now() < deadline {
            if let Ok(series) = self.query(&query).await
                && let Some(n) = series
                    .first()
                    .and_then(|s| s["value"][1].as_str())
                    .and_then(|v| v.parse::<f64>().ok())
                && n >= f64::from(scrapes)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        panic!(
            "Prometheus did not scrape {job} {scrapes} times within {limit:?}\n--- log ---\n{}",
            self.log_text()
        );
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
