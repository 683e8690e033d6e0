//! Reading `/metrics` in tests: fetch, parse the text format into samples, and run
//! `promtool check metrics` over it (less the naming lints the upstream exporters trigger too).

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

/// One sample: name, labels, value.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// A parsed scrape.
pub struct Scrape {
    pub text: String,
    pub samples: Vec<Sample>,
}

impl Scrape {
    pub fn parse(text: String) -> Self {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(parse_line)
            .collect();
        Scrape { text, samples }
    }

    pub fn all(&self, name: &str) -> Vec<&Sample> {
        self.samples.iter().filter(|s| s.name == name).collect()
    }

    /// The value of the one sample of `name` whose labels include `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let found: Vec<f64> = self
            .all(name)
            .into_iter()
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .collect();
        assert!(
            found.len() <= 1,
            "{name}{labels:?} matches {} samples",
            found.len()
        );
        found.first().copied()
    }

    /// The sum of every sample of `name`.
    pub fn sum(&self, name: &str) -> f64 {
        self.all(name).iter().map(|s| s.value).sum()
    }

    /// Every metric name in the scrape.
    pub fn names(&self) -> std::collections::HashSet<&str> {
        self.samples.iter().map(|s| s.name.as_str()).collect()
    }

    /// `pg_scrape_collector_success{collector}`.
    pub fn collector(&self, collector: &str) -> Option<f64> {
        self.value("pg_scrape_collector_success", &[("collector", collector)])
    }
}

fn parse_line(line: &str) -> Sample {
    let (series, value) = line.rsplit_once(' ').expect("a sample line has a value");
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}")),
    };
    let (name, labels) = match series.split_once('{') {
        None => (series.to_string(), BTreeMap::new()),
        Some((name, rest)) => {
            let body = rest.strip_suffix('}').expect("labels end with }");
            (name.to_string(), parse_labels(body))
        }
    };
    Sample {
        name,
        labels,
        value,
    }
}

fn parse_labels(body: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut chars = body.chars().peekable();
    loop {
        let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if name.is_empty() {
            return labels;
        }
        assert_eq!(chars.next(), Some('"'), "label {name} is quoted");
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => panic!("dangling escape"),
                },
                '"' => break,
                c => value.push(c),
            }
        }
        labels.insert(name.trim_start_matches(',').to_string(), value);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
}

/// GET `{metrics}/metrics` (with the scraper's timeout header when given); asserts a 200.
pub async fn fetch(metrics: &str, timeout_header: Option<&str>) -> Scrape {
    let mut request = super::http().get(format!("{metrics}/metrics"));
    if let Some(seconds) = timeout_header {
        request = request.header("X-Prometheus-Scrape-Timeout-Seconds", seconds);
    }
    let response = request.send().await.expect("GET /metrics");
    assert_eq!(response.status(), 200);
    Scrape::parse(response.text().await.expect("a text body"))
}

/// Calls `skill` with `input` through `nexusd`, each answer through `check`, until its
/// `/metrics` (cached for a second) satisfy `done`; returns them. Fails with `what` after 20 s.
pub async fn read_until(
    nexusd: &super::Nexusd,
    skill: &str,
    input: &serde_json::Value,
    what: &str,
    check: impl Fn(&serde_json::Value),
    done: impl Fn(&Scrape) -> bool,
) -> Scrape {
    super::eventually(Duration::from_secs(20), || async {
        check(&nexusd.ok(skill, input.clone()).await);
        let metrics = fetch(&nexusd.metrics, None).await;
        if done(&metrics) {
            Ok(metrics)
        } else {
            Err(what.to_string())
        }
    })
    .await
}

/// The lints promtool raises on postgres_exporter's and node_exporter's own output.
const ANCHOR_LINTS: [&str; 4] = [
    r#"counter metrics should have "_total" suffix"#,
    "metric names should be written in 'snake_case' not 'camelCase'",
    r#"non-histogram and non-summary metrics should not have "_count" suffix"#,
    // node_entropy_{available,pool_size}_bits
    r#"use base unit "bytes" instead of "bits""#,
];

/// What `promtool check metrics` finds, less [`ANCHOR_LINTS`].
pub fn promtool_problems(text: &str) -> Vec<String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus; scripts/setup-debian installs it)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feeding promtool");
    let output = child.wait_with_output().expect("promtool ran");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    all.lines()
        .filter(|l| !l.trim().is_empty())
        .filter(|l| !ANCHOR_LINTS.iter().any(|lint| l.ends_with(lint)))
        .map(str::to_string)
        .collect()
}
