"""deploy/observability/: the alert rules pass promtool (and fire on synthetic series), the
Grafana dashboard is well formed, and both use only metrics the gateway exports."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from conftest import ALICE_KEY, QUERY, ROOT, Gateway

OBSERVABILITY = ROOT / "deploy" / "observability"
RULES = OBSERVABILITY / "alerts.yml"
RULES_TESTS = OBSERVABILITY / "alerts.test.yml"
DASHBOARD = OBSERVABILITY / "grafana-dashboard.json"
# Series Prometheus makes itself for every target, not the gateway.
PROMETHEUS_SERIES = {"up"}
# What a PromQL expression names that is not a metric.
_PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
    "and", "or", "unless", "inf", "nan",
}  # fmt: skip


def promtool() -> str:
    """Debian's promtool; a clear skip (a failure under CI) when it is not installed."""
    found = shutil.which("promtool")
    if found is None:
        message = "promtool is needed: apt-get install prometheus (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def run_promtool(*args: str) -> None:
    completed = subprocess.run(
        [promtool(), *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_alert_rules_pass_promtool_check() -> None:
    run_promtool("check", "rules", str(RULES))


def test_alerts_fire_on_synthetic_series() -> None:
    run_promtool("test", "rules", str(RULES_TESTS))


def test_the_alerts_an_sre_needs_are_there() -> None:
    alerts = {rule["alert"] for rule in rules()}
    assert alerts >= {
        "SnapgraphUpstreamErrorRateHigh",
        "SnapgraphRequestLatencyP99High",
        "SnapgraphCacheHitRatioLow",
        "SnapgraphUpstreamCircuitOpen",
        "SnapgraphRedisDegraded",
        "SnapgraphReplicaDown",
    }
    for rule in rules():
        assert rule["labels"]["severity"] in ("info", "warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]


def test_the_dashboard_is_well_formed() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = dashboard["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    graphs = [panel for panel in panels if panel["type"] != "row"]
    assert len(graphs) >= 10
    for panel in graphs:
        assert panel["title"] and panel["gridPos"]["w"] > 0, panel
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip() and target["datasource"]["uid"] == "${datasource}"


def test_every_metric_the_files_use_is_exported(gateway: Gateway) -> None:
    gateway.query(QUERY, ALICE_KEY)  # so that every labelled series exists
    exported = exported_names(gateway.http.get("/metrics").text)
    used = {
        (name, source) for source, expression in expressions() for name in metric_names(expression)
    }
    assert {name for name, _ in used} >= {"snapgraph_request_duration_seconds_bucket", "up"}
    unknown = {(name, source) for name, source in used if name not in exported}
    assert not unknown, f"not exported by the gateway: {sorted(unknown)}"


def test_the_name_extraction_sees_every_metric() -> None:
    expression = (
        'histogram_quantile(0.99, sum by (job, le) (rate(a_bucket{job=~"$job", x="y z"}[5m])))'
        " / on (job) group_left b_total offset 5m > bool 1 and max_over_time(c[1m]) unless d"
    )
    assert metric_names(expression) == {"a_bucket", "b_total", "c", "d"}


def rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def expressions() -> list[tuple[str, str]]:
    """Every PromQL expression of the rules and the dashboard, with where it is."""
    found = [(f"alerts.yml {rule['alert']}", rule["expr"]) for rule in rules()]
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", ()):
            found.append((f"dashboard {panel['title']!r}", target["expr"]))
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            found.append((f"dashboard variable {variable['name']}", variable["definition"]))
    return found


def metric_names(expression: str) -> set[str]:
    """The metric names a PromQL expression reads (no parser needed for ours): strings,
    label matchers, label lists, ranges and durations out; what is left that is neither a
    function, a keyword nor a number."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expression)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\boffset\s+\w+", " ", text)
    text = re.sub(r"label_values\(([^,)]+)(,[^)]*)?\)", r"\1", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        name = match.group()
        is_function = re.match(r"\s*\(", text[match.end() :]) is not None
        if not is_function and name.lower() not in _PROMQL_WORDS:
            names.add(name)
    return names


def exported_names(exposition: str) -> set[str]:
    """The series names one can query: each family's samples as Prometheus stores them
    (counter: _total; histogram: _bucket, _sum, _count; gauge: its name)."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    names = set(PROMETHEUS_SERIES)
    for family in text_string_to_metric_families(exposition):
        assert family.name.startswith("snapgraph_"), family.name
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
    return names
