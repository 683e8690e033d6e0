//! The monitoring files in `monitoring/`: the alert rules pass `promtool check rules` and their
//! unit tests (`promtool test rules`: a firing and a quiet case for every rule); the Grafana
//! dashboard imports (a `DS_PROMETHEUS` input used by every panel and variable, a uid, the `job`
//! and `instance` variables, unique panel ids on the grid), and every panel query and variable
//! returns data from a real Prometheus scraping a real `nexusd serve` that has a verified backup
//! and serves skill calls.

mod support;

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use support::backups::{Where, nexusd, text};
use support::prometheus::Prometheus;
use support::{Nexusd, shared_db};

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// Runs promtool in `monitoring/`; its success and output.
fn promtool(args: &[&str]) -> (bool, String) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(repo("monitoring"))
        .output()
        .expect("promtool (Debian package prometheus; scripts/setup-debian installs it)");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), report)
}

#[test]
fn alert_rules_pass_promtool_check_rules() {
    let (ok, report) = promtool(&["check", "rules", "alerts.yml"]);
    assert!(ok, "{report}");
    assert!(report.contains("SUCCESS"), "{report}");
}

#[test]
fn alert_rules_fire_and_stay_quiet_as_their_unit_tests_say() {
    let (ok, report) = promtool(&["test", "rules", "alerts_test.yml"]);
    assert!(ok, "{report}");
    assert!(report.contains("SUCCESS"), "{report}");
}

fn dashboard() -> Value {
    let text = std::fs::read_to_string(repo("monitoring/dashboards/nexusd.json"))
        .expect("monitoring/dashboards/nexusd.json");
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    for p in dashboard["panels"].as_array().expect("panels") {
        all.push(p);
        if let Some(nested) = p["panels"].as_array() {
            all.extend(nested);
        }
    }
    all
}

#[test]
fn dashboard_is_an_importable_grafana_dashboard() {
    let d = dashboard();
    let ds = json!({"type": "prometheus", "uid": "${DS_PROMETHEUS}"});
    let input = &d["__inputs"][0];
    assert_eq!(input["name"], "DS_PROMETHEUS");
    assert_eq!(input["type"], "datasource");
    assert_eq!(input["pluginId"], "prometheus");
    assert!(
        d["uid"]
            .as_str()
            .is_some_and(|u| !u.is_empty() && u.len() <= 40)
    );
    assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(d["schemaVersion"].as_u64().is_some_and(|v| v >= 36));
    assert!(
        d["id"].is_null(),
        "an exported dashboard has no database id"
    );
    let variables: Vec<&str> = d["templating"]["list"]
        .as_array()
        .expect("templating.list")
        .iter()
        .inspect(|v| assert_eq!(v["datasource"], ds, "{v}"))
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert_eq!(variables, ["job", "instance"]);

    let mut ids = HashSet::new();
    let mut queries = 0;
    for p in panels(&d) {
        let title = p["title"].as_str().unwrap_or_default();
        assert!(!title.is_empty(), "a panel without a title: {p}");
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "duplicate id: {title}"
        );
        let grid = &p["gridPos"];
        let (x, w) = (grid["x"].as_u64().unwrap(), grid["w"].as_u64().unwrap());
        assert!(
            x + w <= 24 && grid["h"].as_u64().unwrap() > 0,
            "{title}: {grid}"
        );
        if p["type"] == "row" {
            continue;
        }
        assert!(
            ["timeseries", "stat"].contains(&p["type"].as_str().unwrap()),
            "{title}"
        );
        assert_eq!(p["datasource"], ds, "{title}");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title} has no query");
        let mut refs = HashSet::new();
        for t in targets {
            assert_eq!(t["datasource"], ds, "{title}");
            assert!(refs.insert(t["refId"].as_str().unwrap()), "{title}");
            assert!(t["expr"].as_str().is_some_and(|e| !e.is_empty()), "{title}");
            queries += 1;
        }
    }
    assert!(queries >= 40, "{queries} queries");
}

/// A panel query as Grafana sends it for one nexusd target.
fn substitute(expr: &str, instance: &str) -> String {
    expr.replace("$__rate_interval", "5s")
        .replace("$job", "nexusd")
        .replace("$instance", &regex_escape(instance))
}

/// `instance=~"$instance"` is a regular expression: Grafana escapes the value's dots.
fn regex_escape(s: &str) -> String {
    s.replace('.', "\\\\.")
}

/// Skill calls that succeed and fail, so the skill panels have rates to show.
async fn call_skills(nexusd: &Nexusd) {
    nexusd.ok("get_repository_list", json!({})).await;
    let (status, body) = nexusd
        .exec("get_deployment_info", json!({"repository": 42}))
        .await;
    assert_eq!((status, &body["success"]), (200, &json!(false)), "{body}");
}

#[tokio::test]
async fn every_dashboard_panel_has_data_from_a_real_prometheus() {
    let db = shared_db().await;
    // A backup needs the knowledge base's tables.
    db.bootstrap().await;
    let store = Where::local();
    for step in [&["backup", "run"][..], &["backup", "verify"]] {
        let out = nexusd(&db, &store, step, &[]);
        assert!(out.status.success(), "{step:?}: {}", text(&out));
    }
    let vars = store.vars();
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let nexusd = Nexusd::ready(&db.url(), &vars).await;
    let target = nexusd.metrics.trim_start_matches("http://").to_string();
    let prometheus = Prometheus::start(&[("nexusd", &target)]);
    // Calls spread over the scrapes, so rate() over a few seconds sees them.
    for _ in 0..16 {
        call_skills(&nexusd).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    prometheus
        .wait_for_scrapes("nexusd", 8, Duration::from_secs(60))
        .await;
    call_skills(&nexusd).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let d = dashboard();
    let mut empty = Vec::new();
    for v in d["templating"]["list"].as_array().unwrap() {
        // label_values(<selector>, <label>): the selector must return series with the label.
        let definition = v["definition"].as_str().unwrap();
        let inner = definition
            .strip_prefix("label_values(")
            .and_then(|s| s.strip_suffix(')'))
            .and_then(|s| s.rsplit_once(", "))
            .unwrap_or_else(|| panic!("not label_values(): {definition}"));
        let series = prometheus
            .query(&inner.0.replace("$job", "nexusd"))
            .await
            .unwrap_or_else(|e| panic!("{definition}: {e}"));
        let values: Vec<&str> = series
            .iter()
            .filter_map(|s| s["metric"][inner.1].as_str())
            .collect();
        let want = if inner.1 == "job" { "nexusd" } else { &target };
        assert!(values.contains(&want), "{definition}: {values:?}");
    }
    for p in panels(&d) {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = substitute(t["expr"].as_str().unwrap(), &target);
            assert!(!expr.contains('$'), "an unknown variable in {expr}");
            match prometheus.query(&expr).await {
                Ok(series) if !series.is_empty() => {}
                Ok(_) => empty.push(format!("{} / {}: no data: {expr}", p["title"], t["refId"])),
                Err(e) => empty.push(format!("{} / {}: {e}: {expr}", p["title"], t["refId"])),
            }
        }
    }
    assert!(
        empty.is_empty(),
        "panel queries without data:\n{}\n--- nexusd log ---\n{}",
        empty.join("\n"),
        nexusd.log_text()
    );
}
