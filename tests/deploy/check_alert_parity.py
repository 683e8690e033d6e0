#!/usr/bin/env python3
"""monitoring/alerts.yml and terraform/monitoring.tf in step: where a Prometheus rule has a Cloud
Monitoring alert policy for the same condition, the policy's query reads a subset of the rule's
metrics, its thresholds (after the variables' defaults are put in) are among the rule's, its range
selectors are the rule's, and its duration is the rule's `for`. Every rule has a section in
docs/alerts.md that its runbook_url points at, summary and description annotations, and in
monitoring/alerts_test.yml a case where it fires and one where it does not.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import hcl2
import yaml

from _common import REPO, Checks

# Prometheus alert -> (alert policy resource, index of its condition).
PAIRS = {
    "PostgreSQLDown": ("postgres_down", 0),
    "NexusdBackupTooOld": ("backup_stale", 0),
    "NexusdBackupFailing": ("backup_failing", 0),
    "NexusdBackupStoreUnavailable": ("backup_store_unavailable", 0),
    "NexusdBackupVerifyFailing": ("backup_verify", 0),
    "NexusdBackupVerifyStale": ("backup_verify", 1),
    "PostgreSQLWALArchivingFailing": ("wal_archiving_failing", 0),
    "PostgreSQLConnectionsSaturated": ("postgres_connections", 0),
    "PostgreSQLLongTransaction": ("long_transaction", 0),
    "HostDiskAlmostFull": ("data_disk_full", 0),
    "HostDiskFillingUp": ("data_disk_filling", 0),
    "HostMemoryPressure": ("memory_pressure", 0),
}
METRIC = re.compile(r"\b((?:nexusd|pg|node)_[A-Za-z0-9_]+)")
THRESHOLD = re.compile(r"(?:>|<|==|!=)=?\s*([0-9][0-9.]*(?:\s*\*\s*[0-9][0-9.]*)*)(?![0-9.]|\s*\*)")
RANGE = re.compile(r"\[(\d+[smhdw])\]")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def unquote(s: str) -> str:
    if len(s) >= 2 and s[0] == s[-1] == '"':
        s = s[1:-1]
    return s.replace('\\"', '"')


def seconds(duration: str | None) -> int:
    if not duration:
        return 0
    return sum(int(n) * UNITS[u] for n, u in re.findall(r"(\d+)([smhdw])", duration))


def product(text: str) -> float:
    value = 1.0
    for factor in text.split("*"):
        value *= float(factor)
    return value


def thresholds(expr: str) -> list[float]:
    return sorted(product(m) for m in THRESHOLD.findall(expr))


def variable_defaults() -> dict[str, object]:
    with open(REPO / "terraform/variables.tf") as f:
        blocks = hcl2.load(f)["variable"]
    return {unquote(k): v.get("default") for b in blocks for k, v in b.items()}


def interpolate(query: str, defaults: dict[str, object]) -> str:
    """`${var.x * 3600}` -> the number with the variable's default; other `${…}` -> a marker."""

    def one(m: re.Match) -> str:
        inner = m.group(1)
        names = re.findall(r"var\.(\w+)", inner)
        if names and all(isinstance(defaults.get(n), (int, float)) for n in names):
            for n in names:
                inner = inner.replace(f"var.{n}", str(defaults[n]))
            return repr(product(inner)).removesuffix(".0")
        return "X"

    return re.sub(r"\$\{([^}]*)\}", one, query)


def policies() -> dict[str, dict]:
    with open(REPO / "terraform/monitoring.tf") as f:
        resources = hcl2.load(f)["resource"]
    found = {}
    for r in resources:
        for kind, named in r.items():
            if unquote(kind) == "google_monitoring_alert_policy":
                found.update({unquote(k): v for k, v in named.items()})
    return found


def condition(policy: dict, index: int, defaults: dict) -> tuple[str, int] | None:
    conditions = policy.get("conditions", [])
    if index >= len(conditions):
        return None
    c = conditions[index]
    if "condition_prometheus_query_language" in c:
        q = c["condition_prometheus_query_language"][0]
        return interpolate(unquote(q["query"]), defaults), seconds(unquote(q["duration"]))
    t = c["condition_threshold"][0]
    value = interpolate(str(t["threshold_value"]), defaults)
    return f"agent > {value}", seconds(unquote(t["duration"]))


def main() -> None:
    checks = Checks("alert-parity")
    rules = {
        r["alert"]: r
        for g in yaml.safe_load((REPO / "monitoring/alerts.yml").read_text())["groups"]
        for r in g["rules"]
    }
    cases: dict[str, set[bool]] = {}
    for test in yaml.safe_load((REPO / "monitoring/alerts_test.yml").read_text())["tests"]:
        for case in test.get("alert_rule_test", []):
            cases.setdefault(case["alertname"], set()).add(bool(case.get("exp_alerts")))
    docs = (REPO / "docs/alerts.md").read_text()
    anchors = {h.strip().lower() for h in re.findall(r"^## (\S+)\s*$", docs, re.M)}
    for name, rule in rules.items():
        a = rule.get("annotations", {})
        checks.check(
            bool(a.get("summary")) and bool(a.get("description")),
            f"{name} has a summary and a description",
        )
        checks.check(
            cases.get(name) == {True, False},
            f"{name} has a firing and a quiet case in alerts_test.yml",
        )
        url = a.get("runbook_url", "")
        checks.check(
            url == f"docs/alerts.md#{name.lower()}" and name.lower() in anchors,
            f"{name}'s runbook_url points at its section of docs/alerts.md",
            url,
        )
    found = policies()
    defaults = variable_defaults()
    for name, (resource, index) in PAIRS.items():
        rule = rules.get(name)
        got = condition(found[resource], index, defaults) if resource in found else None
        if not checks.check(rule is not None and got is not None, f"{name} ~ {resource}[{index}] both exist"):
            continue
        query, duration = got
        expr = rule["expr"]
        checks.check(
            duration == seconds(rule.get("for")),
            f"{name}: Cloud Monitoring waits as long as the rule ({rule.get('for', '0s')})",
            f"{duration} s",
        )
        if query.startswith("agent > "):
            # The Ops Agent's memory percent: the same percentage as the rule's.
            checks.check(
                float(query.removeprefix("agent > ")) in thresholds(expr),
                f"{name}: the same threshold",
                f"{query} vs {thresholds(expr)}",
            )
            continue
        missing = set(METRIC.findall(query)) - set(METRIC.findall(expr))
        checks.check(not missing, f"{name}: the policy reads the rule's metrics", str(missing))
        extra = [t for t in thresholds(query) if t not in thresholds(expr)]
        checks.check(
            not extra and thresholds(query),
            f"{name}: the policy's thresholds are the rule's",
            f"{thresholds(query)} vs {thresholds(expr)}",
        )
        checks.check(
            sorted(RANGE.findall(query)) == sorted(RANGE.findall(expr)),
            f"{name}: the same range selectors",
            f"{RANGE.findall(query)} vs {RANGE.findall(expr)}",
        )
    checks.done()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main()
